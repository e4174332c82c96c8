//! RSS 2.0 with `atom:link rel="self"`, `content:encoded` and `dc:creator`.

use rss::extension::atom::{AtomExtension, Link};
use rss::extension::dublincore::DublinCoreExtension;

use super::{FeedView, GENERATOR, image_type, rfc822};
use crate::content::text::escape_html;

pub(super) fn render(v: &FeedView) -> Vec<u8> {
    let mut links = vec![Link {
        rel: "self".into(),
        href: v.self_url.clone(),
        mime_type: Some("application/rss+xml".into()),
        ..Default::default()
    }];
    if !v.is_archive() {
        links.extend(v.meta.hubs.iter().map(|h| Link {
            rel: "hub".into(),
            href: h.clone(),
            ..Default::default()
        }));
    }
    links.extend(v.history_links().into_iter().map(|(rel, href)| Link {
        rel: rel.into(),
        href,
        mime_type: Some("application/rss+xml".into()),
        ..Default::default()
    }));
    let items = v
        .entries
        .iter()
        .map(|(item, body)| rss::Item {
            title: Some(item.title.clone()),
            link: Some(item.link.clone()),
            // RSS descriptions are HTML; the summary is text. Readers and validators expect a
            // description beside content:encoded, so a body without text lead gives the title.
            description: Some(escape_html(if body.summary.is_empty() {
                &item.title
            } else {
                &body.summary
            })),
            guid: Some(rss::Guid {
                value: item.id.clone(),
                permalink: false,
            }),
            pub_date: Some(rfc822(&item.date)),
            categories: FeedView::categories(item)
                .into_iter()
                .map(|c| rss::Category {
                    name: c.to_string(),
                    domain: None,
                })
                .collect(),
            enclosure: item.image.as_ref().map(|url| rss::Enclosure {
                url: url.clone(),
                length: "0".into(),
                mime_type: image_type(url).into(),
            }),
            content: (!body.html.is_empty()).then(|| body.html.clone()),
            dublin_core_ext: Some(DublinCoreExtension {
                creators: vec![item.author.clone()],
                ..Default::default()
            }),
            ..Default::default()
        })
        .collect();
    let description = if v.meta.description.is_empty() {
        v.title.clone()
    } else {
        v.meta.description.clone()
    };
    let channel = rss::Channel {
        title: v.title.clone(),
        link: v.link.clone(),
        description,
        language: Some(v.meta.language.clone()),
        last_build_date: v.updated.as_ref().map(rfc822),
        generator: Some(GENERATOR.into()),
        atom_ext: Some(AtomExtension { links }),
        items,
        namespaces: if v.is_archive() {
            [("fh".to_string(), super::FH_NS.to_string())].into()
        } else {
            Default::default()
        },
        extensions: if v.is_archive() {
            let marker = rss::extension::Extension {
                name: "fh:archive".into(),
                ..Default::default()
            };
            [(
                "fh".to_string(),
                [("archive".to_string(), vec![marker])].into(),
            )]
            .into()
        } else {
            Default::default()
        },
        ..Default::default()
    };
    channel
        .pretty_write_to(Vec::with_capacity(64 * 1024), b' ', 2)
        .expect("writing to a Vec cannot fail")
}
