//! On-disk persistence of pending multipart uploads, so that they survive a restart on the same
//! `--root` as they survive on S3 (a leaked upload must stay visible to ListMultipartUploads).
//!
//! Layout: `ROOT/<bucket>/uploads/<hex of upload id>/` holds `upload.json` (key, metadata,
//! content type, start time) and one `part-<n>` file of raw bytes per part. Part ETags are MD5s,
//! recomputed on load. Every file is written to a temporary name and renamed. A directory
//! without `upload.json` is the leftover of a create that crashed and is removed at load.

use std::collections::BTreeMap;
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::persist::BucketDir;
use crate::store::PutOptions;

const UPLOADS_DIR: &str = "uploads";
const HEADER_FILE: &str = "upload.json";
const PART_PREFIX: &str = "part-";
const TEMP_MARKER: &str = ".tmp-";

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

#[derive(Serialize, Deserialize)]
struct UploadHeader {
    key: String,
    metadata: BTreeMap<String, String>,
    content_type: Option<String>,
    initiated_nanos: u64,
}

/// A pending upload as loaded from disk.
pub(crate) struct LoadedUpload {
    pub upload_id: String,
    pub key: String,
    pub options: PutOptions,
    pub initiated: SystemTime,
    pub parts: Vec<(u32, Bytes)>,
}

impl BucketDir {
    fn upload_dir(&self, upload_id: &str) -> PathBuf {
        self.path()
            .join(UPLOADS_DIR)
            .join(hex(upload_id.as_bytes()))
    }

    /// Records a newly created upload.
    pub async fn write_upload(
        &self,
        upload_id: &str,
        key: &str,
        options: &PutOptions,
        initiated: SystemTime,
    ) -> io::Result<()> {
        let dir = self.upload_dir(upload_id);
        tokio::fs::create_dir_all(&dir).await?;
        let header = UploadHeader {
            key: key.to_string(),
            metadata: options.metadata.clone(),
            content_type: options.content_type.clone(),
            initiated_nanos: initiated
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)),
        };
        let contents = serde_json::to_vec(&header).map_err(io::Error::other)?;
        write_atomically(&dir, HEADER_FILE, &contents).await
    }

    /// Records one part. An upload whose directory is gone was completed or aborted meanwhile:
    /// the part has nothing to belong to, which is not an error.
    pub async fn write_part(
        &self,
        upload_id: &str,
        part_number: u32,
        body: &[u8],
    ) -> io::Result<()> {
        let dir = self.upload_dir(upload_id);
        match write_atomically(&dir, &format!("{PART_PREFIX}{part_number}"), body).await {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }

    /// Forgets an upload (completed or aborted); a missing one is fine.
    pub async fn remove_upload(&self, upload_id: &str) -> io::Result<()> {
        let dir = self.upload_dir(upload_id);
        // A part being written concurrently can refill the directory between the unlinks and
        // the rmdir: try again a few times.
        let mut result = Ok(());
        for _ in 0..3 {
            result = match tokio::fs::remove_dir_all(&dir).await {
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
                other => other,
            };
            if result.is_ok() {
                return Ok(());
            }
        }
        result
    }

    /// Every persisted pending upload; leftovers of interrupted writes are removed.
    pub fn load_uploads(&self) -> io::Result<Vec<LoadedUpload>> {
        let root = self.path().join(UPLOADS_DIR);
        let entries = match std::fs::read_dir(&root) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            other => other?,
        };
        let mut uploads = Vec::new();
        for entry in entries {
            let dir = entry?.path();
            let upload_id = dir
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(unhex)
                .and_then(|b| String::from_utf8(b).ok());
            let header = std::fs::read(dir.join(HEADER_FILE))
                .ok()
                .and_then(|b| serde_json::from_slice::<UploadHeader>(&b).ok());
            let (Some(upload_id), Some(header)) = (upload_id, header) else {
                tracing::warn!(dir = %dir.display(), "removing an unreadable pending upload");
                std::fs::remove_dir_all(&dir)?;
                continue;
            };
            let mut parts = Vec::new();
            for part in std::fs::read_dir(&dir)? {
                let part = part?;
                let name = part.file_name().to_string_lossy().into_owned();
                if name.contains(TEMP_MARKER) {
                    std::fs::remove_file(part.path())?;
                    continue;
                }
                if let Some(number) = name
                    .strip_prefix(PART_PREFIX)
                    .and_then(|n| n.parse::<u32>().ok())
                {
                    parts.push((number, Bytes::from(std::fs::read(part.path())?)));
                }
            }
            parts.sort_by_key(|(number, _)| *number);
            uploads.push(LoadedUpload {
                upload_id,
                key: header.key,
                options: PutOptions {
                    metadata: header.metadata,
                    content_type: header.content_type,
                    ..Default::default()
                },
                initiated: UNIX_EPOCH + Duration::from_nanos(header.initiated_nanos),
                parts,
            });
        }
        Ok(uploads)
    }
}

async fn write_atomically(dir: &std::path::Path, name: &str, contents: &[u8]) -> io::Result<()> {
    let temp = dir.join(format!(
        "{name}{TEMP_MARKER}{}",
        TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    tokio::fs::write(&temp, contents).await?;
    tokio::fs::rename(&temp, dir.join(name)).await
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn uploads_and_parts_round_trip_and_removal_sticks() {
        let root = tempfile::tempdir().unwrap();
        let dir = BucketDir::create(root.path(), "b").unwrap();
        let mut options = PutOptions::default();
        options.metadata.insert("mode".into(), "0644".into());
        let started = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        dir.write_upload("upload-7", "a/b\nc", &options, started)
            .await
            .unwrap();
        dir.write_part("upload-7", 2, b"second").await.unwrap();
        dir.write_part("upload-7", 1, b"first").await.unwrap();
        dir.write_upload("upload-8", "gone", &options, started)
            .await
            .unwrap();
        dir.remove_upload("upload-8").await.unwrap();
        dir.remove_upload("never-there").await.unwrap();
        dir.write_part("upload-8", 1, b"late part").await.unwrap();

        let loaded = dir.load_uploads().unwrap();
        assert_eq!(loaded.len(), 1);
        let upload = &loaded[0];
        assert_eq!(upload.upload_id, "upload-7");
        assert_eq!(upload.key, "a/b\nc");
        assert_eq!(upload.options, options);
        assert_eq!(upload.initiated, started);
        let parts: Vec<(u32, &[u8])> = upload.parts.iter().map(|(n, b)| (*n, &b[..])).collect();
        assert_eq!(parts, vec![(1, &b"first"[..]), (2, &b"second"[..])]);
        // Objects of the bucket are not confused with uploads.
        assert!(dir.load().unwrap().is_empty());
    }

    #[test]
    fn a_crashed_create_is_cleaned_up() {
        let root = tempfile::tempdir().unwrap();
        let dir = BucketDir::create(root.path(), "b").unwrap();
        let orphan = dir.path().join(UPLOADS_DIR).join(hex(b"upload-1"));
        std::fs::create_dir_all(&orphan).unwrap();
        std::fs::write(orphan.join("part-1"), b"x").unwrap();
        assert!(dir.load_uploads().unwrap().is_empty());
        assert!(!orphan.exists());
    }
}
