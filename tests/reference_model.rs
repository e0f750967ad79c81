//! Reference-model test of the file system core: random operation sequences run against
//! [`Fs`] (driven directly, no FUSE, on the in-memory store) and against a small in-memory
//! model of POSIX, and every result and errno must agree.
//!
//! Each case (one seed) makes a fresh [`MemoryStore`] and runs 30-60 operations over the root,
//! directories (mostly named `a` and `b`, made, removed and renamed like anything else) and
//! files (mostly `f`, `g`, `h`), with up to four handles open at once: create, open (read-only,
//! write-only, read-write, `O_APPEND`, `O_TRUNC`, `O_CREAT`, `O_CREAT|O_EXCL`), write (small
//! random offsets and lengths, past EOF too, which must read back as zeros), read, truncate by
//! path and through a handle, rename (files and directories; over a file, over an empty and a
//! non-empty directory, file over directory, directory over file, into its own subtree),
//! unlink, rmdir, mkdir, symlink + readlink, chmod, utimens, fsync, close, readdir (the sorted
//! names and, with `posix_metadata`, each entry's attributes), stat (type, size, permission
//! bits, and the exact mtime a utimens set), "expire" (the `Fs`'s clock moved past the
//! metadata TTL) and "remount": every open handle closed, `flush_all`, the `Fs` dropped and a
//! new one built on the same store, after which the whole tree is read back (attributes,
//! contents, symlink targets, every directory's names). Every case ends with a remount. Each
//! case picks a metadata TTL (indefinite; zero, so every lookup revalidates against the store;
//! or one hour, run out by the expire steps) and `posix_metadata` on or off. Nothing depends on
//! timing, so a seed replays exactly.
//!
//! A close is also split now and then (CloseThen): the handle's FLUSH (by the opener, or by a
//! child that inherited the descriptor, so that the release is what uploads), then the
//! release runs concurrently with another operation on the same file - an open from a second
//! handle (any access, O_TRUNC, O_APPEND), a rename, an unlink, a chmod, a truncate or a stat -
//! while the store holds the release's upload back for a while. The other operation must see
//! the file as the close leaves it: this drives the open-file record through its states
//! (every handle flushed, a release in flight with its pending upload) from two handles. A run
//! of at least 100 cases must contain such steps (one for every four cases).
//!
//! The `Fs` is driven as the kernel drives it: paths are resolved by `lookup` from
//! [`ROOT_INO`] (a component that is not a directory is `ENOTDIR`, as in the kernel's path
//! walk; symlinks are never followed, so the generator neither opens, truncates nor chmods
//! one), lookups are leaked (no `forget`), an `O_APPEND` write goes to the size `getattr` gives
//! for the handle's inode, a close is `flush` then `release` with the opener's pid, and reads,
//! writes and ftruncate go only through handles whose access mode allows them (the kernel
//! answers the others with `EBADF`). `create`, `mkdir`, `symlink`, `unlink`, `rmdir` and
//! `rename` are called without a lookup of the last component first, so the `Fs`'s own
//! `EEXIST`, `ENOENT`, `EISDIR`, `ENOTDIR`, `ENOTEMPTY` and `EINVAL` are what is compared.
//!
//! Open files follow POSIX, with the behaviour docs/SEMANTICS.md ("Open files") defines:
//! - a file renamed while open, or inside a directory renamed while it is open: writes through
//!   the handle keep succeeding, and what was written appears under the new name at close (and
//!   after a remount); the old name stays gone;
//! - a file unlinked while open for writing: writes keep succeeding and reads through the handle
//!   see them; nothing appears under the removed name, also not after close or remount;
//! - a file unlinked while open for reading: the reader reads the whole old content;
//! - a file replaced by a rename while open for reading: its reads fail with `ESTALE` (ours,
//!   not POSIX's);
//! - no operation on an open handle fails with `ENOENT`.
//!
//! The generator avoids what docs/SEMANTICS.md names as differences from a local file system:
//! 1. a second handle on a file that has an open write handle (a file created and still open
//!    counts as one, whatever the access mode), and a write open (or `O_TRUNC`, or a truncate
//!    by path) of a file that has any open handle: S3 has no shared writable file, each write
//!    handle uploads its own copy at close and read handles are pinned to the version they
//!    opened;
//! 2. hard links (refused with `EPERM`);
//! 3. atime and ctime are not compared (atime is not kept, and times are kept to the second, so
//!    utimens sets whole seconds); neither is the mtime after a data change or a truncate to
//!    the same size (which may leave it), nor a directory's mtime after its entries change;
//! 4. owners (no chown) and link counts are not compared;
//! 5. a file's content is compared through other names only once it is closed (no second
//!    handle may read it while it is open for writing, and the tree check after a remount runs
//!    with every handle closed); its size through a path while it is open for writing is the
//!    handle's local size, and is compared;
//! 6. without `posix_metadata`, a mount shows names it has only listed with the default mode and
//!    type and the upload time, and any lookup lists the whole directory: after a remount of
//!    such a case the model forgets the mode, type and mtime of what existed before (compared
//!    again once set again), and readdir entries' attributes are compared only with
//!    `posix_metadata` on;
//! 7. once a new file takes the name of a file unlinked or renamed away while still open (a
//!    symlink, a create, a rename onto the name), the new object replaced the one the old
//!    file's read-only handles read from: their reads may get `ESTALE`, so the model only
//!    closes them (write handles keep their bytes and go on).
//!
//! Run: `cargo test --test reference_model`. Environment:
//! - `MODEL_SEED=<seed>` replays one case (a failure prints this line with its seed);
//! - `MODEL_CASES=<n>` runs seeds `0..n` (default 1500, about 70,000 operations);
//! - `MODEL_KEEP_GOING=1` runs every case and reports all failing seeds at the end;
//! - `MODEL_SHRINK=0` skips shrinking a failing case (by default its operations are cut down,
//!   for up to 15 s, to a short sequence failing the same way, which is printed too);
//! - `MODEL_NO_OPEN_RENAME=1` generates no rename, unlink or rmdir that touches an open file
//!   (or a directory holding one), to check the rest apart from the open-file rules.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use scribefs::fs::{
    Attr, Caller, FileType, Fs, FsConfig, FsResult, Ino, Kind, Layout, LayoutKind, ROOT_INO,
    SetAttr,
};
use scribefs::store::faulty::{FaultyStore, Op as StoreOp};
use scribefs::store::memory::MemoryStore;

const DEFAULT_CASES: u64 = 1500;
/// The metadata TTL of cases that let it run out now and then (an Expire step).
const TTL: Duration = Duration::from_secs(3600);
const SLOTS: usize = 4;
/// The store calls that put an object (a release's upload) and are held back while a CloseThen
/// step's other operation runs.
const HELD_UPLOADS: [StoreOp; 3] = [StoreOp::Put, StoreOp::CompleteMultipart, StoreOp::Copy];
/// How many times the step yields before the held uploads go through: plenty for the other
/// operation to reach whatever it waits for.
const HOLD_ROUNDS: usize = 50;
/// Permits that let every later call through until the next CloseThen holds them again.
const HELD_FOR_GOOD: usize = 1 << 24;
const DIR_NAMES: [&str; 2] = ["a", "b"];
const FILE_NAMES: [&str; 3] = ["f", "g", "h"];
const PERMS: [u16; 7] = [0o600, 0o640, 0o644, 0o700, 0o750, 0o755, 0o444];
const TARGETS: [&str; 4] = ["f", "../g", "a/b/c", "/tmp/elsewhere"];

// ----- the model -----

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Type {
    File,
    Dir,
    Symlink,
}

#[derive(Clone, Debug)]
struct Node {
    ty: Type,
    /// A file's content or a symlink's target.
    data: Vec<u8>,
    /// `None`: not known to the model (documented exception 6), not compared.
    perm: Option<u16>,
    /// The mtime a utimens set, while nothing changed the data since; `None`: not compared.
    mtime: Option<u64>,
    /// Whether the type is known (a symlink known only from a listing shows as a file).
    ty_known: bool,
    children: BTreeMap<String, usize>,
    /// Replaced by a rename while open for reading: its reads fail with ESTALE.
    stale: bool,
    /// Unlinked while open, then its name was taken by a new file: the new object replaced the
    /// one its handles read and seed from (exception 7), so they are only closed.
    superseded: bool,
}

impl Node {
    fn new(ty: Type, perm: u16, data: Vec<u8>) -> Node {
        Node {
            ty,
            data,
            perm: Some(perm),
            mtime: None,
            ty_known: true,
            children: BTreeMap::new(),
            stale: false,
            superseded: false,
        }
    }
}

/// What stat must show; `None` fields are not compared.
#[derive(Debug, PartialEq, Eq)]
struct Stat {
    ty: Option<Type>,
    size: Option<u64>,
    perm: Option<u16>,
    mtime: Option<Duration>,
}

struct Model {
    /// Node 0 is the root; unlinked nodes stay (unreachable) while handles use them.
    nodes: Vec<Node>,
    /// Files unlinked while open: (directory, name, node).
    unlinked_open: Vec<(usize, String, usize)>,
}

impl Model {
    fn new() -> Model {
        Model {
            nodes: vec![Node::new(Type::Dir, 0o755, Vec::new())],
            unlinked_open: Vec::new(),
        }
    }

    /// A new file takes `dir/name`: a file unlinked there while open is superseded.
    fn name_taken(&mut self, dir: usize, name: &str) {
        let mut superseded = Vec::new();
        self.unlinked_open.retain(|(d, n, node)| {
            let hit = *d == dir && n == name;
            if hit {
                superseded.push(*node);
            }
            !hit
        });
        for node in superseded {
            self.nodes[node].superseded = true;
        }
    }

    fn resolve(&self, path: &str) -> Result<usize, i32> {
        let mut cur = 0;
        for comp in components(path) {
            let node = &self.nodes[cur];
            if node.ty != Type::Dir {
                return Err(libc::ENOTDIR);
            }
            cur = *node.children.get(comp).ok_or(libc::ENOENT)?;
        }
        Ok(cur)
    }

    /// The directory holding `path`'s last component, and that component.
    fn parent(&self, path: &str) -> Result<(usize, String), i32> {
        let (dir, name) = split_last(path);
        let dir = self.resolve(dir)?;
        if self.nodes[dir].ty != Type::Dir {
            return Err(libc::ENOTDIR);
        }
        Ok((dir, name.to_string()))
    }

    fn child(&self, dir: usize, name: &str) -> Option<usize> {
        self.nodes[dir].children.get(name).copied()
    }

    fn add(&mut self, dir: usize, name: &str, node: Node) -> usize {
        self.nodes.push(node);
        let id = self.nodes.len() - 1;
        self.nodes[dir].children.insert(name.to_string(), id);
        self.name_taken(dir, name);
        id
    }

    /// Every linked node but the root, with its path, parents first.
    fn paths(&self) -> Vec<(String, usize)> {
        let mut out = Vec::new();
        let mut stack = vec![(String::new(), 0usize)];
        while let Some((path, id)) = stack.pop() {
            for (name, &child) in self.nodes[id].children.iter().rev() {
                let child_path = join(&path, name);
                out.push((child_path.clone(), child));
                stack.push((child_path, child));
            }
        }
        out
    }

    fn path_of(&self, id: usize) -> Option<String> {
        self.paths()
            .into_iter()
            .find(|(_, n)| *n == id)
            .map(|(p, _)| p)
    }

    /// `id` and every node below it.
    fn subtree(&self, id: usize) -> BTreeSet<usize> {
        let mut out = BTreeSet::from([id]);
        let mut stack = vec![id];
        while let Some(n) = stack.pop() {
            for &c in self.nodes[n].children.values() {
                out.insert(c);
                stack.push(c);
            }
        }
        out
    }

    fn stat(&self, id: usize) -> Stat {
        let node = &self.nodes[id];
        Stat {
            ty: node.ty_known.then_some(node.ty),
            size: (node.ty != Type::Dir).then_some(node.data.len() as u64),
            perm: if node.ty == Type::Symlink {
                node.ty_known.then_some(0o777)
            } else {
                node.perm
            },
            mtime: node.mtime.map(Duration::from_secs),
        }
    }
}

fn components(path: &str) -> impl Iterator<Item = &str> {
    path.split('/').filter(|c| !c.is_empty())
}

fn split_last(path: &str) -> (&str, &str) {
    path.rsplit_once('/').unwrap_or(("", path))
}

fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

fn write_at(data: &mut Vec<u8>, offset: u64, bytes: &[u8]) {
    let offset = offset as usize;
    if data.len() < offset + bytes.len() {
        data.resize(offset + bytes.len(), 0);
    }
    data[offset..offset + bytes.len()].copy_from_slice(bytes);
}

fn read_range(data: &[u8], offset: u64, len: u32) -> Vec<u8> {
    let start = (offset as usize).min(data.len());
    let end = (offset as usize + len as usize).min(data.len());
    data[start..end].to_vec()
}

// ----- operations -----

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Access {
    R,
    W,
    RW,
}

impl Access {
    fn flags(self) -> i32 {
        match self {
            Access::R => libc::O_RDONLY,
            Access::W => libc::O_WRONLY,
            Access::RW => libc::O_RDWR,
        }
    }
}

#[derive(Clone, Debug)]
enum Op {
    Mkdir {
        path: String,
        perm: u16,
    },
    Rmdir {
        path: String,
    },
    Unlink {
        path: String,
    },
    Rename {
        from: String,
        to: String,
    },
    Open {
        slot: usize,
        path: String,
        access: Access,
        creat: bool,
        excl: bool,
        trunc: bool,
        append: bool,
        perm: u16,
    },
    /// `offset` is ignored on an O_APPEND handle (the file's size is used).
    Write {
        slot: usize,
        offset: u64,
        len: usize,
        byte: u8,
    },
    Read {
        slot: usize,
        offset: u64,
        len: u32,
    },
    Ftruncate {
        slot: usize,
        size: u64,
    },
    Truncate {
        path: String,
        size: u64,
    },
    Chmod {
        path: String,
        perm: u16,
    },
    Utimens {
        path: String,
        secs: u64,
    },
    Fsync {
        slot: usize,
    },
    Close {
        slot: usize,
    },
    /// close(2) of the handle (by the opener, or by a child that inherited the descriptor, so
    /// that the release is what uploads), then `then` (an operation on the same file) runs
    /// while the kernel's release is in flight, its upload held back by the store for a while:
    /// `then` must see the file closed, as its release leaves it.
    CloseThen {
        slot: usize,
        by_child: bool,
        then: Box<Op>,
    },
    Stat {
        path: String,
    },
    Readdir {
        path: String,
    },
    Symlink {
        path: String,
        target: String,
    },
    Readlink {
        path: String,
    },
    /// Moves the `Fs`'s clock past the metadata TTL.
    Expire,
    Remount,
}

/// An open handle, in the model and in the `Fs` at once.
#[derive(Clone, Debug)]
struct Handle {
    node: usize,
    read: bool,
    write: bool,
    /// Made by create: the `Fs` holds it as a write handle whatever the access mode.
    created: bool,
    append: bool,
    fh: u64,
    ino: Ino,
}

// ----- comparing -----

fn errname(errno: i32) -> String {
    let name = match errno {
        libc::ENOENT => "ENOENT",
        libc::EEXIST => "EEXIST",
        libc::ENOTDIR => "ENOTDIR",
        libc::EISDIR => "EISDIR",
        libc::ENOTEMPTY => "ENOTEMPTY",
        libc::EINVAL => "EINVAL",
        libc::EPERM => "EPERM",
        libc::ESTALE => "ESTALE",
        libc::EIO => "EIO",
        libc::EBADF => "EBADF",
        libc::EXDEV => "EXDEV",
        _ => return format!("errno {errno}"),
    };
    format!("{name} ({errno})")
}

fn show<T: std::fmt::Debug>(result: &Result<T, i32>) -> String {
    match result {
        Ok(value) => format!("Ok({value:?})"),
        Err(errno) => errname(*errno),
    }
}

fn en<T>(result: FsResult<T>) -> Result<T, i32> {
    result.map_err(|e| e.errno())
}

/// Both failed with the same errno, or a mismatch. (Both succeeding is handled by the caller.)
fn same_failure<T, U>(
    what: &str,
    expected: Result<T, i32>,
    got: Result<U, i32>,
) -> Result<(), String> {
    let outcome = |r: Result<(), i32>| r.map_or_else(errname, |()| "success".to_string());
    match (expected.map(|_| ()), got.map(|_| ())) {
        (Err(a), Err(b)) if a == b => Ok(()),
        (e, g) => Err(format!(
            "{what}: expected {}, got {}",
            outcome(e),
            outcome(g)
        )),
    }
}

/// The attributes `attr` shows, masked to the fields `expected` compares.
fn observed(expected: &Stat, attr: &Attr) -> Stat {
    let ty = match attr.file_type {
        FileType::Directory => Type::Dir,
        FileType::Symlink => Type::Symlink,
        _ => Type::File,
    };
    Stat {
        ty: expected.ty.map(|_| ty),
        size: expected.size.map(|_| attr.size),
        perm: expected.perm.map(|_| attr.perm),
        mtime: expected
            .mtime
            .map(|_| attr.mtime.duration_since(UNIX_EPOCH).unwrap_or_default()),
    }
}

fn check_attr(what: &str, expected: &Stat, attr: &Attr) -> Result<(), String> {
    let got = observed(expected, attr);
    if got == *expected {
        Ok(())
    } else {
        Err(format!(
            "{what}: attributes differ\n  expected {expected:?}\n  got      {got:?}"
        ))
    }
}

// ----- driving the Fs as the kernel does -----

async fn fs_resolve(fs: &Fs, path: &str) -> Result<Attr, i32> {
    let mut attr = en(fs.getattr(ROOT_INO).await)?;
    for comp in components(path) {
        if attr.kind != Kind::Directory {
            return Err(libc::ENOTDIR);
        }
        attr = en(fs.lookup(attr.ino, comp).await)?;
    }
    Ok(attr)
}

async fn fs_parent(fs: &Fs, path: &str) -> Result<(Ino, String), i32> {
    let (dir, name) = split_last(path);
    let attr = fs_resolve(fs, dir).await?;
    if attr.kind != Kind::Directory {
        return Err(libc::ENOTDIR);
    }
    Ok((attr.ino, name.to_string()))
}

/// open(2): lookup, then open, or create when the name is missing and O_CREAT is set; with
/// O_CREAT|O_EXCL on an existing name the `Fs`'s create must refuse.
async fn fs_open(fs: &Fs, caller: Caller, op: &Op) -> Result<(u64, Ino), i32> {
    let Op::Open {
        path,
        access,
        creat,
        excl,
        trunc,
        append,
        perm,
        ..
    } = op
    else {
        unreachable!()
    };
    let mut flags = access.flags();
    for (set, flag) in [
        (*trunc, libc::O_TRUNC),
        (*append, libc::O_APPEND),
        (*creat, libc::O_CREAT),
        (*excl, libc::O_EXCL),
    ] {
        if set {
            flags |= flag;
        }
    }
    let (parent, name) = fs_parent(fs, path).await?;
    let create = async || {
        en(fs
            .create(parent, &name, u32::from(*perm), flags, caller)
            .await)
        .map(|(a, o)| (o.handle, a.ino))
    };
    match en(fs.lookup(parent, &name).await) {
        Ok(_) if *creat && *excl => create().await,
        Ok(attr) => en(fs.open(attr.ino, flags, caller).await).map(|o| (o.handle, attr.ino)),
        Err(libc::ENOENT) if *creat => create().await,
        Err(e) => Err(e),
    }
}

async fn fs_names(fs: &Fs, dir: Ino) -> Result<Vec<(String, Attr)>, i32> {
    let handle = en(fs.opendir(dir).await)?;
    // The stream as the kernel reads it: from the offset after the last entry taken.
    let mut entries: Vec<scribefs::fs::DirEntry> = Vec::new();
    let read = loop {
        let offset = entries.last().map_or(0, |e| e.next_offset);
        match en(fs.readdir(handle, offset).await) {
            Ok((batch, from)) if from < batch.len() => entries.extend_from_slice(&batch[from..]),
            Ok(_) => break Ok(()),
            Err(e) => break Err(e),
        }
    };
    fs.releasedir(handle);
    read?;
    let mut names: Vec<(String, Attr)> = entries
        .iter()
        .filter(|e| e.name != "." && e.name != "..")
        .map(|e| (e.name.clone(), e.attr.clone()))
        .collect();
    names.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(names)
}

// ----- one case -----

struct Options {
    no_open_rename: bool,
    shrink: bool,
}

struct Case {
    rng: fastrand::Rng,
    store: Arc<FaultyStore<MemoryStore>>,
    config: FsConfig,
    fs: Arc<Fs>,
    caller: Caller,
    model: Model,
    slots: [Option<Handle>; SLOTS],
    no_open_rename: bool,
}

impl Case {
    fn new(seed: u64, options: &Options) -> Case {
        let mut rng = fastrand::Rng::with_seed(seed);
        let store = Arc::new(FaultyStore::new(MemoryStore::new()));
        let mut config = FsConfig::new(Layout::new(LayoutKind::Keys, None).unwrap());
        config.staging_dir = std::env::temp_dir();
        config.metadata_ttl = match rng.u8(..3) {
            0 => None,
            1 => Some(Duration::ZERO),
            // Expires only when an Expire step moves the clock: the case does not depend on
            // how fast it runs.
            _ => Some(TTL),
        };
        config.posix_metadata = rng.bool();
        let fs = Fs::new(store.clone(), config.clone());
        // SAFETY: getuid/getgid cannot fail and touch no memory.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        Case {
            rng,
            store,
            config,
            fs,
            caller: Caller {
                pid: std::process::id(),
                uid,
                gid,
            },
            model: Model::new(),
            slots: Default::default(),
            no_open_rename: options.no_open_rename,
        }
    }

    fn describe(&self) -> String {
        format!(
            "metadata_ttl {:?}, posix_metadata {}",
            self.config.metadata_ttl, self.config.posix_metadata
        )
    }

    // ----- generating -----

    fn handles_on(&self, node: usize) -> impl Iterator<Item = &Handle> {
        self.handles_on_except(node, None)
    }

    /// The handles on `node` but the one in slot `closing`.
    fn handles_on_except(
        &self,
        node: usize,
        closing: Option<usize>,
    ) -> impl Iterator<Item = &Handle> {
        self.slots
            .iter()
            .enumerate()
            .filter(move |(i, _)| Some(*i) != closing)
            .filter_map(|(_, h)| h.as_ref())
            .filter(move |h| h.node == node)
    }

    fn subtree_open(&self, node: usize, closing: Option<usize>) -> bool {
        let below = self.model.subtree(node);
        self.slots
            .iter()
            .enumerate()
            .filter(|(i, _)| Some(*i) != closing)
            .filter_map(|(_, h)| h.as_ref())
            .any(|h| below.contains(&h.node))
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.rng.usize(..items.len())]
    }

    fn name(&mut self, dir: bool) -> &'static str {
        let likely = self.rng.u8(..10) < 8;
        if dir == likely {
            self.pick(&DIR_NAMES)
        } else {
            self.pick(&FILE_NAMES)
        }
    }

    /// An existing path half the time, else a name (mostly of the hinted kind) in an existing
    /// directory, or now and then below a path that may not be a directory.
    fn path(&mut self, dir: bool) -> String {
        let existing = self.model.paths();
        if !existing.is_empty() && self.rng.bool() {
            return existing[self.rng.usize(..existing.len())].0.clone();
        }
        let parent = if self.rng.u8(..10) < 8 {
            let mut dirs: Vec<String> = existing
                .into_iter()
                .filter(|(p, n)| self.model.nodes[*n].ty == Type::Dir && components(p).count() < 3)
                .map(|(p, _)| p)
                .collect();
            dirs.push(String::new());
            dirs.swap_remove(self.rng.usize(..dirs.len()))
        } else {
            let dir = self.rng.bool();
            self.name(dir).to_string()
        };
        let name = self.name(dir);
        join(&parent, name)
    }

    /// A path for a file or, one time in three, a directory.
    fn any_path(&mut self) -> String {
        let dir = self.rng.u8(..3) == 0;
        self.path(dir)
    }

    /// The path of an open file now and then (to rename or unlink it), else any path.
    fn path_maybe_open(&mut self, dir: bool) -> String {
        if self.rng.u8(..10) < 4 {
            let open: Vec<usize> = self.slots.iter().flatten().map(|h| h.node).collect();
            if !open.is_empty() {
                let node = open[self.rng.usize(..open.len())];
                if let Some(path) = self.model.path_of(node) {
                    // The file itself, or the directory holding it.
                    if self.rng.bool() || !path.contains('/') {
                        return path;
                    }
                    return split_last(&path).0.to_string();
                }
            }
        }
        self.path(dir)
    }

    fn slot(&mut self, filter: impl Fn(&Handle) -> bool) -> Option<usize> {
        let usable: Vec<usize> = (0..SLOTS)
            .filter(|&i| self.slots[i].as_ref().is_some_and(&filter))
            .collect();
        (!usable.is_empty()).then(|| usable[self.rng.usize(..usable.len())])
    }

    fn random_op(&mut self) -> Option<Op> {
        let op = match self.rng.u32(..100) {
            0..16 => {
                let free: Vec<usize> = (0..SLOTS).filter(|&i| self.slots[i].is_none()).collect();
                let slot = *free.get(self.rng.usize(..free.len().max(1)))?;
                let access = self.pick(&[Access::R, Access::R, Access::W, Access::RW, Access::RW]);
                let writing = access != Access::R;
                let creat = self.rng.u8(..10) < if writing { 5 } else { 2 };
                Op::Open {
                    slot,
                    path: self.path(false),
                    access,
                    creat,
                    excl: creat && self.rng.u8(..4) == 0,
                    trunc: writing && self.rng.u8(..10) < 3,
                    append: writing && self.rng.u8(..4) == 0,
                    perm: self.pick(&PERMS),
                }
            }
            16..31 => {
                let slot = self.slot(|h| h.write)?;
                let size = self.model.nodes[self.slots[slot].as_ref()?.node].data.len() as u64;
                let offset = if self.rng.bool() {
                    (size + self.rng.u64(..6)).saturating_sub(3)
                } else {
                    self.rng.u64(..48)
                };
                Op::Write {
                    slot,
                    offset,
                    len: self.rng.usize(1..24),
                    byte: self.rng.u8(1..=250),
                }
            }
            31..41 => {
                let slot = self.slot(|h| h.read)?;
                let (offset, len) = if self.rng.u8(..4) == 0 {
                    (0, 4096)
                } else {
                    (self.rng.u64(..48), self.rng.u32(1..40))
                };
                Op::Read { slot, offset, len }
            }
            41..45 => Op::Close {
                slot: self.slot(|_| true)?,
            },
            45..48 => self.close_then()?,
            48..55 => Op::Stat {
                path: self.path(false),
            },
            55..65 => {
                let dir = self.rng.u8(..3) == 0;
                Op::Rename {
                    from: self.path_maybe_open(dir),
                    to: self.path_maybe_open(dir),
                }
            }
            65..70 => Op::Unlink {
                path: self.path_maybe_open(false),
            },
            70..75 => Op::Mkdir {
                path: self.path(true),
                perm: self.pick(&PERMS),
            },
            75..78 => Op::Rmdir {
                path: self.path(true),
            },
            78..82 => Op::Readdir {
                path: if self.rng.u8(..3) == 0 {
                    String::new()
                } else {
                    self.path(true)
                },
            },
            82..84 => Op::Truncate {
                path: self.path_maybe_open(false),
                size: self.rng.u64(..40),
            },
            84..86 => Op::Ftruncate {
                slot: self.slot(|h| h.write)?,
                size: self.rng.u64(..40),
            },
            86..88 => Op::Chmod {
                path: self.any_path(),
                perm: self.pick(&PERMS),
            },
            88..90 => Op::Utimens {
                path: self.any_path(),
                secs: 1_500_000_000 + self.rng.u64(..100_000_000),
            },
            90..92 => Op::Fsync {
                slot: self.slot(|_| true)?,
            },
            92..94 => Op::Symlink {
                path: self.path(false),
                target: self.pick(&TARGETS).to_string(),
            },
            94..96 => Op::Readlink {
                path: self.path(false),
            },
            96..98 => Op::Expire,
            _ => Op::Remount,
        };
        Some(op)
    }

    /// A close of an open handle, then an operation on its file while the release is in
    /// flight: an open (from any slot free once the handle is closed), a rename, an unlink, a
    /// chmod, a truncate or a stat of its path.
    fn close_then(&mut self) -> Option<Op> {
        let slot = self.slot(|_| true)?;
        let path = self.model.path_of(self.slots[slot].as_ref()?.node)?;
        let then = match self.rng.u8(..8) {
            0..3 => {
                let free: Vec<usize> = (0..SLOTS)
                    .filter(|&i| i == slot || self.slots[i].is_none())
                    .collect();
                let access = self.pick(&[Access::R, Access::W, Access::RW]);
                let writing = access != Access::R;
                Op::Open {
                    slot: free[self.rng.usize(..free.len())],
                    path,
                    access,
                    creat: self.rng.bool(),
                    excl: false,
                    trunc: writing && self.rng.u8(..3) == 0,
                    append: writing && self.rng.u8(..3) == 0,
                    perm: self.pick(&PERMS),
                }
            }
            3 => Op::Rename {
                from: path,
                to: self.path(false),
            },
            4 => Op::Unlink { path },
            5 => Op::Chmod {
                path,
                perm: self.pick(&PERMS),
            },
            6 => Op::Truncate {
                path,
                size: self.rng.u64(..40),
            },
            _ => Op::Stat { path },
        };
        Some(Op::CloseThen {
            slot,
            by_child: self.rng.bool(),
            then: Box::new(then),
        })
    }

    /// Whether `op` stays clear of the documented exceptions.
    fn admissible(&self, op: &Op) -> bool {
        self.admissible_closing(op, None)
    }

    /// Whether `op` stays clear of the documented exceptions once the handle in slot `closing`
    /// is closed.
    fn admissible_closing(&self, op: &Op, closing: Option<usize>) -> bool {
        let target = |path: &str| self.model.resolve(path).ok();
        let ty = |path: &str| target(path).map(|n| self.model.nodes[n].ty);
        // Exception 7: a read-only handle of a superseded file is only closed.
        let superseded_reader = |i: usize| {
            self.slots[i]
                .as_ref()
                .is_some_and(|h| !h.write && !h.created && self.model.nodes[h.node].superseded)
        };
        match op {
            Op::CloseThen { slot, then, .. } => self.admissible_closing(then, Some(*slot)),
            Op::Read { slot, .. } => !superseded_reader(*slot),
            Op::Open {
                path,
                access,
                creat,
                excl,
                trunc,
                ..
            } => match target(path) {
                None => true,
                Some(_) if *creat && *excl => true,
                Some(n) => match self.model.nodes[n].ty {
                    Type::Symlink => false,
                    // A read-only open of a directory is opendir's.
                    Type::Dir => *access != Access::R,
                    Type::File => {
                        let mut open = self.handles_on_except(n, closing);
                        if *access != Access::R || *trunc {
                            open.next().is_none()
                        } else {
                            open.all(|h| !h.write && !h.created)
                        }
                    }
                },
            },
            Op::Truncate { path, .. } => match target(path) {
                Some(n) => match self.model.nodes[n].ty {
                    Type::Symlink => false,
                    Type::Dir => true,
                    Type::File => self
                        .handles_on_except(n, closing)
                        .all(|h| h.write || h.created),
                },
                None => true,
            },
            Op::Chmod { path, .. } | Op::Utimens { path, .. } => ty(path) != Some(Type::Symlink),
            Op::Unlink { path } | Op::Rmdir { path } if self.no_open_rename => {
                target(path).is_none_or(|n| !self.subtree_open(n, closing))
            }
            Op::Rename { from, to } if self.no_open_rename => [from, to]
                .iter()
                .all(|p| target(p).is_none_or(|n| !self.subtree_open(n, closing))),
            _ => true,
        }
    }

    /// Whether a replayed `op` finds its handle slot as it needs it, and stays clear of the
    /// exceptions.
    fn applicable(&self, op: &Op) -> bool {
        let slot = |i: usize, need: fn(&Handle) -> bool| self.slots[i].as_ref().is_some_and(need);
        let slot_ok = match op {
            Op::Open { slot, .. } => self.slots[*slot].is_none(),
            Op::Write { slot: i, .. } | Op::Ftruncate { slot: i, .. } => slot(*i, |h| h.write),
            Op::Read { slot: i, .. } => slot(*i, |h| h.read),
            Op::Close { slot: i } | Op::Fsync { slot: i } => slot(*i, |_| true),
            Op::CloseThen { slot: i, then, .. } => {
                let then_slot = match **then {
                    Op::Open { slot: j, .. } => j == *i || self.slots[j].is_none(),
                    _ => true,
                };
                slot(*i, |_| true) && then_slot
            }
            _ => true,
        };
        slot_ok && self.admissible(op)
    }

    fn next_op(&mut self) -> Op {
        loop {
            if let Some(op) = self.random_op()
                && self.admissible(&op)
            {
                return op;
            }
        }
    }

    // ----- running -----

    async fn step(&mut self, op: &Op) -> Result<(), String> {
        let fs = self.fs.clone();
        let caller = self.caller;
        match op {
            Op::Mkdir { path, perm } => {
                let expected = self.model.parent(path).and_then(|(p, name)| {
                    match self.model.child(p, &name) {
                        Some(_) => Err(libc::EEXIST),
                        None => Ok((p, name)),
                    }
                });
                let got = match fs_parent(&fs, path).await {
                    Ok((parent, name)) => {
                        en(fs.mkdir(parent, &name, u32::from(*perm), caller).await)
                    }
                    Err(e) => Err(e),
                };
                match (expected, got) {
                    (Ok((p, name)), Ok(attr)) => {
                        let id = self
                            .model
                            .add(p, &name, Node::new(Type::Dir, *perm, Vec::new()));
                        check_attr("mkdir", &self.model.stat(id), &attr)
                    }
                    (e, g) => same_failure("mkdir", e, g),
                }
            }
            Op::Rmdir { path } => {
                let expected = self.model.parent(path).and_then(|(p, name)| {
                    let n = self.model.child(p, &name).ok_or(libc::ENOENT)?;
                    let node = &self.model.nodes[n];
                    if node.ty != Type::Dir {
                        Err(libc::ENOTDIR)
                    } else if !node.children.is_empty() {
                        Err(libc::ENOTEMPTY)
                    } else {
                        Ok((p, name))
                    }
                });
                let got = match fs_parent(&fs, path).await {
                    Ok((parent, name)) => en(fs.rmdir(parent, &name).await),
                    Err(e) => Err(e),
                };
                match (expected, got) {
                    (Ok((p, name)), Ok(())) => {
                        self.model.nodes[p].children.remove(&name);
                        Ok(())
                    }
                    (e, g) => same_failure("rmdir", e, g),
                }
            }
            Op::Unlink { path } => {
                let expected = self.model.parent(path).and_then(|(p, name)| {
                    let n = self.model.child(p, &name).ok_or(libc::ENOENT)?;
                    if self.model.nodes[n].ty == Type::Dir {
                        Err(libc::EISDIR)
                    } else {
                        Ok((p, name))
                    }
                });
                let got = match fs_parent(&fs, path).await {
                    Ok((parent, name)) => en(fs.unlink(parent, &name).await),
                    Err(e) => Err(e),
                };
                match (expected, got) {
                    (Ok((p, name)), Ok(())) => {
                        if let Some(n) = self.model.nodes[p].children.remove(&name)
                            && self.handles_on(n).next().is_some()
                        {
                            self.model.unlinked_open.push((p, name, n));
                        }
                        Ok(())
                    }
                    (e, g) => same_failure("unlink", e, g),
                }
            }
            Op::Rename { from, to } => {
                let expected = self.expect_rename(from, to);
                let got = async {
                    let (parent, name) = fs_parent(&fs, from).await?;
                    let (new_parent, new_name) = fs_parent(&fs, to).await?;
                    en(fs.rename(parent, &name, new_parent, &new_name, 0).await)
                }
                .await;
                match (expected, got) {
                    (Ok(Some((sp, sn, dp, dn))), Ok(())) => {
                        let src = self.model.nodes[sp].children.remove(&sn).unwrap();
                        if self.model.nodes[src].ty == Type::File
                            && self.handles_on(src).next().is_some()
                        {
                            self.model.unlinked_open.push((sp, sn.clone(), src));
                        }
                        self.model.name_taken(dp, &dn);
                        if let Some(old) = self.model.nodes[dp].children.insert(dn, src) {
                            // A file created here and still open never reached S3: its handle
                            // keeps its bytes, whatever its access mode.
                            let readers = self.handles_on(old).any(|h| !h.write && !h.created);
                            self.model.nodes[old].stale = readers;
                        }
                        Ok(())
                    }
                    (Ok(None), Ok(())) => Ok(()),
                    (e, g) => same_failure("rename", e, g),
                }
            }
            Op::Open {
                slot,
                path,
                access,
                creat,
                excl,
                trunc,
                append,
                perm,
            } => {
                let expected = self.model.parent(path).and_then(|(p, name)| {
                    match self.model.child(p, &name) {
                        Some(_) if *creat && *excl => Err(libc::EEXIST),
                        Some(n) if self.model.nodes[n].ty == Type::Dir => Err(libc::EISDIR),
                        Some(n) => Ok((p, name, Some(n))),
                        None if !*creat => Err(libc::ENOENT),
                        None => Ok((p, name, None)),
                    }
                });
                let got = fs_open(&fs, caller, op).await;
                match (expected, got) {
                    (Ok((p, name, existing)), Ok((fh, ino))) => {
                        let node = match existing {
                            Some(n) => {
                                if *trunc {
                                    self.model.nodes[n].data.clear();
                                    self.model.nodes[n].mtime = None;
                                }
                                n
                            }
                            None => {
                                self.model
                                    .add(p, &name, Node::new(Type::File, *perm, Vec::new()))
                            }
                        };
                        self.slots[*slot] = Some(Handle {
                            node,
                            read: *access != Access::W,
                            write: *access != Access::R,
                            created: existing.is_none(),
                            append: *append,
                            fh,
                            ino,
                        });
                        Ok(())
                    }
                    (e, g) => same_failure("open", e, g),
                }
            }
            Op::Write {
                slot,
                offset,
                len,
                byte,
            } => {
                let h = self.slots[*slot]
                    .clone()
                    .expect("generated for an open slot");
                let data: Vec<u8> = (0..*len).map(|i| byte.wrapping_add(i as u8)).collect();
                let offset = if h.append {
                    let size = self.model.nodes[h.node].data.len() as u64;
                    let got = en(fs.getattr(h.ino).await).map(|a| a.size);
                    if got != Ok(size) {
                        return Err(format!(
                            "getattr of an O_APPEND handle's inode (for the write offset): expected size {size}, got {}",
                            show(&got)
                        ));
                    }
                    size
                } else {
                    *offset
                };
                let node = &mut self.model.nodes[h.node];
                write_at(&mut node.data, offset, &data);
                node.mtime = None;
                let got = en(fs.write(h.fh, offset, &data).await);
                if got != Ok(*len as u32) {
                    return Err(format!(
                        "write of {len} bytes at {offset}: got {}",
                        show(&got)
                    ));
                }
                Ok(())
            }
            Op::Read { slot, offset, len } => {
                let h = self.slots[*slot]
                    .clone()
                    .expect("generated for an open slot");
                let node = &self.model.nodes[h.node];
                let expected = read_range(&node.data, *offset, *len);
                let got = en(fs.read(h.fh, *offset, *len).await).map(|b| b.to_vec());
                let expected = if node.stale {
                    Err(libc::ESTALE)
                } else {
                    Ok(expected)
                };
                if got == expected {
                    Ok(())
                } else {
                    Err(format!(
                        "read of {len} at {offset}: expected {}, got {}",
                        show(&expected),
                        show(&got)
                    ))
                }
            }
            Op::Ftruncate { slot, size } => {
                let h = self.slots[*slot]
                    .clone()
                    .expect("generated for an open slot");
                let node = &mut self.model.nodes[h.node];
                node.data.resize(*size as usize, 0);
                node.mtime = None;
                let change = SetAttr {
                    size: Some(*size),
                    ..Default::default()
                };
                match en(fs.setattr(h.ino, Some(h.fh), change).await) {
                    Ok(attr) => check_attr("ftruncate", &self.model.stat(h.node), &attr),
                    Err(e) => Err(format!("ftruncate to {size}: got {}", errname(e))),
                }
            }
            Op::Truncate { path, size } => {
                let expected = self.model.resolve(path).and_then(|n| {
                    if self.model.nodes[n].ty == Type::Dir {
                        Err(libc::EISDIR)
                    } else {
                        Ok(n)
                    }
                });
                let change = SetAttr {
                    size: Some(*size),
                    ..Default::default()
                };
                let got = match fs_resolve(&fs, path).await {
                    Ok(attr) => en(fs.setattr(attr.ino, None, change).await),
                    Err(e) => Err(e),
                };
                match (expected, got) {
                    (Ok(n), Ok(attr)) => {
                        let node = &mut self.model.nodes[n];
                        node.data.resize(*size as usize, 0);
                        node.mtime = None;
                        check_attr("truncate", &self.model.stat(n), &attr)
                    }
                    (e, g) => same_failure("truncate", e, g),
                }
            }
            Op::Chmod { path, perm } => {
                let change = SetAttr {
                    mode: Some(u32::from(*perm)),
                    ..Default::default()
                };
                self.set_metadata("chmod", path, change, |node| node.perm = Some(*perm))
                    .await
            }
            Op::Utimens { path, secs } => {
                let change = SetAttr {
                    mtime: Some(UNIX_EPOCH + Duration::from_secs(*secs)),
                    ..Default::default()
                };
                self.set_metadata("utimens", path, change, |node| node.mtime = Some(*secs))
                    .await
            }
            Op::Fsync { slot } => {
                let h = self.slots[*slot]
                    .clone()
                    .expect("generated for an open slot");
                en(fs.fsync(h.fh).await).map_err(|e| format!("fsync: got {}", errname(e)))
            }
            Op::Close { slot } => {
                let h = self.slots[*slot]
                    .take()
                    .expect("generated for an open slot");
                self.close(&h).await
            }
            Op::CloseThen {
                slot,
                by_child,
                then,
            } => {
                let h = self.slots[*slot]
                    .take()
                    .expect("generated for an open slot");
                // A child's close uploads nothing: the release does (pid 1 is not ours).
                let closer = match by_child {
                    true => Caller { pid: 1, ..caller },
                    false => caller,
                };
                let flushed = en(fs.flush(h.fh, closer).await);
                let store = self.store.clone();
                for op in HELD_UPLOADS {
                    store.hold(op);
                }
                // `then` is polled first: it finds every handle closed and the release not
                // begun; then the release begins and its upload waits at the store, while
                // `then` runs on; only then does the store let uploads through.
                let release = async { en(fs.release(h.fh).await) };
                let let_through = async move {
                    for _ in 0..HOLD_ROUNDS {
                        tokio::task::yield_now().await;
                    }
                    for op in HELD_UPLOADS {
                        store.release(op, HELD_FOR_GOOD);
                    }
                };
                let (then_result, released, ()) =
                    tokio::join!(Box::pin(self.step(then)), release, let_through);
                match (flushed, released) {
                    (Ok(()), Ok(())) => then_result.map_err(|e| format!("{e} (release in flight)")),
                    (f, r) => Err(format!(
                        "close with a release in flight: flush {}, release {}",
                        show(&f),
                        show(&r)
                    )),
                }
            }
            Op::Stat { path } => {
                let expected = self.model.resolve(path);
                let got = fs_resolve(&fs, path).await;
                match (expected, got) {
                    (Ok(n), Ok(attr)) => {
                        check_attr("stat (lookup)", &self.model.stat(n), &attr)?;
                        match en(fs.getattr(attr.ino).await) {
                            Ok(attr) => check_attr("stat (getattr)", &self.model.stat(n), &attr),
                            Err(e) => Err(format!("getattr after lookup: got {}", errname(e))),
                        }
                    }
                    (e, g) => same_failure("stat", e, g),
                }
            }
            Op::Readdir { path } => {
                let expected = self.model.resolve(path).and_then(|n| {
                    if self.model.nodes[n].ty == Type::Dir {
                        Ok(n)
                    } else {
                        Err(libc::ENOTDIR)
                    }
                });
                let got = match fs_resolve(&fs, path).await {
                    Ok(attr) => fs_names(&fs, attr.ino).await,
                    Err(e) => Err(e),
                };
                match (expected, got) {
                    (Ok(n), Ok(entries)) => self.check_listing(n, &entries),
                    (e, g) => same_failure("readdir", e, g),
                }
            }
            Op::Symlink { path, target } => {
                let expected = self.model.parent(path).and_then(|(p, name)| {
                    match self.model.child(p, &name) {
                        Some(_) => Err(libc::EEXIST),
                        None => Ok((p, name)),
                    }
                });
                let got = match fs_parent(&fs, path).await {
                    Ok((parent, name)) => en(fs.symlink(parent, &name, target, caller).await),
                    Err(e) => Err(e),
                };
                match (expected, got) {
                    (Ok((p, name)), Ok(attr)) => {
                        let node = Node::new(Type::Symlink, 0o777, target.as_bytes().to_vec());
                        let id = self.model.add(p, &name, node);
                        check_attr("symlink", &self.model.stat(id), &attr)
                    }
                    (e, g) => same_failure("symlink", e, g),
                }
            }
            Op::Readlink { path } => {
                let expected = self.model.resolve(path).and_then(|n| {
                    let node = &self.model.nodes[n];
                    match node.ty {
                        Type::Symlink if node.ty_known => Ok(Some(node.data.clone())),
                        Type::Symlink => Ok(None),
                        _ => Err(libc::EINVAL),
                    }
                });
                let got = match fs_resolve(&fs, path).await {
                    Ok(attr) => en(fs.readlink(attr.ino).await).map(|b| b.to_vec()),
                    Err(e) => Err(e),
                };
                match (expected, got) {
                    (Ok(None), _) => Ok(()),
                    (Ok(Some(a)), Ok(b)) if a == b => Ok(()),
                    (e, g) => same_failure("readlink", e, g),
                }
            }
            Op::Expire => {
                self.config.clock.advance(2 * TTL);
                Ok(())
            }
            Op::Remount => self.remount().await,
        }
    }

    /// What a rename must do: `Some` (source dir, name, target dir, name) to move, `None` for
    /// a rename onto itself.
    #[allow(clippy::type_complexity)]
    fn expect_rename(
        &self,
        from: &str,
        to: &str,
    ) -> Result<Option<(usize, String, usize, String)>, i32> {
        let m = &self.model;
        let (sp, sn) = m.parent(from)?;
        let (dp, dn) = m.parent(to)?;
        let src = m.child(sp, &sn).ok_or(libc::ENOENT)?;
        let src_dir = m.nodes[src].ty == Type::Dir;
        let to_parent = split_last(to).0;
        if src_dir && (to_parent == from || to_parent.starts_with(&format!("{from}/"))) {
            return Err(libc::EINVAL);
        }
        if let Some(target) = m.child(dp, &dn) {
            if target == src {
                return Ok(None);
            }
            let target = &m.nodes[target];
            match (src_dir, target.ty == Type::Dir) {
                (false, true) => return Err(libc::EISDIR),
                (true, false) => return Err(libc::ENOTDIR),
                (true, true) if !target.children.is_empty() => return Err(libc::ENOTEMPTY),
                _ => {}
            }
        }
        Ok(Some((sp, sn, dp, dn)))
    }

    async fn set_metadata(
        &mut self,
        what: &str,
        path: &str,
        change: SetAttr,
        apply: impl FnOnce(&mut Node),
    ) -> Result<(), String> {
        let expected = self.model.resolve(path);
        let got = match fs_resolve(&self.fs, path).await {
            Ok(attr) => en(self.fs.setattr(attr.ino, None, change).await),
            Err(e) => Err(e),
        };
        match (expected, got) {
            (Ok(n), Ok(attr)) => {
                apply(&mut self.model.nodes[n]);
                check_attr(what, &self.model.stat(n), &attr)
            }
            (e, g) => same_failure(what, e, g),
        }
    }

    async fn close(&mut self, h: &Handle) -> Result<(), String> {
        let flushed = en(self.fs.flush(h.fh, self.caller).await);
        let released = en(self.fs.release(h.fh).await);
        match (flushed, released) {
            (Ok(()), Ok(())) => Ok(()),
            (f, r) => Err(format!("close: flush {}, release {}", show(&f), show(&r))),
        }
    }

    fn check_listing(&mut self, dir: usize, entries: &[(String, Attr)]) -> Result<(), String> {
        let expected: Vec<&String> = self.model.nodes[dir].children.keys().collect();
        let got: Vec<&String> = entries.iter().map(|(name, _)| name).collect();
        if expected != got {
            return Err(format!("readdir: expected names {expected:?}, got {got:?}"));
        }
        if self.config.posix_metadata {
            for (name, attr) in entries {
                let n = self.model.nodes[dir].children[name];
                check_attr(&format!("readdir entry {name}"), &self.model.stat(n), attr)?;
            }
        }
        Ok(())
    }

    async fn remount(&mut self) -> Result<(), String> {
        for slot in 0..SLOTS {
            if let Some(h) = self.slots[slot].take() {
                self.close(&h).await?;
            }
        }
        self.fs.flush_all().await;
        self.fs = Fs::new(self.store.clone(), self.config.clone());
        if !self.config.posix_metadata {
            // Exception 6: a new mount without posix_metadata shows names it only listed with
            // default attributes, and any lookup lists the directory.
            for node in &mut self.model.nodes {
                node.perm = None;
                node.mtime = None;
                node.ty_known = false;
            }
        }
        self.check_tree().await
    }

    /// Everything the model holds, read back through the `Fs`: attributes, contents, symlink
    /// targets, then every directory's names. Only called with no handle open.
    async fn check_tree(&mut self) -> Result<(), String> {
        let fs = self.fs.clone();
        let mut dirs = vec![(String::new(), 0, ROOT_INO)];
        for (path, n) in self.model.paths() {
            let attr = fs_resolve(&fs, &path)
                .await
                .map_err(|e| format!("tree check: lookup {path}: got {}", errname(e)))?;
            check_attr(&format!("tree check: {path}"), &self.model.stat(n), &attr)?;
            let node = &self.model.nodes[n];
            match node.ty {
                Type::Dir => dirs.push((path, n, attr.ino)),
                Type::File => {
                    let opened = en(fs.open(attr.ino, libc::O_RDONLY, self.caller).await)
                        .map_err(|e| format!("tree check: open {path}: got {}", errname(e)))?;
                    let got = en(fs.read(opened.handle, 0, 4096).await).map(|b| b.to_vec());
                    en(fs.release(opened.handle).await)
                        .map_err(|e| format!("tree check: release {path}: {}", errname(e)))?;
                    if got != Ok(node.data.clone()) {
                        return Err(format!(
                            "tree check: content of {path}: expected {:?}, got {}",
                            node.data,
                            show(&got)
                        ));
                    }
                }
                Type::Symlink if node.ty_known => {
                    let got = en(fs.readlink(attr.ino).await).map(|b| b.to_vec());
                    if got != Ok(node.data.clone()) {
                        return Err(format!(
                            "tree check: readlink {path}: expected {:?}, got {}",
                            String::from_utf8_lossy(&node.data),
                            show(&got)
                        ));
                    }
                }
                Type::Symlink => {}
            }
        }
        for (path, n, ino) in dirs {
            let entries = fs_names(&fs, ino)
                .await
                .map_err(|e| format!("tree check: readdir /{path}: got {}", errname(e)))?;
            self.check_listing(n, &entries)
                .map_err(|e| format!("tree check: /{path}: {e}"))?;
        }
        Ok(())
    }
}

/// A failed case: where, what, the operations up to it, and a shorter sequence that fails
/// the same way.
struct Failure {
    seed: u64,
    setup: String,
    index: usize,
    message: String,
    ops: Vec<Op>,
    minimal: Vec<Op>,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "seed {} ({}): operation {} diverged: {}",
            self.seed, self.setup, self.index, self.message
        )?;
        writeln!(f, "operations:")?;
        for (i, op) in self.ops.iter().enumerate() {
            writeln!(f, "  {i:3}: {op:?}")?;
        }
        if self.minimal.len() < self.ops.len() {
            writeln!(
                f,
                "shrunk to {} operations failing the same way (same setup):",
                self.minimal.len()
            )?;
            for (i, op) in self.minimal.iter().enumerate() {
                writeln!(f, "  {i:3}: {op:?}")?;
            }
        }
        write!(
            f,
            "replay: MODEL_SEED={} cargo test --test reference_model",
            self.seed
        )
    }
}

/// Runs a case: the operations generated from `seed`, or `given` ones (replayed with the
/// seed's setup, skipping any that do not apply, for shrinking). Returns the operations run
/// and, when one diverged, its index and the divergence.
async fn run(
    seed: u64,
    options: &Options,
    given: Option<&[Op]>,
) -> (Vec<Op>, Option<(usize, String)>, String) {
    let mut case = Case::new(seed, options);
    let setup = case.describe();
    let count = case.rng.usize(30..=60);
    let mut ran = Vec::new();
    for index in 0..=count.max(given.map_or(0, <[Op]>::len)) {
        let op = match given {
            Some(ops) => match ops.get(index) {
                Some(op) if case.applicable(op) => op.clone(),
                Some(_) => continue,
                None => break,
            },
            // The last step closes everything and remounts, checking the whole tree.
            None if index == count => Op::Remount,
            None => case.next_op(),
        };
        ran.push(op.clone());
        if let Err(message) = case.step(&op).await {
            return (ran.clone(), Some((ran.len() - 1, message)), setup);
        }
    }
    (ran, None, setup)
}

/// Drops chunks of operations while the case still fails the same way (the same message,
/// numbers aside), for up to 15 s.
async fn shrink(seed: u64, options: &Options, mut ops: Vec<Op>, key: &str) -> Vec<Op> {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let mut chunk = ops.len().div_ceil(2);
    while chunk >= 1 {
        let mut i = 0;
        while i < ops.len() {
            if std::time::Instant::now() > deadline {
                return ops;
            }
            let mut candidate = ops.clone();
            candidate.drain(i..(i + chunk).min(ops.len()));
            match run(seed, options, Some(&candidate)).await {
                (ran, Some((_, message)), _) if same_kind(&message) == key => ops = ran,
                _ => i += chunk,
            }
        }
        chunk /= 2;
    }
    ops
}

/// A divergence's message with its numbers blanked (errnos are named too): sizes, modes,
/// times and offsets vary as a sequence shrinks.
fn same_kind(message: &str) -> String {
    let mut out = String::new();
    for c in message.chars() {
        if c.is_ascii_digit() || (c == '.' && out.ends_with('#')) {
            if !out.ends_with('#') {
                out.push('#');
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// A passing case's operations: how many, and how many closed a file whose release was then
/// in flight under another operation.
async fn run_case(seed: u64, options: &Options) -> Result<(usize, usize), Failure> {
    let (ops, failure, setup) = run(seed, options, None).await;
    let Some((index, message)) = failure else {
        let in_flight = ops
            .iter()
            .filter(|op| matches!(op, Op::CloseThen { .. }))
            .count();
        return Ok((ops.len(), in_flight));
    };
    let minimal = if options.shrink {
        shrink(seed, options, ops.clone(), &same_kind(&message)).await
    } else {
        ops.clone()
    };
    Err(Failure {
        seed,
        setup,
        index,
        message,
        ops,
        minimal,
    })
}

fn env_u64(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    Some(
        value
            .parse()
            .unwrap_or_else(|_| panic!("{name}={value} is not a number")),
    )
}

fn env_flag(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| !v.is_empty() && v != "0")
}

#[tokio::test(flavor = "multi_thread")]
async fn fs_agrees_with_the_posix_model() {
    let options = Options {
        no_open_rename: env_flag("MODEL_NO_OPEN_RENAME"),
        shrink: std::env::var("MODEL_SHRINK").map_or(true, |v| v != "0"),
    };
    let seeds: Vec<u64> = match env_u64("MODEL_SEED") {
        Some(seed) => vec![seed],
        None => (0..env_u64("MODEL_CASES").unwrap_or(DEFAULT_CASES)).collect(),
    };
    let keep_going = env_flag("MODEL_KEEP_GOING");
    let started = std::time::Instant::now();
    let mut failures = Vec::new();
    let (mut total_ops, mut releases_in_flight) = (0, 0);
    for &seed in &seeds {
        match run_case(seed, &options).await {
            Ok((ops, in_flight)) => {
                total_ops += ops;
                releases_in_flight += in_flight;
            }
            Err(failure) if keep_going => {
                eprintln!("{failure}\n");
                failures.push(failure);
            }
            Err(failure) => panic!("{failure}"),
        }
    }
    eprintln!(
        "{} cases, {total_ops} operations in passing cases ({releases_in_flight} with a release \
         in flight), {:?}",
        seeds.len(),
        started.elapsed()
    );
    // A full run must reach the open-file record's release states, not only plain closes.
    if seeds.len() >= 100 && failures.is_empty() {
        assert!(
            releases_in_flight >= seeds.len() / 4,
            "only {releases_in_flight} closes with a release in flight"
        );
    }
    if !failures.is_empty() {
        let mut summary = String::new();
        for failure in &failures {
            let _ = writeln!(
                summary,
                "seed {} op {}: {}",
                failure.seed,
                failure.index,
                failure.message.lines().next().unwrap_or_default()
            );
        }
        panic!(
            "{} of {} cases diverged:\n{summary}",
            failures.len(),
            seeds.len()
        );
    }
}
