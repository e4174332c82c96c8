//! RFC 5005 archived feeds for the site feed (SPEC 11): every published item older than the
//! current feed's newest `feeds.limit` is in one archive document, the oldest items in the
//! first. Documents are named by what they hold (a hash of the settings, their items'
//! files and the document before them), so the document at a URL never changes, and they
//! link backward only, so a newer document leaves the older ones as they are.

use std::sync::Arc;

use crate::config::Format;
use crate::content::Item;
use crate::content::item::stable_hash;

/// One archive document (in RSS and in Atom).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveDoc {
    /// 1 for the oldest.
    pub seq: usize,
    /// Names the document by its contents.
    pub hash: u64,
    /// Corpus positions of its items, newest first.
    pub items: Vec<usize>,
}

impl ArchiveDoc {
    /// The file of one format below `feeds.dir`; `None` for a format without archives.
    pub fn file(&self, format: Format) -> Option<String> {
        let ext = match format {
            Format::Rss => "rss",
            Format::Atom => "atom",
            Format::Json => return None,
        };
        Some(format!(
            "archive/{:04}-{:016x}.{ext}.xml",
            self.seq, self.hash
        ))
    }
}

/// The archive documents of `items` (newest first; published from `start`), oldest
/// first: the items after the newest `limit`, cut into documents of `size` from the oldest.
/// `settings` names what else the documents show (titles, URLs), so that new settings
/// give new names.
pub fn plan(
    items: &[Arc<Item>],
    start: usize,
    limit: usize,
    size: usize,
    settings: &str,
) -> Vec<ArchiveDoc> {
    plan_with(
        items,
        start,
        limit,
        size,
        settings,
        &|i| items[i].page_key(),
        &mut Names::default(),
    )
}

/// The names of archive documents already worked out, by what decides them: the name of
/// the document before, the sequence number, and the [`Item::page_key`]s of the items.
/// Naming a document hashes its items' ids and paths; a new item changes the newest
/// document only, so the daemon keeps the names of the others.
#[derive(Debug, Default)]
pub struct Names(rustc_hash::FxHashMap<[u64; 3], u64>);

/// [`plan`] with each item's [`Item::page_key`] from `item_key` (the daemon has them without
/// visiting the items) and the names `names` knows.
pub fn plan_with(
    items: &[Arc<Item>],
    start: usize,
    limit: usize,
    size: usize,
    settings: &str,
    item_key: &dyn Fn(usize) -> u64,
    names: &mut Names,
) -> Vec<ArchiveDoc> {
    let archived = items.len().saturating_sub(start + limit);
    if archived == 0 || size == 0 {
        return Vec::new();
    }
    // Oldest first: position `items.len() - 1` is the oldest item.
    let oldest_first = (start + limit..items.len()).rev().collect::<Vec<_>>();
    let mut docs: Vec<ArchiveDoc> = Vec::with_capacity(archived.div_ceil(size));
    let mut prev = stable_hash(settings.as_bytes());
    let mut used = rustc_hash::FxHashMap::default();
    for (k, chunk) in oldest_first.chunks(size).enumerate() {
        let memo = [
            prev,
            k as u64 + 1,
            chunk.iter().fold(chunk.len() as u64, |h, &i| {
                (h.rotate_left(5) ^ item_key(i)).wrapping_mul(0x517c_c1b7_2722_0a95)
            }),
        ];
        let hash = match names.0.get(&memo) {
            Some(&hash) => hash,
            None => {
                let mut key = Vec::with_capacity(16 + chunk.len() * 48);
                key.extend_from_slice(&prev.to_le_bytes());
                key.extend_from_slice(&(k as u64 + 1).to_le_bytes());
                for &i in chunk {
                    let item = &items[i];
                    key.extend_from_slice(&item.content_hash.to_le_bytes());
                    key.extend_from_slice(item.id.as_bytes());
                    key.push(0);
                    key.extend_from_slice(item.path.as_bytes());
                    key.push(0);
                }
                stable_hash(&key)
            }
        };
        used.insert(memo, hash);
        prev = hash;
        docs.push(ArchiveDoc {
            seq: k + 1,
            hash,
            items: chunk.iter().rev().copied().collect(),
        });
    }
    names.0 = used;
    docs
}

/// Whether `path` (below `feeds.dir`) is a name [`ArchiveDoc::file`] gives.
pub fn is_archive_file(path: &str) -> bool {
    let Some(name) = path.strip_prefix("archive/") else {
        return false;
    };
    let Some(stem) = name
        .strip_suffix(".rss.xml")
        .or_else(|| name.strip_suffix(".atom.xml"))
    else {
        return false;
    };
    let Some((seq, hash)) = stem.split_once('-') else {
        return false;
    };
    !seq.is_empty()
        && seq.bytes().all(|b| b.is_ascii_digit())
        && hash.len() == 16
        && hash
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}
