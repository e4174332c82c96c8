//! Atom 1.0 (RFC 4287) with `xml:lang`, a feed author and `rel="self"`.

use atom_syndication::{
    Category, Content, Entry, Feed, Generator, Link, Person, Text, WriteConfig,
};

use super::{FeedView, XML_DECL, image_type};

pub(super) fn render(v: &FeedView) -> Vec<u8> {
    let link = |rel: &str, href: &str, mime: Option<&str>| Link {
        rel: rel.into(),
        href: href.into(),
        mime_type: mime.map(Into::into),
        ..Default::default()
    };
    let mut links = vec![
        link("self", &v.self_url, Some("application/atom+xml")),
        link("alternate", &v.link, Some("text/html")),
    ];
    if !v.is_archive() {
        // Archive documents never change, so nobody needs to be told of a change.
        links.extend(v.meta.hubs.iter().map(|h| link("hub", h, None)));
    }
    links.extend(
        v.history_links()
            .iter()
            .map(|(rel, href)| link(rel, href, Some("application/atom+xml"))),
    );
    let entries = v
        .entries
        .iter()
        .map(|(item, body)| {
            let mut links = vec![link("alternate", &item.link, Some("text/html"))];
            if let Some(img) = &item.image {
                links.push(link("enclosure", img, Some(image_type(img))));
            }
            Entry {
                title: Text::plain(item.title.clone()),
                id: item.id.clone(),
                updated: distinct_updated(item),
                published: Some(item.date),
                authors: vec![Person {
                    name: item.author.clone(),
                    ..Default::default()
                }],
                categories: super::FeedView::categories(item)
                    .into_iter()
                    .map(|c| Category {
                        term: c.to_string(),
                        ..Default::default()
                    })
                    .collect(),
                links,
                // An entry without content needs a summary; the title stands in for a missing one.
                summary: match (body.summary.is_empty(), body.html.is_empty()) {
                    (false, _) => Some(Text::plain(body.summary.clone())),
                    (true, true) => Some(Text::plain(item.title.clone())),
                    (true, false) => None,
                },
                // A blank <content> is invalid; an empty body leaves the summary and the link.
                content: (!body.html.is_empty()).then(|| Content {
                    content_type: Some("html".into()),
                    value: Some(body.html.clone()),
                    ..Default::default()
                }),
                ..Default::default()
            }
        })
        .collect();
    let epoch = chrono::DateTime::UNIX_EPOCH.fixed_offset();
    let feed = Feed {
        title: Text::plain(v.title.clone()),
        subtitle: (!v.meta.description.is_empty()).then(|| Text::plain(v.meta.description.clone())),
        id: v.self_url.clone(),
        updated: v
            .entries
            .iter()
            .map(|(i, _)| distinct_updated(i))
            .max()
            .unwrap_or(epoch),
        authors: vec![Person {
            name: v.meta.author.clone(),
            ..Default::default()
        }],
        generator: Some(Generator {
            value: "herold".into(),
            uri: None,
            version: Some(env!("CARGO_PKG_VERSION").into()),
        }),
        links,
        lang: Some(v.meta.language.clone()),
        entries,
        namespaces: if v.is_archive() {
            [("fh".to_string(), super::FH_NS.to_string())].into()
        } else {
            Default::default()
        },
        extensions: if v.is_archive() {
            archive_marker()
        } else {
            Default::default()
        },
        ..Default::default()
    };
    let mut out = Vec::with_capacity(64 * 1024);
    out.extend_from_slice(XML_DECL);
    let config = WriteConfig {
        write_document_declaration: false,
        indent_size: Some(2),
    };
    feed.write_with_config(out, config)
        .expect("writing to a Vec cannot fail")
}

/// `<fh:archive/>`.
fn archive_marker() -> atom_syndication::extension::ExtensionMap {
    let marker = atom_syndication::extension::Extension {
        name: "fh:archive".into(),
        ..Default::default()
    };
    [(
        "fh".to_string(),
        [("archive".to_string(), vec![marker])].into(),
    )]
    .into()
}

/// The entry's `updated` with a sub-second part fixed by its id.
///
/// Atom readers and the W3C validator take two entries with the same `updated` for a
/// generator bug, yet items dated by day share midnight. A tiebreak that depends on other
/// items would change an entry's `updated` whenever a neighbour comes or goes, and readers
/// would show it as changed; this one depends on the item alone, so it never moves, and no
/// one sees microseconds. Times that already carry fractions are left as written.
fn distinct_updated(item: &crate::content::Item) -> chrono::DateTime<chrono::FixedOffset> {
    use sha2::Digest;
    if item.updated.timestamp_subsec_nanos() != 0 {
        return item.updated;
    }
    let h = sha2::Sha256::digest(item.id.as_bytes());
    let micros = u32::from_be_bytes([h[0], h[1], h[2], h[3]]) % 1_000_000;
    item.updated + chrono::TimeDelta::microseconds(i64::from(micros.max(1)))
}
