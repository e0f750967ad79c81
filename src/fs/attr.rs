//! File attributes: what `stat` shows, and how chmod/chown/utimens persist. Type, mode, owner,
//! device number and times live in the same `x-amz-meta-*` headers s3fs writes (`mode` holds
//! the whole st_mode in decimal, type bits included; `uid`, `gid`, `rdev`; `mtime` and `ctime`
//! in seconds), so a bucket written by s3fs shows the same attributes here and the other way
//! round. An object whose mode says symlink, FIFO, socket or device is that kind of file: a
//! symlink's body is its target, the others are empty.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::FsConfig;
use super::namespace::{Ino, Kind, Node};
use crate::store::UserMetadata;

const META_MODE: &str = "mode";
const META_UID: &str = "uid";
const META_GID: &str = "gid";
const META_MTIME: &str = "mtime";
const META_CTIME: &str = "ctime";
const META_RDEV: &str = "rdev";

/// What `stat` reports as the file's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileType {
    Regular,
    Directory,
    Symlink,
    Fifo,
    Socket,
    CharDevice,
    BlockDevice,
}

impl FileType {
    /// The type of a mode's `S_IFMT` bits; `None` for bits that name no type.
    pub fn from_mode(mode: u32) -> Option<FileType> {
        Some(match mode & libc::S_IFMT {
            libc::S_IFREG => FileType::Regular,
            libc::S_IFDIR => FileType::Directory,
            libc::S_IFLNK => FileType::Symlink,
            libc::S_IFIFO => FileType::Fifo,
            libc::S_IFSOCK => FileType::Socket,
            libc::S_IFCHR => FileType::CharDevice,
            libc::S_IFBLK => FileType::BlockDevice,
            _ => return None,
        })
    }

    pub fn mode_bits(self) -> u32 {
        match self {
            FileType::Regular => libc::S_IFREG,
            FileType::Directory => libc::S_IFDIR,
            FileType::Symlink => libc::S_IFLNK,
            FileType::Fifo => libc::S_IFIFO,
            FileType::Socket => libc::S_IFSOCK,
            FileType::CharDevice => libc::S_IFCHR,
            FileType::BlockDevice => libc::S_IFBLK,
        }
    }
}

/// Attributes as the kernel sees them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attr {
    pub ino: Ino,
    pub kind: Kind,
    pub file_type: FileType,
    pub size: u64,
    pub mtime: SystemTime,
    pub ctime: SystemTime,
    pub perm: u16,
    pub uid: u32,
    pub gid: u32,
    pub rdev: u32,
}

/// A setattr request with the fields the caller wants changed.
#[derive(Debug, Clone, Default)]
pub struct SetAttr {
    pub size: Option<u64>,
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub mtime: Option<SystemTime>,
}

impl SetAttr {
    /// Whether the request changes what the object's headers hold. A request with no field
    /// we keep is a `chown(-1, -1)` or a utimens of atime only: POSIX still sets the ctime.
    pub fn changes_metadata(&self) -> bool {
        self.mode.is_some()
            || self.uid.is_some()
            || self.gid.is_some()
            || self.mtime.is_some()
            || self.size.is_none()
    }

    /// The node's metadata with this request's changes applied. The type bits stay those the
    /// node has (a chmod of a FIFO keeps it a FIFO); ctime becomes now, as POSIX says.
    pub fn apply_to(&self, kind: Kind, metadata: &UserMetadata) -> UserMetadata {
        let mut metadata = metadata.clone();
        if let Some(mode) = self.mode {
            set_mode(&mut metadata, kind, mode);
        }
        if let Some(uid) = self.uid {
            metadata.insert(META_UID.into(), uid.to_string());
        }
        if let Some(gid) = self.gid {
            metadata.insert(META_GID.into(), gid.to_string());
        }
        if let Some(mtime) = self.mtime {
            metadata.insert(META_MTIME.into(), seconds(mtime));
        }
        if self.changes_metadata() {
            metadata.insert(META_CTIME.into(), seconds(SystemTime::now()));
        }
        metadata
    }
}

/// The metadata of a new node of `file_type` with permission bits `mode`, device `rdev`,
/// owned by `uid:gid`, made now.
pub fn new_node_metadata(
    file_type: FileType,
    mode: u32,
    rdev: u32,
    uid: u32,
    gid: u32,
) -> UserMetadata {
    let now = seconds(SystemTime::now());
    let mut metadata = UserMetadata::from([
        (
            META_MODE.to_string(),
            (file_type.mode_bits() | (mode & 0o7777)).to_string(),
        ),
        (META_UID.to_string(), uid.to_string()),
        (META_GID.to_string(), gid.to_string()),
        (META_MTIME.to_string(), now.clone()),
        (META_CTIME.to_string(), now),
    ]);
    if rdev != 0 {
        metadata.insert(META_RDEV.into(), rdev.to_string());
    }
    metadata
}

/// New data was written: mtime and ctime become the upload's time (LastModified) again, until
/// a later utimens sets them.
pub fn data_changed(metadata: &mut UserMetadata) {
    metadata.remove(META_MTIME);
    metadata.remove(META_CTIME);
}

/// The metadata a renamed file's copy carries: its mtime kept (the copy gets a new
/// LastModified) and ctime now, as POSIX says for rename.
pub fn renamed_metadata(metadata: &UserMetadata, mtime: SystemTime) -> UserMetadata {
    let mut metadata = metadata.clone();
    keep_mtime(&mut metadata, mtime);
    metadata.insert(META_CTIME.into(), seconds(SystemTime::now()));
    metadata
}

/// Stores `mtime` (the upload's time, shown while no header holds one) before a CopyObject
/// that replaces the metadata: the copy's new LastModified must not become the mtime.
pub fn keep_mtime(metadata: &mut UserMetadata, mtime: SystemTime) {
    metadata
        .entry(META_MTIME.into())
        .or_insert_with(|| seconds(mtime));
}

/// Stores permission bits `mode` with the type bits the node already has (or its kind's).
fn set_mode(metadata: &mut UserMetadata, kind: Kind, mode: u32) {
    let type_bits = stored_type(kind, metadata).mode_bits();
    metadata.insert(META_MODE.into(), (type_bits | (mode & 0o7777)).to_string());
}

/// The metadata a new file or directory needs: mode, owner only where they differ from what
/// the mount shows by default, so the common case stores no headers at all.
pub fn owned_metadata(
    kind: Kind,
    mode: u32,
    uid: u32,
    gid: u32,
    config: &FsConfig,
) -> UserMetadata {
    let default_mode = match kind {
        Kind::File => config.file_mode,
        Kind::Directory => config.dir_mode,
    };
    let mut metadata = UserMetadata::new();
    if mode & 0o7777 != u32::from(default_mode) {
        set_mode(&mut metadata, kind, mode);
    }
    if uid != config.uid {
        metadata.insert(META_UID.into(), uid.to_string());
    }
    if gid != config.gid {
        metadata.insert(META_GID.into(), gid.to_string());
    }
    metadata
}

fn seconds(time: SystemTime) -> String {
    time.duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
        .to_string()
}

/// The file type the node's stored mode names, or its kind's default.
pub fn stored_type(kind: Kind, metadata: &UserMetadata) -> FileType {
    match kind {
        Kind::Directory => FileType::Directory,
        Kind::File => parse::<u32>(metadata, META_MODE)
            .and_then(FileType::from_mode)
            .filter(|t| *t != FileType::Directory)
            .unwrap_or(FileType::Regular),
    }
}

fn time_of(metadata: &UserMetadata, name: &str) -> Option<SystemTime> {
    metadata
        .get(name)
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|secs| secs.is_finite() && *secs >= 0.0)
        .map(|secs| UNIX_EPOCH + Duration::from_secs_f64(secs))
}

pub fn attr_of(node: &Node, config: &FsConfig) -> Attr {
    let metadata = &node.attrs().metadata;
    let default_perm = match node.kind() {
        Kind::File => config.file_mode,
        Kind::Directory => config.dir_mode,
    };
    let perm = parse::<u32>(metadata, META_MODE).map_or(default_perm, |m| (m & 0o7777) as u16);
    let mtime = time_of(metadata, META_MTIME).unwrap_or(node.attrs().mtime);
    Attr {
        ino: node.ino(),
        kind: node.kind(),
        file_type: stored_type(node.kind(), metadata),
        size: if node.kind() == Kind::File {
            node.attrs().size
        } else {
            0
        },
        mtime,
        ctime: time_of(metadata, META_CTIME).unwrap_or(mtime),
        perm,
        uid: parse(metadata, META_UID).unwrap_or(config.uid),
        gid: parse(metadata, META_GID).unwrap_or(config.gid),
        rdev: parse(metadata, META_RDEV).unwrap_or(0),
    }
}

fn parse<T: std::str::FromStr>(metadata: &UserMetadata, name: &str) -> Option<T> {
    metadata.get(name).and_then(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::namespace::{Attrs, ContentType, Namespace, ROOT_INO};
    use crate::fs::{Layout, LayoutKind};

    fn attr_with(metadata: UserMetadata, config: &FsConfig) -> Attr {
        let mut ns = Namespace::new("", None, Default::default());
        let attrs = Attrs {
            size: 3,
            mtime: UNIX_EPOCH,
            etag: Some("\"e\"".into()),
            metadata,
            content_type: ContentType::Unknown,
            last_modified: None,
        };
        let now = std::time::Instant::now();
        let ino = ns
            .looked_up(ROOT_INO, "f", Some((Kind::File, attrs)), now)
            .unwrap();
        attr_of(ns.get(ino).unwrap(), config)
    }

    #[test]
    fn s3fs_headers_round_trip() {
        let config = FsConfig::new(Layout::new(LayoutKind::Keys, None).unwrap());
        let plain = attr_with(UserMetadata::new(), &config);
        assert_eq!(plain.perm, 0o644);
        let change = SetAttr {
            mode: Some(0o600),
            uid: Some(1234),
            gid: Some(99),
            mtime: Some(UNIX_EPOCH + Duration::from_secs(1_700_000_000)),
            ..Default::default()
        };
        let metadata = change.apply_to(Kind::File, &UserMetadata::new());
        assert_eq!(metadata["mode"], (libc::S_IFREG | 0o600).to_string());
        let attr = attr_with(metadata, &config);
        assert_eq!((attr.perm, attr.uid, attr.gid), (0o600, 1234, 99));
        assert_eq!(attr.mtime, UNIX_EPOCH + Duration::from_secs(1_700_000_000));
        let garbage = UserMetadata::from([("mode".to_string(), "x".to_string())]);
        assert_eq!(attr_with(garbage, &config).perm, 0o644);
    }
}
