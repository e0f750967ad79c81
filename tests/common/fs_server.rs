//! A file-backed S3 server (the s3s project's `s3s-fs`: objects are files, `dir/` markers are
//! directories), served in-process on its own runtime. It differs from AWS where MinIO's
//! single-disk mode does: PUT of a `dir/` marker answers without an ETag, markers are never
//! listed, and `a` cannot exist beside `a/b` (a 500).

use tokio::net::TcpListener;

use super::devserver::{ACCESS_KEY, SECRET_KEY};
use super::s3s_fs::{serve, service};

pub struct FsServer {
    pub root: tempfile::TempDir,
    pub endpoint: String,
    pub runtime: tokio::runtime::Runtime,
}

impl FsServer {
    /// Serves a fresh root with the given (empty) buckets.
    pub fn start(buckets: &[&str]) -> FsServer {
        let root = tempfile::tempdir().unwrap();
        for bucket in buckets {
            std::fs::create_dir(root.path().join(bucket)).unwrap();
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let service = service(root.path(), ACCESS_KEY, SECRET_KEY).unwrap();
        let listener = runtime.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        runtime.spawn(serve(listener, service));
        FsServer {
            root,
            endpoint,
            runtime,
        }
    }
}
