//! The scan cache: what a scan learnt of each file, kept between runs, so that a build over
//! thousands of unchanged files reads and parses none of them again.
//!
//! A file is taken from the cache only when its device, inode, size, modification time and
//! change time are all as they were, and the site settings that shape an item (time zone,
//! tagging authority, link template, default author) and herold's version are the same. As
//! in Git's index, a file changed within the same clock tick as the scan that cached it could
//! keep its stamps; such "racy" files (modified less than two seconds before the scan began)
//! are never cached. Files with problems are never cached either, so every run reports them.
//! Anything unexpected in the cache file (another version, a cut-off write, garbage) makes
//! the whole cache count as empty.

use std::path::{Path, PathBuf};

use chrono::{DateTime, FixedOffset};

use super::{Item, SiteContext};

const MAGIC: &[u8; 12] = b"herold-scan\0";
const FORMAT: u32 = 2;

/// What identifies one version of a file on disk without reading it (the scan cache and
/// the daemon's polls both go by it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime_ns: i128,
    pub ctime_ns: i128,
}

/// Seconds and nanoseconds as one count of nanoseconds.
fn nanos(secs: i64, nsec: i64) -> i128 {
    i128::from(secs) * 1_000_000_000 + i128::from(nsec)
}

impl Stamp {
    pub fn of(meta: &std::fs::Metadata) -> Stamp {
        use std::os::unix::fs::MetadataExt;
        Stamp {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime_ns: nanos(meta.mtime(), meta.mtime_nsec()),
            ctime_ns: nanos(meta.ctime(), meta.ctime_nsec()),
        }
    }

    /// The stamp of what `fstatat(2)` gave.
    pub fn of_stat(st: &libc::stat) -> Stamp {
        Stamp {
            dev: st.st_dev,
            ino: st.st_ino,
            size: st.st_size as u64,
            mtime_ns: nanos(st.st_mtime, st.st_mtime_nsec),
            ctime_ns: nanos(st.st_ctime, st.st_ctime_nsec),
        }
    }

    /// Whether the file was last changed at least two seconds before `scan_start_ns`.
    pub fn settled(&self, scan_start_ns: i128) -> bool {
        self.mtime_ns.max(self.ctime_ns) < scan_start_ns - 2_000_000_000
    }
}

/// What the site settings and herold's version make of a file: a cache written under other
/// settings is not used.
fn settings_key(site: &SiteContext) -> u64 {
    let text = format!(
        "{}\n{}\n{}\n{}\n{}",
        env!("CARGO_PKG_VERSION"),
        site.timezone.name(),
        site.tag_authority,
        site.item_url,
        site.default_author
    );
    super::item::stable_hash(text.as_bytes())
}

/// Writes `entries` to `path` atomically (a crash leaves the old cache or none).
pub fn save(path: &Path, site: &SiteContext, entries: &[(Stamp, &Item)]) -> std::io::Result<()> {
    use std::io::Write;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = PathBuf::from(format!("{}.{}.tmp", path.display(), std::process::id()));
    let result = (|| {
        // Entry by entry into the file: the cache is never whole in memory beside the
        // corpus it describes.
        let mut out = std::io::BufWriter::with_capacity(256 << 10, std::fs::File::create(&tmp)?);
        let mut w = Writer(Vec::with_capacity(4096));
        w.0.extend_from_slice(MAGIC);
        w.u32(FORMAT);
        w.u64(settings_key(site));
        w.u64(entries.len() as u64);
        for (stamp, item) in entries {
            out.write_all(&w.0)?;
            w.0.clear();
            encode(&mut w, stamp, item);
        }
        out.write_all(&w.0)?;
        out.into_inner().map_err(|e| e.into_error())?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}
struct Writer(Vec<u8>);

impl Writer {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn i128(&mut self, v: i128) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    /// LEB128: most lengths take one byte.
    fn len(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.0.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.0.push(v as u8);
    }
    fn str(&mut self, s: &str) {
        self.len(s.len() as u64);
        self.0.extend_from_slice(s.as_bytes());
    }
    fn opt(&mut self, s: &Option<String>) {
        match s {
            Some(s) => {
                self.u8(1);
                self.str(s);
            }
            None => self.u8(0),
        }
    }
    fn strs(&mut self, v: &[String]) {
        self.len(v.len() as u64);
        for s in v {
            self.str(s);
        }
    }
    fn date(&mut self, d: &DateTime<FixedOffset>) {
        self.u64(d.timestamp() as u64);
        self.u32(d.timestamp_subsec_nanos());
        self.u32(d.offset().local_minus_utc() as u32);
    }
}

fn encode(w: &mut Writer, stamp: &Stamp, item: &Item) {
    w.str(&item.path);
    // The entry's length, so that a load can index entries without decoding them.
    let len_at = w.0.len();
    w.u32(0);
    let start = w.0.len();
    w.u64(stamp.dev);
    w.u64(stamp.ino);
    w.u64(stamp.size);
    w.i128(stamp.mtime_ns);
    w.i128(stamp.ctime_ns);
    w.str(&item.id);
    w.str(&item.slug);
    w.str(&item.title);
    w.date(&item.date);
    w.date(&item.updated);
    w.opt(&item.summary);
    w.opt(&item.category);
    w.strs(&item.tags);
    w.strs(&item.tag_slugs);
    w.opt(&item.category_slug);
    w.str(&item.author);
    w.u8(u8::from(item.draft));
    w.opt(&item.image);
    w.str(&item.link);
    w.u64(item.body_offset.map_or(u64::MAX, |o| o as u64));
    w.u8(u8::from(item.id_from_file_name));
    w.u64(item.id_line as u64);
    w.u64(item.content_hash);
    let len = (w.0.len() - start) as u32;
    w.0[len_at..start].copy_from_slice(&len.to_le_bytes());
}

/// A length as the cache writes it (seven bits a byte, low first), from `next` byte by byte.
fn varint(mut next: impl FnMut() -> Option<u8>) -> Option<u64> {
    let mut v: u64 = 0;
    for shift in (0..64).step_by(7) {
        let b = next()?;
        v |= u64::from(b & 0x7f) << shift;
        if b < 0x80 {
            return Some(v);
        }
    }
    None
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    fn i128(&mut self) -> Option<i128> {
        Some(i128::from_le_bytes(self.take(16)?.try_into().ok()?))
    }
    fn len(&mut self) -> Option<usize> {
        usize::try_from(varint(|| self.u8())?).ok()
    }
    fn str(&mut self) -> Option<String> {
        let n = self.len()?;
        Some(std::str::from_utf8(self.take(n)?).ok()?.to_owned())
    }
    fn opt(&mut self) -> Option<Option<String>> {
        match self.u8()? {
            0 => Some(None),
            1 => Some(Some(self.str()?)),
            _ => None,
        }
    }
    fn strs(&mut self) -> Option<Vec<String>> {
        let n = self.len()?;
        if n > self.0.len() {
            return None;
        }
        (0..n).map(|_| self.str()).collect()
    }
    fn bool(&mut self) -> Option<bool> {
        match self.u8()? {
            0 => Some(false),
            1 => Some(true),
            _ => None,
        }
    }
    fn date(&mut self) -> Option<DateTime<FixedOffset>> {
        let secs = self.u64()? as i64;
        let nanos = self.u32()?;
        let offset = FixedOffset::east_opt(self.u32()? as i32)?;
        Some(DateTime::from_timestamp(secs, nanos)?.with_timezone(&offset))
    }
}

/// The scan cache read beside a sorted list of files, a slice of the list at a time: the
/// file is read once to check that it is whole (anything else counts as an empty cache),
/// then again in step with the list, so that only the entries of the files being scanned
/// are in memory, not the whole cache beside the whole corpus. Entries are decoded on the
/// scan's threads ([`CacheChunk::get`]).
#[derive(Default)]
pub struct CacheStream {
    reader: Option<std::io::BufReader<std::fs::File>>,
    /// Entries not yet read.
    left: u64,
    count: usize,
    /// The path and entry length of the next entry, read ahead.
    pending: Option<(Vec<u8>, usize)>,
}

/// The cache entries of a slice of files: [`CacheStream::take`].
#[derive(Default)]
pub struct CacheChunk {
    bytes: Vec<u8>,
    at: Vec<Option<(usize, usize)>>,
}

impl CacheChunk {
    /// Whether the cache has an entry for file `k` of the slice.
    pub fn has(&self, k: usize) -> bool {
        self.at.get(k).is_some_and(Option::is_some)
    }

    /// The cached item of file `k` of the slice (at `rel`), when it still has `stamp`.
    pub fn get(&self, k: usize, rel: &str, stamp: &Stamp) -> Option<Item> {
        let (a, b) = (*self.at.get(k)?)?;
        decode_entry(&self.bytes[a..b], rel, stamp)
    }
}

impl CacheStream {
    /// Opens the cache at `path`; empty when it is missing, written under other settings,
    /// or not whole.
    pub fn open(path: &Path, site: &SiteContext) -> CacheStream {
        let key = settings_key(site);
        let open = || -> Option<(std::io::BufReader<std::fs::File>, u64)> {
            let mut r =
                std::io::BufReader::with_capacity(256 << 10, std::fs::File::open(path).ok()?);
            let count = read_header(&mut r, key)?;
            Some((r, count))
        };
        let whole = || -> Option<()> {
            let (mut r, count) = open()?;
            let mut name = Vec::new();
            for _ in 0..count {
                let len = read_entry_header(&mut r, &mut name)?;
                r.seek_relative(len as i64).ok()?;
            }
            // Every entry whole, and nothing after them.
            let end = std::io::Seek::stream_position(&mut r).ok()?;
            (end == r.get_ref().metadata().ok()?.len()).then_some(())
        };
        if whole().is_none() {
            return CacheStream::default();
        }
        match open() {
            Some((r, count)) => CacheStream {
                reader: Some(r),
                left: count,
                count: usize::try_from(count).unwrap_or(usize::MAX),
                pending: None,
            },
            None => CacheStream::default(),
        }
    }

    /// How many files the cache holds.
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The entries of `files` (paths in sorted order, after those of earlier calls).
    pub fn take(&mut self, files: &[String]) -> CacheChunk {
        let mut chunk = CacheChunk {
            bytes: Vec::new(),
            at: vec![None; files.len()],
        };
        let mut name = Vec::new();
        for (k, rel) in files.iter().enumerate() {
            loop {
                let Some(r) = self.reader.as_mut() else {
                    return chunk;
                };
                if self.pending.is_none() {
                    if self.left == 0 {
                        return chunk;
                    }
                    match read_entry_header(r, &mut name) {
                        Some(len) => self.pending = Some((std::mem::take(&mut name), len)),
                        None => {
                            // Changed under us since it was checked: what is left is not used.
                            self.reader = None;
                            return chunk;
                        }
                    }
                }
                let (path, len) = self.pending.as_ref().expect("read ahead");
                let len = *len;
                match path.as_slice().cmp(rel.as_bytes()) {
                    std::cmp::Ordering::Less => {
                        self.pending = None;
                        self.left -= 1;
                        if r.seek_relative(len as i64).is_err() {
                            self.reader = None;
                        }
                    }
                    std::cmp::Ordering::Equal => {
                        self.pending = None;
                        self.left -= 1;
                        let start = chunk.bytes.len();
                        chunk.bytes.resize(start + len, 0);
                        if std::io::Read::read_exact(r, &mut chunk.bytes[start..]).is_err() {
                            chunk.bytes.truncate(start);
                            self.reader = None;
                            return chunk;
                        }
                        chunk.at[k] = Some((start, start + len));
                        break;
                    }
                    std::cmp::Ordering::Greater => break,
                }
            }
        }
        chunk
    }
}

/// Reads the magic, format and settings key of a cache file and gives its entry count.
fn read_header(r: &mut impl std::io::Read, key: u64) -> Option<u64> {
    let mut head = [0u8; 12 + 4 + 8 + 8];
    r.read_exact(&mut head).ok()?;
    let mut h = Reader(head.strip_prefix(MAGIC)?);
    (h.u32()? == FORMAT && h.u64()? == key).then_some(())?;
    h.u64()
}

/// Reads an entry's path into `name` and gives the length of the entry after it.
fn read_entry_header(r: &mut impl std::io::Read, name: &mut Vec<u8>) -> Option<usize> {
    let len = varint(|| {
        let mut b = [0u8; 1];
        r.read_exact(&mut b).ok().map(|()| b[0])
    })?;
    let len = usize::try_from(len).ok().filter(|&n| n <= 1 << 16)?;
    name.resize(len, 0);
    r.read_exact(name).ok()?;
    std::str::from_utf8(name).ok()?;
    let mut n = [0u8; 4];
    r.read_exact(&mut n).ok()?;
    Some(u32::from_le_bytes(n) as usize)
}

fn decode_entry(bytes: &[u8], path: &str, want: &Stamp) -> Option<Item> {
    let mut r = Reader(bytes);
    let stamp = Stamp {
        dev: r.u64()?,
        ino: r.u64()?,
        size: r.u64()?,
        mtime_ns: r.i128()?,
        ctime_ns: r.i128()?,
    };
    if stamp != *want {
        return None;
    }
    let item = Item {
        path: path.to_string(),
        id: r.str()?,
        slug: r.str()?,
        title: r.str()?,
        date: r.date()?,
        updated: r.date()?,
        summary: r.opt()?,
        category: r.opt()?,
        tags: r.strs()?,
        tag_slugs: r.strs()?,
        category_slug: r.opt()?,
        author: r.str()?,
        draft: r.bool()?,
        image: r.opt()?,
        link: r.str()?,
        body: String::new(),
        source: None,
        body_offset: match r.u64()? {
            u64::MAX => None,
            o => Some(usize::try_from(o).ok()?),
        },
        id_from_file_name: r.bool()?,
        id_line: usize::try_from(r.u64()?).ok()?,
        revision: 0,
        content_hash: r.u64()?,
        derived: Default::default(),
    };
    r.0.is_empty().then_some(item)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site() -> SiteContext {
        SiteContext::for_tests()
    }

    #[test]
    fn items_come_back_as_they_went_in_and_damage_empties_the_cache() {
        let dir = tempfile::tempdir().unwrap();
        let text = "+++\ntitle = \"Über „Register“\"\ndate = 2026-01-02T10:30:00.5+01:00\nupdated = 2026-02-01\nsummary = \"Kurz\"\ncategory = \"Presse\"\ntags = [\"OZG\", \"Ä b\"]\nimage = \"/a.png\"\nauthor = \"Jo\"\n+++\nText\n";
        let mut item = super::super::parse_item("2026/a.md", text.as_bytes(), &site()).unwrap();
        item.body = String::new();
        let other = super::super::parse_item(
            "b.md",
            b"+++\ntitle = \"B\"\ndate = 2026-01-01\ndraft = true\nid = \"x:1\"\n+++\n",
            &site(),
        )
        .unwrap();
        let stamp = Stamp {
            dev: 1,
            ino: 2,
            size: 3,
            mtime_ns: -4,
            ctime_ns: 1 << 70,
        };
        let path = dir.path().join("data/scan-cache");
        save(&path, &site(), &[(stamp, &item), (stamp, &other)]).unwrap();
        let mut cache = CacheStream::open(&path, &site());
        assert_eq!(cache.len(), 2);
        // Read in step with a sorted list of files: one before, between and after them.
        let files = ["0.md", "2026/a.md", "a.md", "b.md", "c.md"].map(String::from);
        let first = cache.take(&files[..2]);
        assert_eq!(first.get(0, "0.md", &stamp), None);
        assert_eq!(first.get(1, "2026/a.md", &stamp), Some(item.clone()));
        let rest = cache.take(&files[2..]);
        let mut b = other.clone();
        b.body = String::new();
        assert_eq!(rest.get(1, "b.md", &stamp), Some(b));
        let moved = Stamp { ino: 9, ..stamp };
        assert_eq!(rest.get(1, "b.md", &moved), None, "another inode");
        assert_eq!(rest.get(0, "a.md", &stamp), None);
        assert_eq!(rest.get(2, "c.md", &stamp), None);

        let other_site = SiteContext {
            default_author: "Andere".into(),
            ..site()
        };
        assert!(CacheStream::open(&path, &other_site).is_empty());
        let bytes = std::fs::read(&path).unwrap();
        for cut in [0, 12, 40, bytes.len() - 1] {
            std::fs::write(&path, &bytes[..cut]).unwrap();
            let mut cache = CacheStream::open(&path, &site());
            assert!(cache.is_empty(), "{cut}");
            let b = "b.md".to_string();
            assert_eq!(
                cache.take(std::slice::from_ref(&b)).get(0, &b, &stamp),
                None
            );
        }
        let mut longer = bytes.clone();
        longer.push(0);
        std::fs::write(&path, &longer).unwrap();
        assert!(CacheStream::open(&path, &site()).is_empty());
    }
}
