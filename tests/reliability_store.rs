//! Reliability of the storage layer against real servers: pending multipart uploads survive a
//! dev server restart and are listed (dev server and moto); a file-backed server (s3s-fs) that
//! answers a `dir/` marker PUT without an ETag, or cannot hold `a` beside `a/b`, is handled.

mod common;

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use common::backend::{Backend, DEV_BUCKET, dev_config};
use common::fs_server::FsServer;
use common::mount::BUCKET;
use scribefs::devserver::{DevServer, DevServerConfig};
use scribefs::store::config::S3Config;
use scribefs::store::limits::S3_MIN_PART_SIZE;
use scribefs::store::s3::S3Store;
use scribefs::store::{ObjectStore, PutOptions, StoreError, get_bytes};

/// A dev server and the bare S3 store on it, without retries: one attempt per call.
async fn server_and_bare_store() -> (DevServer, S3Store) {
    let server = DevServer::start(DevServerConfig::for_tests(&[DEV_BUCKET]))
        .await
        .unwrap();
    let s3 = S3Store::new(&dev_config(&server, DEV_BUCKET))
        .await
        .unwrap();
    (server, s3)
}

fn part(byte: u8, len: u64) -> Bytes {
    Bytes::from(vec![byte; len as usize])
}

#[tokio::test]
async fn devserver_keeps_pending_uploads_and_parts_across_a_restart() {
    let root = tempfile::tempdir().unwrap();
    let mut config = DevServerConfig::for_tests(&[DEV_BUCKET]);
    config.root = Some(root.path().to_path_buf());
    let server = DevServer::start(config.clone()).await.unwrap();
    config.listen = server.local_addr();
    let store = scribefs::cli::connect(&dev_config(&server, DEV_BUCKET))
        .await
        .unwrap();

    let kept = store
        .create_multipart("data/kept", PutOptions::default())
        .await
        .unwrap();
    let first = store
        .upload_part("data/kept", &kept, 1, part(b'a', S3_MIN_PART_SIZE))
        .await
        .unwrap();
    let second = store
        .upload_part("data/kept", &kept, 2, part(b'b', 10))
        .await
        .unwrap();
    let aborted = store
        .create_multipart("data/aborted", PutOptions::default())
        .await
        .unwrap();
    store
        .upload_part("data/aborted", &aborted, 1, part(b'c', 10))
        .await
        .unwrap();
    store
        .abort_multipart("data/aborted", &aborted)
        .await
        .unwrap();
    let before = store.list_uploads("").await.unwrap();
    server.shutdown().await;

    let server = DevServer::start(config.clone()).await.unwrap();
    let after = store.list_uploads("").await.unwrap();
    assert_eq!(after.len(), 1, "{after:?}");
    assert_eq!(after[0].key, "data/kept");
    assert_eq!(after[0].upload_id, kept);
    assert_eq!(after, before, "the start time is kept too");
    // A new upload never reuses a restored id.
    let fresh = store
        .create_multipart("data/fresh", PutOptions::default())
        .await
        .unwrap();
    assert_ne!(fresh, kept);
    store.abort_multipart("data/fresh", &fresh).await.unwrap();
    // The restored parts complete into the object they were meant to make.
    store
        .complete_multipart("data/kept", &kept, vec![first, second], false)
        .await
        .unwrap();
    let data = get_bytes(store.as_ref(), "data/kept", None).await.unwrap();
    assert_eq!(data.len() as u64, S3_MIN_PART_SIZE + 10);
    assert!(data[..S3_MIN_PART_SIZE as usize].iter().all(|b| *b == b'a'));
    assert_eq!(&data[S3_MIN_PART_SIZE as usize..], &[b'b'; 10]);
    server.shutdown().await;

    let server = DevServer::start(config).await.unwrap();
    assert!(store.list_uploads("").await.unwrap().is_empty());
    assert!(server.bucket(DEV_BUCKET).unwrap().pending_uploads() == 0);
    server.shutdown().await;
}

/// `fresh_times`: the server reports real start times (moto reports a fixed date in 2010).
async fn lists_uploads_by_prefix(backend: Backend, fresh_times: bool) {
    let store = &backend.store;
    let mut ids = Vec::new();
    for key in ["logs/b", "logs/a", "other/c", "logs/a"] {
        let id = store
            .create_multipart(key, PutOptions::default())
            .await
            .unwrap();
        ids.push((key.to_string(), id));
    }
    let all = store.list_uploads("").await.unwrap();
    assert_eq!(all.len(), 4, "{all:?}");
    let logs = store.list_uploads("logs/").await.unwrap();
    let keys: Vec<&str> = logs.iter().map(|u| u.key.as_str()).collect();
    assert_eq!(keys, vec!["logs/a", "logs/a", "logs/b"]);
    let now = SystemTime::now();
    for upload in &logs {
        let age = now
            .duration_since(upload.initiated)
            .unwrap_or(Duration::ZERO);
        assert!(!fresh_times || age < Duration::from_secs(300), "{upload:?}");
        assert!(ids.contains(&(upload.key.clone(), upload.upload_id.clone())));
    }
    for (key, id) in &ids {
        store.abort_multipart(key, id).await.unwrap();
    }
    assert!(store.list_uploads("").await.unwrap().is_empty());
}

#[tokio::test]
async fn lists_uploads_by_prefix_on_the_devserver() {
    lists_uploads_by_prefix(Backend::devserver().await, true).await;
}

#[tokio::test]
async fn lists_uploads_by_prefix_on_moto() {
    lists_uploads_by_prefix(Backend::moto("lists_uploads_by_prefix").await, false).await;
}

fn fs_config(server: &FsServer) -> S3Config {
    S3Config {
        bucket: BUCKET.to_string(),
        endpoint: Some(server.endpoint.clone()),
        access_key_id: Some(common::devserver::ACCESS_KEY.into()),
        secret_access_key: Some(common::devserver::SECRET_KEY.into()),
        path_style: true,
        ..S3Config::default()
    }
}

#[test]
fn a_file_backed_server_without_etags_and_with_key_conflicts() {
    let server = FsServer::start(&[BUCKET]);
    server.runtime.block_on(async {
        let store = scribefs::cli::connect(&fs_config(&server)).await.unwrap();
        // The `dir/` marker PUT is answered without an ETag: still a success.
        store
            .put("dir/", Bytes::new(), PutOptions::default())
            .await
            .unwrap();
        assert!(server.root.path().join(BUCKET).join("dir").is_dir());
        // An ordinary PUT keeps its ETag.
        let put = store
            .put("dir/file", Bytes::from_static(b"x"), PutOptions::default())
            .await
            .unwrap();
        assert!(put.etag.len() > 2, "{put:?}");

        // `dir/file` is a file: `dir/file/below` cannot be stored, and says so without retries.
        let error = store
            .put(
                "dir/file/below",
                Bytes::from_static(b"y"),
                PutOptions::default(),
            )
            .await
            .unwrap_err();
        let StoreError::KeyConflict(key, other) = &error else {
            panic!("expected a key conflict, got {error:?}");
        };
        assert_eq!(
            (key.as_str(), other.as_str()),
            ("dir/file/below", "dir/file")
        );
        // `dir` has keys below it: the object `dir` cannot be stored.
        let error = store
            .put("dir", Bytes::from_static(b"z"), PutOptions::default())
            .await
            .unwrap_err();
        assert!(
            matches!(&error, StoreError::KeyConflict(k, _) if k == "dir"),
            "{error:?}"
        );
        // A copy onto a conflicting key too.
        let error = store
            .copy(
                "dir/file",
                "dir/file/copy",
                scribefs::store::CopyMetadata::Keep,
            )
            .await
            .unwrap_err();
        assert!(matches!(error, StoreError::KeyConflict(..)), "{error:?}");
    });
}

#[tokio::test]
async fn a_body_damaged_on_the_way_is_refused_by_content_md5_never_stored() {
    let (server, s3) = server_and_bare_store().await;
    server.set_corrupt_rate(1.0);
    let error = s3
        .put(
            "k",
            Bytes::from_static(b"precious bytes"),
            PutOptions::default(),
        )
        .await
        .unwrap_err();
    assert!(error.is_retryable(), "{error:?}");
    assert!(error.to_string().contains("BadDigest"), "{error}");
    assert!(server.bucket(DEV_BUCKET).unwrap().object("k").is_none());
    let id = s3
        .create_multipart("m", PutOptions::default())
        .await
        .unwrap();
    let error = s3
        .upload_part("m", &id, 1, part(b'p', 1000))
        .await
        .unwrap_err();
    assert!(error.to_string().contains("BadDigest"), "{error}");

    server.set_corrupt_rate(0.0);
    s3.put(
        "k",
        Bytes::from_static(b"precious bytes"),
        PutOptions::default(),
    )
    .await
    .unwrap();
    let stored = server.bucket(DEV_BUCKET).unwrap().object("k").unwrap();
    assert_eq!(&stored.data[..], b"precious bytes");
}

/// Every GET answer that covers a whole single-part object is checked against its MD5 ETag
/// before a byte is returned: a body damaged on the way is an error, fetched once more, never
/// returned. A range of the object has no stored digest and is not checked.
#[tokio::test]
async fn a_download_damaged_on_the_way_is_detected_fetched_once_more_never_returned() {
    let (server, s3) = server_and_bare_store().await;
    let config = dev_config(&server, DEV_BUCKET);
    let data: Bytes = (0..5000u32).map(|i| (i * 31 % 251) as u8).collect();
    s3.put("small", data.clone(), PutOptions::default())
        .await
        .unwrap();
    server.set_corrupt_get_rate(1.0);

    // The bare store: one GET, an error naming the mismatch. Asking for more than the object
    // (as the block cache does for a small file) is still the whole object.
    for range in [None, Some(0..1 << 20), Some(0..5000)] {
        server.reset_stats();
        let error = get_bytes(&s3, "small", range.clone()).await.unwrap_err();
        assert!(
            matches!(error, StoreError::ChecksumMismatch { .. }),
            "{range:?}: {error:?}"
        );
        assert!(!error.is_retryable());
        assert!(error.to_string().contains("MD5"), "{error}");
        assert_eq!(server.stats().get, 1, "{range:?}");
    }

    // With retries: exactly one more GET, whatever the retry budget, then the same error.
    let store = scribefs::cli::connect(&config).await.unwrap();
    server.reset_stats();
    let error = get_bytes(store.as_ref(), "small", None).await.unwrap_err();
    assert!(error.is_checksum_mismatch(), "{error:?}");
    assert_eq!(server.stats().get, 2);

    // A range inside the object has no digest to check against: its bytes come back damaged
    // (the limit docs/RELIABILITY.md states).
    let part = get_bytes(&s3, "small", Some(1000..2000)).await.unwrap();
    assert_ne!(part, data.slice(1000..2000));

    // --no-etag-check (for stores whose ETags are no MD5s) turns the check off.
    let unchecked = S3Store::new(&S3Config {
        check_etag_md5: false,
        ..config.clone()
    })
    .await
    .unwrap();
    server.reset_stats();
    let damaged = get_bytes(&unchecked, "small", None).await.unwrap();
    assert_eq!(damaged.len(), data.len());
    assert_ne!(damaged, data);
    assert_eq!(server.stats().get, 1);

    server.set_corrupt_get_rate(0.0);
    server.reset_stats();
    assert_eq!(
        get_bytes(store.as_ref(), "small", None).await.unwrap(),
        data
    );
    assert_eq!(server.stats().get, 1);
}

/// A multipart object's ETag is no MD5 of its bytes: its GETs are not checked, and a correct
/// download of it is not mistaken for a damaged one.
#[tokio::test]
async fn multipart_objects_are_read_unchecked_and_never_refused() {
    let (_server, s3) = server_and_bare_store().await;
    let id = s3
        .create_multipart("multi", PutOptions::default())
        .await
        .unwrap();
    let parts = vec![
        s3.upload_part("multi", &id, 1, part(b'a', S3_MIN_PART_SIZE))
            .await
            .unwrap(),
        s3.upload_part("multi", &id, 2, part(b'b', 10))
            .await
            .unwrap(),
    ];
    let done = s3
        .complete_multipart("multi", &id, parts, false)
        .await
        .unwrap();
    assert!(done.etag.contains('-'), "{}", done.etag);
    let whole = get_bytes(&s3, "multi", None).await.unwrap();
    assert_eq!(whole.len() as u64, S3_MIN_PART_SIZE + 10);
    assert!(whole.ends_with(b"bbbbbbbbbb"));
}
