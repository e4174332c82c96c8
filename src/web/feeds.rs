//! `GET /feeds/…`: the feed files with strong ETags, `Last-Modified`, `304 Not Modified`,
//! gzip and brotli, the right content types and `Link` headers. Only names herold writes
//! are served: no directory listing, no path outside `feeds.dir`.

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::SystemTime;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::{AppState, http_date};
use crate::config::Format;

/// The files served lately, by path, with their compressed forms made once per version.
#[derive(Default)]
pub struct Cache {
    files: Mutex<HashMap<String, Arc<Cached>>>,
}

struct Cached {
    /// Size, mtime and inode of the file this was read from.
    stamp: (u64, i64, i64, u64),
    modified: SystemTime,
    bytes: Vec<u8>,
    /// Hex of the first 16 bytes of the content's SHA-256.
    hash: String,
    gzip: OnceLock<Vec<u8>>,
    brotli: OnceLock<Vec<u8>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Identity,
    Gzip,
    Brotli,
}

impl Encoding {
    fn etag_suffix(self) -> &'static str {
        match self {
            Encoding::Identity => "",
            Encoding::Gzip => "-gzip",
            Encoding::Brotli => "-br",
        }
    }
}

/// The format of an allowed feed path: `rss.xml`, `tags/{slug}/atom.xml`, …; `None` for
/// anything else (which is then 404, whatever lies on disk).
pub fn feed_path(path: &str) -> Option<Format> {
    let parts: Vec<&str> = path.split('/').collect();
    let name = match parts.as_slice() {
        [name] => name,
        ["archive", name] => return archive_format(name),
        [group, slug, name] if (*group == "tags" || *group == "categories") && is_slug(slug) => {
            name
        }
        _ => return None,
    };
    Format::ALL.into_iter().find(|f| f.file_name() == *name)
}

/// The format of an archive document's name (`{seq}-{hash}.rss.xml`, `….atom.xml`).
fn archive_format(name: &str) -> Option<Format> {
    if !crate::feed::archive::is_archive_file(&format!("archive/{name}")) {
        return None;
    }
    Some(if name.ends_with(".rss.xml") {
        Format::Rss
    } else {
        Format::Atom
    })
}

fn is_slug(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 200
        && !s.starts_with('-')
        && !s.ends_with('-')
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

pub async fn serve(
    State(state): State<Arc<AppState>>,
    Path(path): Path<String>,
    headers: HeaderMap,
) -> Response {
    let Some(format) = feed_path(&path) else {
        return super::not_found().await;
    };
    let config = state.config();
    let mut links = vec![format!(
        "<{}/{}>; rel=\"self\"",
        config.feeds_base_url(),
        path
    )];
    links.extend(
        config
            .feeds
            .websub_hubs
            .iter()
            .map(|h| format!("<{h}>; rel=\"hub\"")),
    );
    // Archive documents never change (a change gets a new name), so they may be cached long.
    let cache_control = if path.starts_with("archive/") {
        "public, max-age=31536000, immutable"
    } else {
        "public, max-age=300"
    };
    let file = config.feeds.dir.join(&path);
    serve_file(
        &state,
        &format!("feeds/{path}"),
        file,
        &format!("{}; charset=utf-8", format.content_type()),
        cache_control,
        Some(&links.join(", ")),
        &headers,
    )
    .await
}

/// Serves the file `file` (cached in memory as `key`) with a strong ETag, `Last-Modified`,
/// `304 Not Modified` and the compression the client accepts.
pub(super) async fn serve_file(
    state: &Arc<AppState>,
    key: &str,
    file: std::path::PathBuf,
    content_type: &str,
    cache_control: &str,
    link: Option<&str>,
    headers: &HeaderMap,
) -> Response {
    let cached = match tokio::task::spawn_blocking({
        let state = state.clone();
        let key = key.to_string();
        move || state.feed_cache.get(&key, &file)
    })
    .await
    {
        Ok(Ok(c)) => c,
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => return super::not_found().await,
        Ok(Err(e)) => {
            tracing::error!(path = %key, "cannot read a file to serve: {e}");
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        }
        Err(_) => return StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    };

    let encoding = negotiate(
        headers
            .get(header::ACCEPT_ENCODING)
            .and_then(|v| v.to_str().ok())
            .unwrap_or(""),
    );
    let etag = format!("\"{}{}\"", cached.hash, encoding.etag_suffix());
    let mut out = HeaderMap::new();
    let set = |out: &mut HeaderMap, name: header::HeaderName, value: &str| {
        if let Ok(v) = HeaderValue::from_str(value) {
            out.insert(name, v);
        }
    };
    set(&mut out, header::ETAG, &etag);
    set(&mut out, header::LAST_MODIFIED, &http_date(cached.modified));
    set(&mut out, header::VARY, "Accept-Encoding");
    set(&mut out, header::CACHE_CONTROL, cache_control);
    if let Some(link) = link {
        set(&mut out, header::LINK, link);
    }

    if not_modified(headers, &cached) {
        return (StatusCode::NOT_MODIFIED, out).into_response();
    }
    set(&mut out, header::CONTENT_TYPE, content_type);
    let body = match encoding {
        Encoding::Identity => cached.bytes.clone(),
        Encoding::Gzip => {
            set(&mut out, header::CONTENT_ENCODING, "gzip");
            cached.gzip.get_or_init(|| gzip(&cached.bytes)).clone()
        }
        Encoding::Brotli => {
            set(&mut out, header::CONTENT_ENCODING, "br");
            cached.brotli.get_or_init(|| brotli(&cached.bytes)).clone()
        }
    };
    (StatusCode::OK, out, body).into_response()
}

/// RFC 9110: `If-None-Match` decides when present (any representation of the same content
/// matches, so a client that switches encodings still gets 304); else `If-Modified-Since`.
fn not_modified(headers: &HeaderMap, cached: &Cached) -> bool {
    if let Some(inm) = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
    {
        return inm.split(',').map(str::trim).any(|tag| {
            if tag == "*" {
                return true;
            }
            let tag = tag.strip_prefix("W/").unwrap_or(tag).trim_matches('"');
            let tag = tag
                .strip_suffix("-gzip")
                .or_else(|| tag.strip_suffix("-br"))
                .unwrap_or(tag);
            tag == cached.hash
        });
    }
    if let Some(ims) = headers
        .get(header::IF_MODIFIED_SINCE)
        .and_then(|v| v.to_str().ok())
        && let Ok(since) = chrono::DateTime::parse_from_rfc2822(ims)
    {
        let modified = chrono::DateTime::<chrono::Utc>::from(cached.modified).timestamp();
        return modified <= since.timestamp();
    }
    false
}

/// Picks brotli, then gzip, then identity, by the client's `Accept-Encoding` (q=0 refuses).
fn negotiate(accept: &str) -> Encoding {
    let mut gzip = false;
    let mut br = false;
    for part in accept.split(',') {
        let mut it = part.split(';');
        let name = it.next().unwrap_or("").trim().to_ascii_lowercase();
        let refused = it.any(|p| {
            let p = p.trim().replace(' ', "");
            p == "q=0" || p == "q=0.0" || p == "q=0.00" || p == "q=0.000"
        });
        if refused {
            continue;
        }
        match name.as_str() {
            "br" => br = true,
            "gzip" | "x-gzip" => gzip = true,
            "*" => {
                br = true;
                gzip = true;
            }
            _ => {}
        }
    }
    if br {
        Encoding::Brotli
    } else if gzip {
        Encoding::Gzip
    } else {
        Encoding::Identity
    }
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(bytes.len() / 4),
        flate2::Compression::default(),
    );
    enc.write_all(bytes).expect("writing to a Vec");
    enc.finish().expect("writing to a Vec")
}

fn brotli(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() / 4);
    {
        let mut w = brotli::CompressorWriter::new(&mut out, 64 * 1024, 6, 22);
        w.write_all(bytes).expect("writing to a Vec");
    }
    out
}

impl Cache {
    /// The file at `full` (served as `path`), from memory when size, mtime and inode match.
    fn get(&self, path: &str, full: &std::path::Path) -> std::io::Result<Arc<Cached>> {
        let meta = std::fs::metadata(full)?;
        if !meta.is_file() {
            return Err(std::io::ErrorKind::NotFound.into());
        }
        let stamp = (meta.len(), meta.mtime(), meta.mtime_nsec(), meta.ino());
        if let Some(c) = self
            .files
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(path)
            && c.stamp == stamp
        {
            return Ok(c.clone());
        }
        let bytes = std::fs::read(full)?;
        let hash = {
            use sha2::Digest;
            let d = sha2::Sha256::digest(&bytes);
            d[..16].iter().map(|b| format!("{b:02x}")).collect()
        };
        let cached = Arc::new(Cached {
            stamp,
            modified: meta.modified()?,
            bytes,
            hash,
            gzip: OnceLock::new(),
            brotli: OnceLock::new(),
        });
        self.files
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(path.to_string(), cached.clone());
        Ok(cached)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_feed_names_are_served() {
        assert_eq!(feed_path("rss.xml"), Some(Format::Rss));
        assert_eq!(
            feed_path("tags/oeffentliche-verwaltung/atom.xml"),
            Some(Format::Atom)
        );
        assert_eq!(feed_path("categories/ozg/feed.json"), Some(Format::Json));
        for bad in [
            "",
            "tags",
            "tags/",
            "tags/ozg",
            "tags/ozg/",
            "../config.toml",
            "tags/../rss.xml",
            "tags/%2e%2e/rss.xml",
            "tags/OZG/rss.xml",
            "README.md",
            "x/ozg/rss.xml",
            "tags/ozg/rss.xml/x",
            ".rss.xml.1.tmp",
            "tags/-x/rss.xml",
        ] {
            assert_eq!(feed_path(bad), None, "{bad}");
        }
    }

    #[test]
    fn encodings() {
        assert_eq!(negotiate("gzip, deflate, br"), Encoding::Brotli);
        assert_eq!(negotiate("gzip"), Encoding::Gzip);
        assert_eq!(negotiate("br;q=0, gzip;q=0.5"), Encoding::Gzip);
        assert_eq!(negotiate(""), Encoding::Identity);
        assert_eq!(negotiate("identity"), Encoding::Identity);
        assert_eq!(negotiate("*"), Encoding::Brotli);
    }
}
