//! Symlinks and special files, stored as s3fs stores them: one object each, whose
//! `x-amz-meta-mode` carries the type bits. A symlink's body is its target; a FIFO, socket or
//! device node is empty, a device's number in `x-amz-meta-rdev`. The kernel itself runs FIFOs
//! and sockets (their data never reaches the file system), and follows symlinks (a loop is
//! its ELOOP).

use bytes::Bytes;

use super::Fs;
use super::attr::{Attr, FileType, attr_of, new_node_metadata};
use super::error::{FsError, FsResult};
use super::namespace::{Attrs, ContentType, Ino, Kind};
use crate::store::{PutOptions, get_bytes};

/// Longest symlink target Linux accepts (PATH_MAX).
const MAX_TARGET: usize = 4096;

/// Who makes a request: the thread (FUSE names threads; its process decides which closes
/// upload) and the owner a new node gets, as on a local file system.
#[derive(Debug, Clone, Copy)]
pub struct Caller {
    pub pid: u32,
    pub uid: u32,
    pub gid: u32,
}

impl Fs {
    /// The owner and mode of a new node in `parent`: in a setgid directory it takes the
    /// directory's group, and a new directory keeps the setgid bit (as local file systems do).
    pub(super) fn inherit_group(
        &self,
        parent: Ino,
        mut caller: Caller,
        mode: u32,
        directory: bool,
    ) -> (Caller, u32) {
        let ns = self.ns();
        let Ok(parent) = ns.node(parent) else {
            return (caller, mode);
        };
        let parent = attr_of(parent, &self.config);
        if u32::from(parent.perm) & libc::S_ISGID == 0 {
            return (caller, mode);
        }
        caller.gid = parent.gid;
        let mode = if directory {
            mode | libc::S_ISGID
        } else {
            mode
        };
        (caller, mode)
    }

    pub async fn symlink(
        &self,
        parent: Ino,
        name: &str,
        target: &str,
        caller: Caller,
    ) -> FsResult<Attr> {
        if target.is_empty() || target.len() > MAX_TARGET {
            return Err(FsError::InvalidArgument(format!(
                "a symlink target has 1 to {MAX_TARGET} bytes"
            )));
        }
        let (caller, _) = self.inherit_group(parent, caller, 0o777, false);
        let metadata = new_node_metadata(FileType::Symlink, 0o777, 0, caller.uid, caller.gid);
        self.store_node(parent, name, Bytes::from(target.to_string()), metadata)
            .await
    }

    /// mknod/mkfifo: `mode` holds the type bits. A regular file is an empty object too.
    pub async fn mknod(
        &self,
        parent: Ino,
        name: &str,
        mode: u32,
        rdev: u32,
        caller: Caller,
    ) -> FsResult<Attr> {
        let file_type = FileType::from_mode(mode)
            .filter(|t| *t != FileType::Directory && *t != FileType::Symlink)
            .ok_or_else(|| FsError::InvalidArgument(format!("mknod of mode {mode:o}")))?;
        let rdev = match file_type {
            FileType::CharDevice | FileType::BlockDevice => rdev,
            _ => 0,
        };
        let (caller, mode) = self.inherit_group(parent, caller, mode, false);
        let metadata = new_node_metadata(file_type, mode, rdev, caller.uid, caller.gid);
        self.store_node(parent, name, Bytes::new(), metadata).await
    }

    /// One PutObject of a whole node, then its entry.
    async fn store_node(
        &self,
        parent: Ino,
        name: &str,
        body: Bytes,
        metadata: crate::store::UserMetadata,
    ) -> FsResult<Attr> {
        self.check_writable()?;
        self.config.layout.check_new_name(name, false)?;
        if self.config.layout.kind == super::LayoutKind::Segments {
            return Err(FsError::InvalidName(name.to_string()));
        }
        match self.resolve(parent, name).await {
            Ok(_) => return Err(FsError::Exists),
            Err(FsError::NotFound) => {}
            Err(e) => return Err(e),
        }
        let key = self.ns().new_child_key(parent, name, Kind::File)?;
        let size = body.len() as u64;
        let options = PutOptions {
            metadata: metadata.clone(),
            ..Default::default()
        };
        let started = std::time::SystemTime::now();
        let output = self.store.put(&key, body, options).await?;
        let attrs = Attrs {
            size,
            mtime: std::time::SystemTime::now(),
            etag: Some(output.etag),
            metadata,
            content_type: ContentType::Known(None),
            last_modified: None,
        };
        let ino = self.ns().stored(parent, name, attrs)?;
        self.object_landed(ino, started);
        let ns = self.ns();
        Ok(attr_of(ns.node(ino)?, &self.config))
    }

    /// A symlink's target: its object's body (one GET; the kernel caches it).
    pub async fn readlink(&self, ino: Ino) -> FsResult<Bytes> {
        let key = {
            let ns = self.ns();
            let node = ns.node(ino)?;
            if attr_of(node, &self.config).file_type != FileType::Symlink {
                return Err(FsError::InvalidArgument("not a symlink".into()));
            }
            node.key().to_string()
        };
        Ok(get_bytes(self.store.as_ref(), &key, None).await?)
    }

    /// Hard links cannot be stored in S3 (an object has one key): refused, never a copy.
    pub fn link(&self) -> FsResult<Attr> {
        Err(FsError::NotPermitted(
            "hard links cannot be stored in S3".into(),
        ))
    }
}
