//! ListObjectsV2 over a sorted map of keys, shared by the in-memory store and the dev server so
//! both page exactly as S3 does: byte order, keys below the delimiter folded into common
//! prefixes, objects and prefixes counted together against max-keys, and a continuation token
//! that never repeats a common prefix across pages.

use std::collections::BTreeMap;
use std::ops::Bound;

use super::{ListPage, ListRequest, ObjectSummary};

/// S3's page size limit: a larger max-keys is served as 1000.
pub const MAX_KEYS_PER_PAGE: u32 = 1000;

/// Computes one page of `request` over `objects`, using `summarize` for each listed object.
/// The continuation token is the last key or common prefix returned.
pub fn list_page<V>(
    objects: &BTreeMap<String, V>,
    request: &ListRequest,
    summarize: impl Fn(&str, &V) -> ObjectSummary,
) -> ListPage {
    let prefix = request.prefix.as_str();
    let delimiter = request.delimiter.as_deref().filter(|d| !d.is_empty());
    let max_keys = request
        .max_keys
        .unwrap_or(MAX_KEYS_PER_PAGE)
        .min(MAX_KEYS_PER_PAGE) as usize;
    let mut page = ListPage::default();
    if max_keys == 0 {
        return page;
    }

    let mut start: Bound<String> = Bound::Included(prefix.to_string());
    // Our tokens are the last key returned, so a start-after key resumes the same way.
    if let Some(token) = request
        .continuation_token
        .as_deref()
        .or(request.start_after.as_deref())
        .filter(|t| *t >= prefix)
    {
        start = match common_prefix_of(token, prefix, delimiter) {
            // The token was a common prefix: skip every key below it.
            Some(cp) if cp == token => skip_past(token),
            _ => Bound::Excluded(token.to_string()),
        };
    }

    let mut emitted = 0usize;
    let mut last_emitted: Option<String> = None;
    loop {
        let mut restart = None;
        for (key, value) in objects.range((start.clone(), Bound::Unbounded)) {
            if !key.starts_with(prefix) {
                break;
            }
            if emitted == max_keys {
                page.next_continuation_token = last_emitted;
                return page;
            }
            match common_prefix_of(key, prefix, delimiter) {
                Some(cp) => {
                    let cp = cp.to_string();
                    restart = Some(skip_past(&cp));
                    page.common_prefixes.push(cp.clone());
                    last_emitted = Some(cp);
                    emitted += 1;
                    break;
                }
                None => {
                    page.objects.push(summarize(key, value));
                    last_emitted = Some(key.clone());
                    emitted += 1;
                }
            }
        }
        match restart {
            Some(next) => start = next,
            None => return page,
        }
    }
}

/// The common prefix `key` folds into under `prefix` and `delimiter`, if any.
fn common_prefix_of<'k>(key: &'k str, prefix: &str, delimiter: Option<&str>) -> Option<&'k str> {
    let delimiter = delimiter?;
    let rest = key.get(prefix.len()..)?;
    let at = rest.find(delimiter)?;
    Some(&key[..prefix.len() + at + delimiter.len()])
}

/// The lower bound of the keys that do not start with `prefix`.
fn skip_past(prefix: &str) -> Bound<String> {
    // Keys starting with `prefix` sort between `prefix` and `prefix` followed by the largest
    // char; char::MAX is U+10FFFF, above every char a key can hold.
    let mut bound = prefix.to_string();
    bound.push(char::MAX);
    Bound::Excluded(bound)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;

    fn map(keys: &[&str]) -> BTreeMap<String, ()> {
        keys.iter().map(|k| (k.to_string(), ())).collect()
    }

    fn summary(key: &str, _: &()) -> ObjectSummary {
        ObjectSummary {
            key: key.to_string(),
            size: 0,
            etag: String::new(),
            last_modified: SystemTime::UNIX_EPOCH,
        }
    }

    /// Pages through everything with the given max-keys, returning (objects, prefixes, pages).
    fn walk(
        objects: &BTreeMap<String, ()>,
        prefix: &str,
        delimiter: Option<&str>,
        max_keys: u32,
    ) -> (Vec<String>, Vec<String>, usize) {
        let mut request = ListRequest {
            prefix: prefix.to_string(),
            delimiter: delimiter.map(str::to_string),
            continuation_token: None,
            start_after: None,
            max_keys: Some(max_keys),
        };
        let (mut keys, mut prefixes, mut pages) = (Vec::new(), Vec::new(), 0);
        loop {
            let page = list_page(objects, &request, summary);
            pages += 1;
            keys.extend(page.objects.into_iter().map(|o| o.key));
            prefixes.extend(page.common_prefixes);
            match page.next_continuation_token {
                Some(t) => request.continuation_token = Some(t),
                None => return (keys, prefixes, pages),
            }
        }
    }

    #[test]
    fn delimiter_folds_keys_and_keeps_objects_beside_prefixes() {
        let objects = map(&["a", "a/b", "a/c/d", "a-", "a-/x", "b/", "c"]);
        let (keys, prefixes, _) = walk(&objects, "", Some("/"), 1000);
        assert_eq!(keys, vec!["a", "a-", "c"]);
        assert_eq!(prefixes, vec!["a-/", "a/", "b/"]);
        let (keys, prefixes, _) = walk(&objects, "a/", Some("/"), 1000);
        assert_eq!(keys, vec!["a/b"]);
        assert_eq!(prefixes, vec!["a/c/"]);
    }

    #[test]
    fn directory_marker_is_an_object_inside_its_own_prefix() {
        let objects = map(&["dir/", "dir/f"]);
        let (keys, prefixes, _) = walk(&objects, "dir/", Some("/"), 1000);
        assert_eq!(keys, vec!["dir/", "dir/f"]);
        assert!(prefixes.is_empty());
    }

    #[test]
    fn small_pages_never_repeat_or_drop_entries() {
        let objects = map(&["a", "a/1", "a/2", "a/3", "b", "c/1", "c/2", "d", "e/"]);
        let full = walk(&objects, "", Some("/"), 1000);
        for max_keys in 1..=4 {
            let paged = walk(&objects, "", Some("/"), max_keys);
            assert_eq!(
                (&paged.0, &paged.1),
                (&full.0, &full.1),
                "max_keys {max_keys}"
            );
            assert_eq!(paged.2, 6usize.div_ceil(max_keys as usize));
        }
        let (keys, _, pages) = walk(&objects, "", None, 2);
        assert_eq!(keys.len(), 9);
        assert_eq!(pages, 5);
    }

    #[test]
    fn max_keys_is_capped_and_zero_returns_nothing() {
        let keys: Vec<String> = (0..1500).map(|i| format!("k{i:05}")).collect();
        let objects: BTreeMap<String, ()> = keys.iter().map(|k| (k.clone(), ())).collect();
        let request = ListRequest {
            max_keys: Some(5000),
            ..Default::default()
        };
        let page = list_page(&objects, &request, summary);
        assert_eq!(page.objects.len(), 1000);
        assert_eq!(page.next_continuation_token.as_deref(), Some("k00999"));
        let request = ListRequest {
            max_keys: Some(0),
            ..Default::default()
        };
        assert_eq!(list_page(&objects, &request, summary), ListPage::default());
    }

    #[test]
    fn prefix_bounds_the_listing() {
        let objects = map(&["x", "ya", "yb", "z"]);
        let (keys, _, _) = walk(&objects, "y", None, 1);
        assert_eq!(keys, vec!["ya", "yb"]);
    }
}
