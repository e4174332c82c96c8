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

/// `text` with every address in it (a word with an `@` between other characters) replaced
/// by `<address>`: for servers' answers, which often repeat the recipient, before they reach
/// a log line or the database.
pub fn redact(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('@') {
        let is_part = |c: char| !(c.is_whitespace() || "<>()[]\"',;:".contains(c));
        let start = rest[..at]
            .char_indices()
            .rev()
            .find(|(_, c)| !is_part(*c))
            .map_or(0, |(i, c)| i + c.len_utf8());
        let end = rest[at + 1..]
            .char_indices()
            .find(|(_, c)| !is_part(*c))
            .map_or(rest.len(), |(i, _)| at + 1 + i);
        if start < at && end > at + 1 {
            out.push_str(&rest[..start]);
            out.push_str("<address>");
        } else {
            out.push_str(&rest[..=at]);
        }
        rest = &rest[end.max(at + 1)..];
    }
    out.push_str(rest);
    out
}

/// `mail.return_path`: a fixed envelope sender, or one with `{token}` in its local part
/// (VERP) that names each mail's delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReturnPath {
    Fixed(Email),
    Verp { prefix: String, suffix: String },
}

/// The longest token [`ReturnPath::address`] is given (a return-path token is 34).
const TOKEN_ROOM: usize = 40;

impl ReturnPath {
    pub fn parse(s: &str) -> Result<ReturnPath, String> {
        match s.split_once("{token}") {
            None => Email::parse(s)
                .map(ReturnPath::Fixed)
                .map_err(|e| format!("`{s}`: {e}")),
            Some((prefix, suffix)) => {
                if suffix.contains("{token}") {
                    return Err(format!("`{s}` must contain {{token}} once"));
                }
                if prefix.contains('@') || !suffix.contains('@') {
                    return Err(format!(
                        "`{s}`: {{token}} must be in the local part, as in bounce+{{token}}@example.org"
                    ));
                }
                let probe = format!("{prefix}{}{suffix}", "a".repeat(TOKEN_ROOM));
                let e = Email::parse(&probe).map_err(|e| format!("`{s}`: {e}"))?;
                // Compared as the parsed form (lowercase, IDN in ASCII).
                let (p, rest) = e.as_str().split_at(prefix.len());
                let suffix = rest[TOKEN_ROOM..].to_string();
                Ok(ReturnPath::Verp {
                    prefix: p.to_string(),
                    suffix,
                })
            }
        }
    }

    /// The envelope sender for a mail whose token is `token` (made only when needed).
    pub fn address(&self, token: impl FnOnce() -> String) -> String {
        match self {
            ReturnPath::Fixed(e) => e.as_str().to_string(),
            ReturnPath::Verp { prefix, suffix } => format!("{prefix}{}{suffix}", token()),
        }
    }

    /// The token in `address` if it has this return path's shape (case-insensitively).
    pub fn token_of<'a>(&self, address: &'a str) -> Option<&'a str> {
        let ReturnPath::Verp { prefix, suffix } = self else {
            return None;
        };
        let a = address.trim().trim_start_matches('<').trim_end_matches('>');
        if a.len() <= prefix.len() + suffix.len()
            || !a.is_char_boundary(prefix.len())
            || !a.is_char_boundary(a.len() - suffix.len())
        {
            return None;
        }
        let (head, rest) = a.split_at(prefix.len());
        let (token, tail) = rest.split_at(rest.len() - suffix.len());
        (head.eq_ignore_ascii_case(prefix) && tail.eq_ignore_ascii_case(suffix)).then_some(token)
    }
}

#[cfg(test)]
mod return_path_tests {
    use super::ReturnPath;

    #[test]
    fn addresses_are_redacted_from_answers() {
        assert_eq!(
            super::redact("550 5.1.1 <weg@example.org>: Recipient address rejected"),
            "550 5.1.1 <<address>>: Recipient address rejected"
        );
        assert_eq!(
            super::redact("user anna.b+x@örtlich.de unknown, also bob@x.de."),
            "user <address> unknown, also <address>"
        );
        assert_eq!(super::redact("no @ here @"), "no @ here @");
        assert_eq!(
            super::redact("450 4.2.0 greylisted"),
            "450 4.2.0 greylisted"
        );
    }

    #[test]
    fn verp_shapes() {
        let r = ReturnPath::parse("Bounce+{token}@FITKO.de").unwrap();
        let a = r.address(|| "abc234".into());
        assert_eq!(a, "bounce+abc234@fitko.de");
        assert_eq!(r.token_of(&a), Some("abc234"));
        assert_eq!(r.token_of("<BOUNCE+XYZ@fitko.DE>"), Some("XYZ"));
        assert_eq!(r.token_of("bounce+@fitko.de"), None);
        assert_eq!(r.token_of("other+abc@fitko.de"), None);
        assert_eq!(r.token_of("bounce+abc@fitko.de.evil.org"), None);
        assert!(ReturnPath::parse("{token}@x.de").is_ok());
        assert!(ReturnPath::parse("b@{token}.de").is_err());
        assert!(ReturnPath::parse("b{token}{token}@x.de").is_err());
        assert!(ReturnPath::parse("b {token}@x.de").is_err());
        assert_eq!(
            ReturnPath::parse("Bounces@x.de").unwrap(),
            ReturnPath::Fixed(super::Email::parse("bounces@x.de").unwrap())
        );
    }
}
