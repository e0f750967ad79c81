//! Storage-layer throughput against the dev server this bench starts on loopback: put and get
//! at 1 KB to 1 MB, delete, and list. Run with `cargo bench --bench s3_storage`.

use std::sync::Arc;

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use scribefs::cli::connect;
use scribefs::devserver::{DevServer, DevServerConfig};
use scribefs::store::config::S3Config;
use scribefs::store::{ObjectStore, PutOptions, get_bytes};

const BUCKET: &str = "bench";
const SIZES: [usize; 4] = [1_000, 10_000, 100_000, 1_000_000];

fn setup(runtime: &tokio::runtime::Runtime) -> (DevServer, Arc<dyn ObjectStore>) {
    runtime.block_on(async {
        let server = DevServer::start(DevServerConfig::for_tests(&[BUCKET]))
            .await
            .expect("dev server starts");
        let config = S3Config {
            bucket: BUCKET.into(),
            endpoint: Some(server.endpoint()),
            access_key_id: Some("devkey".into()),
            secret_access_key: Some("devsecret".into()),
            path_style: true,
            ..S3Config::default()
        };
        let store = connect(&config).await.expect("store connects");
        (server, store)
    })
}

fn storage(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (_server, store) = setup(&runtime);

    let mut group = c.benchmark_group("put");
    for size in SIZES {
        let body = Bytes::from(vec![7u8; size]);
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::from_parameter(size), &body, |b, body| {
            b.to_async(&runtime).iter(|| async {
                store
                    .put("bench/object", body.clone(), PutOptions::default())
                    .await
                    .expect("put")
            })
        });
    }
    group.finish();

    let mut group = c.benchmark_group("get");
    for size in SIZES {
        let key = format!("bench/get-{size}");
        runtime
            .block_on(store.put(&key, Bytes::from(vec![3u8; size]), PutOptions::default()))
            .expect("seed");
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::from_parameter(size), &key, |b, key| {
            b.to_async(&runtime)
                .iter(|| async { get_bytes(store.as_ref(), key, None).await.expect("get") })
        });
    }
    group.finish();

    c.bench_function("delete", |b| {
        b.to_async(&runtime)
            .iter(|| async { store.delete("bench/missing").await.expect("delete") })
    });

    runtime.block_on(async {
        for i in 0..100 {
            store
                .put(
                    &format!("list/{i:04}"),
                    Bytes::from_static(b"x"),
                    PutOptions::default(),
                )
                .await
                .expect("seed list");
        }
    });
    c.bench_function("list_100", |b| {
        b.to_async(&runtime).iter(|| async {
            scribefs::store::list_all(store.as_ref(), "list/")
                .await
                .expect("list")
        })
    });
}

criterion_group!(benches, storage);
criterion_main!(benches);
