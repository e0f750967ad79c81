//! Which names of a directory a listing has confirmed, and when.
//!
//! A LIST page covers a contiguous range of the directory's keys: everything after the key the
//! listing started after, up to the last key or common prefix it returned (or to the end when
//! the page was the last). Within a covered range, a name the page did not return does not
//! exist, so one page answers a thousand misses as well as a thousand hits. A complete listing
//! is the range that covers everything.
//!
//! Ranges are kept in the key space relative to the directory's prefix: a file `n` is `n`, a
//! subdirectory `n` is the common prefix `n/`. A name is covered only when both forms are.
//!
//! A directory read page by page (readdir streams its pages) adds one range per page; a range
//! that starts where the last one ended joins it, trusted from the later page's arrival as a
//! whole listing is trusted from its completion, so the last page of a streamed listing makes
//! the directory complete.

use std::time::Instant;

/// Ranges kept per directory; the oldest go first (a windowed reader moves forward).
const MAX_RANGES: usize = 16;

#[derive(Debug, Clone)]
struct Range {
    /// Exclusive lower bound; `None`: from the start.
    after: Option<String>,
    /// Inclusive upper bound; `None`: to the end.
    through: Option<String>,
    at: Instant,
    /// When the listing whose pages made this range started: only its own pages join it.
    started: Instant,
    /// Entries the pages of this range returned.
    entries: usize,
}

#[derive(Debug, Clone, Default)]
pub struct Coverage {
    ranges: Vec<Range>,
    /// Entries of the last complete listing: decides whether relisting whole is cheap.
    complete_len: Option<usize>,
}

impl Coverage {
    /// No range covered: a directory never listed.
    pub const NONE: Coverage = Coverage {
        ranges: Vec::new(),
        complete_len: None,
    };

    /// Records that keys in (`after`, `through`] were listed at `at`, `entries` of them, by
    /// a listing that started at `started`.
    pub fn add(
        &mut self,
        mut after: Option<String>,
        through: Option<String>,
        (started, at): (Instant, Instant),
        mut entries: usize,
    ) {
        let joins = |r: &Range| after.is_some() && r.through == after && r.started == started;
        if let Some(previous) = self.ranges.iter().position(joins) {
            let previous = self.ranges.remove(previous);
            after = previous.after;
            entries += previous.entries;
        }
        if after.is_none() && through.is_none() {
            self.ranges.clear();
            self.complete_len = Some(entries);
        }
        if self.ranges.len() >= MAX_RANGES {
            self.ranges.remove(0);
        }
        self.ranges.push(Range {
            after,
            through,
            at,
            started,
            entries,
        });
    }

    pub fn complete_len(&self) -> Option<usize> {
        self.complete_len
    }

    /// When `name` (as a file and as a directory) was last confirmed by a listing.
    pub fn covering(&self, name: &str) -> Option<Instant> {
        let as_dir = format!("{name}/");
        self.ranges
            .iter()
            .filter(|r| r.after.as_deref().is_none_or(|after| after < name))
            .filter(|r| r.through.as_deref().is_none_or(|t| as_dir.as_str() <= t))
            .map(|r| r.at)
            .max()
    }

    /// When the whole directory was last listed.
    pub fn complete_at(&self) -> Option<Instant> {
        self.ranges
            .iter()
            .filter(|r| r.after.is_none() && r.through.is_none())
            .map(|r| r.at)
            .max()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_covers_its_range_only() {
        let mut coverage = Coverage::default();
        let at = Instant::now();
        coverage.add(Some("b".into()), Some("m/".into()), (at, at), 5);
        assert_eq!(coverage.covering("c"), Some(at));
        assert_eq!(coverage.covering("m"), Some(at), "m and m/ both in range");
        assert_eq!(coverage.covering("b"), None, "the start is exclusive");
        assert_eq!(coverage.covering("n"), None);
        assert_eq!(coverage.complete_at(), None);
        coverage.add(None, None, (at, at), 7);
        assert_eq!(coverage.covering("zzz"), Some(at));
        assert_eq!(coverage.complete_len(), Some(7));
        assert_eq!(coverage.complete_at(), Some(at));
    }

    #[test]
    fn a_name_whose_directory_form_is_past_the_page_is_not_covered() {
        let mut coverage = Coverage::default();
        // The page stopped at the object `m`: a common prefix `m/` may follow.
        coverage.add(None, Some("m".into()), (Instant::now(), Instant::now()), 1);
        assert!(coverage.covering("m").is_none());
        assert!(coverage.covering("l").is_some());
    }

    #[test]
    fn pages_in_a_row_make_a_complete_listing() {
        let mut coverage = Coverage::default();
        let start = Instant::now();
        coverage.add(None, Some("f0999".into()), (start, start), 1000);
        coverage.add(
            Some("f0999".into()),
            Some("f1999".into()),
            (start, start),
            1000,
        );
        assert_eq!(coverage.complete_at(), None);
        assert_eq!(coverage.covering("f1500"), Some(start));
        let last = start + std::time::Duration::from_millis(5);
        coverage.add(Some("f1999".into()), None, (start, last), 10);
        assert_eq!(coverage.complete_at(), Some(last));
        assert_eq!(coverage.complete_len(), Some(2010));
        assert_eq!(coverage.ranges.len(), 1);
    }

    #[test]
    fn a_page_that_does_not_start_where_another_ended_stays_apart() {
        let mut coverage = Coverage::default();
        let at = Instant::now();
        coverage.add(None, Some("b".into()), (at, at), 2);
        coverage.add(Some("c".into()), None, (at, at), 2);
        assert_eq!(coverage.complete_at(), None);
        assert_eq!(coverage.covering("bb"), None, "between the ranges");
        let later = at + std::time::Duration::from_millis(5);
        coverage.add(Some("b".into()), Some("c".into()), (later, later), 1);
        assert_eq!(
            coverage.complete_at(),
            None,
            "another listing's page joins nothing"
        );
    }

    #[test]
    fn ranges_are_bounded() {
        let mut coverage = Coverage::default();
        let at = Instant::now();
        for i in 0..100 {
            coverage.add(
                Some(format!("{i:03}")),
                Some(format!("{i:03}z")),
                (at, at),
                1,
            );
        }
        assert!(coverage.ranges.len() <= MAX_RANGES);
        assert!(coverage.covering("099a").is_some());
        assert!(coverage.covering("000a").is_none());
    }
}
