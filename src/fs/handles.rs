//! Open handles of this mount, indexed by handle number and by inode, in one place: readers
//! (pinned to an object version), writers (with their pending data) and directory streams.
//! What a handle's file *is* - its key, metadata, whether it is linked, which deletes wait for
//! its last close - lives in the file's namespace node, not here: a rename or unlink changes the
//! node, and every handle sees it at its next operation.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use super::namespace::Ino;
use super::readdir::DirStream;
use super::write_handle::WriteHandle;
use crate::cache::ObjectReader;

pub(super) type SharedWriter = Arc<tokio::sync::Mutex<WriteHandle>>;
pub(super) type SharedDirStream = Arc<tokio::sync::Mutex<DirStream>>;

/// What one handle number is.
#[derive(Clone)]
pub(super) enum Handle {
    Reader { ino: Ino, reader: Arc<ObjectReader> },
    Writer { ino: Ino, writer: SharedWriter },
    Directory(SharedDirStream),
}

#[derive(Default)]
pub(super) struct Handles {
    next: u64,
    open: HashMap<u64, Handle>,
    /// File handles of each inode (readers and writers; not directories).
    by_ino: HashMap<Ino, BTreeSet<u64>>,
    /// Handles a close(2) was seen on (FLUSH): their release is likely on its way.
    flushed: std::collections::HashSet<u64>,
}

impl Handles {
    /// A handle number no open handle has (the `entries/` view takes numbers from here too).
    pub fn reserve(&mut self) -> u64 {
        self.next += 1;
        self.next
    }

    pub fn insert(&mut self, handle: Handle) -> u64 {
        let number = self.reserve();
        if let Handle::Reader { ino, .. } | Handle::Writer { ino, .. } = &handle {
            self.by_ino.entry(*ino).or_default().insert(number);
        }
        self.open.insert(number, handle);
        number
    }

    pub fn get(&self, number: u64) -> Option<&Handle> {
        self.open.get(&number)
    }

    pub fn contains(&self, number: u64) -> bool {
        self.open.contains_key(&number)
    }

    pub fn reader(&self, number: u64) -> Option<(Ino, Arc<ObjectReader>)> {
        match self.open.get(&number)? {
            Handle::Reader { ino, reader } => Some((*ino, reader.clone())),
            _ => None,
        }
    }

    pub fn writer(&self, number: u64) -> Option<SharedWriter> {
        match self.open.get(&number)? {
            Handle::Writer { writer, .. } => Some(writer.clone()),
            _ => None,
        }
    }

    pub fn directory(&self, number: u64) -> Option<SharedDirStream> {
        match self.open.get(&number)? {
            Handle::Directory(stream) => Some(stream.clone()),
            _ => None,
        }
    }

    /// A close(2) of a descriptor of this handle was seen.
    pub fn flushed(&mut self, number: u64) {
        if self.open.contains_key(&number) {
            self.flushed.insert(number);
        }
    }

    /// Whether `ino` has open handles and every one of them saw a close(2): the program closed
    /// the file, and the kernel's releases are on their way.
    pub fn closing(&self, ino: Ino) -> bool {
        self.by_ino
            .get(&ino)
            .is_some_and(|numbers| numbers.iter().all(|n| self.flushed.contains(n)))
    }

    /// The open write handles of `ino`, by number.
    pub fn writers_of(&self, ino: Ino) -> Vec<(u64, SharedWriter)> {
        self.by_ino
            .get(&ino)
            .into_iter()
            .flatten()
            .filter_map(|number| Some((*number, self.writer(*number)?)))
            .collect()
    }

    pub fn remove(&mut self, number: u64) -> Option<Handle> {
        let handle = self.open.remove(&number)?;
        self.flushed.remove(&number);
        if let Handle::Reader { ino, .. } | Handle::Writer { ino, .. } = &handle
            && let Some(numbers) = self.by_ino.get_mut(ino)
        {
            numbers.remove(&number);
            if numbers.is_empty() {
                self.by_ino.remove(ino);
            }
        }
        Some(handle)
    }

    /// Every write handle, taken out (unmount).
    pub fn drain_writers(&mut self) -> Vec<(Ino, SharedWriter)> {
        let numbers: Vec<u64> = self
            .open
            .iter()
            .filter(|(_, h)| matches!(h, Handle::Writer { .. }))
            .map(|(number, _)| *number)
            .collect();
        numbers
            .into_iter()
            .filter_map(|number| match self.remove(number)? {
                Handle::Writer { ino, writer } => Some((ino, writer)),
                _ => None,
            })
            .collect()
    }
}
