//! AbortMultipartUpload calls that failed (typically because S3 was unreachable) are retried in
//! the background with capped exponential backoff until they succeed or the process ends: an
//! upload left open costs storage and is invisible to every listing of objects. The ones still
//! pending are listed by [`pending_aborts`], which the mount logs at unmount with their ids.

use std::collections::BTreeSet;
use std::sync::{Arc, LazyLock, Mutex, MutexGuard};
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::sync::Notify;

use crate::store::ObjectStore;

/// First pause before a background retry; it doubles up to [`MAX_DELAY`].
const FIRST_DELAY: Duration = Duration::from_millis(500);
const MAX_DELAY: Duration = Duration::from_secs(30);

/// (Upload id, key) of every abort being retried.
static PENDING: Mutex<BTreeSet<(String, String)>> = Mutex::new(BTreeSet::new());
/// Woken whenever an abort leaves [`PENDING`], for [`settle_pending_aborts`] to look again.
static SETTLED: LazyLock<Notify> = LazyLock::new(Notify::new);

fn pending() -> MutexGuard<'static, BTreeSet<(String, String)>> {
    // Only ids are kept here: a panic elsewhere cannot leave the map inconsistent.
    PENDING.lock().unwrap_or_else(|poison| poison.into_inner())
}

/// `(key, upload id)` of every abort still being retried, sorted by upload id.
pub fn pending_aborts() -> Vec<(String, String)> {
    pending()
        .iter()
        .map(|(id, key)| (key.clone(), id.clone()))
        .collect()
}

/// Starts retrying the abort of `upload_id` on the current runtime. Outside any runtime nothing
/// can be retried: the upload is reported as leaked.
pub(super) fn retry_in_background(store: Arc<dyn ObjectStore>, key: &str, upload_id: &str) {
    retry_with_delay(store, key, upload_id, FIRST_DELAY);
}

fn retry_with_delay(
    store: Arc<dyn ObjectStore>,
    key: &str,
    upload_id: &str,
    first_delay: Duration,
) {
    let Ok(runtime) = Handle::try_current() else {
        tracing::warn!(
            key,
            upload_id,
            "no runtime to retry the abort on: upload left on S3"
        );
        return;
    };
    let entry = (upload_id.to_string(), key.to_string());
    if !pending().insert(entry.clone()) {
        return;
    }
    let (key, upload_id) = (key.to_string(), upload_id.to_string());
    runtime.spawn(async move {
        let mut delay = first_delay;
        let mut attempts = 0u32;
        loop {
            tokio::time::sleep(delay).await;
            attempts += 1;
            match store.abort_multipart(&key, &upload_id).await {
                Ok(()) => {
                    tracing::info!(
                        key,
                        upload_id,
                        attempts,
                        "aborted multipart upload after retrying"
                    );
                    break;
                }
                Err(error) if error.is_not_found() => break,
                Err(error) => {
                    tracing::debug!(key, upload_id, attempts, %error, "abort still failing");
                    delay = (delay * 2).min(MAX_DELAY);
                }
            }
        }
        pending().remove(&entry);
        SETTLED.notify_waiters();
    });
}

/// Waits up to `grace` for the background aborts to finish, then logs each one still pending
/// with its upload id (for `scribefs uploads abort` or a lifecycle rule) and returns them.
pub async fn settle_pending_aborts(grace: Duration) -> Vec<(String, String)> {
    let deadline = tokio::time::Instant::now() + grace;
    loop {
        // Registered before the check, so that an abort settling in between still wakes us.
        let settled = SETTLED.notified();
        let mut settled = std::pin::pin!(settled);
        settled.as_mut().enable();
        if pending().is_empty() {
            break;
        }
        if tokio::time::timeout_at(deadline, settled).await.is_err() {
            break;
        }
    }
    let left = pending_aborts();
    for (key, upload_id) in &left {
        tracing::warn!(
            key,
            upload_id,
            "multipart upload still not aborted at exit: run `scribefs uploads abort` or rely on a lifecycle rule"
        );
    }
    left
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::faulty::{FaultyStore, Op, injected_error};
    use crate::store::memory::MemoryStore;
    use crate::store::{ObjectStore, PutOptions};

    const FAST: Duration = Duration::from_millis(10);

    #[tokio::test]
    async fn a_failed_abort_is_retried_until_it_succeeds() {
        let store = Arc::new(FaultyStore::new(MemoryStore::new()));
        let id = store
            .inner()
            .create_multipart("k", PutOptions::default())
            .await
            .unwrap();
        store.fail_next(Op::AbortMultipart, 3, injected_error);
        let dyn_store: Arc<dyn ObjectStore> = store.clone();
        retry_with_delay(dyn_store, "k", &id, FAST);
        assert!(pending_aborts().contains(&("k".to_string(), id.clone())));
        let entry = ("k".to_string(), id.clone());
        // Other tests' aborts may be pending too: wait for this one only (bounded).
        for _ in 0..500 {
            if !pending_aborts().contains(&entry) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(!pending_aborts().contains(&entry));
        assert_eq!(store.inner().pending_uploads(), 0);
        assert_eq!(store.calls(Op::AbortMultipart), 4);
    }

    #[tokio::test]
    async fn an_abort_that_keeps_failing_is_reported_at_exit() {
        let store = Arc::new(FaultyStore::new(MemoryStore::new()));
        let id = store
            .inner()
            .create_multipart("stuck", PutOptions::default())
            .await
            .unwrap();
        store.fail_always(Op::AbortMultipart, injected_error);
        retry_with_delay(store.clone(), "stuck", &id, FAST);
        let left = settle_pending_aborts(Duration::from_millis(500)).await;
        assert!(left.contains(&("stuck".to_string(), id)), "{left:?}");
        assert_eq!(store.inner().pending_uploads(), 1);
        // Backoff doubles: 10, 20, 40, 80, 160 ms fit in 500 ms, 320 more do not.
        let calls = store.calls(Op::AbortMultipart);
        assert!((3..=6).contains(&calls), "{calls} attempts");
    }
}
