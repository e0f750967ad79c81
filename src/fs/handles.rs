//! The handle table: what each open handle number holds - a reader pinned to an object version,
//! a write handle's pending data, or a directory stream - and nothing else. Whether a file is
//! open, how, and where each of its handles is in its life is the file's open-file record in
//! the namespace (`namespace/open_file.rs`); what the file *is* (key, metadata, linked) is its
//! node's.

use std::collections::HashMap;
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
}

impl Handles {
    /// A handle number no open handle has: a file's open-file record takes it before its
    /// handle goes into the table (the `entries/` view takes numbers from here too).
    pub fn reserve(&mut self) -> u64 {
        self.next += 1;
        self.next
    }

    /// Puts `handle` under a number [`reserve`](Self::reserve) gave.
    pub fn put(&mut self, number: u64, handle: Handle) {
        self.open.insert(number, handle);
    }

    /// A directory handle: files reserve their number first (see `reserve`), so that the
    /// open-file record and this table agree on it.
    pub fn insert_directory(&mut self, stream: SharedDirStream) -> u64 {
        let number = self.reserve();
        self.put(number, Handle::Directory(stream));
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

    /// The inode a file handle is open on.
    pub fn ino_of(&self, number: u64) -> Option<Ino> {
        match self.open.get(&number)? {
            Handle::Reader { ino, .. } | Handle::Writer { ino, .. } => Some(*ino),
            Handle::Directory(_) => None,
        }
    }

    pub fn remove(&mut self, number: u64) -> Option<Handle> {
        self.open.remove(&number)
    }

    /// Every write handle, taken out (unmount): (number, inode, handle).
    pub fn drain_writers(&mut self) -> Vec<(u64, Ino, SharedWriter)> {
        let numbers: Vec<u64> = self
            .open
            .iter()
            .filter(|(_, h)| matches!(h, Handle::Writer { .. }))
            .map(|(number, _)| *number)
            .collect();
        numbers
            .into_iter()
            .filter_map(|number| match self.remove(number)? {
                Handle::Writer { ino, writer } => Some((number, ino, writer)),
                _ => None,
            })
            .collect()
    }
}
