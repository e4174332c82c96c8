//! Plain-text hygiene shared by every field that reaches a feed or a mail.

/// Removes characters XML 1.0 forbids or discourages (C0 controls except tab, line feed and
/// carriage return; DEL and C1 controls; U+FFFE, U+FFFF), so no output can be broken by them.
pub fn strip_controls(s: &str) -> std::borrow::Cow<'_, str> {
    if s.chars().all(is_allowed) {
        std::borrow::Cow::Borrowed(s)
    } else {
        std::borrow::Cow::Owned(s.chars().filter(|c| is_allowed(*c)).collect())
    }
}

fn is_allowed(c: char) -> bool {
    match c {
        '\t' | '\n' | '\r' => true,
        '\u{0}'..='\u{1f}' | '\u{7f}'..='\u{9f}' | '\u{fffe}' | '\u{ffff}' => false,
        _ => true,
    }
}

/// A one-line text: controls removed, every run of white space one space, trimmed.
pub fn one_line(s: &str) -> String {
    strip_controls(s).split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Escapes `&`, `<`, `>` and `"` for HTML text and attribute values.
pub fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_go_text_stays() {
        assert_eq!(strip_controls("a\u{0}b\u{1b}c\u{85}d\u{fffe}\tä😀\n"), "abcd\tä😀\n");
        assert_eq!(one_line("  Titel\nmit\u{7}  Umbruch "), "Titel mit Umbruch");
        assert_eq!(escape_html("a<b>&\"c\""), "a&lt;b&gt;&amp;&quot;c&quot;");
    }
}
