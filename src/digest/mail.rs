//! The digest mail: rendered from `mail/digest.html` and `mail/digest.txt`, cut below the
//! size at which Gmail clips a message, with the list headers, a stable Message-ID and a
//! DKIM signature.

use chrono::{DateTime, TimeZone, Utc};
use lettre::message::{Mailbox, Mailboxes, header};
use serde::Serialize;

use crate::config::Config;
use crate::content::{Item, Rendition};
use crate::mail::mime::Prepared;
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
#[allow(clippy::too_many_arguments)]
pub fn render(
    config: &Config,
    language: &Language,
    digest: &crate::config::Digest,
    items: &[ItemView],
    since: DateTime<Utc>,
    links: &RecipientLinks,
    archive_url: Option<&str>,
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
            "archive_url": archive_url,
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

/// The header fields a digest run's mails share.
pub struct Shared<'a> {
    pub from: &'a Mailbox,
    pub reply_to: Option<&'a Mailbox>,
    /// `Wochenüberblick <woechentlich.www.fitko.de>`.
    pub list_id: String,
    pub date: DateTime<Utc>,
    /// `Date` is written in this time zone.
    pub timezone: chrono_tz::Tz,
}

/// The recipient's own links in a prepared body (replaced per mail).
pub const SLOT_MARKERS: [&str; 2] = [UNSUBSCRIBE_MARKER, PREFERENCES_MARKER];
pub const UNSUBSCRIBE_MARKER: &str = "https://herold.invalid/unsubscribe-placeholder";
pub const PREFERENCES_MARKER: &str = "https://herold.invalid/preferences-placeholder";

/// Encodes a rendered digest (rendered with [`SLOT_MARKERS`] as its links) once, for every
/// recipient of the same items and language.
pub fn prepare(shared: &Shared, rendered: &Rendered) -> Prepared {
    let mut h = header::Headers::new();
    h.set(header::From::from(Mailboxes::from(shared.from.clone())));
    if let Some(r) = shared.reply_to {
        h.set(header::ReplyTo::from(Mailboxes::from(r.clone())));
    }
    h.set(header::Subject::from(rendered.subject.clone()));
    let mut fields = crate::mail::fields(&h);
    fields.push((
        "Date".into(),
        crate::mail::date_value(shared.date, shared.timezone),
    ));
    for (name, value) in [
        ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"),
        ("List-Id", shared.list_id.as_str()),
        ("Precedence", "bulk"),
        ("Auto-Submitted", "auto-generated"),
    ] {
        fields.push((name.into(), value.into()));
    }
    Prepared::new(fields, &rendered.text, &rendered.html, &SLOT_MARKERS)
}
