//! `scribefs uploads ls|abort`: the multipart uploads a crash or an outage left behind. S3 keeps
//! their parts (and bills them) until someone aborts them; these commands find and abort them,
//! filtered by key prefix and age.

use std::io::Write;
use std::time::SystemTime;

use super::args::{UploadsCommand, UploadsFilter};
use super::output::{self, stdout_error};
use super::{CliError, connect};
use crate::store::config::S3Config;
use crate::store::{ObjectStore, PendingUpload};

pub async fn run(command: UploadsCommand, config: &S3Config) -> Result<(), CliError> {
    let store = connect(config).await?;
    match command {
        UploadsCommand::Ls(filter) => {
            let mut out = std::io::stdout().lock();
            for upload in select(store.as_ref(), &filter).await? {
                writeln!(out, "{}", line(&upload)).map_err(stdout_error)?;
            }
            out.flush().map_err(stdout_error)
        }
        UploadsCommand::Abort(filter) => {
            let mut failed = 0usize;
            for upload in select(store.as_ref(), &filter).await? {
                match store.abort_multipart(&upload.key, &upload.upload_id).await {
                    // Aborting goes on when nobody reads what was aborted any more.
                    Ok(()) => output::unless_closed(output::line(format_args!(
                        "aborted {}",
                        line(&upload)
                    )))?,
                    // Completed or aborted by someone else since the listing: nothing left.
                    Err(e) if e.is_not_found() => {}
                    Err(e) => {
                        failed += 1;
                        eprintln!("scribefs: cannot abort {}: {e}", upload.upload_id);
                    }
                }
            }
            if failed > 0 {
                return Err(CliError::Io(format!(
                    "{failed} uploads could not be aborted"
                )));
            }
            Ok(())
        }
    }
}

async fn select(
    store: &dyn ObjectStore,
    filter: &UploadsFilter,
) -> Result<Vec<PendingUpload>, CliError> {
    let prefix = filter.prefix.as_deref().unwrap_or("");
    let mut uploads = store.list_uploads(prefix).await?;
    if let Some(age) = filter.older_than {
        let now = SystemTime::now();
        uploads.retain(|u| now.duration_since(u.initiated).is_ok_and(|a| a > age));
    }
    Ok(uploads)
}

/// `2026-11-30T19:00:00Z<TAB>upload id<TAB>key`, the key with control characters escaped so
/// that one upload is always one line.
fn line(upload: &PendingUpload) -> String {
    let started = time::OffsetDateTime::from(upload.initiated)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| "?".to_string());
    format!(
        "{started}\t{}\t{}",
        upload.upload_id,
        upload.key.escape_default()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_upload_is_one_line() {
        let upload = PendingUpload {
            key: "a\nb".into(),
            upload_id: "id-1".into(),
            initiated: SystemTime::UNIX_EPOCH,
        };
        assert_eq!(line(&upload), "1970-01-01T00:00:00Z\tid-1\ta\\nb");
    }
}
