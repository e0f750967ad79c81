//! What this mount has open of one file, in one record: its handles, each in a named state; its
//! write status; the uploads of releases in flight, which a later open awaits; and the deletes
//! that wait for its last close.
//!
//! The record lives in the file's node and changes only through the namespace's transitions,
//! under the namespace's lock, so "is this file open, and how" has one answer at any moment.
//! The handle table (`fs/handles.rs`) maps handle numbers to what each handle holds (a reader,
//! a write handle's data, a directory stream) and nothing else.

use std::collections::BTreeMap;

use tokio::sync::watch;

/// An object to delete once nothing of this mount has its file open, if it is still the
/// version (`etag`) that was unlinked or renamed away.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeferredDelete {
    pub key: String,
    pub etag: Option<String>,
}

/// What a handle was opened for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
}

/// Where a file handle is in its life.
#[derive(Debug, Clone)]
pub enum HandleState {
    /// Open: the program reads or writes through it.
    Active,
    /// A close(2) of one of its descriptors was seen (FLUSH). Its release is likely on its way,
    /// but a duplicate descriptor (`exec 3>log; echo >&3`) may keep it open.
    Flushed,
    /// Its release runs: a writer's last upload is in flight, and ends with `PendingUpload`.
    Releasing(PendingUpload),
}

/// Whether the file's data here is newer than S3's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteStatus {
    /// No write handle of this mount: S3 holds the file as this mount knows it.
    Closed,
    /// Write handles of this mount (or their releases) are open on an object S3 has: the size
    /// and data here are newer than S3's until the last upload lands.
    Open,
    /// Made here and not uploaded yet: the file exists only while it is being written.
    Created,
}

/// A release's last upload, in flight. Opens, renames and chmods of the file await it, so they
/// act on the file as that upload leaves it.
#[derive(Debug, Clone)]
pub struct PendingUpload(watch::Receiver<()>);

/// Held by the release whose upload a [`PendingUpload`] waits for; dropping it ends the wait.
#[derive(Debug)]
pub struct UploadInFlight {
    _sender: watch::Sender<()>,
}

impl PendingUpload {
    fn new() -> (UploadInFlight, PendingUpload) {
        let (sender, receiver) = watch::channel(());
        (UploadInFlight { _sender: sender }, PendingUpload(receiver))
    }

    /// Returns when the release that started the upload is done, whatever its outcome.
    pub async fn finished(mut self) {
        // Nothing is ever sent: the channel closes when the release drops its end.
        while self.0.changed().await.is_ok() {}
    }
}

/// What an operation that must act on a closed file has to wait for (see
/// `Fs::wait_for_releases`).
#[derive(Debug)]
pub enum ReleaseWait {
    /// Nothing: no release is in flight or expected.
    Nothing,
    /// Releases whose last uploads are in flight.
    Uploads(Vec<PendingUpload>),
    /// Every handle saw a close: the kernel's releases are on their way (or a descriptor was
    /// duplicated and stays open).
    Closing,
}

/// The open-file record of one node.
#[derive(Debug, Clone)]
pub struct OpenFile {
    /// File handles by number: what each was opened for and where it is in its life.
    handles: BTreeMap<u64, (Access, HandleState)>,
    status: WriteStatus,
    /// Objects whose DELETE waits for the node's last close here: an unlinked or renamed file
    /// that is open keeps its bytes for its readers and as its writers' base.
    deletes_at_close: Vec<DeferredDelete>,
}

impl OpenFile {
    pub const CLOSED: OpenFile = OpenFile {
        handles: BTreeMap::new(),
        status: WriteStatus::Closed,
        deletes_at_close: Vec::new(),
    };

    /// A file made here, open through its creating handle.
    pub(super) fn created(handle: u64) -> OpenFile {
        OpenFile {
            handles: BTreeMap::from([(handle, (Access::Write, HandleState::Active))]),
            status: WriteStatus::Created,
            deletes_at_close: Vec::new(),
        }
    }

    pub(super) fn opened(&mut self, handle: u64, access: Access) {
        self.handles.insert(handle, (access, HandleState::Active));
        if access == Access::Write && self.status == WriteStatus::Closed {
            self.status = WriteStatus::Open;
        }
    }

    pub(super) fn flushed(&mut self, handle: u64) {
        if let Some((_, state @ HandleState::Active)) = self.handles.get_mut(&handle) {
            *state = HandleState::Flushed;
        }
    }

    /// A writer's release began: its last upload is in flight until the returned value drops.
    /// Also returns the uploads of the releases that began before it, which it awaits before it
    /// uploads, so that the file's last close is also the last upload to land.
    pub(super) fn releasing(
        &mut self,
        handle: u64,
    ) -> Option<(UploadInFlight, Vec<PendingUpload>)> {
        let earlier = self.pending_uploads();
        let (_, state) = self.handles.get_mut(&handle)?;
        let (in_flight, pending) = PendingUpload::new();
        *state = HandleState::Releasing(pending);
        Some((in_flight, earlier))
    }

    fn pending_uploads(&self) -> Vec<PendingUpload> {
        self.handles
            .values()
            .filter_map(|(_, state)| match state {
                HandleState::Releasing(pending) => Some(pending.clone()),
                _ => None,
            })
            .collect()
    }

    /// A handle's release is done. The write status is `Closed` once no writer is left, except
    /// for a file made here that was never uploaded (it is unlinked, or its upload failed).
    pub(super) fn released(&mut self, handle: u64) {
        self.handles.remove(&handle);
        if self.status == WriteStatus::Open && self.writers().next().is_none() {
            self.status = WriteStatus::Closed;
        }
    }

    /// The file's first upload landed: S3 has it now.
    pub(super) fn uploaded(&mut self) {
        self.created_file_settled();
    }

    /// The upload of a file made here failed: no object, and no file.
    pub(super) fn upload_failed(&mut self) -> bool {
        self.created_file_settled()
    }

    /// A file made here is no longer only being written: its upload ended either way. It is
    /// open for writing if a writer is left, else closed. Returns whether it was such a file.
    fn created_file_settled(&mut self) -> bool {
        let was_created = self.status == WriteStatus::Created;
        if was_created {
            self.status = if self.writers().next().is_some() {
                WriteStatus::Open
            } else {
                WriteStatus::Closed
            };
        }
        was_created
    }

    /// Write handles (releases in flight included), by number.
    fn writers(&self) -> impl Iterator<Item = (&u64, &HandleState)> {
        self.handles
            .iter()
            .filter(|(_, (access, _))| *access == Access::Write)
            .map(|(number, (_, state))| (number, state))
    }

    /// Write handles whose release has not begun: the ones a change by path applies to.
    pub fn live_writers(&self) -> Vec<u64> {
        self.writers()
            .filter(|(_, state)| !matches!(state, HandleState::Releasing(_)))
            .map(|(number, _)| *number)
            .collect()
    }

    pub fn status(&self) -> WriteStatus {
        self.status
    }

    pub fn is_open(&self) -> bool {
        !self.handles.is_empty()
    }

    pub fn is_open_for_writing(&self) -> bool {
        self.writers().next().is_some()
    }

    pub fn release_wait(&self) -> ReleaseWait {
        let uploads = self.pending_uploads();
        if !uploads.is_empty() {
            return ReleaseWait::Uploads(uploads);
        }
        let closing = self.is_open()
            && self
                .handles
                .values()
                .all(|(_, state)| matches!(state, HandleState::Flushed));
        if closing {
            ReleaseWait::Closing
        } else {
            ReleaseWait::Nothing
        }
    }

    pub fn deletes_at_close(&self) -> &[DeferredDelete] {
        &self.deletes_at_close
    }

    pub(super) fn wait_for_close(&mut self, delete: DeferredDelete) {
        self.deletes_at_close.push(delete);
    }

    pub(super) fn take_deletes_at_close(&mut self) -> Vec<DeferredDelete> {
        std::mem::take(&mut self.deletes_at_close)
    }

    pub(super) fn forget_deletes_of(&mut self, key: &str) {
        self.deletes_at_close.retain(|d| d.key != key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_writer_goes_active_flushed_releasing_closed() {
        let mut file = OpenFile::CLOSED;
        file.opened(7, Access::Write);
        assert_eq!(file.status(), WriteStatus::Open);
        assert!(matches!(file.release_wait(), ReleaseWait::Nothing));
        file.flushed(7);
        assert!(matches!(file.release_wait(), ReleaseWait::Closing));
        let (in_flight, earlier) = file.releasing(7).expect("the handle is open");
        assert!(earlier.is_empty());
        assert!(matches!(file.release_wait(), ReleaseWait::Uploads(ref u) if u.len() == 1));
        assert!(
            file.live_writers().is_empty(),
            "a releasing writer takes no change"
        );
        assert!(file.is_open_for_writing());
        file.released(7);
        drop(in_flight);
        assert_eq!(file.status(), WriteStatus::Closed);
        assert!(!file.is_open());
    }

    #[test]
    fn a_second_release_awaits_the_first_ones_upload_and_not_the_reverse() {
        let mut file = OpenFile::CLOSED;
        file.opened(1, Access::Write);
        file.opened(2, Access::Write);
        let (first, before_first) = file.releasing(1).expect("open");
        let (_second, before_second) = file.releasing(2).expect("open");
        assert!(
            before_first.is_empty(),
            "the first release waits for no one"
        );
        assert_eq!(
            before_second.len(),
            1,
            "the second awaits the first's upload"
        );
        file.released(1);
        drop(first);
        assert!(matches!(file.release_wait(), ReleaseWait::Uploads(ref u) if u.len() == 1));
    }

    #[test]
    fn a_reader_left_open_is_no_release_to_wait_for() {
        let mut file = OpenFile::CLOSED;
        file.opened(1, Access::Read);
        file.opened(2, Access::Write);
        file.flushed(2);
        assert!(matches!(file.release_wait(), ReleaseWait::Nothing));
        file.flushed(1);
        assert!(matches!(file.release_wait(), ReleaseWait::Closing));
    }

    #[test]
    fn a_created_file_stays_created_until_its_upload_lands() {
        let mut file = OpenFile::created(3);
        assert_eq!(file.status(), WriteStatus::Created);
        file.opened(4, Access::Read);
        assert_eq!(file.status(), WriteStatus::Created);
        file.uploaded();
        assert_eq!(file.status(), WriteStatus::Open);
        file.released(3);
        assert_eq!(file.status(), WriteStatus::Closed);
        let mut failed = OpenFile::created(5);
        assert!(failed.upload_failed());
        assert!(
            !failed.upload_failed(),
            "only a created file's failure unmakes it"
        );
    }

    #[test]
    fn a_pending_upload_ends_when_its_release_drops_it() {
        use std::future::Future;
        use std::task::{Context, Waker};
        let mut file = OpenFile::CLOSED;
        file.opened(9, Access::Write);
        let (in_flight, _) = file.releasing(9).expect("the handle is open");
        let ReleaseWait::Uploads(mut pending) = file.release_wait() else {
            panic!("the release is in flight");
        };
        let mut finished = Box::pin(pending.remove(0).finished());
        let mut context = Context::from_waker(Waker::noop());
        assert!(finished.as_mut().poll(&mut context).is_pending());
        drop(in_flight);
        assert!(finished.as_mut().poll(&mut context).is_ready());
    }
}
