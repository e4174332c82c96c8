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
    strip_controls(s)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// Removes HTML tags (`<b>`, `</b>`, `<br/>`, `<a href="…">`) from a plain-text field such as
/// a title: feed readers show titles as text, and markup there would show as code or be
/// mistaken for HTML. Other `<` (as in `a < b` or `<Prüfung>`) stay.
pub fn strip_tags(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.contains('<') {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(start) = rest.find('<') {
        out.push_str(&rest[..start]);
        let tail = &rest[start..];
        match tag_len(tail) {
            Some(n) => rest = &tail[n..],
            None => {
                out.push('<');
                rest = &tail[1..];
            }
        }
    }
    out.push_str(rest);
    std::borrow::Cow::Owned(out)
}

/// The length of the tag at the start of `s` (`<name …>` or `</name>`), if there is one.
fn tag_len(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    let mut i = 1;
    if b.get(i) == Some(&b'/') {
        i += 1;
    }
    if !b.get(i)?.is_ascii_alphabetic() {
        return None;
    }
    while b.get(i).is_some_and(|c| c.is_ascii_alphanumeric()) {
        i += 1;
    }
    match *b.get(i)? {
        b'>' => Some(i + 1),
        b'/' if b.get(i + 1) == Some(&b'>') => Some(i + 2),
        c if c.is_ascii_whitespace() => s[i..]
            .find(['>', '<'])
            .filter(|&j| b[i + j] == b'>')
            .map(|j| i + j + 1),
        _ => None,
    }
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
        assert_eq!(
            strip_controls("a\u{0}b\u{1b}c\u{85}d\u{fffe}\tä😀\n"),
            "abcd\tä😀\n"
        );
        assert_eq!(one_line("  Titel\nmit\u{7}  Umbruch "), "Titel mit Umbruch");
        assert_eq!(escape_html("a<b>&\"c\""), "a&lt;b&gt;&amp;&quot;c&quot;");
        assert_eq!(
            strip_tags("R&D <b>fett</b> <br/> <a href=\"x\">Link</a> a < b <Prüfung> <3"),
            "R&D fett  Link a < b <Prüfung> <3"
        );
    }
}
