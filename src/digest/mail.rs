//! The digest mail: rendered from `mail/digest.html` and `mail/digest.txt`, cut below the
//! size at which Gmail clips a message, with the list headers, a stable Message-ID and a
//! DKIM signature.

use chrono::{DateTime, TimeZone, Utc};
use lettre::Message;
use lettre::message::header::{Header, HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart, SinglePart, dkim, header};
use serde::Serialize;

use crate::config::Config;
use crate::content::{Item, Rendition};
use crate::email::Email;
use crate::templates::{Language, TEXT_WIDTH, wrap};

/// Gmail clips HTML parts above about 102 KB, hiding the footer with the unsubscribe link.
pub const MAX_HTML_BYTES: usize = 100_000;

/// One item as the templates show it.
#[derive(Debug, Clone, Serialize)]
pub struct ItemView {
    pub title: String,
    pub title_wrapped: String,
    pub link: String,
    pub date: String,
    pub category: Option<String>,
    pub summary: String,
    pub summary_wrapped: String,
    pub image: Option<String>,
}

impl ItemView {
    pub fn new(item: &Item, rendition: &Rendition, language: &Language) -> ItemView {
        ItemView {
            title: item.title.clone(),
            title_wrapped: wrap(&item.title, TEXT_WIDTH),
            link: item.link.clone(),
            date: language.long_date(&item.date),
            category: item.category.clone(),
            summary: rendition.summary.clone(),
            summary_wrapped: wrap(&rendition.summary, TEXT_WIDTH),
            image: item.image.clone(),
        }
    }
}

/// The links a digest mail carries for its recipient.
#[derive(Debug, Clone, Serialize)]
pub struct RecipientLinks {
    pub unsubscribe_url: String,
    pub preferences_url: String,
}

/// A rendered digest mail.
#[derive(Debug, Clone)]
pub struct Rendered {
    pub subject: String,
    pub text: String,
    /// With CSS inlined.
    pub html: String,
    /// Items shown; the rest (`omitted`) are behind the link to `site.link`.
    pub shown: usize,
    pub omitted: usize,
}

/// Renders a digest with `items`, cutting items from the end (and linking to `site.link`
/// for them) until the HTML part is below [`MAX_HTML_BYTES`].
pub fn render(
    config: &Config,
    language: &Language,
    digest: &crate::config::Digest,
    items: &[ItemView],
    since: DateTime<Utc>,
    links: &RecipientLinks,
    now: DateTime<Utc>,
) -> anyhow::Result<Rendered> {
    let title = digest.title.clone().unwrap_or_else(|| digest.name.clone());
    let tz = digest.timezone.unwrap_or(config.site.timezone);
    let today = language.long_date(&tz.from_utc_datetime(&now.naive_utc()));
    let subject_template = digest
        .subject
        .clone()
        .unwrap_or_else(|| format!("{title} – {{date}}"));
    let subject = subject_template
        .replace("{date}", &today)
        .replace("{count}", &items.len().to_string());
    let since = language.long_date(&tz.from_utc_datetime(&since.naive_utc()));
    let url = |u: &Option<url::Url>| u.as_ref().map(|u| u.to_string()).unwrap_or_default();
    let attempt = |shown: usize| -> anyhow::Result<(String, String)> {
        let ctx = serde_json::json!({
            "subject": subject,
            "site_title": config.site.title,
            "site_link": config.site_link().to_string(),
            "digest_title": title,
            "since": since,
            "count": items.len(),
            "items": &items[..shown],
            "omitted": items.len() - shown,
            "unsubscribe_url": links.unsubscribe_url,
            "preferences_url": links.preferences_url,
            "privacy_url": url(&config.site.privacy_url),
            "imprint_url": url(&config.site.imprint_url),
            "accessibility_url": url(&config.site.accessibility_url),
        });
        let html = crate::mail::inline_css(&language.render("mail/digest.html", &ctx)?);
        let text = language.render("mail/digest.txt", &ctx)?;
        Ok((text, html))
    };
    let (mut text, mut html) = attempt(items.len())?;
    let mut shown = items.len();
    if html.len() > MAX_HTML_BYTES {
        // The largest count that fits, by bisection (at least one item).
        let (mut lo, mut hi) = (1, items.len());
        while lo < hi {
            let mid = (lo + hi).div_ceil(2);
            if attempt(mid)?.1.len() <= MAX_HTML_BYTES {
                lo = mid
            } else {
                hi = mid - 1
            }
        }
        shown = lo;
        (text, html) = attempt(shown)?;
    }
    Ok(Rendered {
        subject,
        text,
        html,
        shown,
        omitted: items.len() - shown,
    })
}

/// The headers of one digest mail.
pub struct Envelope<'a> {
    pub from: &'a Mailbox,
    pub reply_to: Option<&'a Mailbox>,
    pub to: &'a Email,
    /// `<https://…/unsubscribe/TOKEN>`, and the mailto when configured.
    pub list_unsubscribe: String,
    /// `Wochenüberblick <woechentlich.www.fitko.de>`.
    pub list_id: String,
    /// Stable for (run, subscriber): a resent mail is recognisably the same.
    pub message_id: String,
    pub date: DateTime<Utc>,
    /// `Date` is written in this time zone.
    pub timezone: chrono_tz::Tz,
}

/// Builds the `multipart/alternative` message.
pub fn message(env: &Envelope, rendered: &Rendered) -> anyhow::Result<Message> {
    let mut b = Message::builder()
        .from(env.from.clone())
        .to(env.to.as_str().parse()?)
        .subject(rendered.subject.clone())
        .message_id(Some(env.message_id.clone()))
        .header(ListUnsubscribe(env.list_unsubscribe.clone()))
        .header(ListUnsubscribePost("List-Unsubscribe=One-Click".into()))
        .header(ListId(env.list_id.clone()))
        .header(Precedence("bulk".into()))
        .header(AutoSubmitted("auto-generated".into()));
    if let Some(r) = env.reply_to {
        b = b.reply_to(r.clone());
    }
    let mut message = b.multipart(
        MultiPart::alternative()
            .singlepart(
                SinglePart::builder()
                    .header(header::ContentType::TEXT_PLAIN)
                    .body(rendered.text.clone()),
            )
            .singlepart(
                SinglePart::builder()
                    .header(header::ContentType::TEXT_HTML)
                    .body(rendered.html.clone()),
            ),
    )?;
    crate::mail::set_date(&mut message, env.date, env.timezone);
    Ok(message)
}

/// Headers lettre has no type for, one type each (lettre keys headers by type). Their
/// values are ASCII here (URLs, ids, keywords) and are written as given.
macro_rules! ascii_header {
    ($ty:ident, $name:literal) => {
        #[derive(Clone)]
        pub struct $ty(pub String);

        impl Header for $ty {
            fn name() -> HeaderName {
                HeaderName::new_from_ascii_str($name)
            }

            fn parse(s: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
                Ok($ty(s.to_string()))
            }

            fn display(&self) -> HeaderValue {
                HeaderValue::dangerous_new_pre_encoded(Self::name(), self.0.clone(), self.0.clone())
            }
        }
    };
}

ascii_header!(ListUnsubscribe, "List-Unsubscribe");
ascii_header!(ListUnsubscribePost, "List-Unsubscribe-Post");
ascii_header!(ListId, "List-Id");
ascii_header!(Precedence, "Precedence");
ascii_header!(AutoSubmitted, "Auto-Submitted");

/// Loads the DKIM key of `[mail.dkim]`: RSA as PKCS#1 or PKCS#8 PEM, Ed25519 as PKCS#8 PEM
/// or the base64 of its 32 raw bytes. The signature covers the headers receivers and RFC
/// 8058 care about, with relaxed canonicalisation (what lettre's folding needs).
pub fn dkim_config(
    config: &Config,
    credentials: Option<&std::path::Path>,
) -> anyhow::Result<Option<std::sync::Arc<dkim::DkimConfig>>> {
    use anyhow::Context;
    let Some(d) = &config.mail.dkim else {
        return Ok(None);
    };
    let pem =
        match (&d.private_key_file, credentials.map(|c| c.join("dkim-key"))) {
            (Some(f), _) => std::fs::read_to_string(f)
                .with_context(|| format!("cannot read {}", f.display()))?,
            (None, Some(c)) if c.exists() => std::fs::read_to_string(&c)
                .with_context(|| format!("cannot read {}", c.display()))?,
            _ => anyhow::bail!("[mail.dkim] needs private_key_file or the credential dkim-key"),
        };
    let key = signing_key(&pem).context("[mail.dkim] private key")?;
    let headers = [
        "From",
        "To",
        "Subject",
        "Date",
        "Message-ID",
        "MIME-Version",
        "List-Unsubscribe",
        "List-Unsubscribe-Post",
    ]
    .into_iter()
    .map(HeaderName::new_from_ascii_str)
    .collect();
    Ok(Some(std::sync::Arc::new(dkim::DkimConfig::new(
        d.selector.clone(),
        d.domain.clone(),
        key,
        headers,
        dkim::DkimCanonicalization {
            header: dkim::DkimCanonicalizationType::Relaxed,
            body: dkim::DkimCanonicalizationType::Relaxed,
        },
    ))))
}

fn signing_key(pem: &str) -> anyhow::Result<dkim::DkimSigningKey> {
    use base64::Engine;
    use rsa::pkcs1::EncodeRsaPrivateKey;
    use rsa::pkcs8::DecodePrivateKey;
    let text = pem.trim();
    if text.contains("BEGIN RSA PRIVATE KEY") {
        return dkim::DkimSigningKey::new(text, dkim::DkimSigningAlgorithm::Rsa)
            .map_err(|e| anyhow::anyhow!("{e}"));
    }
    if text.contains("BEGIN PRIVATE KEY") {
        if let Ok(rsa_key) = rsa::RsaPrivateKey::from_pkcs8_pem(text) {
            let pkcs1 = rsa_key
                .to_pkcs1_pem(rsa::pkcs8::LineEnding::LF)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            return dkim::DkimSigningKey::new(&pkcs1, dkim::DkimSigningAlgorithm::Rsa)
                .map_err(|e| anyhow::anyhow!("{e}"));
        }
        let b64: String = text.lines().filter(|l| !l.starts_with("-----")).collect();
        let der = base64::engine::general_purpose::STANDARD.decode(b64)?;
        // PKCS#8 of Ed25519 (OID 1.3.101.112): the last 32 bytes are the private key.
        anyhow::ensure!(
            der.len() == 48 && der.windows(5).any(|w| w == [0x06, 0x03, 0x2b, 0x65, 0x70]),
            "neither RSA nor Ed25519"
        );
        let raw = base64::engine::general_purpose::STANDARD.encode(&der[16..]);
        return dkim::DkimSigningKey::new(&raw, dkim::DkimSigningAlgorithm::Ed25519)
            .map_err(|e| anyhow::anyhow!("{e}"));
    }
    dkim::DkimSigningKey::new(text, dkim::DkimSigningAlgorithm::Ed25519)
        .map_err(|e| anyhow::anyhow!("{e}"))
}
