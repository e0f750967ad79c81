//! Open files: reading through the block cache, writing through an upload, and the promise
//! that close (flush) and fsync return only when S3 holds the whole object.
//!
//! A new (or O_TRUNC) file written in order streams into a multipart upload; anything else -
//! random writes, appends, overwrites, truncates - goes to a staged local copy seeded from the
//! object, uploaded on close. A file created here exists only while it is being written: if its
//! upload fails, close returns the error and the name disappears; nothing partial is ever in S3.

use std::time::{Instant, SystemTime};

use bytes::Bytes;

use super::attr::{Attr, SetAttr, attr_of};
use super::error::{FsError, FsResult};
use super::inode::{Attrs, Ino, Kind, Origin};
use super::{Fs, LayoutKind, lock};
use crate::cache::ObjectVersion;
use crate::store::{PutOptions, UserMetadata};
use crate::upload::{StagedFile, StreamingUpload, UploadConfig};

/// Streams zeros until the upload holds `end` bytes.
async fn fill_zeros(upload: &mut StreamingUpload, end: u64) -> FsResult<()> {
    static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];
    while upload.bytes_written() < end {
        let len = (end - upload.bytes_written()).min(ZEROS.len() as u64) as usize;
        upload.write(upload.bytes_written(), &ZEROS[..len]).await?;
    }
    Ok(())
}

/// The segment id xattr the segments layout puts on every file.
pub const SEGMENT_ID_XATTR: &str = "user.scribe.segment_id";

/// An open write handle with its inode, which can be matched without locking the handle.
pub(super) type OpenWriter = (Ino, std::sync::Arc<tokio::sync::Mutex<WriteHandle>>);

pub(super) struct WriteHandle {
    pub ino: Ino,
    pub key: String,
    state: WriteState,
    /// The metadata the object must end up with (chmod/chown/utimens while open land here).
    metadata: UserMetadata,
    /// The metadata S3 holds (or the running upload was started with).
    uploaded_metadata: UserMetadata,
    /// The object version writes apply to, when staging needs to be seeded from it.
    base: Option<(String, u64)>,
    /// Set once release (or unmount) has run the handle's last upload: later changes must go
    /// to S3 directly, as nothing will upload this handle again.
    released: bool,
}

enum WriteState {
    /// Nothing written since open or the last successful flush.
    Clean,
    Streaming(StreamingUpload),
    Staged(StagedFile),
}

/// What `open` and `create` return.
#[derive(Debug, Clone, Copy)]
pub struct Opened {
    pub handle: u64,
    /// The kernel may keep the pages it cached of this file: the object has not changed.
    pub keep_cache: bool,
}

impl Fs {
    fn upload_config(&self) -> FsResult<UploadConfig> {
        Ok(UploadConfig::new(
            self.config.part_size,
            self.config.max_parts_in_flight,
        )?)
    }

    fn streaming(&self, key: &str, metadata: &UserMetadata) -> FsResult<StreamingUpload> {
        let options = PutOptions {
            metadata: metadata.clone(),
            ..Default::default()
        };
        Ok(StreamingUpload::new(
            self.store.clone(),
            key.to_string(),
            options,
            self.upload_config()?,
        ))
    }

    pub async fn open(&self, ino: Ino, flags: i32) -> FsResult<Opened> {
        let writing = flags & libc::O_ACCMODE != libc::O_RDONLY;
        let (kind, origin) = {
            let inodes = self.inodes();
            let node = inodes.get(ino).ok_or(FsError::NotFound)?;
            (node.kind, node.origin)
        };
        if kind == Kind::Directory {
            return Err(FsError::IsDirectory);
        }
        if origin == Origin::Writing {
            return Err(FsError::NotPermitted(
                "the file is still being written through another handle".into(),
            ));
        }
        if writing {
            self.check_writable()?;
            if self.config.layout.kind == LayoutKind::Segments && !self.config.allow_overwrite {
                return Err(FsError::NotPermitted(
                    "segments are immutable; mount with --allow-overwrite to replace them".into(),
                ));
            }
        }
        self.getattr(ino).await?;
        let (key, etag, size, metadata) = {
            let inodes = self.inodes();
            let node = inodes.get(ino).ok_or(FsError::NotFound)?;
            let etag = node.attrs.etag.clone().ok_or(FsError::NotFound)?;
            (
                node.key.clone(),
                etag,
                node.attrs.size,
                node.attrs.metadata.clone(),
            )
        };
        let handle = self.new_handle();
        if !writing {
            let keep_cache = {
                let mut inodes = self.inodes();
                let node = inodes.get_mut(ino).ok_or(FsError::NotFound)?;
                let same = node.page_cache_etag.as_deref() == Some(etag.as_str());
                node.page_cache_etag = Some(etag.clone());
                same
            };
            let reader = self.reads.open(ObjectVersion::new(key, etag, size));
            lock(&self.readers).insert(handle, std::sync::Arc::new(reader));
            return Ok(Opened { handle, keep_cache });
        }
        let state = if flags & libc::O_TRUNC != 0 {
            self.set_size(ino, 0);
            WriteState::Streaming(self.streaming(&key, &metadata)?)
        } else {
            WriteState::Clean
        };
        let writer = WriteHandle {
            ino,
            key,
            state,
            uploaded_metadata: metadata.clone(),
            metadata,
            base: Some((etag, size)),
            released: false,
        };
        lock(&self.writers).insert(
            handle,
            (ino, std::sync::Arc::new(tokio::sync::Mutex::new(writer))),
        );
        Ok(Opened {
            handle,
            keep_cache: false,
        })
    }

    /// Creates a file that exists only here until its first successful flush uploads it.
    pub async fn create(&self, parent: Ino, name: &str, mode: u32) -> FsResult<(Attr, Opened)> {
        self.check_writable()?;
        self.config.layout.check_new_name(name, false)?;
        match self.resolve(parent, name).await {
            Ok(_) => return Err(FsError::Exists),
            Err(FsError::NotFound) => {}
            Err(e) => return Err(e),
        }
        let key = self
            .inodes()
            .child_key(parent, name, Kind::File)
            .ok_or(FsError::NotFound)?;
        let mut metadata = UserMetadata::new();
        if mode & 0o7777 != u32::from(self.config.file_mode) {
            metadata = SetAttr {
                mode: Some(mode),
                ..Default::default()
            }
            .apply_to(Kind::File, &metadata);
        }
        let upload = self.streaming(&key, &metadata)?;
        let attrs = Attrs {
            size: 0,
            mtime: SystemTime::now(),
            etag: None,
            metadata: metadata.clone(),
        };
        let (ino, attr) = {
            let mut inodes = self.inodes();
            let ino = inodes.upsert(parent, name, Kind::File, attrs, Origin::Writing, None);
            inodes.remember(ino);
            (
                ino,
                attr_of(inodes.get(ino).ok_or(FsError::NotFound)?, &self.config),
            )
        };
        let writer = WriteHandle {
            ino,
            key,
            state: WriteState::Streaming(upload),
            uploaded_metadata: metadata.clone(),
            metadata,
            base: None,
            released: false,
        };
        let handle = self.new_handle();
        lock(&self.writers).insert(
            handle,
            (ino, std::sync::Arc::new(tokio::sync::Mutex::new(writer))),
        );
        Ok((
            attr,
            Opened {
                handle,
                keep_cache: false,
            },
        ))
    }

    pub async fn read(&self, handle: u64, offset: u64, size: u32) -> FsResult<Bytes> {
        let reader = lock(&self.readers).get(&handle).cloned();
        if let Some(reader) = reader {
            return Ok(reader.read(offset, size).await?);
        }
        let writer = lock(&self.writers)
            .get(&handle)
            .map(|(_, w)| w.clone())
            .ok_or(FsError::BadHandle)?;
        let mut writer = writer.lock().await;
        let staged = self.staged(&mut writer).await?;
        Ok(staged.read_at(offset, size as usize).await?)
    }

    pub async fn write(&self, handle: u64, offset: u64, data: &[u8]) -> FsResult<u32> {
        let writer = lock(&self.writers)
            .get(&handle)
            .map(|(_, w)| w.clone())
            .ok_or(FsError::BadHandle)?;
        let mut writer = writer.lock().await;
        let sequential = match &writer.state {
            // A forward jump (cp writing a sparse file) streams zeros: S3 has no holes.
            WriteState::Streaming(upload) => upload.bytes_written() <= offset,
            // A clean handle on an empty object can stream from the start.
            WriteState::Clean => {
                offset == 0 && writer.base.as_ref().is_none_or(|(_, size)| *size == 0)
            }
            WriteState::Staged(_) => false,
        };
        if sequential {
            if matches!(writer.state, WriteState::Clean) {
                let upload = self.streaming(&writer.key, &writer.metadata)?;
                writer.uploaded_metadata = writer.metadata.clone();
                writer.state = WriteState::Streaming(upload);
            }
            if let WriteState::Streaming(upload) = &mut writer.state {
                fill_zeros(upload, offset).await?;
                upload.write(offset, data).await?;
            }
        } else {
            self.staged(&mut writer)
                .await?
                .write_at(offset, data)
                .await?;
        }
        let end = offset + data.len() as u64;
        let mut inodes = self.inodes();
        if let Some(node) = inodes.get_mut(writer.ino) {
            node.attrs.size = node.attrs.size.max(end);
            node.attrs.mtime = SystemTime::now();
        }
        Ok(data.len() as u32)
    }

    /// The handle's staged copy, making it if needed: from the bytes a streaming upload has not
    /// sent yet, or from the object the handle was opened on.
    async fn staged<'w>(&self, writer: &'w mut WriteHandle) -> FsResult<&'w mut StagedFile> {
        if !matches!(writer.state, WriteState::Staged(_)) {
            let staging = &self.config.staging_dir;
            let staged = match std::mem::replace(&mut writer.state, WriteState::Clean) {
                WriteState::Streaming(upload) => match upload.into_unsent() {
                    Ok(buffer) => {
                        let mut staged = StagedFile::create_empty(staging).await?;
                        staged.write_at(0, &buffer).await?;
                        staged
                    }
                    Err(upload) => {
                        writer.state = WriteState::Streaming(upload);
                        return Err(FsError::InvalidArgument(
                            "random access to a file being streamed to S3 past its first part; close and reopen it".into(),
                        ));
                    }
                },
                WriteState::Clean => match &writer.base {
                    Some((etag, size)) if *size > 0 => {
                        StagedFile::from_object(
                            self.store.as_ref(),
                            &writer.key,
                            etag,
                            *size,
                            staging,
                        )
                        .await?
                    }
                    _ => StagedFile::create_empty(staging).await?,
                },
                WriteState::Staged(staged) => staged,
            };
            writer.state = WriteState::Staged(staged);
        }
        match &mut writer.state {
            WriteState::Staged(staged) => Ok(staged),
            _ => Err(FsError::BadHandle),
        }
    }

    pub async fn flush(&self, handle: u64) -> FsResult<()> {
        let Some(writer) = lock(&self.writers).get(&handle).map(|(_, w)| w.clone()) else {
            return Ok(());
        };
        let mut writer = writer.lock().await;
        self.finish_write(&mut writer).await
    }

    pub async fn release(&self, handle: u64) -> FsResult<()> {
        lock(&self.readers).remove(&handle);
        // The handle stays findable until its last upload is done, so a concurrent chmod or
        // truncate by path waits for it instead of racing it.
        let writer = lock(&self.writers).get(&handle).map(|(_, w)| w.clone());
        let Some(writer) = writer else {
            return Ok(());
        };
        let mut writer = writer.lock().await;
        writer.released = true;
        let result = self.finish_write(&mut writer).await;
        lock(&self.writers).remove(&handle);
        result
    }

    /// Whether a handle of this mount has `ino` open for writing: its local size and data are
    /// then newer than S3's, so expired attributes must not be refreshed from the store.
    pub(super) fn is_open_for_writing(&self, ino: Ino) -> bool {
        lock(&self.writers).values().any(|(open, _)| *open == ino)
    }

    /// Uploads whatever the handle holds that S3 does not, and returns only when S3 has it.
    pub(super) async fn finish_write(&self, writer: &mut WriteHandle) -> FsResult<()> {
        let (linked, parent, name) = {
            let inodes = self.inodes();
            let node = inodes.get(writer.ino).ok_or(FsError::NotFound)?;
            (node.linked, node.parent, node.name.clone())
        };
        let state = std::mem::replace(&mut writer.state, WriteState::Clean);
        let options = PutOptions {
            metadata: writer.metadata.clone(),
            ..Default::default()
        };
        let result = match state {
            WriteState::Clean if writer.metadata == writer.uploaded_metadata => return Ok(()),
            WriteState::Clean => self
                .store
                .copy(&writer.key, &writer.key, Some(writer.metadata.clone()))
                .await
                .map_err(FsError::from),
            WriteState::Streaming(upload) if !linked => {
                upload.abort().await;
                return Ok(());
            }
            WriteState::Streaming(upload) => upload.finish().await.map_err(FsError::from),
            // Unlinked while open: the file is gone, so nothing is uploaded.
            WriteState::Staged(_) if !linked => return Ok(()),
            WriteState::Staged(staged)
                if !staged.is_dirty() && writer.metadata == writer.uploaded_metadata =>
            {
                writer.state = WriteState::Staged(staged);
                return Ok(());
            }
            WriteState::Staged(mut staged) => {
                let config = self.upload_config()?;
                let uploaded = staged
                    .upload(self.store.clone(), &writer.key, options, config)
                    .await;
                if uploaded.is_ok() {
                    writer.state = WriteState::Staged(staged);
                }
                uploaded.map_err(FsError::from)
            }
        };
        let output = match result {
            Ok(output) => output,
            Err(e) => {
                tracing::error!(key = %writer.key, error = %e, "upload failed; the file is not in S3");
                let mut inodes = self.inodes();
                let was_new = inodes
                    .get(writer.ino)
                    .is_some_and(|n| n.origin == Origin::Writing);
                if was_new {
                    // Gone, not being written: forget may free it and other opens see no file.
                    if let Some(node) = inodes.get_mut(writer.ino) {
                        node.origin = Origin::Remote;
                    }
                    inodes.unlink(parent, &name);
                    drop(inodes);
                    self.note_child(parent, &name, None);
                }
                return Err(e);
            }
        };
        // Metadata changed while a streaming upload ran: put it on the object in place.
        let output = if writer.metadata != writer.uploaded_metadata
            && !matches!(writer.state, WriteState::Staged(_))
        {
            writer.uploaded_metadata = writer.metadata.clone();
            self.store
                .copy(&writer.key, &writer.key, Some(writer.metadata.clone()))
                .await?
        } else {
            output
        };
        writer.uploaded_metadata = writer.metadata.clone();
        let attrs = {
            let mut inodes = self.inodes();
            let node = inodes.get_mut(writer.ino).ok_or(FsError::NotFound)?;
            node.attrs.etag = Some(output.etag.clone());
            node.attrs.metadata = writer.metadata.clone();
            node.origin = Origin::Remote;
            node.validated = Some(Instant::now());
            writer.base = Some((output.etag, node.attrs.size));
            node.attrs.clone()
        };
        self.note_child(parent, &name, Some((Kind::File, attrs)));
        Ok(())
    }

    pub async fn fsync(&self, handle: u64) -> FsResult<()> {
        self.flush(handle).await
    }

    fn set_size(&self, ino: Ino, size: u64) {
        if let Some(node) = self.inodes().get_mut(ino) {
            node.attrs.size = size;
            node.attrs.mtime = SystemTime::now();
        }
    }

    /// The open write handle of `ino` that will still upload, locked. Busy handles are waited
    /// for, not skipped: a chmod that bypassed a handle in the middle of its release would be
    /// overwritten by the older metadata that release uploads.
    async fn live_writer(
        &self,
        ino: Ino,
        handle: Option<u64>,
    ) -> Option<tokio::sync::OwnedMutexGuard<WriteHandle>> {
        let candidates: Vec<_> = {
            let writers = lock(&self.writers);
            match handle.and_then(|h| writers.get(&h)) {
                Some((_, writer)) => vec![writer.clone()],
                // A change by path (or through a read handle) while the file is open for
                // writing applies to that open file.
                None => writers
                    .values()
                    .filter(|(open, _)| *open == ino)
                    .map(|(_, w)| w.clone())
                    .collect(),
            }
        };
        for writer in candidates {
            let writer = writer.lock_owned().await;
            if writer.ino == ino && !writer.released {
                return Some(writer);
            }
        }
        None
    }

    pub async fn setattr(&self, ino: Ino, handle: Option<u64>, change: SetAttr) -> FsResult<Attr> {
        if change.size.is_some() || change.changes_metadata() {
            self.check_writable()?;
        }
        let kind = self
            .inodes()
            .get(ino)
            .map(|n| n.kind)
            .ok_or(FsError::NotFound)?;
        if let Some(size) = change.size {
            if kind == Kind::Directory {
                return Err(FsError::IsDirectory);
            }
            self.truncate(ino, handle, size).await?;
        }
        if change.changes_metadata() {
            self.change_metadata(ino, handle, kind, &change).await?;
        }
        let inodes = self.inodes();
        Ok(attr_of(
            inodes.get(ino).ok_or(FsError::NotFound)?,
            &self.config,
        ))
    }

    async fn truncate(&self, ino: Ino, handle: Option<u64>, size: u64) -> FsResult<()> {
        if let Some(mut writer) = self.live_writer(ino, handle).await {
            let extends =
                matches!(&writer.state, WriteState::Streaming(u) if u.bytes_written() <= size);
            if extends {
                if let WriteState::Streaming(upload) = &mut writer.state {
                    fill_zeros(upload, size).await?;
                }
            } else {
                if size == 0 {
                    let upload = self.streaming(&writer.key, &writer.metadata)?;
                    writer.state = WriteState::Streaming(upload);
                } else {
                    self.staged(&mut writer).await?.set_len(size).await?;
                }
            }
            self.set_size(ino, size);
            return Ok(());
        }
        if self.config.layout.kind == LayoutKind::Segments && !self.config.allow_overwrite {
            return Err(FsError::NotPermitted("segments are immutable".into()));
        }
        self.getattr(ino).await?;
        let (key, etag, current, metadata) = {
            let inodes = self.inodes();
            let node = inodes.get(ino).ok_or(FsError::NotFound)?;
            (
                node.key.clone(),
                node.attrs.etag.clone().ok_or(FsError::NotFound)?,
                node.attrs.size,
                node.attrs.metadata.clone(),
            )
        };
        if size == current {
            return Ok(());
        }
        let options = PutOptions {
            metadata,
            ..Default::default()
        };
        let output = if size == 0 {
            self.store.put(&key, Bytes::new(), options).await?
        } else {
            let staging = &self.config.staging_dir;
            let mut staged =
                StagedFile::from_object(self.store.as_ref(), &key, &etag, current, staging).await?;
            staged.set_len(size).await?;
            staged
                .upload(self.store.clone(), &key, options, self.upload_config()?)
                .await?
        };
        if let Some(node) = self.inodes().get_mut(ino) {
            node.attrs.size = size;
            node.attrs.etag = Some(output.etag);
            node.attrs.mtime = SystemTime::now();
            node.validated = Some(Instant::now());
        }
        self.note_attrs(ino);
        Ok(())
    }

    /// Puts a node's new attributes into its parent's cached listing, which opendir would
    /// otherwise copy back over them (an old ETag makes every later read fail with ESTALE).
    fn note_attrs(&self, ino: Ino) {
        let noted = self
            .inodes()
            .get(ino)
            .filter(|n| n.linked)
            .map(|n| (n.parent, n.name.clone(), n.kind, n.attrs.clone()));
        if let Some((parent, name, kind, attrs)) = noted {
            self.note_child(parent, &name, Some((kind, attrs)));
        }
    }

    async fn change_metadata(
        &self,
        ino: Ino,
        handle: Option<u64>,
        kind: Kind,
        change: &SetAttr,
    ) -> FsResult<()> {
        let (key, metadata, origin) = {
            let inodes = self.inodes();
            let node = inodes.get(ino).ok_or(FsError::NotFound)?;
            (
                node.key.clone(),
                change.apply_to(kind, &node.attrs.metadata),
                node.origin,
            )
        };
        if ino == super::ROOT_INO {
            return Err(FsError::NotPermitted(
                "the mount root's attributes are set by mount options".into(),
            ));
        }
        let writer = self.live_writer(ino, handle).await;
        // Waiting for a release may have uploaded the file meanwhile.
        let origin = self.inodes().get(ino).map_or(origin, |n| n.origin);
        if let Some(mut writer) = writer {
            if matches!(writer.state, WriteState::Clean) {
                // Nothing pending (e.g. closed, release not yet run): S3 holds the file, so
                // change it now rather than when the release gets to it.
                let output = self.store.copy(&key, &key, Some(metadata.clone())).await?;
                writer.uploaded_metadata = metadata.clone();
                if let Some(node) = self.inodes().get_mut(ino) {
                    node.attrs.etag = Some(output.etag);
                }
            }
            // Otherwise applied when the open file is uploaded.
            writer.metadata = metadata.clone();
        } else if kind == Kind::Directory {
            // Directory attributes live on its `dir/` marker object.
            let options = PutOptions {
                metadata: metadata.clone(),
                ..Default::default()
            };
            self.store.put(&key, Bytes::new(), options).await?;
        } else if origin == Origin::Remote {
            let output = self.store.copy(&key, &key, Some(metadata.clone())).await?;
            if let Some(node) = self.inodes().get_mut(ino) {
                node.attrs.etag = Some(output.etag);
            }
        }
        if let Some(node) = self.inodes().get_mut(ino) {
            node.attrs.metadata = metadata;
        }
        self.note_attrs(ino);
        Ok(())
    }

    pub fn getxattr(&self, ino: Ino, name: &str) -> FsResult<Vec<u8>> {
        let inodes = self.inodes();
        let node = inodes.get(ino).ok_or(FsError::NotFound)?;
        match self.config.layout.segment_id(&node.name) {
            Some(id) if name == SEGMENT_ID_XATTR && node.kind == Kind::File => {
                Ok(id.to_string().into_bytes())
            }
            _ => Err(FsError::NoAttribute),
        }
    }

    pub fn listxattr(&self, ino: Ino) -> FsResult<Vec<u8>> {
        let inodes = self.inodes();
        let node = inodes.get(ino).ok_or(FsError::NotFound)?;
        let mut names = Vec::new();
        if node.kind == Kind::File && self.config.layout.segment_id(&node.name).is_some() {
            names.extend_from_slice(SEGMENT_ID_XATTR.as_bytes());
            names.push(0);
        }
        Ok(names)
    }
}
