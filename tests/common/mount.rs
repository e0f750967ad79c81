//! A real mount: the `scribefs` binary mounting a dev server bucket through /dev/fuse at a
//! fresh temporary directory, unmounted when dropped.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use super::devserver::{ACCESS_KEY, SECRET_KEY, Server};

pub const BUCKET: &str = "test";

pub struct Mount {
    pub dir: tempfile::TempDir,
    pub bucket: String,
    mounted: bool,
    // Dropped last: the mount must go before its server.
    pub server: Server,
}

/// `scribefs` with the connection to `server` in its environment.
pub fn scribefs(server: &Server) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_scribefs"));
    command
        .env("S3_ENDPOINT", server.endpoint())
        .env("S3_PATH_STYLE", "true")
        .env("S3_REGION", "us-east-1")
        .env("S3_ACCESS_KEY_ID", ACCESS_KEY)
        .env("S3_SECRET_ACCESS_KEY", SECRET_KEY)
        .env("XDG_CACHE_HOME", server.machine.path())
        .env_remove("AWS_PROFILE");
    command
}

impl Mount {
    /// A new dev server with bucket `test`, mounted with `args` added to `scribefs mount`.
    pub fn new(args: &[&str]) -> Mount {
        Mount::on(Server::start(&[BUCKET]), BUCKET, args)
    }

    pub fn on(server: Server, bucket: &str, args: &[&str]) -> Mount {
        let dir = tempfile::tempdir().expect("mount point");
        let output = scribefs(&server)
            .arg("mount")
            .arg(bucket)
            .arg(dir.path())
            .args(args)
            .output()
            .expect("scribefs runs");
        assert!(
            output.status.success(),
            "mount failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(
            is_mounted(dir.path()),
            "scribefs returned before the mount was live"
        );
        Mount {
            dir,
            bucket: bucket.to_string(),
            mounted: true,
            server,
        }
    }

    pub fn path(&self, relative: &str) -> PathBuf {
        self.dir.path().join(relative)
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// Runs a shell command with the mount point as working directory.
    pub fn sh(&self, script: &str) -> Output {
        Command::new("bash")
            .arg("-c")
            .arg(script)
            .current_dir(self.root())
            .output()
            .expect("bash runs")
    }

    /// Like `sh`, but the command must succeed; returns its stdout.
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

    /// Unmounts and waits until the mount is gone (its process then exits by itself).
    pub fn unmount(&mut self) {
        if !self.mounted {
            return;
        }
        self.mounted = false;
        unmount_by(self.root(), Instant::now() + Duration::from_secs(20));
        if is_mounted(self.root()) {
            let _ = Command::new("fusermount3")
                .arg("-uz")
                .arg(self.root())
                .output();
        }
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        self.unmount();
    }
}

/// `fusermount3 -u dir` until `dir` is no mount point or `deadline` passes (a mount busy with a
/// request refuses for a moment).
pub fn unmount_by(dir: &Path, deadline: Instant) {
    while is_mounted(dir) && Instant::now() < deadline {
        let _ = Command::new("fusermount3").arg("-u").arg(dir).output();
        if is_mounted(dir) {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Whether `dir` is a mount point, from /proc/self/mountinfo.
pub fn is_mounted(dir: &Path) -> bool {
    // Canonicalize the parent only: a stat of a dead mount point itself could fail or hang.
    let (Some(parent), Some(name)) = (dir.parent(), dir.file_name()) else {
        return false;
    };
    let Ok(parent) = parent.canonicalize() else {
        return false;
    };
    let canonical = parent.join(name);
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let wanted = canonical.to_string_lossy().to_string();
    info.lines()
        .any(|line| line.split(' ').nth(4) == Some(wanted.as_str()))
}

/// Puts an object into bucket `test` "from another client", bypassing any mount.
pub fn put_directly(server: &Server, key: &str, data: &[u8]) {
    use scribefs::store::{ObjectStore, PutOptions};
    let store = server.bucket(BUCKET);
    let body = bytes::Bytes::copy_from_slice(data);
    server
        .runtime
        .block_on(store.put(key, body, PutOptions::default()))
        .expect("direct put");
}

/// Deletes an object of bucket `test` "from another client".
pub fn delete_directly(server: &Server, key: &str) {
    use scribefs::store::ObjectStore;
    let store = server.bucket(BUCKET);
    server
        .runtime
        .block_on(store.delete(key))
        .expect("direct delete");
}

/// Runs `script` on the mount, which must fail with `message` (the strerror of the errno).
pub fn assert_fails_with(mount: &Mount, script: &str, message: &str) {
    let output = mount.sh(script);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success(),
        "`{script}` succeeded but should fail with {message}"
    );
    assert!(
        stderr.contains(message),
        "`{script}` failed with {stderr:?}, expected {message:?}"
    );
}

/// The Prometheus text a mount serves at `--metrics-addr`, as metric line -> value.
pub fn scrape(addr: &str) -> std::collections::HashMap<String, f64> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: scribefs\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let body = response.split("\r\n\r\n").nth(1).unwrap();
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (name, value) = l.rsplit_once(' ').unwrap();
            (name.to_string(), value.parse().unwrap())
        })
        .collect()
}

/// The pid of the background process serving the mount at `dir`.
pub fn mount_pid(dir: &Path) -> u32 {
    let wanted = dir.to_string_lossy().to_string();
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if args.contains(&wanted) && args.iter().any(|a| a == "--foreground") {
            pids.push(pid);
        }
    }
    assert_eq!(pids.len(), 1, "mount processes for {wanted}: {pids:?}");
    pids[0]
}

/// FUSE operations `op` the mount serving metrics at `addr` has answered so far.
pub fn fuse_ops(addr: &str, op: &str) -> f64 {
    let prefix = format!("scribefs_fuse_operations_total{{operation=\"{op}\"");
    scrape(addr)
        .iter()
        .filter(|(k, _)| k.starts_with(&prefix))
        .map(|(_, v)| v)
        .sum()
}

/// Waits until the mount serving metrics at `addr` has run every delayed metadata copy
/// (chmod, chown, utimens of a closed file, `scribefs_metadata_copies_pending` back at 0).
pub fn metadata_copies_done(addr: &str) {
    super::wait::until("the delayed metadata copies ran", || {
        scrape(addr).get("scribefs_metadata_copies_pending") == Some(&0.0)
    });
}

/// A loopback address with a port nothing listens on now, for a mount's `--metrics-addr`.
pub fn free_local_addr() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    format!("127.0.0.1:{}", listener.local_addr().unwrap().port())
}
