//! The two S3 servers the suites run against, behind one face: a dev server of its own per test,
//! or a fresh bucket on the shared moto server. [`Backend`] is for async tests of the store
//! layer (the dev server runs on the test's own runtime); [`CliTarget`] is for tests that run
//! the `scribefs` binary (the dev server runs on a runtime of its own, see [`Server`]).

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use scribefs::devserver::{DevServer, DevServerConfig, RequestStats};
use scribefs::segment::SegmentStore;
use scribefs::store::ObjectStore;
use scribefs::store::config::S3Config;
use scribefs::store::s3::S3Store;

use super::devserver::{ACCESS_KEY, SECRET_KEY, Server};
use super::moto;

/// moto accepts any credentials; these are what boto's docs use.
pub const MOTO_KEY: &str = "testing";
/// The bucket every dev server of these suites starts with.
pub const DEV_BUCKET: &str = "suite";

/// A bucket name no test has used yet in this process: S3 rules (lowercase, digits, dashes,
/// at most 63 characters), so `label` may be a test name with underscores.
pub fn unique_bucket(label: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let mut name: String = label
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .take(50)
        .collect();
    name = name.trim_matches('-').to_string();
    format!("{name}-{n}")
}

/// Connection settings for `bucket` on the shared moto server.
pub fn moto_config(bucket: &str) -> S3Config {
    S3Config {
        bucket: bucket.to_string(),
        endpoint: Some(moto::shared().endpoint.clone()),
        access_key_id: Some(MOTO_KEY.into()),
        secret_access_key: Some(MOTO_KEY.into()),
        path_style: true,
        ..S3Config::default()
    }
}

pub fn dev_config(server: &DevServer, bucket: &str) -> S3Config {
    S3Config {
        bucket: bucket.to_string(),
        endpoint: Some(server.endpoint()),
        access_key_id: Some(ACCESS_KEY.into()),
        secret_access_key: Some(SECRET_KEY.into()),
        path_style: true,
        ..S3Config::default()
    }
}

/// Creates `config.bucket` (moto starts with none).
pub async fn create_bucket(config: &S3Config) {
    let s3 = S3Store::new(config).await.unwrap();
    s3.client()
        .create_bucket()
        .bucket(&config.bucket)
        .send()
        .await
        .unwrap_or_else(|e| panic!("cannot create bucket {}: {e:?}", config.bucket));
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    DevServer,
    Moto,
}

/// One bucket of its own on one of the two servers, with the store scribefs would use for it.
pub struct Backend {
    pub kind: Kind,
    pub config: S3Config,
    /// S3Store inside Retrying, exactly as `scribefs::cli::connect` builds it.
    pub store: Arc<dyn ObjectStore>,
    server: Option<DevServer>,
}

impl Backend {
    /// A new dev server with one bucket.
    pub async fn devserver() -> Backend {
        let server = DevServer::start(DevServerConfig::for_tests(&[DEV_BUCKET]))
            .await
            .expect("dev server starts");
        let config = dev_config(&server, DEV_BUCKET);
        Backend::with(Kind::DevServer, config, Some(server)).await
    }

    /// A new bucket on the shared moto server, named after `label`.
    pub async fn moto(label: &str) -> Backend {
        let config = moto_config(&unique_bucket(label));
        create_bucket(&config).await;
        Backend::with(Kind::Moto, config, None).await
    }

    async fn with(kind: Kind, config: S3Config, server: Option<DevServer>) -> Backend {
        let store = scribefs::cli::connect(&config).await.unwrap();
        Backend {
            kind,
            config,
            store,
            server,
        }
    }

    /// The store `cli::connect` makes for this bucket with `change` applied to the settings.
    pub async fn connect_with(&self, change: impl FnOnce(&mut S3Config)) -> Arc<dyn ObjectStore> {
        let mut config = self.config.clone();
        change(&mut config);
        scribefs::cli::connect(&config).await.unwrap()
    }

    /// A bare S3Store (no retries) for SDK calls the trait does not offer.
    pub async fn sdk(&self) -> S3Store {
        S3Store::new(&self.config).await.unwrap()
    }

    pub fn segments(&self) -> SegmentStore {
        SegmentStore::new(Arc::clone(&self.store))
    }

    /// The dev server, when this backend is one.
    pub fn server(&self) -> Option<&DevServer> {
        self.server.as_ref()
    }

    /// Request counts since the last reset; moto does not count.
    pub fn stats(&self) -> Option<RequestStats> {
        self.server.as_ref().map(DevServer::stats)
    }

    pub fn reset_stats(&self) {
        if let Some(server) = &self.server {
            server.reset_stats();
        }
    }
}

/// A bucket for `scribefs` commands: on a dev server of its own or on the shared moto.
pub struct CliTarget {
    pub kind: Kind,
    pub config: S3Config,
    server: Option<Server>,
}

impl CliTarget {
    /// A new dev server with `buckets`; commands address the first.
    pub fn devserver(buckets: &[&str]) -> CliTarget {
        let server = Server::start(buckets);
        CliTarget {
            kind: Kind::DevServer,
            config: server.config(buckets[0]),
            server: Some(server),
        }
    }

    /// A new bucket on the shared moto server.
    pub fn moto(label: &str) -> CliTarget {
        let config = moto_config(&unique_bucket(label));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(create_bucket(&config));
        CliTarget {
            kind: Kind::Moto,
            config,
            server: None,
        }
    }

    pub fn server(&self) -> Option<&Server> {
        self.server.as_ref()
    }

    /// `scribefs` with this target's connection in its environment and nothing else from ours,
    /// so that no AWS_* or S3_* variable of the machine changes what the test means.
    pub fn scribefs(&self) -> Command {
        let mut command = scribefs_bare();
        command.env("S3_BUCKET", &self.config.bucket);
        if let Some(endpoint) = &self.config.endpoint {
            command.env("S3_ENDPOINT", endpoint);
        }
        if let (Some(key), Some(secret)) =
            (&self.config.access_key_id, &self.config.secret_access_key)
        {
            command
                .env("S3_ACCESS_KEY_ID", key)
                .env("S3_SECRET_ACCESS_KEY", secret);
        }
        command.env("S3_PATH_STYLE", self.config.path_style.to_string());
        command
    }
}

/// `scribefs` with an empty environment (a HOME without AWS profiles, for the SDK's loader).
pub fn scribefs_bare() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_scribefs"));
    command
        .env_clear()
        .env("HOME", std::env::temp_dir())
        .env("S3_REGION", "us-east-1");
    command
}
