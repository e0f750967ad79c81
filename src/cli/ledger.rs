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

/// One segment `verify` checks: what the listing showed of its two files, and their versions.
struct Target {
    id: u64,
    /// `None` for a named id: whether each file exists is learned from its GET.
    present: Option<Present>,
    data: Option<ObjectVersionId>,
    sidecar: Option<ObjectVersionId>,
}

impl Target {
    /// Both files' versions, when both were listed.
    fn versions(&self) -> Option<(u64, ObjectVersionId, ObjectVersionId)> {
        Some((self.id, self.data.clone()?, self.sidecar.clone()?))
    }
}

/// `verify [ID...]`: one stdout line per bad segment, a summary, non-zero exit if any is bad.
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
    mut index: Option<LedgerIndex>,
) -> Result<(), CliError> {
    let mut targets: Vec<Target> = if ids.is_empty() {
        let mut targets: Vec<Target> = Vec::new();
        for (id, file, object) in segments.list_versions().await? {
            if targets.last().is_none_or(|last| last.id != id) {
                targets.push(Target {
                    id,
                    present: Some(Present::default()),
                    data: None,
                    sidecar: None,
                });
            }
            let version = ObjectVersionId {
                etag: object.etag,
                last_modified: object.last_modified,
                size: object.size,
            };
            if let Some(target) = targets.last_mut() {
                let present = target.present.get_or_insert_with(Present::default);
                match file {
                    SegmentFile::Data => (present.data, target.data) = (true, Some(version)),
                    SegmentFile::Meta => (present.sidecar, target.sidecar) = (true, Some(version)),
                }
            }
        }
        targets
    } else {
        ids.into_iter()
            .map(|id| Target {
                id,
                present: None,
                data: None,
                sidecar: None,
            })
            .collect()
    };
    let listed = targets.len();
    if let Some(index) = index.as_mut().filter(|_| changed) {
        let known: Vec<_> = targets.iter().filter_map(Target::versions).collect();
        let unchanged: std::collections::HashSet<u64> = known
            .iter()
            .zip(index.verified(&known))
            .filter_map(|((id, _, _), intact)| intact.then_some(*id))
            .collect();
        targets.retain(|t| !unchanged.contains(&t.id));
    }
    let skipped = listed - targets.len();
    let total = targets.len();
    let mut results = futures::stream::iter(targets)
        .map(|target| async move {
            let result = verify_one(segments, target.id, target.present).await;
            (target, result)
        })
        .buffered(parallel.max(1));
    let mut bad = 0usize;
    let mut passed = Vec::new();
    let mut failed = Vec::new();
    let mut out = std::io::stdout().lock();
    while let Some((target, result)) = results.next().await {
        match result {
            Ok(()) => passed.extend(target.versions()),
            Err(reason) => {
                bad += 1;
                failed.push(target.id);
                // A closed output does not end the check: the exit status must still count
                // the bad segments past the ones a `| head` showed.
                unless_closed(writeln!(out, "{reason}").map_err(stdout_error))?;
            }
        }
        if let Some(index) = index.as_mut() {
            if passed.len() + failed.len() >= INDEX_BATCH {
                index.record_verified(&std::mem::take(&mut passed), &std::mem::take(&mut failed));
            }
        }
    }
    if let Some(index) = index.as_mut() {
        index.record_verified(&passed, &failed);
    }
    let skipped_note = if changed {
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
