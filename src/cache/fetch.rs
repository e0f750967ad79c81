//! Fetching a run of consecutive blocks of one object version with ONE ranged GET.
//!
//! Requests cost more than bytes (per-request price, first-byte latency), so the reader claims
//! whole runs of missing blocks and fetches each run at once. The body is cut into blocks as it
//! streams in, each block in its own buffer (so evicting one block frees its memory, instead of
//! pinning a shared run buffer), and each block is published the moment its last byte arrives:
//! a reader waiting for the first block of a long run does not wait for the whole run.
//!
//! Every GET carries `If-Match` with the version's ETag: if the object was replaced since it was
//! opened the store answers PreconditionFailed, and the reader fails instead of mixing bytes of
//! two versions.

use std::collections::VecDeque;
use std::ops::Range;

use bytes::Bytes;
use futures::StreamExt;

use super::block::{FetchTicket, duplicate_error};
use super::block_buf::BlockBuf;
use super::disk::DiskCache;
use crate::store::{GetRequest, ObjectStore, StoreError, StoreResult};

/// The object version a reader reads: every block is fetched with `If-Match: etag`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectVersion {
    pub key: String,
    pub etag: String,
    pub size: u64,
}

impl ObjectVersion {
    pub fn new(key: impl Into<String>, etag: impl Into<String>, size: u64) -> Self {
        ObjectVersion {
            key: key.into(),
            etag: etag.into(),
            size,
        }
    }

    /// Bytes `index * block_size ..` of the object, clipped at its end.
    pub fn block_range(&self, block_size: u64, index: u64) -> Range<u64> {
        let start = index.saturating_mul(block_size).min(self.size);
        start..start.saturating_add(block_size).min(self.size)
    }

    /// Bytes in block `index` (the last block may be short).
    pub fn block_len(&self, block_size: u64, index: u64) -> u64 {
        let range = self.block_range(block_size, index);
        range.end - range.start
    }

    pub fn block_count(&self, block_size: u64) -> u64 {
        self.size.div_ceil(block_size)
    }
}

impl From<&crate::store::ObjectMeta> for ObjectVersion {
    fn from(meta: &crate::store::ObjectMeta) -> Self {
        ObjectVersion::new(meta.key.clone(), meta.etag.clone(), meta.size)
    }
}

/// Fetches the blocks of `tickets` (consecutive indexes, ascending, all of `object`) and
/// completes every ticket, with its block or with the error that stopped the transfer. Without a
/// disk tier that is ONE GET; with one, the blocks found on disk are served from it and each run
/// of blocks it lacks is one GET, the runs in parallel.
pub(crate) async fn fetch_run(
    store: &dyn ObjectStore,
    object: &ObjectVersion,
    block_size: u64,
    tickets: Vec<FetchTicket>,
) {
    let disk = tickets
        .first()
        .and_then(|t| t.cache().disk().cloned())
        .filter(|disk| tickets.iter().any(|t| disk.may_hold(t.id())));
    let tickets = match disk {
        Some(disk) => from_disk(disk, object, block_size, tickets).await,
        None => tickets,
    };
    let runs = consecutive_runs(tickets);
    futures::future::join_all(
        runs.into_iter()
            .map(|run| fetch_from_store(store, object, block_size, run)),
    )
    .await;
}

/// Completes the tickets whose blocks the disk tier holds intact; returns the others.
async fn from_disk(
    disk: DiskCache,
    object: &ObjectVersion,
    block_size: u64,
    tickets: Vec<FetchTicket>,
) -> Vec<FetchTicket> {
    let object = object.clone();
    let lookups = tokio::task::spawn_blocking(move || {
        let mut missing = Vec::new();
        for ticket in tickets {
            let range = object.block_range(block_size, ticket.id().index);
            match disk.get(ticket.id(), range.end - range.start) {
                Some(block) => ticket.complete(Ok(block)),
                None => missing.push(ticket),
            }
        }
        missing
    });
    // If the lookups panicked, their tickets were dropped unanswered: waiters claim afresh.
    lookups.await.unwrap_or_default()
}

/// Splits ascending tickets where their indexes stop being consecutive.
fn consecutive_runs(tickets: Vec<FetchTicket>) -> Vec<Vec<FetchTicket>> {
    let mut runs: Vec<Vec<FetchTicket>> = Vec::new();
    for ticket in tickets {
        match runs.last_mut() {
            Some(run)
                if run
                    .last()
                    .is_some_and(|l| l.id().index + 1 == ticket.id().index) =>
            {
                run.push(ticket)
            }
            _ => runs.push(vec![ticket]),
        }
    }
    runs
}

/// One GET for a run of consecutive blocks.
async fn fetch_from_store(
    store: &dyn ObjectStore,
    object: &ObjectVersion,
    block_size: u64,
    tickets: Vec<FetchTicket>,
) {
    let (Some(first), Some(last)) = (tickets.first(), tickets.last()) else {
        return;
    };
    let range = object.block_range(block_size, first.id().index).start
        ..object.block_range(block_size, last.id().index).end;
    let mut pending = VecDeque::from(tickets);
    if let Err(error) = stream_blocks(store, object, block_size, range, &mut pending).await {
        for ticket in pending {
            ticket.complete(Err(duplicate_error(&error)));
        }
    }
}

/// Streams `range` and completes the tickets at the front of `pending` as their blocks fill. On
/// error, the tickets not yet completed are still in `pending`.
async fn stream_blocks(
    store: &dyn ObjectStore,
    object: &ObjectVersion,
    block_size: u64,
    range: Range<u64>,
    pending: &mut VecDeque<FetchTicket>,
) -> StoreResult<()> {
    let request = GetRequest {
        key: object.key.clone(),
        range: Some(range.clone()),
        if_match: Some(object.etag.clone()),
    };
    let mut output = store.get(request).await?;
    if output.range != range {
        return Err(StoreError::Storage(format!(
            "asked {} for bytes {}..{}, got {}..{}",
            object.key, range.start, range.end, output.range.start, output.range.end
        )));
    }
    let mut buffer = BlockBuf::with_capacity(0);
    while let Some(chunk) = output.body.next().await {
        let mut chunk: Bytes = chunk?;
        while !chunk.is_empty() {
            let Some(ticket) = pending.front() else {
                return Err(StoreError::Storage(format!(
                    "{} sent more than the {} bytes asked for",
                    object.key,
                    range.end - range.start
                )));
            };
            let want = object.block_len(block_size, ticket.id().index) as usize;
            if buffer.is_empty() {
                // Each block gets its own exactly sized allocation (a mapping of its own, see block_buf).
                buffer = BlockBuf::with_capacity(want);
            }
            let take = (want - buffer.len()).min(chunk.len());
            buffer.extend_from_slice(&chunk.split_to(take));
            if buffer.len() == want
                && let Some(ticket) = pending.pop_front()
            {
                let block = std::mem::replace(&mut buffer, BlockBuf::with_capacity(0)).freeze();
                if let Some(disk) = ticket.cache().disk() {
                    disk.put(ticket.id(), block.clone());
                }
                ticket.complete(Ok(block));
            }
        }
    }
    if !pending.is_empty() {
        return Err(StoreError::Connection(format!(
            "body of {} ended before byte {}",
            object.key, range.end
        )));
    }
    Ok(())
}

/// Fetches one byte range of `object` into one buffer (If-Match included), checking its length.
pub(crate) async fn fetch_range(
    store: &dyn ObjectStore,
    object: &ObjectVersion,
    range: Range<u64>,
) -> StoreResult<Bytes> {
    let request = GetRequest {
        key: object.key.clone(),
        range: Some(range.clone()),
        if_match: Some(object.etag.clone()),
    };
    let bytes = store.get(request).await?.collect().await?;
    if bytes.len() as u64 != range.end - range.start {
        return Err(StoreError::Connection(format!(
            "asked {} for bytes {}..{}, got {} bytes",
            object.key,
            range.start,
            range.end,
            bytes.len()
        )));
    }
    Ok(bytes)
}
