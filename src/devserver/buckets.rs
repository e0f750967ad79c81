//! The server's buckets: each an in-memory [`MemoryStore`] (the source of truth for requests),
//! optionally mirrored to a directory under `--root`.
//!
//! Write-through works per key: after a change, [`Bucket::persist`] writes whatever the store
//! holds for that key *now* (or removes the file if nothing). Writes for the same key are
//! serialized by a striped lock, so with concurrent puts the last write to disk is always the
//! store's latest state, whatever order the requests finished in. A change the disk refuses
//! (ENOSPC, say) is undone in memory too ([`Bucket::persist_or_undo`]), so a request answered
//! with an error has changed nothing, as on S3.

use std::collections::BTreeMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use super::persist::BucketDir;
use crate::store::memory::{MemoryStore, StoredObject};

/// Independent write-through locks per bucket; keys hash onto them.
const PERSIST_STRIPES: usize = 64;

pub(crate) struct Bucket {
    pub store: Arc<MemoryStore>,
    pub created: SystemTime,
    dir: Option<BucketDir>,
    persist_locks: Vec<tokio::sync::Mutex<()>>,
}

impl Bucket {
    fn new(store: MemoryStore, dir: Option<BucketDir>) -> Self {
        Bucket {
            store: Arc::new(store),
            created: SystemTime::now(),
            dir,
            persist_locks: (0..PERSIST_STRIPES)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
        }
    }

    /// Mirrors the current state of `key` to disk (nothing to do without `--root`).
    pub async fn persist(&self, key: &str) -> io::Result<()> {
        self.write_through(key).await.1
    }

    /// Mirrors `key` to disk; when that fails the change is undone in memory as well (back to
    /// `previous`), so a request answered with an error has not changed the bucket.
    pub async fn persist_or_undo(
        &self,
        key: &str,
        previous: Option<StoredObject>,
    ) -> io::Result<()> {
        let (written, result) = self.write_through(key).await;
        if result.is_err() {
            self.store
                .restore_unless_changed(key, written.as_ref(), previous);
        }
        result
    }

    /// Writes what the store holds for `key` now; returns that state with the outcome.
    async fn write_through(&self, key: &str) -> (Option<StoredObject>, io::Result<()>) {
        let Some(dir) = &self.dir else {
            return (None, Ok(()));
        };
        let mut hasher = DefaultHasher::new();
        key.hash(&mut hasher);
        let _guard = self.persist_locks[hasher.finish() as usize % PERSIST_STRIPES]
            .lock()
            .await;
        let written = self.store.object(key);
        let result = match &written {
            Some(object) => dir.write(key, object).await,
            None => dir.remove(key).await,
        };
        (written, result)
    }

    /// Mirrors a newly created multipart upload to disk.
    pub async fn persist_upload(&self, upload_id: &str) -> io::Result<()> {
        let Some(dir) = &self.dir else { return Ok(()) };
        match self.store.upload_header(upload_id) {
            Some((key, options, initiated)) => {
                dir.write_upload(upload_id, &key, &options, initiated).await
            }
            None => dir.remove_upload(upload_id).await,
        }
    }

    /// Mirrors one part of a pending upload to disk.
    pub async fn persist_part(
        &self,
        upload_id: &str,
        part_number: u32,
        body: &[u8],
    ) -> io::Result<()> {
        let Some(dir) = &self.dir else { return Ok(()) };
        dir.write_part(upload_id, part_number, body).await?;
        // Completed or aborted while the part was being written: do not leave it behind.
        if self.store.upload_header(upload_id).is_none() {
            dir.remove_upload(upload_id).await?;
        }
        Ok(())
    }

    /// Removes a completed or aborted upload from disk.
    pub async fn forget_upload(&self, upload_id: &str) -> io::Result<()> {
        let Some(dir) = &self.dir else { return Ok(()) };
        dir.remove_upload(upload_id).await
    }
}

/// What [`Buckets::remove`] found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Removal {
    Removed,
    Missing,
    NotEmpty,
}

pub(crate) struct Buckets {
    root: Option<PathBuf>,
    map: RwLock<BTreeMap<String, Arc<Bucket>>>,
}

impl Buckets {
    /// Loads every bucket found under `root` and creates the named ones that are missing.
    /// Blocking: call it from a blocking context.
    pub fn open(root: Option<PathBuf>, names: &[String]) -> io::Result<Self> {
        let buckets = Buckets {
            root,
            map: RwLock::new(BTreeMap::new()),
        };
        if let Some(root) = &buckets.root {
            std::fs::create_dir_all(root)?;
            for entry in std::fs::read_dir(root)? {
                let entry = entry?;
                let name = entry.file_name().to_string_lossy().into_owned();
                if entry.file_type()?.is_dir() && is_bucket_name(&name) {
                    buckets.load(root, &name)?;
                }
            }
        }
        for name in names {
            buckets.create(name)?;
        }
        Ok(buckets)
    }

    fn load(&self, root: &Path, name: &str) -> io::Result<()> {
        let dir = BucketDir::create(root, name)?;
        let store = MemoryStore::new();
        for (key, object) in dir.load()? {
            store.insert(&key, object);
        }
        for upload in dir.load_uploads()? {
            store.restore_upload(
                &upload.upload_id,
                &upload.key,
                upload.options,
                upload.initiated,
                upload.parts,
            );
        }
        let created = std::fs::metadata(dir.path())
            .and_then(|m| m.modified())
            .unwrap_or_else(|_| SystemTime::now());
        let mut bucket = Bucket::new(store, Some(dir));
        bucket.created = created;
        self.write().insert(name.to_string(), Arc::new(bucket));
        Ok(())
    }

    pub fn get(&self, name: &str) -> Option<Arc<Bucket>> {
        self.read().get(name).cloned()
    }

    /// All buckets in name order.
    pub fn all(&self) -> Vec<(String, Arc<Bucket>)> {
        self.read()
            .iter()
            .map(|(n, b)| (n.clone(), b.clone()))
            .collect()
    }

    /// Creates bucket `name`; `Ok(false)` if it already exists.
    pub fn create(&self, name: &str) -> io::Result<bool> {
        if !is_bucket_name(name) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("invalid bucket name {name:?}"),
            ));
        }
        if self.read().contains_key(name) {
            return Ok(false);
        }
        let dir = match &self.root {
            Some(root) => Some(BucketDir::create(root, name)?),
            None => None,
        };
        let mut map = self.write();
        if map.contains_key(name) {
            return Ok(false);
        }
        map.insert(
            name.to_string(),
            Arc::new(Bucket::new(MemoryStore::new(), dir)),
        );
        Ok(true)
    }

    /// Deletes an empty bucket, as S3's DeleteBucket does.
    pub fn remove(&self, name: &str) -> io::Result<Removal> {
        let mut map = self.write();
        let Some(bucket) = map.get(name) else {
            return Ok(Removal::Missing);
        };
        if !bucket.store.keys().is_empty() || bucket.store.pending_uploads() > 0 {
            return Ok(Removal::NotEmpty);
        }
        if let Some(dir) = &bucket.dir {
            std::fs::remove_dir_all(dir.path())?;
        }
        map.remove(name);
        Ok(Removal::Removed)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Arc<Bucket>>> {
        // The map is only ever replaced entry by entry: a poisoned lock still holds a valid map.
        self.map.read().unwrap_or_else(|poison| poison.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, Arc<Bucket>>> {
        self.map
            .write()
            .unwrap_or_else(|poison| poison.into_inner())
    }
}

/// Loose S3 bucket naming (3 to 63 of lower-case letters, digits, `.`, `-`, `_`), enough to keep
/// names safe as directory names and clear of the server's `_scribefs` control path.
pub(crate) fn is_bucket_name(name: &str) -> bool {
    (3..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-._".contains(&b))
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric())
        && !name.contains("..")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{ObjectStore, PutOptions};
    use bytes::Bytes;

    #[test]
    fn bucket_names_stay_safe() {
        assert!(is_bucket_name("demo"));
        assert!(is_bucket_name("my.bucket-1"));
        assert!(!is_bucket_name("_scribefs"));
        assert!(!is_bucket_name("a/b"));
        assert!(!is_bucket_name(".."));
        assert!(!is_bucket_name("Upper"));
        assert!(!is_bucket_name("ab"));
    }

    #[tokio::test]
    async fn persisted_buckets_reload_and_deletes_stick() {
        let root = tempfile::tempdir().unwrap();
        let names = vec!["alpha".to_string()];
        let buckets = Buckets::open(Some(root.path().to_path_buf()), &names).unwrap();
        assert!(buckets.create("beta").unwrap());
        assert!(!buckets.create("beta").unwrap());
        let alpha = buckets.get("alpha").unwrap();
        for key in ["keep", "drop"] {
            alpha
                .store
                .put(key, Bytes::from(key), PutOptions::default())
                .await
                .unwrap();
            alpha.persist(key).await.unwrap();
        }
        alpha.store.delete("drop").await.unwrap();
        alpha.persist("drop").await.unwrap();
        assert_eq!(buckets.remove("alpha").unwrap(), Removal::NotEmpty);

        let reopened = Buckets::open(Some(root.path().to_path_buf()), &[]).unwrap();
        let names: Vec<String> = reopened.all().into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, vec!["alpha", "beta"]);
        assert_eq!(reopened.get("alpha").unwrap().store.keys(), vec!["keep"]);
        assert_eq!(reopened.remove("beta").unwrap(), Removal::Removed);
        assert_eq!(reopened.remove("beta").unwrap(), Removal::Missing);
        assert!(!root.path().join("beta").exists());
    }

    /// A change the disk refused is undone in memory: a put back to the old bytes, a new key
    /// away again, a delete back to the object.
    #[tokio::test]
    async fn a_change_that_cannot_be_persisted_is_undone() {
        let root = tempfile::tempdir().unwrap();
        let buckets = Buckets::open(Some(root.path().to_path_buf()), &["alpha".into()]).unwrap();
        let alpha = buckets.get("alpha").unwrap();
        let put = |key: &'static str, body: &'static str| {
            let store = alpha.store.clone();
            async move {
                let previous = store.object(key);
                store
                    .put(key, Bytes::from(body), PutOptions::default())
                    .await
                    .unwrap();
                previous
            }
        };
        let previous = put("kept", "old").await;
        alpha.persist_or_undo("kept", previous).await.unwrap();

        // The bucket's directory turns into a file: every write and removal under it fails.
        let dir = root.path().join("alpha");
        std::fs::rename(&dir, root.path().join("alpha.moved")).unwrap();
        std::fs::write(&dir, b"not a directory").unwrap();

        let previous = put("kept", "new").await;
        assert!(alpha.persist_or_undo("kept", previous).await.is_err());
        assert_eq!(alpha.store.object("kept").unwrap().data, "old");

        let previous = put("fresh", "new").await;
        assert!(alpha.persist_or_undo("fresh", previous).await.is_err());
        assert!(alpha.store.object("fresh").is_none());

        let previous = alpha.store.object("kept");
        alpha.store.delete("kept").await.unwrap();
        assert!(alpha.persist_or_undo("kept", previous).await.is_err());
        assert_eq!(alpha.store.object("kept").unwrap().data, "old");
    }

    /// A later change of the same key is not clobbered by undoing an earlier one.
    #[test]
    fn undo_leaves_a_later_change_alone() {
        let store = MemoryStore::new();
        let old = StoredObject::new(Bytes::from("old"), PutOptions::default());
        let mine = StoredObject::new(Bytes::from("mine"), PutOptions::default());
        let later = StoredObject::new(Bytes::from("later"), PutOptions::default());
        store.insert("k", later);
        store.restore_unless_changed("k", Some(&mine), Some(old));
        assert_eq!(store.object("k").unwrap().data, "later");
    }
}
