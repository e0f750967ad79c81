//! A dev server on its own runtime, for tests that are not async themselves (mount tests).

use std::sync::Arc;
use std::time::Duration;

use scribefs::devserver::{DevServer, DevServerConfig, RequestStats, SeedShape};
use scribefs::store::config::S3Config;
use scribefs::store::memory::MemoryStore;

pub const ACCESS_KEY: &str = "devkey";
pub const SECRET_KEY: &str = "devsecret";

pub struct Server {
    server: Option<DevServer>,
    pub runtime: tokio::runtime::Runtime,
    /// The "machine" mounts of this server share: its cache folder (XDG_CACHE_HOME), where
    /// the metadata cache lives. Mounts of other servers never see it.
    pub machine: tempfile::TempDir,
}

impl Server {
    pub fn start(buckets: &[&str]) -> Server {
        Server::start_with(DevServerConfig::for_tests(buckets))
    }

    pub fn start_with(config: DevServerConfig) -> Server {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("test runtime");
        let server = runtime
            .block_on(DevServer::start(config))
            .expect("dev server starts");
        Server {
            server: Some(server),
            runtime,
            machine: tempfile::tempdir().expect("machine state dir"),
        }
    }

    fn server(&self) -> &DevServer {
        self.server.as_ref().expect("server running")
    }

    pub fn endpoint(&self) -> String {
        self.server().endpoint()
    }

    pub fn stats(&self) -> RequestStats {
        self.server().stats()
    }

    pub fn reset_stats(&self) {
        self.server().reset_stats()
    }

    /// The requests since the last reset, with their headers.
    pub fn requests(&self) -> Vec<scribefs::devserver::RecordedRequest> {
        self.server().recorded_requests()
    }

    pub fn set_fail_rate(&self, rate: f64) {
        self.server().set_fail_rate(rate)
    }

    /// Fraction of uploaded bodies that arrive with a flipped byte.
    pub fn set_corrupt_rate(&self, rate: f64) {
        self.server().set_corrupt_rate(rate)
    }

    /// Fraction of GET bodies sent with a flipped byte.
    pub fn set_corrupt_get_rate(&self, rate: f64) {
        self.server().set_corrupt_get_rate(rate)
    }

    pub fn set_latency(&self, latency: Duration) {
        self.server().set_latency(latency)
    }

    /// Direct access to a bucket's objects, as "another client" would change them.
    pub fn bucket(&self, name: &str) -> Arc<MemoryStore> {
        self.server().bucket(name).expect("bucket exists")
    }

    /// Puts `shape`'s small objects into `bucket` in memory, e.g. a directory of 300,001 entries
    /// (`SeedShape::Flat { count: 300_001 }`, keys `flat/f0000000` ...) in a few seconds; returns
    /// how many keys were added. The objects are not counted as requests.
    pub fn seed_objects(&self, bucket: &str, shape: SeedShape) -> u64 {
        self.server()
            .seed_objects(bucket, shape)
            .expect("bucket exists")
    }

    /// Connection settings for `bucket` on this server.
    pub fn config(&self, bucket: &str) -> S3Config {
        S3Config {
            bucket: bucket.to_string(),
            endpoint: Some(self.endpoint()),
            access_key_id: Some(ACCESS_KEY.into()),
            secret_access_key: Some(SECRET_KEY.into()),
            path_style: true,
            ..S3Config::default()
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            self.runtime.block_on(server.shutdown());
        }
    }
}
