//! The file system core driven directly on the in-memory store: fast checks of namespace rules,
//! write/read round trips and error codes. The same behaviour is tested through real mounts
//! on the dev server in `tests/`.

use std::sync::Arc;

use bytes::Bytes;

use super::namespace::Kind;
use super::{DirEntry, Fs, FsConfig, Layout, LayoutKind, ROOT_INO, SetAttr};
use crate::store::memory::MemoryStore;
use crate::store::{ObjectStore, PutOptions, get_bytes};

/// The caller of every request here: one process, whose own closes upload, and the mount's
/// owner.
fn caller() -> super::Caller {
    // SAFETY: getuid/getgid cannot fail and touch no memory.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    super::Caller { pid: 1, uid, gid }
}

fn mount(store: &Arc<MemoryStore>, kind: LayoutKind) -> Arc<Fs> {
    let mut config = FsConfig::new(Layout::new(kind, None).unwrap());
    config.staging_dir = std::env::temp_dir();
    Fs::new(store.clone(), config)
}

async fn put(store: &MemoryStore, key: &str, data: &str) {
    store
        .put(key, Bytes::from(data.to_string()), PutOptions::default())
        .await
        .unwrap();
}

/// Every entry of a directory stream, read as the kernel does: from the offset after the last
/// entry taken, until a read returns nothing.
async fn read_all(fs: &Fs, dir: u64) -> Vec<DirEntry> {
    let handle = fs.opendir(dir).await.unwrap();
    let mut all: Vec<DirEntry> = Vec::new();
    loop {
        let offset = all.last().map_or(0, |e| e.next_offset);
        let (batch, from) = fs.readdir(handle, offset).await.unwrap();
        if from >= batch.len() {
            break;
        }
        all.extend(batch[from..].iter().cloned());
    }
    fs.releasedir(handle);
    all
}

async fn names(fs: &Fs, dir: u64) -> Vec<String> {
    read_all(fs, dir)
        .await
        .iter()
        .skip(2)
        .map(|e| e.name.clone())
        .collect()
}

#[tokio::test]
async fn directory_wins_over_object_and_bad_names_are_hidden() {
    let store = Arc::new(MemoryStore::new());
    for key in ["a", "a/b", "c", "d/", "e//f", "g/../h", "x/./y"] {
        put(&store, key, "data").await;
    }
    let fs = mount(&store, LayoutKind::Keys);
    assert_eq!(
        names(&fs, ROOT_INO).await,
        vec!["a", "c", "d", "e", "g", "x"]
    );
    let a = fs.lookup(ROOT_INO, "a").await.unwrap();
    assert_eq!(a.kind, Kind::Directory);
    assert_eq!(names(&fs, a.ino).await, vec!["b"]);
    let e = fs.lookup(ROOT_INO, "e").await.unwrap();
    assert!(
        names(&fs, e.ino).await.is_empty(),
        "empty component is hidden"
    );
    assert_eq!(
        fs.lookup(ROOT_INO, "missing").await.unwrap_err().errno(),
        libc::ENOENT
    );
}

#[tokio::test]
async fn create_write_close_uploads_and_reads_back() {
    let store = Arc::new(MemoryStore::new());
    let fs = mount(&store, LayoutKind::Keys);
    let (attr, opened) = fs
        .create(ROOT_INO, "new.txt", 0o644, 0, caller())
        .await
        .unwrap();
    assert!(
        store.object("new.txt").is_none(),
        "nothing visible before close"
    );
    fs.write(opened.handle, 0, b"hello ").await.unwrap();
    fs.write(opened.handle, 6, b"world").await.unwrap();
    fs.flush(opened.handle, caller()).await.unwrap();
    fs.release(opened.handle).await.unwrap();
    assert_eq!(
        get_bytes(store.as_ref(), "new.txt", None).await.unwrap(),
        "hello world"
    );
    assert_eq!(fs.getattr(attr.ino).await.unwrap().size, 11);
    let opened = fs.open(attr.ino, libc::O_RDONLY, caller()).await.unwrap();
    assert_eq!(fs.read(opened.handle, 6, 100).await.unwrap(), "world");
    fs.release(opened.handle).await.unwrap();
}

#[tokio::test]
async fn random_writes_and_truncate_are_staged() {
    let store = Arc::new(MemoryStore::new());
    put(&store, "f", "0123456789").await;
    let fs = mount(&store, LayoutKind::Keys);
    let f = fs.lookup(ROOT_INO, "f").await.unwrap();
    let opened = fs.open(f.ino, libc::O_WRONLY, caller()).await.unwrap();
    fs.write(opened.handle, 3, b"XY").await.unwrap();
    fs.write(opened.handle, 12, b"Z").await.unwrap();
    fs.release(opened.handle).await.unwrap();
    assert_eq!(
        get_bytes(store.as_ref(), "f", None).await.unwrap().as_ref(),
        b"012XY56789\0\0Z"
    );
    fs.setattr(
        f.ino,
        None,
        SetAttr {
            size: Some(4),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(get_bytes(store.as_ref(), "f", None).await.unwrap(), "012X");
}

#[tokio::test]
async fn out_of_order_write_to_a_new_small_file_falls_back_to_staging() {
    let store = Arc::new(MemoryStore::new());
    let fs = mount(&store, LayoutKind::Keys);
    let (_, opened) = fs.create(ROOT_INO, "n", 0o644, 0, caller()).await.unwrap();
    fs.write(opened.handle, 0, b"abc").await.unwrap();
    fs.write(opened.handle, 1, b"Z").await.unwrap();
    assert_eq!(fs.read(opened.handle, 0, 10).await.unwrap(), "aZc");
    fs.release(opened.handle).await.unwrap();
    assert_eq!(get_bytes(store.as_ref(), "n", None).await.unwrap(), "aZc");
}

#[tokio::test]
async fn unlink_rename_mkdir_rmdir() {
    let store = Arc::new(MemoryStore::new());
    put(&store, "d/f", "x").await;
    let fs = mount(&store, LayoutKind::Keys);
    let d = fs.lookup(ROOT_INO, "d").await.unwrap();
    assert_eq!(
        fs.rmdir(ROOT_INO, "d").await.unwrap_err().errno(),
        libc::ENOTEMPTY
    );
    fs.rename(d.ino, "f", ROOT_INO, "g", 0).await.unwrap();
    assert!(store.object("d/f").is_none());
    assert_eq!(get_bytes(store.as_ref(), "g", None).await.unwrap(), "x");
    fs.mkdir(ROOT_INO, "e", 0o755, caller()).await.unwrap();
    assert!(store.object("e/").is_some(), "mkdir writes a marker");
    fs.rename(ROOT_INO, "g", ROOT_INO, "e", 0)
        .await
        .map(|_| ())
        .unwrap_err();
    fs.rename(ROOT_INO, "d", ROOT_INO, "d2", 0).await.unwrap();
    fs.rmdir(ROOT_INO, "e").await.unwrap();
    assert!(store.object("e/").is_none());
    fs.unlink(ROOT_INO, "g").await.unwrap();
    assert!(store.keys().is_empty(), "left: {:?}", store.keys());
    assert_eq!(
        fs.unlink(ROOT_INO, "g").await.unwrap_err().errno(),
        libc::ENOENT
    );
}

/// Paused tokio time: the delayed metadata copy waits on tokio's clock, which the test moves
/// instead of sleeping through the delay.
#[tokio::test(start_paused = true)]
async fn chmod_persists_as_s3fs_metadata() {
    let store = Arc::new(MemoryStore::new());
    put(&store, "f", "x").await;
    let fs = mount(&store, LayoutKind::Keys);
    let f = fs.lookup(ROOT_INO, "f").await.unwrap();
    let attr = fs
        .setattr(
            f.ino,
            None,
            SetAttr {
                mode: Some(0o600),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(attr.perm, 0o600);
    assert!(
        store.head("f").await.unwrap().metadata.is_empty(),
        "a closed file's metadata waits for a rename to carry it"
    );
    let tick = std::time::Duration::from_millis(1);
    advance_clock(super::METADATA_DELAY - tick).await;
    assert!(
        store.head("f").await.unwrap().metadata.is_empty(),
        "copied before the delay ran out"
    );
    advance_clock(2 * tick).await;
    let meta = store.head("f").await.unwrap();
    assert_eq!(
        meta.metadata["mode"],
        (libc::S_IFREG | 0o600).to_string(),
        "persisted when the delay ran out"
    );
    assert_eq!(fs.getattr(f.ino).await.unwrap().perm, 0o600);
}

/// Moves paused tokio time forward by `by` and returns once every task due by then has run
/// (paused time moves only while no task can make progress): no wall-clock time passes.
async fn advance_clock(by: std::time::Duration) {
    tokio::time::sleep(by).await;
}

#[tokio::test]
async fn fsync_persists_a_pending_metadata_change_at_once() {
    let store = Arc::new(MemoryStore::new());
    put(&store, "f", "x").await;
    let fs = mount(&store, LayoutKind::Keys);
    let f = fs.lookup(ROOT_INO, "f").await.unwrap();
    let change = SetAttr {
        mode: Some(0o640),
        ..Default::default()
    };
    fs.setattr(f.ino, None, change).await.unwrap();
    let opened = fs.open(f.ino, libc::O_RDONLY, caller()).await.unwrap();
    fs.fsync(opened.handle).await.unwrap();
    let meta = store.head("f").await.unwrap();
    assert_eq!(meta.metadata["mode"], (libc::S_IFREG | 0o640).to_string());
}

#[tokio::test]
async fn a_rename_carries_a_pending_metadata_change_in_its_copy() {
    let store = Arc::new(MemoryStore::new());
    let fs = mount(&store, LayoutKind::Keys);
    let (attr, opened) = fs
        .create(ROOT_INO, ".tmp", 0o644, 0, caller())
        .await
        .unwrap();
    fs.write(opened.handle, 0, b"data").await.unwrap();
    fs.release(opened.handle).await.unwrap();
    let change = SetAttr {
        mode: Some(0o600),
        ..Default::default()
    };
    fs.setattr(attr.ino, None, change).await.unwrap();
    fs.rename(ROOT_INO, ".tmp", ROOT_INO, "final", 0)
        .await
        .unwrap();
    let meta = store.head("final").await.unwrap();
    assert_eq!(meta.metadata["mode"], (libc::S_IFREG | 0o600).to_string());
    assert!(store.head(".tmp").await.is_err());
    assert!(
        fs.ns().dirty_metadata().is_empty(),
        "nothing left to persist"
    );
}

#[tokio::test]
async fn segments_layout_filters_orders_and_guards() {
    let store = Arc::new(MemoryStore::new());
    for key in [
        "segments/segment-000000000000000a.bin",
        "segments/segment-0000000000000002.meta.json",
        "segments/segment-0000000000000002.bin",
        "segments/notes.txt",
        "segments/sub/x",
        "other/segment-0000000000000003.bin",
    ] {
        put(&store, key, "seg").await;
    }
    let fs = mount(&store, LayoutKind::Segments);
    assert_eq!(
        names(&fs, ROOT_INO).await,
        vec![
            "segment-0000000000000002.bin",
            "segment-0000000000000002.meta.json",
            "segment-000000000000000a.bin"
        ]
    );
    assert_eq!(
        fs.create(ROOT_INO, "notes2.txt", 0o644, 0, caller())
            .await
            .unwrap_err()
            .errno(),
        libc::EINVAL
    );
    assert_eq!(
        fs.mkdir(ROOT_INO, "dir", 0o755, caller())
            .await
            .unwrap_err()
            .errno(),
        libc::EINVAL
    );
    let seg = fs
        .lookup(ROOT_INO, "segment-000000000000000a.bin")
        .await
        .unwrap();
    assert_eq!(
        fs.open(seg.ino, libc::O_WRONLY, caller())
            .await
            .unwrap_err()
            .errno(),
        libc::EPERM
    );
    assert_eq!(
        fs.getxattr(seg.ino, super::file::SEGMENT_ID_XATTR).unwrap(),
        b"10"
    );
    assert_eq!(
        fs.lookup(ROOT_INO, "notes.txt").await.unwrap_err().errno(),
        libc::ENOENT
    );
}

#[tokio::test]
async fn read_only_mount_refuses_changes() {
    let store = Arc::new(MemoryStore::new());
    put(&store, "f", "x").await;
    let mut config = FsConfig::new(Layout::new(LayoutKind::Keys, None).unwrap());
    config.read_only = true;
    let fs = Fs::new(store.clone(), config);
    let f = fs.lookup(ROOT_INO, "f").await.unwrap();
    assert_eq!(
        fs.open(f.ino, libc::O_RDWR, caller())
            .await
            .unwrap_err()
            .errno(),
        libc::EROFS
    );
    assert_eq!(
        fs.create(ROOT_INO, "g", 0o644, 0, caller())
            .await
            .unwrap_err()
            .errno(),
        libc::EROFS
    );
    assert_eq!(
        fs.unlink(ROOT_INO, "f").await.unwrap_err().errno(),
        libc::EROFS
    );
    assert_eq!(
        fs.mkdir(ROOT_INO, "d", 0o755, caller())
            .await
            .unwrap_err()
            .errno(),
        libc::EROFS
    );
}

#[tokio::test]
async fn files_read_in_order_are_fetched_ahead_in_parallel_each_once() {
    use crate::store::faulty::{FaultyStore, Op};
    let memory = MemoryStore::new();
    for i in 0..40 {
        let data = format!("file {i:02}");
        memory
            .put(
                &format!("d/f{i:02}"),
                Bytes::from(data),
                PutOptions::default(),
            )
            .await
            .unwrap();
    }
    let store = Arc::new(FaultyStore::new(memory));
    store.delay(Op::Get, std::time::Duration::from_millis(30));
    let mut config = FsConfig::new(Layout::new(LayoutKind::Keys, None).unwrap());
    config.staging_dir = std::env::temp_dir();
    let fs = Fs::new(store.clone(), config);
    let d = fs.lookup(ROOT_INO, "d").await.unwrap();
    names(&fs, d.ino).await;
    for i in 0..40 {
        let f = fs.lookup(d.ino, &format!("f{i:02}")).await.unwrap();
        let opened = fs.open(f.ino, libc::O_RDONLY, caller()).await.unwrap();
        let data = fs.read(opened.handle, 0, 4096).await.unwrap();
        assert_eq!(data.as_ref(), format!("file {i:02}").as_bytes());
        fs.release(opened.handle).await.unwrap();
    }
    assert_eq!(store.calls(Op::Get), 40, "each file fetched exactly once");
    assert!(
        store.max_in_flight(Op::Get) >= 4,
        "files ahead were fetched in parallel: {}",
        store.max_in_flight(Op::Get)
    );
}

#[tokio::test]
async fn files_read_out_of_order_are_not_fetched_ahead() {
    use crate::store::faulty::{FaultyStore, Op};
    let memory = MemoryStore::new();
    for i in 0..10 {
        memory
            .put(&format!("f{i}"), Bytes::from("x"), PutOptions::default())
            .await
            .unwrap();
    }
    let store = Arc::new(FaultyStore::new(memory));
    let mut config = FsConfig::new(Layout::new(LayoutKind::Keys, None).unwrap());
    config.staging_dir = std::env::temp_dir();
    let fs = Fs::new(store.clone(), config);
    names(&fs, ROOT_INO).await;
    for i in [7, 2, 9, 0] {
        let f = fs.lookup(ROOT_INO, &format!("f{i}")).await.unwrap();
        let opened = fs.open(f.ino, libc::O_RDONLY, caller()).await.unwrap();
        fs.read(opened.handle, 0, 10).await.unwrap();
        fs.release(opened.handle).await.unwrap();
    }
    assert_eq!(store.calls(Op::Get), 4, "only what was read");
}

/// A directory many times larger than the node limit is listed whole, in order, with each
/// name once, and memory stays near the limit plus what the kernel references; a second
/// listing within the TTL (complete, from memory) is whole too.
#[tokio::test]
async fn a_directory_larger_than_the_node_limit_is_listed_whole() {
    let store = Arc::new(MemoryStore::new());
    for i in 0..12_500 {
        put(&store, &format!("big/f{i:05}"), "x").await;
    }
    put(&store, "big/sub/inner", "x").await;
    let mut config = FsConfig::new(Layout::new(LayoutKind::Keys, None).unwrap());
    config.posix_metadata = false;
    config.max_cached_nodes = 100;
    let fs = Fs::new(store.clone(), config);
    let big = fs.lookup(ROOT_INO, "big").await.unwrap().ino;
    for round in 0..2 {
        let listed = names(&fs, big).await;
        assert_eq!(listed.len(), 12_501, "round {round}");
        let mut unique = listed.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), 12_501, "round {round}: a name twice");
        assert!(listed.contains(&"sub".to_string()));
        assert!(
            fs.ns().len() < 100 + (super::readdir::PAGES_AHEAD + 1) * 1_000 + 10,
            "round {round}: {} nodes kept",
            fs.ns().len()
        );
    }
}

/// A listing's metadata HEADs over a store that delays them, 100 of them throttled first if
/// `throttled`: the store, to count what was in flight at most.
async fn list_with_heads(
    throttled: bool,
) -> (
    Arc<crate::store::retry::Retrying<crate::store::faulty::FaultyStore<MemoryStore>>>,
    Vec<String>,
) {
    use crate::store::StoreError;
    use crate::store::faulty::{FaultyStore, Op};
    use crate::store::retry::{RetryPolicy, Retrying};
    let memory = MemoryStore::new();
    for i in 0..600 {
        memory
            .put(
                &format!("d/f{i:03}"),
                Bytes::from("x"),
                PutOptions::default(),
            )
            .await
            .unwrap();
    }
    let faulty = FaultyStore::new(memory);
    faulty.delay(Op::Head, std::time::Duration::from_millis(5));
    if throttled {
        faulty.fail_next(Op::Head, 100, || StoreError::Throttled("slow down".into()));
    }
    let policy = RetryPolicy {
        max_retries: 10,
        base_delay: std::time::Duration::from_millis(1),
        total: None,
    };
    let store = Arc::new(Retrying::new(faulty, policy));
    let mut config = FsConfig::new(Layout::new(LayoutKind::Keys, None).unwrap());
    config.max_heads_in_flight = 256;
    let fs = Fs::new(store.clone(), config);
    let d = fs.lookup(ROOT_INO, "d").await.unwrap();
    (store, names(&fs, d.ino).await)
}

/// While the server keeps up, the HEADs' window opens past where it starts; SlowDown answers
/// close it, and the listing is still whole, every HEAD retried until it succeeded.
#[tokio::test]
async fn metadata_heads_fan_out_grows_while_the_server_keeps_up_and_shrinks_on_slow_down() {
    use crate::store::faulty::Op;
    let (store, listed) = list_with_heads(false).await;
    assert_eq!(listed.len(), 600);
    let open = store.inner().max_in_flight(Op::Head);
    assert!(
        open >= 4 * super::head_window::INITIAL as u32,
        "{open} in flight at most"
    );
    let (store, listed) = list_with_heads(true).await;
    assert_eq!(listed.len(), 600);
    let faulty = store.inner();
    assert_eq!(
        faulty.calls(Op::Head),
        700,
        "every HEAD succeeded in the end"
    );
    // The first window went out before any answer; after the cuts it grows back by about
    // one per window of answers, far from where it went without SlowDown.
    let throttled = faulty.max_in_flight(Op::Head);
    assert!(
        throttled <= super::head_window::INITIAL as u32 + 16,
        "{throttled} in flight at most after SlowDown, {open} without"
    );
}
