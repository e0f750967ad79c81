//! Metadata changes at the cost of the data: chmod, chown and utimens of a closed file are not
//! copied onto the object at once, but within [`METADATA_DELAY`], so that a rename that follows
//! (rsync: write a temporary name, close, utimens, chmod, rename) carries them in the COPY it
//! makes anyway. A change becomes durable at the latest when the delay runs out, at fsync of the
//! file, or at unmount; data durability at close does not change.
//!
//! Persisting is a CopyObject of the object onto itself with the new `x-amz-meta-*` headers,
//! pinned to the ETag we know (If-Match on the source), so a newer object written by another
//! client is never overwritten with our older data: that conflict drops our change, logged.
//! S3's REPLACE also replaces the Content-Type, so it is carried over: known for objects this
//! mount uploaded or read, fetched by one HEAD otherwise.

use std::time::{Duration, SystemTime};

use futures::StreamExt;

use super::Fs;
use super::attr::{attr_of, keep_mtime};
use super::error::{FsError, FsResult};
use super::lookup::meta_attrs;
use super::namespace::{Attrs, ContentType, Ino, MimeType};
use crate::cache::{ObjectVersionId, OwnUpload, StoredMetadata};
use crate::store::{CopyMetadata, ObjectMeta, PutOutput, StoreError, UserMetadata};

/// How long a metadata change of a closed file may wait for a rename to carry it.
pub const METADATA_DELAY: Duration = Duration::from_secs(1);

impl Fs {
    /// Persists `ino`'s pending metadata change after [`METADATA_DELAY`], unless something
    /// (a rename, fsync, unmount) does it first.
    pub(super) fn persist_metadata_later(&self, ino: Ino) {
        let this = self.this.clone();
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let pending = PendingCopy::scheduled();
        runtime.spawn(async move {
            let _pending = pending;
            tokio::time::sleep(METADATA_DELAY).await;
            if let Some(fs) = this.upgrade()
                && let Err(e) = fs.persist_metadata(ino).await
            {
                tracing::warn!(ino, error = %e, "metadata change not persisted yet; retried at fsync or unmount");
            }
        });
    }

    /// Copies `ino`'s pending metadata change onto its object now, if it has one.
    pub(super) async fn persist_metadata(&self, ino: Ino) -> FsResult<()> {
        let _gate = self.metadata_gates.enter(ino).await;
        let Some((key, mut metadata, content_type, etag)) = self.ns().take_dirty_metadata(ino)
        else {
            return Ok(());
        };
        if let Ok(node) = self.ns().node(ino) {
            keep_mtime(&mut metadata, attr_of(node, &self.config).mtime);
        }
        match self
            .copy_with_metadata(&key, &key, metadata, content_type, etag)
            .await
        {
            Ok((output, content_type)) => {
                self.ns().metadata_persisted(ino, output.etag, content_type);
                Ok(())
            }
            Err(FsError::Store(StoreError::PreconditionFailed(_)))
            | Err(FsError::Store(StoreError::NotFound(_))) => {
                tracing::warn!(
                    key,
                    "object changed or deleted by another client; its chmod/chown/utimens made here is dropped"
                );
                Ok(())
            }
            Err(e) => {
                self.ns().metadata_still_dirty(ino);
                Err(e)
            }
        }
    }

    /// Fetches, bounded in parallel, the metadata of the given files and directory markers
    /// (a listing page's) that no HEAD or GET brought yet, so `ls -l` shows their stored type,
    /// mode, owner and times: one batch lookup in the metadata cache for all of them, HEADs for
    /// what it does not know, and one batch of what those HEADs told back into the cache.
    /// Known versions are not fetched again: a relisting keeps the metadata of an unchanged
    /// version, and the cache learns it with its LastModified.
    pub(super) async fn fetch_metadata_of(&self, nodes: Vec<Ino>) {
        let mut unknown = Vec::new();
        {
            let ns = self.ns();
            for node in nodes.iter().filter_map(|ino| ns.get(*ino)) {
                if !node.is_local() && node.attrs().content_type == ContentType::Unknown {
                    let version = cache_version(node.attrs());
                    unknown.push((node.ino(), node.key().to_string(), version));
                }
            }
        }
        let heads = self.answer_from_cache(unknown).await;
        let heads = futures::stream::iter(heads)
            .map(|(ino, key)| async move {
                let slot = self.head_window.enter(self.store.throttled_answers()).await;
                let at = self.config.clock.now();
                let head = self.store.head(&key).await;
                self.head_window
                    .finish(slot, self.store.throttled_answers());
                (ino, at, head)
            })
            .buffer_unordered(self.config.max_heads_in_flight);
        futures::pin_mut!(heads);
        let mut learned = Vec::new();
        while let Some((ino, at, head)) = heads.next().await {
            match head {
                Ok(meta) => {
                    learned.push(cache_entry(&meta));
                    self.ns().metadata_seen(ino, meta_attrs(meta), at);
                }
                // A directory without a marker object has no metadata to find.
                Err(e) if e.is_not_found() => self.ns().metadata_seen_none(ino),
                Err(e) => tracing::debug!(ino, error = %e, "no metadata for a listed entry"),
            }
        }
        if let Some(cache) = &self.config.metadata_cache {
            cache.put_many(learned);
        }
    }

    /// Gives the nodes whose listed version the metadata cache knows their metadata (one
    /// batch, off the async threads: it may read the disk); returns the rest, to be HEADed.
    async fn answer_from_cache(
        &self,
        unknown: Vec<(Ino, String, Option<ObjectVersionId>)>,
    ) -> Vec<(Ino, String)> {
        let mut to_head = Vec::new();
        let mut inos = Vec::new();
        let mut wanted = Vec::new();
        for (ino, key, version) in unknown {
            match version {
                Some(version) if self.config.metadata_cache.is_some() => {
                    inos.push(ino);
                    wanted.push((key, version));
                }
                _ => to_head.push((ino, key)),
            }
        }
        let Some(cache) = self
            .config
            .metadata_cache
            .clone()
            .filter(|_| !wanted.is_empty())
        else {
            return to_head;
        };
        let keys: Vec<(Ino, String)> = inos
            .iter()
            .copied()
            .zip(wanted.iter().map(|(k, _)| k.clone()))
            .collect();
        let looked_up = tokio::task::spawn_blocking(move || {
            let answers = cache.get_many(&wanted);
            (wanted, answers)
        })
        .await;
        let Ok((wanted, answers)) = looked_up else {
            tracing::warn!("metadata cache lookup failed: HEADs instead");
            to_head.extend(keys);
            return to_head;
        };
        let at = self.config.clock.now();
        let mut ns = self.ns();
        for ((ino, (key, version)), answer) in inos.into_iter().zip(wanted).zip(answers) {
            let Some(stored) = answer else {
                to_head.push((ino, key));
                continue;
            };
            let attrs = Attrs {
                size: version.size,
                mtime: version.last_modified,
                etag: Some(version.etag),
                metadata: stored.metadata,
                content_type: ContentType::Known(stored.content_type.map(MimeType::from)),
                last_modified: Some(version.last_modified),
            };
            ns.metadata_seen(ino, attrs, at);
        }
        to_head
    }

    /// Keeps what a HEAD or GET told of an object version in the metadata cache.
    pub(super) fn remember_metadata(&self, meta: &ObjectMeta) {
        if let Some(cache) = &self.config.metadata_cache {
            cache.put_many(vec![cache_entry(meta)]);
        }
    }

    /// This mount wrote `ino`'s object, in an upload that began at `started` and has just
    /// answered: the metadata cache records it as this machine's upload, for the first
    /// listing that shows that version to adopt.
    pub(super) fn object_landed(&self, ino: Ino, started: SystemTime) {
        let Some(cache) = &self.config.metadata_cache else {
            return;
        };
        let upload = {
            let ns = self.ns();
            let Some(node) = ns.get(ino).filter(|n| !n.is_local()) else {
                return;
            };
            let attrs = node.attrs();
            let (ContentType::Known(content_type), Some(etag)) = (&attrs.content_type, &attrs.etag)
            else {
                return;
            };
            OwnUpload {
                key: node.key().to_string(),
                etag: etag.clone(),
                size: Some(attrs.size),
                stored: StoredMetadata {
                    metadata: attrs.metadata.clone(),
                    content_type: content_type.clone().map(String::from),
                },
                started,
                finished: SystemTime::now(),
            }
        };
        cache.record_uploads(vec![upload]);
    }

    /// Persists every pending metadata change, and waits until the metadata cache has
    /// written what it was told (unmount).
    pub(super) async fn persist_all_metadata(&self) {
        let dirty = self.ns().dirty_metadata();
        for (ino, _) in dirty {
            if let Err(e) = self.persist_metadata(ino).await {
                tracing::error!(ino, error = %e, "metadata change could not be persisted");
            }
        }
        if let Some(cache) = self.config.metadata_cache.clone() {
            let _ = tokio::task::spawn_blocking(move || cache.flush()).await;
        }
    }

    /// CopyObject of `source` to `dest` with `metadata`, keeping the Content-Type (one HEAD
    /// first when it is unknown) and pinned to `etag` when known.
    pub(super) async fn copy_with_metadata(
        &self,
        source: &str,
        dest: &str,
        metadata: UserMetadata,
        content_type: ContentType,
        etag: Option<String>,
    ) -> FsResult<(PutOutput, ContentType)> {
        let (content_type, source_etag) = match content_type {
            ContentType::Known(content_type) => (content_type.map(String::from), etag),
            ContentType::Unknown => {
                let head = self.store.head(source).await?;
                if etag.as_ref().is_some_and(|etag| *etag != head.etag) {
                    return Err(StoreError::PreconditionFailed(source.to_string()).into());
                }
                (head.content_type, Some(head.etag))
            }
        };
        let copy = CopyMetadata::ReplaceKnown {
            metadata: metadata.clone(),
            content_type: content_type.clone(),
            source_etag,
        };
        let started = SystemTime::now();
        let output = self.store.copy(source, dest, copy).await?;
        // The copy carries exactly the metadata and Content-Type given here, so the cache can
        // vouch for it (its size is the source's, unknown here: the ETag stands for the data).
        if let Some(cache) = &self.config.metadata_cache {
            cache.record_uploads(vec![OwnUpload {
                key: dest.to_string(),
                etag: output.etag.clone(),
                size: None,
                stored: StoredMetadata {
                    metadata,
                    content_type: content_type.clone(),
                },
                started,
                finished: SystemTime::now(),
            }]);
        }
        Ok((output, ContentType::Known(content_type.map(MimeType::from))))
    }
}

/// One delayed copy in the `scribefs_metadata_copies_pending` gauge until its task ends (run,
/// or dropped with the runtime), so tests can wait for the copies instead of sleeping.
struct PendingCopy;

impl PendingCopy {
    fn scheduled() -> PendingCopy {
        crate::metrics::registry().metadata_copy_pending(true);
        PendingCopy
    }
}

impl Drop for PendingCopy {
    fn drop(&mut self) {
        crate::metrics::registry().metadata_copy_pending(false);
    }
}

/// A HEAD's or GET's answer as a metadata cache entry.
fn cache_entry(meta: &ObjectMeta) -> (String, ObjectVersionId, StoredMetadata) {
    let version = ObjectVersionId {
        etag: meta.etag.clone(),
        last_modified: meta.last_modified,
        size: meta.size,
    };
    let stored = StoredMetadata {
        metadata: meta.metadata.clone(),
        content_type: meta.content_type.clone(),
    };
    (meta.key.clone(), version, stored)
}

/// The version a node's attributes name, if S3 told all of it (a listing or a HEAD; not an
/// upload of this mount, whose LastModified the next listing tells).
fn cache_version(attrs: &Attrs) -> Option<ObjectVersionId> {
    Some(ObjectVersionId {
        etag: attrs.etag.clone()?,
        last_modified: attrs.last_modified?,
        size: attrs.size,
    })
}
