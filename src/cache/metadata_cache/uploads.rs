//! Objects this machine wrote or copied, waiting for a listing to tell their LastModified.
//!
//! PutObject's and CopyObject's answers (as the store reports them) carry the ETag but no
//! LastModified, so what this mount wrote cannot be a version entry at once. It is kept as an
//! *upload*: key, ETag, size, metadata, Content-Type, and the local time window the request ran
//! in (from before its first request to after its answer). The first listing that shows the key
//! with that ETag and size (a copy's size is not known to it: its ETag stands for the data) and a LastModified inside the window, widened by [`SLACK_SECS`] on
//! each side, adopts it as a version entry. Any other client's object fails that test: new data
//! has another ETag or size, and a CopyObject onto itself (which keeps the ETag) gets a
//! LastModified after the window. What remains trusted is a replacement with the very same
//! bytes and size whose LastModified falls within a second of our own upload's answer.

use std::time::SystemTime;

use super::StoredMetadata;
use super::record::{seconds, seconds_up};

/// Seconds the window is widened by on each side, for S3 and this machine's clock disagreeing
/// a little (NTP keeps them within milliseconds). A clock further off only makes adoption
/// fail, and the object costs its one HEAD, except that a clock running ahead of S3 widens the
/// trusted span after the upload by as much.
pub const SLACK_SECS: i64 = 1;

/// An object this mount wrote or copied, as it told the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnUpload {
    pub key: String,
    pub etag: String,
    /// `None` for a copy, whose size the ETag stands for (the copy's data is its source's).
    pub size: Option<u64>,
    pub stored: StoredMetadata,
    /// Before the upload's first request (a multipart object's LastModified is when its
    /// upload was created).
    pub started: SystemTime,
    /// After its answer.
    pub finished: SystemTime,
}

impl OwnUpload {
    /// The window as stored: whole seconds, the start rounded down and the end up.
    pub fn window(&self) -> (i64, i64) {
        (seconds(self.started), seconds_up(self.finished))
    }
}

/// What a listed LastModified says of a recorded upload with the same key, ETag and size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// It is that upload: adopt it.
    Ours,
    /// Some later write replaced it: the record can go.
    Superseded,
    /// Not ours, but not proof that ours is gone either (a listing older than the upload).
    Unknown,
}

/// Judges a listed version (`same_data`: ETag and size equal the upload's) against the
/// upload's window in seconds.
pub fn judge(same_data: bool, listed: i64, window: (i64, i64)) -> Verdict {
    let (started, finished) = window;
    let inside = listed >= started - SLACK_SECS && listed <= finished + SLACK_SECS;
    if same_data && inside {
        Verdict::Ours
    } else if listed > finished + SLACK_SECS {
        Verdict::Superseded
    } else {
        Verdict::Unknown
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_same_data_inside_the_window_is_ours() {
        let window = (100, 103);
        assert_eq!(judge(true, 100, window), Verdict::Ours);
        assert_eq!(judge(true, 99, window), Verdict::Ours, "slack before");
        assert_eq!(judge(true, 104, window), Verdict::Ours, "slack after");
        assert_eq!(
            judge(true, 105, window),
            Verdict::Superseded,
            "a copy onto itself after the upload"
        );
        assert_eq!(judge(false, 101, window), Verdict::Unknown);
        assert_eq!(judge(false, 200, window), Verdict::Superseded);
        assert_eq!(judge(true, 98, window), Verdict::Unknown, "older than ours");
    }
}
