//! Retries with exponential backoff for any [`ObjectStore`], and GET bodies that survive broken
//! connections.
//!
//! A call is retried only when [`StoreError::is_retryable`] says so (throttling, 5xx, timeouts,
//! broken and refused connections); 400/403/404/412 come back at once. Pauses double from 0.1 s
//! up to [`MAX_BACKOFF`], each drawn uniformly below its nominal value (full jitter). A call
//! that keeps failing ends in [`StoreError::RetriesExhausted`] with the number of attempts
//! made, when its attempts are spent or its time ([`RetryPolicy::total`], twice the request
//! timeout for the CLI and the mount) is up, whichever comes first.
//!
//! Gone versus stumbling: a server that answers badly (5xx, throttling), cuts a transfer or
//! times out is stumbling and gets every attempt. One that no connection reaches is gone:
//! after [`GONE_AFTER`] attempts in a row that got no answer, the last of them refused, the
//! call ends (within 0.3 s of pauses), so a dead server surfaces as EIO in about a second
//! instead of the 16 s on average that all the pauses take. Bodies of PUT and UploadPart are
//! `Bytes`, so sending them again costs no copy.
//!
//! A GET body that breaks mid-way is resumed: the wrapper's stream asks for the rest with a
//! ranged GET carrying `If-Match` of the ETag seen first, so a resumed stream never mixes two
//! versions of an object (a changed object ends the stream with PreconditionFailed). Resumptions
//! draw on the same budget of attempts as the GET that opened the stream; the time bound
//! starts again at each break (a long body may take longer than any one call should).

use std::future::Future;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use md5::{Digest, Md5};

use super::config::S3Config;
use super::{
    ByteStream, CompletedPart, CopyMetadata, GetObjectOutput, GetRequest, ListPage, ListRequest,
    ObjectMeta, ObjectStore, PendingUpload, PutOptions, PutOutput, StoreError, StoreResult,
};

/// Backoff never grows beyond this, however many retries are allowed.
pub const MAX_BACKOFF: Duration = Duration::from_secs(10);
pub const DEFAULT_BASE_DELAY: Duration = Duration::from_millis(100);
/// Attempts in a row without an answer (broken or refused connections), the last refused,
/// that end a call: nobody listens at the endpoint any more. A server that resets or drops
/// requests but still accepts connections keeps every attempt, as injected faults do.
pub const GONE_AFTER: u32 = 3;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Extra attempts after the first.
    pub max_retries: u32,
    /// The nominal delay before the first retry; it doubles for each further one.
    pub base_delay: Duration,
    /// The longest one call may take, its attempts and the pauses between them included: an
    /// attempt still running when it passes is given up as a timeout, and no retry is begun
    /// whose pause would end past it. `None`: only `max_retries` (and the store's own timeout
    /// of an attempt) bound a call.
    pub total: Option<Duration>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: super::config::DEFAULT_MAX_RETRIES,
            base_delay: DEFAULT_BASE_DELAY,
            total: None,
        }
    }
}

impl RetryPolicy {
    /// `config.max_retries` extra attempts, and a call bounded by twice the timeout of one
    /// attempt: a first attempt that hangs until its timeout (a connection dropped silently on
    /// the way) still gets one more, on a fresh connection, and a server that accepts
    /// connections but never answers fails each call within `2 × timeout_secs`.
    pub fn from_config(config: &S3Config) -> Self {
        RetryPolicy {
            max_retries: config.max_retries,
            total: Some(Duration::from_secs(config.timeout_secs.saturating_mul(2))),
            ..Default::default()
        }
    }

    /// The pause before retry number `attempt` (1 for the first retry), with full jitter:
    /// uniform in `[0, nominal]`, where the nominal pause is `base_delay × 2^(attempt-1)`
    /// capped at [`MAX_BACKOFF`]. Clients failing together then spread their retries over the
    /// whole interval instead of retrying together (AWS's "full jitter", which mountpoint-s3
    /// uses too); on average a pause is half its nominal value.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let nominal = self.nominal_backoff(attempt);
        let nanos = u64::try_from(nominal.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(fastrand::u64(0..=nanos))
    }

    /// The upper end of [`backoff`](Self::backoff)'s range for retry number `attempt`.
    pub fn nominal_backoff(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(1).min(31);
        self.base_delay
            .saturating_mul(1 << doublings)
            .min(MAX_BACKOFF)
    }

    /// The most time all the pauses of one call can add up to: the sum of every nominal
    /// pause (the jitter only shortens them).
    pub fn max_total_backoff(&self) -> Duration {
        (1..=self.max_retries)
            .map(|n| self.nominal_backoff(n))
            .sum()
    }

    /// Total attempts allowed for one call.
    fn max_attempts(&self) -> u32 {
        self.max_retries.saturating_add(1)
    }
}

/// Adds retries (and GET-body resumption) to any store.
pub struct Retrying<S> {
    inner: Arc<S>,
    policy: RetryPolicy,
}

impl<S: ObjectStore> Retrying<S> {
    pub fn new(inner: S, policy: RetryPolicy) -> Self {
        Retrying::shared(Arc::new(inner), policy)
    }

    /// Retries over a store other wrappers share (a mount checks its bucket with a policy of
    /// its own over the same connections).
    pub fn shared(inner: Arc<S>, policy: RetryPolicy) -> Self {
        Retrying { inner, policy }
    }

    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// Whether the listing holds `marker` itself as an object (`None`: the LIST failed too).
    async fn marker_is_listed(&self, marker: &str) -> Option<bool> {
        let request = ListRequest {
            prefix: marker.to_string(),
            max_keys: Some(1),
            ..ListRequest::default()
        };
        let page = self.inner.list(request).await.ok()?;
        Some(
            page.objects
                .first()
                .is_some_and(|object| object.key == marker),
        )
    }

    pub fn policy(&self) -> &RetryPolicy {
        &self.policy
    }

    /// Whether the key holds exactly the bytes of `body` (its MD5 ETag): then an earlier PUT
    /// of them succeeded and only its answer was lost. `Ok(None)`: it does not, and the error
    /// that made us look stands. The HEAD can fail too; its error is returned, so that a
    /// transient one is retried like the call itself instead of making that error final.
    async fn put_earlier(&self, key: &str, body: &[u8]) -> StoreResult<Option<PutOutput>> {
        use md5::Digest;
        let expected = super::checksum::hex(&md5::Md5::digest(body));
        let Some(head) = self.head_if_exists(key).await? else {
            return Ok(None);
        };
        Ok((super::checksum::etag_md5(&head.etag) == Some(expected))
            .then_some(PutOutput { etag: head.etag }))
    }

    /// Whether `key` now holds exactly the object completing `parts` would make: S3, MinIO
    /// and moto name a multipart object by the MD5 of its parts' MD5s and the part count.
    /// Errors as for [`put_earlier`](Self::put_earlier).
    async fn completed_earlier(
        &self,
        key: &str,
        parts: &[CompletedPart],
    ) -> StoreResult<Option<PutOutput>> {
        let Some(expected) = multipart_etag(parts) else {
            return Ok(None);
        };
        let Some(head) = self.head_if_exists(key).await? else {
            return Ok(None);
        };
        Ok((head.etag == expected).then_some(PutOutput { etag: head.etag }))
    }

    async fn head_if_exists(&self, key: &str) -> StoreResult<Option<ObjectMeta>> {
        match self.inner.head(key).await {
            Ok(meta) => Ok(Some(meta)),
            Err(err) if err.is_not_found() => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// Runs `call` until it succeeds, fails for good, or the budget is spent.
    async fn run<T, F, Fut>(&self, op: &'static str, key: &str, call: F) -> StoreResult<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = StoreResult<T>>,
    {
        retry_loop(&self.policy, 0, op, key, call)
            .await
            .map(|(value, _)| value)
    }
}

/// The retry loop, starting with `attempts_before` attempts already spent. Returns the value
/// and the total attempts made, so a resumed GET body can keep counting.
async fn retry_loop<T, F, Fut>(
    policy: &RetryPolicy,
    attempts_before: u32,
    op: &'static str,
    key: &str,
    mut call: F,
) -> StoreResult<(T, u32)>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = StoreResult<T>>,
{
    let mut attempts = attempts_before;
    // Attempts in a row that got no answer at all (see GONE_AFTER).
    let mut unanswered = 0;
    let started = tokio::time::Instant::now();
    let bound = policy.total.map(|total| (started + total, total));
    loop {
        attempts += 1;
        let result = match bound {
            // The store bounds an attempt by its own timeout; the deadline can only shorten it.
            Some((deadline, total)) => match tokio::time::timeout_at(deadline, call()).await {
                Ok(result) => result,
                Err(_) => Err(StoreError::Timeout(total)),
            },
            None => call().await,
        };
        let err = match result {
            Ok(value) => return Ok((value, attempts)),
            Err(err) if !err.is_retryable() => {
                if matches!(err, StoreError::AccessDenied(_)) {
                    report_failure(op, key, attempts, started.elapsed(), &err);
                }
                return Err(err);
            }
            Err(err) => err,
        };
        unanswered = match err {
            StoreError::Connection(_) | StoreError::Unreachable(_) => unanswered + 1,
            _ => 0,
        };
        let gone = unanswered >= GONE_AFTER && matches!(err, StoreError::Unreachable(_));
        let delay = policy.backoff(attempts);
        // A pause that would end past the deadline leaves no time for the attempt after it.
        let out_of_time = bound.is_some_and(|(d, _)| tokio::time::Instant::now() + delay >= d);
        if attempts >= policy.max_attempts() || out_of_time || gone {
            report_failure(op, key, attempts, started.elapsed(), &err);
            return Err(StoreError::RetriesExhausted {
                attempts,
                source: Box::new(err),
            });
        }
        tracing::warn!(op, key, attempt = attempts, ?delay, error = %err, "retrying S3 call");
        tokio::time::sleep(delay).await;
    }
}

/// The one warning for a request that failed for good: what it was, what the server last said,
/// how many attempts and how long they took.
fn report_failure(op: &str, key: &str, attempts: u32, latency: Duration, err: &StoreError) {
    let status = match err.root() {
        StoreError::Server { status, .. } => status.to_string(),
        StoreError::Throttled(_) => "throttled".to_string(),
        StoreError::AccessDenied(_) => "403".to_string(),
        StoreError::Timeout(_) => "timeout".to_string(),
        StoreError::Connection(_) => "connection".to_string(),
        StoreError::Unreachable(_) => "unreachable".to_string(),
        _ => "error".to_string(),
    };
    tracing::warn!(
        op,
        key,
        status,
        attempts,
        latency_ms = latency.as_millis() as u64,
        error = %err,
        "S3 request failed"
    );
}

#[async_trait]
impl<S: ObjectStore> ObjectStore for Retrying<S> {
    async fn head(&self, key: &str) -> StoreResult<ObjectMeta> {
        if !key.ends_with('/') {
            return self.run("HEAD", key, || self.inner.head(key)).await;
        }
        // A directory marker. File-backed servers (s3s-fs) keep `dir/` as a directory on their
        // disk and answer its HEAD with a bare 500 (a HEAD has no body to explain it): retried
        // 10 times, every listing of such a directory would wait 16 s for metadata that does
        // not exist. So a server error asks the listing whether the marker is an object at
        // all: not listed, it is not found (as AWS would say); listed, the error was a fault
        // and the HEAD is retried as any other. One LIST, only after a 5xx on a marker.
        let listing_answered = AtomicBool::new(false);
        self.run("HEAD", key, || async {
            let result = self.inner.head(key).await;
            if !matches!(result, Err(StoreError::Server { .. }))
                || listing_answered.load(Ordering::Relaxed)
            {
                return result;
            }
            match self.marker_is_listed(key).await {
                Some(listed) => {
                    listing_answered.store(true, Ordering::Relaxed);
                    if listed {
                        result
                    } else {
                        Err(StoreError::NotFound(key.to_string()))
                    }
                }
                None => result,
            }
        })
        .await
    }

    async fn get(&self, request: GetRequest) -> StoreResult<GetObjectOutput> {
        let open = || {
            retry_loop(&self.policy, 0, "GET", &request.key, || {
                self.inner.get(request.clone())
            })
        };
        // Bytes damaged on the way are fetched once more with a fresh GET; damaged again, the
        // object itself (or something in the path) is bad, and more attempts would not help.
        let (output, attempts) = match open().await {
            Err(err) if err.is_checksum_mismatch() => {
                tracing::warn!(key = %request.key, error = %err, "GET failed its checksum; fetching it once more");
                open().await?
            }
            other => other?,
        };
        let resume = Resume {
            store: Arc::clone(&self.inner),
            policy: self.policy.clone(),
            key: request.key,
            if_match: request.if_match.unwrap_or_else(|| output.meta.etag.clone()),
            position: output.range.start,
            end: output.range.end,
            attempts,
        };
        let body = resumable_body(output.body, resume);
        Ok(GetObjectOutput {
            meta: output.meta,
            range: output.range,
            body,
        })
    }

    async fn put(&self, key: &str, body: Bytes, options: PutOptions) -> StoreResult<PutOutput> {
        let mut tried = false;
        self.run("PUT", key, || {
            let retry = std::mem::replace(&mut tried, true);
            let (body, options) = (body.clone(), options.clone());
            async move {
                let exclusive = options.if_none_match;
                match self.inner.put(key, body.clone(), options).await {
                    // An exclusive create whose earlier answer was lost finds its own object.
                    Err(err @ StoreError::PreconditionFailed(_)) if retry && exclusive => {
                        settle(err, self.put_earlier(key, &body).await)
                    }
                    other => other,
                }
            }
        })
        .await
    }

    async fn create_multipart(&self, key: &str, options: PutOptions) -> StoreResult<String> {
        self.run("CreateMultipartUpload", key, || {
            self.inner.create_multipart(key, options.clone())
        })
        .await
    }

    async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        part_number: u32,
        body: Bytes,
    ) -> StoreResult<CompletedPart> {
        self.run("UploadPart", key, || {
            self.inner
                .upload_part(key, upload_id, part_number, body.clone())
        })
        .await
    }

    async fn complete_multipart(
        &self,
        key: &str,
        upload_id: &str,
        parts: Vec<CompletedPart>,
        if_none_match: bool,
    ) -> StoreResult<PutOutput> {
        let mut tried = false;
        self.run("CompleteMultipartUpload", key, || {
            let retry = std::mem::replace(&mut tried, true);
            let parts = parts.clone();
            async move {
                match self
                    .inner
                    .complete_multipart(key, upload_id, parts.clone(), if_none_match)
                    .await
                {
                    // An earlier attempt whose answer was lost may have completed the upload
                    // (then the upload is gone, or an exclusive create finds the key taken).
                    Err(err)
                        if retry
                            && (err.is_not_found()
                                || matches!(err, StoreError::PreconditionFailed(_))) =>
                    {
                        settle(err, self.completed_earlier(key, &parts).await)
                    }
                    other => other,
                }
            }
        })
        .await
    }

    async fn abort_multipart(&self, key: &str, upload_id: &str) -> StoreResult<()> {
        let mut tried = false;
        self.run("AbortMultipartUpload", key, || {
            let retry = std::mem::replace(&mut tried, true);
            async move {
                match self.inner.abort_multipart(key, upload_id).await {
                    // An earlier attempt whose answer was lost may already have aborted it.
                    Err(err) if retry && err.is_not_found() => Ok(()),
                    other => other,
                }
            }
        })
        .await
    }

    async fn copy(
        &self,
        source_key: &str,
        dest_key: &str,
        metadata: CopyMetadata,
    ) -> StoreResult<PutOutput> {
        self.run("CopyObject", source_key, || {
            self.inner.copy(source_key, dest_key, metadata.clone())
        })
        .await
    }

    async fn delete(&self, key: &str) -> StoreResult<()> {
        self.run("DELETE", key, || self.inner.delete(key)).await
    }

    async fn list(&self, request: ListRequest) -> StoreResult<ListPage> {
        self.run("LIST", &request.prefix, || self.inner.list(request.clone()))
            .await
    }

    async fn head_bucket(&self) -> StoreResult<()> {
        self.run("HeadBucket", "", || self.inner.head_bucket())
            .await
    }

    async fn list_uploads(&self, prefix: &str) -> StoreResult<Vec<PendingUpload>> {
        self.run("ListMultipartUploads", prefix, || {
            self.inner.list_uploads(prefix)
        })
        .await
    }
}

/// The outcome of a retried write that failed with `err` as a lost earlier success would:
/// that success if the object shows it, a transient error of the look itself (to be retried),
/// or `err`.
fn settle(err: StoreError, earlier: StoreResult<Option<PutOutput>>) -> StoreResult<PutOutput> {
    match earlier {
        Ok(Some(output)) => Ok(output),
        Err(look) if look.is_retryable() => Err(look),
        Ok(None) | Err(_) => Err(err),
    }
}

/// The ETag S3 gives the object completed from `parts`, if every part ETag is a plain MD5.
fn multipart_etag(parts: &[CompletedPart]) -> Option<String> {
    let mut digests = Vec::with_capacity(parts.len() * 16);
    for part in parts {
        let hex = part.etag.trim_matches('"');
        if hex.len() != 32 {
            return None;
        }
        for pair in hex.as_bytes().chunks(2) {
            let pair = std::str::from_utf8(pair).ok()?;
            digests.push(u8::from_str_radix(pair, 16).ok()?);
        }
    }
    let digest: String = Md5::digest(&digests)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Some(format!("\"{digest}-{}\"", parts.len()))
}

/// What a GET body needs to fetch the rest of itself.
struct Resume<S> {
    store: Arc<S>,
    policy: RetryPolicy,
    key: String,
    if_match: String,
    /// The next byte the reader expects.
    position: u64,
    end: u64,
    /// Attempts spent so far on this GET, opening included.
    attempts: u32,
}

impl<S: ObjectStore> Resume<S> {
    /// Called when the body broke at `position` with `err`: opens the rest, or says why not.
    async fn reopen(&mut self, err: StoreError) -> StoreResult<ByteStream> {
        if !err.is_retryable() {
            return Err(err);
        }
        if self.attempts >= self.policy.max_attempts() {
            report_failure("GET (body)", &self.key, self.attempts, Duration::ZERO, &err);
            return Err(StoreError::RetriesExhausted {
                attempts: self.attempts,
                source: Box::new(err),
            });
        }
        let delay = self.policy.backoff(self.attempts);
        tracing::warn!(
            key = %self.key, at = self.position, attempt = self.attempts, ?delay, error = %err,
            "GET body broke; resuming"
        );
        tokio::time::sleep(delay).await;
        let request = GetRequest {
            key: self.key.clone(),
            range: Some(self.position..self.end),
            if_match: Some(self.if_match.clone()),
        };
        let store = Arc::clone(&self.store);
        let (output, attempts) = retry_loop(
            &self.policy,
            self.attempts,
            "GET (resume)",
            &self.key,
            || store.get(request.clone()),
        )
        .await?;
        self.attempts = attempts;
        skip_to(output, self.position)
    }
}

/// The body of `output` from byte `position` on: a server that ignored the Range header sent
/// bytes the reader already has.
fn skip_to(output: GetObjectOutput, position: u64) -> StoreResult<ByteStream> {
    let Range { start, .. } = output.range;
    if start > position {
        return Err(StoreError::Storage(format!(
            "resumed GET of {} started at byte {start}, not {position}",
            output.meta.key
        )));
    }
    let mut skip = position - start;
    Ok(Box::pin(output.body.filter_map(move |chunk| {
        let chunk = chunk.map(|mut bytes| {
            let cut = skip.min(bytes.len() as u64) as usize;
            skip -= cut as u64;
            let _ = bytes.split_to(cut);
            bytes
        });
        futures::future::ready(match chunk {
            Ok(bytes) if bytes.is_empty() => None,
            other => Some(other),
        })
    })))
}

/// The body stream handed to the caller: passes chunks through and, when the inner body breaks
/// (or ends before the range does), continues it with a fresh ranged GET.
fn resumable_body<S: ObjectStore>(body: ByteStream, resume: Resume<S>) -> ByteStream {
    let state = Some((body, resume));
    Box::pin(
        futures::stream::unfold(state, |state| async move {
            let (mut body, mut resume) = state?;
            loop {
                let err = match body.next().await {
                    Some(Ok(chunk)) => {
                        resume.position += chunk.len() as u64;
                        return Some((Ok(chunk), Some((body, resume))));
                    }
                    None if resume.position >= resume.end => return None,
                    None => StoreError::Connection(format!(
                        "GET body of {} ended at byte {} of {}",
                        resume.key, resume.position, resume.end
                    )),
                    Some(Err(err)) => err,
                };
                match resume.reopen(err).await {
                    Ok(rest) => body = rest,
                    Err(err) => return Some((Err(err), None)),
                }
            }
        })
        .fuse(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::faulty::{FaultyStore, Op};
    use crate::store::memory::MemoryStore;
    use crate::store::{get_bytes, list_all};

    fn fast(max_retries: u32) -> RetryPolicy {
        RetryPolicy {
            max_retries,
            base_delay: Duration::from_millis(1),
            total: None,
        }
    }

    /// A mount's policy with the default request timeout (30 s).
    fn mount_policy() -> RetryPolicy {
        RetryPolicy::from_config(&S3Config {
            max_retries: crate::store::config::MOUNT_MAX_RETRIES,
            ..S3Config::default()
        })
    }

    fn connection_reset() -> StoreError {
        StoreError::Connection("injected reset".into())
    }

    fn pattern(len: usize) -> Bytes {
        (0..len)
            .map(|i| (i * 7 % 251) as u8)
            .collect::<Vec<u8>>()
            .into()
    }

    async fn store_with(key: &str, data: Bytes) -> FaultyStore<MemoryStore> {
        let memory = MemoryStore::new();
        memory.put(key, data, PutOptions::default()).await.unwrap();
        FaultyStore::new(memory)
    }

    #[test]
    fn backoff_is_full_jitter_below_the_doubling_nominal() {
        let policy = RetryPolicy {
            max_retries: 10,
            base_delay: Duration::from_millis(100),
            total: None,
        };
        for attempt in 1..=7u32 {
            let nominal = Duration::from_millis(100 * (1 << (attempt - 1)));
            assert_eq!(policy.nominal_backoff(attempt), nominal);
            let delays: Vec<Duration> = (0..2000).map(|_| policy.backoff(attempt)).collect();
            assert!(delays.iter().all(|d| *d <= nominal), "attempt {attempt}");
            // Full jitter spreads over the whole of [0, nominal]: a pause drawn from its upper
            // half only (the old "equal jitter") never lands in the first quarter. Either end
            // missed by 2000 uniform draws has probability 0.75^2000.
            assert!(delays.iter().any(|d| *d < nominal / 4), "attempt {attempt}");
            assert!(
                delays.iter().any(|d| *d > nominal * 3 / 4),
                "attempt {attempt}"
            );
        }
    }

    #[test]
    fn backoff_is_capped() {
        let policy = RetryPolicy {
            max_retries: 100,
            base_delay: Duration::from_millis(100),
            total: None,
        };
        for attempt in [8, 9, 20, 40, 100, u32::MAX] {
            assert_eq!(policy.nominal_backoff(attempt), MAX_BACKOFF, "{attempt}");
            let delays: Vec<Duration> = (0..500).map(|_| policy.backoff(attempt)).collect();
            assert!(delays.iter().all(|d| *d <= MAX_BACKOFF), "{attempt}");
            assert!(
                delays.iter().any(|d| *d > MAX_BACKOFF * 9 / 10),
                "{attempt}"
            );
        }
    }

    #[test]
    fn a_mount_makes_10_attempts_whose_pauses_add_up_to_32_7_s_at_most() {
        let policy = mount_policy();
        assert_eq!(policy.max_attempts(), 10);
        // 0.1 + 0.2 + 0.4 + 0.8 + 1.6 + 3.2 + 6.4 + 10 + 10 s.
        assert_eq!(policy.max_total_backoff(), Duration::from_millis(32_700));
        assert_eq!(policy.total, Some(Duration::from_secs(60)));
        // The commands keep 3 retries; their calls are bounded the same way.
        let command = RetryPolicy::from_config(&S3Config::default());
        assert_eq!((command.max_retries, command.total), (3, policy.total));
    }

    fn refused() -> StoreError {
        StoreError::Unreachable("injected: connection refused".into())
    }

    fn server_error() -> StoreError {
        StoreError::Server {
            status: 503,
            message: "injected".into(),
        }
    }

    /// The attempts `store.head("k")` made before it gave up, and the error it gave up with.
    async fn attempts_to_give_up(store: &Retrying<FaultyStore<MemoryStore>>) -> (u32, StoreError) {
        let err = store.head("k").await.unwrap_err();
        let StoreError::RetriesExhausted { attempts, .. } = &err else {
            panic!("{err:?}")
        };
        assert_eq!(store.inner().calls(Op::Head), *attempts);
        (*attempts, err)
    }

    /// A server that refuses every connection is gone: the call ends after 3 attempts, its
    /// pauses (0.1 and 0.2 s nominal) all the time it takes, not the 10 attempts and 16 s on
    /// average a stumbling server gets.
    #[tokio::test(start_paused = true)]
    async fn a_refusing_server_is_gone_after_3_attempts_within_0_3_s() {
        let faulty = store_with("k", Bytes::from_static(b"v")).await;
        faulty.fail_always(Op::Head, refused);
        let store = Retrying::new(faulty, mount_policy());
        let started = tokio::time::Instant::now();
        let (attempts, err) = attempts_to_give_up(&store).await;
        assert_eq!(attempts, GONE_AFTER);
        assert_eq!(GONE_AFTER, 3);
        assert!(matches!(err.root(), StoreError::Unreachable(_)), "{err:?}");
        let took = started.elapsed();
        assert!(took <= Duration::from_millis(300), "{took:?}");
    }

    /// A server killed during a call: the attempt in flight breaks, the next ones are refused.
    /// Gone after 3 attempts too.
    #[tokio::test(start_paused = true)]
    async fn a_server_killed_mid_call_is_gone_after_3_attempts() {
        let faulty = store_with("k", Bytes::from_static(b"v")).await;
        faulty.fail_call(Op::Head, 1, connection_reset);
        faulty.fail_always(Op::Head, refused);
        let store = Retrying::new(faulty, mount_policy());
        let (attempts, err) = attempts_to_give_up(&store).await;
        assert_eq!(attempts, 3);
        assert!(matches!(err.root(), StoreError::Unreachable(_)), "{err:?}");
    }

    /// A server that still accepts connections but drops or resets every request is
    /// stumbling, as injected faults are: all 10 attempts. So are 5xx and timeouts, and a
    /// refusal between answers never ends a call early: only refusals in a row do.
    #[tokio::test(start_paused = true)]
    async fn resets_5xx_timeouts_and_refusals_between_answers_keep_all_10_attempts() {
        let timeout = || StoreError::Timeout(Duration::from_secs(1));
        let throttled = || StoreError::Throttled("slow down".into());
        let makers: [fn() -> StoreError; 4] = [connection_reset, server_error, timeout, throttled];
        for make in makers {
            let faulty = store_with("k", Bytes::from_static(b"v")).await;
            faulty.fail_always(Op::Head, make);
            let store = Retrying::new(faulty, mount_policy());
            let (attempts, err) = attempts_to_give_up(&store).await;
            assert_eq!(attempts, 10, "{err:?}");
        }

        // refused, refused, 503, refused, refused, 503, ...: never 3 refusals in a row.
        let faulty = store_with("k", Bytes::from_static(b"v")).await;
        for call in 1..=10 {
            if call % 3 == 0 {
                faulty.fail_call(Op::Head, call, server_error);
            } else {
                faulty.fail_call(Op::Head, call, refused);
            }
        }
        let store = Retrying::new(faulty, mount_policy());
        let (attempts, err) = attempts_to_give_up(&store).await;
        assert_eq!(attempts, 10, "{err:?}");

        // Two refusals (a server restarting), then an answer: the call succeeds.
        let faulty = store_with("k", Bytes::from_static(b"v")).await;
        faulty.fail_next(Op::Head, 2, refused);
        let store = Retrying::new(faulty, mount_policy());
        assert_eq!(store.head("k").await.unwrap().size, 1);
        assert_eq!(store.inner().calls(Op::Head), 3);
    }

    /// A GET body cut by a server that then dies: the resumption is refused 3 times and the
    /// body ends with that error, not after the rest of the 10 attempts.
    #[tokio::test(start_paused = true)]
    async fn a_body_cut_by_a_server_that_died_ends_after_3_refused_resumptions() {
        let faulty = store_with("big", pattern(300_000)).await;
        faulty.cut_get_bodies_after(1000, 1);
        faulty.fail_call(Op::Get, 2, refused);
        faulty.fail_call(Op::Get, 3, refused);
        faulty.fail_call(Op::Get, 4, refused);
        faulty.fail_call(Op::Get, 5, refused);
        let store = Retrying::new(faulty, mount_policy());
        let err = get_bytes(&store, "big", None).await.unwrap_err();
        assert!(matches!(err.root(), StoreError::Unreachable(_)), "{err:?}");
        // The first GET, then 3 refused resumptions.
        assert_eq!(store.inner().calls(Op::Get), 4);
    }

    /// A server that accepts connections and never answers: each attempt ends at the store's
    /// own timeout (30 s here). The first is retried (a connection dropped silently on the way
    /// hangs that way too), the second is cut when the call's 60 s are up, and no third begins.
    #[tokio::test(start_paused = true)]
    async fn a_silent_server_fails_the_call_at_twice_the_request_timeout() {
        let faulty = store_with("k", Bytes::from_static(b"v")).await;
        faulty.delay(Op::Get, Duration::from_secs(30));
        faulty.fail_always(Op::Get, || StoreError::Timeout(Duration::from_secs(30)));
        let store = Retrying::new(faulty, mount_policy());
        let started = tokio::time::Instant::now();
        let err = store.get(GetRequest::whole("k")).await.err().unwrap();
        let took = started.elapsed();
        assert!(
            matches!(err, StoreError::RetriesExhausted { attempts: 2, .. }),
            "{err:?}"
        );
        assert!(matches!(err.root(), StoreError::Timeout(_)), "{err:?}");
        assert_eq!(store.inner().calls(Op::Get), 2);
        // Virtual time: exactly the bound, not one attempt's timeout more.
        assert_eq!(took, Duration::from_secs(60));
    }

    /// An attempt that never ends at all (no timeout below us) is cut at the call's bound.
    #[tokio::test(start_paused = true)]
    async fn an_attempt_that_never_ends_is_cut_at_the_total() {
        let faulty = store_with("k", Bytes::from_static(b"v")).await;
        faulty.hold(Op::Put);
        let policy = RetryPolicy {
            total: Some(Duration::from_secs(5)),
            ..mount_policy()
        };
        let store = Retrying::new(faulty, policy);
        let started = tokio::time::Instant::now();
        let err = store
            .put("k", Bytes::from_static(b"w"), PutOptions::default())
            .await
            .unwrap_err();
        assert!(matches!(err.root(), StoreError::Timeout(_)), "{err:?}");
        assert_eq!(store.inner().calls(Op::Put), 1);
        assert_eq!(started.elapsed(), Duration::from_secs(5));
    }

    #[test]
    fn classification_retries_only_transient_errors() {
        let retryable = [
            StoreError::Throttled("slow down".into()),
            StoreError::Server {
                status: 500,
                message: "oops".into(),
            },
            StoreError::Timeout(Duration::from_secs(1)),
            connection_reset(),
            refused(),
        ];
        for err in retryable {
            assert!(err.is_retryable(), "{err:?}");
        }
        let final_ = [
            StoreError::NotFound("k".into()),
            StoreError::NoSuchBucket("b".into()),
            StoreError::AccessDenied("no".into()),
            StoreError::PreconditionFailed("k".into()),
            StoreError::InvalidRequest("bad".into()),
            StoreError::RetriesExhausted {
                attempts: 2,
                source: Box::new(connection_reset()),
            },
        ];
        for err in final_ {
            assert!(!err.is_retryable(), "{err:?}");
        }
    }

    #[tokio::test]
    async fn succeeds_after_k_failures() {
        let faulty = store_with("k", Bytes::from_static(b"v")).await;
        faulty.fail_next(Op::Head, 3, connection_reset);
        faulty.fail_next(Op::Put, 2, || StoreError::Server {
            status: 503,
            message: "x".into(),
        });
        let store = Retrying::new(faulty, fast(3));
        assert_eq!(store.head("k").await.unwrap().size, 1);
        assert_eq!(store.inner().calls(Op::Head), 4);
        store
            .put("k2", Bytes::from_static(b"vv"), PutOptions::default())
            .await
            .unwrap();
        assert_eq!(store.inner().calls(Op::Put), 3);
        assert_eq!(
            get_bytes(&store, "k2", None).await.unwrap(),
            Bytes::from_static(b"vv")
        );
    }

    #[tokio::test]
    async fn gives_up_with_the_attempt_count() {
        let faulty = store_with("k", Bytes::from_static(b"v")).await;
        faulty.fail_next(Op::List, 10, || StoreError::Throttled("slow down".into()));
        let store = Retrying::new(faulty, fast(2));
        let err = list_all(&store, "").await.unwrap_err();
        let StoreError::RetriesExhausted { attempts, source } = &err else {
            panic!("{err:?}")
        };
        assert_eq!(*attempts, 3);
        assert!(matches!(**source, StoreError::Throttled(_)));
        assert_eq!(store.inner().calls(Op::List), 3);
    }

    #[tokio::test]
    async fn never_retries_final_errors() {
        let faulty = store_with("k", Bytes::from_static(b"v")).await;
        let store = Retrying::new(faulty, fast(5));
        let err = store.head("missing").await.unwrap_err();
        assert!(matches!(err, StoreError::NotFound(_)), "{err:?}");
        assert_eq!(store.inner().calls(Op::Head), 1);

        store
            .inner()
            .fail_next(Op::Delete, 1, || StoreError::AccessDenied("no".into()));
        assert!(matches!(
            store.delete("k").await,
            Err(StoreError::AccessDenied(_))
        ));
        assert_eq!(store.inner().calls(Op::Delete), 1);

        let request = GetRequest {
            if_match: Some("\"other\"".into()),
            ..GetRequest::whole("k")
        };
        assert!(matches!(
            store.get(request).await,
            Err(StoreError::PreconditionFailed(_))
        ));
        assert_eq!(store.inner().calls(Op::Get), 1);
    }

    #[tokio::test]
    async fn a_retried_abort_that_already_happened_succeeds() {
        let faulty = FaultyStore::new(MemoryStore::new());
        let upload = faulty
            .create_multipart("k", PutOptions::default())
            .await
            .unwrap();
        let store = Retrying::new(faulty, fast(2));
        store
            .inner()
            .inner()
            .abort_multipart("k", &upload)
            .await
            .unwrap();
        store
            .inner()
            .fail_next(Op::AbortMultipart, 1, connection_reset);
        store.abort_multipart("k", &upload).await.unwrap();
        assert!(
            store
                .abort_multipart("k", &upload)
                .await
                .unwrap_err()
                .is_not_found()
        );
    }

    #[tokio::test]
    async fn a_retried_complete_that_already_happened_succeeds() {
        let faulty = FaultyStore::new(MemoryStore::with_min_part_size(1));
        let upload = faulty
            .create_multipart("k", PutOptions::default())
            .await
            .unwrap();
        let mut parts = Vec::new();
        for number in 1..=2 {
            parts.push(
                faulty
                    .upload_part("k", &upload, number, pattern(100))
                    .await
                    .unwrap(),
            );
        }
        // The first attempt completes the upload but its answer is "lost".
        let done = faulty
            .inner()
            .complete_multipart("k", &upload, parts.clone(), false)
            .await
            .unwrap();
        faulty.fail_next(Op::CompleteMultipart, 1, connection_reset);
        let store = Retrying::new(faulty, fast(2));
        let again = store
            .complete_multipart("k", &upload, parts.clone(), false)
            .await
            .unwrap();
        assert_eq!(again, done);
        // Without a lost answer, a missing upload stays an error.
        assert!(
            store
                .complete_multipart("k", &upload, parts, false)
                .await
                .unwrap_err()
                .is_not_found()
        );
    }

    /// A retried write whose earlier attempt succeeded unheard looks at the key with a HEAD;
    /// when that HEAD meets a transient fault too, the write is retried, not failed with the
    /// PreconditionFailed / NoSuchUpload that made it look.
    #[tokio::test]
    async fn a_transient_fault_of_the_look_after_a_lost_answer_is_retried() {
        let body = Bytes::from_static(b"exclusive");
        let faulty = FaultyStore::new(MemoryStore::with_min_part_size(1));
        let exclusive = PutOptions {
            if_none_match: true,
            ..PutOptions::default()
        };
        // The first PUT stored the object, but its answer was lost.
        let stored = faulty
            .inner()
            .put("k", body.clone(), exclusive.clone())
            .await
            .unwrap();
        faulty.fail_next(Op::Put, 1, connection_reset);
        faulty.fail_next(Op::Head, 1, connection_reset);
        let store = Retrying::new(faulty, fast(4));
        let put = store.put("k", body.clone(), exclusive).await.unwrap();
        assert_eq!(put, stored);
        // Lost answer, 412 and a failed HEAD, 412 and the HEAD that finds the object.
        assert_eq!(store.inner().calls(Op::Put), 3);
        assert_eq!(store.inner().calls(Op::Head), 2);

        let upload = store
            .create_multipart("m", PutOptions::default())
            .await
            .unwrap();
        let part = store
            .upload_part("m", &upload, 1, pattern(10))
            .await
            .unwrap();
        let done = store
            .inner()
            .inner()
            .complete_multipart("m", &upload, vec![part.clone()], false)
            .await
            .unwrap();
        store
            .inner()
            .fail_next(Op::CompleteMultipart, 1, connection_reset);
        store.inner().fail_next(Op::Head, 1, || StoreError::Server {
            status: 503,
            message: "x".into(),
        });
        let again = store
            .complete_multipart("m", &upload, vec![part], false)
            .await
            .unwrap();
        assert_eq!(again, done);
        assert_eq!(store.inner().calls(Op::CompleteMultipart), 3);
    }

    /// s3s-fs answers every HEAD of a directory marker with a bare 500: the listing then says
    /// whether the marker is an object. Not listed: not found at once (1 HEAD + 1 LIST, where
    /// 10 attempts took 16 s). Listed: the 500 was a fault, retried as any other. Other keys
    /// never ask the listing.
    #[tokio::test]
    async fn a_marker_head_failing_with_a_server_error_asks_the_listing_once() {
        let faulty = store_with("k", Bytes::from_static(b"v")).await;
        let server_error = || StoreError::Server {
            status: 500,
            message: String::new(),
        };
        let store = Retrying::new(faulty, fast(4));

        store.inner().fail_next(Op::Head, 1, server_error);
        assert!(store.head("d/").await.unwrap_err().is_not_found());
        assert_eq!(store.inner().calls(Op::Head), 1);
        assert_eq!(store.inner().calls(Op::List), 1);

        // Any other key: every attempt, no listing.
        store.inner().fail_next(Op::Head, 5, server_error);
        assert!(!store.head("k").await.unwrap_err().is_not_found());
        assert_eq!(store.inner().calls(Op::Head), 6);
        assert_eq!(store.inner().calls(Op::List), 1);

        // A marker that is an object: the listing names it, and the HEAD is retried until it
        // answers, the listing asked only once.
        store
            .inner()
            .inner()
            .put("m/", Bytes::new(), PutOptions::default())
            .await
            .unwrap();
        store.inner().fail_next(Op::Head, 3, server_error);
        assert_eq!(store.head("m/").await.unwrap().size, 0);
        assert_eq!(store.inner().calls(Op::Head), 10);
        assert_eq!(store.inner().calls(Op::List), 2);
    }

    #[tokio::test]
    async fn a_broken_body_resumes_with_identical_bytes() {
        let data = pattern(1_000_000);
        let faulty = store_with("big", data.clone()).await;
        faulty.cut_get_bodies_after(100_000, 2);
        let store = Retrying::new(faulty, fast(3));
        assert_eq!(get_bytes(&store, "big", None).await.unwrap(), data);
        assert_eq!(store.inner().calls(Op::Get), 3);

        // A range resumes within itself.
        store.inner().cut_get_bodies_after(1000, 1);
        let ranged = get_bytes(&store, "big", Some(500_000..600_000))
            .await
            .unwrap();
        assert_eq!(ranged, data.slice(500_000..600_000));
    }

    #[tokio::test]
    async fn resumptions_share_the_retry_budget() {
        let data = pattern(300_000);
        let faulty = store_with("big", data).await;
        faulty.cut_get_bodies_after(10, 3);
        let store = Retrying::new(faulty, fast(2));
        let err = get_bytes(&store, "big", None).await.unwrap_err();
        let StoreError::RetriesExhausted { attempts, source } = &err else {
            panic!("{err:?}")
        };
        assert_eq!(*attempts, 3);
        assert!(matches!(**source, StoreError::Connection(_)));
    }

    #[tokio::test]
    async fn a_resumed_body_never_mixes_versions() {
        let data = pattern(300_000);
        let faulty = store_with("big", data).await;
        faulty.cut_get_bodies_after(64 * 1024, 1);
        let store = Retrying::new(faulty, fast(3));
        let mut output = store.get(GetRequest::whole("big")).await.unwrap();
        let first = output.body.next().await.unwrap().unwrap();
        assert_eq!(first.len(), 64 * 1024);
        store
            .inner()
            .inner()
            .put("big", pattern(10), PutOptions::default())
            .await
            .unwrap();
        let err = output.body.next().await.unwrap().unwrap_err();
        assert!(matches!(err, StoreError::PreconditionFailed(_)), "{err:?}");
        assert!(output.body.next().await.is_none());
    }
}
