//! S3Store (inside Retrying) over real HTTP against moto's S3 server on loopback, plus a tiny
//! local server where the test must see what the client puts on the wire.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use scribefs::store::config::S3Config;
use scribefs::store::retry::{RetryPolicy, Retrying};
use scribefs::store::s3::S3Store;
use scribefs::store::{
    CopyMetadata, GetRequest, ListRequest, ObjectStore, PutOptions, StoreError, get_bytes, list_all,
};

use common::{moto, tiny_server::TinyServer};

const MIB: usize = 1024 * 1024;

fn config(endpoint: &str, bucket: &str) -> S3Config {
    S3Config {
        bucket: bucket.to_string(),
        endpoint: Some(endpoint.to_string()),
        access_key_id: Some("testing".into()),
        secret_access_key: Some("testing".into()),
        path_style: true,
        timeout_secs: 20,
        max_retries: 2,
        ..Default::default()
    }
}

fn fast_retries(max_retries: u32) -> RetryPolicy {
    RetryPolicy {
        max_retries,
        base_delay: Duration::from_millis(5),
        total: None,
    }
}

async fn store_for(config: &S3Config) -> Retrying<S3Store> {
    Retrying::new(
        S3Store::new(config).await.unwrap(),
        fast_retries(config.max_retries),
    )
}

/// A fresh bucket on the shared moto, and a store for it.
async fn fresh_bucket(name: &str) -> Retrying<S3Store> {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let bucket = format!("{name}-{}", NEXT.fetch_add(1, Ordering::Relaxed));
    let store = store_for(&config(&moto::shared().endpoint, &bucket)).await;
    store
        .inner()
        .client()
        .create_bucket()
        .bucket(&bucket)
        .send()
        .await
        .unwrap();
    store
}

fn pattern(len: usize, seed: u8) -> Bytes {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect::<Vec<u8>>()
        .into()
}

fn metadata(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[tokio::test]
async fn head_get_ranges_and_if_match() {
    let store = fresh_bucket("get").await;
    let data = pattern(100, 1);
    let put = store
        .put("dir/obj", data.clone(), PutOptions::default())
        .await
        .unwrap();
    store.head_bucket().await.unwrap();

    let head = store.head("dir/obj").await.unwrap();
    assert_eq!((head.key.as_str(), head.size), ("dir/obj", 100));
    assert_eq!(head.etag, put.etag);
    assert!(head.last_modified > std::time::UNIX_EPOCH);

    let whole = store.get(GetRequest::whole("dir/obj")).await.unwrap();
    assert_eq!((whole.range.clone(), whole.meta.size), (0..100, 100));
    assert_eq!(whole.collect().await.unwrap(), data);

    let request = GetRequest {
        range: Some(10..20),
        ..GetRequest::whole("dir/obj")
    };
    let ranged = store.get(request).await.unwrap();
    assert_eq!((ranged.range.clone(), ranged.meta.size), (10..20, 100));
    assert_eq!(ranged.collect().await.unwrap(), data.slice(10..20));

    let clipped = get_bytes(&store, "dir/obj", Some(90..1000)).await.unwrap();
    assert_eq!(clipped, data.slice(90..100));
    let past_end = store.get(GetRequest {
        range: Some(100..200),
        ..GetRequest::whole("dir/obj")
    });
    assert!(matches!(past_end.await, Err(StoreError::InvalidRequest(_))));

    let matching = GetRequest {
        if_match: Some(put.etag.clone()),
        ..GetRequest::whole("dir/obj")
    };
    assert_eq!(
        store.get(matching).await.unwrap().collect().await.unwrap(),
        data
    );
    let stale = GetRequest {
        if_match: Some("\"0123\"".into()),
        ..GetRequest::whole("dir/obj")
    };
    let err = store.get(stale).await.err().unwrap();
    assert!(
        matches!(err, StoreError::PreconditionFailed(ref key) if key == "dir/obj"),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_missing_key_is_not_found() {
    let store = fresh_bucket("missing-key").await;
    store
        .put("dir/a", Bytes::from_static(b"x"), PutOptions::default())
        .await
        .unwrap();
    let err = store.head("nope").await.unwrap_err();
    assert!(
        matches!(err, StoreError::NotFound(ref key) if key == "nope"),
        "{err:?}"
    );
    let err = store.get(GetRequest::whole("nope")).await.err().unwrap();
    assert!(
        matches!(err, StoreError::NotFound(ref key) if key == "nope"),
        "{err:?}"
    );
    // A key that exists only as a prefix is no object.
    assert!(store.head("dir").await.unwrap_err().is_not_found());
}

#[tokio::test]
async fn a_missing_bucket_is_named() {
    let store = store_for(&config(&moto::shared().endpoint, "no-such-bucket-here")).await;
    let err = store.head_bucket().await.unwrap_err();
    assert!(
        matches!(err, StoreError::NoSuchBucket(ref b) if b == "no-such-bucket-here"),
        "{err}"
    );
    let err = store.get(GetRequest::whole("k")).await.err().unwrap();
    assert!(matches!(err, StoreError::NoSuchBucket(_)), "{err:?}");
    let err = store.list(ListRequest::default()).await.unwrap_err();
    assert!(matches!(err, StoreError::NoSuchBucket(_)), "{err:?}");
}

/// moto checks signatures only with IAM enforcement on; that instance knows no keys at all, so
/// this is "unknown access key" (403 InvalidAccessKeyId), the same path as a wrong secret
/// (403 SignatureDoesNotMatch).
#[tokio::test]
async fn refused_credentials_are_access_denied() {
    let store = store_for(&config(
        &moto::checking_credentials().endpoint,
        "any-bucket",
    ))
    .await;
    let err = store.head_bucket().await.unwrap_err();
    let StoreError::AccessDenied(message) = &err else {
        panic!("{err:?}")
    };
    assert!(
        message.contains("check the access key and secret"),
        "{message}"
    );
    let err = store.get(GetRequest::whole("k")).await.err().unwrap();
    assert!(matches!(err, StoreError::AccessDenied(_)), "{err:?}");
}

#[tokio::test]
async fn put_keeps_metadata_and_content_type() {
    let store = fresh_bucket("meta").await;
    let meta = metadata(&[("segment-id", "42"), ("owner", "ledger")]);
    let options = PutOptions {
        metadata: meta.clone(),
        content_type: Some("application/json".into()),
        ..Default::default()
    };
    store
        .put("s.meta.json", Bytes::from_static(b"{}"), options)
        .await
        .unwrap();
    assert_eq!(store.head("s.meta.json").await.unwrap().metadata, meta);
    let got = store.get(GetRequest::whole("s.meta.json")).await.unwrap();
    assert_eq!(got.meta.metadata, meta);
    let content_type = store
        .inner()
        .client()
        .head_object()
        .bucket(store.inner().bucket())
        .key("s.meta.json")
        .send()
        .await
        .unwrap();
    assert_eq!(content_type.content_type(), Some("application/json"));
}

#[tokio::test]
async fn multipart_upload_completes() {
    let store = fresh_bucket("multipart").await;
    let options = PutOptions {
        metadata: metadata(&[("kind", "segment")]),
        content_type: None,
        ..Default::default()
    };
    let upload = store.create_multipart("big.bin", options).await.unwrap();
    let parts_data = [pattern(5 * MIB, 1), pattern(5 * MIB, 2), pattern(1000, 3)];
    let mut parts = Vec::new();
    for (i, data) in parts_data.iter().enumerate() {
        let part = store
            .upload_part("big.bin", &upload, i as u32 + 1, data.clone())
            .await;
        parts.push(part.unwrap());
    }
    let done = store
        .complete_multipart("big.bin", &upload, parts, false)
        .await
        .unwrap();
    assert!(done.etag.ends_with("-3\""), "{}", done.etag);

    let whole: Vec<u8> = parts_data.iter().flat_map(|p| p.iter().copied()).collect();
    let head = store.head("big.bin").await.unwrap();
    assert_eq!(
        (head.size, head.etag.as_str()),
        (whole.len() as u64, done.etag.as_str())
    );
    assert_eq!(head.metadata, metadata(&[("kind", "segment")]));
    assert_eq!(
        get_bytes(&store, "big.bin", None).await.unwrap(),
        Bytes::from(whole.clone())
    );
    let across = (5 * MIB as u64 - 10)..(5 * MIB as u64 + 10);
    let got = get_bytes(&store, "big.bin", Some(across.clone()))
        .await
        .unwrap();
    assert_eq!(
        got,
        Bytes::copy_from_slice(&whole[across.start as usize..across.end as usize])
    );
}

#[tokio::test]
async fn an_aborted_upload_leaves_nothing() {
    let store = fresh_bucket("abort").await;
    let upload = store
        .create_multipart("gone.bin", PutOptions::default())
        .await
        .unwrap();
    store
        .upload_part("gone.bin", &upload, 1, pattern(1000, 9))
        .await
        .unwrap();
    store.abort_multipart("gone.bin", &upload).await.unwrap();
    // (moto answers a CompleteMultipartUpload of an aborted upload with a 500, where S3 says
    // NoSuchUpload; a second abort gets the right answer from both.)
    let err = store
        .abort_multipart("gone.bin", &upload)
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::NotFound(ref what) if what.contains("gone.bin")),
        "{err:?}"
    );
    assert!(store.head("gone.bin").await.unwrap_err().is_not_found());
    let client = store.inner().client();
    let uploads = client
        .list_multipart_uploads()
        .bucket(store.inner().bucket())
        .send()
        .await;
    assert!(uploads.unwrap().uploads().is_empty());
}

#[tokio::test]
async fn copy_keeps_or_replaces_metadata() {
    let store = fresh_bucket("copy").await;
    let meta = metadata(&[("a", "1")]);
    let options = PutOptions {
        metadata: meta.clone(),
        content_type: Some("text/plain".into()),
        ..Default::default()
    };
    let source = "dir/with space+plus é.txt";
    store
        .put(source, Bytes::from_static(b"hello"), options)
        .await
        .unwrap();

    store
        .copy(source, "kept", CopyMetadata::Keep)
        .await
        .unwrap();
    assert_eq!(store.head("kept").await.unwrap().metadata, meta);
    assert_eq!(
        get_bytes(&store, "kept", None).await.unwrap(),
        Bytes::from_static(b"hello")
    );

    let replaced = metadata(&[("b", "2")]);
    let copied = store
        .copy(source, "replaced", CopyMetadata::Replace(replaced.clone()))
        .await
        .unwrap();
    let head = store.head("replaced").await.unwrap();
    assert_eq!((head.metadata, head.etag), (replaced, copied.etag));
    let raw = store
        .inner()
        .client()
        .head_object()
        .bucket(store.inner().bucket())
        .key("replaced");
    assert_eq!(raw.send().await.unwrap().content_type(), Some("text/plain"));

    let err = store
        .copy("no-source", "x", CopyMetadata::Keep)
        .await
        .unwrap_err();
    assert!(err.is_not_found(), "{err:?}");
}

#[tokio::test]
async fn delete_removes_and_tolerates_missing_keys() {
    let store = fresh_bucket("delete").await;
    store
        .put("k", Bytes::from_static(b"v"), PutOptions::default())
        .await
        .unwrap();
    store.delete("k").await.unwrap();
    assert!(store.head("k").await.unwrap_err().is_not_found());
    store.delete("k").await.unwrap();
    store.delete("never-was").await.unwrap();
}

#[tokio::test]
async fn list_with_delimiter_pages_one_entry_at_a_time() {
    let store = fresh_bucket("list").await;
    for key in ["a/1", "a/2", "b", "c/x/y", "d+e f\u{1}g"] {
        store
            .put(key, Bytes::from_static(b"v"), PutOptions::default())
            .await
            .unwrap();
    }
    let mut request = ListRequest {
        delimiter: Some("/".into()),
        max_keys: Some(1),
        ..Default::default()
    };
    let (mut objects, mut prefixes, mut pages) = (Vec::new(), Vec::new(), 0);
    loop {
        let page = store.list(request.clone()).await.unwrap();
        pages += 1;
        assert_eq!(page.objects.len() + page.common_prefixes.len(), 1);
        objects.extend(page.objects.into_iter().map(|o| o.key));
        prefixes.extend(page.common_prefixes);
        match page.next_continuation_token {
            Some(token) => request.continuation_token = Some(token),
            None => break,
        }
    }
    assert_eq!(pages, 4);
    assert_eq!(objects, ["b", "d+e f\u{1}g"]);
    assert_eq!(prefixes, ["a/", "c/"]);

    let below_a = ListRequest {
        prefix: "a/".into(),
        ..Default::default()
    };
    let page = store.list(below_a).await.unwrap();
    let keys: Vec<_> = page
        .objects
        .iter()
        .map(|o| (o.key.as_str(), o.size))
        .collect();
    assert_eq!(keys, [("a/1", 1), ("a/2", 1)]);
    assert!(page.next_continuation_token.is_none());
}

#[tokio::test]
async fn more_than_a_thousand_keys_span_pages() {
    let store = fresh_bucket("many").await;
    let keys: Vec<String> = (0..1050)
        .map(|i| format!("segments/segment-{i:016x}.bin"))
        .collect();
    futures::stream::iter(keys.iter())
        .map(|key| store.put(key, Bytes::from_static(b"s"), PutOptions::default()))
        .buffer_unordered(8)
        .try_collect::<Vec<_>>()
        .await
        .unwrap();
    let first = store.list(ListRequest {
        prefix: "segments/".into(),
        ..Default::default()
    });
    let first = first.await.unwrap();
    assert_eq!(first.objects.len(), 1000);
    assert!(first.next_continuation_token.is_some());
    let listed: Vec<String> = list_all(&store, "segments/")
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .collect();
    assert_eq!(listed, keys);
}

#[tokio::test]
async fn fifty_concurrent_gets_share_a_pool_of_two() {
    let bucket = "pool-two";
    let mut config = config(&moto::shared().endpoint, bucket);
    config.pool_size = 2;
    let store = store_for(&config).await;
    store
        .inner()
        .client()
        .create_bucket()
        .bucket(bucket)
        .send()
        .await
        .unwrap();
    for i in 0..5u8 {
        store
            .put(
                &format!("k{i}"),
                pattern(64 * 1024, i),
                PutOptions::default(),
            )
            .await
            .unwrap();
    }
    let results = futures::future::join_all((0..50u8).map(|i| {
        let store = &store;
        async move { (i % 5, get_bytes(store, &format!("k{}", i % 5), None).await) }
    }))
    .await;
    for (i, result) in results {
        assert_eq!(result.unwrap(), pattern(64 * 1024, i));
    }
}

/// The server sees at most `pool_size` requests at once, although the body of each answer
/// arrives only after a pause: the permit is held until a body is read to its end.
#[tokio::test]
async fn pool_size_bounds_requests_on_the_wire() {
    let server = TinyServer::start(vec![7u8; 4096], Duration::from_millis(20)).await;
    let mut config = config(&server.endpoint, "tiny");
    config.pool_size = 2;
    let store = store_for(&config).await;
    let results = futures::future::join_all((0..50).map(|_| get_bytes(&store, "k", None))).await;
    for result in results {
        assert_eq!(result.unwrap().len(), 4096);
    }
    assert_eq!(server.requests(), 50);
    assert_eq!(server.max_in_flight(), 2);
    assert_eq!(server.in_flight(), 0);

    // A body dropped unread gives its permit back.
    for _ in 0..3 {
        drop(store.get(GetRequest::whole("k")).await.unwrap());
    }
    assert_eq!(get_bytes(&store, "k", None).await.unwrap().len(), 4096);
}

#[tokio::test]
async fn a_refused_connection_is_retried_then_reported() {
    let endpoint = format!("http://127.0.0.1:{}", moto::free_port());
    let store = store_for(&config(&endpoint, "b")).await;
    let err = store.head("k").await.unwrap_err();
    let StoreError::RetriesExhausted { attempts, source } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(*attempts, 3);
    // Refused at every attempt: the server is gone, not stumbling (3 attempts, not 10).
    let StoreError::Unreachable(message) = source.as_ref() else {
        panic!("{source:?}")
    };
    assert!(message.contains(&endpoint), "{message}");
}

/// Not an assertion on time: prints what a small GET costs, for the record.
#[tokio::test]
async fn small_get_latency_is_reported() {
    async fn measure(label: &str, store: &Retrying<S3Store>, key: &str) {
        for _ in 0..20 {
            assert_eq!(get_bytes(store, key, None).await.unwrap().len(), 4096);
        }
        let mut samples = Vec::new();
        for _ in 0..200 {
            let start = Instant::now();
            assert_eq!(get_bytes(store, key, None).await.unwrap().len(), 4096);
            samples.push(start.elapsed());
        }
        samples.sort();
        eprintln!(
            "4 KiB GET via {label}: median {:?}, p90 {:?}, max {:?}",
            samples[100], samples[180], samples[199]
        );
    }
    let server = TinyServer::start(vec![1u8; 4096], Duration::ZERO).await;
    measure(
        "tiny loopback server",
        &store_for(&config(&server.endpoint, "t")).await,
        "k",
    )
    .await;
    eprintln!(
        "tiny server: {} requests over {} connections",
        server.requests(),
        server.connections()
    );
    let store = fresh_bucket("latency").await;
    store
        .put("small", pattern(4096, 0), PutOptions::default())
        .await
        .unwrap();
    measure("moto", &store, "small").await;
}

/// Moto (an independent S3) stores what the request options ask for: SSE-S3 encryption and
/// the storage class, on a PUT, a multipart upload and a copy; it takes requester pays and
/// the expected owner of its own account.
#[tokio::test]
async fn encryption_and_storage_class_are_stored() {
    let plain = fresh_bucket("options").await;
    let bucket = plain.inner().bucket().to_string();
    let mut settings = config(&moto::shared().endpoint, &bucket);
    settings.requests = scribefs::store::config::RequestOptions {
        sse: Some("AES256".into()),
        storage_class: Some("STANDARD_IA".into()),
        requester_pays: true,
        expected_bucket_owner: Some("123456789012".into()),
        ..Default::default()
    };
    let store = store_for(&settings).await;
    store
        .put("small", Bytes::from_static(b"x"), PutOptions::default())
        .await
        .unwrap();
    let upload = store
        .create_multipart("big", PutOptions::default())
        .await
        .unwrap();
    let part = store
        .upload_part("big", &upload, 1, Bytes::from(vec![7u8; 5 * MIB]))
        .await
        .unwrap();
    store
        .complete_multipart("big", &upload, vec![part], false)
        .await
        .unwrap();
    store
        .copy("small", "copied", CopyMetadata::Keep)
        .await
        .unwrap();
    for key in ["small", "big", "copied"] {
        let head = plain
            .inner()
            .client()
            .head_object()
            .bucket(&bucket)
            .key(key)
            .send()
            .await
            .unwrap();
        assert_eq!(
            head.server_side_encryption().map(|s| s.as_str()),
            Some("AES256"),
            "{key}"
        );
        assert_eq!(
            head.storage_class().map(|s| s.as_str()),
            Some("STANDARD_IA"),
            "{key}"
        );
    }
}
