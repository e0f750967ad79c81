//! Cross-file prefetch. `cp -r`, `tar`, `rsync`, `cat *` and `sha256sum *` read the files of a
//! directory one after another, in name order; each small file then costs one GET round trip
//! on the critical path, so no client can beat one round trip per file by reading faster. When
//! a directory's files are opened in order, the next files are fetched ahead in parallel, as
//! whole objects into the block cache, so their opens find their bytes already there.
//!
//! - **Detection**: a read from the start of the file that follows (in the directory's order, at most a few
//!   names on) the one opened before in the same directory extends that directory's streak;
//!   anything else resets it. A streak of one already prefetches.
//! - **Selection**: a reader that passes over names (`sha256sum *.bin` between sidecars) gets
//!   only names with the extension it is reading fetched ahead.
//! - **Window**: 2^streak files ahead, at most [`MAX_FILES_AHEAD`], and at most a quarter of
//!   the cache budget in bytes, only files up to [`MAX_OBJECT`] (larger files have their own
//!   sequential prefetch once opened), only versions confirmed within the TTL.
//! - **Bounds**: each fetch holds a prefetch permit shared with sequential prefetch and is
//!   skipped, never queued, when none is free; a broken pattern simply stops issuing more.

use std::collections::HashMap;

use super::namespace::Ino;
use super::{Fs, lock};
use crate::cache::ObjectVersion;

/// Most files fetched ahead of a reader.
pub const MAX_FILES_AHEAD: usize = 32;
/// Largest file fetched whole ahead of its open.
pub const MAX_OBJECT: u64 = 8 << 20;
/// How many names past the previous one an open may be and still continue the stream
/// (a sidecar or a subdirectory between two files).
const MAX_GAP: usize = 3;
/// Directories whose streams are remembered.
const MAX_STREAMS: usize = 256;

#[derive(Default)]
pub(super) struct Streams {
    by_dir: HashMap<Ino, Stream>,
}

struct Stream {
    last: String,
    streak: u32,
    /// The last step passed over names it did not read (`cat *.bin` between sidecars): only
    /// names like the ones read are fetched ahead then.
    skipping: bool,
}

impl Fs {
    /// `ino` is being read from its start (opens alone do not count: rsync opens the files it
    /// writes without reading them): extend or reset its directory's stream and fetch ahead.
    pub(super) fn read_ahead_of(&self, ino: Ino) {
        let Some((dir, name)) = self
            .ns()
            .get(ino)
            .filter(|n| n.linked())
            .map(|n| (n.parent(), n.name().to_string()))
        else {
            return;
        };
        let streak = {
            let mut streams = lock(&self.streams);
            if streams.by_dir.get(&dir).is_some_and(|s| s.last == name) {
                return;
            }
            let step = streams.by_dir.get(&dir).and_then(|stream| {
                if stream.last >= name {
                    return None;
                }
                self.ns()
                    .siblings_after(dir, &stream.last, MAX_GAP)
                    .iter()
                    .position(|s| s.name == name)
            });
            if streams.by_dir.len() >= MAX_STREAMS && !streams.by_dir.contains_key(&dir) {
                streams.by_dir.clear();
            }
            let stream = streams.by_dir.entry(dir).or_insert(Stream {
                last: String::new(),
                streak: 0,
                skipping: false,
            });
            stream.streak = if step.is_some() { stream.streak + 1 } else { 0 };
            stream.skipping = step.is_some_and(|skipped| skipped > 0);
            stream.last = name.clone();
            (stream.streak, stream.skipping)
        };
        let (streak, skipping) = streak;
        if streak == 0 {
            return;
        }
        let extension = |name: &str| name.rsplit_once('.').map(|(_, ext)| ext.to_string());
        let wanted_extension = extension(&name);
        let want = (1usize << streak.min(6)).min(MAX_FILES_AHEAD);
        let byte_budget = self.config.cache_bytes / 4;
        let mut bytes = 0;
        for sibling in self.ns().siblings_after(dir, &name, want) {
            if !sibling.fresh || sibling.size == 0 || sibling.size > MAX_OBJECT {
                continue;
            }
            if skipping && extension(&sibling.name) != wanted_extension {
                continue;
            }
            bytes += sibling.size;
            if bytes > byte_budget {
                break;
            }
            let (ino, etag, sent) = (sibling.ino, sibling.etag.clone(), self.config.clock.now());
            let object = ObjectVersion::new(sibling.key, sibling.etag, sibling.size);
            match self.reads.prefetch_object(object) {
                // The GET pinned to this ETag succeeded: the version was current when it was
                // sent, so the open that follows needs no request to learn it.
                Some(fetch) => {
                    let this = self.this.clone();
                    tokio::spawn(async move {
                        if let (Ok(true), Some(fs)) = (fetch.await, this.upgrade()) {
                            fs.ns().confirmed(ino, &etag, sent);
                        }
                    });
                }
                None if self.reads.prefetch_permits_exhausted() => break,
                None => {}
            }
        }
    }
}
