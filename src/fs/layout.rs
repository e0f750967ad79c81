//! How keys become paths. `keys` (the default) shows every `/`-separated key as a path;
//! `segments` shows only Scribe Ledger segment files of one prefix, flat, in id order.

use crate::fs::error::{FsError, FsResult};
use crate::segment::{self, SegmentFile};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayoutKind {
    Keys,
    Segments,
}

#[derive(Debug, Clone)]
pub struct Layout {
    pub kind: LayoutKind,
    /// The prefix the mount's root shows: "" or ending in `/`.
    pub root_prefix: String,
}

/// Longest file name Linux accepts (NAME_MAX).
const NAME_MAX: usize = 255;

impl Layout {
    pub fn new(kind: LayoutKind, prefix: Option<&str>) -> FsResult<Layout> {
        let mut root_prefix = match (kind, prefix) {
            (_, Some(p)) => p.trim_start_matches('/').to_string(),
            (LayoutKind::Keys, None) => String::new(),
            (LayoutKind::Segments, None) => segment::SEGMENTS_PREFIX.to_string(),
        };
        if !root_prefix.is_empty() && !root_prefix.ends_with('/') {
            root_prefix.push('/');
        }
        if root_prefix
            .split('/')
            .filter(|c| !c.is_empty())
            .any(|c| !is_valid_component(c))
        {
            return Err(FsError::InvalidArgument(format!(
                "prefix {root_prefix:?} has an invalid component"
            )));
        }
        Ok(Layout { kind, root_prefix })
    }

    /// Whether a name found in a listing is shown. Keys whose components cannot be file names
    /// (empty, `.`, `..`, too long) are never shown, in any layout.
    pub fn shows(&self, name: &str, is_dir: bool) -> bool {
        if !is_valid_component(name) {
            return false;
        }
        match self.kind {
            LayoutKind::Keys => true,
            LayoutKind::Segments => !is_dir && segment::parse_file_name(name).is_some(),
        }
    }

    /// Checks a name a user wants to create (file or directory) in a directory.
    pub fn check_new_name(&self, name: &str, is_dir: bool) -> FsResult<()> {
        if name.len() > NAME_MAX {
            return Err(FsError::NameTooLong);
        }
        if !is_valid_component(name) {
            return Err(FsError::InvalidName(name.to_string()));
        }
        if self.kind == LayoutKind::Segments
            && (is_dir || (segment::parse_file_name(name).is_none() && !is_rsync_temporary(name)))
        {
            tracing::warn!(
                name,
                "refused: the segments layout only holds files named segment-<16 hex digits>.bin or segment-<16 hex digits>.meta.json"
            );
            return Err(FsError::InvalidName(name.to_string()));
        }
        Ok(())
    }

    /// Order of directory entries: segments by id (data before sidecar), keys by name bytes.
    pub fn sort_key(&self, name: &str) -> (u64, u8, String) {
        match (self.kind, segment::parse_file_name(name)) {
            (LayoutKind::Segments, Some((id, file))) => (
                id,
                if file == SegmentFile::Data { 0 } else { 1 },
                name.to_string(),
            ),
            _ => (0, 0, name.to_string()),
        }
    }

    /// The segment id a file in this layout carries, if it is a segment file.
    pub fn segment_id(&self, name: &str) -> Option<u64> {
        match self.kind {
            LayoutKind::Segments => segment::parse_file_name(name).map(|(id, _)| id),
            LayoutKind::Keys => None,
        }
    }
}

/// rsync writes `.<name>.<6 random letters or digits>` and renames it to `<name>` when done;
/// such a temporary of a segment file may be created (it is never listed), so rsync works.
fn is_rsync_temporary(name: &str) -> bool {
    let Some((stem, suffix)) = name.strip_prefix('.').and_then(|n| n.rsplit_once('.')) else {
        return false;
    };
    (1..=16).contains(&suffix.len())
        && suffix.bytes().all(|b| b.is_ascii_alphanumeric())
        && segment::parse_file_name(stem).is_some()
}

pub fn is_valid_component(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && name.len() <= NAME_MAX
        && !name.contains('/')
        && !name.contains('\0')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_layout_hides_only_impossible_names() {
        let layout = Layout::new(LayoutKind::Keys, None).unwrap();
        assert!(layout.shows("a b", false));
        assert!(!layout.shows("..", true));
        assert!(!layout.shows("", true));
        assert!(!layout.shows(&"x".repeat(256), false));
        assert_eq!(
            layout
                .check_new_name(&"x".repeat(256), false)
                .unwrap_err()
                .errno(),
            libc::ENAMETOOLONG
        );
    }

    #[test]
    fn segments_layout_shows_and_accepts_segment_files_only() {
        let layout = Layout::new(LayoutKind::Segments, None).unwrap();
        assert_eq!(layout.root_prefix, "segments/");
        assert!(layout.shows("segment-000000000000002a.bin", false));
        assert!(layout.shows("segment-000000000000002a.meta.json", false));
        assert!(!layout.shows("notes.txt", false));
        assert!(!layout.shows("sub", true));
        assert_eq!(
            layout
                .check_new_name("notes.txt", false)
                .unwrap_err()
                .errno(),
            libc::EINVAL
        );
        assert!(
            layout
                .check_new_name("segment-000000000000002a.bin", false)
                .is_ok()
        );
        assert!(
            layout
                .check_new_name("segment-000000000000002a.bin", true)
                .is_err()
        );
        assert!(
            layout.sort_key("segment-0000000000000002.meta.json")
                < layout.sort_key("segment-000000000000000a.bin")
        );
        assert_eq!(layout.segment_id("segment-000000000000002a.bin"), Some(42));
        assert!(
            layout
                .check_new_name(".segment-000000000000002a.bin.Kc33Qh", false)
                .is_ok()
        );
        assert!(!layout.shows(".segment-000000000000002a.bin.Kc33Qh", false));
        assert!(layout.check_new_name(".notes.txt.Kc33Qh", false).is_err());
        assert!(
            layout
                .check_new_name(".segment-000000000000002a.bin.", false)
                .is_err()
        );
    }

    #[test]
    fn prefixes_are_normalised() {
        assert_eq!(
            Layout::new(LayoutKind::Keys, Some("/data"))
                .unwrap()
                .root_prefix,
            "data/"
        );
        assert!(Layout::new(LayoutKind::Keys, Some("a/../b/")).is_err());
    }
}
