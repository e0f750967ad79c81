//! Directory operations: readdir, mkdir, rmdir, unlink and rename.
//!
//! A directory is a prefix: it exists when some key lies below it, or when its `dir/` marker
//! object exists (mkdir writes one, so an empty directory survives). readdir lists the prefix
//! with delimiter `/`, 1000 keys a page, and takes sizes and times from the listing, so
//! `ls -l` costs ceil(N/1000) LISTs and no HEAD; local state (files being written, directories
//! made here) is merged in.

use std::sync::Arc;

use super::attr::{Attr, attr_of, owned_metadata, renamed_metadata};
use super::error::{FsError, FsResult};
use super::namespace::{ContentType, DeferredDelete, Ino, Kind, Origin, WriteStatus};
use super::readdir::DirEntry;
use super::{Caller, Fs};
use crate::store::{CopyMetadata, ListRequest, PutOptions, StoreError};
use bytes::Bytes;

/// What a directory rename leaves: the deletes that wait for open files' last close, and each
/// copy's (key, ETag).
type MovedTree = (Vec<(Ino, DeferredDelete)>, Vec<(String, String)>);

/// RENAME_NOREPLACE and RENAME_EXCHANGE, as renameat2 defines them.
const RENAME_NOREPLACE: u32 = 1;
const RENAME_EXCHANGE: u32 = 2;

impl Fs {
    /// Opens a directory stream (see `readdir.rs`): its first batch is read here, so a
    /// directory S3 cannot list fails at opendir.
    pub async fn opendir(&self, dir: Ino) -> FsResult<u64> {
        self.ns().directory(dir)?;
        self.open_stream(self.dir_stream(dir)).await
    }

    /// Reads a new stream's first batch and puts it in the handle table.
    pub(super) async fn open_stream(&self, mut stream: super::readdir::DirStream) -> FsResult<u64> {
        self.read_stream(&mut stream, 0).await?;
        let stream = Arc::new(tokio::sync::Mutex::new(stream));
        Ok(self.handles().insert_directory(stream))
    }

    /// The kernel took a reference to an entry readdirplus returned.
    pub fn remember(&self, ino: Ino) {
        self.ns().remembered(ino);
    }

    /// Entries from stream position `offset` on (0 is the start; each entry carries the
    /// offset after it): a batch and the index of `offset` in it.
    pub async fn readdir(&self, handle: u64, offset: u64) -> FsResult<(Arc<Vec<DirEntry>>, usize)> {
        let stream = self.handles().directory(handle).ok_or(FsError::BadHandle)?;
        let mut stream = stream.lock().await;
        self.read_stream(&mut stream, offset).await
    }

    pub fn releasedir(&self, handle: u64) {
        // Dropped after the table's lock: a stream unpins its nodes in the namespace.
        let stream = self.handles().remove(handle);
        drop(stream);
    }

    pub async fn mkdir(
        &self,
        parent: Ino,
        name: &str,
        mode: u32,
        caller: Caller,
    ) -> FsResult<Attr> {
        self.check_writable()?;
        self.config.layout.check_new_name(name, true)?;
        match self.resolve(parent, name).await {
            Ok(_) => return Err(FsError::Exists),
            Err(FsError::NotFound) => {}
            Err(e) => return Err(e),
        }
        let marker = self.ns().new_child_key(parent, name, Kind::Directory)?;
        let (caller, mode) = self.inherit_group(parent, caller, mode, true);
        let metadata = owned_metadata(Kind::Directory, mode, caller.uid, caller.gid, &self.config);
        let options = PutOptions {
            metadata: metadata.clone(),
            ..Default::default()
        };
        let origin = match self.store.put(&marker, Bytes::new(), options).await {
            Ok(_) => Origin::Remote,
            // Some servers refuse keys ending in `/`: keep the directory here until it has children.
            Err(StoreError::InvalidRequest(reason)) => {
                tracing::warn!(
                    marker,
                    reason,
                    "server refused the directory marker; keeping the directory locally"
                );
                Origin::LocalDirectory
            }
            Err(e) => return Err(e.into()),
        };
        let mut ns = self.ns();
        let ino = ns.made_directory(parent, name, origin)?;
        ns.attrs_changed(ino, metadata, None, false);
        Ok(attr_of(ns.node(ino)?, &self.config))
    }

    pub async fn unlink(&self, parent: Ino, name: &str) -> FsResult<()> {
        self.check_writable()?;
        let ino = self.resolve(parent, name).await?;
        // A file just closed (its release on the way) is deleted now, not at its release.
        self.wait_for_releases(ino).await;
        let (kind, in_s3, key, etag) = {
            let ns = self.ns();
            let node = ns.node(ino)?;
            let etag = node.attrs().etag.clone();
            (node.kind(), !node.is_local(), node.key().to_string(), etag)
        };
        if kind == Kind::Directory {
            return Err(FsError::IsDirectory);
        }
        // Its write handles keep its bytes even if a new file takes the name (and the object).
        self.stage_open_writers(ino).await?;
        // A file still being written has no object yet; its upload is dropped at close. One
        // open here keeps its object until its last close, for its readers and writers.
        let delete_now = match in_s3 {
            true => self.ns().delete_at_close(ino, key, etag),
            false => None,
        };
        if let Some(delete) = delete_now {
            self.store.delete(&delete.key).await?;
        }
        self.ns().removed(parent, name);
        Ok(())
    }

    pub async fn rmdir(&self, parent: Ino, name: &str) -> FsResult<()> {
        self.check_writable()?;
        let ino = self.resolve(parent, name).await?;
        let prefix = {
            let ns = self.ns();
            let node = ns.node(ino)?;
            if node.kind() != Kind::Directory {
                return Err(FsError::NotDirectory);
            }
            if ns.has_local_children(ino) {
                return Err(FsError::NotEmpty);
            }
            node.key().to_string()
        };
        // Unlinked files still open here (their DELETE waits) do not count, so more keys may
        // have to be looked at then.
        let waiting = self.ns().delete_waiting_below(&prefix);
        let request = ListRequest {
            prefix: prefix.clone(),
            max_keys: Some(if waiting { 1000 } else { 2 }),
            ..Default::default()
        };
        let page = self.store.list(request).await?;
        let occupied = {
            let ns = self.ns();
            page.objects
                .iter()
                .any(|o| o.key != prefix && !ns.delete_waiting(&o.key))
                || !page.common_prefixes.is_empty()
                || (waiting && page.next_continuation_token.is_some())
        };
        if occupied {
            return Err(FsError::NotEmpty);
        }
        self.store.delete(&prefix).await?;
        self.ns().removed(parent, name);
        Ok(())
    }

    pub async fn rename(
        &self,
        parent: Ino,
        name: &str,
        new_parent: Ino,
        new_name: &str,
        flags: u32,
    ) -> FsResult<()> {
        self.check_writable()?;
        if flags & RENAME_EXCHANGE != 0 {
            return Err(FsError::Unsupported("RENAME_EXCHANGE"));
        }
        self.config
            .layout
            .check_new_name(new_name, false)
            .or_else(|e| {
                // Directories may take any valid name in the keys layout, but none too long.
                if self.config.layout.kind == super::LayoutKind::Keys
                    && !matches!(e, FsError::NameTooLong)
                {
                    Ok(())
                } else {
                    Err(e)
                }
            })?;
        let ino = self.resolve(parent, name).await?;
        // A release in flight may be uploading the file: let it land first.
        self.wait_for_releases(ino).await;
        let (kind, source_key, created) = {
            let ns = self.ns();
            let node = ns.node(ino)?;
            let created = node.write_status() == WriteStatus::Created;
            (node.kind(), node.key().to_string(), created)
        };
        // Into its own subtree is EINVAL before anything else is looked at (the kernel checks
        // it too, but the core must not act on the target first).
        if kind == Kind::Directory {
            let dest = self.ns().new_child_key(new_parent, new_name, kind)?;
            if dest != source_key && dest.starts_with(&source_key) {
                return Err(FsError::InvalidArgument(
                    "cannot move a directory into itself".into(),
                ));
            }
        }
        let target = match self.resolve(new_parent, new_name).await {
            Ok(target) => Some(target),
            Err(FsError::NotFound) => None,
            Err(e) => return Err(e),
        };
        if let Some(target) = target {
            if target == ino {
                return Ok(());
            }
            if flags & RENAME_NOREPLACE != 0 {
                return Err(FsError::Exists);
            }
            let target_kind = self.ns().node(target)?.kind();
            match (kind, target_kind) {
                (Kind::File, Kind::Directory) => return Err(FsError::IsDirectory),
                (Kind::Directory, Kind::File) => return Err(FsError::NotDirectory),
                (Kind::Directory, Kind::Directory) => self.rmdir(new_parent, new_name).await?,
                (Kind::File, Kind::File) => {
                    if self.config.layout.kind == super::LayoutKind::Segments
                        && !self.config.allow_overwrite
                    {
                        return Err(FsError::NotPermitted(
                            "segments are immutable; mount with --allow-overwrite to replace them"
                                .into(),
                        ));
                    }
                    self.stage_open_writers(target).await?;
                }
            }
        }
        let dest_key = self.ns().new_child_key(new_parent, new_name, kind)?;
        let mut copied = Vec::new();
        let (etag, deferred) = match (kind, created) {
            // Not in S3 yet: its upload goes to the new name. What it replaces goes now.
            (Kind::File, true) => {
                if let Some(target) = target {
                    self.delete_replaced(target).await?;
                }
                (None, Vec::new())
            }
            (Kind::File, _) => {
                let (etag, old) = self.rename_file(ino, &source_key, &dest_key).await?;
                (Some(etag), vec![(ino, old)])
            }
            (Kind::Directory, _) => {
                let (deferred, copies) = self.rename_prefix(&source_key, &dest_key).await?;
                copied = copies;
                (None, deferred)
            }
        };
        // The old objects go now, except those of files open here: their last close does it.
        let now: Vec<DeferredDelete> = {
            let mut ns = self.ns();
            deferred
                .into_iter()
                .filter_map(|(open, delete)| ns.delete_at_close(open, delete.key, delete.etag))
                .collect()
        };
        for delete in now {
            self.store.delete(&delete.key).await?;
        }
        let mut ns = self.ns();
        ns.renamed(parent, name, new_parent, new_name, etag)?;
        for (key, etag) in copied {
            ns.copied(&key, etag);
        }
        Ok(())
    }

    /// Deletes the object of a file a rename replaces without copying onto it (the source is
    /// not in S3 yet); one open here is kept for its last close, like an unlinked file.
    async fn delete_replaced(&self, target: Ino) -> FsResult<()> {
        let delete = {
            let mut ns = self.ns();
            let node = ns.node(target)?;
            if node.is_local() {
                return Ok(());
            }
            let (key, etag) = (node.key().to_string(), node.attrs().etag.clone());
            ns.delete_at_close(target, key, etag)
        };
        if let Some(delete) = delete {
            self.store.delete(&delete.key).await?;
        }
        Ok(())
    }

    /// CopyObject (the caller deletes the source, now or at the file's last close). The copy
    /// carries a metadata change not yet persisted (rsync's chmod and utimens before its
    /// rename), and the ctime the rename sets with the mtime the file had (S3 gives a copy a
    /// new LastModified), so it costs nothing extra. A file known only from a listing has
    /// metadata we have not seen: it is copied as it is, since replacing its headers would need
    /// a HEAD. Returns the new ETag (a multipart source becomes a single-part copy) and the
    /// source object to delete.
    async fn rename_file(
        &self,
        ino: Ino,
        source_key: &str,
        dest_key: &str,
    ) -> FsResult<(String, DeferredDelete)> {
        let _gate = self.metadata_gates.enter(ino).await;
        let pending = self.ns().take_dirty_metadata(ino);
        let dirty = pending.is_some();
        let (metadata, content_type, etag, mtime) = {
            let ns = self.ns();
            let node = ns.node(ino)?;
            let (metadata, content_type, etag) = match pending {
                Some((_, metadata, content_type, etag)) => (metadata, content_type, etag),
                None => (
                    node.attrs().metadata.clone(),
                    node.attrs().content_type.clone(),
                    node.attrs().etag.clone(),
                ),
            };
            (
                metadata,
                content_type,
                etag,
                attr_of(node, &self.config).mtime,
            )
        };
        let source = DeferredDelete {
            key: source_key.to_string(),
            etag: etag.clone(),
        };
        if !dirty && content_type == ContentType::Unknown {
            let copied = self.copy_as_is(source_key, dest_key).await?;
            return Ok((copied, source));
        }
        let metadata = renamed_metadata(&metadata, mtime);
        match self
            .copy_with_metadata(source_key, dest_key, metadata.clone(), content_type, etag)
            .await
        {
            Ok((output, content_type)) => {
                let mut ns = self.ns();
                ns.attrs_changed(ino, metadata, None, false);
                ns.metadata_persisted(ino, output.etag.clone(), content_type);
                Ok((output.etag, source))
            }
            // Another client replaced the object since we knew it: it wins, as it is.
            Err(FsError::Store(StoreError::PreconditionFailed(_))) if !dirty => {
                let copied = self.copy_as_is(source_key, dest_key).await?;
                let source = DeferredDelete {
                    key: source_key.to_string(),
                    etag: None,
                };
                Ok((copied, source))
            }
            Err(e) => {
                if dirty {
                    self.ns().metadata_still_dirty(ino);
                }
                Err(e)
            }
        }
    }

    /// CopyObject keeping the source's metadata.
    async fn copy_as_is(&self, source_key: &str, dest_key: &str) -> FsResult<String> {
        let copied = self
            .store
            .copy(source_key, dest_key, CopyMetadata::Keep)
            .await?;
        Ok(copied.etag)
    }

    /// Copies every key below `from` to `to`, then deletes the originals, except those of
    /// files open here, which are returned (with their inodes) for their last close. Also
    /// returns each copy's key and ETag (a copy of a multipart object has a new one). Refused
    /// (EXDEV, so `mv` falls back to copying) above the configured entry limit.
    async fn rename_prefix(&self, from: &str, to: &str) -> FsResult<MovedTree> {
        if to.starts_with(from) {
            return Err(FsError::InvalidArgument(
                "cannot move a directory into itself".into(),
            ));
        }
        let mut keys = crate::store::list_all(self.store.as_ref(), from).await?;
        // Unlinked files still open here are not in the directory any more.
        {
            let ns = self.ns();
            keys.retain(|o| !ns.delete_waiting(&o.key));
        }
        if keys.len() > self.config.rename_dir_limit {
            return Err(FsError::TooMany(format!(
                "{} keys below {from}, more than --rename-dir-limit {}",
                keys.len(),
                self.config.rename_dir_limit
            )));
        }
        let mut copies = Vec::with_capacity(keys.len());
        for object in &keys {
            let dest = format!("{to}{}", &object.key[from.len()..]);
            let copy = self
                .store
                .copy(&object.key, &dest, CopyMetadata::Keep)
                .await?;
            copies.push((dest, copy.etag));
        }
        let open = self.ns().open_files_below(from);
        let mut deferred = Vec::new();
        for object in &keys {
            match open.iter().find(|(_, key, _)| *key == object.key) {
                Some((ino, key, etag)) => deferred.push((
                    *ino,
                    DeferredDelete {
                        key: key.clone(),
                        etag: etag.clone(),
                    },
                )),
                None => self.store.delete(&object.key).await?,
            }
        }
        Ok((deferred, copies))
    }

    /// Large constant counts so `df` and `cp`'s space checks pass: S3 has no fixed capacity.
    pub fn statfs(&self) -> Statfs {
        Statfs {
            blocks: 1 << 40,
            free: 1 << 40,
            files: 1 << 30,
            free_files: 1 << 30,
            block_size: 4096,
            name_max: 255,
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Statfs {
    pub blocks: u64,
    pub free: u64,
    pub files: u64,
    pub free_files: u64,
    pub block_size: u32,
    pub name_max: u32,
}
