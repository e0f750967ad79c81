//! One suite of store and segment cases, run against both S3 servers: every case in [`cases`]
//! becomes `devserver::<case>` (a dev server of its own) and `moto::<case>` (a fresh bucket on
//! the shared moto server). The store is what the `scribefs` binary uses: S3Store inside
//! Retrying, built by `scribefs::cli::connect`. Cases that need the dev server's fault
//! injection or request counters live apart, in [`devserver_only`].

mod common;

/// Generates one test per case and backend. Each test gets its own bucket.
macro_rules! for_each_backend {
    ($($case:ident),* $(,)?) => {
        mod devserver {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let backend = crate::common::backend::Backend::devserver().await;
                    crate::cases::$case(&backend).await;
                }
            )*
        }

        mod moto {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let backend = crate::common::backend::Backend::moto(stringify!($case)).await;
                    crate::cases::$case(&backend).await;
                }
            )*
        }
    };
}

for_each_backend!(
    segment_put_get,
    segment_missing_is_none,
    segment_delete_removes_sidecar,
    segment_list_ascending_ignores_strays,
    health_check_ok_and_missing_bucket_named,
    segment_five_megabytes_byte_for_byte,
    config_validation_names_bucket,
    head_ranged_get_and_if_match,
    user_metadata_round_trip,
    copy_keeps_or_replaces_metadata,
    multipart_five_mib_parts,
    multipart_abort_leaves_no_pending_uploads,
    thousands_of_keys_span_pages,
    delimiter_listing_keeps_a_ab_and_dir_apart,
    exclusive_creates_refuse_an_existing_key,
    every_upload_checksum_mode_stores_whole_objects,
    lean_head_answers_as_the_sdk_does,
    lean_get_answers_as_the_sdk_does,
);

/// Bytes where a read from the wrong offset shows: a ramp of prime period.
fn pattern(len: usize, seed: u8) -> bytes::Bytes {
    (0..len)
        .map(|i| ((i % 251) as u8).wrapping_add(seed))
        .collect::<Vec<u8>>()
        .into()
}

fn random_bytes(len: usize, seed: u64) -> bytes::Bytes {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut data = vec![0u8; len];
    rng.fill(&mut data);
    data.into()
}

mod cases {
    use std::collections::BTreeMap;

    use bytes::Bytes;
    use futures::{StreamExt, TryStreamExt};
    use scribefs::segment::{SegmentStore, meta_key, segment_key};
    use scribefs::store::CopyMetadata;
    use scribefs::store::config::S3Config;
    use scribefs::store::{
        GetRequest, ListRequest, ObjectStore, PutOptions, StoreError, get_bytes, list_all,
    };

    use super::common::backend::Backend;
    use super::{pattern, random_bytes};

    const MIB: usize = 1024 * 1024;

    fn metadata(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    async fn put(store: &dyn ObjectStore, key: &str, body: Bytes) -> String {
        store
            .put(key, body, PutOptions::default())
            .await
            .unwrap()
            .etag
    }

    async fn get_error(store: &dyn ObjectStore, request: GetRequest) -> StoreError {
        match store.get(request).await {
            Ok(output) => panic!("GET {:?} succeeded", output.meta.key),
            Err(err) => err,
        }
    }

    pub async fn segment_put_get(backend: &Backend) {
        let segments = backend.segments();
        let archived = scribefs::segment::codec::demo_segments(3, 7).unwrap();
        for segment in &archived {
            segments
                .put_segment(segment.id, Bytes::from(segment.body.clone()))
                .await
                .unwrap();
            segments
                .put_metadata(segment.id, Bytes::from(segment.metadata_json()))
                .await
                .unwrap();
        }
        for segment in &archived {
            let body = segments.get_segment(segment.id).await.unwrap().unwrap();
            assert_eq!(body, segment.body);
            let json = segments.get_metadata(segment.id).await.unwrap().unwrap();
            assert_eq!(json, segment.metadata_json());
        }
        // The objects sit under the ledger's key names.
        let head = backend.store.head(&segment_key(archived[0].id)).await;
        assert_eq!(head.unwrap().size, archived[0].body.len() as u64);
        assert!(backend.store.head(&meta_key(archived[0].id)).await.is_ok());
        // Putting again replaces.
        segments
            .put_segment(archived[0].id, Bytes::from_static(b"v2"))
            .await
            .unwrap();
        let replaced = segments.get_segment(archived[0].id).await.unwrap();
        assert_eq!(replaced.as_deref(), Some(&b"v2"[..]));
        // An empty segment is a segment.
        segments.put_segment(1, Bytes::new()).await.unwrap();
        assert_eq!(segments.get_segment(1).await.unwrap(), Some(Bytes::new()));
    }

    pub async fn segment_missing_is_none(backend: &Backend) {
        let segments = backend.segments();
        assert_eq!(segments.get_segment(0x2a).await.unwrap(), None);
        assert_eq!(segments.get_metadata(0x2a).await.unwrap(), None);
        // A sidecar alone does not make a segment, nor a segment a sidecar.
        segments
            .put_metadata(0x2a, Bytes::from_static(b"{}"))
            .await
            .unwrap();
        segments
            .put_segment(0x2b, Bytes::from_static(b"x"))
            .await
            .unwrap();
        assert_eq!(segments.get_segment(0x2a).await.unwrap(), None);
        assert_eq!(segments.get_metadata(0x2b).await.unwrap(), None);
    }

    pub async fn segment_delete_removes_sidecar(backend: &Backend) {
        let segments = backend.segments();
        for id in [5, 6] {
            segments
                .put_segment(id, pattern(1000, id as u8))
                .await
                .unwrap();
            segments
                .put_metadata(id, Bytes::from_static(b"{\"segment_id\":5}"))
                .await
                .unwrap();
        }
        segments.delete_segment(5).await.unwrap();
        assert_eq!(segments.get_segment(5).await.unwrap(), None);
        assert_eq!(segments.get_metadata(5).await.unwrap(), None);
        for key in [segment_key(5), meta_key(5)] {
            let err = backend.store.head(&key).await.unwrap_err();
            assert!(err.is_not_found(), "{key}: {err:?}");
        }
        // The neighbour is untouched, and deleting again (or something never there) succeeds.
        assert_eq!(
            segments.get_segment(6).await.unwrap(),
            Some(pattern(1000, 6))
        );
        segments.delete_segment(5).await.unwrap();
        segments.delete_segment(0xdead).await.unwrap();
        assert_eq!(segments.list_segments().await.unwrap(), vec![6]);
    }

    pub async fn segment_list_ascending_ignores_strays(backend: &Backend) {
        let segments = backend.segments();
        assert_eq!(segments.list_segments().await.unwrap(), Vec::<u64>::new());
        for id in [0x1_0000_0000, 300, 7, u64::MAX, 0] {
            segments
                .put_segment(id, Bytes::from(format!("segment {id}")))
                .await
                .unwrap();
            segments
                .put_metadata(id, Bytes::from_static(b"{}"))
                .await
                .unwrap();
        }
        // Other writers may use other hex lengths and upper case; the ledger parses them all.
        let odd = [
            ("segments/segment-ABC.bin", 0xabc),
            ("segments/segment-5.bin", 5),
            ("segments/segment-00000000000000Ff.bin", 0xff),
            // The same id as a 16-digit key already present: listed once.
            ("segments/segment-12C.bin", 300),
        ];
        for (key, _) in odd {
            put(backend.store.as_ref(), key, Bytes::from_static(b"odd")).await;
        }
        let strays = [
            "segments/notes.txt",
            "segments/segment-.bin",
            "segments/segment-xyz.bin",
            "segments/segment-2a.bin.tmp",
            "segments/segment-1ffffffffffffffff.bin",
            "segments/segment-000000000000abcd.meta.json",
            "segments/sub/segment-0000000000000009.bin",
            "other/segment-0000000000000001.bin",
            "segment-0000000000000002.bin",
        ];
        for key in strays {
            put(backend.store.as_ref(), key, Bytes::from_static(b"stray")).await;
        }
        let ids = segments.list_segments().await.unwrap();
        assert_eq!(ids, [0, 5, 7, 0xff, 300, 0xabc, 0x1_0000_0000, u64::MAX]);
        // The odd keys read back under their own names.
        let body = get_bytes(backend.store.as_ref(), "segments/segment-ABC.bin", None).await;
        assert_eq!(body.unwrap(), Bytes::from_static(b"odd"));
    }

    pub async fn health_check_ok_and_missing_bucket_named(backend: &Backend) {
        backend.segments().health_check().await.unwrap();
        let missing = "no-such-bucket-anywhere";
        let store = backend
            .connect_with(|config| config.bucket = missing.into())
            .await;
        let err = SegmentStore::new(store).health_check().await.unwrap_err();
        assert!(
            matches!(err.root(), StoreError::NoSuchBucket(b) if b == missing),
            "{err:?}"
        );
        assert!(err.to_string().contains(missing), "{err}");
    }

    pub async fn segment_five_megabytes_byte_for_byte(backend: &Backend) {
        let segments = backend.segments();
        let data = random_bytes(5_000_000, 5);
        segments.put_segment(0x5eed, data.clone()).await.unwrap();
        let back = segments.get_segment(0x5eed).await.unwrap().unwrap();
        assert_eq!(back.len(), data.len());
        assert!(back == data, "the 5 MB segment came back different");
        let head = backend.store.head(&segment_key(0x5eed)).await.unwrap();
        assert_eq!(head.size, 5_000_000);
    }

    pub async fn config_validation_names_bucket(backend: &Backend) {
        let empty = S3Config {
            bucket: String::new(),
            ..backend.config.clone()
        };
        let err = match scribefs::cli::connect(&empty).await {
            Ok(_) => panic!("connected without a bucket"),
            Err(err) => err,
        };
        assert!(err.to_string().contains("bucket"), "{err}");
        let blank = S3Config {
            bucket: "  ".into(),
            ..backend.config.clone()
        };
        let err = scribefs::store::s3::S3Store::new(&blank).await.unwrap_err();
        assert!(matches!(err, StoreError::Config(ref m) if m.contains("bucket")));
        let bad_endpoint = S3Config {
            endpoint: Some("127.0.0.1:9000".into()),
            ..backend.config.clone()
        };
        let err = scribefs::store::s3::S3Store::new(&bad_endpoint)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("endpoint"), "{err}");
        // The real settings pass.
        assert!(backend.config.validate().is_ok());
    }

    pub async fn head_ranged_get_and_if_match(backend: &Backend) {
        let store = backend.store.as_ref();
        let data = pattern(1000, 3);
        let etag = put(store, "obj", data.clone()).await;
        let head = store.head("obj").await.unwrap();
        assert_eq!((head.key.as_str(), head.size), ("obj", 1000));
        assert_eq!(head.etag, etag);
        assert!(head.etag.starts_with('"') && head.etag.ends_with('"'));

        let ranged = store
            .get(GetRequest {
                range: Some(100..200),
                ..GetRequest::whole("obj")
            })
            .await
            .unwrap();
        assert_eq!((ranged.range.clone(), ranged.meta.size), (100..200, 1000));
        assert_eq!(ranged.meta.etag, etag);
        assert_eq!(ranged.collect().await.unwrap(), data.slice(100..200));
        let clipped = get_bytes(store, "obj", Some(900..5000)).await.unwrap();
        assert_eq!(clipped, data.slice(900..));
        let last = get_bytes(store, "obj", Some(999..1000)).await.unwrap();
        assert_eq!(last, data.slice(999..));

        let matching = GetRequest {
            if_match: Some(etag.clone()),
            range: Some(0..10),
            ..GetRequest::whole("obj")
        };
        let body = store.get(matching).await.unwrap().collect().await.unwrap();
        assert_eq!(body, data.slice(0..10));
        let stale = GetRequest {
            if_match: Some("\"00000000000000000000000000000000\"".into()),
            ..GetRequest::whole("obj")
        };
        let err = get_error(store, stale).await;
        assert!(matches!(err, StoreError::PreconditionFailed(_)), "{err:?}");

        // After another writer replaces the object, the old ETag no longer matches.
        let new_etag = put(store, "obj", pattern(1000, 4)).await;
        assert_ne!(new_etag, etag);
        let outdated = GetRequest {
            if_match: Some(etag),
            range: Some(0..10),
            ..GetRequest::whole("obj")
        };
        let err = get_error(store, outdated).await;
        assert!(matches!(err, StoreError::PreconditionFailed(_)), "{err:?}");
        assert!(store.head("ob").await.unwrap_err().is_not_found());
        assert!(
            get_error(store, GetRequest::whole("nope"))
                .await
                .is_not_found()
        );
    }

    pub async fn user_metadata_round_trip(backend: &Backend) {
        let store = backend.store.as_ref();
        let meta = metadata(&[
            ("mode", "33188"),
            ("uid", "1000"),
            ("ledger-segment", "000000000000002a"),
        ]);
        let options = PutOptions {
            metadata: meta.clone(),
            content_type: Some("application/octet-stream".into()),
            ..Default::default()
        };
        store
            .put("with-meta", Bytes::from_static(b"payload"), options)
            .await
            .unwrap();
        assert_eq!(store.head("with-meta").await.unwrap().metadata, meta);
        let output = store.get(GetRequest::whole("with-meta")).await.unwrap();
        assert_eq!(output.meta.metadata, meta);
        assert_eq!(output.collect().await.unwrap(), &b"payload"[..]);
        // A later put without metadata leaves none behind.
        put(store, "with-meta", Bytes::from_static(b"bare")).await;
        assert!(store.head("with-meta").await.unwrap().metadata.is_empty());
    }

    pub async fn copy_keeps_or_replaces_metadata(backend: &Backend) {
        let store = backend.store.as_ref();
        let data = pattern(70_000, 9);
        let options = PutOptions {
            metadata: metadata(&[("a", "1")]),
            content_type: Some("text/plain".into()),
            ..Default::default()
        };
        store.put("src", data.clone(), options).await.unwrap();

        let kept = store
            .copy("src", "dst/kept", CopyMetadata::Keep)
            .await
            .unwrap();
        let head = store.head("dst/kept").await.unwrap();
        assert_eq!(head.etag, kept.etag);
        assert_eq!(head.metadata, metadata(&[("a", "1")]));
        assert_eq!(get_bytes(store, "dst/kept", None).await.unwrap(), data);

        let replaced = metadata(&[("b", "2")]);
        store
            .copy(
                "src",
                "dst/replaced",
                CopyMetadata::Replace(replaced.clone()),
            )
            .await
            .unwrap();
        assert_eq!(store.head("dst/replaced").await.unwrap().metadata, replaced);
        assert_eq!(get_bytes(store, "dst/replaced", None).await.unwrap(), data);
        // The source is unchanged, and copying a missing key is NotFound.
        assert_eq!(
            store.head("src").await.unwrap().metadata,
            metadata(&[("a", "1")])
        );
        let err = store
            .copy("missing", "dst/x", CopyMetadata::Keep)
            .await
            .unwrap_err();
        assert!(err.is_not_found(), "{err:?}");
        assert!(store.head("dst/x").await.unwrap_err().is_not_found());
    }

    /// `If-None-Match: *` on PutObject and CompleteMultipartUpload: the second create of a key
    /// fails with PreconditionFailed and the first one's bytes stay.
    /// Each `--upload-checksums` mode writes objects that read back whole, small and multipart.
    /// With CRC32C the server keeps the CRCs sent: the PUT's, and for the multipart upload
    /// (declared FULL_OBJECT) the whole object's, combined from the parts' by the client.
    pub async fn every_upload_checksum_mode_stores_whole_objects(backend: &Backend) {
        use scribefs::store::checksum::{crc32c, crc32c_header};
        use scribefs::store::config::UploadChecksums;
        for mode in [
            UploadChecksums::Crc32c,
            UploadChecksums::Md5,
            UploadChecksums::Off,
        ] {
            backend.reset_stats();
            let store = backend
                .connect_with(|config| config.upload_checksums = mode)
                .await;
            let small = random_bytes(100_000, 7);
            let big = random_bytes(11 * MIB, 8);
            let (small_key, big_key) = (format!("{mode:?}/small"), format!("{mode:?}/big"));
            put(store.as_ref(), &small_key, small.clone()).await;
            let upload = store
                .create_multipart(&big_key, PutOptions::default())
                .await
                .unwrap();
            let mut parts = Vec::new();
            for (i, chunk) in big.chunks(5 * MIB).enumerate() {
                let body = big.slice_ref(chunk);
                parts.push(
                    store
                        .upload_part(&big_key, &upload, i as u32 + 1, body)
                        .await
                        .unwrap(),
                );
            }
            store
                .complete_multipart(&big_key, &upload, parts, false)
                .await
                .unwrap();
            for (key, data) in [(&small_key, &small), (&big_key, &big)] {
                let back = get_bytes(store.as_ref(), key, None).await.unwrap();
                assert!(back == *data, "{mode:?}: {key} came back different");
                let head = backend
                    .sdk()
                    .await
                    .client()
                    .head_object()
                    .bucket(&backend.config.bucket)
                    .key(key.as_str())
                    .checksum_mode(aws_sdk_s3::types::ChecksumMode::Enabled)
                    .send()
                    .await
                    .unwrap();
                let expected = crc32c_header(crc32c(data));
                if mode == UploadChecksums::Crc32c
                    && matches!(backend.kind, crate::common::backend::Kind::Moto)
                {
                    assert_eq!(head.checksum_crc32_c(), Some(expected.as_str()), "{key}");
                }
            }
            // The dev server says what each body carried: one checksum, the mode's.
            if let Some(server) = backend.server() {
                let bodies: Vec<_> = server
                    .recorded_requests()
                    .into_iter()
                    .filter(|r| r.method == "PUT")
                    .collect();
                assert_eq!(bodies.len(), 4, "{mode:?}: {bodies:?}");
                for body in bodies {
                    let crc = body.header("x-amz-checksum-crc32c").is_some();
                    let md5 = body.header("content-md5").is_some();
                    assert_eq!(
                        (crc, md5),
                        (
                            mode == UploadChecksums::Crc32c,
                            mode == UploadChecksums::Md5
                        ),
                        "{mode:?}: {body:?}"
                    );
                }
                backend.reset_stats();
            }
        }
    }

    /// The fields of an object as an SDK HeadObject or GetObject output gives them.
    struct SdkMeta<'a> {
        size: Option<i64>,
        etag: Option<&'a str>,
        last_modified: Option<&'a aws_sdk_s3::primitives::DateTime>,
        metadata: Option<&'a std::collections::HashMap<String, String>>,
        content_type: Option<&'a str>,
    }

    /// An SDK output's [`SdkMeta`] (HeadObject's and GetObject's share no trait).
    macro_rules! sdk_meta {
        ($output:expr) => {
            SdkMeta {
                size: $output.content_length(),
                etag: $output.e_tag(),
                last_modified: $output.last_modified(),
                metadata: $output.metadata(),
                content_type: $output.content_type(),
            }
        };
    }

    impl SdkMeta<'_> {
        /// `lean` says what the SDK said, field by field.
        fn assert_equals(&self, key: &str, lean: &scribefs::store::ObjectMeta) {
            assert_eq!(lean.key, key);
            assert_eq!(Some(lean.size as i64), self.size, "{key}");
            assert_eq!(Some(lean.etag.as_str()), self.etag, "{key}");
            let modified = self.last_modified.map(|t| t.secs()).unwrap_or(0);
            let lean_secs = lean
                .last_modified
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs() as i64;
            assert_eq!(lean_secs, modified, "{key}");
            let expected: BTreeMap<String, String> = self
                .metadata
                .into_iter()
                .flatten()
                .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
                .collect();
            assert_eq!(lean.metadata, expected, "{key}");
            assert_eq!(lean.content_type.as_deref(), self.content_type, "{key}");
        }
    }

    /// HEADs take a lean path outside the SDK's orchestrator (store/s3/lean_head.rs). For keys
    /// that need encoding, user metadata (one value with a comma and spaces), content types
    /// and a missing key, its answer is the SDK's HeadObject's, field by field.
    pub async fn lean_head_answers_as_the_sdk_does(backend: &Backend) {
        let store = backend.store.as_ref();
        let keys = [
            "plain",
            "with space/and+plus",
            "percent%25 and ~tilde/",
            "unicode/\u{e9}t\u{e9} \u{43a}\u{43b}\u{44e}\u{447}",
            "query?x=1&y=2#frag",
            "quote'star*paren(1)",
            "deep/a/b/c/d.bin",
        ];
        for (i, key) in keys.iter().enumerate() {
            let options = PutOptions {
                metadata: metadata(&[
                    ("mode", "100644"),
                    ("list", " a, \"b\" "),
                    ("n", &i.to_string()),
                ]),
                content_type: (i % 2 == 0).then(|| "application/x-test".to_string()),
                ..PutOptions::default()
            };
            store
                .put(key, Bytes::from(vec![b'x'; i * 100]), options)
                .await
                .unwrap();
        }
        let (sdk, bucket) = (backend.sdk().await, &backend.config.bucket);
        for key in keys {
            let lean = store.head(key).await.unwrap();
            let request = sdk.client().head_object().bucket(bucket).key(key);
            let reference = request.send().await.unwrap();
            sdk_meta!(reference).assert_equals(key, &lean);
        }
        assert!(store.head("no/such/key").await.unwrap_err().is_not_found());
    }

    /// Whole GETs take the lean path too (store/s3/lean_get.rs). For keys that need encoding,
    /// user metadata, content types, an empty object and one above the checked size (streamed,
    /// not MD5-checked), its answer is the SDK's GetObject's: bytes, ETag, size, date, metadata;
    /// and a missing key is not found.
    pub async fn lean_get_answers_as_the_sdk_does(backend: &Backend) {
        let store = backend.store.as_ref();
        let keys = [
            ("plain", 1),
            ("with space/and+plus", 0),
            ("unicode/\u{e9}t\u{e9} \u{43a}\u{43b}\u{44e}\u{447}", 4097),
            ("query?x=1&y=2#frag", 100),
            ("quote'star*paren(1)", 3 * MIB + 5),
            (
                "big/above-the-checked-size",
                scribefs::store::s3::MAX_VERIFIED_BODY as usize + 1,
            ),
        ];
        for (i, (key, len)) in keys.iter().enumerate() {
            let options = PutOptions {
                metadata: metadata(&[("mode", "100644"), ("list", " a, \"b\" ")]),
                content_type: (i % 2 == 0).then(|| "application/x-test".to_string()),
                ..PutOptions::default()
            };
            store
                .put(key, random_bytes(*len, i as u64), options)
                .await
                .unwrap();
        }
        let (sdk, bucket) = (backend.sdk().await, &backend.config.bucket);
        for (i, (key, len)) in keys.into_iter().enumerate() {
            let lean = store.get(GetRequest::whole(key)).await.unwrap();
            let request = sdk.client().get_object().bucket(bucket).key(key);
            let reference = request.send().await.unwrap();
            assert_eq!(lean.range, 0..len as u64, "{key}");
            sdk_meta!(reference).assert_equals(key, &lean.meta);
            let sdk_bytes = reference.body.collect().await.unwrap().into_bytes();
            let lean_bytes = lean.collect().await.unwrap();
            assert!(lean_bytes == sdk_bytes, "{key}: the bytes differ");
            assert!(
                lean_bytes == random_bytes(len, i as u64),
                "{key}: not what was put"
            );
        }
        let missing = get_error(store, GetRequest::whole("no/such/key")).await;
        assert!(missing.is_not_found(), "{missing:?}");
    }

    pub async fn exclusive_creates_refuse_an_existing_key(backend: &Backend) {
        let store = backend.store.as_ref();
        let exclusive = PutOptions {
            if_none_match: true,
            ..Default::default()
        };
        store
            .put(
                "seg",
                bytes::Bytes::from_static(b"first"),
                exclusive.clone(),
            )
            .await
            .unwrap();
        let second = store
            .put(
                "seg",
                bytes::Bytes::from_static(b"second"),
                exclusive.clone(),
            )
            .await
            .unwrap_err();
        assert!(
            matches!(second, StoreError::PreconditionFailed(_)),
            "{second:?}"
        );
        let upload = store.create_multipart("seg", exclusive).await.unwrap();
        let part = store
            .upload_part("seg", &upload, 1, random_bytes(1000, 9))
            .await
            .unwrap();
        let completed = store
            .complete_multipart("seg", &upload, vec![part], true)
            .await
            .unwrap_err();
        assert!(
            matches!(completed, StoreError::PreconditionFailed(_)),
            "{completed:?}"
        );
        let _ = store.abort_multipart("seg", &upload).await;
        assert_eq!(get_bytes(store, "seg", None).await.unwrap(), &b"first"[..]);
        // A key that does not exist is created as usual.
        let fresh = PutOptions {
            if_none_match: true,
            ..Default::default()
        };
        store
            .put("other", bytes::Bytes::from_static(b"x"), fresh)
            .await
            .unwrap();
    }

    pub async fn multipart_five_mib_parts(backend: &Backend) {
        let store = backend.store.as_ref();
        let parts = [
            random_bytes(5 * MIB, 1),
            random_bytes(5 * MIB, 2),
            random_bytes(1234, 3),
        ];
        let options = PutOptions {
            metadata: metadata(&[("kind", "multipart")]),
            content_type: None,
            ..Default::default()
        };
        let upload = store.create_multipart("big.bin", options).await.unwrap();
        // Parts may arrive in any order; the list handed to complete is ascending.
        let mut completed = futures::stream::iter(parts.iter().enumerate())
            .map(|(i, part)| store.upload_part("big.bin", &upload, i as u32 + 1, part.clone()))
            .buffer_unordered(3)
            .try_collect::<Vec<_>>()
            .await
            .unwrap();
        completed.sort_by_key(|part| part.part_number);
        // Until completed there is no object.
        assert!(store.head("big.bin").await.unwrap_err().is_not_found());
        let done = store
            .complete_multipart("big.bin", &upload, completed, false)
            .await
            .unwrap();
        assert!(done.etag.ends_with("-3\""), "{}", done.etag);
        let head = store.head("big.bin").await.unwrap();
        assert_eq!(head.etag, done.etag);
        assert_eq!(head.size, (10 * MIB + 1234) as u64);
        assert_eq!(head.metadata, metadata(&[("kind", "multipart")]));
        let whole = get_bytes(store, "big.bin", None).await.unwrap();
        let expected: Vec<u8> = parts.iter().flat_map(|p| p.iter().copied()).collect();
        assert!(whole == expected, "the assembled object differs");
        // A range across the first part boundary.
        let across = (5 * MIB - 10) as u64..(5 * MIB + 10) as u64;
        let bytes = get_bytes(store, "big.bin", Some(across.clone()))
            .await
            .unwrap();
        assert_eq!(bytes, &expected[across.start as usize..across.end as usize]);
    }

    pub async fn multipart_abort_leaves_no_pending_uploads(backend: &Backend) {
        let store = backend.store.as_ref();
        let upload = store
            .create_multipart("gone.bin", PutOptions::default())
            .await
            .unwrap();
        store
            .upload_part("gone.bin", &upload, 1, random_bytes(5 * MIB, 4))
            .await
            .unwrap();
        let sdk = backend.sdk().await;
        let pending = sdk
            .client()
            .list_multipart_uploads()
            .bucket(sdk.bucket())
            .send()
            .await
            .unwrap();
        assert_eq!(pending.uploads().len(), 1);
        assert_eq!(pending.uploads()[0].upload_id(), Some(upload.as_str()));

        store.abort_multipart("gone.bin", &upload).await.unwrap();
        let pending = sdk
            .client()
            .list_multipart_uploads()
            .bucket(sdk.bucket())
            .send()
            .await
            .unwrap();
        assert!(pending.uploads().is_empty(), "{:?}", pending.uploads());
        assert!(store.head("gone.bin").await.unwrap_err().is_not_found());
        let again = store.abort_multipart("gone.bin", &upload).await;
        assert!(again.unwrap_err().is_not_found());
        assert!(list_all(store, "").await.unwrap().is_empty());
    }

    pub async fn thousands_of_keys_span_pages(backend: &Backend) {
        const N: u64 = 1005;
        let segments = backend.segments();
        // Ids with gaps, put in no particular order.
        let ids: Vec<u64> = (0..N).map(|i| (i * 7919) % N * 3 + 1).collect();
        futures::stream::iter(ids.iter().copied())
            .map(|id| segments.put_segment(id, Bytes::from(id.to_string())))
            .buffer_unordered(16)
            .try_collect::<Vec<_>>()
            .await
            .unwrap();
        let pages = N.div_ceil(1000);

        backend.reset_stats();
        let listed = segments.list_segments().await.unwrap();
        let mut expected = ids.clone();
        expected.sort_unstable();
        assert_eq!(listed.len() as u64, N);
        assert_eq!(listed, expected);
        if let Some(stats) = backend.stats() {
            assert_eq!(stats.list, pages, "{stats:?}");
            assert_eq!(stats.total(), pages, "{stats:?}");
        }

        backend.reset_stats();
        let keys: Vec<String> = list_all(backend.store.as_ref(), "segments/")
            .await
            .unwrap()
            .into_iter()
            .map(|o| o.key)
            .collect();
        let expected_keys: Vec<String> = expected.iter().map(|&id| segment_key(id)).collect();
        assert_eq!(keys, expected_keys);
        if let Some(stats) = backend.stats() {
            assert_eq!(stats.list, pages, "{stats:?}");
        }
    }

    pub async fn delimiter_listing_keeps_a_ab_and_dir_apart(backend: &Backend) {
        let store = backend.store.as_ref();
        put(store, "a", Bytes::from_static(b"file a")).await;
        put(store, "a/b", Bytes::from_static(b"file a/b")).await;
        put(store, "dir/", Bytes::new()).await;
        put(store, "dir/x", Bytes::from_static(b"x")).await;
        put(store, "a-", Bytes::from_static(b"dash")).await;

        let root = store
            .list(ListRequest {
                delimiter: Some("/".into()),
                ..Default::default()
            })
            .await
            .unwrap();
        let files: Vec<&str> = root.objects.iter().map(|o| o.key.as_str()).collect();
        // Byte order: '-' (0x2d) sorts before '/' (0x2f).
        assert_eq!(files, ["a", "a-"]);
        assert_eq!(root.common_prefixes, ["a/", "dir/"]);
        assert!(root.next_continuation_token.is_none());

        let under_a = store
            .list(ListRequest {
                prefix: "a/".into(),
                delimiter: Some("/".into()),
                ..Default::default()
            })
            .await
            .unwrap();
        let files: Vec<&str> = under_a.objects.iter().map(|o| o.key.as_str()).collect();
        assert_eq!(files, ["a/b"]);
        assert!(under_a.common_prefixes.is_empty());

        let under_dir = store
            .list(ListRequest {
                prefix: "dir/".into(),
                delimiter: Some("/".into()),
                ..Default::default()
            })
            .await
            .unwrap();
        let sizes: Vec<(&str, u64)> = under_dir
            .objects
            .iter()
            .map(|o| (o.key.as_str(), o.size))
            .collect();
        assert_eq!(sizes, [("dir/", 0), ("dir/x", 1)]);

        // One entry a page: each common prefix comes once, in order.
        let mut request = ListRequest {
            delimiter: Some("/".into()),
            max_keys: Some(1),
            ..Default::default()
        };
        let mut entries = Vec::new();
        loop {
            let page = store.list(request.clone()).await.unwrap();
            assert_eq!(page.objects.len() + page.common_prefixes.len(), 1);
            entries.extend(page.objects.into_iter().map(|o| o.key));
            entries.extend(page.common_prefixes);
            match page.next_continuation_token {
                Some(token) => request.continuation_token = Some(token),
                None => break,
            }
        }
        assert_eq!(entries, ["a", "a-", "a/", "dir/"]);

        assert_eq!(get_bytes(store, "a", None).await.unwrap(), &b"file a"[..]);
        assert_eq!(
            get_bytes(store, "a/b", None).await.unwrap(),
            &b"file a/b"[..]
        );
        assert_eq!(store.head("dir/").await.unwrap().size, 0);
        assert!(store.head("dir").await.unwrap_err().is_not_found());
        // Deleting `a` leaves `a/b`, and the other way round.
        store.delete("a").await.unwrap();
        assert!(store.head("a").await.unwrap_err().is_not_found());
        assert_eq!(
            get_bytes(store, "a/b", None).await.unwrap(),
            &b"file a/b"[..]
        );
    }
}

/// Cases only the dev server can run: it injects failures and counts requests.
mod devserver_only {
    use std::sync::Arc;

    use bytes::Bytes;
    use futures::{StreamExt, TryStreamExt};
    use scribefs::devserver::RequestStats;
    use scribefs::segment::SegmentStore;
    use scribefs::store::faulty::FaultyStore;
    use scribefs::store::retry::{RetryPolicy, Retrying};
    use scribefs::store::s3::S3Store;
    use scribefs::store::{GetRequest, ObjectStore, PutOptions, get_bytes};

    use super::common::backend::Backend;
    use super::random_bytes;

    async fn devserver() -> Backend {
        Backend::devserver().await
    }

    /// The done-when: at a 20 % failure rate, 8 retries carry every call through.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn fail_rate_0_2_with_8_retries_loses_nothing() {
        let backend = devserver().await;
        let segments = SegmentStore::new(backend.connect_with(|c| c.max_retries = 8).await);
        let server = backend.server().unwrap();
        server.set_fail_rate(0.2);
        let body = |id: u64| random_bytes(20_000 + (id as usize * 997) % 50_000, id);
        futures::stream::iter(0..100u64)
            .map(|id| segments.put_segment(id * 3, body(id)))
            .buffer_unordered(8)
            .try_collect::<Vec<_>>()
            .await
            .unwrap();
        let fetched = futures::stream::iter(0..100u64)
            .map(|id| {
                let segments = &segments;
                async move { (id, segments.get_segment(id * 3).await) }
            })
            .buffer_unordered(8)
            .collect::<Vec<_>>()
            .await;
        for (id, result) in fetched {
            let data = result
                .unwrap()
                .unwrap_or_else(|| panic!("segment {id} lost"));
            assert!(data == body(id), "segment {id} came back different");
        }
        let stats = server.stats();
        // With 200 calls at a 20 % rate, faults did happen and were retried.
        assert!(stats.put > 100 && stats.get > 100, "{stats:?}");
        server.set_fail_rate(0.0);
        let ids = segments.list_segments().await.unwrap();
        assert_eq!(ids, (0..100u64).map(|id| id * 3).collect::<Vec<_>>());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn fail_rate_one_gives_up_after_four_attempts() {
        let backend = devserver().await;
        let store = backend.connect_with(|c| c.max_retries = 3).await;
        let server = backend.server().unwrap();
        let segments = SegmentStore::new(Arc::clone(&store));
        segments
            .put_segment(1, Bytes::from_static(b"one"))
            .await
            .unwrap();
        server.set_fail_rate(1.0);
        server.reset_stats();
        let err = segments
            .put_segment(2, Bytes::from_static(b"two"))
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("gave up after 4 attempts"),
            "{err}"
        );
        let err = segments.get_segment(1).await.unwrap_err();
        assert!(
            err.to_string().contains("gave up after 4 attempts"),
            "{err}"
        );
        let err = segments.list_segments().await.unwrap_err();
        assert!(
            err.to_string().contains("gave up after 4 attempts"),
            "{err}"
        );
        let stats = server.stats();
        assert_eq!((stats.put, stats.get, stats.list), (4, 4, 4), "{stats:?}");
        server.set_fail_rate(0.0);
        assert_eq!(segments.list_segments().await.unwrap(), vec![1]);
    }

    /// Cut bodies at known points: the rest comes by ranged GETs, and the bytes are the same.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn cut_get_bodies_resume_with_identical_bytes() {
        let backend = devserver().await;
        let data = random_bytes(4 * 1024 * 1024 + 17, 11);
        let key = scribefs::segment::segment_key(0x77);
        backend
            .store
            .put(&key, data.clone(), PutOptions::default())
            .await
            .unwrap();
        let faulty = FaultyStore::new(S3Store::new(&backend.config).await.unwrap());
        faulty.cut_get_bodies_after(1024 * 1024, 2);
        let policy = RetryPolicy {
            max_retries: 3,
            ..RetryPolicy::default()
        };
        let store: Arc<dyn ObjectStore> = Arc::new(Retrying::new(faulty, policy));
        backend.reset_stats();
        let back = SegmentStore::new(Arc::clone(&store))
            .get_segment(0x77)
            .await
            .unwrap()
            .unwrap();
        assert!(back == data, "the resumed body differs");
        // One GET, and one ranged GET per cut.
        assert_eq!(backend.stats().unwrap().get, 3);
        let ranged = get_bytes(store.as_ref(), &key, Some(1000..3_000_000))
            .await
            .unwrap();
        assert_eq!(ranged, data.slice(1000..3_000_000));
    }

    /// The dev server's own faults cut GET bodies at random points (among other failures).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn random_server_faults_never_corrupt_large_gets() {
        let backend = devserver().await;
        let store = backend.connect_with(|c| c.max_retries = 12).await;
        let data = random_bytes(3 * 1024 * 1024, 12);
        store
            .put("big", data.clone(), PutOptions::default())
            .await
            .unwrap();
        let server = backend.server().unwrap();
        server.set_fail_rate(0.3);
        // At least 12 whole GETs, and on until a fault hit one (at 30% per request, 12 pass
        // clean about once in 70 runs; 60 in 2 billion).
        let mut gets = 0;
        while gets < 12 || (server.stats().get == gets && gets < 60) {
            let output = store.get(GetRequest::whole("big")).await.unwrap();
            let etag = output.meta.etag.clone();
            assert!(output.collect().await.unwrap() == data, "body differs");
            assert_eq!(etag, store.head("big").await.unwrap().etag);
            gets += 1;
        }
        assert!(server.stats().get > gets, "{:?}", server.stats());
    }

    /// A HEAD is one request on the wire, sent the lean way (its User-Agent is scribefs's own,
    /// not the SDK's): a found key, a missing one, and one with user metadata.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_head_is_one_lean_request() {
        let backend = devserver().await;
        let store = &backend.store;
        store
            .put("found", Bytes::from_static(b"x"), PutOptions::default())
            .await
            .unwrap();
        let listed = PutOptions {
            metadata: [("list".to_string(), "a,b".to_string())]
                .into_iter()
                .collect(),
            ..PutOptions::default()
        };
        store
            .put("listed", Bytes::from_static(b"y"), listed)
            .await
            .unwrap();
        let server = backend.server().unwrap();
        backend.reset_stats();
        let before = server.recorded_requests().len();
        assert_eq!(store.head("found").await.unwrap().size, 1);
        assert!(store.head("missing").await.unwrap_err().is_not_found());
        assert_eq!(backend.stats().unwrap().head, 2);
        let head = store.head("listed").await.unwrap();
        assert_eq!(head.metadata.get("list").map(String::as_str), Some("a,b"));
        assert_eq!(backend.stats().unwrap().head, 3);
        let recorded = server.recorded_requests();
        let heads: Vec<_> = recorded[before..]
            .iter()
            .filter(|r| r.method == "HEAD")
            .collect();
        assert_eq!(heads.len(), 3, "{recorded:?}");
        for request in heads {
            let agent = request.header("user-agent").unwrap_or_default();
            assert!(agent.starts_with("scribefs/"), "{request:?}");
        }
    }

    /// A whole GET is one request on the wire, sent the lean way (scribefs's own User-Agent): a
    /// found key, a missing one, an empty object; a ranged or conditional GET stays with the
    /// SDK (its User-Agent is the SDK's), one request each too.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_whole_get_is_one_lean_request() {
        let backend = devserver().await;
        let store = &backend.store;
        let etag = store
            .put("found", Bytes::from_static(b"xyz"), PutOptions::default())
            .await
            .unwrap()
            .etag;
        store
            .put("empty", Bytes::new(), PutOptions::default())
            .await
            .unwrap();
        let server = backend.server().unwrap();
        backend.reset_stats();
        let before = server.recorded_requests().len();
        let found = store.get(GetRequest::whole("found")).await.unwrap();
        assert_eq!(found.collect().await.unwrap(), "xyz");
        let missing = store.get(GetRequest::whole("missing")).await;
        assert!(missing.err().is_some_and(|e| e.is_not_found()));
        let empty = store.get(GetRequest::whole("empty")).await.unwrap();
        assert_eq!(empty.collect().await.unwrap(), "");
        assert_eq!(backend.stats().unwrap().get, 3);
        let ranged = get_bytes(store.as_ref(), "found", Some(1..3))
            .await
            .unwrap();
        assert_eq!(ranged, "yz");
        let conditional = GetRequest {
            if_match: Some(etag),
            ..GetRequest::whole("found")
        };
        let conditional = store.get(conditional).await.unwrap();
        assert_eq!(conditional.collect().await.unwrap(), "xyz");
        assert_eq!(backend.stats().unwrap().get, 5);
        let recorded = server.recorded_requests();
        let agents: Vec<bool> = recorded[before..]
            .iter()
            .filter(|r| r.method == "GET")
            .map(|r| {
                r.header("user-agent")
                    .unwrap_or_default()
                    .starts_with("scribefs/")
            })
            .collect();
        assert_eq!(agents, [true, true, true, false, false], "{recorded:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn request_counts_match_the_calls() {
        let backend = devserver().await;
        let segments = backend.segments();
        backend.reset_stats();
        for id in [1, 2, 3] {
            segments
                .put_segment(id, Bytes::from_static(b"data"))
                .await
                .unwrap();
            segments
                .put_metadata(id, Bytes::from_static(b"{}"))
                .await
                .unwrap();
        }
        assert_eq!(
            backend.stats().unwrap(),
            RequestStats {
                put: 6,
                ..Default::default()
            }
        );
        segments.get_segment(1).await.unwrap().unwrap();
        segments.get_metadata(2).await.unwrap().unwrap();
        // A miss is one GET: a 404 is never retried.
        assert_eq!(segments.get_segment(99).await.unwrap(), None);
        assert_eq!(segments.list_segments().await.unwrap(), vec![1, 2, 3]);
        segments.delete_segment(3).await.unwrap();
        segments.health_check().await.unwrap();
        assert_eq!(
            backend.stats().unwrap(),
            RequestStats {
                put: 6,
                get: 3,
                list: 1,
                delete: 2,
                head_bucket: 1,
                ..Default::default()
            }
        );
        backend.reset_stats();
        backend
            .store
            .head(&scribefs::segment::segment_key(1))
            .await
            .unwrap();
        backend
            .store
            .copy(
                &scribefs::segment::segment_key(1),
                "copy",
                scribefs::store::CopyMetadata::Keep,
            )
            .await
            .unwrap();
        assert_eq!(
            backend.stats().unwrap(),
            RequestStats {
                head: 1,
                copy: 1,
                ..Default::default()
            }
        );
    }
}
