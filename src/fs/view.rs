//! The seam where a view plugs in: a read-only tree beside the bucket's namespace whose names
//! have no S3 key of their own (the segments layout's `entries/`, see `entries.rs`).
//!
//! A view owns its inode numbers and, at most, names in the mount's directories (its own
//! directory's name in the root). `fuse.rs` asks [`Fs::view_of`] or [`Fs::view_at`] once per
//! operation and hands the operation to the view when it is the view's; every change inside a
//! view (or to a name a view owns) is EROFS there. So the core (`dir.rs`, `file.rs`,
//! `lookup.rs`, `special.rs`) never meets a view inode. The one place the core asks the views
//! is a directory's listing: a view may add its directory to it ([`View::entry_in`]), and a
//! view's directory stream may map another directory's stream batch by batch
//! ([`View::map_batch`]).

use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;

use super::Fs;
use super::attr::Attr;
use super::error::{FsError, FsResult};
use super::namespace::Ino;
use super::readdir::{DirEntry, DirStream};

/// What a view's network-bound operations return: a boxed future, so views plug in as trait
/// objects.
pub(super) type ViewFuture<'a, T> = Pin<Box<dyn Future<Output = FsResult<T>> + Send + 'a>>;

/// A read-only tree beside the namespace (see the module's comment).
pub(super) trait View: Send + Sync {
    /// Whether `ino` is one of the view's inodes.
    fn owns(&self, ino: Ino) -> bool;
    /// Whether `parent/name` is a name the view owns in a directory that is not its own.
    fn names(&self, parent: Ino, name: &str) -> bool;
    /// `lookup` of `parent/name`, where `parent` is the view's or the name is.
    fn lookup<'a>(&'a self, fs: &'a Fs, parent: Ino, name: &'a str) -> ViewFuture<'a, Attr>;
    fn getattr<'a>(&'a self, fs: &'a Fs, ino: Ino) -> ViewFuture<'a, Attr>;
    /// Opens a file of the view; the handle number comes from the mount's handle table.
    fn open<'a>(&'a self, fs: &'a Fs, ino: Ino, flags: i32) -> ViewFuture<'a, u64>;
    fn read(&self, handle: u64, offset: u64, size: u32) -> FsResult<Bytes>;
    fn release(&self, handle: u64);
    /// A directory stream of the view's directory `ino`.
    fn opendir(&self, fs: &Fs, ino: Ino) -> FsResult<DirStream>;
    /// What a listing of the view's directory starts with (`.` and `..`).
    fn leading_entries(&self, fs: &Fs) -> FsResult<Vec<DirEntry>>;
    /// The view's files for one batch of the stream its directory maps.
    fn map_batch(&self, fs: &Fs, batch: &[DirEntry]) -> Vec<DirEntry>;
    /// The view's own entry in `dir`'s listing, if it shows one there.
    fn entry_in(&self, fs: &Fs, dir: Ino) -> Option<DirEntry>;
    fn getxattr(&self, ino: Ino, name: &str) -> FsResult<Vec<u8>>;
    fn listxattr(&self, ino: Ino) -> FsResult<Vec<u8>>;
}

impl Fs {
    /// The view `ino` belongs to, if any.
    pub(super) fn view_of(&self, ino: Ino) -> Option<&dyn View> {
        self.views
            .iter()
            .find(|view| view.owns(ino))
            .map(|view| view.as_ref())
    }

    /// The view a name at `parent/name` belongs to: the parent is the view's, or the name is.
    pub(super) fn view_at(&self, parent: Ino, name: &str) -> Option<&dyn View> {
        self.views
            .iter()
            .find(|view| view.owns(parent) || view.names(parent, name))
            .map(|view| view.as_ref())
    }

    /// EROFS when `parent/name` is a view's: its trees are read-only.
    pub(super) fn refuse_in_views(&self, parent: Ino, name: &str) -> FsResult<()> {
        match self.view_at(parent, name) {
            Some(_) => Err(FsError::ReadOnly),
            None => Ok(()),
        }
    }

    /// The views' own entries in `dir`'s listing.
    pub(super) fn view_entries_in(&self, dir: Ino) -> Vec<DirEntry> {
        self.views
            .iter()
            .filter_map(|view| view.entry_in(self, dir))
            .collect()
    }
}
