//! A `multipart/alternative` message encoded once for many recipients: the header fields and
//! the quoted-printable bodies everyone shares are encoded when the message is prepared;
//! for each recipient only its own fields (To, Message-ID, List-Unsubscribe), its links and
//! its DKIM signature are written and spliced in.
//!
//! The bodies stay quoted-printable (7 bit) whatever the server offers: a relay without
//! 8BITMIME would convert an 8-bit body and break its DKIM signature (RFC 6376 5.3), and
//! encoding once per item set costs nothing per recipient.

use super::dkim::{BodyHasher, Signer, canonical_lines};

/// Quoted-printable lines are at most this long (RFC 2045), soft line break included.
const QP_LINE: usize = 76;

/// A piece of the body: encoded text everyone shares (with its relaxed canonical form for
/// the body hash, its trailing empty lines counted apart), or the recipient's `n`th value.
#[derive(Debug, Clone)]
enum Piece {
    Fixed {
        text: String,
        canonical: String,
        empty_lines: usize,
    },
    Slot(usize),
}

impl Piece {
    fn fixed(text: String) -> Piece {
        let (canonical, empty_lines) = canonical_lines(&text);
        Piece::Fixed {
            text,
            canonical,
            empty_lines,
        }
    }
}

/// A message prepared for many recipients.
#[derive(Clone)]
pub struct Prepared {
    /// The shared header fields, `(name, value)` as written (values may be folded).
    fields: Vec<(String, String)>,
    /// The body after the blank line: MIME parts, boundaries, encoded text and slots.
    body: Vec<Piece>,
    /// The body hash state after the first piece (shared by every recipient).
    hashed_prefix: BodyHasher,
}

/// What one recipient's copy carries of its own.
pub struct Personal<'a> {
    /// ASCII header values.
    pub to: &'a str,
    pub message_id: &'a str,
    pub list_unsubscribe: &'a str,
    /// The values of the slots, in the order of [`Prepared::new`]'s markers.
    pub slots: &'a [&'a str],
}

impl Prepared {
    /// Prepares a message from its shared header fields (`(name, value)`, values already
    /// encoded, e.g. by lettre), its plain-text and HTML bodies and the `markers` in them
    /// that each recipient's values replace.
    pub fn new(
        fields: Vec<(String, String)>,
        text: &str,
        html: &str,
        markers: &[&str],
    ) -> Prepared {
        let boundary = boundary();
        let mut fields = fields;
        fields.push(("MIME-Version".into(), "1.0".into()));
        fields.push((
            "Content-Type".into(),
            format!("multipart/alternative;\r\n boundary=\"{boundary}\""),
        ));
        let mut body = Vec::new();
        let mut fixed = String::new();
        for (mime, content) in [("text/plain", text), ("text/html", html)] {
            fixed.push_str(&format!(
                "--{boundary}\r\nContent-Type: {mime}; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
            ));
            for (i, segment) in split_at_markers(content, markers) {
                match i {
                    None => {
                        fixed.push_str(&qp_encode(segment));
                        if !fixed.ends_with("\r\n") {
                            fixed.push_str("=\r\n");
                        }
                    }
                    Some(slot) => {
                        body.push(Piece::fixed(std::mem::take(&mut fixed)));
                        body.push(Piece::Slot(slot));
                    }
                }
            }
            // The line break before a boundary belongs to the boundary.
            fixed.push_str("\r\n");
        }
        fixed.push_str(&format!("--{boundary}--\r\n"));
        body.push(Piece::fixed(fixed));
        let mut hashed_prefix = BodyHasher::default();
        if let Some(Piece::Fixed {
            canonical,
            empty_lines,
            ..
        }) = body.first()
        {
            hashed_prefix.update_canonical(canonical, *empty_lines);
        }
        Prepared {
            fields,
            body,
            hashed_prefix,
        }
    }

    /// One recipient's message, signed when `signer` is given (`time` is its `t=`).
    pub fn assemble(&self, p: &Personal, signer: Option<&Signer>, time: i64) -> Vec<u8> {
        let slots: Vec<String> = p
            .slots
            .iter()
            .map(|v| {
                let mut s = qp_encode(v);
                s.push_str("=\r\n");
                s
            })
            .collect();
        let own = [
            ("To", p.to),
            ("Message-ID", p.message_id),
            ("List-Unsubscribe", p.list_unsubscribe),
        ];
        let mut fields: Vec<(&str, &str)> = Vec::with_capacity(self.fields.len() + own.len());
        fields.extend(self.fields.iter().map(|(n, v)| (n.as_str(), v.as_str())));
        fields.extend(own);
        let size = self
            .body
            .iter()
            .map(|p| match p {
                Piece::Fixed { text, .. } => text.len(),
                Piece::Slot(i) => slots.get(*i).map_or(0, String::len),
            })
            .sum::<usize>();
        let mut out = Vec::with_capacity(size + 2048);
        if let Some(signer) = signer {
            let mut hasher = self.hashed_prefix.clone();
            for piece in self.body.iter().skip(1) {
                match piece {
                    Piece::Fixed {
                        canonical,
                        empty_lines,
                        ..
                    } => hasher.update_canonical(canonical, *empty_lines),
                    Piece::Slot(i) => hasher.update(slots.get(*i).map_or("", String::as_str)),
                }
            }
            out.extend_from_slice(signer.sign(&fields, &hasher.finish(), time).as_bytes());
        }
        for (name, value) in &fields {
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
        for piece in &self.body {
            match piece {
                Piece::Fixed { text, .. } => out.extend_from_slice(text.as_bytes()),
                Piece::Slot(i) => {
                    out.extend_from_slice(slots.get(*i).map_or("", String::as_str).as_bytes())
                }
            }
        }
        out
    }
}

/// Splits `text` into segments between markers: `(None, text)` and `(Some(i), marker i)`.
fn split_at_markers<'t>(text: &'t str, markers: &[&str]) -> Vec<(Option<usize>, &'t str)> {
    let mut out = Vec::new();
    let mut rest = text;
    loop {
        let next = markers
            .iter()
            .enumerate()
            .filter(|(_, m)| !m.is_empty())
            .filter_map(|(i, m)| rest.find(m).map(|at| (at, i, m.len())))
            .min();
        match next {
            Some((at, i, len)) => {
                if at > 0 {
                    out.push((None, &rest[..at]));
                }
                out.push((Some(i), &rest[at..at + len]));
                rest = &rest[at + len..];
            }
            None => {
                if !rest.is_empty() {
                    out.push((None, rest));
                }
                return out;
            }
        }
    }
}

/// Quoted-printable (RFC 2045 6.7) with CRLF line ends: lines of at most 76 characters, soft
/// breaks never inside an escape, white space at the end of a line escaped.
pub fn qp_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + text.len() / 8);
    let mut col = 0;
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'\n' || (b == b'\r' && bytes.get(i + 1) == Some(&b'\n')) {
            out.push_str("\r\n");
            col = 0;
            i += if b == b'\r' { 2 } else { 1 };
            continue;
        }
        let at_line_end = matches!(bytes.get(i + 1), None | Some(b'\r') | Some(b'\n'));
        let literal =
            (b == b' ' || b == b'\t') && !at_line_end || (33..=126).contains(&b) && b != b'=';
        let width = if literal { 1 } else { 3 };
        // Leave room for the soft break's `=` unless this is the line's last character.
        let room = if at_line_end { QP_LINE } else { QP_LINE - 1 };
        if col + width > room {
            out.push_str("=\r\n");
            col = 0;
        }
        if literal {
            out.push(b as char);
        } else {
            const HEX: &[u8; 16] = b"0123456789ABCDEF";
            out.push('=');
            out.push(HEX[(b >> 4) as usize] as char);
            out.push(HEX[(b & 15) as usize] as char);
        }
        col += width;
        i += 1;
    }
    out
}

/// A boundary that quoted-printable text can never contain (`=_` is no escape).
fn boundary() -> String {
    let mut r = [0u8; 12];
    let _ = getrandom::fill(&mut r);
    let hex: String = r.iter().map(|b| format!("{b:02x}")).collect();
    format!("=_herold_{hex}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn qp_decode(s: &str) -> Vec<u8> {
        let mut out = Vec::new();
        let b = s.as_bytes();
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'=' {
                if b.get(i + 1) == Some(&b'\r') {
                    i += 3;
                    continue;
                }
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap();
                out.push(u8::from_str_radix(hex, 16).unwrap());
                i += 3;
            } else {
                out.push(b[i]);
                i += 1;
            }
        }
        out
    }

    #[test]
    fn quoted_printable_round_trips_german_text_in_short_lines() {
        let text = "Die „Registermodernisierung“ – Länder, Bund & Kommunen = gemeinsam.  \n\
                    Zweite Zeile mit ß und Ümläuten und einem sehr langen Wort: Datenschutzgrundverordnungskonformitätsprüfung\t\n\
                    = am Zeilenanfang\nohne Ende";
        let encoded = qp_encode(text);
        assert!(encoded.split("\r\n").all(|l| l.len() <= 76), "{encoded}");
        assert!(encoded.is_ascii());
        assert!(
            !encoded
                .split("\r\n")
                .any(|l| l.ends_with(' ') || l.ends_with('\t'))
        );
        let decoded = String::from_utf8(qp_decode(&encoded)).unwrap();
        assert_eq!(decoded, text.replace('\n', "\r\n"));
    }

    #[test]
    fn each_recipient_gets_its_links_in_both_parts() {
        let p = Prepared::new(
            vec![
                ("From".into(), "a@x.de".into()),
                ("Subject".into(), "Hallo".into()),
            ],
            "Text für alle.\nAbmelden: @@U@@\n",
            "<p>Abmelden: <a href=\"@@U@@\">hier</a> <a href=\"@@P@@\">Einstellungen</a></p>",
            &["@@U@@", "@@P@@"],
        );
        let url = format!("https://aktuelles.fitko.de/unsubscribe/{}", "A".repeat(120));
        let mail = p.assemble(
            &Personal {
                to: "b@x.de",
                message_id: "<1@x.de>",
                list_unsubscribe: "<https://x.de/u>",
                slots: &[&url, "https://x.de/p"],
            },
            None,
            0,
        );
        let parsed = mailparse::parse_mail(&mail).unwrap();
        assert_eq!(parsed.subparts.len(), 2);
        let text = parsed.subparts[0].get_body().unwrap();
        let html = parsed.subparts[1].get_body().unwrap();
        assert_eq!(text, format!("Text für alle.\r\nAbmelden: {url}\r\n"));
        assert!(
            html.contains(&format!(
                "href=\"{url}\">hier</a> <a href=\"https://x.de/p\">"
            )),
            "{html}"
        );
        let raw = String::from_utf8(mail).unwrap();
        assert!(raw.split("\r\n").all(|l| l.len() <= 998));
        assert!(raw.contains("\r\nTo: b@x.de\r\n"));
    }
}
