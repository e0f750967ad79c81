//! File attributes: what `stat` shows, and how chmod/chown/utimens persist. Mode, owner and
//! mtime live in the same `x-amz-meta-*` headers s3fs writes (`mode` holds the whole st_mode
//! in decimal, `uid`, `gid`, `mtime` in seconds), so a bucket written by s3fs shows the same
//! attributes here and the other way round.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::FsConfig;
use super::namespace::{Ino, Kind, Node};
use crate::store::UserMetadata;

const META_MODE: &str = "mode";
const META_UID: &str = "uid";
const META_GID: &str = "gid";
const META_MTIME: &str = "mtime";

/// Attributes as the kernel sees them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attr {
    pub ino: Ino,
    pub kind: Kind,
    pub size: u64,
    pub mtime: SystemTime,
    pub perm: u16,
    pub uid: u32,
    pub gid: u32,
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
    pub fn changes_metadata(&self) -> bool {
        self.mode.is_some() || self.uid.is_some() || self.gid.is_some() || self.mtime.is_some()
    }

    /// The node's metadata with this request's changes applied.
    pub fn apply_to(&self, kind: Kind, metadata: &UserMetadata) -> UserMetadata {
        let mut metadata = metadata.clone();
        if let Some(mode) = self.mode {
            let type_bits = match kind {
                Kind::File => libc::S_IFREG,
                Kind::Directory => libc::S_IFDIR,
            };
            metadata.insert(META_MODE.into(), (type_bits | (mode & 0o7777)).to_string());
        }
        if let Some(uid) = self.uid {
            metadata.insert(META_UID.into(), uid.to_string());
        }
        if let Some(gid) = self.gid {
            metadata.insert(META_GID.into(), gid.to_string());
        }
        if let Some(mtime) = self.mtime {
            let secs = mtime
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs();
            metadata.insert(META_MTIME.into(), secs.to_string());
        }
        metadata
    }
}

pub fn attr_of(node: &Node, config: &FsConfig) -> Attr {
    let metadata = &node.attrs().metadata;
    let default_perm = match node.kind() {
        Kind::File => config.file_mode,
        Kind::Directory => config.dir_mode,
    };
    let perm = parse::<u32>(metadata, META_MODE).map_or(default_perm, |m| (m & 0o7777) as u16);
    let mtime = metadata
        .get(META_MTIME)
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|secs| secs.is_finite() && *secs >= 0.0)
        .map_or(node.attrs().mtime, |secs| {
            UNIX_EPOCH + Duration::from_secs_f64(secs)
        });
    Attr {
        ino: node.ino(),
        kind: node.kind(),
        size: if node.kind() == Kind::File {
            node.attrs().size
        } else {
            0
        },
        mtime,
        perm,
        uid: parse(metadata, META_UID).unwrap_or(config.uid),
        gid: parse(metadata, META_GID).unwrap_or(config.gid),
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
        let mut ns = Namespace::new("", None);
        let attrs = Attrs {
            size: 3,
            mtime: UNIX_EPOCH,
            etag: Some("\"e\"".into()),
            metadata,
            content_type: ContentType::Unknown,
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
