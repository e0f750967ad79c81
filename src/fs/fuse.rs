//! The thin adapter between the kernel (fuser) and the async core [`Fs`]. Each request is
//! spawned onto the tokio runtime and answered from its task, so no request waits behind
//! another's S3 latency and the FUSE thread never blocks on the network.
//!
//! It is also where a view plugs in (`view.rs`): each operation asks once whether its inode (or
//! the name it changes) is a view's, and hands it to that view; changes there are EROFS.

use std::cell::Cell;
use std::ffi::OsStr;
use std::io;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, InitFlags,
    KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite,
    ReplyXattr, Request, TimeOrNow, WriteFlags,
};

use super::Caller;
use tracing::Instrument;

use super::Fs;
use super::attr::{Attr, FileType as NodeType, SetAttr};
use super::error::FsError;
use super::file::Opened;
use super::namespace::Kind;

/// The largest read the kernel sends ahead of a sequential reader, and the largest write.
pub const MAX_READAHEAD: u32 = 1 << 20;

pub struct FuseAdapter {
    fs: Arc<Fs>,
    runtime: tokio::runtime::Handle,
    ttl: Duration,
}

impl FuseAdapter {
    pub fn new(fs: Arc<Fs>, runtime: tokio::runtime::Handle) -> Self {
        let ttl = fs.config().kernel_ttl();
        FuseAdapter { fs, runtime, ttl }
    }

    /// Runs one request's work on tokio, in a span naming the operation, inode and process,
    /// and counts how it ended (the errno its reply carried, 0 for success).
    fn spawn<F>(&self, op: &'static str, ino: u64, req: &Request, work: impl FnOnce(Arc<Fs>) -> F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let span = tracing::debug_span!("fuse", op, ino, pid = req.pid());
        let work = work(self.fs.clone());
        let request = REQUEST.scope(Outcome::default(), async move {
            work.await;
            let errno = REQUEST.with(|outcome| outcome.errno.get());
            crate::metrics::fuse_op(op, errno);
        });
        self.runtime.spawn(request.instrument(span));
    }
}

/// How the request a task serves ended, for its count.
#[derive(Default)]
struct Outcome {
    errno: Cell<i32>,
}

tokio::task_local! {
    static REQUEST: Outcome;
}

/// The errno a failed request replies with; logged in the request's span (a warning for EIO,
/// which means S3 failed us) and recorded for its count.
fn errno(error: &FsError) -> Errno {
    let errno = error.errno();
    if errno == libc::EIO {
        tracing::warn!(%error, errno, "request failed");
    } else {
        tracing::debug!(%error, errno, "request failed");
    }
    let _ = REQUEST.try_with(|outcome| outcome.errno.set(errno));
    Errno::from_i32(errno)
}

/// Counts a request answered without a task (from memory).
fn count<T>(op: &'static str, result: &Result<T, FsError>) {
    crate::metrics::fuse_op(op, result.as_ref().map_or_else(FsError::errno, |_| 0));
}

/// S3 keys are UTF-8; a name that is not cannot name an object.
/// Runs `change` unless a view refused it (`refused`, from `refuse_in_views`): the future is
/// only built before the check, nothing of it runs.
async fn unless_refused<T>(
    refused: Result<(), FsError>,
    change: impl std::future::Future<Output = Result<T, FsError>>,
) -> Result<T, FsError> {
    refused?;
    change.await
}

fn utf8(name: &OsStr) -> Result<String, Errno> {
    name.to_str().map(str::to_string).ok_or(Errno::EINVAL)
}

fn file_attr(attr: &Attr) -> FileAttr {
    let kind = file_type(attr.file_type);
    let nlink = if attr.kind == Kind::Directory { 2 } else { 1 };
    FileAttr {
        ino: INodeNo(attr.ino),
        size: attr.size,
        blocks: attr.size.div_ceil(512),
        atime: attr.mtime,
        mtime: attr.mtime,
        ctime: attr.ctime,
        crtime: attr.mtime,
        kind,
        perm: attr.perm,
        nlink,
        uid: attr.uid,
        gid: attr.gid,
        rdev: attr.rdev,
        flags: 0,
        blksize: 4096,
    }
}

fn file_type(node_type: NodeType) -> FileType {
    match node_type {
        NodeType::Regular => FileType::RegularFile,
        NodeType::Directory => FileType::Directory,
        NodeType::Symlink => FileType::Symlink,
        NodeType::Fifo => FileType::NamedPipe,
        NodeType::Socket => FileType::Socket,
        NodeType::CharDevice => FileType::CharDevice,
        NodeType::BlockDevice => FileType::BlockDevice,
    }
}

fn caller(req: &Request) -> Caller {
    Caller {
        pid: req.pid(),
        uid: req.uid(),
        gid: req.gid(),
    }
}

fn open_flags(keep_cache: bool) -> FopenFlags {
    if keep_cache {
        FopenFlags::FOPEN_KEEP_CACHE
    } else {
        FopenFlags::empty()
    }
}

fn time(t: TimeOrNow) -> SystemTime {
    match t {
        TimeOrNow::SpecificTime(t) => t,
        TimeOrNow::Now => SystemTime::now(),
    }
}

impl Filesystem for FuseAdapter {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> io::Result<()> {
        // O_TRUNC arrives with open (no separate truncate-then-open), lookups in one directory
        // run in parallel, and readdir returns attributes with the names (readdirplus) so
        // `ls -l` needs no lookup per entry. Each is asked for on its own: a kernel without one
        // still gets the others. Readdirplus is "auto": the kernel asks for it while the names
        // it returns get looked at (`ls -l`), and a plain readdir otherwise (`find`), which
        // takes no reference per name, so a walk of a million names keeps no million nodes.
        for wanted in [
            InitFlags::FUSE_ATOMIC_O_TRUNC,
            InitFlags::FUSE_PARALLEL_DIROPS,
            InitFlags::FUSE_DO_READDIRPLUS,
            InitFlags::FUSE_READDIRPLUS_AUTO,
            InitFlags::FUSE_CACHE_SYMLINKS,
        ] {
            let _ = config.add_capabilities(wanted);
        }
        let _ = config.set_max_write(MAX_READAHEAD);
        let _ = config.set_max_readahead(MAX_READAHEAD);
        Ok(())
    }

    fn destroy(&mut self) {
        let fs = self.fs.clone();
        // Uploads still open at unmount finish before the process exits.
        self.runtime.block_on(async move { fs.flush_all().await });
    }

    fn lookup(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let name = match utf8(name) {
            Ok(name) => name,
            Err(e) => return reply.error(e),
        };
        let ttl = self.ttl;
        self.spawn("lookup", parent.0, req, move |fs| async move {
            let found = match fs.view_at(parent.0, &name) {
                Some(view) => view.lookup(&fs, parent.0, &name).await,
                None => fs.lookup(parent.0, &name).await,
            };
            match found {
                Ok(attr) => reply.entry(&ttl, &file_attr(&attr), Generation(0)),
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        // A view's inodes hold no references.
        if self.fs.view_of(ino.0).is_none() {
            self.fs.forget(ino.0, nlookup);
        }
    }

    fn getattr(&self, req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let ttl = self.ttl;
        self.spawn("getattr", ino.0, req, move |fs| async move {
            let attr = match fs.view_of(ino.0) {
                Some(view) => view.getattr(&fs, ino.0).await,
                None => fs.getattr(ino.0).await,
            };
            match attr {
                Ok(attr) => reply.attr(&ttl, &file_attr(&attr)),
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        // atime is not kept (S3 has none); it always reads as the mtime.
        let change = SetAttr {
            size,
            mode,
            uid,
            gid,
            mtime: mtime.map(time),
        };
        let ttl = self.ttl;
        self.spawn("setattr", ino.0, req, move |fs| async move {
            let set = match fs.view_of(ino.0) {
                Some(_) => Err(FsError::ReadOnly),
                None => fs.setattr(ino.0, fh.map(|h| h.0), change).await,
            };
            match set {
                Ok(attr) => reply.attr(&ttl, &file_attr(&attr)),
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let name = match utf8(name) {
            Ok(name) => name,
            Err(e) => return reply.error(e),
        };
        let (ttl, caller) = (self.ttl, caller(req));
        self.spawn("mkdir", parent.0, req, move |fs| async move {
            let made = unless_refused(
                fs.refuse_in_views(parent.0, &name),
                fs.mkdir(parent.0, &name, mode & !umask, caller),
            )
            .await;
            match made {
                Ok(attr) => reply.entry(&ttl, &file_attr(&attr), Generation(0)),
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    fn unlink(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let name = match utf8(name) {
            Ok(name) => name,
            Err(e) => return reply.error(e),
        };
        self.spawn("unlink", parent.0, req, move |fs| async move {
            let unlinked = unless_refused(
                fs.refuse_in_views(parent.0, &name),
                fs.unlink(parent.0, &name),
            )
            .await;
            match unlinked {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    fn rmdir(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let name = match utf8(name) {
            Ok(name) => name,
            Err(e) => return reply.error(e),
        };
        self.spawn("rmdir", parent.0, req, move |fs| async move {
            let removed = unless_refused(
                fs.refuse_in_views(parent.0, &name),
                fs.rmdir(parent.0, &name),
            )
            .await;
            match removed {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    fn rename(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let (name, newname) = match (utf8(name), utf8(newname)) {
            (Ok(a), Ok(b)) => (a, b),
            _ => return reply.error(Errno::EINVAL),
        };
        self.spawn("rename", parent.0, req, move |fs| async move {
            let refused = fs
                .refuse_in_views(parent.0, &name)
                .and_then(|()| fs.refuse_in_views(newparent.0, &newname));
            let renamed = unless_refused(
                refused,
                fs.rename(parent.0, &name, newparent.0, &newname, flags.bits()),
            )
            .await;
            match renamed {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let caller = caller(req);
        self.spawn("open", ino.0, req, move |fs| async move {
            let opened = match fs.view_of(ino.0) {
                Some(view) => view.open(&fs, ino.0, flags.0).await.map(|handle| Opened {
                    handle,
                    keep_cache: false,
                }),
                None => fs.open(ino.0, flags.0, caller).await,
            };
            match opened {
                Ok(opened) => {
                    reply.opened(FileHandle(opened.handle), open_flags(opened.keep_cache))
                }
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let name = match utf8(name) {
            Ok(name) => name,
            Err(e) => return reply.error(e),
        };
        let caller = caller(req);
        self.spawn("create", parent.0, req, move |fs| async move {
            let refused = fs.refuse_in_views(parent.0, &name);
            let created = unless_refused(
                refused,
                fs.create(parent.0, &name, mode & !umask, flags, caller),
            )
            .await;
            match created {
                // A new file exists only if its upload succeeds at close: a zero TTL makes the
                // kernel ask again (a local answer, no S3 request) instead of caching a name
                // that may vanish.
                Ok((attr, opened)) => reply.created(
                    &Duration::ZERO,
                    &file_attr(&attr),
                    Generation(0),
                    FileHandle(opened.handle),
                    open_flags(opened.keep_cache),
                ),
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    fn read(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        self.spawn("read", ino.0, req, move |fs| async move {
            let data = match fs.view_of(ino.0) {
                Some(view) => view.read(fh.0, offset, size),
                None => fs.read(fh.0, offset, size).await,
            };
            match data {
                Ok(data) => reply.data(&data),
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    fn write(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let data = data.to_vec();
        self.spawn("write", ino.0, req, move |fs| async move {
            let written = match fs.view_of(ino.0) {
                // A view's files open read-only: there is no write handle.
                Some(_) => Err(FsError::BadHandle),
                None => fs.write(fh.0, offset, &data).await,
            };
            match written {
                Ok(written) => reply.written(written),
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    fn flush(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        let caller = caller(req);
        self.spawn("flush", ino.0, req, move |fs| async move {
            let flushed = match fs.view_of(ino.0) {
                Some(_) => Ok(()),
                None => fs.flush(fh.0, caller).await,
            };
            match flushed {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    fn release(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.spawn("release", ino.0, req, move |fs| async move {
            let released = match fs.view_of(ino.0) {
                Some(view) => {
                    view.release(fh.0);
                    Ok(())
                }
                None => fs.release(fh.0).await,
            };
            match released {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    fn fsync(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.spawn("fsync", ino.0, req, move |fs| async move {
            let synced = match fs.view_of(ino.0) {
                Some(_) => Ok(()),
                None => fs.fsync(fh.0).await,
            };
            match synced {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    fn opendir(&self, req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        self.spawn("opendir", ino.0, req, move |fs| async move {
            let opened = match fs.view_of(ino.0) {
                Some(view) => match view.opendir(&fs, ino.0) {
                    Ok(stream) => fs.open_stream(stream).await,
                    Err(e) => Err(e),
                },
                None => fs.opendir(ino.0).await,
            };
            match opened {
                Ok(handle) => reply.opened(FileHandle(handle), FopenFlags::empty()),
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    fn readdir(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        // A batch may need the next LIST page: served on tokio like every request that can
        // wait for S3.
        self.spawn("readdir", ino.0, req, move |fs| async move {
            match fs.readdir(fh.0, offset).await {
                Ok((entries, from)) => {
                    for entry in &entries[from.min(entries.len())..] {
                        let kind = file_type(entry.attr.file_type);
                        if reply.add(INodeNo(entry.ino), entry.next_offset, kind, &entry.name) {
                            break;
                        }
                    }
                    reply.ok();
                }
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    fn readdirplus(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let ttl = self.ttl;
        self.spawn("readdirplus", ino.0, req, move |fs| async move {
            match fs.readdir(fh.0, offset).await {
                Ok((entries, from)) => {
                    for entry in &entries[from.min(entries.len())..] {
                        let attr = file_attr(&entry.attr);
                        let ttl = if entry.attr_known {
                            &ttl
                        } else {
                            &Duration::ZERO
                        };
                        if reply.add(
                            INodeNo(entry.ino),
                            entry.next_offset,
                            &entry.name,
                            ttl,
                            &attr,
                            Generation(0),
                        ) {
                            break;
                        }
                        // The kernel takes a lookup reference on every entry but `.` and `..`.
                        if entry.name != "." && entry.name != ".." {
                            fs.remember(entry.ino);
                        }
                    }
                    reply.ok();
                }
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.fs.releasedir(fh.0);
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let s = self.fs.statfs();
        reply.statfs(
            s.blocks,
            s.free,
            s.free,
            s.files,
            s.free_files,
            s.block_size,
            s.name_max,
            s.block_size,
        );
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let result =
            name.to_str()
                .ok_or(FsError::NoAttribute)
                .and_then(|n| match self.fs.view_of(ino.0) {
                    Some(view) => view.getxattr(ino.0, n),
                    None => self.fs.getxattr(ino.0, n),
                });
        count("getxattr", &result);
        reply_xattr(result, size, reply);
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let result = match self.fs.view_of(ino.0) {
            Some(view) => view.listxattr(ino.0),
            None => self.fs.listxattr(ino.0),
        };
        count("listxattr", &result);
        reply_xattr(result, size, reply);
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &std::path::Path,
        reply: ReplyEntry,
    ) {
        let (name, target) = match (utf8(link_name), utf8(target.as_os_str())) {
            (Ok(name), Ok(target)) => (name, target),
            _ => return reply.error(Errno::EINVAL),
        };
        let (ttl, caller) = (self.ttl, caller(req));
        self.spawn("symlink", parent.0, req, move |fs| async move {
            let made = unless_refused(
                fs.refuse_in_views(parent.0, &name),
                fs.symlink(parent.0, &name, &target, caller),
            )
            .await;
            match made {
                Ok(attr) => reply.entry(&ttl, &file_attr(&attr), Generation(0)),
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    fn readlink(&self, req: &Request, ino: INodeNo, reply: ReplyData) {
        self.spawn("readlink", ino.0, req, move |fs| async move {
            let target = match fs.view_of(ino.0) {
                Some(_) => Err(FsError::InvalidArgument("not a symlink".into())),
                None => fs.readlink(ino.0).await,
            };
            match target {
                Ok(target) => reply.data(&target),
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        let name = match utf8(name) {
            Ok(name) => name,
            Err(e) => return reply.error(e),
        };
        let (ttl, caller) = (self.ttl, caller(req));
        self.spawn("mknod", parent.0, req, move |fs| async move {
            let made = unless_refused(
                fs.refuse_in_views(parent.0, &name),
                fs.mknod(parent.0, &name, mode & !umask, rdev, caller),
            )
            .await;
            match made {
                Ok(attr) => reply.entry(&ttl, &file_attr(&attr), Generation(0)),
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    fn link(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _newparent: INodeNo,
        _newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let result = self.fs.link();
        count("link", &result);
        match result {
            Ok(attr) => reply.entry(&self.ttl, &file_attr(&attr), Generation(0)),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: fuser::AccessFlags, reply: ReplyEmpty) {
        reply.ok();
    }
}

/// xattr replies: size 0 asks for the length, a small buffer is ERANGE.
fn reply_xattr(result: Result<Vec<u8>, FsError>, size: u32, reply: ReplyXattr) {
    match result {
        Ok(value) if size == 0 => reply.size(value.len() as u32),
        Ok(value) if value.len() <= size as usize => reply.data(&value),
        Ok(_) => reply.error(Errno::ERANGE),
        Err(e) => reply.error(errno(&e)),
    }
}
