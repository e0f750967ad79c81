//! `scribefs segments pull DIR` and `push DIR`: copy a whole ledger (segments and sidecars)
//! between the bucket and a local directory, for backups.
//!
//! - **Parallel**: up to `--jobs` files at once (default: the connection pool size).
//! - **Skips what is identical**: same size and the same content hash as the object's ETag (the
//!   MD5 for a single PUT; the MD5 of the parts' MD5s for a multipart upload, computed with
//!   our uploader's part sizes and with the part size the part count implies).
//! - **Resumable**: a download goes to `.NAME.partial` and is renamed when complete; an upload
//!   is visible only once complete. Running the command again copies only what is missing or
//!   differs (a file torn by a crash fails the hash check and is fetched again).
//! - **Progress**: a bar on a terminal, one plain line per file otherwise.
//! - **Streaming**: files are copied as the listing finds them, a page ahead at most (push
//!   walks the listing alongside DIR's sorted names for the ETags). Memory is bounded in bytes
//!   by `--max-in-flight-mib`, whatever `--jobs`: pull's files of up to
//!   [`MAX_VERIFIED_BODY`] are read whole to check their MD5 before a byte is written, so their
//!   listed sizes count in it (larger files stream, a network chunk each); push's uploads'
//!   buffers and parts share it (beside a 1 MiB read buffer per job). For push memory also
//!   grows with DIR's file count, never with the bucket.

use std::io::{Read, Write};

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;
use tokio::io::AsyncWriteExt;

use futures::stream::{BoxStream, Stream, StreamExt, TryStreamExt};
use md5::{Digest, Md5};
use tokio::io::AsyncReadExt;

use super::CliError;
use super::in_flight::InFlight;
use crate::segment::{ListedFile, SEGMENTS_PREFIX, SegmentStore, parse_file_name};
use crate::store::s3::MAX_VERIFIED_BODY;
use crate::store::{GetRequest, ObjectStore, PutOptions, StoreError, StoreResult};
use crate::upload::{StreamingUpload, UploadConfig, WriteBudget, part_size_for};

/// One file to consider: its name in DIR and under `segments/`, and the object's facts.
struct Item {
    name: String,
    size: u64,
    etag: Option<String>,
}

#[derive(Default)]
struct Totals {
    copied: u64,
    copied_bytes: u64,
    skipped: u64,
    failed: Vec<String>,
}

/// Which way files go, with what bounds the memory of the copies under way.
pub enum Direction {
    Pull(InFlight),
    Push(Arc<WriteBudget>),
}

pub async fn run(
    store: Arc<dyn ObjectStore>,
    direction: Direction,
    dir: &Path,
    jobs: usize,
) -> Result<(), CliError> {
    let started = Instant::now();
    let progress = Progress::new();
    let remote = SegmentStore::new(store.clone()).file_pages();
    let items: BoxStream<'_, StoreResult<Item>> = match direction {
        Direction::Pull(_) => {
            std::fs::create_dir_all(dir)
                .map_err(|e| CliError::Io(format!("cannot create {}: {e}", dir.display())))?;
            remote_items(remote, &progress)
        }
        Direction::Push(_) => {
            let local = local_items(dir)?;
            progress.grow(local.iter().map(|item| item.size).sum());
            with_remote_etags(local, remote)
        }
    };
    let mut results = items
        .map(|item| {
            let store = store.clone();
            let progress = &progress;
            let direction = &direction;
            async move {
                let item = item?;
                let outcome = transfer(store, direction, dir, &item).await;
                progress.file_done(&item, &outcome);
                Ok::<_, StoreError>((item, outcome))
            }
        })
        .buffer_unordered(jobs.max(1));
    let mut totals = Totals::default();
    // A failed listing ends the stream of files; the transfers under way still finish.
    let mut listing_failed = None;
    while let Some(result) = results.next().await {
        match result {
            Ok((item, Ok(true))) => {
                totals.copied += 1;
                totals.copied_bytes += item.size;
            }
            Ok((_, Ok(false))) => totals.skipped += 1,
            Ok((item, Err(e))) => totals.failed.push(format!("{}: {e}", item.name)),
            Err(e) => listing_failed = Some(e),
        }
    }
    progress.finish();
    // What --jobs and --max-in-flight-mib let the copies hold, for tuning them.
    let (verb, peak_bytes) = match &direction {
        Direction::Pull(in_flight) => ("pulled", Some(in_flight.peak_bytes())),
        Direction::Push(_) => ("pushed", None),
    };
    tracing::debug!(
        peak_bytes,
        peak_rss_bytes = super::in_flight::peak_rss_bytes(),
        "copies done"
    );
    if let Direction::Pull(_) = direction {
        sync_filesystem(dir);
    }
    // Printed before the verdict, which a closed output must not hide.
    let printed = super::output::unless_closed(super::output::line(format_args!(
        "{verb} {} files ({} bytes), {} identical skipped, {} failed, in {:.2}s",
        totals.copied,
        totals.copied_bytes,
        totals.skipped,
        totals.failed.len(),
        started.elapsed().as_secs_f64()
    )));
    if let Some(error) = listing_failed {
        return Err(CliError::Io(format!(
            "listing the bucket failed: {error}; run the command again to resume"
        )));
    }
    match totals.failed.first() {
        None => printed,
        Some(first) => Err(CliError::Io(format!(
            "{} transfers failed (first: {first}); run the command again to resume",
            totals.failed.len()
        ))),
    }
}

/// The bucket's segment files as items to pull, a listing page at a time (the progress bar's
/// total grows with each page).
fn remote_items<'a>(
    remote: impl Stream<Item = StoreResult<Vec<ListedFile>>> + Send + 'a,
    progress: &'a Progress,
) -> BoxStream<'a, StoreResult<Item>> {
    remote
        .map_ok(move |page| {
            progress.grow(page.iter().map(|listed| listed.size).sum());
            futures::stream::iter(page.into_iter().map(|listed| {
                Ok(Item {
                    name: listed.name,
                    size: listed.size,
                    etag: Some(listed.etag),
                })
            }))
        })
        .try_flatten()
        .boxed()
}

/// Segment files of `dir`, sorted by name.
fn local_items(dir: &Path) -> Result<Vec<Item>, CliError> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| CliError::Io(format!("cannot read {}: {e}", dir.display())))?;
    let mut items = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| CliError::Io(e.to_string()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let Ok(meta) = entry.metadata() else { continue };
        if !meta.is_file() || parse_file_name(&name).is_none() {
            continue;
        }
        items.push(Item {
            name,
            size: meta.len(),
            etag: None,
        });
    }
    items.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(items)
}

/// `local` (sorted by name) with the ETag of the remote file of the same name and size, found
/// by walking the listing alongside: S3 lists names in the same byte order, so one listing page
/// is held at a time, not the bucket.
fn with_remote_etags(
    local: Vec<Item>,
    remote: impl Stream<Item = StoreResult<Vec<ListedFile>>> + Send + 'static,
) -> BoxStream<'static, StoreResult<Item>> {
    let cursor = RemoteCursor {
        files: remote
            .map_ok(|page| futures::stream::iter(page.into_iter().map(Ok)))
            .try_flatten()
            .boxed(),
        current: None,
    };
    futures::stream::unfold(
        (local.into_iter(), cursor),
        |(mut local, mut cursor)| async move {
            let mut item = local.next()?;
            match cursor.etag_of(&item.name, item.size).await {
                Ok(etag) => item.etag = etag,
                Err(error) => return Some((Err(error), (Vec::new().into_iter(), cursor))),
            }
            Some((Ok(item), (local, cursor)))
        },
    )
    .boxed()
}

/// A position in the bucket's listing, moved forward by ascending names.
struct RemoteCursor {
    files: BoxStream<'static, StoreResult<ListedFile>>,
    /// The first listed file not yet passed.
    current: Option<ListedFile>,
}

impl RemoteCursor {
    /// The ETag of the remote file `name` if it has `size` bytes; names asked must ascend.
    async fn etag_of(&mut self, name: &str, size: u64) -> StoreResult<Option<String>> {
        loop {
            let listed = match self.current.take() {
                Some(listed) => listed,
                None => match self.files.next().await {
                    Some(listed) => listed?,
                    None => return Ok(None),
                },
            };
            match listed.name.as_str().cmp(name) {
                std::cmp::Ordering::Less => {}
                std::cmp::Ordering::Equal => {
                    return Ok((listed.size == size).then_some(listed.etag));
                }
                std::cmp::Ordering::Greater => {
                    self.current = Some(listed);
                    return Ok(None);
                }
            }
        }
    }
}

/// Copies one file unless both sides already hold the same bytes; `Ok(true)` when it copied.
async fn transfer(
    store: Arc<dyn ObjectStore>,
    direction: &Direction,
    dir: &Path,
    item: &Item,
) -> Result<bool, CliError> {
    let local = dir.join(&item.name);
    let key = format!("{SEGMENTS_PREFIX}{}", item.name);
    if let Some(etag) = &item.etag
        && same_content(&local, item.size, etag).await
    {
        return Ok(false);
    }
    match direction {
        Direction::Pull(in_flight) => {
            let whole = if item.size <= MAX_VERIFIED_BODY {
                item.size
            } else {
                0
            };
            let _held = in_flight.reserve(whole).await;
            download(store.as_ref(), &key, &local).await?
        }
        Direction::Push(budget) => upload(store, key, &local, Some(Arc::clone(budget))).await?,
    }
    Ok(true)
}

/// Whether the local file has `size` bytes whose hash is the object's `etag`.
async fn same_content(path: &Path, size: u64, etag: &str) -> bool {
    if std::fs::metadata(path).map(|m| m.len()).ok() != Some(size) {
        return false;
    }
    let path = path.to_path_buf();
    let etag = etag.trim_matches('"').to_ascii_lowercase();
    tokio::task::spawn_blocking(move || local_etag_matches(&path, size, &etag).unwrap_or(false))
        .await
        .unwrap_or(false)
}

fn local_etag_matches(path: &Path, size: u64, etag: &str) -> std::io::Result<bool> {
    let Some((_, parts)) = etag.split_once('-') else {
        return Ok(hex(&md5_of(path, &mut std::iter::repeat(u64::MAX))?[0]) == etag);
    };
    let Ok(parts) = parts.parse::<u64>() else {
        return Ok(false);
    };
    // Our own uploads' part sizes first, then the even split another tool would have used.
    let base = UploadConfig::DEFAULT_PART_SIZE;
    let mut ours = (1u32..).map(move |n| part_size_for(n, base));
    if multipart_etag(&md5_of(path, &mut ours)?) == etag {
        return Ok(true);
    }
    const MIB: u64 = 1 << 20;
    let even = size.div_ceil(parts.max(1)).div_ceil(MIB) * MIB;
    Ok(multipart_etag(&md5_of(path, &mut std::iter::repeat(even))?) == etag)
}

/// The MD5 of each consecutive piece of the file, pieces sized by `sizes`.
fn md5_of(path: &Path, sizes: &mut dyn Iterator<Item = u64>) -> std::io::Result<Vec<[u8; 16]>> {
    let mut file = std::fs::File::open(path)?;
    let mut digests = Vec::new();
    // No larger than the file: a MiB per small segment, on each of the blocking pool's
    // threads, kept a skip-only pull of 100,000 segments at 62 MiB instead of 25.
    let length = file.metadata()?.len();
    let mut buffer = vec![0u8; usize::try_from(length.clamp(1, 1 << 20)).unwrap_or(1 << 20)];
    loop {
        let mut left = sizes.next().unwrap_or(u64::MAX);
        let mut hasher = Md5::new();
        let mut any = false;
        while left > 0 {
            let want = buffer
                .len()
                .min(usize::try_from(left).unwrap_or(usize::MAX));
            let n = file.read(&mut buffer[..want])?;
            if n == 0 {
                break;
            }
            any = true;
            hasher.update(&buffer[..n]);
            left -= n as u64;
        }
        if !any && !digests.is_empty() {
            return Ok(digests);
        }
        digests.push(hasher.finalize().into());
        if left > 0 {
            return Ok(digests);
        }
    }
}

fn multipart_etag(digests: &[[u8; 16]]) -> String {
    let mut hasher = Md5::new();
    for digest in digests {
        hasher.update(digest);
    }
    format!("{}-{}", hex(&hasher.finalize().into()), digests.len())
}

fn hex(digest: &[u8; 16]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Streams `key` into `path` through `.NAME.partial`, and keeps the object's time as mtime.
async fn download(store: &dyn ObjectStore, key: &str, path: &Path) -> Result<(), CliError> {
    let output = store.get(GetRequest::whole(key)).await?;
    let modified = output.meta.last_modified;
    let mut body = output.body;
    let tmp = partial_path(path);
    let cannot_write =
        |e: std::io::Error| CliError::Io(format!("cannot write {}: {e}", path.display()));
    // tokio::fs: a blocking write or fsync must not stall the other transfers' tasks.
    let result = async {
        let mut out = tokio::fs::File::create(&tmp).await.map_err(cannot_write)?;
        while let Some(chunk) = body.next().await {
            out.write_all(&chunk?).await.map_err(cannot_write)?;
        }
        let out = out.into_std().await;
        // No fsync per file (it doubled a pull's time): a torn file fails the hash check and
        // is fetched again, and one syncfs at the end makes a finished pull durable.
        tokio::task::spawn_blocking(move || out.set_modified(modified))
            .await
            .map_err(|e| CliError::Io(e.to_string()))?
            .map_err(cannot_write)?;
        tokio::fs::rename(&tmp, path).await.map_err(cannot_write)
    }
    .await;
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Flushes the file system holding `dir` to disk (syncfs), so a finished pull survives a crash.
fn sync_filesystem(dir: &Path) {
    use std::os::fd::AsRawFd;
    if let Ok(handle) = std::fs::File::open(dir) {
        // SAFETY: syncfs only reads the fd, which `handle` keeps open during the call.
        unsafe { libc::syncfs(handle.as_raw_fd()) };
    }
}

fn partial_path(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
    path.with_file_name(format!(".{}.partial", name.unwrap_or_default()))
}

/// Streams `path` into `key`: one PutObject when small, else a multipart upload.
/// Uploads `path` to `key`; with a `budget`, its buffer and parts count in it with those of the
/// other uploads sharing it.
pub async fn upload(
    store: Arc<dyn ObjectStore>,
    key: String,
    path: &Path,
    budget: Option<Arc<WriteBudget>>,
) -> Result<(), CliError> {
    let cannot_read =
        |e: std::io::Error| CliError::Io(format!("cannot read {}: {e}", path.display()));
    let mut input = tokio::fs::File::open(path).await.map_err(cannot_read)?;
    let config = UploadConfig::default().with_budget(budget);
    let mut upload = StreamingUpload::new(store, key, PutOptions::default(), config);
    let mut buffer = vec![0u8; 1 << 20];
    let mut offset = 0u64;
    loop {
        let read = input.read(&mut buffer).await.map_err(cannot_read)?;
        if read == 0 {
            break;
        }
        upload
            .write(offset, &buffer[..read])
            .await
            .map_err(|e| CliError::Io(e.to_string()))?;
        offset += read as u64;
    }
    upload
        .finish()
        .await
        .map_err(|e| CliError::Io(e.to_string()))?;
    Ok(())
}

/// A bar on a terminal; one line per copied or skipped file otherwise.
struct Progress {
    bar: Option<indicatif::ProgressBar>,
}

impl Progress {
    /// A bar of no length yet: [`Progress::grow`] adds the bytes found to copy.
    fn new() -> Progress {
        if !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            return Progress { bar: None };
        }
        let bar = indicatif::ProgressBar::new(0);
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta} {msg}",
        ) {
            bar.set_style(style);
        }
        Progress { bar: Some(bar) }
    }

    fn grow(&self, bytes: u64) {
        if let Some(bar) = &self.bar {
            bar.inc_length(bytes);
        }
    }

    fn file_done(&self, item: &Item, outcome: &Result<bool, CliError>) {
        let what = match outcome {
            Ok(true) => "copied",
            Ok(false) => "identical",
            Err(_) => "failed",
        };
        match &self.bar {
            Some(bar) => {
                bar.inc(item.size);
                bar.set_message(format!("{what} {}", item.name));
            }
            None => {
                // Progress only: an output closed or full must not stop the copy, whose
                // summary and exit status tell how it went.
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{what} {} {}", item.name, item.size);
            }
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_etags_match_single_and_multipart_uploads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let data: Vec<u8> = (0..(10 << 20) + 5).map(|i| (i % 253) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let whole = hex(&Md5::digest(&data).into());
        assert!(local_etag_matches(&path, data.len() as u64, &whole).unwrap());
        let base = UploadConfig::DEFAULT_PART_SIZE as usize;
        let parts = [&data[..base], &data[base..]];
        let digests: Vec<[u8; 16]> = parts.iter().map(|p| Md5::digest(p).into()).collect();
        let ours = multipart_etag(&digests);
        assert!(ours.ends_with("-2"));
        assert!(local_etag_matches(&path, data.len() as u64, &ours).unwrap());
        // Another tool's even split into 5 MiB... parts: 3 parts of 4 MiB rounded to MiB.
        let even = [&data[..4 << 20], &data[4 << 20..8 << 20], &data[8 << 20..]];
        let digests: Vec<[u8; 16]> = even.iter().map(|p| Md5::digest(p).into()).collect();
        assert!(local_etag_matches(&path, data.len() as u64, &multipart_etag(&digests)).unwrap());
        assert!(
            !local_etag_matches(&path, data.len() as u64, "00000000000000000000000000000000")
                .unwrap()
        );
    }
}
