//! `scribefs segments ...`: the ledger's segment operations for scripts, without FUSE.

use std::io::Write;
use std::path::Path;

use bytes::Bytes;

use super::args::SegmentsCommand;
use super::{CliError, connect};
use crate::segment::{SegmentStore, parse_id};
use crate::store::config::S3Config;

pub async fn run(command: SegmentsCommand, config: &S3Config) -> Result<(), CliError> {
    let segments = SegmentStore::new(connect(config).await?);
    match command {
        SegmentsCommand::Ls => {
            let ids = segments.list_segments().await?;
            let mut out = std::io::stdout().lock();
            for id in ids {
                writeln!(out, "{id:016x}").map_err(|e| CliError::Io(e.to_string()))?;
            }
            out.flush().map_err(|e| CliError::Io(e.to_string()))
        }
        SegmentsCommand::Get { id, file } => {
            let id = id_arg(&id)?;
            let data = segments.get_segment(id).await?.ok_or_else(|| {
                CliError::Usage(format!(
                    "segment {id:016x} not found in bucket {}",
                    config.bucket
                ))
            })?;
            match file {
                Some(path) => write_atomically(&path, &data),
                None => std::io::stdout()
                    .lock()
                    .write_all(&data)
                    .map_err(|e| CliError::Io(e.to_string())),
            }
        }
        SegmentsCommand::Put { id, file } => {
            let id = id_arg(&id)?;
            let data = tokio::fs::read(&file)
                .await
                .map_err(|e| CliError::Io(format!("cannot read {}: {e}", file.display())))?;
            segments.put_segment(id, Bytes::from(data)).await?;
            Ok(())
        }
        SegmentsCommand::Rm { id } => Ok(segments.delete_segment(id_arg(&id)?).await?),
        SegmentsCommand::Health => {
            segments.health_check().await?;
            let endpoint = config.endpoint.as_deref().unwrap_or("AWS");
            println!("ok: bucket {} reachable at {endpoint}", config.bucket);
            Ok(())
        }
    }
}

fn id_arg(text: &str) -> Result<u64, CliError> {
    parse_id(text).ok_or_else(|| {
        CliError::Usage(format!(
            "segment id {text:?} is not a hex number of at most 16 digits (e.g. 2a or 000000000000002a)"
        ))
    })
}

/// Writes through a temporary name and renames, so a failed download never leaves a partial
/// file under the name a backup script will trust.
fn write_atomically(path: &Path, data: &[u8]) -> Result<(), CliError> {
    let tmp = path.with_extension("scribefs-partial");
    let result = std::fs::write(&tmp, data).and_then(|()| std::fs::rename(&tmp, path));
    result.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        CliError::Io(format!("cannot write {}: {e}", path.display()))
    })
}
