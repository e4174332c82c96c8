//! Markdown to safe HTML, and the plain-text lead of a body.

use pulldown_cmark::{CowStr, Event, LinkType, Options, Parser, Tag, TagEnd};
use url::Url;

fn options() -> Options {
    Options::ENABLE_TABLES
        | Options::ENABLE_FOOTNOTES
        | Options::ENABLE_STRIKETHROUGH
        | Options::ENABLE_TASKLISTS
        | Options::ENABLE_SMART_PUNCTUATION
}

/// Renders CommonMark + GFM to HTML, sanitised (no script, no event handlers, no
/// `javascript:` URLs), with every relative link and image source made absolute against `base`.
///
/// Markdown without raw HTML (and without task lists and footnotes, whose checkboxes, ids
/// and classes a sanitiser changes)
/// cannot carry markup of its own: pulldown-cmark escapes its text, so only link and image
/// URLs need checking, which happens here, event by event. Such bodies (nearly all) skip
/// the HTML sanitiser, which costs six times the Markdown parse; bodies with raw HTML go
/// through it whole.
pub fn render_html(markdown: &str, base: &Url) -> String {
    render_events(Parser::new_ext(markdown, options()).collect(), base)
}

/// [`render_html`] and [`first_paragraph_text`] from one parse.
pub fn render_with_lead(markdown: &str, base: &Url) -> (String, String) {
    let events: Vec<Event> = Parser::new_ext(markdown, options()).collect();
    let lead = lead_of_events(events.iter().cloned());
    (render_events(events, base), lead)
}

fn render_events(events: Vec<Event>, base: &Url) -> String {
    let markdown_len: usize = events
        .iter()
        .map(|e| match e {
            Event::Text(t) | Event::Code(t) | Event::Html(t) | Event::InlineHtml(t) => t.len(),
            _ => 8,
        })
        .sum();
    let mut html = String::with_capacity(markdown_len * 3 / 2);
    let raw = events.iter().any(|e| {
        matches!(
            e,
            Event::Html(_)
                | Event::InlineHtml(_)
                | Event::TaskListMarker(_)
                | Event::FootnoteReference(_)
                | Event::Start(Tag::FootnoteDefinition(_))
        )
    });
    if raw {
        pulldown_cmark::html::push_html(&mut html, events.into_iter());
        return sanitize(&html, base);
    }
    let safe = events.into_iter().map(|e| match e {
        Event::Start(Tag::Link {
            link_type,
            dest_url,
            title,
            ..
        }) => {
            let mut tag = String::from("<a");
            let dest = if link_type == LinkType::Email {
                format!("mailto:{dest_url}")
            } else {
                dest_url.to_string()
            };
            if let Some(url) = safe_url(&dest, base) {
                tag.push_str(" href=\"");
                tag.push_str(&super::text::escape_html(&url));
                tag.push('"');
            }
            if !title.is_empty() {
                tag.push_str(" title=\"");
                tag.push_str(&super::text::escape_html(&title));
                tag.push('"');
            }
            tag.push_str(" rel=\"noopener noreferrer\">");
            Event::Html(CowStr::from(tag))
        }
        Event::End(TagEnd::Link) => Event::Html(CowStr::Borrowed("</a>")),
        Event::Start(Tag::Image {
            link_type,
            dest_url,
            title,
            id,
        }) => Event::Start(Tag::Image {
            link_type,
            dest_url: CowStr::from(safe_url(&dest_url, base).unwrap_or_default()),
            title,
            id,
        }),
        // Sanitised bodies drop the `class` a fenced block's language would give.
        Event::Start(Tag::CodeBlock(pulldown_cmark::CodeBlockKind::Fenced(_))) => Event::Start(
            Tag::CodeBlock(pulldown_cmark::CodeBlockKind::Fenced(CowStr::Borrowed(""))),
        ),
        // Column alignment would come as `style` attributes, which sanitised bodies drop.
        Event::Start(Tag::Table(columns)) => Event::Start(Tag::Table(
            columns
                .iter()
                .map(|_| pulldown_cmark::Alignment::None)
                .collect(),
        )),
        other => other,
    });
    pulldown_cmark::html::push_html(&mut html, safe);
    // Void elements as HTML writes them (`<br>`, not `<br />`); text has no raw `>`.
    if html.contains(" />") {
        html.trim().replace(" />", ">")
    } else {
        let end = html.trim_end().len();
        html.truncate(end);
        let start = html.len() - html.trim_start().len();
        html.drain(..start);
        html
    }
}

/// URL schemes a link or image may use (those the sanitiser allows).
const SAFE_SCHEMES: &[&str] = &[
    "http", "https", "mailto", "tel", "ftp", "ftps", "sms", "xmpp", "webcal", "geo", "irc", "ircs",
    "news", "nntp", "sip", "ssh", "magnet",
];

/// `url` made absolute against `base`; `None` for a scheme that could run code.
fn safe_url(url: &str, base: &Url) -> Option<String> {
    match Url::parse(url) {
        Ok(u) => SAFE_SCHEMES.contains(&u.scheme()).then(|| url.to_string()),
        Err(url::ParseError::RelativeUrlWithoutBase) => base.join(url).ok().map(String::from),
        Err(_) => None,
    }
}

/// Sanitises an HTML fragment and makes its URLs absolute against `base`.
pub fn sanitize(html: &str, base: &Url) -> String {
    ammonia::Builder::default()
        .url_relative(ammonia::UrlRelative::RewriteWithBase(base.clone()))
        .clean(html)
        .to_string()
        .trim()
        .to_string()
}

/// The first paragraph of `markdown` as plain text, white space collapsed. A body without a
/// text paragraph gives its first text of any kind (a heading, a list), cut to about
/// [`LEAD_FALLBACK_CHARS`]; a body without text gives an empty string.
pub fn first_paragraph_text(markdown: &str) -> String {
    lead_of_events(Parser::new_ext(markdown, options()))
}

/// [`first_paragraph_text`] of parsed events.
fn lead_of_events<'e>(events: impl IntoIterator<Item = Event<'e>>) -> String {
    let mut para = String::new();
    let mut any = String::new();
    let mut in_para = false;
    for event in events {
        match event {
            Event::Start(Tag::Paragraph) => in_para = true,
            Event::End(TagEnd::Paragraph) if in_para => {
                let text = super::text::plain(&para);
                if !text.is_empty() {
                    return text;
                }
                para.clear();
                in_para = false;
            }
            Event::Text(t) | Event::Code(t) => {
                if in_para {
                    para.push_str(&t);
                } else if any.len() < LEAD_FALLBACK_CHARS * 4 {
                    any.push_str(&t);
                    any.push(' ');
                }
            }
            Event::SoftBreak | Event::HardBreak if in_para => para.push(' '),
            _ => {}
        }
    }
    let any = super::text::plain(&any);
    match any.char_indices().nth(LEAD_FALLBACK_CHARS) {
        Some((cut, _)) => {
            let head = &any[..cut];
            let head = head.rsplit_once(' ').map(|(h, _)| h).unwrap_or(head);
            format!("{head} …")
        }
        None => any,
    }
}

/// How long a lead taken from other text than a paragraph may get, in characters.
pub const LEAD_FALLBACK_CHARS: usize = 280;

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Url {
        Url::parse("https://www.fitko.de/aktuelles/ozg-news").unwrap()
    }

    #[test]
    fn links_become_absolute() {
        let html = render_html(
            "[OZG](../ozg) ![Bild](/bilder/a.png \"t\") [ext](https://x.de/)",
            &base(),
        );
        assert!(html.contains("href=\"https://www.fitko.de/ozg\""), "{html}");
        assert!(
            html.contains("src=\"https://www.fitko.de/bilder/a.png\""),
            "{html}"
        );
        assert!(html.contains("href=\"https://x.de/\""), "{html}");
    }

    #[test]
    fn hostile_html_is_removed() {
        let html = render_html(
            "<script>alert(1)</script>\n\n<img src=x onerror=\"alert(2)\">\n\n[x](javascript:alert(3)) <a href=\"JaVaScRiPt:alert(4)\">y</a>",
            &base(),
        );
        for bad in ["script", "onerror", "javascript", "alert"] {
            assert!(!html.to_lowercase().contains(bad), "{bad} in {html}");
        }
    }

    #[test]
    fn bodies_without_raw_html_match_the_sanitiser() {
        for md in [
            "Absatz mit [Link](../ozg \"Titel\") und ![Bild](/a.png) und <https://x.de/a>.",
            "Mail an <info@fitko.de>, [böse](javascript:alert(1)), [relativ](ozg#teil).",
            "| a | b |\n|:--|--:|\n| 1 | 2 |\n\n> Zitat\n\n1. eins\n2. zwei\n\n```rust\nlet x = 1 < 2;\n```",
            "# Überschrift\n\n„Anführungszeichen“ & Umlaute: äöüß – *kursiv* **fett** `code` ~~weg~~",
        ] {
            let fast = render_html(md, &base());
            let parser = Parser::new_ext(md, options());
            let mut html = String::new();
            pulldown_cmark::html::push_html(&mut html, parser);
            let slow = sanitize(&html, &base());
            // The sanitiser writes `"` in text as is and may order attributes its way; what
            // a reader sees is the same.
            let norm = |s: &str| s.replace("&quot;", "\"");
            assert_eq!(norm(&fast), norm(&slow), "{md}");
        }
    }

    proptest::proptest! {
        /// Any mix of Markdown without raw HTML renders as the sanitiser would have it.
        #[test]
        fn the_fast_path_matches_the_sanitiser(parts in proptest::collection::vec(0usize..22, 1..12)) {
            const PIECES: [&str; 22] = [
                "Text „zitiert“ & <b>", "[a](b/c)", "[x](javascript:alert(1))", "![Bild](x.png \"t\")",
                "\n\n", "\n", "# Kopf\n", "- Punkt\n", "1. eins\n", "> Zitat\n", "`code <x>`",
                "```\nfn x() {}\n```\n", "| a | b |\n|---|:-:|\n| 1 | 2 |\n", "*kursiv*", "**fett**",
                "<mailto:a@b.de>", "<https://x.de/?a=1&b=2>", "[ref][r]\n\n[r]: /ziel \"T\"\n",
                "Fußnote[^1]\n\n[^1]: Notiz\n", "~~weg~~", "[](data:text/html,x)", "&amp; &#x3C; &copy;",
            ];
            let md: String = parts.iter().map(|&i| PIECES[i]).collect();
            let fast = render_html(&md, &base());
            let mut html = String::new();
            pulldown_cmark::html::push_html(&mut html, Parser::new_ext(&md, options()));
            let slow = sanitize(&html, &base());
            let norm = |s: &str| s.replace("&quot;", "\"").replace("&nbsp;", "\u{a0}");
            proptest::prop_assert_eq!(norm(&fast), norm(&slow), "{}", md);
        }
    }

    #[test]
    fn gfm_features() {
        let html = render_html(
            "| a | b |\n|---|---|\n| 1 | 2 |\n\n~~alt~~ https://www.fitko.de",
            &base(),
        );
        assert!(
            html.contains("<table>") && html.contains("<del>alt</del>"),
            "{html}"
        );
    }

    #[test]
    fn lead_is_first_real_paragraph() {
        assert_eq!(
            first_paragraph_text("# Titel\n\nDer *erste*\nAbsatz mit `Code`.\n\nZweiter."),
            "Der erste Absatz mit Code."
        );
        assert_eq!(
            first_paragraph_text("<div>x</div>\n\n![](a.png)\n\nText"),
            "Text"
        );
        assert_eq!(first_paragraph_text(""), "");
        assert_eq!(
            first_paragraph_text("# Nur Überschrift\n\n- Punkt &amp; Liste"),
            "Nur Überschrift Punkt & Liste"
        );
        assert_eq!(first_paragraph_text("<div>nur html</div>"), "");
    }
}
