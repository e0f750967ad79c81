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

use std::time::Duration;

use futures::StreamExt;

use super::Fs;
use super::attr::{attr_of, keep_mtime};
use super::error::{FsError, FsResult};
use super::lookup::meta_attrs;
use super::namespace::{Attrs, ContentType, Ino, Origin};
use crate::cache::{ObjectVersionId, StoredMetadata};
use crate::store::{CopyMetadata, ObjectMeta, PutOutput, StoreError, UserMetadata};

/// How long a metadata change of a closed file may wait for a rename to carry it.
pub const METADATA_DELAY: Duration = Duration::from_secs(1);
/// HEADs in flight when fetching a listed directory's metadata (`--posix-metadata`).
const METADATA_HEADS_IN_FLIGHT: usize = 128;

impl Fs {
    /// Persists `ino`'s pending metadata change after [`METADATA_DELAY`], unless something
    /// (a rename, fsync, unmount) does it first.
    pub(super) fn persist_metadata_later(&self, ino: Ino) {
        let this = self.this.clone();
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn(async move {
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
    /// mode, owner and times: from the metadata cache when it knows the listed version, else
    /// by a HEAD (whose answer the cache then keeps). Known versions are not fetched again: a
    /// relisting keeps the metadata of an unchanged version, and the cache learns it with its
    /// LastModified.
    pub(super) async fn fetch_metadata_of(&self, nodes: Vec<Ino>) {
        let mut unknown = Vec::new();
        {
            let ns = self.ns();
            for node in nodes.iter().filter_map(|ino| ns.get(*ino)) {
                if node.origin() != Origin::Remote {
                    continue;
                }
                let version = cache_version(node.attrs());
                match (
                    &node.attrs().content_type,
                    &self.config.metadata_cache,
                    version,
                ) {
                    (ContentType::Known(content_type), Some(cache), Some(version)) => {
                        let stored = StoredMetadata {
                            metadata: node.attrs().metadata.clone(),
                            content_type: content_type.clone(),
                        };
                        cache.put(node.key(), &version, &stored);
                    }
                    (ContentType::Known(_), _, _) => {}
                    (ContentType::Unknown, _, version) => {
                        unknown.push((node.ino(), node.key().to_string(), version))
                    }
                }
            }
        }
        let mut heads = Vec::new();
        for (ino, key, version) in unknown {
            let cached = self
                .config
                .metadata_cache
                .as_ref()
                .zip(version.as_ref())
                .and_then(|(cache, version)| cache.get(&key, version));
            match (cached, version) {
                (Some(stored), Some(version)) => {
                    let attrs = Attrs {
                        size: version.size,
                        mtime: version.last_modified,
                        etag: Some(version.etag),
                        metadata: stored.metadata,
                        content_type: ContentType::Known(stored.content_type),
                        last_modified: Some(version.last_modified),
                    };
                    let at = self.config.clock.now();
                    self.ns().metadata_seen(ino, attrs, at);
                }
                _ => heads.push((ino, key)),
            }
        }
        let heads = futures::stream::iter(heads)
            .map(|(ino, key)| async move {
                let at = self.config.clock.now();
                (ino, at, self.store.head(&key).await)
            })
            .buffer_unordered(METADATA_HEADS_IN_FLIGHT);
        futures::pin_mut!(heads);
        while let Some((ino, at, head)) = heads.next().await {
            match head {
                Ok(meta) => {
                    self.remember_metadata(&meta);
                    self.ns().metadata_seen(ino, meta_attrs(meta), at);
                }
                // A directory without a marker object has no metadata to find.
                Err(e) if e.is_not_found() => self.ns().metadata_seen_none(ino),
                Err(e) => tracing::debug!(ino, error = %e, "no metadata for a listed entry"),
            }
        }
    }

    /// Keeps what a HEAD or GET told of an object version in the metadata cache.
    pub(super) fn remember_metadata(&self, meta: &ObjectMeta) {
        if let Some(cache) = &self.config.metadata_cache {
            let version = ObjectVersionId {
                etag: meta.etag.clone(),
                last_modified: meta.last_modified,
                size: meta.size,
            };
            let stored = StoredMetadata {
                metadata: meta.metadata.clone(),
                content_type: meta.content_type.clone(),
            };
            cache.put(&meta.key, &version, &stored);
        }
    }

    /// Persists every pending metadata change (unmount).
    pub(super) async fn persist_all_metadata(&self) {
        let dirty = self.ns().dirty_metadata();
        for (ino, _) in dirty {
            if let Err(e) = self.persist_metadata(ino).await {
                tracing::error!(ino, error = %e, "metadata change could not be persisted");
            }
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
            ContentType::Known(content_type) => (content_type, etag),
            ContentType::Unknown => {
                let head = self.store.head(source).await?;
                if etag.as_ref().is_some_and(|etag| *etag != head.etag) {
                    return Err(StoreError::PreconditionFailed(source.to_string()).into());
                }
                (head.content_type, Some(head.etag))
            }
        };
        let copy = CopyMetadata::ReplaceKnown {
            metadata,
            content_type: content_type.clone(),
            source_etag,
        };
        let output = self.store.copy(source, dest, copy).await?;
        Ok((output, ContentType::Known(content_type)))
    }
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
