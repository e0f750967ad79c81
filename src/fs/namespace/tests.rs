//! The namespace's transitions keep nodes, directory coverage and misses in step.

use std::time::{Duration, Instant, SystemTime};

use super::*;
use crate::fs::clock::Clock;

fn file(size: u64, etag: &str) -> Attrs {
    Attrs {
        size,
        mtime: SystemTime::UNIX_EPOCH,
        etag: Some(etag.into()),
        metadata: UserMetadata::new(),
        content_type: ContentType::Unknown,
        last_modified: None,
    }
}

fn page(entries: &[(&str, Kind)]) -> ListedPage {
    ListedPage {
        after: None,
        through: None,
        entries: entries
            .iter()
            .map(|(name, kind)| {
                let attrs = match kind {
                    Kind::File => file(1, "\"v1\""),
                    Kind::Directory => Attrs::directory(),
                };
                (name.to_string(), *kind, attrs)
            })
            .collect(),
        started: Some(Instant::now()),
        at: Some(Instant::now()),
    }
}

fn ttl() -> Option<Duration> {
    Some(Duration::from_secs(60))
}

/// Common Content-Types are kept without a copy per node; any other is kept as given, and
/// every one comes back as it went in.
#[test]
fn common_content_types_are_shared_and_every_one_comes_back() {
    use std::borrow::Cow;
    let common = MimeType::from("binary/octet-stream".to_string());
    assert!(matches!(common, MimeType(Cow::Borrowed(_))));
    let rare = MimeType::from("image/x-rare".to_string());
    assert!(matches!(rare, MimeType(Cow::Owned(_))));
    assert_eq!(String::from(common), "binary/octet-stream");
    assert_eq!(String::from(rare), "image/x-rare");
}

#[test]
fn a_complete_listing_answers_hits_and_misses() {
    let mut ns = Namespace::new("p/", ttl(), Clock::default());
    assert_eq!(ns.answer(ROOT_INO, "a").unwrap(), Answer::Unknown);
    ns.listed(ROOT_INO, page(&[("a", Kind::File), ("d", Kind::Directory)]));
    let a = match ns.answer(ROOT_INO, "a").unwrap() {
        Answer::Found(ino) => ino,
        other => panic!("{other:?}"),
    };
    assert_eq!(ns.get(a).unwrap().key(), "p/a");
    assert_eq!(ns.answer(ROOT_INO, "zzz").unwrap(), Answer::Missing);
    assert!(ns.listed_completely(ROOT_INO));
    assert_eq!(ns.last_listing_len(ROOT_INO), Some(2));
}

#[test]
fn a_page_answers_only_its_range() {
    let mut ns = Namespace::new("", ttl(), Clock::default());
    let mut window = page(&[("m1", Kind::File), ("m2", Kind::File)]);
    window.after = Some("m".into());
    window.through = Some("m2".into());
    ns.listed(ROOT_INO, window);
    assert!(matches!(
        ns.answer(ROOT_INO, "m1").unwrap(),
        Answer::Found(_)
    ));
    assert_eq!(ns.answer(ROOT_INO, "m15").unwrap(), Answer::Missing);
    assert_eq!(ns.answer(ROOT_INO, "z").unwrap(), Answer::Unknown);
    assert_eq!(ns.answer(ROOT_INO, "a").unwrap(), Answer::Unknown);
}

#[test]
fn a_relisting_drops_names_gone_from_s3_but_keeps_local_ones() {
    let mut ns = Namespace::new("", ttl(), Clock::default());
    ns.listed(
        ROOT_INO,
        page(&[("gone", Kind::File), ("kept", Kind::File)]),
    );
    let writing = ns
        .created(ROOT_INO, "new", Attrs::new_file(UserMetadata::new()), 1)
        .unwrap();
    ns.listed(ROOT_INO, page(&[("kept", Kind::File)]));
    assert_eq!(ns.answer(ROOT_INO, "gone").unwrap(), Answer::Missing);
    assert_eq!(
        ns.answer(ROOT_INO, "new").unwrap(),
        Answer::Found(writing),
        "a file being written is local truth"
    );
}

#[test]
fn a_listing_keeps_the_metadata_of_the_same_version() {
    let mut ns = Namespace::new("", ttl(), Clock::default());
    let mut attrs = file(1, "\"v1\"");
    attrs.metadata.insert("mode".into(), "33152".into());
    let a = ns
        .looked_up(ROOT_INO, "a", Some((Kind::File, attrs)), Instant::now())
        .unwrap();
    ns.listed(ROOT_INO, page(&[("a", Kind::File)]));
    assert_eq!(ns.get(a).unwrap().attrs().metadata["mode"], "33152");
    let mut changed = page(&[]);
    changed
        .entries
        .push(("a".into(), Kind::File, file(2, "\"v2\"")));
    ns.listed(ROOT_INO, changed);
    assert!(ns.get(a).unwrap().attrs().metadata.is_empty());
}

#[test]
fn a_directory_made_here_is_complete_and_empty() {
    let mut ns = Namespace::new("", ttl(), Clock::default());
    let d = ns.made_directory(ROOT_INO, "d", Origin::Remote).unwrap();
    assert_eq!(ns.answer(d, "x").unwrap(), Answer::Missing);
    let f = ns
        .created(d, "x", Attrs::new_file(UserMetadata::new()), 1)
        .unwrap();
    assert_eq!(ns.get(f).unwrap().key(), "d/x");
    ns.uploaded(f, "\"e\"".into(), 3, UserMetadata::new());
    assert_eq!(ns.answer(d, "x").unwrap(), Answer::Found(f));
    ns.removed(d, "x");
    assert_eq!(ns.answer(d, "x").unwrap(), Answer::Missing);
}

#[test]
fn kind_changes_get_new_numbers_and_numbers_are_otherwise_stable() {
    let mut ns = Namespace::new("", ttl(), Clock::default());
    let now = Instant::now();
    let a = ns
        .looked_up(ROOT_INO, "a", Some((Kind::File, file(1, "\"1\""))), now)
        .unwrap();
    let again = ns
        .looked_up(ROOT_INO, "a", Some((Kind::File, file(2, "\"2\""))), now)
        .unwrap();
    assert_eq!(a, again);
    let dir = ns
        .looked_up(
            ROOT_INO,
            "a",
            Some((Kind::Directory, Attrs::directory())),
            now,
        )
        .unwrap();
    assert_ne!(a, dir);
    assert_eq!(ns.get(dir).unwrap().key(), "a/");
}

#[test]
fn unlinked_nodes_live_while_referenced_and_forget_frees_them() {
    let mut ns = Namespace::new("", ttl(), Clock::default());
    let a = ns
        .looked_up(
            ROOT_INO,
            "a",
            Some((Kind::File, file(1, "\"1\""))),
            Instant::now(),
        )
        .unwrap();
    ns.remembered(a);
    ns.removed(ROOT_INO, "a");
    assert!(ns.get(a).is_some(), "a looked-up node survives unlink");
    ns.forgot(a, 1);
    assert!(ns.get(a).is_none());
}

#[test]
fn renaming_a_directory_rewrites_keys_below_it() {
    let mut ns = Namespace::new("", ttl(), Clock::default());
    let now = Instant::now();
    let d = ns
        .looked_up(
            ROOT_INO,
            "d",
            Some((Kind::Directory, Attrs::directory())),
            now,
        )
        .unwrap();
    let f = ns
        .looked_up(d, "f", Some((Kind::File, file(1, "\"1\""))), now)
        .unwrap();
    ns.renamed(ROOT_INO, "d", ROOT_INO, "e", None).unwrap();
    assert_eq!(ns.get(d).unwrap().key(), "e/");
    assert_eq!(ns.get(f).unwrap().key(), "e/f");
    assert_eq!(ns.answer(ROOT_INO, "d").unwrap(), Answer::Missing);
    assert_eq!(ns.answer(ROOT_INO, "e").unwrap(), Answer::Found(d));
}

#[test]
fn a_listing_that_ran_while_a_name_was_removed_does_not_bring_it_back() {
    let mut ns = Namespace::new("", ttl(), Clock::default());
    let mut old = page(&[("a", Kind::File)]);
    old.started = Some(Instant::now());
    ns.listed(ROOT_INO, page(&[("a", Kind::File)]));
    ns.removed(ROOT_INO, "a");
    old.at = Some(Instant::now());
    ns.listed(ROOT_INO, old);
    assert_eq!(ns.answer(ROOT_INO, "a").unwrap(), Answer::Missing);
}

#[test]
fn metadata_changes_wait_until_taken() {
    let mut ns = Namespace::new("", ttl(), Clock::default());
    let a = ns
        .looked_up(
            ROOT_INO,
            "a",
            Some((Kind::File, file(1, "\"1\""))),
            Instant::now(),
        )
        .unwrap();
    let metadata = UserMetadata::from([("mode".to_string(), "33152".to_string())]);
    ns.attrs_changed(a, metadata.clone(), None, true);
    assert_eq!(ns.dirty_metadata().len(), 1);
    // A listing of the same version does not undo the change.
    ns.listed(ROOT_INO, page(&[("a", Kind::File)]));
    assert_eq!(ns.get(a).unwrap().attrs().metadata, metadata);
    let (key, taken, _, etag) = ns.take_dirty_metadata(a).unwrap();
    assert_eq!((key.as_str(), etag.as_deref()), ("a", Some("\"1\"")));
    assert_eq!(taken, metadata);
    assert!(ns.take_dirty_metadata(a).is_none());
}

#[test]
fn memory_stays_bounded_and_pinned_or_referenced_nodes_stay() {
    let mut ns = Namespace::new("", None, Clock::default()).with_node_limit(100);
    let names: Vec<String> = (0..1_000).map(|i| format!("f{i:04}")).collect();
    let refs: Vec<(&str, Kind)> = names.iter().map(|n| (n.as_str(), Kind::File)).collect();
    let range = |entries: &[(&str, Kind)], after: Option<&str>, through: Option<&str>| {
        let mut page = page(entries);
        page.after = after.map(str::to_string);
        page.through = through.map(str::to_string);
        page
    };
    ns.listed(ROOT_INO, range(&refs[..500], None, Some("f0499")));
    let referenced = ns.children_in_range(ROOT_INO, None, Some("f0009"));
    assert_eq!(referenced.len(), 10);
    for ino in &referenced {
        ns.remembered(*ino);
    }
    let pinned = ns.children_in_range(ROOT_INO, Some("f0009"), Some("f0019"));
    ns.pin(&pinned);
    // The next page prunes before it goes in: what nothing holds goes, with the coverage.
    ns.listed(ROOT_INO, range(&refs[500..], Some("f0499"), None));
    assert!(ns.len() <= 500 + 10 + 10 + 1, "{} nodes", ns.len());
    for ino in referenced.iter().chain(&pinned) {
        assert!(ns.get(*ino).is_some_and(|n| n.linked()), "{ino} dropped");
    }
    assert_eq!(
        ns.answer(ROOT_INO, "f0100").unwrap(),
        Answer::Unknown,
        "a pruned directory is no longer known to be complete"
    );
    ns.unpin(&pinned);
    ns.listed(ROOT_INO, range(&refs[..1], None, Some("f0000")));
    assert!(ns.get(pinned[0]).is_none(), "unpinned, it may go");
}

#[test]
fn children_in_range_follow_the_key_order_of_a_listing() {
    let mut ns = Namespace::new("", None, Clock::default());
    // `foo/` sorts after `foo-bar` and `foo.txt` as a key, before them as a name.
    ns.listed(
        ROOT_INO,
        page(&[
            ("foo", Kind::Directory),
            ("foo-bar", Kind::File),
            ("foo.txt", Kind::File),
            ("fop", Kind::File),
        ]),
    );
    let names = |inos: Vec<Ino>| -> Vec<String> {
        inos.iter()
            .map(|i| ns.get(*i).unwrap().name().to_string())
            .collect()
    };
    assert_eq!(
        names(ns.children_in_range(ROOT_INO, None, Some("foo-bar"))),
        ["foo-bar"]
    );
    assert_eq!(
        names(ns.children_in_range(ROOT_INO, Some("foo-bar"), Some("foo/"))),
        ["foo.txt", "foo"]
    );
    assert_eq!(
        names(ns.children_in_range(ROOT_INO, Some("foo/"), None)),
        ["fop"]
    );
    assert_eq!(
        names(ns.children_after(ROOT_INO, Some("foo"), 2)),
        ["foo-bar", "foo.txt"]
    );
}

/// A file refreshed (by a GET) while a listing of its directory ran is skipped by that listing
/// (it knows better), but the listing still saw it: once the GET's validation expires and the
/// listing's has not, the name must still be found. (Seen as a rare ENOENT under load in the
/// soak: a reader's open learned the version while another reader's LIST was in flight.)
#[test]
fn a_file_refreshed_during_a_listing_stays_found_while_the_listing_is_fresh() {
    let ttl = Duration::from_millis(100);
    let mut ns = Namespace::new("", Some(ttl), Clock::default());
    ns.listed(ROOT_INO, page(&[("f", Kind::File)]));
    let f = match ns.answer(ROOT_INO, "f").unwrap() {
        Answer::Found(ino) => ino,
        other => panic!("{other:?}"),
    };
    let now = Instant::now();
    let started = now - Duration::from_millis(300);
    ns.refreshed(f, file(1, "\"v1\""), now - Duration::from_millis(150));
    let mut relisting = page(&[("f", Kind::File)]);
    relisting.started = Some(started);
    relisting.at = Some(now);
    ns.listed(ROOT_INO, relisting);
    assert_eq!(ns.answer(ROOT_INO, "f").unwrap(), Answer::Found(f));
    assert!(ns.is_current(f));
}

/// A file uploaded here while a listing ran is not in that listing and stays (it changed since
/// the listing started); it must stay found after its upload's validation expires, as long as
/// the listing is fresh.
#[test]
fn a_file_uploaded_during_a_listing_stays_found_while_the_listing_is_fresh() {
    let ttl = Duration::from_secs(1);
    let clock = Clock::default();
    let mut ns = Namespace::new("", Some(ttl), clock.clone());
    let started = clock.now();
    let ino = ns
        .created(ROOT_INO, "new", Attrs::new_file(UserMetadata::new()), 1)
        .unwrap();
    ns.uploaded(ino, "\"v1\"".into(), 3, UserMetadata::new());
    assert!(ns.handle_released(ino, 1).is_empty());
    let mut listing = page(&[("old", Kind::File)]);
    listing.started = Some(started);
    listing.at = Some(clock.now() + Duration::from_millis(900));
    ns.listed(ROOT_INO, listing);
    clock.advance(Duration::from_millis(1200));
    assert_eq!(ns.answer(ROOT_INO, "new").unwrap(), Answer::Found(ino));
    assert_eq!(ns.answer(ROOT_INO, "other").unwrap(), Answer::Missing);
}

/// An unlinked file still open here keeps its node and its object until the last close, which
/// hands back the delete; a name that holds the key again (a new file) stops it.
#[test]
fn deletes_of_open_files_wait_for_the_last_close() {
    let mut ns = Namespace::new("", ttl(), Clock::default());
    ns.listed(ROOT_INO, page(&[("f", Kind::File)]));
    let Answer::Found(f) = ns.answer(ROOT_INO, "f").unwrap() else {
        panic!("f is listed")
    };
    ns.handle_opened(f, 1, Access::Read);
    ns.handle_opened(f, 2, Access::Read);
    assert!(
        ns.delete_at_close(f, "f".into(), Some("\"v1\"".into()))
            .is_none()
    );
    ns.removed(ROOT_INO, "f");
    assert!(ns.handle_released(f, 1).is_empty(), "one reader is left");
    let deletes = ns.handle_released(f, 2);
    assert_eq!(deletes.len(), 1);
    assert!(
        ns.get(f).is_none(),
        "the last close frees the unlinked node"
    );
    assert!(ns.may_delete(&deletes[0]), "nothing holds the key");
    let g = ns
        .created(ROOT_INO, "f", Attrs::new_file(UserMetadata::new()), 3)
        .unwrap();
    assert!(!ns.may_delete(&deletes[0]), "a new file holds the key");
    ns.uploaded(g, "\"v2\"".into(), 1, UserMetadata::new());
    assert!(
        ns.handle_released(g, 3).is_empty(),
        "its upload replaced what the delete meant"
    );
}

/// A file replaced by a rename is marked, so its readers learn it (ESTALE).
#[test]
fn a_rename_over_a_file_marks_it_replaced() {
    let mut ns = Namespace::new("", ttl(), Clock::default());
    ns.listed(ROOT_INO, page(&[("a", Kind::File), ("b", Kind::File)]));
    let Answer::Found(b) = ns.answer(ROOT_INO, "b").unwrap() else {
        panic!("b is listed")
    };
    ns.handle_opened(b, 1, Access::Read);
    ns.renamed(ROOT_INO, "a", ROOT_INO, "b", None).unwrap();
    assert!(ns.get(b).unwrap().replaced());
    assert!(!ns.get(b).unwrap().linked());
}

/// What one node costs in the table: the figure docs/ARCHITECTURE.md gives.
#[test]
fn a_node_stays_small() {
    let size = std::mem::size_of::<Node>();
    assert!(size <= 208, "{size} bytes");
}
