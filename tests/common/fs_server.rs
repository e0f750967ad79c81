//! A file-backed S3 server (the s3s project's `s3s-fs`: objects are files, `dir/` markers are
//! directories), served in-process on its own runtime. It differs from AWS where MinIO's
//! single-disk mode does: PUT of a `dir/` marker answers without an ETag, markers are never
//! listed, and `a` cannot exist beside `a/b` (a 500).

use s3s::auth::SimpleAuth;
use s3s::service::S3ServiceBuilder;
use tokio::net::TcpListener;

use super::devserver::{ACCESS_KEY, SECRET_KEY};

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
        let fs = s3s_fs::FileSystem::new(root.path()).unwrap();
        let mut builder = S3ServiceBuilder::new(fs);
        builder.set_auth(SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
        let service = builder.build();
        let listener = runtime.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        runtime.spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let service = service.clone();
                tokio::spawn(async move {
                    let io = hyper_util::rt::TokioIo::new(socket);
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, service)
                        .await;
                });
            }
        });
        FsServer {
            root,
            endpoint,
            runtime,
        }
    }
}
