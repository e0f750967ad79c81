//! s3s-fs, the s3s project's file-backed S3 server, as a program: the second S3 implementation
//! that `scripts/bench.sh` puts behind `scribefs-devserver proxy` to check the dev server's
//! emulated link against a server that knows nothing of it. Objects are plain files under
//! ROOT/BUCKET (written through a temporary file and a rename).
//!
//! ```text
//! bench_fs_server --root DIR --listen 127.0.0.1:9200 --access-key K --secret-key S --bucket NAME
//! ```
//!
//! Creates ROOT/BUCKET if missing, prints one `ready on` line, and stops on SIGTERM or SIGINT.

#[path = "../tests/common/s3s_fs.rs"]
mod s3s_fs;

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use scribefs::devserver::signals;
use tokio::net::TcpListener;

/// Serve s3s-fs (objects as files under a root) over HTTP, for the bench.
#[derive(Parser)]
#[command(name = "bench_fs_server")]
struct Cli {
    /// Directory holding one folder per bucket.
    #[arg(long, value_name = "DIR")]
    root: PathBuf,
    /// Address to listen on.
    #[arg(long, value_name = "ADDR")]
    listen: SocketAddr,
    #[arg(long, value_name = "KEY")]
    access_key: String,
    #[arg(long, value_name = "KEY")]
    secret_key: String,
    /// Bucket to create under the root if missing.
    #[arg(long, value_name = "NAME")]
    bucket: String,
}

fn main() -> ExitCode {
    // clap's own errors (exit status 2): a helper of the bench, not a tool with a style to keep.
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("bench_fs_server: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<(), String> {
    let bucket_dir = cli.root.join(&cli.bucket);
    std::fs::create_dir_all(&bucket_dir)
        .map_err(|e| format!("cannot create {}: {e}", bucket_dir.display()))?;
    let service = s3s_fs::service(&cli.root, &cli.access_key, &cli.secret_key)?;
    // Two workers, like the tests' in-process s3s-fs: the bench machine has two cores.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    runtime.block_on(async move {
        let terminated = signals::termination()?;
        let listener = TcpListener::bind(cli.listen)
            .await
            .map_err(|e| format!("cannot listen on {}: {e}", cli.listen))?;
        let addr = listener
            .local_addr()
            .map_err(|e| format!("cannot read the listening address: {e}"))?;
        let mut stdout = std::io::stdout();
        writeln!(
            stdout,
            "bench_fs_server ready on http://{addr} (bucket: {})",
            cli.bucket
        )
        .and_then(|()| stdout.flush())
        .map_err(|e| format!("cannot print the ready line: {e}"))?;
        tokio::select! {
            _ = s3s_fs::serve(listener, service) => Err("the listener failed".to_string()),
            _ = terminated => Ok(()),
        }
    })
}
