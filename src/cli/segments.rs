//! `scribefs segments ...`: the ledger's segment operations for scripts, without FUSE.

use std::io::Write;
use std::path::Path;

use futures::StreamExt;

use super::args::{CatFormat, SegmentsCommand};
use super::in_flight::InFlight;
use super::output::{self, stdout_error};
use super::{CliError, connect, ledger};
use crate::cache::metadata_cache::LedgerIndex;
use crate::segment::{SegmentFile, SegmentStore, parse_id, segment_key};
use crate::store::config::S3Config;
use crate::store::{GetRequest, ObjectStore};
use crate::upload::WriteBudget;

pub async fn run(command: SegmentsCommand, config: &S3Config) -> Result<(), CliError> {
    let store = connect(config).await?;
    let segments = SegmentStore::new(store.clone());
    match command {
        SegmentsCommand::Ls => print_ids(&segments).await,
        SegmentsCommand::Get { id, file } => {
            let id = id_arg(&id)?;
            download(store.as_ref(), id, &config.bucket, file.as_deref()).await
        }
        SegmentsCommand::Put { id, file } => {
            super::bulk::upload(store, segment_key(id_arg(&id)?), &file, None).await
        }
        SegmentsCommand::Pull {
            dir,
            jobs,
            max_in_flight_mib,
        } => {
            let jobs = jobs.unwrap_or(config.pool_size);
            let pull = super::bulk::Direction::Pull(InFlight::new(max_in_flight_mib << 20));
            super::bulk::run(store, pull, &dir, jobs).await
        }
        SegmentsCommand::Push {
            dir,
            jobs,
            max_in_flight_mib,
        } => {
            let jobs = jobs.unwrap_or(config.pool_size);
            let push = super::bulk::Direction::Push(WriteBudget::new(max_in_flight_mib << 20));
            super::bulk::run(store, push, &dir, jobs).await
        }
        SegmentsCommand::Rm { id } => Ok(segments.delete_segment(id_arg(&id)?).await?),
        SegmentsCommand::Health => {
            segments.health_check().await?;
            let endpoint = config.endpoint.as_deref().unwrap_or("AWS");
            output::line(format_args!(
                "ok: bucket {} reachable at {endpoint}",
                config.bucket
            ))
        }
        SegmentsCommand::Cat { id, format } => match format {
            CatFormat::Raw => download(store.as_ref(), id_arg(&id)?, &config.bucket, None).await,
            CatFormat::Jsonl => ledger::cat_jsonl(&segments, id_arg(&id)?, &config.bucket).await,
        },
        SegmentsCommand::Find {
            key,
            base64,
            parallel,
            no_index,
            metadata_cache_size_mib,
            max_in_flight_mib,
        } => {
            let key = ledger::key_arg(&key, base64)?;
            let index = match no_index {
                true => None,
                false => open_index(config, metadata_cache_size_mib),
            };
            let parallel = parallel.unwrap_or(config.pool_size);
            let in_flight = InFlight::new(max_in_flight_mib << 20);
            ledger::find(&segments, &key, parallel, index, &in_flight).await
        }
        SegmentsCommand::Verify {
            ids,
            parallel,
            changed,
            metadata_cache_size_mib,
            max_in_flight_mib,
        } => {
            let ids = ids.iter().map(|id| id_arg(id)).collect::<Result<_, _>>()?;
            let parallel = parallel.unwrap_or(config.pool_size);
            let in_flight = InFlight::new(max_in_flight_mib << 20);
            let index = open_index(config, metadata_cache_size_mib);
            ledger::verify(&segments, ids, parallel, changed, index, &in_flight).await
        }
    }
}

/// The ledger index of this bucket, in the machine's metadata database (the one mounts use):
/// `metadata/` below $XDG_CACHE_HOME/scribefs, /var/cache/scribefs as root, else
/// ~/.cache/scribefs. One that cannot be opened is logged, and `find` scans every segment.
/// The database may hold `bound_mib` MiB (the oldest written rows of every table go first).
fn open_index(config: &S3Config, bound_mib: u64) -> Option<LedgerIndex> {
    let dir = super::mount::default_state_dir()?.join("metadata");
    let scope = format!(
        "{} {}",
        config.endpoint.as_deref().unwrap_or("aws"),
        config.bucket
    );
    match LedgerIndex::open(&dir, &scope, bound_mib << 20) {
        Ok(index) => {
            tracing::debug!(path = %index.path().display(), "ledger index");
            Some(index)
        }
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "no ledger index: find reads every segment");
            None
        }
    }
}

/// `ls`: the ids page by page, each page flushed once written (a reader sees them as they are
/// listed, and a closed output ends the listing).
async fn print_ids(segments: &SegmentStore) -> Result<(), CliError> {
    let mut pages = segments.files_in_order();
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut last = None;
    while let Some(page) = pages.next().await {
        for listed in page? {
            let id = listed.id;
            if listed.file == SegmentFile::Data && last != Some(id) {
                writeln!(out, "{id:016x}").map_err(stdout_error)?;
                last = Some(id);
            }
        }
        out.flush().map_err(stdout_error)?;
    }
    Ok(())
}

pub(super) fn id_arg(text: &str) -> Result<u64, CliError> {
    parse_id(text).ok_or_else(|| {
        CliError::Usage(format!(
            "segment id {text:?} is not a hex number of at most 16 digits (e.g. 2a or 000000000000002a)"
        ))
    })
}

/// Streams a segment to `file` (or stdout). A file is written under a temporary name and
/// renamed at the end, so a failed download never leaves a partial file under the name a
/// backup script will trust. Memory stays at one network chunk whatever the segment's size.
async fn download(
    store: &dyn ObjectStore,
    id: u64,
    bucket: &str,
    file: Option<&Path>,
) -> Result<(), CliError> {
    let mut body = match store.get(GetRequest::whole(segment_key(id))).await {
        Ok(output) => output.body,
        Err(e) if e.is_not_found() => {
            return Err(CliError::Usage(format!(
                "segment {id:016x} not found in bucket {bucket}"
            )));
        }
        Err(e) => return Err(e.into()),
    };
    let Some(path) = file else {
        let mut out = std::io::stdout().lock();
        let mut written = Ok(());
        while let Some(chunk) = body.next().await {
            written = out.write_all(&chunk?);
            if written.is_err() {
                break;
            }
        }
        return written.and_then(|()| out.flush()).map_err(stdout_error);
    };
    let tmp = path.with_extension("scribefs-partial");
    let cannot_write =
        |e: std::io::Error| CliError::Io(format!("cannot write {}: {e}", path.display()));
    let result = async {
        let mut out = std::fs::File::create(&tmp).map_err(cannot_write)?;
        while let Some(chunk) = body.next().await {
            out.write_all(&chunk?).map_err(cannot_write)?;
        }
        out.sync_all().map_err(cannot_write)?;
        std::fs::rename(&tmp, path).map_err(cannot_write)
    }
    .await;
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}
