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

/// The first paragraph of `markdown` as plain text, white space collapsed; empty if none.
pub fn first_paragraph_text(markdown: &str) -> String {
    let mut out = String::new();
    let mut in_para = false;
    for event in Parser::new_ext(markdown, options()) {
        match event {
            Event::Start(Tag::Paragraph) => in_para = true,
            Event::End(TagEnd::Paragraph) if in_para => {
                let text = super::text::one_line(&out);
                if !text.is_empty() {
                    return text;
                }
                out.clear();
                in_para = false;
            }
            Event::Text(t) | Event::Code(t) if in_para => out.push_str(&t),
            Event::SoftBreak | Event::HardBreak if in_para => out.push(' '),
            _ => {}
        }
    }
    String::new()
}

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
    }
}
