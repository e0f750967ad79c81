//! On-disk persistence of one bucket: one file per object under `ROOT/<bucket>/`.
//!
//! Keys are arbitrary strings, so they never become paths: a file is named after the hex of its
//! key (or, for keys too long for a file name, an MD5 of it), and the key itself is stored inside
//! the file. Each file is a one-line JSON header (key, ETag, Last-Modified, metadata, content
//! type, size) followed by the raw object bytes, written to a temporary name and renamed, so a
//! crash leaves either the old or the new object, never a mix.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use md5::{Digest, Md5};
use serde::{Deserialize, Serialize};

use crate::store::memory::StoredObject;

const OBJECT_SUFFIX: &str = ".obj";
const TEMP_MARKER: &str = ".tmp-";
/// Keys up to this many bytes are named by their hex (twice as long, under NAME_MAX 255).
const MAX_HEX_KEY: usize = 100;

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// The directory holding one bucket's objects.
#[derive(Debug, Clone)]
pub(crate) struct BucketDir {
    path: PathBuf,
}

#[derive(Serialize, Deserialize)]
struct Header {
    key: String,
    etag: String,
    /// Last-Modified as nanoseconds since the Unix epoch.
    last_modified_nanos: u64,
    metadata: BTreeMap<String, String>,
    content_type: Option<String>,
    size: u64,
}

impl BucketDir {
    /// Opens (creating if needed) the directory of bucket `name` under `root`.
    pub fn create(root: &Path, name: &str) -> io::Result<Self> {
        let path = root.join(name);
        std::fs::create_dir_all(&path)?;
        Ok(BucketDir { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads every stored object; leftovers of interrupted writes are removed.
    pub fn load(&self) -> io::Result<Vec<(String, StoredObject)>> {
        let mut objects = Vec::new();
        for entry in std::fs::read_dir(&self.path)? {
            let entry = entry?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.contains(TEMP_MARKER) {
                std::fs::remove_file(entry.path())?;
                continue;
            }
            if !name.ends_with(OBJECT_SUFFIX) {
                continue;
            }
            let bytes = std::fs::read(entry.path())?;
            match decode(Bytes::from(bytes)) {
                Some(object) => objects.push(object),
                None => {
                    tracing::warn!(file = %entry.path().display(), "skipping unreadable object file")
                }
            }
        }
        Ok(objects)
    }

    /// Writes `object` as the stored state of `key`.
    pub async fn write(&self, key: &str, object: &StoredObject) -> io::Result<()> {
        let header = Header {
            key: key.to_string(),
            etag: object.etag.clone(),
            last_modified_nanos: object
                .last_modified
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)),
            metadata: object.metadata.clone(),
            content_type: object.content_type.clone(),
            size: object.data.len() as u64,
        };
        let mut contents = serde_json::to_vec(&header).map_err(io::Error::other)?;
        contents.push(b'\n');
        contents.extend_from_slice(&object.data);
        let target = self.file_of(key);
        let temp = self.path.join(format!(
            "{}{TEMP_MARKER}{}",
            file_stem(key),
            TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        tokio::fs::write(&temp, contents).await?;
        tokio::fs::rename(&temp, &target).await
    }

    /// Removes the stored state of `key`; a missing file is fine.
    pub async fn remove(&self, key: &str) -> io::Result<()> {
        match tokio::fs::remove_file(self.file_of(key)).await {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    fn file_of(&self, key: &str) -> PathBuf {
        self.path.join(format!("{}{OBJECT_SUFFIX}", file_stem(key)))
    }
}

/// A file-name-safe name for `key`: its hex, or `md5-` and the MD5 hex of a long key.
fn file_stem(key: &str) -> String {
    if key.len() <= MAX_HEX_KEY {
        hex(key.as_bytes())
    } else {
        format!("md5-{}", hex(&Md5::digest(key.as_bytes())))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn decode(contents: Bytes) -> Option<(String, StoredObject)> {
    let newline = contents.iter().position(|b| *b == b'\n')?;
    let header: Header = serde_json::from_slice(&contents[..newline]).ok()?;
    let data = contents.slice(newline + 1..);
    if data.len() as u64 != header.size {
        return None;
    }
    let object = StoredObject {
        data,
        etag: header.etag,
        last_modified: SystemTime::UNIX_EPOCH + Duration::from_nanos(header.last_modified_nanos),
        metadata: header.metadata,
        content_type: header.content_type,
    };
    Some((header.key, object))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::PutOptions;

    #[tokio::test]
    async fn objects_round_trip_with_etag_time_and_metadata() {
        let root = tempfile::tempdir().unwrap();
        let dir = BucketDir::create(root.path(), "bucket").unwrap();
        let mut options = PutOptions {
            content_type: Some("text/plain".into()),
            ..Default::default()
        };
        options.metadata.insert("owner".into(), "ledger".into());
        let long_key = "k/".repeat(300);
        let odd_key = "../../etc/passwd\n\u{0}é";
        for key in ["a", "a/b", "dir/", long_key.as_str(), odd_key] {
            let object = StoredObject::new(Bytes::from(format!("body of {key}")), options.clone());
            dir.write(key, &object).await.unwrap();
        }
        dir.remove("a").await.unwrap();
        dir.remove("never-written").await.unwrap();

        let mut loaded = dir.load().unwrap();
        loaded.sort_by(|a, b| a.0.cmp(&b.0));
        let keys: Vec<&str> = loaded.iter().map(|(k, _)| k.as_str()).collect();
        let mut expected = vec![odd_key, "a/b", "dir/", long_key.as_str()];
        expected.sort();
        assert_eq!(keys, expected);
        let (_, object) = loaded.iter().find(|(k, _)| k == "a/b").unwrap();
        let original = StoredObject::new(Bytes::from("body of a/b"), options.clone());
        assert_eq!(object.data, original.data);
        assert_eq!(object.etag, original.etag);
        assert_eq!(object.metadata, original.metadata);
        assert_eq!(object.content_type.as_deref(), Some("text/plain"));
        assert!(std::fs::read_dir(dir.path()).unwrap().count() == 4);
    }

    #[tokio::test]
    async fn last_modified_survives_exactly() {
        let root = tempfile::tempdir().unwrap();
        let dir = BucketDir::create(root.path(), "b").unwrap();
        let object = StoredObject::new(Bytes::from_static(b"x"), PutOptions::default());
        dir.write("x", &object).await.unwrap();
        let loaded = dir.load().unwrap();
        assert_eq!(loaded[0].1.last_modified, object.last_modified);
    }

    #[test]
    fn truncated_files_are_skipped_and_temp_files_removed() {
        let root = tempfile::tempdir().unwrap();
        let dir = BucketDir::create(root.path(), "b").unwrap();
        let header = r#"{"key":"k","etag":"\"e\"","last_modified_nanos":0,"metadata":{},"content_type":null,"size":10}"#;
        std::fs::write(dir.path().join("6b.obj"), format!("{header}\nshort")).unwrap();
        std::fs::write(dir.path().join("6b.tmp-3"), "partial").unwrap();
        assert!(dir.load().unwrap().is_empty());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
