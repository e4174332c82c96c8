//! JSON Feed 1.1 (https://jsonfeed.org/version/1.1).

use serde::Serialize;

use super::FeedView;

#[derive(Serialize)]
struct JsonFeed<'a> {
    version: &'static str,
    title: &'a str,
    home_page_url: &'a str,
    feed_url: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    description: &'a str,
    language: &'a str,
    authors: [Author<'a>; 1],
    #[serde(skip_serializing_if = "Vec::is_empty")]
    hubs: Vec<Hub<'a>>,
    items: Vec<JsonItem<'a>>,
}

#[derive(Serialize)]
struct Author<'a> {
    name: &'a str,
}

#[derive(Serialize)]
struct Hub<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    url: &'a str,
}

#[derive(Serialize)]
struct JsonItem<'a> {
    id: &'a str,
    url: &'a str,
    title: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    content_html: &'a str,
    /// JSON Feed needs content_html or content_text; a body without text gives the summary.
    #[serde(skip_serializing_if = "Option::is_none")]
    content_text: Option<&'a str>,
    #[serde(skip_serializing_if = "str::is_empty")]
    summary: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    image: Option<&'a str>,
    date_published: String,
    date_modified: String,
    authors: [Author<'a>; 1],
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tags: Vec<&'a str>,
}

pub(super) fn render(v: &FeedView) -> Vec<u8> {
    let feed = JsonFeed {
        version: "https://jsonfeed.org/version/1.1",
        title: &v.title,
        home_page_url: &v.link,
        feed_url: &v.self_url,
        description: &v.meta.description,
        language: &v.meta.language,
        authors: [Author {
            name: &v.meta.author,
        }],
        hubs: v
            .meta
            .hubs
            .iter()
            .map(|h| Hub {
                kind: "WebSub",
                url: h,
            })
            .collect(),
        items: v
            .entries
            .iter()
            .map(|(item, body)| JsonItem {
                id: &item.id,
                url: &item.link,
                title: &item.title,
                content_html: &body.html,
                content_text: body.html.is_empty().then_some(if body.summary.is_empty() {
                    &item.title
                } else {
                    &body.summary
                }),
                summary: &body.summary,
                image: item.image.as_deref(),
                date_published: item.date.to_rfc3339(),
                date_modified: item.updated.to_rfc3339(),
                authors: [Author { name: &item.author }],
                tags: FeedView::categories(item),
            })
            .collect(),
    };
    let mut out = serde_json::to_vec_pretty(&feed).expect("JSON Feed serialises");
    out.push(b'\n');
    out
}
