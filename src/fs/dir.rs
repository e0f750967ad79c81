//! Directory operations: readdir, mkdir, rmdir, unlink and rename.
//!
//! A directory is a prefix: it exists when some key lies below it, or when its `dir/` marker
//! object exists (mkdir writes one, so an empty directory survives). readdir lists the prefix
//! with delimiter `/`, 1000 keys a page, and takes sizes and times from the listing, so
//! `ls -l` costs ceil(N/1000) LISTs and no HEAD; local state (files being written, directories
//! made here) is merged in.

use std::sync::Arc;
use std::time::Instant;

use super::attr::{Attr, attr_of};
use super::error::{FsError, FsResult};
use super::inode::{Attrs, Ino, Kind, Origin};
use super::{Fs, lock};
use crate::store::{ListRequest, PutOptions, StoreError};
use bytes::Bytes;

/// Unreferenced inodes kept before readdir prunes them.
const PRUNE_THRESHOLD: usize = 50_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    pub ino: Ino,
    pub kind: Kind,
    pub name: String,
    /// The offset the kernel passes back to continue after this entry.
    pub next_offset: u64,
}

/// RENAME_NOREPLACE and RENAME_EXCHANGE, as renameat2 defines them.
const RENAME_NOREPLACE: u32 = 1;
const RENAME_EXCHANGE: u32 = 2;

impl Fs {
    /// Lists the directory (or reuses a fresh listing) and returns a handle for readdir.
    pub async fn opendir(&self, dir: Ino) -> FsResult<u64> {
        let listed = self.list_directory(dir).await?;
        let at = Instant::now();
        let mut inodes = self.inodes();
        if inodes.len() > PRUNE_THRESHOLD {
            inodes.prune_unreferenced();
        }
        let parent = inodes.get(dir).map(|n| n.parent).ok_or(FsError::NotFound)?;
        let mut children: Vec<(String, Ino, Kind)> = Vec::with_capacity(listed.len() + 2);
        for (name, (kind, attrs)) in listed {
            let keep_local = inodes
                .child(dir, &name)
                .is_some_and(|n| n.origin != Origin::Remote || self.is_open_for_writing(n.ino));
            let ino = if keep_local {
                inodes.child(dir, &name).map(|n| n.ino).unwrap_or_default()
            } else {
                inodes.upsert_listed(dir, &name, kind, attrs, Some(at))
            };
            children.push((name, ino, kind));
        }
        let local: Vec<(String, Ino, Kind)> = inodes
            .children(dir)
            .filter(|n| n.origin != Origin::Remote)
            .map(|n| (n.name.clone(), n.ino, n.kind))
            .collect();
        drop(inodes);
        for entry in local {
            if !children.iter().any(|(name, _, _)| *name == entry.0) {
                children.push(entry);
            }
        }
        let layout = &self.config.layout;
        children.sort_by_cached_key(|(name, _, _)| layout.sort_key(name));
        let mut entries = vec![
            DirEntry {
                ino: dir,
                kind: Kind::Directory,
                name: ".".into(),
                next_offset: 1,
            },
            DirEntry {
                ino: parent,
                kind: Kind::Directory,
                name: "..".into(),
                next_offset: 2,
            },
        ];
        for (name, ino, kind) in children {
            let next_offset = entries.len() as u64 + 1;
            entries.push(DirEntry {
                ino,
                kind,
                name,
                next_offset,
            });
        }
        let handle = self.new_handle();
        lock(&self.dirs).insert(handle, Arc::new(entries));
        Ok(handle)
    }

    /// Entries from `offset` on (0 is the start; each entry carries the offset after it).
    pub fn readdir(&self, handle: u64, offset: u64) -> FsResult<Arc<Vec<DirEntry>>> {
        let entries = lock(&self.dirs)
            .get(&handle)
            .cloned()
            .ok_or(FsError::BadHandle)?;
        if offset as usize > entries.len() {
            return Ok(Arc::new(Vec::new()));
        }
        Ok(entries)
    }

    pub fn releasedir(&self, handle: u64) {
        lock(&self.dirs).remove(&handle);
    }

    pub async fn mkdir(&self, parent: Ino, name: &str) -> FsResult<Attr> {
        self.check_writable()?;
        self.config.layout.check_new_name(name, true)?;
        match self.resolve(parent, name).await {
            Ok(_) => return Err(FsError::Exists),
            Err(FsError::NotFound) => {}
            Err(e) => return Err(e),
        }
        let marker = self
            .inodes()
            .child_key(parent, name, Kind::Directory)
            .ok_or(FsError::NotFound)?;
        let origin = match self
            .store
            .put(&marker, Bytes::new(), PutOptions::default())
            .await
        {
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
        let attrs = Attrs::directory();
        let mut inodes = self.inodes();
        let ino = inodes.upsert(
            parent,
            name,
            Kind::Directory,
            attrs.clone(),
            origin,
            Some(Instant::now()),
        );
        inodes.remember(ino);
        let attr = attr_of(inodes.get(ino).ok_or(FsError::NotFound)?, &self.config);
        drop(inodes);
        self.note_child(parent, name, Some((Kind::Directory, attrs)));
        lock(&self.listings).insert(
            ino,
            super::lookup::Listing {
                entries: Default::default(),
                at: Instant::now(),
            },
        );
        Ok(attr)
    }

    pub async fn unlink(&self, parent: Ino, name: &str) -> FsResult<()> {
        self.check_writable()?;
        let ino = self.resolve(parent, name).await?;
        let (kind, origin, key) = {
            let inodes = self.inodes();
            let node = inodes.get(ino).ok_or(FsError::NotFound)?;
            (node.kind, node.origin, node.key.clone())
        };
        if kind == Kind::Directory {
            return Err(FsError::IsDirectory);
        }
        // A file still being written has no object yet; its upload is dropped at close.
        if origin == Origin::Remote {
            self.store.delete(&key).await?;
        }
        self.inodes().unlink(parent, name);
        self.note_child(parent, name, None);
        Ok(())
    }

    pub async fn rmdir(&self, parent: Ino, name: &str) -> FsResult<()> {
        self.check_writable()?;
        let ino = self.resolve(parent, name).await?;
        let (kind, prefix) = {
            let inodes = self.inodes();
            let node = inodes.get(ino).ok_or(FsError::NotFound)?;
            if inodes.children(ino).any(|c| c.origin != Origin::Remote) {
                return Err(FsError::NotEmpty);
            }
            (node.kind, node.key.clone())
        };
        if kind != Kind::Directory {
            return Err(FsError::NotDirectory);
        }
        let request = ListRequest {
            prefix: prefix.clone(),
            max_keys: Some(2),
            ..Default::default()
        };
        let page = self.store.list(request).await?;
        if page.objects.iter().any(|o| o.key != prefix) || !page.common_prefixes.is_empty() {
            return Err(FsError::NotEmpty);
        }
        self.store.delete(&prefix).await?;
        self.inodes().unlink(parent, name);
        self.note_child(parent, name, None);
        lock(&self.listings).remove(ino);
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
                // Directories may take any valid name in the keys layout.
                if self.config.layout.kind == super::LayoutKind::Keys {
                    Ok(())
                } else {
                    Err(e)
                }
            })?;
        let ino = self.resolve(parent, name).await?;
        let (kind, origin, source_key, mut attrs) = {
            let inodes = self.inodes();
            let node = inodes.get(ino).ok_or(FsError::NotFound)?;
            (node.kind, node.origin, node.key.clone(), node.attrs.clone())
        };
        if origin == Origin::Writing {
            return Err(FsError::NotPermitted(
                "rename of a file still being written; close it first".into(),
            ));
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
            let target_kind = self
                .inodes()
                .get(target)
                .map(|n| n.kind)
                .ok_or(FsError::NotFound)?;
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
                }
            }
        }
        let dest_key = self
            .inodes()
            .child_key(new_parent, new_name, kind)
            .ok_or(FsError::NotFound)?;
        match kind {
            Kind::File => {
                // The copy may have a new ETag (a multipart source becomes a single-part copy).
                let copied = self.store.copy(&source_key, &dest_key, None).await?;
                self.store.delete(&source_key).await?;
                attrs.etag = Some(copied.etag);
            }
            Kind::Directory => self.rename_prefix(&source_key, &dest_key).await?,
        }
        {
            let mut inodes = self.inodes();
            inodes.rename(parent, name, new_parent, new_name);
            if let Some(node) = inodes.get_mut(ino) {
                node.attrs = attrs.clone();
            }
        }
        self.note_child(parent, name, None);
        self.note_child(new_parent, new_name, Some((kind, attrs)));
        if kind == Kind::Directory {
            lock(&self.listings).remove(ino);
        }
        Ok(())
    }

    /// Copies every key below `from` to `to`, then deletes the originals. Refused (EXDEV, so
    /// `mv` falls back to copying) above the configured entry limit.
    async fn rename_prefix(&self, from: &str, to: &str) -> FsResult<()> {
        if to.starts_with(from) {
            return Err(FsError::InvalidArgument(
                "cannot move a directory into itself".into(),
            ));
        }
        let keys = crate::store::list_all(self.store.as_ref(), from).await?;
        if keys.len() > self.config.rename_dir_limit {
            return Err(FsError::TooMany(format!(
                "{} keys below {from}, more than --rename-dir-limit {}",
                keys.len(),
                self.config.rename_dir_limit
            )));
        }
        for object in &keys {
            let dest = format!("{to}{}", &object.key[from.len()..]);
            self.store.copy(&object.key, &dest, None).await?;
        }
        for object in &keys {
            self.store.delete(&object.key).await?;
        }
        Ok(())
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
