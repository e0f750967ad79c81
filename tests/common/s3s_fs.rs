//! s3s-fs (the s3s project's file-backed S3 server) as an HTTP service: one place for the tests'
//! in-process `FsServer` and for `examples/bench_fs_server.rs`, which includes this file by
//! path (an example cannot import the tests' helpers as a module).

use std::path::Path;

use s3s::auth::SimpleAuth;
use s3s::service::{S3Service, S3ServiceBuilder};
use tokio::net::TcpListener;

/// The S3 service over the objects under `root` (one directory per bucket), signed with one
/// key pair.
pub fn service(root: &Path, access_key: &str, secret_key: &str) -> Result<S3Service, String> {
    // s3s_fs's error has no Display; its Debug names the I/O error.
    let fs = s3s_fs::FileSystem::new(root)
        .map_err(|e| format!("cannot serve {}: {e:?}", root.display()))?;
    let mut builder = S3ServiceBuilder::new(fs);
    builder.set_auth(SimpleAuth::from_single(access_key, secret_key));
    Ok(builder.build())
}

/// Serves HTTP/1.1 connections until the listener fails, each in a task of its own.
pub async fn serve(listener: TcpListener, service: S3Service) {
    while let Ok((socket, _)) = listener.accept().await {
        // Small answers must not wait for Nagle's algorithm, as in the dev server.
        let _ = socket.set_nodelay(true);
        let service = service.clone();
        tokio::spawn(async move {
            let io = hyper_util::rt::TokioIo::new(socket);
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, service)
                .await;
        });
    }
}
