//! Open files: reading through the block cache, writing through an upload, and the promise
//! that close (flush) and fsync return only when S3 holds the whole object.
//!
//! A new (or O_TRUNC) file written in order streams into a multipart upload; anything else -
//! random writes, appends, overwrites, truncates - goes to a staged local copy seeded from the
//! object, uploaded on close. A file created here exists only while it is being written: if its
//! upload fails, close returns the error and the name disappears; nothing partial is ever in S3.

use std::time::{Duration, Instant};

use bytes::Bytes;

use super::attr::{Attr, SetAttr, attr_of, data_changed, keep_mtime, owned_metadata};
use super::error::{FsError, FsResult};
use super::lookup::meta_attrs;
use super::namespace::{Attrs, Ino, Kind, Origin};
use super::process::thread_group;
use super::{Caller, Fs, LayoutKind, lock};
use crate::cache::ObjectVersion;
use crate::store::{PutOptions, StoreError, UserMetadata};
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
/// How long an open or rename waits for the release of a file whose last close returned.
const RELEASE_WAIT: Duration = Duration::from_secs(2);

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
    /// The process (thread group) that opened the handle. A FLUSH from another process is the
    /// close of a descriptor it inherited (fork, then exec closes it): uploading then would
    /// put half a file in S3 in the middle of the opener's writes, so only the opener's closes
    /// upload (and the last close, release, always does).
    opener: u32,
}

impl WriteHandle {
    /// A file created by this handle to which nothing has been written yet.
    fn is_new_and_empty(&self) -> bool {
        self.base.is_none()
            && match &self.state {
                WriteState::Clean => true,
                WriteState::Streaming(upload) => upload.bytes_written() == 0,
                WriteState::Staged(_) => false,
            }
    }
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

    /// Opens `ino`; `pid` is the calling thread (FUSE names threads), whose process decides
    /// which closes upload.
    pub async fn open(&self, ino: Ino, flags: i32, caller: Caller) -> FsResult<Opened> {
        if self.in_view(ino) {
            let handle = self.view_open(ino, flags).await?;
            return Ok(Opened {
                handle,
                keep_cache: false,
            });
        }
        let writing = flags & libc::O_ACCMODE != libc::O_RDONLY;
        let kind = self.ns().node(ino)?.kind();
        if kind == Kind::Directory {
            return Err(FsError::IsDirectory);
        }
        if self.settled_origin(ino).await? == Origin::Writing {
            return Err(FsError::NotPermitted(
                "the file is still being written through another handle".into(),
            ));
        }
        if !writing {
            return self.open_for_reading(ino).await;
        }
        self.check_writable()?;
        if self.config.layout.kind == LayoutKind::Segments && !self.config.allow_overwrite {
            return Err(FsError::NotPermitted(
                "segments are immutable; mount with --allow-overwrite to replace them".into(),
            ));
        }
        let truncating = flags & libc::O_TRUNC != 0;
        if !truncating {
            // Staging is seeded from the object version known here: make sure it is current.
            self.getattr(ino).await?;
        }
        let (key, base, mut metadata) = {
            let mut ns = self.ns();
            ns.writer_opened(ino);
            if truncating {
                ns.truncated(ino, 0);
            }
            let node = ns.node(ino)?;
            let base = node
                .attrs()
                .etag
                .clone()
                .map(|etag| (etag, node.attrs().size));
            (node.key().to_string(), base, node.attrs().metadata.clone())
        };
        if truncating {
            // The new object's times are its upload's, so the upload starts without old ones.
            data_changed(&mut metadata);
        }
        let state = if truncating {
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
            base,
            released: false,
            opener: thread_group(caller.pid),
        };
        let handle = self.new_handle();
        lock(&self.writers).insert(
            handle,
            (ino, std::sync::Arc::new(tokio::sync::Mutex::new(writer))),
        );
        Ok(Opened {
            handle,
            keep_cache: false,
        })
    }

    /// The node's origin once a release in flight is done: the kernel sends release after
    /// close(2) returned, so a program that closes and at once reopens or renames the file
    /// would otherwise find it still being written. A file really held open stays `Writing`.
    pub(super) async fn settled_origin(&self, ino: Ino) -> FsResult<Origin> {
        let deadline = Instant::now() + RELEASE_WAIT;
        loop {
            let origin = self.ns().node(ino)?.origin();
            if origin != Origin::Writing || Instant::now() >= deadline {
                return Ok(origin);
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// A read handle pinned to the object version known within the TTL, or, once that expired,
    /// to the version the first GET (which the read needs anyway) finds: no HEAD either way.
    pub(super) async fn open_for_reading(&self, ino: Ino) -> FsResult<Opened> {
        let (key, known) = {
            let ns = self.ns();
            let node = ns.node(ino)?;
            let trusted = ns.is_current(ino);
            let known = node
                .attrs()
                .etag
                .clone()
                .filter(|_| trusted)
                .map(|etag| (etag, node.attrs().size));
            (node.key().to_string(), known)
        };
        let (etag, size) = match known {
            Some(version) => version,
            None => self.learn_current_version(ino, &key).await?,
        };
        let keep_cache = self.ns().opened_for_reading(ino, &etag);
        let handle = self.new_handle();
        let reader = self.reads.open(ObjectVersion::new(key, etag, size));
        lock(&self.readers).insert(handle, (ino, std::sync::Arc::new(reader)));
        Ok(Opened { handle, keep_cache })
    }

    /// GETs the object's first block without If-Match (it lands in the block cache) and
    /// records the version it came from: (ETag, size).
    async fn learn_current_version(&self, ino: Ino, key: &str) -> FsResult<(String, u64)> {
        let at = Instant::now();
        let meta = match self.reads.fetch_current(key).await {
            // An empty object has no first block to fetch (416): ask for its metadata.
            Err(StoreError::InvalidRequest(_)) => self.store.head(key).await,
            other => other,
        };
        let meta = match meta {
            Ok(meta) => meta,
            Err(e) if e.is_not_found() => {
                self.ns().vanished(ino);
                return Err(FsError::NotFound);
            }
            Err(e) => return Err(e.into()),
        };
        let version = (meta.etag.clone(), meta.size);
        self.ns().refreshed(ino, meta_attrs(meta), at);
        Ok(version)
    }

    /// Creates a file that exists only here until its first successful flush uploads it.
    pub async fn create(
        &self,
        parent: Ino,
        name: &str,
        mode: u32,
        caller: Caller,
    ) -> FsResult<(Attr, Opened)> {
        self.refuse_in_view(parent, name)?;
        self.check_writable()?;
        self.config.layout.check_new_name(name, false)?;
        match self.resolve(parent, name).await {
            Ok(_) => return Err(FsError::Exists),
            Err(FsError::NotFound) => {}
            Err(e) => return Err(e),
        }
        let key = self.ns().new_child_key(parent, name, Kind::File)?;
        let (caller, mode) = self.inherit_group(parent, caller, mode, false);
        let metadata = owned_metadata(Kind::File, mode, caller.uid, caller.gid, &self.config);
        let upload = self.streaming(&key, &metadata)?;
        let (ino, attr) = {
            let mut ns = self.ns();
            let ino = ns.created(parent, name, Attrs::new_file(metadata.clone()))?;
            (ino, attr_of(ns.node(ino)?, &self.config))
        };
        let writer = WriteHandle {
            ino,
            key,
            state: WriteState::Streaming(upload),
            uploaded_metadata: metadata.clone(),
            metadata,
            base: None,
            released: false,
            opener: thread_group(caller.pid),
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
        if let Some(data) = self.view_read(handle, offset, size) {
            return Ok(data);
        }
        let reader = lock(&self.readers).get(&handle).cloned();
        if let Some((ino, reader)) = reader {
            // A file read from its start: the next files of its directory may follow.
            if offset == 0 {
                self.read_ahead_of(ino);
            }
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
        data_changed(&mut writer.metadata);
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
        self.ns().written(writer.ino, offset + data.len() as u64);
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

    /// A close of a descriptor (`pid` is the closing thread). Only the opener's closes upload,
    /// and a new file with nothing written yet waits for the last close: a program that dup2s
    /// its output and closes the original (GNU dd) must not leave an empty object behind.
    pub async fn flush(&self, handle: u64, caller: Caller) -> FsResult<()> {
        let Some(writer) = lock(&self.writers).get(&handle).map(|(_, w)| w.clone()) else {
            return Ok(());
        };
        let mut writer = writer.lock().await;
        if writer.opener != thread_group(caller.pid) || writer.is_new_and_empty() {
            return Ok(());
        }
        self.finish_write(&mut writer).await
    }

    pub async fn release(&self, handle: u64) -> FsResult<()> {
        lock(&self.readers).remove(&handle);
        self.view_release(handle);
        // The handle stays findable until its last upload is done, so a concurrent chmod or
        // truncate by path waits for it instead of racing it.
        let writer = lock(&self.writers).get(&handle).map(|(_, w)| w.clone());
        let Some(writer) = writer else {
            return Ok(());
        };
        let mut writer = writer.lock().await;
        writer.released = true;
        let result = self.finish_write(&mut writer).await;
        if lock(&self.writers).remove(&handle).is_some() {
            self.ns().writer_closed(writer.ino);
        }
        result
    }

    /// Uploads whatever the handle holds that S3 does not, and returns only when S3 has it.
    pub(super) async fn finish_write(&self, writer: &mut WriteHandle) -> FsResult<()> {
        let (linked, content_type, etag) = {
            let ns = self.ns();
            let node = ns.node(writer.ino)?;
            (
                node.linked(),
                node.attrs().content_type.clone(),
                node.attrs().etag.clone(),
            )
        };
        let state = std::mem::replace(&mut writer.state, WriteState::Clean);
        let options = PutOptions {
            metadata: writer.metadata.clone(),
            ..Default::default()
        };
        let result = match state {
            WriteState::Clean if writer.metadata == writer.uploaded_metadata => return Ok(()),
            WriteState::Clean => {
                let mut metadata = writer.metadata.clone();
                if let Ok(node) = self.ns().node(writer.ino) {
                    keep_mtime(&mut metadata, attr_of(node, &self.config).mtime);
                }
                let (output, content_type) = self
                    .copy_with_metadata(&writer.key, &writer.key, metadata, content_type, etag)
                    .await?;
                writer.uploaded_metadata = writer.metadata.clone();
                self.ns()
                    .metadata_persisted(writer.ino, output.etag, content_type);
                return Ok(());
            }
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
                self.ns().upload_failed(writer.ino);
                return Err(e);
            }
        };
        // Metadata changed while a streaming upload ran: put it on the object in place.
        let etag = if writer.metadata != writer.uploaded_metadata
            && !matches!(writer.state, WriteState::Staged(_))
        {
            let copy = crate::store::CopyMetadata::ReplaceKnown {
                metadata: writer.metadata.clone(),
                content_type: None,
                source_etag: Some(output.etag.clone()),
            };
            self.store.copy(&writer.key, &writer.key, copy).await?.etag
        } else {
            output.etag
        };
        writer.uploaded_metadata = writer.metadata.clone();
        let mut ns = self.ns();
        let size = ns.node(writer.ino)?.attrs().size;
        ns.uploaded(writer.ino, etag.clone(), size, writer.metadata.clone());
        writer.base = Some((etag, size));
        Ok(())
    }

    /// fsync: the handle's data, and a metadata change of its file still waiting to be
    /// persisted, are in S3 when it returns.
    pub async fn fsync(&self, handle: u64) -> FsResult<()> {
        let writer = lock(&self.writers).get(&handle).map(|(_, w)| w.clone());
        let ino = match writer {
            Some(writer) => {
                let mut writer = writer.lock().await;
                self.finish_write(&mut writer).await?;
                writer.ino
            }
            None => match lock(&self.readers).get(&handle) {
                Some((ino, _)) => *ino,
                None => return Ok(()),
            },
        };
        self.persist_metadata(ino).await
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
        if self.in_view(ino) {
            return Err(FsError::ReadOnly);
        }
        if change.size.is_some() || change.changes_metadata() {
            self.check_writable()?;
        }
        let kind = self.ns().node(ino)?.kind();
        if let Some(size) = change.size {
            if kind == Kind::Directory {
                return Err(FsError::IsDirectory);
            }
            self.truncate(ino, handle, size).await?;
        }
        if change.changes_metadata() {
            self.change_metadata(ino, handle, kind, &change).await?;
        }
        let ns = self.ns();
        Ok(attr_of(ns.node(ino)?, &self.config))
    }

    async fn truncate(&self, ino: Ino, handle: Option<u64>, size: u64) -> FsResult<()> {
        if let Some(mut writer) = self.live_writer(ino, handle).await {
            data_changed(&mut writer.metadata);
            let extends =
                matches!(&writer.state, WriteState::Streaming(u) if u.bytes_written() <= size);
            if extends {
                if let WriteState::Streaming(upload) = &mut writer.state {
                    fill_zeros(upload, size).await?;
                }
            } else if size == 0 {
                let upload = self.streaming(&writer.key, &writer.metadata)?;
                writer.state = WriteState::Streaming(upload);
            } else {
                self.staged(&mut writer).await?.set_len(size).await?;
            }
            self.ns().truncated(ino, size);
            return Ok(());
        }
        if self.config.layout.kind == LayoutKind::Segments && !self.config.allow_overwrite {
            return Err(FsError::NotPermitted("segments are immutable".into()));
        }
        self.getattr(ino).await?;
        let (key, etag, current, metadata) = {
            let ns = self.ns();
            let node = ns.node(ino)?;
            (
                node.key().to_string(),
                node.attrs().etag.clone().ok_or(FsError::NotFound)?,
                node.attrs().size,
                node.attrs().metadata.clone(),
            )
        };
        if size == current {
            return Ok(());
        }
        let mut metadata = metadata;
        data_changed(&mut metadata);
        let options = PutOptions {
            metadata: metadata.clone(),
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
        self.ns().uploaded(ino, output.etag, size, metadata);
        Ok(())
    }

    /// chmod/chown/utimens. An open file takes the change with its upload; a directory's
    /// marker is rewritten at once; a closed file's object gets it within
    /// [`super::METADATA_DELAY`] (see `metadata.rs`), or from a rename that comes first.
    async fn change_metadata(
        &self,
        ino: Ino,
        handle: Option<u64>,
        kind: Kind,
        change: &SetAttr,
    ) -> FsResult<()> {
        if ino == super::ROOT_INO {
            return Err(FsError::NotPermitted(
                "the mount root's attributes are set by mount options".into(),
            ));
        }
        let writer = self.live_writer(ino, handle).await;
        // Waiting for a release may have uploaded the file meanwhile: read the node after it.
        let (key, metadata, origin) = {
            let ns = self.ns();
            let node = ns.node(ino)?;
            (
                node.key().to_string(),
                change.apply_to(kind, &node.attrs().metadata),
                node.origin(),
            )
        };
        if let Some(mut writer) = writer {
            writer.metadata = metadata.clone();
            if matches!(writer.state, WriteState::Clean) && origin == Origin::Remote {
                // Nothing pending (closed, release not yet run): S3 holds the file, so the
                // change waits like any closed file's.
                writer.uploaded_metadata = metadata.clone();
                self.ns().attrs_changed(ino, metadata, None, true);
                self.persist_metadata_later(ino);
            } else {
                // Applied when the open file is uploaded.
                self.ns().attrs_changed(ino, metadata, None, false);
            }
        } else if kind == Kind::Directory {
            // Directory attributes live on its `dir/` marker object.
            let options = PutOptions {
                metadata: metadata.clone(),
                ..Default::default()
            };
            self.store.put(&key, Bytes::new(), options).await?;
            self.ns().attrs_changed(ino, metadata, None, false);
        } else if origin == Origin::Remote {
            self.ns().attrs_changed(ino, metadata, None, true);
            self.persist_metadata_later(ino);
        } else {
            self.ns().attrs_changed(ino, metadata, None, false);
        }
        Ok(())
    }

    pub fn getxattr(&self, ino: Ino, name: &str) -> FsResult<Vec<u8>> {
        if self.config.layout.kind == LayoutKind::Keys {
            return Err(FsError::NoXattrs);
        }
        if self.in_view(ino) {
            return match self.view_segment_id(ino) {
                Some(id) if name == SEGMENT_ID_XATTR => Ok(id.to_string().into_bytes()),
                _ => Err(FsError::NoAttribute),
            };
        }
        let ns = self.ns();
        let node = ns.node(ino)?;
        match self.config.layout.segment_id(node.name()) {
            Some(id) if name == SEGMENT_ID_XATTR && node.kind() == Kind::File => {
                Ok(id.to_string().into_bytes())
            }
            _ => Err(FsError::NoAttribute),
        }
    }

    pub fn listxattr(&self, ino: Ino) -> FsResult<Vec<u8>> {
        if self.config.layout.kind == LayoutKind::Keys {
            return Err(FsError::NoXattrs);
        }
        if self.in_view(ino) {
            return Ok(match self.view_segment_id(ino) {
                Some(_) => [SEGMENT_ID_XATTR.as_bytes(), &[0]].concat(),
                None => Vec::new(),
            });
        }
        let ns = self.ns();
        let node = ns.node(ino)?;
        let mut names = Vec::new();
        if node.kind() == Kind::File && self.config.layout.segment_id(node.name()).is_some() {
            names.extend_from_slice(SEGMENT_ID_XATTR.as_bytes());
            names.push(0);
        }
        Ok(names)
    }
}
