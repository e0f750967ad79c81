//! The dev server over real HTTP on 127.0.0.1, driven by aws-sdk-s3 as scribefs drives S3.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use aws_sdk_s3::Client;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    CompletedMultipartUpload, CompletedPart, Delete, MetadataDirective, ObjectIdentifier,
};
use scribefs::devserver::{
    DevServer, DevServerConfig, RequestStats, SEEDED_BODY, SeedShape, control, request_stats,
};
use scribefs::segment::entries::decode_checked;
use scribefs::segment::{meta_key, parse_segment_key, segment_key};

const BUCKET: &str = "test-bucket";
const MIB: usize = 1024 * 1024;

fn client_with(endpoint: &str, access: &str, secret: &str) -> Client {
    let config = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .force_path_style(true)
        .credentials_provider(Credentials::new(
            access,
            secret,
            None,
            None,
            "devserver-test",
        ))
        // Tests count requests and provoke failures: every call must be exactly one request.
        .retry_config(RetryConfig::disabled())
        .build();
    Client::from_conf(config)
}

fn client(server: &DevServer) -> Client {
    client_with(&server.endpoint(), "devkey", "devsecret")
}

async fn start(buckets: &[&str]) -> DevServer {
    DevServer::start(DevServerConfig::for_tests(buckets))
        .await
        .unwrap()
}

async fn put(client: &Client, key: &str, body: impl Into<Vec<u8>>) -> String {
    let output = client
        .put_object()
        .bucket(BUCKET)
        .key(key)
        .body(ByteStream::from(body.into()))
        .send()
        .await
        .unwrap();
    output.e_tag().unwrap().to_string()
}

async fn get(client: &Client, key: &str) -> Vec<u8> {
    let output = client
        .get_object()
        .bucket(BUCKET)
        .key(key)
        .send()
        .await
        .unwrap();
    output.body.collect().await.unwrap().into_bytes().to_vec()
}

/// HTTP status of a failed call (None if no response came back).
fn status<E>(error: &SdkError<E, HttpResponse>) -> Option<u16> {
    error
        .raw_response()
        .map(|response| response.status().as_u16())
}

/// Lists everything under `prefix` with `delimiter`, `max_keys` per page (ListObjectsV2).
async fn list_all(
    client: &Client,
    prefix: &str,
    delimiter: Option<&str>,
    max_keys: i32,
) -> (Vec<String>, Vec<String>, usize) {
    let (mut keys, mut prefixes, mut pages) = (Vec::new(), Vec::new(), 0);
    let mut token = None;
    loop {
        let page = client
            .list_objects_v2()
            .bucket(BUCKET)
            .prefix(prefix)
            .set_delimiter(delimiter.map(str::to_string))
            .max_keys(max_keys)
            .set_continuation_token(token.take())
            .send()
            .await
            .unwrap();
        pages += 1;
        let count = page.contents().len() + page.common_prefixes().len();
        assert_eq!(page.key_count(), Some(count as i32));
        assert!(count <= max_keys as usize);
        keys.extend(page.contents().iter().map(|o| o.key().unwrap().to_string()));
        prefixes.extend(
            page.common_prefixes()
                .iter()
                .map(|p| p.prefix().unwrap().to_string()),
        );
        match page.next_continuation_token() {
            Some(next) => {
                assert_eq!(page.is_truncated(), Some(true));
                token = Some(next.to_string());
            }
            None => {
                assert_eq!(page.is_truncated(), Some(false));
                return (keys, prefixes, pages);
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_round_trip_with_headers_ranges_and_conditions() {
    let server = start(&[BUCKET]).await;
    let s3 = client(&server);
    let body: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
    let stored = s3
        .put_object()
        .bucket(BUCKET)
        .key("dir/file.bin")
        .body(ByteStream::from(body.clone()))
        .content_type("application/x-test")
        .metadata("owner", "ledger")
        .send()
        .await
        .unwrap();
    let etag = stored.e_tag().unwrap().to_string();
    assert!(etag.starts_with('"') && etag.len() == 34, "{etag}");

    let head = s3
        .head_object()
        .bucket(BUCKET)
        .key("dir/file.bin")
        .send()
        .await
        .unwrap();
    assert_eq!(head.content_length(), Some(10_000));
    assert_eq!(head.e_tag(), Some(etag.as_str()));
    assert_eq!(head.content_type(), Some("application/x-test"));
    assert_eq!(
        head.metadata().unwrap().get("owner").map(String::as_str),
        Some("ledger")
    );
    assert!(head.last_modified().is_some());

    assert_eq!(get(&s3, "dir/file.bin").await, body);
    let ranged = s3
        .get_object()
        .bucket(BUCKET)
        .key("dir/file.bin")
        .range("bytes=100-199")
        .if_match(&etag)
        .send()
        .await
        .unwrap();
    assert_eq!(ranged.content_range(), Some("bytes 100-199/10000"));
    assert_eq!(ranged.content_length(), Some(100));
    assert_eq!(ranged.e_tag(), Some(etag.as_str()));
    assert_eq!(
        ranged.body.collect().await.unwrap().into_bytes().as_ref(),
        &body[100..200]
    );

    let tail = s3
        .get_object()
        .bucket(BUCKET)
        .key("dir/file.bin")
        .range("bytes=9990-20000");
    let tail = tail
        .send()
        .await
        .unwrap()
        .body
        .collect()
        .await
        .unwrap()
        .into_bytes();
    assert_eq!(tail.as_ref(), &body[9990..]);

    let stale = s3
        .get_object()
        .bucket(BUCKET)
        .key("dir/file.bin")
        .if_match("\"0123456789abcdef0123456789abcdef\"")
        .send()
        .await
        .unwrap_err();
    assert_eq!(status(&stale), Some(412));
    let not_modified = s3
        .get_object()
        .bucket(BUCKET)
        .key("dir/file.bin")
        .if_none_match(&etag)
        .send()
        .await;
    assert_eq!(status(&not_modified.unwrap_err()), Some(304));
    let beyond = s3
        .get_object()
        .bucket(BUCKET)
        .key("dir/file.bin")
        .range("bytes=10000-")
        .send();
    assert_eq!(status(&beyond.await.unwrap_err()), Some(416));

    let empty = put(&s3, "empty", Vec::new()).await;
    assert_eq!(empty, "\"d41d8cd98f00b204e9800998ecf8427e\"");
    assert!(get(&s3, "empty").await.is_empty());
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_follow_s3_semantics() {
    let server = start(&[BUCKET]).await;
    let s3 = client(&server);
    put(&s3, "a", "file a").await;
    put(&s3, "a/b", "file a/b").await;
    put(&s3, "dir/", "").await;
    put(&s3, "deep/x/y", "y").await;
    assert_eq!(get(&s3, "a").await, b"file a");
    assert_eq!(get(&s3, "a/b").await, b"file a/b");
    assert!(get(&s3, "dir/").await.is_empty());

    for prefix_only in ["a/", "deep", "deep/", "deep/x", "dir"] {
        let error = s3
            .head_object()
            .bucket(BUCKET)
            .key(prefix_only)
            .send()
            .await
            .unwrap_err();
        assert_eq!(status(&error), Some(404), "HEAD {prefix_only}");
        assert!(error.into_service_error().is_not_found());
        let error = s3
            .get_object()
            .bucket(BUCKET)
            .key(prefix_only)
            .send()
            .await
            .unwrap_err();
        assert_eq!(
            error.into_service_error().code(),
            Some("NoSuchKey"),
            "GET {prefix_only}"
        );
    }

    let (keys, prefixes, _) = list_all(&s3, "", Some("/"), 1000).await;
    assert_eq!(keys, vec!["a"]);
    assert_eq!(prefixes, vec!["a/", "deep/", "dir/"]);
    let (keys, prefixes, _) = list_all(&s3, "dir/", Some("/"), 1000).await;
    assert_eq!((keys, prefixes), (vec!["dir/".to_string()], vec![]));

    let missing = s3
        .get_object()
        .bucket("no-such-bucket")
        .key("a")
        .send()
        .await
        .unwrap_err();
    assert_eq!(missing.into_service_error().code(), Some("NoSuchBucket"));
    let missing = s3
        .list_objects_v2()
        .bucket("no-such-bucket")
        .send()
        .await
        .unwrap_err();
    assert_eq!(missing.into_service_error().code(), Some("NoSuchBucket"));
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listings_page_without_repeats() {
    let server = start(&[BUCKET]).await;
    let s3 = client(&server);
    let store = server.bucket(BUCKET).unwrap();
    for key in [
        "a", "a/1", "a/2", "a/3/x", "b", "c/1", "c/2", "d", "e/", "e/f",
    ] {
        put(&s3, key, key).await;
    }
    let full = list_all(&s3, "", Some("/"), 1000).await;
    assert_eq!(full.0, vec!["a", "b", "d"]);
    assert_eq!(full.1, vec!["a/", "c/", "e/"]);
    for max_keys in [1, 2] {
        let paged = list_all(&s3, "", Some("/"), max_keys).await;
        assert_eq!(
            (&paged.0, &paged.1),
            (&full.0, &full.1),
            "max-keys {max_keys}"
        );
        assert_eq!(paged.2, 6usize.div_ceil(max_keys as usize));
        let flat = list_all(&s3, "a/", None, max_keys).await;
        assert_eq!(flat.0, vec!["a/1", "a/2", "a/3/x"]);
    }

    // More than one server page.
    for i in 0..1100 {
        store
            .put(
                &format!("many/{i:05}"),
                bytes::Bytes::new(),
                Default::default(),
            )
            .await
            .unwrap();
    }
    use scribefs::store::ObjectStore;
    let (keys, _, pages) = list_all(&s3, "many/", None, 1000).await;
    assert_eq!(pages, 2);
    assert_eq!(keys.len(), 1100);
    assert_eq!(keys.iter().collect::<BTreeSet<_>>().len(), 1100);

    let after = s3
        .list_objects_v2()
        .bucket(BUCKET)
        .start_after("c/1")
        .send()
        .await
        .unwrap();
    let keys: Vec<&str> = after
        .contents()
        .iter()
        .filter_map(|o| o.key())
        .take(3)
        .collect();
    assert_eq!(keys, vec!["c/2", "d", "e/"]);

    // ListObjects v1 pages with NextMarker, as s3fs does.
    let mut marker: Option<String> = None;
    let mut v1_keys = Vec::new();
    let mut v1_prefixes = Vec::new();
    loop {
        let page = s3
            .list_objects()
            .bucket(BUCKET)
            .delimiter("/")
            .max_keys(2)
            .set_marker(marker.take())
            .send()
            .await
            .unwrap();
        v1_keys.extend(page.contents().iter().map(|o| o.key().unwrap().to_string()));
        v1_prefixes.extend(
            page.common_prefixes()
                .iter()
                .map(|p| p.prefix().unwrap().to_string()),
        );
        if page.is_truncated() != Some(true) {
            break;
        }
        marker = page.next_marker().map(str::to_string);
        assert!(marker.is_some());
    }
    assert_eq!(v1_keys, vec!["a", "b", "d"]);
    assert_eq!(v1_prefixes, vec!["a/", "c/", "e/", "many/"]);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multipart_uploads_complete_abort_and_list() {
    let server = start(&[BUCKET]).await;
    let s3 = client(&server);
    let parts: Vec<Vec<u8>> = vec![vec![1u8; 5 * MIB], vec![2u8; 5 * MIB], vec![3u8; 1000]];
    let created = s3
        .create_multipart_upload()
        .bucket(BUCKET)
        .key("big.bin")
        .metadata("kind", "multipart")
        .send()
        .await
        .unwrap();
    let upload_id = created.upload_id().unwrap();
    let mut completed = Vec::new();
    for (i, part) in parts.iter().enumerate() {
        let number = i as i32 + 1;
        let uploaded = s3
            .upload_part()
            .bucket(BUCKET)
            .key("big.bin")
            .upload_id(upload_id)
            .part_number(number)
            .body(ByteStream::from(part.clone()))
            .send()
            .await
            .unwrap();
        completed.push(
            CompletedPart::builder()
                .part_number(number)
                .e_tag(uploaded.e_tag().unwrap())
                .build(),
        );
    }
    let listed = s3
        .list_multipart_uploads()
        .bucket(BUCKET)
        .send()
        .await
        .unwrap();
    assert_eq!(listed.uploads().len(), 1);
    assert_eq!(listed.uploads()[0].upload_id(), Some(upload_id));
    assert_eq!(listed.uploads()[0].key(), Some("big.bin"));

    let done = s3
        .complete_multipart_upload()
        .bucket(BUCKET)
        .key("big.bin")
        .upload_id(upload_id)
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .set_parts(Some(completed))
                .build(),
        )
        .send()
        .await
        .unwrap();
    assert!(
        done.e_tag().unwrap().ends_with("-3\""),
        "{:?}",
        done.e_tag()
    );
    assert_eq!(get(&s3, "big.bin").await, parts.concat());
    let head = s3
        .head_object()
        .bucket(BUCKET)
        .key("big.bin")
        .send()
        .await
        .unwrap();
    assert_eq!(
        head.metadata().unwrap().get("kind").map(String::as_str),
        Some("multipart")
    );
    assert_eq!(head.e_tag(), done.e_tag());

    // A small part before the last one is refused, and aborting leaves nothing behind.
    let small = s3
        .create_multipart_upload()
        .bucket(BUCKET)
        .key("small")
        .send()
        .await
        .unwrap();
    let small_id = small.upload_id().unwrap();
    let mut small_parts = Vec::new();
    for number in 1..=2 {
        let part = s3
            .upload_part()
            .bucket(BUCKET)
            .key("small")
            .upload_id(small_id)
            .part_number(number)
            .body(ByteStream::from(vec![0u8; 1000]))
            .send()
            .await
            .unwrap();
        small_parts.push(
            CompletedPart::builder()
                .part_number(number)
                .e_tag(part.e_tag().unwrap())
                .build(),
        );
    }
    let refused = s3
        .complete_multipart_upload()
        .bucket(BUCKET)
        .key("small")
        .upload_id(small_id)
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .set_parts(Some(small_parts))
                .build(),
        )
        .send()
        .await
        .unwrap_err();
    assert_eq!(refused.into_service_error().code(), Some("EntityTooSmall"));
    s3.abort_multipart_upload()
        .bucket(BUCKET)
        .key("small")
        .upload_id(small_id)
        .send()
        .await
        .unwrap();
    let listed = s3
        .list_multipart_uploads()
        .bucket(BUCKET)
        .send()
        .await
        .unwrap();
    assert!(listed.uploads().is_empty());
    assert_eq!(server.bucket(BUCKET).unwrap().pending_uploads(), 0);
    let gone = s3
        .abort_multipart_upload()
        .bucket(BUCKET)
        .key("small")
        .upload_id(small_id)
        .send();
    assert_eq!(
        gone.await.unwrap_err().into_service_error().code(),
        Some("NoSuchUpload")
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_and_delete() {
    let server = start(&[BUCKET, "other-bucket"]).await;
    let s3 = client(&server);
    s3.put_object()
        .bucket(BUCKET)
        .key("src")
        .body(ByteStream::from_static(b"source bytes"))
        .metadata("m", "1")
        .content_type("text/plain")
        .send()
        .await
        .unwrap();
    let copied = s3
        .copy_object()
        .bucket(BUCKET)
        .key("kept")
        .copy_source(format!("{BUCKET}/src"));
    let copied = copied.send().await.unwrap();
    assert!(copied.copy_object_result().unwrap().e_tag().is_some());
    let head = s3
        .head_object()
        .bucket(BUCKET)
        .key("kept")
        .send()
        .await
        .unwrap();
    assert_eq!(
        head.metadata().unwrap().get("m").map(String::as_str),
        Some("1")
    );
    assert_eq!(head.content_type(), Some("text/plain"));

    s3.copy_object()
        .bucket("other-bucket")
        .key("odd key/é+%")
        .copy_source(format!("{BUCKET}/src"))
        .metadata_directive(MetadataDirective::Replace)
        .metadata("m", "2")
        .send()
        .await
        .unwrap();
    let head = s3
        .head_object()
        .bucket("other-bucket")
        .key("odd key/é+%")
        .send()
        .await
        .unwrap();
    assert_eq!(
        head.metadata().unwrap().get("m").map(String::as_str),
        Some("2")
    );
    let other = s3
        .get_object()
        .bucket("other-bucket")
        .key("odd key/é+%")
        .send()
        .await
        .unwrap();
    assert_eq!(
        other.body.collect().await.unwrap().into_bytes().as_ref(),
        b"source bytes"
    );

    let onto_itself = s3
        .copy_object()
        .bucket(BUCKET)
        .key("src")
        .copy_source(format!("{BUCKET}/src"));
    assert_eq!(status(&onto_itself.send().await.unwrap_err()), Some(400));
    let missing = s3
        .copy_object()
        .bucket(BUCKET)
        .key("x")
        .copy_source(format!("{BUCKET}/nope"));
    assert_eq!(
        missing
            .send()
            .await
            .unwrap_err()
            .into_service_error()
            .code(),
        Some("NoSuchKey")
    );

    s3.delete_object()
        .bucket(BUCKET)
        .key("kept")
        .send()
        .await
        .unwrap();
    s3.delete_object()
        .bucket(BUCKET)
        .key("never-existed")
        .send()
        .await
        .unwrap();
    assert_eq!(
        status(
            &s3.head_object()
                .bucket(BUCKET)
                .key("kept")
                .send()
                .await
                .unwrap_err()
        ),
        Some(404)
    );

    for key in ["d/1", "d/2", "d/3"] {
        put(&s3, key, key).await;
    }
    let objects: Vec<ObjectIdentifier> = ["d/1", "d/2", "d/missing"]
        .iter()
        .map(|k| ObjectIdentifier::builder().key(*k).build().unwrap())
        .collect();
    let deleted = s3
        .delete_objects()
        .bucket(BUCKET)
        .delete(
            Delete::builder()
                .set_objects(Some(objects))
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.deleted().len(), 3);
    assert!(deleted.errors().is_empty());
    assert_eq!(server.bucket(BUCKET).unwrap().keys(), vec!["d/3", "src"]);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buckets_and_credentials() {
    let server = start(&[BUCKET]).await;
    let s3 = client(&server);
    s3.head_bucket().bucket(BUCKET).send().await.unwrap();
    let missing = s3
        .head_bucket()
        .bucket("missing-bucket")
        .send()
        .await
        .unwrap_err();
    assert_eq!(status(&missing), Some(404));
    s3.get_bucket_location()
        .bucket(BUCKET)
        .send()
        .await
        .unwrap();
    s3.create_bucket()
        .bucket("made-by-sdk")
        .send()
        .await
        .unwrap();
    let again = s3
        .create_bucket()
        .bucket("made-by-sdk")
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        again.into_service_error().code(),
        Some("BucketAlreadyOwnedByYou")
    );
    server.create_bucket("made-in-process");
    let names: Vec<String> = s3
        .list_buckets()
        .send()
        .await
        .unwrap()
        .buckets()
        .iter()
        .map(|b| b.name().unwrap().to_string())
        .collect();
    assert_eq!(names, vec!["made-by-sdk", "made-in-process", BUCKET]);
    put(&s3, "x", "x").await;
    let not_empty = s3.delete_bucket().bucket(BUCKET).send().await.unwrap_err();
    assert_eq!(
        not_empty.into_service_error().code(),
        Some("BucketNotEmpty")
    );
    s3.delete_bucket()
        .bucket("made-by-sdk")
        .send()
        .await
        .unwrap();

    let intruder = client_with(&server.endpoint(), "devkey", "wrong-secret");
    let refused = intruder
        .get_object()
        .bucket(BUCKET)
        .key("x")
        .send()
        .await
        .unwrap_err();
    assert_eq!(status(&refused), Some(403));
    let stranger = client_with(&server.endpoint(), "nobody", "devsecret");
    assert_eq!(
        status(
            &stranger
                .head_bucket()
                .bucket(BUCKET)
                .send()
                .await
                .unwrap_err()
        ),
        Some(403)
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_are_counted_by_operation_and_reset() {
    let server = start(&[BUCKET]).await;
    let s3 = client(&server);
    put(&s3, "k", "v").await;
    get(&s3, "k").await;
    s3.get_object()
        .bucket(BUCKET)
        .key("k")
        .range("bytes=0-0")
        .send()
        .await
        .unwrap();
    s3.head_object()
        .bucket(BUCKET)
        .key("k")
        .send()
        .await
        .unwrap();
    s3.head_object()
        .bucket(BUCKET)
        .key("absent")
        .send()
        .await
        .unwrap_err();
    s3.head_bucket().bucket(BUCKET).send().await.unwrap();
    s3.list_objects_v2().bucket(BUCKET).send().await.unwrap();
    s3.list_objects().bucket(BUCKET).send().await.unwrap();
    s3.copy_object()
        .bucket(BUCKET)
        .key("k2")
        .copy_source(format!("{BUCKET}/k"))
        .send()
        .await
        .unwrap();
    s3.delete_object()
        .bucket(BUCKET)
        .key("k2")
        .send()
        .await
        .unwrap();
    let upload = s3
        .create_multipart_upload()
        .bucket(BUCKET)
        .key("m")
        .send()
        .await
        .unwrap();
    s3.abort_multipart_upload()
        .bucket(BUCKET)
        .key("m")
        .upload_id(upload.upload_id().unwrap())
        .send()
        .await
        .unwrap();
    s3.list_multipart_uploads()
        .bucket(BUCKET)
        .send()
        .await
        .unwrap();
    s3.get_bucket_location()
        .bucket(BUCKET)
        .send()
        .await
        .unwrap();
    s3.list_buckets().send().await.unwrap();

    let expected = RequestStats {
        head: 2,
        head_bucket: 1,
        get: 2,
        put: 1,
        list: 2,
        multipart: 3,
        copy: 1,
        delete: 1,
        other: 2,
    };
    assert_eq!(server.stats(), expected);
    assert_eq!(expected.total(), 15);

    // Over HTTP: control requests are neither authenticated nor counted.
    let addr = server.local_addr();
    let over_http = tokio::task::spawn_blocking(move || request_stats(addr, false))
        .await
        .unwrap();
    assert_eq!(over_http.unwrap(), expected);
    let cleared = tokio::task::spawn_blocking(move || request_stats(addr, true))
        .await
        .unwrap();
    assert_eq!(cleared.unwrap(), expected);
    assert_eq!(server.stats(), RequestStats::default());
    let raw = tokio::task::spawn_blocking(move || control::control_request(addr, false));
    let raw = String::from_utf8(raw.await.unwrap().unwrap()).unwrap();
    assert!(raw.starts_with("{\"head\":0,"), "{raw}");

    get(&s3, "k").await;
    assert_eq!(
        server.stats(),
        RequestStats {
            get: 1,
            ..Default::default()
        }
    );
    server.reset_stats();
    assert_eq!(server.stats().total(), 0);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_survives_a_restart_with_a_root() {
    let root = tempfile::tempdir().unwrap();
    let config = DevServerConfig {
        root: Some(root.path().to_path_buf()),
        ..DevServerConfig::for_tests(&[BUCKET])
    };
    let server = DevServer::start(config.clone()).await.unwrap();
    let s3 = client(&server);
    s3.put_object()
        .bucket(BUCKET)
        .key("a")
        .body(ByteStream::from_static(b"alpha"))
        .metadata("m", "v")
        .content_type("text/plain")
        .send()
        .await
        .unwrap();
    put(&s3, "a/b", "nested").await;
    put(&s3, "dir/", "").await;
    put(&s3, "gone", "soon deleted").await;
    s3.copy_object()
        .bucket(BUCKET)
        .key("copy")
        .copy_source(format!("{BUCKET}/a"))
        .send()
        .await
        .unwrap();
    s3.delete_object()
        .bucket(BUCKET)
        .key("gone")
        .send()
        .await
        .unwrap();
    put(&s3, "overwritten", "first").await;
    put(&s3, "overwritten", "second").await;
    s3.create_bucket()
        .bucket("later-bucket")
        .send()
        .await
        .unwrap();
    let before = s3
        .head_object()
        .bucket(BUCKET)
        .key("a")
        .send()
        .await
        .unwrap();
    server.shutdown().await;

    let server = DevServer::start(config).await.unwrap();
    let s3 = client(&server);
    let after = s3
        .head_object()
        .bucket(BUCKET)
        .key("a")
        .send()
        .await
        .unwrap();
    assert_eq!(after.e_tag(), before.e_tag());
    assert_eq!(after.last_modified(), before.last_modified());
    assert_eq!(after.metadata(), before.metadata());
    assert_eq!(after.content_type(), Some("text/plain"));
    assert_eq!(
        server.bucket(BUCKET).unwrap().keys(),
        vec!["a", "a/b", "copy", "dir/", "overwritten"]
    );
    assert_eq!(get(&s3, "overwritten").await, b"second");
    assert_eq!(get(&s3, "a/b").await, b"nested");
    s3.head_bucket()
        .bucket("later-bucket")
        .send()
        .await
        .unwrap();
    server.shutdown().await;
}

/// What one failed request looked like to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Seen {
    Status(u16),
    NoResponse,
    BodyCut,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_rate_one_breaks_every_request_in_every_way() {
    let server = start(&[BUCKET]).await;
    let s3 = client(&server);
    put(&s3, "k", vec![9u8; 256 * 1024]).await;
    server.set_fail_rate(1.0);
    server.reset_stats();
    let mut seen = BTreeSet::new();
    for _ in 0..60 {
        let outcome = match s3.get_object().bucket(BUCKET).key("k").send().await {
            Ok(output) => {
                assert!(output.body.collect().await.is_err(), "a body arrived whole");
                Seen::BodyCut
            }
            Err(error) => match status(&error) {
                Some(code) => {
                    let code_name = error.code().map(str::to_string);
                    let expected = if code == 500 {
                        "InternalError"
                    } else {
                        "SlowDown"
                    };
                    assert_eq!(code_name.as_deref(), Some(expected));
                    Seen::Status(code)
                }
                None => Seen::NoResponse,
            },
        };
        seen.insert(outcome);
    }
    let all = BTreeSet::from([
        Seen::Status(500),
        Seen::Status(503),
        Seen::NoResponse,
        Seen::BodyCut,
    ]);
    assert_eq!(seen, all);
    for _ in 0..10 {
        let error = s3
            .head_object()
            .bucket(BUCKET)
            .key("k")
            .send()
            .await
            .unwrap_err();
        assert!(
            matches!(status(&error), None | Some(500) | Some(503)),
            "{error:?}"
        );
    }
    assert_eq!(
        server.stats(),
        RequestStats {
            get: 60,
            head: 10,
            ..Default::default()
        }
    );

    server.set_fail_rate(0.0);
    assert_eq!(get(&s3, "k").await.len(), 256 * 1024);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_and_bandwidth_emulation_keep_data_intact() {
    let config = DevServerConfig {
        latency: Duration::from_millis(5),
        bandwidth_bytes_per_sec: Some(64 * 1024 * 1024),
        ..DevServerConfig::for_tests(&[BUCKET])
    };
    let server = DevServer::start(config).await.unwrap();
    let s3 = client(&server);
    let body: Vec<u8> = (0..MIB as u32).map(|i| (i * 7) as u8).collect();
    put(&s3, "paced", body.clone()).await;
    assert_eq!(get(&s3, "paced").await, body);
    server.set_latency(Duration::from_millis(20));
    let ranged = s3
        .get_object()
        .bucket(BUCKET)
        .key("paced")
        .range("bytes=1000-1999")
        .send();
    let ranged = ranged
        .await
        .unwrap()
        .body
        .collect()
        .await
        .unwrap()
        .into_bytes();
    assert_eq!(ranged.as_ref(), &body[1000..2000]);
    server.set_latency(Duration::ZERO);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeding_puts_segments_with_sidecars_once() {
    let root = tempfile::tempdir().unwrap();
    let config = DevServerConfig {
        root: Some(root.path().to_path_buf()),
        seed_segments: 5,
        ..DevServerConfig::for_tests(&[BUCKET, "second-bucket"])
    };
    let server = DevServer::start(config.clone()).await.unwrap();
    let s3 = client(&server);
    for bucket in [BUCKET, "second-bucket"] {
        let keys = server.bucket(bucket).unwrap().keys();
        assert_eq!(keys.len(), 10, "{bucket}: {keys:?}");
        let ids: Vec<u64> = keys.iter().filter_map(|k| parse_segment_key(k)).collect();
        assert_eq!(ids.len(), 5);
        for id in ids {
            assert!(keys.contains(&meta_key(id)));
        }
    }
    let (keys, _, _) = list_all(&s3, "segments/", Some("/"), 1000).await;
    let first_meta = keys.iter().find(|k| k.ends_with(".meta.json")).unwrap();
    let sidecar: serde_json::Value = serde_json::from_slice(&get(&s3, first_meta).await).unwrap();
    assert!(sidecar.get("segment_id").is_some());
    // A seeded bucket is not seeded again: a deleted segment stays deleted.
    let first_data = keys.iter().find(|k| k.ends_with(".bin")).unwrap().clone();
    s3.delete_object()
        .bucket(BUCKET)
        .key(&first_data)
        .send()
        .await
        .unwrap();
    server.shutdown().await;

    let server = DevServer::start(config).await.unwrap();
    assert_eq!(server.bucket(BUCKET).unwrap().keys().len(), 9);
    assert!(!server.bucket(BUCKET).unwrap().keys().contains(&first_data));
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeded_objects_list_in_full_over_http_in_each_shape() {
    let config = DevServerConfig {
        seed_objects: vec![
            SeedShape::Segments { count: 1001 },
            SeedShape::Tree {
                dirs: 20,
                per_dir: 50,
            },
            SeedShape::Flat { count: 2500 },
        ],
        ..DevServerConfig::for_tests(&[BUCKET])
    };
    let server = DevServer::start(config).await.unwrap();
    let s3 = client(&server);

    let (segments, _, pages) = list_all(&s3, "segments/", Some("/"), 1000).await;
    assert_eq!((segments.len(), pages), (2002, 3));
    assert_eq!(segments[0], segment_key(0));
    assert_eq!(segments[2001], meta_key(1000));
    let id = 0x3e8;
    let body = get(&s3, &segment_key(id)).await;
    let sidecar = get(&s3, &meta_key(id)).await;
    assert!(decode_checked(id, &body, Some(&sidecar)).is_ok());

    let (files, dirs, _) = list_all(&s3, "tree/", Some("/"), 1000).await;
    assert!(files.is_empty());
    assert_eq!(dirs.len(), 20);
    assert_eq!(
        (dirs[0].as_str(), dirs[19].as_str()),
        ("tree/d0000/", "tree/d0019/")
    );
    let (last_dir, _, _) = list_all(&s3, "tree/d0019/", Some("/"), 1000).await;
    assert_eq!(last_dir.len(), 50);
    assert_eq!(last_dir[0], "tree/d0019/f000950");
    let (whole_tree, _, _) = list_all(&s3, "tree/", None, 1000).await;
    assert_eq!(whole_tree.len(), 1000);

    let (flat, _, _) = list_all(&s3, "flat/", Some("/"), 1000).await;
    assert_eq!(flat.len(), 2500);
    assert_eq!(flat[2499], "flat/f0002499");
    assert_eq!(get(&s3, "flat/f0001234").await, SEEDED_BODY);
    // Seeding puts objects in place: no request was counted for it.
    assert_eq!(server.stats().put, 0);

    // Seeding again keeps what is there: an overwritten key keeps its new body.
    put(&s3, "flat/f0000000", "changed").await;
    let added = server
        .seed_objects(BUCKET, SeedShape::Flat { count: 2501 })
        .unwrap();
    assert_eq!(added, 1);
    assert_eq!(get(&s3, "flat/f0000000").await, b"changed");
    server.shutdown().await;
}

/// Above the 300,000 entries where scribefs's listings once stopped: the size FUSE tests seed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seeded_directory_of_300_001_entries_lists_every_key() {
    let server = start(&[BUCKET]).await;
    let shape = SeedShape::Flat { count: 300_001 };
    let added = tokio::task::block_in_place(|| server.seed_objects(BUCKET, shape)).unwrap();
    assert_eq!(added, 300_001);
    let (keys, _, pages) = list_all(&client(&server), "flat/", Some("/"), 1000).await;
    assert_eq!((keys.len(), pages), (300_001, 301));
    assert!(keys.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(server.stats().list, 301);
    server.shutdown().await;
}

#[test]
fn binary_seeds_objects_in_memory_only() {
    let root = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_scribefs-devserver"))
        .args(["--root", root.path().to_str().unwrap()])
        .args(["--listen", "127.0.0.1:0", "--bucket", "big"])
        .args([
            "--seed-objects",
            "segments:600",
            "--seed-objects",
            "tree:3x4",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let endpoint = line
        .split_whitespace()
        .find(|word| word.starts_with("http://"))
        .unwrap_or_else(|| panic!("unexpected ready line {line:?}"))
        .to_string();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (segments, tree) = runtime.block_on(async {
        let s3 = client_with(&endpoint, "devkey", "devsecret");
        let count = |prefix: &'static str| {
            let s3 = s3.clone();
            async move {
                s3.list_objects_v2()
                    .bucket("big")
                    .prefix(prefix)
                    .send()
                    .await
                    .unwrap()
                    .key_count()
            }
        };
        (count("segments/").await, count("tree/").await)
    });
    assert_eq!((segments, tree), (Some(1000), Some(12)));
    // Nothing but the bucket's folder: seeded objects are not files under --root.
    let files = walk(root.path());
    assert!(files.is_empty(), "{files:?}");
    child.kill().unwrap();
    child.wait().unwrap();

    let bad = Command::new(env!("CARGO_BIN_EXE_scribefs-devserver"))
        .args(["--seed-objects", "cube:3"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    let message = String::from_utf8_lossy(&bad.stderr);
    assert!(
        message.contains("segments:N, tree:DIRSxFILES or flat:N"),
        "{message}"
    );
}

/// Every file (not folder) under `dir`.
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}

#[test]
fn binary_prints_ready_serves_stats_and_exits_on_sigterm() {
    let root = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_scribefs-devserver"))
        .args([
            "--root",
            root.path().to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ])
        .args([
            "--bucket",
            "demo",
            "--bucket",
            "more",
            "--seed-segments",
            "2",
        ])
        .args([
            "--latency-ms",
            "1",
            "--bandwidth-mbps",
            "800",
            "--fail-rate",
            "0",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let endpoint = line
        .strip_prefix("scribefs-devserver ready on ")
        .and_then(|rest| rest.split_once(' '))
        .map(|(endpoint, buckets)| {
            assert_eq!(buckets.trim(), "(buckets: demo, more)");
            endpoint.to_string()
        })
        .unwrap_or_else(|| panic!("unexpected ready line {line:?}"));
    let addr = endpoint.strip_prefix("http://").unwrap().parse().unwrap();

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let s3 = client_with(&endpoint, "devkey", "devsecret");
        let listed = s3
            .list_objects_v2()
            .bucket("demo")
            .prefix("segments/")
            .send()
            .await
            .unwrap();
        assert_eq!(listed.key_count(), Some(4));
    });
    assert_eq!(
        request_stats(addr, false).unwrap(),
        RequestStats {
            list: 1,
            ..Default::default()
        }
    );
    let stats = Command::new(env!("CARGO_BIN_EXE_scribefs-devserver"))
        .args(["stats", "--listen", &addr.to_string()])
        .output()
        .unwrap();
    assert!(stats.status.success());
    let printed: RequestStats = serde_json::from_slice(&stats.stdout).unwrap();
    assert_eq!(printed.list, 1);

    // SAFETY: kill(2) on the pid of the child this test spawned.
    assert_eq!(
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) },
        0
    );
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    assert!(root.path().join("demo").is_dir());
}

#[test]
fn binary_rejects_bad_flags_in_one_line() {
    for args in [
        &["--fail-rate", "1.5"][..],
        &["--no-such-flag"],
        &["--listen", "nowhere"],
    ] {
        let output = Command::new(env!("CARGO_BIN_EXE_scribefs-devserver"))
            .args(args)
            .output()
            .unwrap();
        assert!(!output.status.success(), "{args:?}");
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert_eq!(stderr.trim_end().lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.starts_with("error:"), "{stderr}");
    }
}
