//! Markdown to safe HTML, and the plain-text lead of a body.

use pulldown_cmark::{Event, Options, Parser, Tag, TagEnd};
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
pub fn render_html(markdown: &str, base: &Url) -> String {
    let parser = Parser::new_ext(markdown, options());
    let mut html = String::with_capacity(markdown.len() * 3 / 2);
    pulldown_cmark::html::push_html(&mut html, parser);
    sanitize(&html, base)
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
    let mut para = String::new();
    let mut any = String::new();
    let mut in_para = false;
    for event in Parser::new_ext(markdown, options()) {
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
