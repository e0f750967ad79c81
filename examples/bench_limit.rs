//! The limit beside the mounts in `scripts/bench.sh`: what scribefs's own S3 path moves with no
//! FUSE in between. `get` reads an object with parallel ranged GETs and writes it to stdout in
//! order; `put` uploads a file with the streaming multipart upload the mount uses; `ls` does what
//! a cold `ls -l` costs the mount (list every page of a prefix, then HEAD each object for its
//! stored metadata, `--parallel` at once); `rm` deletes.
//!
//! ```text
//! bench_limit get KEY [--parallel N] [--range-mib M] > out
//! bench_limit put KEY FILE [--parallel N] [--part-mib M]   (N: the mount's parts in flight)
//! bench_limit ls PREFIX [--parallel N]
//! bench_limit rm KEY...
//! ```
//!
//! Connection settings come from S3_ENDPOINT, S3_BUCKET, S3_ACCESS_KEY_ID, S3_SECRET_ACCESS_KEY
//! (path-style addressing). Prints the MiB/s it reached on stderr.

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use futures::{StreamExt, TryStreamExt};
use scribefs::store::config::S3Config;
use scribefs::store::s3::S3Store;
use scribefs::store::{ListRequest, ObjectStore, PutOptions, get_bytes, list_every_page};
use scribefs::upload::{StreamingUpload, UploadConfig};
use tokio::io::AsyncReadExt;

const MIB: u64 = 1024 * 1024;

struct Options {
    /// Unset: 8 at once for `get` and `ls`, the mount's parts in flight for `put`.
    parallel: Option<usize>,
    chunk_mib: u64,
    positional: Vec<String>,
}

fn parse(args: &[String]) -> Result<Options, String> {
    let mut options = Options {
        parallel: None,
        chunk_mib: 8,
        positional: Vec::new(),
    };
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let mut number = |name: &str| -> Result<u64, String> {
            let value = args.next().ok_or(format!("{name} needs a value"))?;
            match value.parse::<u64>() {
                Ok(n) if n > 0 => Ok(n),
                _ => Err(format!("{name}: {value:?} is not a positive whole number")),
            }
        };
        match arg.as_str() {
            "--parallel" => options.parallel = Some(number(arg)? as usize),
            "--range-mib" | "--part-mib" => options.chunk_mib = number(arg)?,
            _ => options.positional.push(arg.clone()),
        }
    }
    Ok(options)
}

fn config(options: &Options) -> Result<S3Config, String> {
    let var = |name: &str| std::env::var(name).map_err(|_| format!("{name} is not set"));
    Ok(S3Config {
        bucket: var("S3_BUCKET")?,
        endpoint: Some(var("S3_ENDPOINT")?),
        access_key_id: Some(var("S3_ACCESS_KEY_ID")?),
        secret_access_key: Some(var("S3_SECRET_ACCESS_KEY")?),
        path_style: true,
        pool_size: options.parallel.unwrap_or(0).max(64),
        ..S3Config::default()
    })
}

fn report(verb: &str, bytes: u64, start: Instant) {
    let seconds = start.elapsed().as_secs_f64();
    eprintln!(
        "bench_limit: {verb} {:.1} MiB in {seconds:.3} s: {:.1} MiB/s",
        bytes as f64 / MIB as f64,
        bytes as f64 / MIB as f64 / seconds
    );
}

async fn get(store: Arc<S3Store>, key: &str, options: &Options) -> Result<(), String> {
    let start = Instant::now();
    let size = store.head(key).await.map_err(|e| e.to_string())?.size;
    let chunk = options.chunk_mib * MIB;
    let ranges: Vec<_> = (0..size.div_ceil(chunk))
        .map(|i| i * chunk..((i + 1) * chunk).min(size))
        .collect();
    // `buffered` keeps the output in order while `parallel` ranges are in flight.
    let mut parts = futures::stream::iter(ranges)
        .map(|range| {
            let store = store.clone();
            async move { get_bytes(store.as_ref(), key, Some(range)).await }
        })
        .buffered(options.parallel.unwrap_or(8));
    // Blocking writes are fine here: the runtime has other threads for the GETs in flight.
    let mut stdout = std::io::stdout().lock();
    while let Some(part) = parts.try_next().await.map_err(|e| e.to_string())? {
        stdout.write_all(&part).map_err(|e| e.to_string())?;
    }
    stdout.flush().map_err(|e| e.to_string())?;
    report("get", size, start);
    Ok(())
}

async fn put(store: Arc<S3Store>, key: &str, file: &str, options: &Options) -> Result<(), String> {
    let start = Instant::now();
    let config = UploadConfig::new(
        options.chunk_mib * MIB,
        options
            .parallel
            .unwrap_or(UploadConfig::DEFAULT_MAX_PARTS_IN_FLIGHT),
    )
    .map_err(|e| e.to_string())?;
    let mut upload = StreamingUpload::new(store, key.to_string(), PutOptions::default(), config);
    let mut input = tokio::fs::File::open(file)
        .await
        .map_err(|e| format!("{file}: {e}"))?;
    let mut buffer = vec![0u8; MIB as usize];
    let mut offset = 0;
    loop {
        let n = input
            .read(&mut buffer)
            .await
            .map_err(|e| format!("{file}: {e}"))?;
        if n == 0 {
            break;
        }
        upload
            .write(offset, &buffer[..n])
            .await
            .map_err(|e| e.to_string())?;
        offset += n as u64;
    }
    upload.finish().await.map_err(|e| e.to_string())?;
    report("put", offset, start);
    Ok(())
}

async fn list_long(store: Arc<S3Store>, prefix: &str, options: &Options) -> Result<(), String> {
    let start = Instant::now();
    // Paged with "/" as the mount lists a directory.
    let request = ListRequest {
        prefix: prefix.to_string(),
        delimiter: Some("/".to_string()),
        ..Default::default()
    };
    let objects = list_every_page(store.as_ref(), request)
        .await
        .map_err(|e| e.to_string())?;
    let count = objects.len();
    futures::stream::iter(objects)
        .map(|object| {
            let store = store.clone();
            async move { store.head(&object.key).await }
        })
        .buffer_unordered(options.parallel.unwrap_or(8))
        .try_for_each(|_| async { Ok(()) })
        .await
        .map_err(|e| e.to_string())?;
    eprintln!(
        "bench_limit: ls {count} objects in {:.3} s",
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

async fn run(args: Vec<String>) -> Result<(), String> {
    let options = parse(&args)?;
    let store = Arc::new(
        S3Store::new(&config(&options)?)
            .await
            .map_err(|e| e.to_string())?,
    );
    match options.positional.as_slice() {
        [verb, key] if verb == "get" => get(store, key, &options).await,
        [verb, key, file] if verb == "put" => put(store, key, file, &options).await,
        [verb, prefix] if verb == "ls" => list_long(store, prefix, &options).await,
        [verb, keys @ ..] if verb == "rm" => {
            for key in keys {
                store.delete(key).await.map_err(|e| e.to_string())?;
            }
            Ok(())
        }
        _ => Err(
            "usage: bench_limit get KEY | put KEY FILE | ls PREFIX | rm KEY... (see the source)"
                .into(),
        ),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    match run(std::env::args().skip(1).collect()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("bench_limit: {error}");
            ExitCode::FAILURE
        }
    }
}
