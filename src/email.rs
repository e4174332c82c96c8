//! E-mail addresses, parsed once at the edge. After [`Email::parse`] nobody re-validates.

use std::fmt;

/// A normalised address: no spaces or line breaks, one `@`, a sane local part, a domain in
/// ASCII (an IDN domain is turned into its `xn--` form), everything lowercase, at most 254
/// characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(transparent)]
pub struct Email(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EmailError {
    #[error("the address is empty")]
    Empty,
    #[error("the address is too long")]
    TooLong,
    #[error("the address must have the form name@example.org")]
    Shape,
    #[error("the address contains characters that are not allowed")]
    Characters,
    #[error("the domain of the address is not valid")]
    Domain,
}

impl Email {
    pub fn parse(input: &str) -> Result<Email, EmailError> {
        let s = input.trim();
        if s.is_empty() {
            return Err(EmailError::Empty);
        }
        if s.len() > 254 {
            return Err(EmailError::TooLong);
        }
        if s.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(EmailError::Characters);
        }
        let (local, domain) = s.rsplit_once('@').ok_or(EmailError::Shape)?;
        if local.is_empty() || local.len() > 64 || domain.is_empty() {
            return Err(EmailError::Shape);
        }
        // RFC 5322 dot-atom: no quoted local parts, no leading, trailing or double dots.
        const SPECIALS: &str = "!#$%&'*+-/=?^_`{|}~.";
        if !local
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || SPECIALS.contains(c))
            || local.starts_with('.')
            || local.ends_with('.')
            || local.contains("..")
        {
            return Err(EmailError::Characters);
        }
        let ascii = match url::Host::parse(domain) {
            Ok(url::Host::Domain(d)) => d,
            _ => return Err(EmailError::Domain),
        };
        let labels: Vec<&str> = ascii.split('.').collect();
        let label_ok = |l: &&str| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        };
        if labels.len() < 2
            || !labels.iter().all(label_ok)
            || labels
                .last()
                .is_some_and(|t| t.bytes().all(|b| b.is_ascii_digit()))
        {
            return Err(EmailError::Domain);
        }
        let out = format!(
            "{}@{}",
            local.to_ascii_lowercase(),
            ascii.to_ascii_lowercase()
        );
        if out.len() > 254 {
            return Err(EmailError::TooLong);
        }
        Ok(Email(out))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_addresses_are_normalised() {
        assert_eq!(
            Email::parse(" Max.Muster@FITKO.de ").unwrap().as_str(),
            "max.muster@fitko.de"
        );
        assert_eq!(
            Email::parse("a+digest@bücher.example").unwrap().as_str(),
            "a+digest@xn--bcher-kva.example"
        );
        assert_eq!(
            Email::parse("o'brien@sub.domain.org").unwrap().as_str(),
            "o'brien@sub.domain.org"
        );
    }

    #[test]
    fn bad_addresses_are_refused() {
        for bad in [
            "",
            "   ",
            "plain",
            "@x.de",
            "a@",
            "a@b",
            "a b@x.de",
            "a@x.de\r\nBcc: victim@x.de",
            "a@x.de\nX",
            "a..b@x.de",
            ".a@x.de",
            "a.@x.de",
            "\"a\"@x.de",
            "a@-x.de",
            "a@x..de",
            "a@1.2.3.4",
            "a@[127.0.0.1]",
            "a@x_y.de",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            Email::parse(&format!("{}@x.de", "a".repeat(65))),
            Err(EmailError::Shape)
        );
        assert_eq!(
            Email::parse(&format!("a@{}.de", "b".repeat(260))),
            Err(EmailError::TooLong)
        );
    }
}
