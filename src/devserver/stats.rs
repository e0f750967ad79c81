//! Request counting by S3 operation. The operation is read off the raw HTTP request (method,
//! path, sub-resource query parameters, copy-source header) before s3s sees it, so requests
//! that fault injection fails or that auth refuses are counted too.

use std::sync::atomic::{AtomicU64, Ordering};

use hyper::{HeaderMap, Method, Uri};

/// How many S3 requests of each kind the server received since the last reset.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RequestStats {
    /// HeadObject.
    pub head: u64,
    pub head_bucket: u64,
    /// GetObject (ranged or whole).
    pub get: u64,
    /// PutObject.
    pub put: u64,
    /// ListObjects and ListObjectsV2.
    pub list: u64,
    /// Create, UploadPart, Complete, Abort, ListMultipartUploads, ListParts.
    pub multipart: u64,
    /// CopyObject.
    pub copy: u64,
    /// DeleteObject and DeleteObjects.
    pub delete: u64,
    /// Everything else: bucket calls, ListBuckets, GetBucketLocation, sub-resources.
    pub other: u64,
}

impl RequestStats {
    pub fn total(&self) -> u64 {
        self.head
            + self.head_bucket
            + self.get
            + self.put
            + self.list
            + self.multipart
            + self.copy
            + self.delete
            + self.other
    }
}

/// The counted classes of S3 request, one per [`RequestStats`] field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Head,
    HeadBucket,
    Get,
    Put,
    List,
    Multipart,
    Copy,
    Delete,
    Other,
}

const OPERATIONS: usize = 9;

/// Lock-free counters, one per [`Operation`].
#[derive(Default)]
pub(crate) struct Counters([AtomicU64; OPERATIONS]);

impl Counters {
    pub fn count(&self, operation: Operation) {
        self.0[operation as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> RequestStats {
        Self::stats_from(|i| self.0[i].load(Ordering::Relaxed))
    }

    /// Zeroes the counters and returns what they held.
    pub fn reset(&self) -> RequestStats {
        Self::stats_from(|i| self.0[i].swap(0, Ordering::Relaxed))
    }

    fn stats_from(mut read: impl FnMut(usize) -> u64) -> RequestStats {
        RequestStats {
            head: read(Operation::Head as usize),
            head_bucket: read(Operation::HeadBucket as usize),
            get: read(Operation::Get as usize),
            put: read(Operation::Put as usize),
            list: read(Operation::List as usize),
            multipart: read(Operation::Multipart as usize),
            copy: read(Operation::Copy as usize),
            delete: read(Operation::Delete as usize),
            other: read(Operation::Other as usize),
        }
    }
}

/// Query parameters a bucket GET may carry and still be a plain object listing.
const LISTING_PARAMS: &[&str] = &[
    "list-type",
    "prefix",
    "delimiter",
    "marker",
    "max-keys",
    "continuation-token",
    "start-after",
    "encoding-type",
    "fetch-owner",
    "x-id",
];

/// Classifies a path-style S3 request.
pub fn classify(method: &Method, uri: &Uri, headers: &HeaderMap) -> Operation {
    let path = uri.path().trim_start_matches('/');
    let (bucket, key) = match path.split_once('/') {
        Some((bucket, key)) => (bucket, key),
        None => (path, ""),
    };
    let params: Vec<&str> = uri
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| p.split_once('=').map_or(p, |(name, _)| name))
        .collect();
    let has = |name: &str| params.contains(&name);
    // `x-id` is the SDK's operation hint, not a sub-resource.
    let only_plain = params.iter().all(|p| *p == "x-id" || *p == "versionId");

    if bucket.is_empty() {
        return Operation::Other;
    }
    if key.is_empty() {
        return match *method {
            Method::HEAD => Operation::HeadBucket,
            Method::GET if has("uploads") => Operation::Multipart,
            Method::GET if params.iter().all(|p| LISTING_PARAMS.contains(p)) => Operation::List,
            Method::POST if has("delete") => Operation::Delete,
            _ => Operation::Other,
        };
    }
    match *method {
        Method::HEAD => Operation::Head,
        Method::GET if has("uploadId") => Operation::Multipart,
        Method::GET if only_plain || has("partNumber") => Operation::Get,
        Method::PUT if has("uploadId") => Operation::Multipart,
        Method::PUT if only_plain && headers.contains_key("x-amz-copy-source") => Operation::Copy,
        Method::PUT if only_plain => Operation::Put,
        Method::POST if has("uploads") || has("uploadId") => Operation::Multipart,
        Method::DELETE if has("uploadId") => Operation::Multipart,
        Method::DELETE if only_plain => Operation::Delete,
        _ => Operation::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(method: Method, uri: &str) -> Operation {
        classify(&method, &uri.parse().unwrap(), &HeaderMap::new())
    }

    #[test]
    fn object_calls_are_told_apart_from_bucket_calls() {
        assert_eq!(op(Method::HEAD, "/b/k"), Operation::Head);
        assert_eq!(op(Method::HEAD, "/b"), Operation::HeadBucket);
        assert_eq!(op(Method::GET, "/b/dir/k?x-id=GetObject"), Operation::Get);
        assert_eq!(
            op(Method::GET, "/b?list-type=2&prefix=a%2F&delimiter=%2F"),
            Operation::List
        );
        assert_eq!(op(Method::GET, "/b/?prefix=x&marker=y"), Operation::List);
        assert_eq!(op(Method::GET, "/b?location"), Operation::Other);
        assert_eq!(op(Method::GET, "/"), Operation::Other);
        assert_eq!(op(Method::PUT, "/b/k"), Operation::Put);
        assert_eq!(op(Method::PUT, "/b"), Operation::Other);
        assert_eq!(op(Method::DELETE, "/b/k"), Operation::Delete);
        assert_eq!(op(Method::POST, "/b?delete"), Operation::Delete);
        assert_eq!(op(Method::PUT, "/b/k?tagging"), Operation::Other);
    }

    #[test]
    fn multipart_and_copy_are_recognised() {
        assert_eq!(op(Method::POST, "/b/k?uploads"), Operation::Multipart);
        assert_eq!(
            op(Method::PUT, "/b/k?partNumber=1&uploadId=u"),
            Operation::Multipart
        );
        assert_eq!(op(Method::POST, "/b/k?uploadId=u"), Operation::Multipart);
        assert_eq!(op(Method::DELETE, "/b/k?uploadId=u"), Operation::Multipart);
        assert_eq!(op(Method::GET, "/b?uploads"), Operation::Multipart);
        let mut headers = HeaderMap::new();
        headers.insert("x-amz-copy-source", "b/src".parse().unwrap());
        assert_eq!(
            classify(&Method::PUT, &"/b/k".parse().unwrap(), &headers),
            Operation::Copy
        );
    }

    #[test]
    fn reset_returns_and_clears_the_counts() {
        let counters = Counters::default();
        counters.count(Operation::Get);
        counters.count(Operation::Get);
        counters.count(Operation::Other);
        let stats = counters.reset();
        assert_eq!((stats.get, stats.other, stats.total()), (2, 1, 3));
        assert_eq!(counters.snapshot(), RequestStats::default());
    }
}
