//! `scribefs segments cat/find/verify`: the ledger's view of its segments, decoded by
//! [`crate::segment::entries`]. Decoding is CPU work and runs on the blocking pool; fetches run
//! `parallel` segments at a time, so memory stays near `parallel` decoded segments.

use std::io::Write;

use base64::Engine;
use bytes::Bytes;
use futures::StreamExt;

use super::CliError;
use super::output::{stdout_error, unless_closed};
use crate::cache::metadata_cache::{LedgerIndex, ObjectVersionId};
use crate::segment::entries::{self, EntriesError, SegmentEntries};
use crate::segment::index::{key_hashes, may_hold};
use crate::segment::{SegmentFile, SegmentStore, file_name};

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

/// `find KEY`: the ids of segments holding KEY, newest first, printed as they are confirmed.
/// A segment that cannot be read is reported on stderr and makes the exit status non-zero.
///
/// With an `index`, a segment whose listed version (ETag, LastModified, size) is indexed is
/// fetched only if its key hashes may hold KEY; every other segment is fetched, decoded and
/// indexed on the way. The decoded segment alone decides, so the index never hides a holder.
pub async fn find(
    segments: &SegmentStore,
    key: &[u8],
    parallel: usize,
    mut index: Option<LedgerIndex>,
) -> Result<(), CliError> {
    let mut listed = segments.list_data_versions().await?;
    listed.reverse();
    let versions: Vec<(u64, ObjectVersionId)> = listed
        .into_iter()
        .map(|(id, object)| {
            let version = ObjectVersionId {
                etag: object.etag,
                last_modified: object.last_modified,
                size: object.size,
            };
            (id, version)
        })
        .collect();
    let known = match index.as_mut() {
        Some(index) => index.get_many(&versions),
        None => vec![None; versions.len()],
    };
    let indexing = index.is_some();
    let wanted = versions
        .into_iter()
        .zip(known)
        .filter(|(_, hashes)| hashes.as_deref().is_none_or(|h| may_hold(h, key)))
        .map(|((id, version), hashes)| (id, version, indexing && hashes.is_none()));
    let mut results = futures::stream::iter(wanted)
        .map(|(id, version, to_index)| async move {
            let Some(stored) = segments.get_segment(id).await? else {
                // Deleted since the listing: it holds nothing now.
                return Ok((id, false, None));
            };
            let wanted_key = key.to_vec();
            let (holds, hashes) = decode_with(id, stored, move |decoded| {
                let hashes = to_index.then(|| key_hashes(decoded));
                (decoded.get(&wanted_key).is_some(), hashes)
            })
            .await?;
            Ok::<_, CliError>((id, holds, hashes.map(|h| (id, version, h))))
        })
        .buffered(parallel.max(1));
    let mut unreadable = 0usize;
    let mut learned = Vec::new();
    let mut out = std::io::stdout().lock();
    while let Some(result) = results.next().await {
        match result {
            Ok((id, holds, hashes)) => {
                learned.extend(hashes);
                if let Some(index) = index.as_mut().filter(|_| learned.len() >= INDEX_BATCH) {
                    index.put_many(&std::mem::take(&mut learned));
                }
                if holds {
                    // A closed output ends the search: the ids are all it gives.
                    writeln!(out, "{id:016x}")
                        .and_then(|()| out.flush())
                        .map_err(stdout_error)?;
                }
            }
            Err(e) => {
                unreadable += 1;
                eprintln!("scribefs: cannot search {e}");
            }
        }
    }
    if let Some(index) = index.as_mut() {
        index.put_many(&learned);
    }
    match unreadable {
        0 => Ok(()),
        n => Err(CliError::Usage(format!(
            "{n} segment(s) could not be searched (see above)"
        ))),
    }
}

/// Segments indexed per write transaction: a search stopped half way keeps most of its work.
const INDEX_BATCH: usize = 512;

/// What the bucket holds of one segment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Present {
    data: bool,
    sidecar: bool,
}

/// `verify [ID...]`: one stdout line per bad segment, a summary, non-zero exit if any is bad.
pub async fn verify(
    segments: &SegmentStore,
    ids: Vec<u64>,
    parallel: usize,
) -> Result<(), CliError> {
    let targets: Vec<(u64, Option<Present>)> = if ids.is_empty() {
        let files = segments.list_files().await?;
        let mut targets: Vec<(u64, Option<Present>)> = Vec::new();
        for (id, file) in files {
            if targets.last().is_none_or(|(last, _)| *last != id) {
                targets.push((id, Some(Present::default())));
            }
            if let Some((_, Some(present))) = targets.last_mut() {
                match file {
                    SegmentFile::Data => present.data = true,
                    SegmentFile::Meta => present.sidecar = true,
                }
            }
        }
        targets
    } else {
        // Named ids: whether each file exists is learned from its GET.
        ids.into_iter().map(|id| (id, None)).collect()
    };
    let total = targets.len();
    let mut results = futures::stream::iter(targets)
        .map(|(id, present)| verify_one(segments, id, present))
        .buffered(parallel.max(1));
    let mut bad = 0usize;
    let mut out = std::io::stdout().lock();
    while let Some(result) = results.next().await {
        if let Err(reason) = result {
            bad += 1;
            // A closed output does not end the check: the exit status must still count the
            // bad segments past the ones a `| head` showed.
            unless_closed(writeln!(out, "{reason}").map_err(stdout_error))?;
        }
    }
    if bad > 0 {
        unless_closed(out.flush().map_err(stdout_error))?;
        return Err(CliError::Usage(format!(
            "{bad} of {total} segment(s) are bad"
        )));
    }
    unless_closed(
        writeln!(out, "ok: {total} segment(s) verified")
            .and_then(|()| out.flush())
            .map_err(stdout_error),
    )
}

/// Checks one segment; the error is its report line, naming the segment.
async fn verify_one(
    segments: &SegmentStore,
    id: u64,
    present: Option<Present>,
) -> Result<(), String> {
    let cannot_read =
        |e: crate::store::StoreError| format!("segment {id:016x}: cannot be read: {e}");
    let (stored, sidecar) = match present {
        Some(Present {
            data: true,
            sidecar: true,
        })
        | None => tokio::try_join!(segments.get_segment(id), segments.get_metadata(id))
            .map_err(cannot_read)?,
        Some(Present { data, sidecar }) => (data.then(Bytes::new), sidecar.then(Bytes::new)),
    };
    let data_name = file_name(id, SegmentFile::Data);
    let sidecar_name = file_name(id, SegmentFile::Meta);
    match (stored, sidecar) {
        (Some(stored), Some(sidecar)) => decode(id, stored, Some(sidecar))
            .await
            .map(drop)
            .map_err(|e| e.to_string()),
        (Some(_), None) => Err(format!("segment {id:016x}: has no sidecar {sidecar_name}")),
        (None, Some(_)) => Err(format!(
            "segment {id:016x}: sidecar {sidecar_name} has no segment {data_name}"
        )),
        (None, None) => Err(format!(
            "segment {id:016x}: no such segment ({data_name} and {sidecar_name} are missing)"
        )),
    }
}

/// Decodes (and checks against the sidecar, if any) on the blocking pool.
async fn decode(
    id: u64,
    stored: Bytes,
    sidecar: Option<Bytes>,
) -> Result<SegmentEntries, CliError> {
    tokio::task::spawn_blocking(move || entries::decode_checked(id, &stored, sidecar.as_deref()))
        .await
        .map_err(|e| CliError::Io(format!("segment {id:016x}: decoding stopped: {e}")))?
        .map_err(|e: EntriesError| e.into())
}

/// Decodes on the blocking pool and keeps only what `keep` takes of the segment.
async fn decode_with<T: Send + 'static>(
    id: u64,
    stored: Bytes,
    keep: impl FnOnce(&SegmentEntries) -> T + Send + 'static,
) -> Result<T, CliError> {
    tokio::task::spawn_blocking(move || {
        entries::decode_checked(id, &stored, None).map(|d| keep(&d))
    })
    .await
    .map_err(|e| CliError::Io(format!("segment {id:016x}: decoding stopped: {e}")))?
    .map_err(|e: EntriesError| e.into())
}
