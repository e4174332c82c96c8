//! Which items a digest run contains, and which of them each subscriber gets. Pure.
//!
//! An item is *published* at the later of its `date` and the moment herold first saw its
//! file. A run contains the items published after the previous completed run began (the
//! first run: after the schedule's previous fire time) up to the run's start: never an item
//! twice, never one skipped, also for a file added late with an older date. An item first
//! seen more than `max_age` after its date is history (an import) and enters no digest.

use std::collections::HashMap;
use std::sync::Arc;

use crate::content::Item;
use crate::content::slug::slugify;

/// The items of a run covering [`start`, `end`], newest first, limited to `topics` (tags, by
/// slug) when the digest names any, without the items of the previous run (`previous`).
///
/// The start is inclusive and the previous run's items are excluded by id, rather than the
/// start being exclusive: times are whole seconds, and a file first seen in the second a run
/// started, but after that run was planned, must go into the next run, not into neither.
pub fn run_items<'a>(
    items: &'a [Arc<Item>],
    seen: &HashMap<String, i64>,
    start: i64,
    end: i64,
    max_age_secs: i64,
    topics: &[String],
    previous: &[String],
) -> Vec<&'a Arc<Item>> {
    let wanted: Vec<String> = topics.iter().map(|t| slugify(t)).collect();
    let mut out: Vec<&Arc<Item>> = items
        .iter()
        .filter(|i| {
            let first_seen = seen.get(&i.id).copied().unwrap_or(end);
            let published = i.date.timestamp().max(first_seen);
            let history = first_seen - i.date.timestamp() > max_age_secs;
            published >= start && published <= end && !history && !previous.contains(&i.id)
        })
        .filter(|i| wanted.is_empty() || i.tag_slugs.iter().any(|t| wanted.contains(t)))
        .collect();
    out.sort_by(|a, b| b.date.cmp(&a.date).then_with(|| a.id.cmp(&b.id)));
    out
}

/// The items of a run that a subscriber with these topics gets (none chosen: all).
pub fn for_subscriber<'a>(run: &[&'a Arc<Item>], topics: &[String]) -> Vec<&'a Arc<Item>> {
    if topics.is_empty() {
        return run.to_vec();
    }
    let wanted: Vec<String> = topics.iter().map(|t| slugify(t)).collect();
    run.iter()
        .copied()
        .filter(|i| i.tag_slugs.iter().any(|t| wanted.contains(t)))
        .collect()
}

/// The ids whose first sight matters: an item first seen more than a digest's `max_age`
/// after its date is history for every digest, whenever it is recorded, so only items dated
/// within the largest `max_age` (or in the future) need it.
pub fn relevant_ids<'a>(
    digests: &[crate::config::Digest],
    items: &'a [Arc<Item>],
    now: i64,
) -> Vec<&'a str> {
    let Some(max_age) = digests.iter().map(|d| d.max_age.as_secs() as i64).max() else {
        return Vec::new();
    };
    // Items are sorted newest first: the relevant ones are a prefix.
    let end = items.partition_point(|i| i.date.timestamp() >= now - max_age);
    items[..end].iter().map(|i| i.id.as_str()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::content::{SiteContext, parse_item};

    fn item(slug: &str, date: &str, tags: &[&str]) -> Arc<Item> {
        let site = SiteContext {
            timezone: chrono_tz::Europe::Berlin,
            tag_authority: "x.de".into(),
            item_url: "https://x.de/{slug}".into(),
            default_author: "X".into(),
        };
        let tags: Vec<String> = tags.iter().map(|t| format!("{t:?}")).collect();
        let text = format!(
            "+++\ntitle = \"{slug}\"\ndate = {date}\nslug = \"{slug}\"\ntags = [{}]\n+++\n",
            tags.join(", ")
        );
        Arc::new(parse_item("a.md", text.as_bytes(), &site).unwrap())
    }

    const DAY: i64 = 86_400;

    #[test]
    fn windows_late_files_history_and_topics() {
        let t0 = chrono::DateTime::parse_from_rfc3339("2026-11-02T08:00:00+01:00")
            .unwrap()
            .timestamp();
        let items = vec![
            item("neu", "2026-11-05T10:00:00+01:00", &["OZG"]),
            item("spaet", "2026-10-30T10:00:00+01:00", &["FIM"]),
            item("alt", "2026-10-01T10:00:00+01:00", &["OZG"]),
            item("import", "2025-01-01T10:00:00+01:00", &["OZG"]),
        ];
        let mut seen = HashMap::new();
        seen.insert(items[0].id.clone(), t0 + 3 * DAY);
        // A file added late (after the last run began) with an older date.
        seen.insert(items[1].id.clone(), t0 + 4 * DAY);
        seen.insert(items[2].id.clone(), t0 - 30 * DAY);
        // An old item imported now: history.
        seen.insert(items[3].id.clone(), t0 + 4 * DAY);
        let run = run_items(&items, &seen, t0, t0 + 7 * DAY, 7 * DAY, &[], &[]);
        let slugs: Vec<&str> = run.iter().map(|i| i.slug.as_str()).collect();
        assert_eq!(slugs, ["neu", "spaet"]);
        // The next run does not repeat them.
        let ids: Vec<String> = run.iter().map(|i| i.id.clone()).collect();
        assert!(
            run_items(
                &items,
                &seen,
                t0 + 7 * DAY,
                t0 + 14 * DAY,
                7 * DAY,
                &[],
                &ids
            )
            .is_empty()
        );
        // Same second as the previous run's start, but not in it: goes into this run.
        let mut late = seen.clone();
        late.insert(items[0].id.clone(), t0 + 7 * DAY);
        let next = run_items(
            &items,
            &late,
            t0 + 7 * DAY,
            t0 + 14 * DAY,
            7 * DAY,
            &[],
            &[items[1].id.clone()],
        );
        assert_eq!(
            next.iter().map(|i| i.slug.as_str()).collect::<Vec<_>>(),
            ["neu"]
        );
        // Digest and subscriber topics, by slug.
        assert_eq!(
            run_items(
                &items,
                &seen,
                t0,
                t0 + 7 * DAY,
                7 * DAY,
                &["ozg".into()],
                &[]
            )
            .len(),
            1
        );
        assert_eq!(for_subscriber(&run, &["FIM".into()]).len(), 1);
        assert_eq!(for_subscriber(&run, &[]).len(), 2);
        assert!(for_subscriber(&run, &["Recht".into()]).is_empty());
    }
}
