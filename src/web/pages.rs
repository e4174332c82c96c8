//! `GET /{pages.path}/…`: the pages herold writes (SPEC 10), with the validators and
//! compression of the feeds. Only names herold writes are served (`index.html` in a
//! directory, the sitemap): no directory listing, no path outside `pages.dir`, no file
//! that somebody else put there under another name.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};

use super::AppState;

/// What a request path below the pages asks for.
#[derive(Debug, PartialEq, Eq)]
enum Target {
    /// A file below `pages.dir`, and its content type.
    File(String, &'static str),
    /// The same path with a trailing slash.
    Redirect,
}

/// Maps the part of a URL path after `/{pages.path}/` to a page file; `None` for anything
/// herold does not write.
fn target(rel: &str) -> Option<Target> {
    if rel.len() > 1024 {
        return None;
    }
    if let Some(name) = rel.strip_prefix("sitemap")
        && let Some(n) = name.strip_suffix(".xml")
        && (n.is_empty()
            || n.strip_prefix('-')
                .is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit())))
    {
        return Some(Target::File(
            rel.to_string(),
            "application/xml; charset=utf-8",
        ));
    }
    if rel == "style.css" {
        return Some(Target::File(rel.into(), "text/css; charset=utf-8"));
    }
    let (dir, redirect) = match rel.strip_suffix('/') {
        Some(d) => (d, false),
        None if rel.is_empty() => ("", false),
        None => (rel, true),
    };
    let segment_ok = |s: &str| {
        !s.is_empty()
            && !s.starts_with('.')
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.~".contains(&b))
    };
    if !dir.is_empty() && !dir.split('/').all(segment_ok) {
        return None;
    }
    if redirect {
        return Some(Target::Redirect);
    }
    let file = if dir.is_empty() {
        "index.html".to_string()
    } else {
        format!("{dir}/index.html")
    };
    Some(Target::File(file, "text/html; charset=utf-8"))
}

/// The fallback route: pages below `/{pages.path}`, else 404.
pub async fn serve(
    State(state): State<Arc<AppState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let config = state.config();
    if !config.pages.enabled || (method != Method::GET && method != Method::HEAD) {
        return super::not_found().await;
    }
    // The path as sent: percent-escapes are not decoded, so `%2e%2e` is just no page.
    let path = uri.path();
    let prefix = format!("/{}", config.pages.path);
    let Some(rest) = path.strip_prefix(&prefix) else {
        return super::not_found().await;
    };
    let rel = match rest.strip_prefix('/') {
        Some(r) => r,
        None if rest.is_empty() => return redirect(&format!("{path}/")),
        None => return super::not_found().await,
    };
    match target(rel) {
        None => super::not_found().await,
        Some(Target::Redirect) => {
            // Only when that page exists, so a mistyped URL is a plain 404.
            let dir = config.pages.dir.join(rel).join("index.html");
            if tokio::fs::metadata(&dir).await.is_ok_and(|m| m.is_file()) {
                redirect(&format!("{path}/"))
            } else {
                super::not_found().await
            }
        }
        Some(Target::File(file, content_type)) => {
            super::feeds::serve_file(
                &state,
                &format!("pages/{file}"),
                config.pages.dir.join(&file),
                content_type,
                "public, max-age=300",
                None,
                &headers,
            )
            .await
        }
    }
}

fn redirect(to: &str) -> Response {
    (
        StatusCode::MOVED_PERMANENTLY,
        [(header::LOCATION, to.to_string())],
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_page_names_are_served() {
        let file = |f: &str| Some(Target::File(f.into(), "text/html; charset=utf-8"));
        assert_eq!(target(""), file("index.html"));
        assert_eq!(target("page/2/"), file("page/2/index.html"));
        assert_eq!(
            target("2026/01/20/ozg-aenderungsgesetz-2026/"),
            file("2026/01/20/ozg-aenderungsgesetz-2026/index.html")
        );
        assert_eq!(target("tags/ozg"), Some(Target::Redirect));
        assert_eq!(
            target("sitemap.xml"),
            Some(Target::File(
                "sitemap.xml".into(),
                "application/xml; charset=utf-8"
            ))
        );
        assert!(matches!(target("sitemap-3.xml"), Some(Target::File(..))));
        for bad in [
            "../config.toml",
            "tags/../../x/",
            "a//b/",
            ".herold-pages",
            ".hidden/",
            "tags/%2e%2e/",
            "index.html/",
            "sitemap-.xml",
            "sitemapx.xml",
        ] {
            assert!(
                !matches!(target(bad), Some(Target::File(ref f, _)) if f.contains("..") || f.starts_with('.') || f.contains("//")),
                "{bad}"
            );
        }
        assert_eq!(target("../config.toml"), None);
        assert_eq!(target(".herold-pages"), None);
        assert_eq!(target("a//b/"), None);
        assert_eq!(target("tags/%2e%2e/"), None);
    }
}
