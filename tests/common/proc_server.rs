//! The dev server as a separate process (`scribefs-devserver --root DIR`), for tests that kill
//! the server (SIGKILL, as a crash or an outage would) and start it again on the same root and
//! port, and a plain real mount of any endpoint.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use scribefs::store::ObjectStore;
use scribefs::store::config::S3Config;

use super::devserver::{ACCESS_KEY, SECRET_KEY};
use super::mount::is_mounted;

pub struct ProcServer {
    pub root: tempfile::TempDir,
    pub port: u16,
    extra: Vec<String>,
    child: Option<Child>,
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

impl ProcServer {
    /// Starts a server with bucket `bucket` and `extra` flags (e.g. --bandwidth-mbps).
    pub fn start(bucket: &str, extra: &[&str]) -> ProcServer {
        let mut server = ProcServer {
            root: tempfile::tempdir().unwrap(),
            port: free_port(),
            extra: ["--bucket", bucket]
                .iter()
                .chain(extra)
                .map(|s| s.to_string())
                .collect(),
            child: None,
        };
        server.restart();
        server
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// (Re)starts the process on the same root and port; returns once it serves.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "server already running");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let mut child = Command::new(env!("CARGO_BIN_EXE_scribefs-devserver"))
                .arg("--root")
                .arg(self.root.path())
                .arg("--listen")
                .arg(format!("127.0.0.1:{}", self.port))
                .args(&self.extra)
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            let mut line = String::new();
            let stdout = child.stdout.take().unwrap();
            let _ = BufReader::new(stdout).read_line(&mut line);
            if line.contains("ready on") {
                self.child = Some(child);
                return;
            }
            // The port may still be held by the killed process's sockets for a moment.
            let _ = child.wait();
            assert!(Instant::now() < deadline, "dev server does not restart");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGKILL: connections reset, nothing flushed, as a crash.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

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

    /// The requests this server has answered so far, by operation (its control path).
    pub fn stats(&self) -> scribefs::devserver::RequestStats {
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], self.port));
        scribefs::devserver::control::request_stats(addr, false).expect("the server's counts")
    }

    /// A store on this server, as `scribefs` builds it, on `runtime`.
    pub fn store(
        &self,
        runtime: &tokio::runtime::Runtime,
        bucket: &str,
    ) -> std::sync::Arc<dyn ObjectStore> {
        runtime
            .block_on(scribefs::cli::connect(&self.config(bucket)))
            .unwrap()
    }
}

impl Drop for ProcServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `scribefs` with the connection to `endpoint` in its environment.
pub fn scribefs_at(endpoint: &str) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_scribefs"));
    command
        .env("S3_ENDPOINT", endpoint)
        .env("S3_PATH_STYLE", "true")
        .env("S3_REGION", "us-east-1")
        .env("S3_ACCESS_KEY_ID", ACCESS_KEY)
        .env("S3_SECRET_ACCESS_KEY", SECRET_KEY)
        .env_remove("AWS_PROFILE");
    command
}

/// A real mount of `bucket` at `endpoint`, unmounted (lazily if need be) when dropped.
pub struct PlainMount {
    pub dir: tempfile::TempDir,
}

impl PlainMount {
    pub fn new(endpoint: &str, bucket: &str, args: &[&str]) -> PlainMount {
        PlainMount::with(scribefs_at(endpoint), bucket, args)
    }

    /// A mount by `scribefs`, a command already set up with its connection.
    pub fn with(mut scribefs: Command, bucket: &str, args: &[&str]) -> PlainMount {
        let dir = tempfile::tempdir().unwrap();
        let output = scribefs
            .arg("mount")
            .arg(bucket)
            .arg(dir.path())
            .args(args)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "mount failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(is_mounted(dir.path()));
        PlainMount { dir }
    }

    pub fn path(&self, relative: &str) -> PathBuf {
        self.dir.path().join(relative)
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// Runs a shell command in the mount point.
    pub fn sh(&self, script: &str) -> std::process::Output {
        Command::new("bash")
            .arg("-c")
            .arg(script)
            .current_dir(self.root())
            .output()
            .unwrap()
    }

    pub fn sh_ok(&self, script: &str) -> String {
        let output = self.sh(script);
        assert!(
            output.status.success(),
            "`{script}` failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }
}

impl Drop for PlainMount {
    fn drop(&mut self) {
        unmount(self.dir.path());
    }
}

/// fusermount3 -u until the mount is gone, then -uz if it is busy.
pub fn unmount(dir: &Path) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while is_mounted(dir) && Instant::now() < deadline {
        let _ = Command::new("fusermount3").arg("-u").arg(dir).output();
        if is_mounted(dir) {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    if is_mounted(dir) {
        let _ = Command::new("fusermount3").arg("-uz").arg(dir).output();
    }
}
