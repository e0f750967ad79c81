//! `scribefs segments cat/find/verify`: the ledger's view of its segments, decoded by
//! [`crate::segment::entries`]. Decoding is CPU work and runs on the blocking pool; fetches run
//! `parallel` segments at a time, so memory stays near `parallel` decoded segments.

use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::io::Write;

use base64::Engine;
use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt, TryStreamExt};

use super::CliError;
use super::in_flight::InFlight;
use super::output::{stdout_error, unless_closed};
use crate::cache::metadata_cache::{LedgerIndex, ObjectVersionId};
use crate::segment::entries::{self, EntriesError, SegmentEntries};
use crate::segment::index::{key_hashes, may_hold};
use crate::segment::{ListedFile, SegmentFile, SegmentStore, file_name};
use crate::store::{GetObjectOutput, StoreError, StoreResult};

/// `cat ID`: the entries as JSON Lines on stdout.
pub async fn cat_jsonl(segments: &SegmentStore, id: u64, bucket: &str) -> Result<(), CliError> {
    let (stored, sidecar) = tokio::try_join!(segments.get_segment(id), segments.get_metadata(id))?;
    let Some(stored) = stored else {
        return Err(CliError::Usage(format!(
            "segment {id:016x} not found in bucket {bucket}"
        )));
    };
    let decoded = decode(id, stored, sidecar).await?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    decoded
        .write_jsonl(&mut out)
        .and_then(|()| out.flush())
        .map_err(stdout_error)
}

/// The key `find` looks for: the text's bytes, or base64-decoded with `--base64`.
pub fn key_arg(text: &str, is_base64: bool) -> Result<Vec<u8>, CliError> {
    if !is_base64 {
        return Ok(text.as_bytes().to_vec());
    }
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|e| CliError::Usage(format!("key {text:?} is not base64: {e}")))
}

/// `find KEY`: the ids of segments holding KEY, newest first. The listing streams a page at
/// a time and the holders are printed once it is through (8 bytes each until then): memory
/// grows with the holders, not with the bucket. A segment that cannot be read is reported on
/// stderr and makes the exit status non-zero.
///
/// With an `index`, a segment whose listed version (ETag, LastModified, size) is indexed is
/// fetched only if its key hashes may hold KEY; every other segment is fetched, decoded and
/// indexed on the way. The decoded segment alone decides, so the index never hides a holder.
pub async fn find(
    segments: &SegmentStore,
    key: &[u8],
    parallel: usize,
    index: Option<LedgerIndex>,
    in_flight: &InFlight,
) -> Result<(), CliError> {
    let index = RefCell::new(index);
    let index = &index;
    let mut results = segments
        .files_in_order()
        .map_ok(|page| {
            let candidates = candidates(index, key, page);
            futures::stream::iter(candidates.into_iter().map(Ok::<_, StoreError>))
        })
        .try_flatten()
        .map(|candidate| async move {
            let (id, listed_size, to_index) = candidate?;
            let searched = search_one(segments, in_flight, key, id, listed_size, to_index).await;
            Ok::<_, CliError>(searched)
        })
        .buffered(parallel.max(1));
    let mut unreadable = 0usize;
    let mut holders = Vec::new();
    let mut learned = Vec::new();
    while let Some(result) = results.next().await {
        // A failed listing ends the search: the segments past it were never seen.
        match result? {
            Ok((id, holds, hashes)) => {
                learned.extend(hashes);
                if learned.len() >= INDEX_BATCH {
                    put_hashes(index, &mut learned);
                }
                if holds {
                    holders.push(id);
                }
            }
            Err(e) => {
                unreadable += 1;
                eprintln!("scribefs: cannot search {e}");
            }
        }
    }
    put_hashes(index, &mut learned);
    report_peak(in_flight);
    holders.sort_unstable_by(|a, b| b.cmp(a));
    holders.dedup();
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for id in holders {
        // A closed output ends the printing: the ids are all it gives.
        writeln!(out, "{id:016x}").map_err(stdout_error)?;
    }
    out.flush().map_err(stdout_error)?;
    match unreadable {
        0 => Ok(()),
        n => Err(CliError::Usage(format!(
            "{n} segment(s) could not be searched (see above)"
        ))),
    }
}

/// Whether segment `id` holds `key`, and if `to_index` its key hashes at the version read
/// (the GET's, which a replacement since the listing makes newer than the listed one).
async fn search_one(
    segments: &SegmentStore,
    in_flight: &InFlight,
    key: &[u8],
    id: u64,
    listed_size: u64,
    to_index: bool,
) -> Result<(u64, bool, Option<(u64, ObjectVersionId, Vec<u64>)>), CliError> {
    let mut held = in_flight.reserve(listed_size).await;
    let Some(output) = segments.open(id, SegmentFile::Data).await? else {
        // Deleted since the listing: it holds nothing now.
        return Ok((id, false, None));
    };
    in_flight.grow(&mut held, output.meta.size).await;
    let version = ObjectVersionId {
        etag: output.meta.etag.clone(),
        last_modified: output.meta.last_modified,
        size: output.meta.size,
    };
    let stored = output.collect().await?;
    let _decoding = in_flight.decoding().await;
    let wanted_key = key.to_vec();
    let (holds, hashes) = decode_with(id, stored, move |decoded| {
        let hashes = to_index.then(|| key_hashes(decoded));
        (decoded.get(&wanted_key).is_some(), hashes)
    })
    .await?;
    Ok((id, holds, hashes.map(|h| (id, version, h))))
}

/// The segments of one listing page `find` must fetch, with their listed sizes and whether to
/// index them: those not indexed at their listed version, and those whose hashes may hold
/// `key`. One index read per page.
fn candidates(
    index: &RefCell<Option<LedgerIndex>>,
    key: &[u8],
    page: Vec<ListedFile>,
) -> Vec<(u64, u64, bool)> {
    let listed: Vec<(u64, ObjectVersionId)> = page
        .into_iter()
        .filter(|listed| listed.file == SegmentFile::Data)
        .map(|listed| (listed.id, version_of(&listed)))
        .collect();
    let mut index = index.borrow_mut();
    let Some(index) = index.as_mut() else {
        return listed
            .into_iter()
            .map(|(id, v)| (id, v.size, false))
            .collect();
    };
    let known = index.get_many(&listed);
    listed
        .into_iter()
        .zip(known)
        .filter(|(_, hashes)| hashes.as_deref().is_none_or(|h| may_hold(h, key)))
        .map(|((id, version), hashes)| (id, version.size, hashes.is_none()))
        .collect()
}

/// Writes the hashes learned so far to the index, if any, and empties `learned`.
fn put_hashes(
    index: &RefCell<Option<LedgerIndex>>,
    learned: &mut Vec<(u64, ObjectVersionId, Vec<u64>)>,
) {
    if let Some(index) = index.borrow_mut().as_mut() {
        index.put_many(learned);
    }
    learned.clear();
}

/// The version of a listed file, as the ledger index keys it.
fn version_of(listed: &ListedFile) -> ObjectVersionId {
    ObjectVersionId {
        etag: listed.etag.clone(),
        last_modified: listed.last_modified,
        size: listed.size,
    }
}

/// Logs the most bytes of segments held at once (what bounded the command's memory), and the
/// process's peak RSS.
fn report_peak(in_flight: &InFlight) {
    tracing::debug!(
        peak_bytes = in_flight.peak_bytes(),
        peak_rss_bytes = super::in_flight::peak_rss_bytes(),
        "segments in flight at most"
    );
}

/// Segments indexed (or verified) per write transaction: a run stopped half way keeps most of
/// its work.
const INDEX_BATCH: usize = 512;

/// What the bucket holds of one segment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Present {
    data: bool,
    sidecar: bool,
}

/// One segment `verify` checks: what the listing showed of its two files, and their versions.
struct Target {
    id: u64,
    /// `None` for a named id: whether each file exists is learned from its GET.
    present: Option<Present>,
    data: Option<ObjectVersionId>,
    sidecar: Option<ObjectVersionId>,
}

impl Target {
    fn named(id: u64) -> Target {
        Target {
            id,
            present: None,
            data: None,
            sidecar: None,
        }
    }

    /// Both files' versions, when both were listed.
    fn versions(&self) -> Option<(u64, ObjectVersionId, ObjectVersionId)> {
        Some((self.id, self.data.clone()?, self.sidecar.clone()?))
    }
}

/// `verify [ID...]`: one stdout line per bad segment, a summary, non-zero exit if any is bad.
/// Without ids, the bucket's segments stream from the listing a page at a time, `parallel`
/// checked at once: memory does not grow with the bucket.
///
/// Every result is remembered in `index` (a pass at the listed versions of both files; a
/// failure forgets the segment, so it is checked again every run until it passes). With
/// `changed`, a segment whose data file and sidecar are both at versions found intact before
/// is skipped and counted.
pub async fn verify(
    segments: &SegmentStore,
    ids: Vec<u64>,
    parallel: usize,
    changed: bool,
    index: Option<LedgerIndex>,
    in_flight: &InFlight,
) -> Result<(), CliError> {
    let index = RefCell::new(index);
    let index = &index;
    let skipped = Cell::new(0usize);
    let skipped_ref = &skipped;
    let targets = if ids.is_empty() {
        listed_segments(segments)
    } else {
        futures::stream::iter(ids.into_iter().map(|id| Ok(Target::named(id)))).boxed()
    };
    let mut results = targets
        .ready_chunks(INDEX_BATCH)
        .map(move |chunk| {
            let chunk = match changed {
                true => unverified(index, chunk, skipped_ref),
                false => chunk,
            };
            futures::stream::iter(chunk)
        })
        .flatten()
        .map(|target| async move {
            let target = target?;
            let result = verify_one(segments, in_flight, &target).await;
            Ok::<_, CliError>((target, result))
        })
        .buffered(parallel.max(1));
    let (mut total, mut bad) = (0usize, 0usize);
    let mut passed = Vec::new();
    let mut failed = Vec::new();
    let mut out = std::io::stdout().lock();
    while let Some(result) = results.next().await {
        // A failed listing ends the check: the segments past it were never seen.
        let (target, checked) = result?;
        total += 1;
        match checked {
            Ok(()) => passed.extend(target.versions()),
            Err(reason) => {
                bad += 1;
                failed.push(target.id);
                // A closed output does not end the check: the exit status must still count
                // the bad segments past the ones a `| head` showed.
                unless_closed(writeln!(out, "{reason}").map_err(stdout_error))?;
            }
        }
        if passed.len() + failed.len() >= INDEX_BATCH {
            record_verified(index, &mut passed, &mut failed);
        }
    }
    record_verified(index, &mut passed, &mut failed);
    report_peak(in_flight);
    let skipped_note = if changed {
        let skipped = skipped.get();
        format!(", {skipped} skipped (unchanged since verified on this machine)")
    } else {
        String::new()
    };
    if bad > 0 {
        unless_closed(out.flush().map_err(stdout_error))?;
        return Err(CliError::Usage(format!(
            "{bad} of {total} segment(s) are bad{skipped_note}"
        )));
    }
    unless_closed(
        writeln!(out, "ok: {total} segment(s) verified{skipped_note}")
            .and_then(|()| out.flush())
            .map_err(stdout_error),
    )
}

/// The targets of `chunk` not found intact before at their listed versions (and any listing
/// failure); those dropped are counted in `skipped`. One index read per chunk.
fn unverified(
    index: &RefCell<Option<LedgerIndex>>,
    chunk: Vec<StoreResult<Target>>,
    skipped: &Cell<usize>,
) -> Vec<StoreResult<Target>> {
    let mut index = index.borrow_mut();
    let Some(index) = index.as_mut() else {
        return chunk;
    };
    let known: Vec<_> = chunk
        .iter()
        .filter_map(|t| t.as_ref().ok().and_then(Target::versions))
        .collect();
    let unchanged: HashSet<u64> = known
        .iter()
        .zip(index.verified(&known))
        .filter_map(|((id, _, _), intact)| intact.then_some(*id))
        .collect();
    let before = chunk.len();
    let kept: Vec<_> = chunk
        .into_iter()
        .filter(|t| t.as_ref().map_or(true, |t| !unchanged.contains(&t.id)))
        .collect();
    skipped.set(skipped.get() + before - kept.len());
    kept
}

/// Writes the results so far to the index, if any, and empties both lists.
fn record_verified(
    index: &RefCell<Option<LedgerIndex>>,
    passed: &mut Vec<(u64, ObjectVersionId, ObjectVersionId)>,
    failed: &mut Vec<u64>,
) {
    if let Some(index) = index.borrow_mut().as_mut() {
        index.record_verified(passed, failed);
    }
    passed.clear();
    failed.clear();
}

/// The bucket's segments with the files each has and their versions, in id order, as the
/// listing goes: a segment's data file and sidecar list next to each other, also across pages.
fn listed_segments(segments: &SegmentStore) -> BoxStream<'static, StoreResult<Target>> {
    let files = segments
        .files_in_order()
        .map_ok(|page| futures::stream::iter(page.into_iter().map(Ok)))
        .try_flatten()
        .boxed();
    futures::stream::unfold(
        (files, None::<Target>),
        |(mut files, mut pending)| async move {
            loop {
                let listed = match files.next().await {
                    Some(Ok(listed)) => listed,
                    Some(Err(error)) => return Some((Err(error), (files, None))),
                    None => return Some((Ok(pending.take()?), (files, None))),
                };
                let finished = match &pending {
                    Some(current) if current.id != listed.id => pending.take(),
                    _ => None,
                };
                let target = pending.get_or_insert_with(|| Target {
                    present: Some(Present::default()),
                    ..Target::named(listed.id)
                });
                let present = target.present.get_or_insert_with(Present::default);
                let version = Some(version_of(&listed));
                match listed.file {
                    SegmentFile::Data => (present.data, target.data) = (true, version),
                    SegmentFile::Meta => (present.sidecar, target.sidecar) = (true, version),
                }
                if let Some(target) = finished {
                    return Some((Ok(target), (files, pending)));
                }
            }
        },
    )
    .boxed()
}

/// Checks one segment; the error is its report line, naming the segment.
async fn verify_one(
    segments: &SegmentStore,
    in_flight: &InFlight,
    target: &Target,
) -> Result<(), String> {
    let id = target.id;
    let cannot_read =
        |e: crate::store::StoreError| format!("segment {id:016x}: cannot be read: {e}");
    let listed_size = [&target.data, &target.sidecar]
        .into_iter()
        .flatten()
        .map(|version| version.size)
        .sum();
    let mut held = None;
    let (stored, sidecar) = match target.present {
        Some(Present {
            data: true,
            sidecar: true,
        })
        | None => {
            let reserved = held.insert(in_flight.reserve(listed_size).await);
            let (stored, sidecar) = tokio::try_join!(
                segments.open(id, SegmentFile::Data),
                segments.open(id, SegmentFile::Meta)
            )
            .map_err(cannot_read)?;
            let size = [&stored, &sidecar]
                .into_iter()
                .flatten()
                .map(|output| output.meta.size)
                .sum();
            in_flight.grow(reserved, size).await;
            tokio::try_join!(read_body(stored), read_body(sidecar)).map_err(cannot_read)?
        }
        Some(Present { data, sidecar }) => (data.then(Bytes::new), sidecar.then(Bytes::new)),
    };
    let data_name = file_name(id, SegmentFile::Data);
    let sidecar_name = file_name(id, SegmentFile::Meta);
    match (stored, sidecar) {
        (Some(stored), Some(sidecar)) => {
            let _decoding = in_flight.decoding().await;
            decode(id, stored, Some(sidecar))
                .await
                .map(drop)
                .map_err(|e| e.to_string())
        }
        (Some(_), None) => Err(format!("segment {id:016x}: has no sidecar {sidecar_name}")),
        (None, Some(_)) => Err(format!(
            "segment {id:016x}: sidecar {sidecar_name} has no segment {data_name}"
        )),
        (None, None) => Err(format!(
            "segment {id:016x}: no such segment ({data_name} and {sidecar_name} are missing)"
        )),
    }
}

/// The whole body of a GET response, if there was one.
async fn read_body(output: Option<GetObjectOutput>) -> StoreResult<Option<Bytes>> {
    match output {
        Some(output) => output.collect().await.map(Some),
        None => Ok(None),
    }
}

/// `find` decodes segments stored in at most this many bytes on the task that fetched them:
/// even gzip cannot make more than about 4 MiB of them (deflate's ratio is at most 1032:1), a
/// few milliseconds of CPU. Handing each of 100,000 tiny segments to the blocking pool and back
/// cost two thread wake-ups apiece: inline, a cold `find` over 20,000 at 20 ms took 15-25% less
/// CPU (its time moved within the noise of a shared machine). `verify` keeps the blocking
/// pool: its stream is polled by one task, and inline it took 30% longer in one trial.
const FIND_DECODES_INLINE_BYTES: usize = 4096;

/// Runs `work` (a decode) inline when `inline`, else on the blocking pool.
async fn decoding<T: Send + 'static>(
    id: u64,
    inline: bool,
    work: impl FnOnce() -> Result<T, EntriesError> + Send + 'static,
) -> Result<T, CliError> {
    let decoded = if inline {
        work()
    } else {
        tokio::task::spawn_blocking(work)
            .await
            .map_err(|e| CliError::Io(format!("segment {id:016x}: decoding stopped: {e}")))?
    };
    decoded.map_err(CliError::from)
}

/// Decodes (and checks against the sidecar, if any) on the blocking pool.
async fn decode(
    id: u64,
    stored: Bytes,
    sidecar: Option<Bytes>,
) -> Result<SegmentEntries, CliError> {
    decoding(id, false, move || {
        entries::decode_checked(id, &stored, sidecar.as_deref())
    })
    .await
}

/// Decodes and keeps only what `keep` takes of the segment: `find`'s, small segments inline.
async fn decode_with<T: Send + 'static>(
    id: u64,
    stored: Bytes,
    keep: impl FnOnce(&SegmentEntries) -> T + Send + 'static,
) -> Result<T, CliError> {
    let inline = stored.len() <= FIND_DECODES_INLINE_BYTES;
    decoding(id, inline, move || {
        entries::decode_checked(id, &stored, None).map(|d| keep(&d))
    })
    .await
}
