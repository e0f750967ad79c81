//! The headers of the last requests, so that tests can check what an option puts on the wire
//! (encryption, storage class, who pays, the expected owner, the User-Agent). Authorization is
//! left out; the oldest requests are dropped past [`MAX_RECORDED`].

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;

use hyper::{HeaderMap, Method, Uri};

use super::stats::Operation;

/// Requests kept; a test looks at the few it just made.
pub const MAX_RECORDED: usize = 4096;

/// One request as it arrived, before s3s saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedRequest {
    pub operation: Operation,
    pub method: String,
    /// Path and query.
    pub target: String,
    /// Lower-case names; a repeated header's values joined with ", ".
    pub headers: BTreeMap<String, String>,
    /// The region its SigV4 signature is for (from the Authorization header, not kept).
    pub signed_region: Option<String>,
}

impl RecordedRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

#[derive(Default)]
pub(crate) struct Recorder(Mutex<VecDeque<RecordedRequest>>);

impl Recorder {
    pub fn record(&self, operation: Operation, method: &Method, uri: &Uri, headers: &HeaderMap) {
        let mut kept = BTreeMap::new();
        for (name, value) in headers {
            if name == hyper::header::AUTHORIZATION {
                continue;
            }
            let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
            kept.entry(name.as_str().to_string())
                .and_modify(|v: &mut String| {
                    v.push_str(", ");
                    v.push_str(&value);
                })
                .or_insert(value);
        }
        let request = RecordedRequest {
            operation,
            method: method.to_string(),
            target: uri
                .path_and_query()
                .map_or_else(|| uri.path().to_string(), |p| p.to_string()),
            headers: kept,
            signed_region: super::region::signed_region(headers).map(str::to_string),
        };
        let mut log = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if log.len() >= MAX_RECORDED {
            log.pop_front();
        }
        log.push_back(request);
    }

    pub fn snapshot(&self) -> Vec<RecordedRequest> {
        let log = self.0.lock().unwrap_or_else(|e| e.into_inner());
        log.iter().cloned().collect()
    }

    pub fn clear(&self) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
}
