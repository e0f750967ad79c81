//! `scribefs segments cat/find/verify`: the ledger's view of its segments, decoded by
//! [`crate::segment::entries`]. Decoding is CPU work and runs on the blocking pool; fetches run
//! `parallel` segments at a time, so memory stays near `parallel` decoded segments.

use std::io::Write;

use base64::Engine;
use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt, TryStreamExt};

use super::CliError;
use super::output::{stdout_error, unless_closed};
use crate::segment::entries::{self, EntriesError, SegmentEntries};
use crate::segment::{SegmentFile, SegmentStore, file_name};
use crate::store::StoreResult;

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
pub async fn find(segments: &SegmentStore, key: &[u8], parallel: usize) -> Result<(), CliError> {
    let mut ids = segments.list_segments().await?;
    ids.reverse();
    let mut results = futures::stream::iter(ids)
        .map(|id| async move {
            let Some(stored) = segments.get_segment(id).await? else {
                // Deleted since the listing: it holds nothing now.
                return Ok((id, false));
            };
            let decoded = decode(id, stored, None).await?;
            Ok::<_, CliError>((id, decoded.get(key).is_some()))
        })
        .buffered(parallel.max(1));
    let mut unreadable = 0usize;
    let mut out = std::io::stdout().lock();
    while let Some(result) = results.next().await {
        match result {
            Ok((id, true)) => {
                // A closed output ends the search: the ids are all it gives.
                writeln!(out, "{id:016x}")
                    .and_then(|()| out.flush())
                    .map_err(stdout_error)?;
            }
            Ok((_, false)) => {}
            Err(e) => {
                unreadable += 1;
                eprintln!("scribefs: cannot search {e}");
            }
        }
    }
    match unreadable {
        0 => Ok(()),
        n => Err(CliError::Usage(format!(
            "{n} segment(s) could not be searched (see above)"
        ))),
    }
}

/// What the bucket holds of one segment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Present {
    data: bool,
    sidecar: bool,
}

/// `verify [ID...]`: one stdout line per bad segment, a summary, non-zero exit if any is bad.
/// Without ids, the bucket's segments stream from the listing a page at a time, `parallel`
/// checked at once: memory does not grow with the bucket.
pub async fn verify(
    segments: &SegmentStore,
    ids: Vec<u64>,
    parallel: usize,
) -> Result<(), CliError> {
    let targets = if ids.is_empty() {
        listed_segments(segments)
    } else {
        // Named ids: whether each file exists is learned from its GET.
        futures::stream::iter(ids.into_iter().map(|id| Ok((id, None)))).boxed()
    };
    let mut results = targets
        .map(|target| async move {
            let (id, present) = target?;
            Ok::<_, CliError>(verify_one(segments, id, present).await)
        })
        .buffered(parallel.max(1));
    let (mut total, mut bad) = (0usize, 0usize);
    let mut out = std::io::stdout().lock();
    while let Some(result) = results.next().await {
        // A failed listing ends the check: the segments past it were never seen.
        let checked = result?;
        total += 1;
        if let Err(reason) = checked {
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

/// The bucket's segments with the files each has, in id order, as the listing goes: a
/// segment's data file and sidecar list next to each other, also across pages.
fn listed_segments(
    segments: &SegmentStore,
) -> BoxStream<'static, StoreResult<(u64, Option<Present>)>> {
    let files = segments
        .files_in_order()
        .map_ok(|page| futures::stream::iter(page.into_iter().map(Ok)))
        .try_flatten()
        .boxed();
    futures::stream::unfold((files, None), |(mut files, mut pending)| async move {
        loop {
            let (id, file) = match files.next().await {
                Some(Ok(listed)) => listed,
                Some(Err(error)) => return Some((Err(error), (files, None))),
                None => {
                    let (id, present) = pending.take()?;
                    return Some((Ok((id, Some(present))), (files, None)));
                }
            };
            let finished = match pending {
                Some((current, _)) if current != id => pending.take(),
                _ => None,
            };
            let (_, present) = pending.get_or_insert((id, Present::default()));
            match file {
                SegmentFile::Data => present.data = true,
                SegmentFile::Meta => present.sidecar = true,
            }
            if let Some((id, present)) = finished {
                return Some((Ok((id, Some(present))), (files, pending)));
            }
        }
    })
    .boxed()
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
