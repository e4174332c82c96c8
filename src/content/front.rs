//! Splitting a content file into front matter and body. Pure, and total: any input gives
//! a result or an error with a line, never a panic.

/// The syntax of the front matter block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Syntax {
    /// Between `+++` lines.
    Toml,
    /// Between `---` lines.
    Yaml,
}

/// A file cut into its parts. Lines are 1-based lines of the original file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split<'a> {
    pub syntax: Syntax,
    /// The text between the delimiter lines.
    pub front: &'a str,
    /// Line of the first front matter line (the line after the opening delimiter).
    pub front_line: usize,
    pub body: &'a str,
    /// Line where the body starts.
    pub body_line: usize,
}

/// Why a file could not be split; `line` is 1-based.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitError {
    pub line: usize,
    pub message: String,
}

/// Decodes `bytes` as UTF-8 (a byte order mark is dropped). A bad byte is reported with its line.
pub fn decode(bytes: &[u8]) -> Result<&str, SplitError> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    if let Ok(text) = simdutf8::basic::from_utf8(bytes) {
        return Ok(text);
    }
    std::str::from_utf8(bytes).map_err(|e| {
        let at = e.valid_up_to();
        let line = bytes[..at].iter().filter(|&&b| b == b'\n').count() + 1;
        SplitError {
            line,
            message: format!(
                "not valid UTF-8 (byte {} of the file); save it as UTF-8",
                at + 1
            ),
        }
    })
}

/// Cuts `text` into front matter and body.
pub fn split(text: &str) -> Result<Split<'_>, SplitError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    if text.trim().is_empty() {
        return Err(SplitError {
            line: 1,
            message: "the file is empty".into(),
        });
    }
    let (first, after_first) = next_line(text);
    let syntax = match first.trim_end() {
        "+++" => Syntax::Toml,
        "---" => Syntax::Yaml,
        _ => {
            return Err(SplitError {
                line: 1,
                message:
                    "no front matter: the file must start with a `+++` (TOML) or `---` (YAML) line"
                        .into(),
            });
        }
    };
    let delimiter = first.trim_end();
    let front_start = text.len() - after_first.len();
    let mut rest = after_first;
    let mut line = 2;
    while !rest.is_empty() {
        let line_start = text.len() - rest.len();
        let (l, after) = next_line(rest);
        if l.trim_end() == delimiter {
            return Ok(Split {
                syntax,
                front: &text[front_start..line_start],
                front_line: 2,
                body: after,
                body_line: line + 1,
            });
        }
        rest = after;
        line += 1;
    }
    Err(SplitError {
        line: 1,
        message: format!("the front matter opened here is never closed with a `{delimiter}` line"),
    })
}

/// The first line of `s` (without its line break) and everything after it.
fn next_line(s: &str) -> (&str, &str) {
    match s.find('\n') {
        Some(i) => (s[..i].strip_suffix('\r').unwrap_or(&s[..i]), &s[i + 1..]),
        None => (s, ""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn toml_and_yaml() {
        let s = split("+++\ntitle = \"a\"\n+++\nBody\n").unwrap();
        assert_eq!(
            (s.syntax, s.front, s.body, s.body_line),
            (Syntax::Toml, "title = \"a\"\n", "Body\n", 4)
        );
        let s = split("\u{feff}---\r\ntitle: a\r\n---\r\nBody").unwrap();
        assert_eq!(
            (s.syntax, s.front, s.body),
            (Syntax::Yaml, "title: a\r\n", "Body")
        );
        let s = split("+++\n+++").unwrap();
        assert_eq!((s.front, s.body), ("", ""));
    }

    #[test]
    fn errors_with_lines() {
        assert_eq!(split("").unwrap_err().line, 1);
        assert!(
            split("# Title\n")
                .unwrap_err()
                .message
                .contains("no front matter")
        );
        assert!(
            split("+++\ntitle = 1\n")
                .unwrap_err()
                .message
                .contains("never closed")
        );
        assert!(
            split("+++\ntitle = 1\n---\n")
                .unwrap_err()
                .message
                .contains("never closed")
        );
        let e = decode(b"+++\ntitle = \"\xff\"\n+++\n").unwrap_err();
        assert_eq!(e.line, 2);
    }

    proptest! {
        #[test]
        fn split_never_panics_and_parts_are_in_the_input(s in "(\\+\\+\\+|---|\r|\n|[a-z =\"]|\u{feff}|ä){0,40}") {
            if let Ok(parts) = split(&s) {
                prop_assert!(s.contains(parts.front));
                prop_assert!(s.ends_with(parts.body));
                prop_assert!(parts.body_line >= 3);
            }
        }

        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode(&bytes).map(split);
        }
    }
}
