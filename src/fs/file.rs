//! Open files: reading through the block cache, writing through an upload, and the promise
//! that close (flush) and fsync return only when S3 holds the whole object.
//!
//! A new (or O_TRUNC) file written in order streams into a multipart upload; anything else -
//! random writes, appends, overwrites, truncates - goes to a staged local copy seeded from the
//! object, uploaded on close. A file created here exists only while it is being written: if its
//! upload fails, close returns the error and the name disappears; nothing partial is ever in S3.

use std::time::{Duration, SystemTime};

use bytes::Bytes;

use super::attr::{Attr, SetAttr, attr_of, data_changed, owned_metadata};
use super::error::{FsError, FsResult};
use super::handles::Handle;
use super::lookup::meta_attrs;
use super::namespace::{Access, Attrs, DeferredDelete, Ino, Kind, ReleaseWait, WriteStatus};
use super::process::thread_group;
use super::write_handle::{BaseVersion, WriteHandle, WriteState};
use super::{Caller, Fs, LayoutKind};
use crate::cache::ObjectVersion;
use crate::store::{PutOptions, StoreError, UserMetadata};
use crate::upload::{StagedFile, StreamingUpload, UploadConfig, UploadError};

/// Whether a write failed its condition (a conditional create found the key taken).
fn is_precondition_failed(error: &FsError) -> bool {
    match error {
        FsError::Store(StoreError::PreconditionFailed(_)) => true,
        FsError::Upload(UploadError::Store(failure)) => {
            matches!(*failure.source, StoreError::PreconditionFailed(_))
        }
        _ => false,
    }
}

/// Whether an upload (or the staging it seeds from) failed because its object is gone.
fn upload_not_found(error: &UploadError) -> bool {
    matches!(error, UploadError::Store(failure) if failure.source.is_not_found())
}

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
/// The only xattr namespace the mount has names in.
pub(super) const USER_XATTR_PREFIX: &str = "user.";
/// How long an open, rename or chmod waits for a release that has not started when every
/// descriptor of the file saw a close: the kernel sends it within a millisecond or so, but a
/// FLUSH is also what closing a duplicate (`exec 3>log; echo >&3`) sends, and that file stays
/// open. A release that has started is awaited to its end, not timed.
const CLOSING_WAIT: Duration = Duration::from_millis(100);

/// What `open` and `create` return.
#[derive(Debug, Clone, Copy)]
pub struct Opened {
    pub handle: u64,
    /// The kernel may keep the pages it cached of this file: the object has not changed.
    pub keep_cache: bool,
}

impl Fs {
    fn upload_config(&self) -> FsResult<UploadConfig> {
        Ok(
            UploadConfig::new(self.config.part_size, self.config.max_parts_in_flight)?
                .with_budget(self.write_budget.clone()),
        )
    }

    /// A streaming upload to `key`; `create_only` makes its write conditional (the key must
    /// not exist when it lands).
    fn streaming(
        &self,
        key: &str,
        metadata: &UserMetadata,
        create_only: bool,
    ) -> FsResult<StreamingUpload> {
        let options = PutOptions {
            metadata: metadata.clone(),
            if_none_match: create_only,
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
        let writing = flags & libc::O_ACCMODE != libc::O_RDONLY;
        let kind = self.ns().node(ino)?.kind();
        if kind == Kind::Directory {
            return Err(FsError::IsDirectory);
        }
        self.wait_for_releases(ino).await;
        if self.ns().node(ino)?.write_status() == WriteStatus::Created {
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
        let number = self.new_handle();
        let (key, base, metadata) = {
            let mut ns = self.ns();
            let node = ns.node(ino)?;
            let base = node.attrs().etag.clone().map(|etag| BaseVersion {
                key: node.key().to_string(),
                etag,
                size: node.attrs().size,
            });
            let mut metadata = node.attrs().metadata.clone();
            let key = node.key().to_string();
            ns.handle_opened(ino, number, Access::Write);
            if truncating {
                // The new object's times are its upload's, so the upload starts without old ones.
                data_changed(&mut metadata);
                ns.truncated(ino, 0);
                ns.data_written(ino, 0, metadata.clone());
            }
            (key, base, metadata)
        };
        let state = if truncating {
            match self.streaming(&key, &metadata, false) {
                Ok(upload) => WriteState::Streaming(upload),
                Err(e) => {
                    self.ns().handle_released(ino, number);
                    return Err(e);
                }
            }
        } else {
            WriteState::Clean
        };
        let writer = WriteHandle {
            ino,
            state,
            base,
            create_only: None,
            opener: thread_group(caller.pid),
            upload_since: SystemTime::now(),
        };
        self.handles().put(
            number,
            Handle::Writer {
                ino,
                writer: std::sync::Arc::new(tokio::sync::Mutex::new(writer)),
            },
        );
        Ok(Opened {
            handle: number,
            keep_cache: false,
        })
    }

    /// Waits until no release of `ino` is in flight: one that started (its last upload is
    /// awaited to its end, whatever it takes) or, for at most [`CLOSING_WAIT`], one the kernel
    /// is about to send (every open handle saw a close). So `cat f; rm f` or
    /// `echo x > f; mv f g` act on a closed file, not an open one.
    pub(super) async fn wait_for_releases(&self, ino: Ino) {
        let closing_deadline = tokio::time::Instant::now() + CLOSING_WAIT;
        loop {
            // Made before the record is read: a release that starts in between still wakes it.
            let release_started = self.released.notified();
            let wait = self.ns().release_wait(ino);
            match wait {
                ReleaseWait::Nothing => return,
                ReleaseWait::Uploads(uploads) => {
                    for upload in uploads {
                        upload.finished().await;
                    }
                }
                ReleaseWait::Closing => {
                    let started = tokio::time::timeout_at(closing_deadline, release_started);
                    if started.await.is_err() {
                        return;
                    }
                }
            }
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
        let number = self.new_handle();
        let keep_cache = {
            let mut ns = self.ns();
            ns.handle_opened(ino, number, Access::Read);
            ns.opened_for_reading(ino, &etag)
        };
        let reader = self.reads.open(ObjectVersion::new(key, etag, size));
        let reader = std::sync::Arc::new(reader);
        self.handles().put(number, Handle::Reader { ino, reader });
        Ok(Opened {
            handle: number,
            keep_cache,
        })
    }

    /// GETs the object's first block without If-Match (it lands in the block cache) and
    /// records the version it came from: (ETag, size).
    async fn learn_current_version(&self, ino: Ino, key: &str) -> FsResult<(String, u64)> {
        let at = self.config.clock.now();
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
        self.remember_metadata(&meta);
        self.ns().refreshed(ino, meta_attrs(meta), at);
        Ok(version)
    }

    /// Creates a file that exists only here until its first successful flush uploads it. With
    /// O_EXCL, and for every new segment in the segments layout (segments are immutable), the
    /// upload is a conditional create: if another client made the key meanwhile, close gives
    /// EEXIST and its object stays. An O_EXCL create of a segment also asks S3 first (see
    /// [`taken_in_s3`](Self::taken_in_s3)), so a segment made elsewhere is EEXIST at open.
    pub async fn create(
        &self,
        parent: Ino,
        name: &str,
        mode: u32,
        flags: i32,
        caller: Caller,
    ) -> FsResult<(Attr, Opened)> {
        let exclusive = flags & libc::O_EXCL != 0
            || (self.config.layout.kind == LayoutKind::Segments && !self.config.allow_overwrite);
        self.check_writable()?;
        self.config.layout.check_new_name(name, false)?;
        match self.resolve(parent, name).await {
            Ok(_) => return Err(FsError::Exists),
            Err(FsError::NotFound) => {}
            Err(e) => return Err(e),
        }
        let key = self.ns().new_child_key(parent, name, Kind::File)?;
        // An object this mount unlinked while open still sits at the key until its last close:
        // it is ours to replace, so the condition could only fail against it.
        let create_only = exclusive && !self.ns().delete_waiting(&key);
        if create_only
            && flags & libc::O_EXCL != 0
            && self.config.layout.kind == LayoutKind::Segments
            && self.config.layout.segment_id(name).is_some()
            && self.taken_in_s3(parent, name, &key).await?
        {
            return Err(FsError::Exists);
        }
        let (caller, mode) = self.inherit_group(parent, caller, mode, false);
        let metadata = owned_metadata(Kind::File, mode, caller.uid, caller.gid, &self.config);
        let upload = self.streaming(&key, &metadata, create_only)?;
        let number = self.new_handle();
        let (ino, attr) = {
            let mut ns = self.ns();
            let ino = ns.created(parent, name, Attrs::new_file(metadata), number)?;
            (ino, attr_of(ns.node(ino)?, &self.config))
        };
        let writer = WriteHandle {
            ino,
            state: WriteState::Streaming(upload),
            base: None,
            create_only: create_only.then_some(key),
            opener: thread_group(caller.pid),
            upload_since: SystemTime::now(),
        };
        self.handles().put(
            number,
            Handle::Writer {
                ino,
                writer: std::sync::Arc::new(tokio::sync::Mutex::new(writer)),
            },
        );
        Ok((
            attr,
            Opened {
                handle: number,
                keep_cache: false,
            },
        ))
    }

    /// Whether `key` holds an object in S3 now: one HEAD. An O_EXCL create of a segment asks
    /// before it opens, because most programs (shells with `noclobber`, lockfile makers) never
    /// look at close's error, where the conditional upload would report the name taken. The
    /// name was not found here, but a listing within the TTL may predate another client's
    /// segment. The conditional upload at close still covers a segment made after this HEAD.
    async fn taken_in_s3(&self, parent: Ino, name: &str, key: &str) -> FsResult<bool> {
        let at = self.config.clock.now();
        match self.store.head(key).await {
            Ok(meta) => {
                self.remember_metadata(&meta);
                self.ns()
                    .looked_up(parent, name, Some((Kind::File, meta_attrs(meta))), at);
                Ok(true)
            }
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Reads through a handle. A reader whose file was replaced (a rename onto its name, or
    /// another client's write or delete) gets ESTALE, never ENOENT: the descriptor is open.
    pub async fn read(&self, handle: u64, offset: u64, size: u32) -> FsResult<Bytes> {
        let reader = self.handles().reader(handle);
        if let Some((ino, reader)) = reader {
            if self.ns().get(ino).is_some_and(|node| node.replaced()) {
                return Err(FsError::Stale);
            }
            // A file read from its start: the next files of its directory may follow.
            if offset == 0 {
                self.read_ahead_of(ino);
            }
            return match reader.read(offset, size).await {
                Err(e) if e.is_not_found() => Err(FsError::Stale),
                other => Ok(other?),
            };
        }
        let writer = self.handles().writer(handle).ok_or(FsError::BadHandle)?;
        let mut writer = writer.lock().await;
        let staged = self.staged(&mut writer).await?;
        Ok(staged.read_at(offset, size as usize).await?)
    }

    pub async fn write(&self, handle: u64, offset: u64, data: &[u8]) -> FsResult<u32> {
        let writer = self.handles().writer(handle).ok_or(FsError::BadHandle)?;
        let mut writer = writer.lock().await;
        let (key, metadata) = {
            let ns = self.ns();
            let node = ns.node(writer.ino)?;
            let mut metadata = node.attrs().metadata.clone();
            data_changed(&mut metadata);
            (node.key().to_string(), metadata)
        };
        if writer.is_sequential(offset) {
            if matches!(writer.state, WriteState::Clean) {
                let create_only = writer.create_only.as_ref() == Some(&key);
                let upload = self.streaming(&key, &metadata, create_only)?;
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
        self.ns().data_written(writer.ino, end, metadata);
        Ok(data.len() as u32)
    }

    /// The handle's staged copy, making it if needed: from the bytes a streaming upload has not
    /// sent yet, or from the object version the handle was opened on (an unlinked or renamed
    /// file's old object waits for its last close, so it is still there).
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
                WriteState::Clean => match self.seed_version(writer) {
                    Some(base) if base.size > 0 => StagedFile::from_object(
                        self.store.as_ref(),
                        &base.key,
                        &base.etag,
                        base.size,
                        staging,
                    )
                    .await
                    .map_err(|e| match e {
                        // The version the handle applies to is gone (another client): stale.
                        e if upload_not_found(&e) => FsError::Stale,
                        e => FsError::from(e),
                    })?,
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

    /// Copies the object each open write handle of `ino` applies to into its staging, for a
    /// rename about to replace that object: the descriptors keep their file's bytes (one GET
    /// each, only for handles with nothing staged yet).
    pub(super) async fn stage_open_writers(&self, ino: Ino) -> FsResult<()> {
        let numbers = self.ns().live_writers(ino);
        let writers: Vec<_> = {
            let handles = self.handles();
            numbers.iter().filter_map(|n| handles.writer(*n)).collect()
        };
        for writer in writers {
            let mut writer = writer.lock().await;
            let needs_base = matches!(writer.state, WriteState::Clean)
                && writer.base.as_ref().is_some_and(|b| b.size > 0);
            if needs_base {
                self.staged(&mut writer).await?;
            }
        }
        Ok(())
    }

    /// The object version to seed a handle's staging from: the one it applies to, or, for a
    /// file renamed since, the copy the rename made (same bytes, at the new key), so a new
    /// object written under the old name meanwhile does not matter.
    fn seed_version(&self, writer: &WriteHandle) -> Option<BaseVersion> {
        let base = writer.base.clone()?;
        let ns = self.ns();
        let node = ns.get(writer.ino)?;
        match &node.attrs().etag {
            Some(etag) if node.linked() && node.key() != base.key => Some(BaseVersion {
                key: node.key().to_string(),
                etag: etag.clone(),
                size: base.size,
            }),
            _ => Some(base),
        }
    }

    /// A close of a descriptor (`pid` is the closing thread). Only the opener's closes upload,
    /// and a new file with nothing written yet waits for the last close: a program that dup2s
    /// its output and closes the original (GNU dd) must not leave an empty object behind.
    pub async fn flush(&self, handle: u64, caller: Caller) -> FsResult<()> {
        let (ino, writer) = {
            let handles = self.handles();
            (handles.ino_of(handle), handles.writer(handle))
        };
        if let Some(ino) = ino {
            self.ns().handle_flushed(ino, handle);
        }
        let Some(writer) = writer else {
            return Ok(());
        };
        let mut writer = writer.lock().await;
        if writer.opener != thread_group(caller.pid) || writer.is_new_and_empty() {
            return Ok(());
        }
        self.finish_write(&mut writer, false).await
    }

    /// The last close of a handle: a writer's last upload, then the deletes that waited for
    /// the file's last close here.
    pub async fn release(&self, handle: u64) -> FsResult<()> {
        let Some(open) = self.handles().get(handle).cloned() else {
            return Ok(());
        };
        let (deletes, result) = match open {
            Handle::Directory(_) => {
                self.handles().remove(handle);
                return Ok(());
            }
            Handle::Reader { ino, .. } => {
                self.handles().remove(handle);
                (self.ns().handle_released(ino, handle), Ok(()))
            }
            Handle::Writer { ino, writer } => {
                // Locked first, so an operation in progress on the handle ends before it goes.
                // From here on the record says the release runs: an open, rename, chmod or
                // truncate of the file awaits its upload.
                let mut writer = writer.lock().await;
                let (in_flight, earlier) = self.ns().release_started(ino, handle).unzip();
                self.handles().remove(handle);
                self.released.notify_waiters();
                // Two writers closed one after the other land in that order.
                for upload in earlier.into_iter().flatten() {
                    upload.finished().await;
                }
                let result = self.finish_write(&mut writer, true).await;
                let deletes = self.ns().handle_released(ino, handle);
                drop(in_flight);
                (deletes, result)
            }
        };
        self.released.notify_waiters();
        self.run_deferred_deletes(deletes).await;
        result
    }

    /// Deletes objects whose DELETE waited for a file's last close, each only if nothing here
    /// holds its key again and it is still the version that was unlinked (one HEAD first), so
    /// a newer object written meanwhile - by this mount or another client - is kept.
    pub(super) async fn run_deferred_deletes(&self, deletes: Vec<DeferredDelete>) {
        for delete in deletes {
            if !self.ns().may_delete(&delete) {
                continue;
            }
            if let Some(etag) = &delete.etag {
                match self.store.head(&delete.key).await {
                    Ok(meta) if meta.etag == *etag => {}
                    Ok(_) => continue,
                    Err(e) if e.is_not_found() => continue,
                    Err(e) => {
                        tracing::warn!(key = delete.key, error = %e, "unlinked file's object not deleted");
                        continue;
                    }
                }
            }
            if let Err(e) = self.store.delete(&delete.key).await {
                tracing::warn!(key = delete.key, error = %e, "unlinked file's object not deleted");
            }
        }
    }

    /// Uploads whatever the handle holds that S3 does not, to the key the node has now, and
    /// returns only when S3 has it. An unlinked file uploads nothing: its data stays with the
    /// handle for its later reads and writes, and goes at the `last` close (a started
    /// multipart upload is aborted then).
    pub(super) async fn finish_write(&self, writer: &mut WriteHandle, last: bool) -> FsResult<()> {
        let ino = writer.ino;
        let (linked, key, metadata, size) = {
            let ns = self.ns();
            let node = ns.node(ino)?;
            (
                node.linked(),
                node.key().to_string(),
                node.attrs().metadata.clone(),
                node.attrs().size,
            )
        };
        if !linked && !last {
            return Ok(());
        }
        let state = std::mem::replace(&mut writer.state, WriteState::Clean);
        let uploaded = match state {
            WriteState::Streaming(upload) if !linked => {
                upload.abort().await;
                return Ok(());
            }
            // Nothing pending: S3 holds the data, and a metadata change made meanwhile waits
            // like any closed file's (persist_metadata_later was scheduled for it).
            WriteState::Clean => return Ok(()),
            WriteState::Staged(_) if !linked => return Ok(()),
            WriteState::Staged(staged) if !staged.is_dirty() => {
                writer.state = WriteState::Staged(staged);
                return Ok(());
            }
            WriteState::Streaming(upload) => self.finish_streaming(upload, &key, &metadata).await,
            WriteState::Staged(mut staged) => {
                let options = PutOptions {
                    metadata: metadata.clone(),
                    if_none_match: writer.create_only.as_ref() == Some(&key),
                    ..Default::default()
                };
                let config = self.upload_config()?;
                let uploaded = staged
                    .upload(self.store.clone(), &key, options, config)
                    .await;
                if uploaded.is_ok() {
                    writer.state = WriteState::Staged(staged);
                }
                uploaded.map(|output| output.etag).map_err(FsError::from)
            }
        };
        let etag = match uploaded {
            Ok(etag) => etag,
            Err(e) if writer.create_only.is_some() && is_precondition_failed(&e) => {
                tracing::warn!(
                    key,
                    "another client created the file first; its object stays"
                );
                self.ns().upload_failed(ino);
                return Err(FsError::Exists);
            }
            Err(e) => {
                tracing::error!(key, error = %e, "upload failed; the file is not in S3");
                self.ns().upload_failed(ino);
                return Err(e);
            }
        };
        // From now on the object is this file's own: later uploads replace it.
        writer.create_only = None;
        self.ns().uploaded(ino, etag.clone(), size, metadata);
        self.object_landed(ino, writer.upload_since);
        writer.upload_since = SystemTime::now();
        writer.base = Some(BaseVersion { key, etag, size });
        Ok(())
    }

    /// Completes a streaming upload at `key` with `metadata`. An upload that began under
    /// another key (the file was renamed while open) moves there: before its first part left,
    /// by retargeting; after, by completing it where it began, then COPY + DELETE. Metadata
    /// changed since the upload began is put on by that COPY (or one in place). Returns the
    /// object's ETag.
    async fn finish_streaming(
        &self,
        mut upload: StreamingUpload,
        key: &str,
        metadata: &UserMetadata,
    ) -> FsResult<String> {
        let moved = upload.key() != key && !upload.retarget(key);
        let began_as = upload.key().to_string();
        let began_with = upload.metadata().clone();
        let output = upload.finish().await?;
        if !moved && began_with == *metadata {
            return Ok(output.etag);
        }
        let copy = crate::store::CopyMetadata::ReplaceKnown {
            metadata: metadata.clone(),
            content_type: None,
            source_etag: Some(output.etag.clone()),
        };
        let copied = self.store.copy(&began_as, key, copy).await?;
        if moved
            && self.ns().may_delete(&DeferredDelete {
                key: began_as.clone(),
                etag: None,
            })
        {
            self.store.delete(&began_as).await?;
        }
        Ok(copied.etag)
    }

    /// fsync: the handle's data, and a metadata change of its file still waiting to be
    /// persisted, are in S3 when it returns.
    pub async fn fsync(&self, handle: u64) -> FsResult<()> {
        let open = self.handles().get(handle).cloned();
        let ino = match open {
            Some(Handle::Writer { ino, writer }) => {
                let mut writer = writer.lock().await;
                self.finish_write(&mut writer, false).await?;
                ino
            }
            Some(Handle::Reader { ino, .. }) => ino,
            _ => return Ok(()),
        };
        self.persist_metadata(ino).await
    }

    /// The open write handle of `ino` (`handle` first, if it is one), locked. A release in
    /// flight is waited for, not skipped: a chmod that bypassed a handle in the middle of its
    /// release would be overwritten by the older metadata that release uploads.
    async fn live_writer(
        &self,
        ino: Ino,
        handle: Option<u64>,
    ) -> Option<tokio::sync::OwnedMutexGuard<WriteHandle>> {
        let live = self.ns().live_writers(ino);
        let candidates: Vec<_> = {
            let handles = self.handles();
            match handle.and_then(|h| Some((h, handles.writer(h)?))) {
                Some(own) => vec![own],
                // A change by path (or through a read handle) while the file is open for
                // writing applies to that open file.
                None => live
                    .into_iter()
                    .filter_map(|n| Some((n, handles.writer(n)?)))
                    .collect(),
            }
        };
        for (number, writer) in candidates {
            let writer = writer.lock_owned().await;
            if writer.ino == ino && self.handles().contains(number) {
                return Some(writer);
            }
        }
        self.wait_for_releases(ino).await;
        None
    }

    pub async fn setattr(&self, ino: Ino, handle: Option<u64>, change: SetAttr) -> FsResult<Attr> {
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
            let (key, mut metadata) = {
                let ns = self.ns();
                let node = ns.node(ino)?;
                (node.key().to_string(), node.attrs().metadata.clone())
            };
            data_changed(&mut metadata);
            let extends =
                matches!(&writer.state, WriteState::Streaming(u) if u.bytes_written() <= size);
            if extends {
                if let WriteState::Streaming(upload) = &mut writer.state {
                    fill_zeros(upload, size).await?;
                }
            } else if size == 0 {
                let create_only = writer.create_only.as_ref() == Some(&key);
                let upload = self.streaming(&key, &metadata, create_only)?;
                writer.state = WriteState::Streaming(upload);
            } else {
                self.staged(&mut writer).await?.set_len(size).await?;
            }
            let mut ns = self.ns();
            ns.truncated(ino, size);
            ns.data_written(ino, size, metadata);
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
        let started = SystemTime::now();
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
        self.object_landed(ino, started);
        Ok(())
    }

    /// chmod/chown/utimens. The node takes the change at once; an open file's upload carries
    /// it; a directory's marker is rewritten at once; a closed file's object gets it within
    /// [`super::METADATA_DELAY`] (see `metadata.rs`), or from a rename that comes first. An
    /// unlinked file (still open) keeps it here only: it has no object to carry it.
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
        // Held while the node changes, so an upload of the open file cannot run in between.
        let writer = self.live_writer(ino, handle).await;
        let (key, metadata, in_s3, linked) = {
            let ns = self.ns();
            let node = ns.node(ino)?;
            (
                node.key().to_string(),
                change.apply_to(kind, &node.attrs().metadata),
                !node.is_local(),
                node.linked(),
            )
        };
        if kind == Kind::Directory && linked {
            // Directory attributes live on its `dir/` marker object.
            let options = PutOptions {
                metadata: metadata.clone(),
                ..Default::default()
            };
            self.store.put(&key, Bytes::new(), options).await?;
            self.ns().attrs_changed(ino, metadata, None, false);
            return Ok(());
        }
        let persist = linked && in_s3;
        self.ns().attrs_changed(ino, metadata, None, persist);
        // An open file with data pending carries the change in its upload; otherwise S3
        // holds the file, and the change waits like any closed file's.
        let carried = writer
            .as_ref()
            .is_some_and(|w| !matches!(w.state, WriteState::Clean));
        if persist && !carried {
            self.persist_metadata_later(ino);
        }
        Ok(())
    }

    pub fn getxattr(&self, ino: Ino, name: &str) -> FsResult<Vec<u8>> {
        if self.config.layout.kind == LayoutKind::Keys {
            return Err(FsError::NoXattrs);
        }
        if !name.starts_with(USER_XATTR_PREFIX) {
            return Err(FsError::XattrNamespaceUnsupported);
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
