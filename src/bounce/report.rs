//! What a returned message says: a delivery status notification (RFC 3464, also its
//! SMTPUTF8 form RFC 6533), a feedback report (RFC 5965), an auto-reply (RFC 3834 and the
//! vacation notices that ignore it), or a bounce in prose that only its status code and
//! wording give away. No IO, no clock: bytes in, a [`Report`] out.
//!
//! The MIME structure is read with `mailparse`. A message with an absurd number of MIME
//! boundaries (a deeply nested bomb) is not parsed as MIME at all: its headers and text are
//! searched as they are, so time and memory stay linear in its size.

use mailparse::{MailHeaderMap, ParsedMail};

/// More `boundary=` parameters than this and the message is read as flat text.
const MAX_BOUNDARIES: usize = 64;

/// At most this much of a message is read; the rest of a 30 MB attachment says nothing.
pub const MAX_BYTES: usize = 8 << 20;

/// Where MTAs and mailbox servers say whom a message was delivered to (the return path).
const RECIPIENT_HEADERS: [&str; 6] = [
    "Delivered-To",
    "X-Original-To",
    "Envelope-To",
    "X-Envelope-To",
    "X-Original-Recipient",
    "To",
];

/// What a message means for the list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// The address is gone: `Action: failed` with 5.x.x (but 5.2.2 and 5.7.x).
    Hard,
    /// Try again later: 4.x.x, a full mailbox (5.2.2), a policy or spam refusal (5.7.x).
    Soft,
    /// The recipient marked the mail as spam (`Feedback-Type: abuse`).
    Complaint,
    /// Auto-replies, vacation notices, `delayed` and `relayed` notices, read receipts.
    Ignored,
    /// No delivery of ours could be found for it.
    Unmatched,
    /// It carries a return-path token whose signature does not verify.
    Forged,
}

impl Class {
    /// The word `herold bounce` prints.
    pub fn as_str(self) -> &'static str {
        match self {
            Class::Hard => "hard",
            Class::Soft => "soft",
            Class::Complaint => "complaint",
            Class::Ignored => "ignored",
            Class::Unmatched => "unmatched",
            Class::Forged => "forged",
        }
    }

    pub const ALL: [Class; 6] = [
        Class::Hard,
        Class::Soft,
        Class::Complaint,
        Class::Ignored,
        Class::Unmatched,
        Class::Forged,
    ];
}

/// What a message says, before it is matched to a delivery.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// `Hard`, `Soft`, `Complaint` or `Ignored`; `None` when the message is none of the
    /// kinds herold knows (a person writing to the bounce address, spam).
    pub class: Option<Class>,
    /// The enhanced status code (RFC 3463), e.g. `5.1.1`.
    pub status: Option<String>,
    /// Addresses the report says failed (`Final-Recipient`, `Original-Recipient`,
    /// `X-Failed-Recipients`, `Original-Rcpt-To`, the returned message's `To`), lowercase.
    pub recipients: Vec<String>,
    /// Deliveries named by a returned `Message-ID` of herold's form
    /// `<digest.{run}.{subscriber}@host>`: (run, subscriber, host).
    pub message_ids: Vec<(i64, i64, String)>,
    /// Addresses that may carry a return-path token: `Delivered-To`, `X-Original-To`, `To`
    /// of the message itself, then `Original-Mail-From` and the returned `Return-Path`.
    pub return_paths: Vec<String>,
    /// What kind of message it was, for the log: `dsn`, `arf`, `auto-reply`, `text`, `other`.
    pub kind: &'static str,
}

/// Reads one message. Never fails: what cannot be read is `class: None`.
pub fn read(raw: &[u8]) -> Report {
    let raw = &raw[..raw.len().min(MAX_BYTES)];
    let mut report = Report {
        kind: "other",
        ..Report::default()
    };
    let boundaries = count_ci(raw, b"boundary=");
    let parsed = if boundaries <= MAX_BOUNDARIES {
        mailparse::parse_mail(raw).ok()
    } else {
        None
    };
    match parsed {
        Some(mail) => read_mime(&mail, &mut report),
        None => read_flat(raw, &mut report),
    }
    scan_message_ids(raw, &mut report.message_ids);
    dedup(&mut report.recipients);
    dedup(&mut report.return_paths);
    report.message_ids.sort();
    report.message_ids.dedup();
    report
}

fn read_mime(mail: &ParsedMail<'_>, report: &mut Report) {
    for name in RECIPIENT_HEADERS {
        for v in mail.headers.get_all_values(name) {
            report.return_paths.extend(addresses(&v));
        }
    }
    let mut dsn: Vec<Fields> = Vec::new();
    let mut feedback: Option<Fields> = None;
    let mut text = String::new();
    let mut report_type = None;
    for part in mail.parts() {
        let mime = part.ctype.mimetype.as_str();
        match mime {
            "multipart/report" => {
                report_type = part
                    .ctype
                    .params
                    .get("report-type")
                    .map(|t| t.to_lowercase());
            }
            "message/delivery-status" | "message/global-delivery-status" => {
                if let Ok(body) = part.get_body() {
                    dsn.extend(field_blocks(&body));
                }
            }
            "message/feedback-report" => {
                if let Ok(body) = part.get_body() {
                    feedback = field_blocks(&body).into_iter().reduce(|mut a, b| {
                        a.0.extend(b.0);
                        a
                    });
                }
            }
            "message/rfc822"
            | "message/global"
            | "text/rfc822-headers"
            | "message/global-headers" => {
                if let Ok(inner) = part.get_body_raw() {
                    returned_headers(&inner, report);
                }
            }
            m if m.starts_with("text/") && text.len() < 256 * 1024 => {
                if let Ok(body) = part.get_body() {
                    if m == "text/html" {
                        text.push_str(&crate::content::text::strip_tags(&body));
                    } else {
                        text.push_str(&body);
                    }
                    text.push('\n');
                }
            }
            _ => {}
        }
    }
    let header = |name: &str| mail.headers.get_first_value(name).unwrap_or_default();

    if let Some(fields) = feedback {
        report.kind = "arf";
        let kind = fields
            .get("feedback-type")
            .unwrap_or_default()
            .to_lowercase();
        if let Some(from) = fields.get("original-mail-from") {
            report.return_paths.extend(addresses(&from));
        }
        for v in fields.all("original-rcpt-to") {
            report.recipients.extend(addresses(&v));
        }
        report.class = Some(if kind == "abuse" || kind.is_empty() {
            Class::Complaint
        } else {
            Class::Ignored
        });
        return;
    }
    if !dsn.is_empty() {
        report.kind = "dsn";
        read_dsn(&dsn, &text, report);
        return;
    }
    if matches!(
        report_type.as_deref(),
        Some("disposition-notification") | Some("feedback-report")
    ) {
        // A read receipt, or a feedback report without its report part.
        report.kind = "arf";
        report.class = Some(if report_type.as_deref() == Some("feedback-report") {
            Class::Complaint
        } else {
            Class::Ignored
        });
        return;
    }
    let from = header("From");
    let subject = header("Subject");
    for v in mail.headers.get_all_values("X-Failed-Recipients") {
        report.recipients.extend(addresses(&v));
    }
    let looks_like_bounce = !report.recipients.is_empty()
        || is_daemon(&from)
        || bounce_subject(&subject)
        || header("Return-Path").trim() == "<>";
    if !looks_like_bounce && is_auto_reply(mail, &subject) {
        report.kind = "auto-reply";
        report.class = Some(Class::Ignored);
        return;
    }
    if text.is_empty() {
        text = String::from_utf8_lossy(mail_body(mail)).into_owned();
    }
    read_prose(&text, looks_like_bounce, report);
}

/// A message whose MIME structure is not trusted: headers, then its bytes as text.
fn read_flat(raw: &[u8], report: &mut Report) {
    let (headers, body) = match mailparse::parse_headers(raw) {
        Ok((h, at)) => (h, &raw[at..]),
        Err(_) => (Vec::new(), raw),
    };
    for name in RECIPIENT_HEADERS {
        for v in headers.get_all_values(name) {
            report.return_paths.extend(addresses(&v));
        }
    }
    for v in headers.get_all_values("X-Failed-Recipients") {
        report.recipients.extend(addresses(&v));
    }
    let from = headers.get_first_value("From").unwrap_or_default();
    let subject = headers.get_first_value("Subject").unwrap_or_default();
    let looks_like_bounce =
        !report.recipients.is_empty() || is_daemon(&from) || bounce_subject(&subject);
    let text = String::from_utf8_lossy(&body[..body.len().min(256 * 1024)]);
    read_prose(&text, looks_like_bounce, report);
}

fn mail_body<'a>(mail: &ParsedMail<'a>) -> &'a [u8] {
    let raw = mail.raw_bytes;
    match mailparse::parse_headers(raw) {
        Ok((_, at)) => &raw[at.min(raw.len())..],
        Err(_) => raw,
    }
}

/// A bounce without a delivery-status part: its status code, or failing that its words.
fn read_prose(text: &str, looks_like_bounce: bool, report: &mut Report) {
    if !looks_like_bounce {
        return;
    }
    report.kind = "text";
    if report.recipients.is_empty() {
        report.recipients.extend(prose_recipients(text));
    }
    let status = status_in(text);
    report.class = Some(match &status {
        Some(s) => class_of(s),
        // A bounce that gives no reason at all counts as temporary: it cannot suspend an
        // address on its own.
        None => Class::Soft,
    });
    report.status = status;
}

/// One block of `Name: value` fields of a delivery-status or feedback-report part.
#[derive(Debug, Default)]
struct Fields(Vec<(String, String)>);

impl Fields {
    fn get(&self, name: &str) -> Option<String> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    }

    fn all(&self, name: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .collect()
    }
}

/// Splits a delivery-status body into its blocks (per message, per recipient).
fn field_blocks(body: &str) -> Vec<Fields> {
    let body = body.replace("\r\n", "\n");
    body.split("\n\n")
        .filter(|b| !b.trim().is_empty())
        .filter_map(|block| {
            let mut bytes = block.trim_start_matches('\n').as_bytes().to_vec();
            bytes.extend_from_slice(b"\n\n");
            let (headers, _) = mailparse::parse_headers(&bytes).ok()?;
            let fields: Vec<(String, String)> = headers
                .iter()
                .map(|h| (h.get_key().to_ascii_lowercase(), h.get_value()))
                .collect();
            (!fields.is_empty()).then_some(Fields(fields))
        })
        .collect()
}

/// The per-recipient blocks of a DSN decide: a failure above all, else a delay or relay.
fn read_dsn(blocks: &[Fields], text: &str, report: &mut Report) {
    let mut best: Option<(u8, Class, Option<String>)> = None;
    for block in blocks {
        // Postfix names the original envelope sender (the return path) in its DSN.
        if let Some(v) = block.get("x-postfix-sender") {
            report.return_paths.extend(addresses(&typed_address(&v)));
        }
        let Some(action) = block.get("action") else {
            continue;
        };
        let action = action.trim().to_ascii_lowercase();
        for name in ["final-recipient", "original-recipient"] {
            if let Some(v) = block.get(name) {
                report.recipients.extend(addresses(&typed_address(&v)));
            }
        }
        // A generic `Status: 5.0.0` gives way to the remote server's own, more specific code
        // of the same class in `Diagnostic-Code` (`552 5.2.2 mailbox full`).
        let given = block.get("status").and_then(|s| status_in(&s));
        let diagnosed = block.get("diagnostic-code").and_then(|d| status_in(&d));
        let status = match (given, diagnosed) {
            (Some(g), Some(d)) if g.ends_with(".0.0") && d.get(..1) == g.get(..1) => Some(d),
            (g, d) => g.or(d),
        };
        let (rank, class, status) = match action.as_str() {
            a if a.starts_with("failed") => {
                let status = status.or_else(|| status_in(text));
                let class = status.as_deref().map(class_of).unwrap_or(Class::Soft);
                (if class == Class::Hard { 3 } else { 2 }, class, status)
            }
            _ => (1, Class::Ignored, status),
        };
        if best.as_ref().is_none_or(|(r, _, _)| rank > *r) {
            best = Some((rank, class, status));
        }
    }
    match best {
        Some((_, class, status)) => {
            report.class = Some(class);
            report.status = status;
        }
        // A delivery-status part without a recipient block: read it as prose.
        None => read_prose(text, true, report),
    }
}

/// The class of an enhanced status code (SPEC 12).
pub fn class_of(status: &str) -> Class {
    let mut parts = status.split('.');
    let (class, subject, detail) = (parts.next(), parts.next(), parts.next());
    match (class, subject, detail) {
        (Some("5"), Some("2"), Some("2")) | (Some("5"), Some("7"), _) => Class::Soft,
        (Some("5"), _, _) => Class::Hard,
        (Some("4"), _, _) => Class::Soft,
        _ => Class::Ignored,
    }
}

/// The first failure status code in `text`: an enhanced code (`5.1.1`, `4.2.2`); else what
/// its words say (a full mailbox, an unknown user); else a basic SMTP reply (`550 `) mapped
/// to its nearest enhanced code.
pub fn status_in(text: &str) -> Option<String> {
    match codes_in(text) {
        (Some(enhanced), _) => Some(enhanced),
        (None, basic) => words_status(text).map(str::to_string).or(basic),
    }
}

/// The first enhanced code, and the first basic reply code as an enhanced one.
fn codes_in(text: &str) -> (Option<String>, Option<String>) {
    let b = text.as_bytes();
    let mut basic: Option<String> = None;
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let boundary_before = i == 0 || !(b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'.');
        if (c == b'4' || c == b'5') && boundary_before {
            if let Some(len) = enhanced_at(&b[i..]) {
                return (Some(text[i..i + len].to_string()), basic);
            }
            if basic.is_none()
                && b.len() >= i + 4
                && b[i + 1].is_ascii_digit()
                && b[i + 2].is_ascii_digit()
                && matches!(b[i + 3], b' ' | b'-' | b':')
                && b[i + 1] <= b'5'
            {
                basic = Some(
                    match &text[i..i + 3] {
                        "552" => "5.2.2",
                        "554" => "5.7.1",
                        s if s.starts_with('5') => "5.1.1",
                        _ => "4.0.0",
                    }
                    .to_string(),
                );
            }
        }
        i += 1;
    }
    (None, basic)
}

/// The length of an enhanced status code `c.s.d` at the start of `b`, if there is one.
fn enhanced_at(b: &[u8]) -> Option<usize> {
    if b.len() < 5 || b[1] != b'.' {
        return None;
    }
    let mut i = 2;
    let digits = |from: usize| b[from..].iter().take_while(|c| c.is_ascii_digit()).count();
    let subject = digits(i);
    if !(1..=3).contains(&subject) {
        return None;
    }
    i += subject;
    if b.get(i) != Some(&b'.') {
        return None;
    }
    i += 1;
    let detail = digits(i);
    if !(1..=3).contains(&detail) {
        return None;
    }
    i += detail;
    // Not a part of a longer dotted number (a version, an address, a date).
    match (b.get(i), b.get(i + 1)) {
        (Some(c), _) if c.is_ascii_alphanumeric() => None,
        (Some(b'.'), Some(d)) if d.is_ascii_digit() => None,
        _ => Some(i),
    }
}

/// What a bounce without any code says in words, as a status code.
fn words_status(text: &str) -> Option<&'static str> {
    let t = text.to_lowercase();
    const FULL: &[&str] = &[
        "mailbox full",
        "mailbox is full",
        "quota exceeded",
        "over quota",
        "postfach voll",
        "postfach ist voll",
        "speicherplatz",
    ];
    const GONE: &[&str] = &[
        "user unknown",
        "unknown user",
        "unknown recipient",
        "no such user",
        "no such recipient",
        "no such mailbox",
        "no mailbox here",
        "mailbox not found",
        "user not found",
        "recipient not found",
        "recipient unknown",
        "invalid recipient",
        "invalid mailbox",
        "does not exist",
        "doesn't exist",
        "doesn't have a",
        "does not have an account",
        "mailbox unavailable",
        "account has been disabled",
        "account is disabled",
        "account disabled",
        "no longer active",
        "unrouteable address",
        "benutzer unbekannt",
        "unbekannter benutzer",
        "unbekannter empfänger",
        "empfänger unbekannt",
        "existiert nicht",
        "nicht gefunden",
    ];
    if FULL.iter().any(|w| t.contains(w)) {
        Some("5.2.2")
    } else if GONE.iter().any(|w| t.contains(w)) {
        Some("5.1.1")
    } else {
        None
    }
}

fn is_daemon(from: &str) -> bool {
    let f = from.to_lowercase();
    [
        "mailer-daemon",
        "postmaster@",
        "mail delivery",
        "maildelivery",
        "e-mail-zustellsystem",
    ]
    .iter()
    .any(|w| f.contains(w))
}

fn bounce_subject(subject: &str) -> bool {
    let s = subject.to_lowercase();
    [
        "undeliver",
        "undelivered",
        "delivery status notification (failure)",
        "delivery failure",
        "delivery has failed",
        "failure notice",
        "returned mail",
        "mail delivery failed",
        "mail delivery system",
        "non-delivery",
        "nondeliverable",
        "unzustellbar",
        "nicht zustellbar",
        "zustellung fehlgeschlagen",
        "rückläufer",
    ]
    .iter()
    .any(|w| s.contains(w))
}

/// RFC 3834 `Auto-Submitted`, and the headers and subjects of vacation notices that do not
/// set it (Outlook, Exchange, older autoresponders).
fn is_auto_reply(mail: &ParsedMail<'_>, subject: &str) -> bool {
    let h = |n: &str| mail.headers.get_first_value(n).map(|v| v.to_lowercase());
    if h("Auto-Submitted").is_some_and(|v| !v.trim().starts_with("no")) {
        return true;
    }
    if h("X-Autoreply").is_some()
        || h("X-Autorespond").is_some()
        || h("X-Autoresponder").is_some()
        || h("X-Auto-Response-Suppress").is_some()
        || h("X-Vacation").is_some()
        || h("Precedence").is_some_and(|p| {
            let p = p.trim();
            p == "auto_reply" || p == "bulk" || p == "junk"
        })
    {
        return true;
    }
    let s = subject.to_lowercase();
    [
        "automatic reply",
        "auto reply",
        "autoreply",
        "auto-reply",
        "auto:",
        "out of office",
        "out of the office",
        "abwesenheit",
        "automatische antwort",
        "abwesend",
        "urlaub",
        "vacation",
    ]
    .iter()
    .any(|w| s.contains(w))
}

/// The headers of the returned message: its `Message-ID`, `To` and `Return-Path`.
fn returned_headers(inner: &[u8], report: &mut Report) {
    let Ok((headers, _)) = mailparse::parse_headers(inner) else {
        return;
    };
    for v in headers.get_all_values("Return-Path") {
        report.return_paths.extend(addresses(&v));
    }
    for v in headers.get_all_values("To") {
        report.recipients.extend(addresses(&v));
    }
}

/// `<digest.{run}.{subscriber}@host>` anywhere in the message (returned headers, quoted
/// text, `In-Reply-To`).
fn scan_message_ids(raw: &[u8], out: &mut Vec<(i64, i64, String)>) {
    const NEEDLE: &[u8] = b"<digest.";
    let mut from = 0;
    while let Some(at) = find(&raw[from..], NEEDLE) {
        let start = from + at + NEEDLE.len();
        from = start;
        let rest = &raw[start..raw.len().min(start + 300)];
        let Some(end) = rest.iter().position(|&c| c == b'>') else {
            continue;
        };
        let Ok(id) = std::str::from_utf8(&rest[..end]) else {
            continue;
        };
        let Some((numbers, host)) = id.split_once('@') else {
            continue;
        };
        let Some((run, sub)) = numbers.split_once('.') else {
            continue;
        };
        if let (Ok(run), Ok(sub)) = (run.parse(), sub.parse()) {
            out.push((run, sub, host.to_ascii_lowercase()));
        }
        if out.len() > 16 {
            break;
        }
    }
}

/// Addresses the prose of a bounce names in angle brackets or on a line of their own.
fn prose_recipients(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in text.lines().take(400) {
        let line = line.trim();
        let candidates: Vec<&str> = line
            .split(|c: char| c.is_whitespace() || c == '<' || c == '>' || c == '"' || c == ',')
            .collect();
        for c in candidates {
            let c = c
                .trim_end_matches([':', ';', '.', ')'])
                .trim_start_matches('(');
            if c.contains('@') && !c.starts_with('@') && !c.ends_with('@') && c.len() < 255 {
                out.push(c.to_lowercase());
            }
        }
        if out.len() > 32 {
            break;
        }
    }
    out
}

/// `rfc822; anna@example.org` → `anna@example.org`.
fn typed_address(v: &str) -> String {
    match v.split_once(';') {
        Some((_, a)) => a.trim().to_string(),
        None => v.trim().to_string(),
    }
}

/// The addresses in a header value (`Name <a@b>, c@d`), lowercase.
fn addresses(v: &str) -> Vec<String> {
    match mailparse::addrparse(v) {
        Ok(list) => list
            .iter()
            .flat_map(|a| match a {
                mailparse::MailAddr::Single(s) => vec![s.addr.to_lowercase()],
                mailparse::MailAddr::Group(g) => {
                    g.addrs.iter().map(|s| s.addr.to_lowercase()).collect()
                }
            })
            .filter(|a| a.contains('@'))
            .collect(),
        Err(_) => {
            let t = v
                .trim()
                .trim_start_matches('<')
                .trim_end_matches('>')
                .trim();
            if t.contains('@') && !t.contains(char::is_whitespace) {
                vec![t.to_lowercase()]
            } else {
                Vec::new()
            }
        }
    }
}

fn dedup(v: &mut Vec<String>) {
    let mut seen = std::collections::HashSet::new();
    v.retain(|a| seen.insert(a.clone()));
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn count_ci(hay: &[u8], needle: &[u8]) -> usize {
    let first = needle[0];
    let mut n = 0;
    let mut i = 0;
    while i + needle.len() <= hay.len() {
        if hay[i].eq_ignore_ascii_case(&first)
            && hay[i..i + needle.len()].eq_ignore_ascii_case(needle)
        {
            n += 1;
            if n > MAX_BOUNDARIES {
                return n;
            }
            i += needle.len();
        } else {
            i += 1;
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixtures() -> Vec<(String, Vec<u8>)> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bounces");
        let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| {
                let p = e.unwrap().path();
                (
                    p.file_name().unwrap().to_string_lossy().into_owned(),
                    std::fs::read(&p).unwrap(),
                )
            })
            .collect();
        out.sort();
        out
    }

    #[test]
    fn every_collected_format_gets_its_class() {
        let all = fixtures();
        assert!(all.len() >= 20, "the corpus is there");
        for (name, raw) in &all {
            let expected = name.rsplit('.').nth(1).unwrap();
            let r = read(raw);
            let got = r.class.map(Class::as_str).unwrap_or("none");
            assert_eq!(got, expected, "{name}: {r:?}");
            if matches!(expected, "hard" | "soft") {
                assert!(
                    r.recipients.iter().any(|a| a == "anna@example.org"),
                    "{name}: the failed recipient is found: {r:?}"
                );
                assert!(
                    r.message_ids.contains(&(7, 42, "fitko.example".into())),
                    "{name}: the returned Message-ID is found: {r:?}"
                );
            }
        }
    }

    #[test]
    fn status_codes_and_where_tokens_may_sit() {
        let get = |n: &str| {
            let (_, raw) = fixtures().into_iter().find(|(f, _)| f == n).unwrap();
            read(&raw)
        };
        let r = get("postfix-unknown-user.hard.eml");
        assert_eq!(r.status.as_deref(), Some("5.1.1"));
        assert_eq!(r.kind, "dsn");
        assert!(
            r.return_paths
                .contains(&"bounce+token@fitko.example".to_string())
        );
        assert_eq!(
            get("exchange-online-ndr.hard.eml").status.as_deref(),
            Some("5.1.10")
        );
        assert_eq!(
            get("postfix-mailbox-full.soft.eml").status.as_deref(),
            Some("5.2.2")
        );
        assert_eq!(
            get("qmail-no-mailbox.hard.eml").status.as_deref(),
            Some("5.1.1")
        );
        assert_eq!(get("exim-unknown-user.hard.eml").kind, "text");
        let arf = get("arf-abuse.complaint.eml");
        assert!(
            arf.return_paths
                .contains(&"bounce+token@fitko.example".to_string())
        );
        assert!(arf.recipients.contains(&"anna@example.org".to_string()));
        let postfix = get("postfix-x-postfix-sender-only.hard.eml");
        assert!(
            postfix
                .return_paths
                .contains(&"bounce+token@fitko.example".to_string())
        );
        assert_eq!(get("yahoo-text.hard.eml").status.as_deref(), Some("5.1.1"));
        let redacted = get("arf-redacted.complaint.eml");
        assert!(
            redacted
                .return_paths
                .contains(&"bounce+token@fitko.example".to_string()),
            "from the returned Return-Path"
        );
    }

    #[test]
    fn status_codes_in_prose() {
        assert_eq!(
            status_in("550 5.1.1 <a@b>: unknown").as_deref(),
            Some("5.1.1")
        );
        assert_eq!(status_in("550-5.7.1 spam").as_deref(), Some("5.7.1"));
        assert_eq!(status_in("(#5.1.1)").as_deref(), Some("5.1.1"));
        assert_eq!(status_in("bis zum 5.1.2027 im Urlaub"), None);
        assert_eq!(status_in("version 1.5.1.1 of 192.4.4.4"), None);
        assert_eq!(
            status_in("452 too many recipients").as_deref(),
            Some("4.0.0")
        );
        assert_eq!(status_in("552 Mailbox full").as_deref(), Some("5.2.2"));
        assert_eq!(
            status_in("554 delivery error: no such user").as_deref(),
            Some("5.1.1")
        );
        assert_eq!(status_in("554 rejected").as_deref(), Some("5.7.1"));
        assert_eq!(class_of("5.1.1"), Class::Hard);
        assert_eq!(class_of("5.2.2"), Class::Soft);
        assert_eq!(class_of("5.7.26"), Class::Soft);
        assert_eq!(class_of("4.2.2"), Class::Soft);
        assert_eq!(class_of("2.0.0"), Class::Ignored);
    }

    #[test]
    fn deep_nesting_is_read_flat_and_big_messages_are_read() {
        // 100,000 nested multiparts in 5 MB: read as text, without recursion.
        let mut bomb =
            String::from("From: MAILER-DAEMON@x.example\r\nSubject: Undelivered Mail\r\n");
        let mut n = 0;
        while bomb.len() < 5 << 20 {
            bomb.push_str(&format!(
                "Content-Type: multipart/mixed; boundary=\"b{n}\"\r\n\r\n--b{n}\r\n"
            ));
            n += 1;
        }
        bomb.push_str("\r\n550 5.1.1 unknown\r\n");
        let r = read(bomb.as_bytes());
        assert_eq!(r.kind, "text");
        assert_eq!(
            r.class,
            Some(Class::Soft),
            "its code lies beyond what is read as text"
        );
        // A real bounce with a 5 MB attachment returned.
        let (_, dsn) = fixtures()
            .into_iter()
            .find(|(f, _)| f == "postfix-unknown-user.hard.eml")
            .unwrap();
        let text = String::from_utf8(dsn).unwrap();
        let big = text.replace("Die Woche in der FITKO", &"Ä".repeat(3_000_000));
        assert!(big.len() > 5 << 20);
        let r = read(big.as_bytes());
        assert_eq!(
            (r.class, r.status.as_deref()),
            (Some(Class::Hard), Some("5.1.1"))
        );
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(300))]
        #[test]
        fn never_panics_on_any_bytes(raw in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..4096)) {
            let _ = read(&raw);
        }

        #[test]
        fn never_panics_on_mangled_bounces(cut in 0usize..4000, junk in "[\\x00-\\x7f]{0,40}", at in 0usize..4000) {
            for (_, raw) in fixtures().iter().take(6) {
                let mut v = raw.clone();
                v.truncate(cut.min(v.len()));
                let at = at.min(v.len());
                v.splice(at..at, junk.bytes());
                let _ = read(&v);
            }
        }
    }
}
