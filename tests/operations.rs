//! Running scribefs the way operators do: `mount -t fuse.scribefs` and /etc/fstab through
//! mount.fuse3, systemd's readiness protocol, syslog, AWS profiles, and the config layers.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::devserver::{ACCESS_KEY, SECRET_KEY, Server};
use common::mount::{BUCKET, Mount, free_local_addr, is_mounted, put_directly, scrape, scribefs};

const BIN: &str = env!("CARGO_BIN_EXE_scribefs");

/// A `[storage.s3]` file for `server`, mode 600.
fn connection_file(dir: &Path, server: &Server, extra: &str) -> std::path::PathBuf {
    let path = dir.join("scribefs.toml");
    let text = format!(
        "[storage.s3]\nendpoint = \"{}\"\naccess_key_id = \"{ACCESS_KEY}\"\n\
         secret_access_key = \"{SECRET_KEY}\"\npath_style = true\n{extra}",
        server.endpoint()
    );
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

fn run_ok(command: &mut Command) -> String {
    let output = command.output().expect("command runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{command:?} failed: {text}");
    text
}

/// mount(8) runs helpers with a sanitized environment (no PATH), and mount.fuse3 runs
/// `scribefs` through /bin/sh, so the shell's default PATH (/usr/local/bin first among the
/// bin directories) is where the program must be: exactly where scripts/install.sh puts it.
/// The test installs into a temporary prefix and, in a private mount namespace, binds that
/// prefix's bin over /usr/local/bin, so the machine's /usr/local/bin is untouched.
#[test]
fn mount_t_fuse_scribefs_and_an_fstab_line_work_through_mount_fuse3() {
    let server = Server::start(&[BUCKET]);
    put_directly(&server, "hello.txt", b"hello from s3\n");
    let work = tempfile::tempdir().unwrap();
    let prefix = work.path().join("prefix");
    let install = Command::new("bash")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/install.sh"))
        .env("PREFIX", &prefix)
        .env("SCRIBEFS_BIN", BIN)
        .output()
        .unwrap();
    assert!(
        install.status.success(),
        "{}",
        String::from_utf8_lossy(&install.stderr)
    );
    assert!(prefix.join("bin/scribefs").is_file());
    let config = connection_file(work.path(), &server, "");
    let mnt = work.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let fstab = work.path().join("fstab");
    std::fs::write(
        &fstab,
        format!(
            "{BUCKET} {} fuse.scribefs _netdev,nofail,x-systemd.automount,config={},cache_size_mib=16,allow_other,rw 0 0\n",
            mnt.display(),
            config.display()
        ),
    )
    .unwrap();
    let script = format!(
        r#"set -e
mount --bind {bin} /usr/local/bin
# The variables an interactive shell has do not reach the helper.
unset S3_ENDPOINT S3_ACCESS_KEY_ID S3_SECRET_ACCESS_KEY AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY
mount -t fuse.scribefs {BUCKET} {mnt} -o config={config},read_only,allow_other,_netdev,nofail,x-systemd.requires=network-online.target,dev,suid,exec,auto,user,rw
echo "first: $(grep -c " {mnt} " /proc/self/mountinfo)"
cat {mnt}/hello.txt
if echo x > {mnt}/new.txt 2>/dev/null; then echo "write: allowed"; else echo "write: refused"; fi
umount {mnt}
echo "after umount: $(grep -c " {mnt} " /proc/self/mountinfo || true)"
mount -a -T {fstab}
# A second `mount -a` (boot, an admin) must see the mount as there, and leave it alone.
mount -a -T {fstab}
echo "fstab: $(grep -c " {mnt} " /proc/self/mountinfo)"
echo written > {mnt}/from-fstab.txt
cat {mnt}/from-fstab.txt
umount {mnt}
echo "after fstab umount: $(grep -c " {mnt} " /proc/self/mountinfo || true)"
"#,
        bin = prefix.join("bin").display(),
        mnt = mnt.display(),
        config = config.display(),
        fstab = fstab.display(),
    );
    let output = Command::new("unshare")
        .args(["-m", "--propagation", "private", "bash", "-c", &script])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        stdout,
        "first: 1\nhello from s3\nwrite: refused\nafter umount: 0\n\
         fstab: 1\nwritten\nafter fstab umount: 0\n"
    );
    let object = server.bucket(BUCKET).object("from-fstab.txt").unwrap();
    assert_eq!(object.data.as_ref(), b"written\n");
    assert!(server.bucket(BUCKET).object("new.txt").is_none());
}

/// The helper's form with an option scribefs does not know fails in one line, before mounting.
#[test]
fn unknown_dash_o_options_are_refused_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(BIN)
        .arg(BUCKET)
        .arg(dir.path())
        .args(["-o", "rw,cache_sise_mib=4"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("cache_sise_mib"), "{stderr}");
}

fn recv_text(socket: &UnixDatagram) -> String {
    let mut buf = vec![0u8; 8192];
    let n = socket
        .recv(&mut buf)
        .expect("a datagram before the timeout");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// `--foreground` under systemd's Type=notify: READY=1 once the mount answers, STOPPING=1
/// when it is unmounted, and the process then exits 0.
#[test]
fn foreground_mount_notifies_ready_and_stopping() {
    let server = Server::start(&[BUCKET]);
    put_directly(&server, "f.txt", b"ready");
    let work = tempfile::tempdir().unwrap();
    let socket_path = work.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mnt = work.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let mut child = scribefs(&server)
        .args(["mount", BUCKET])
        .arg(&mnt)
        .arg("--foreground")
        .env("NOTIFY_SOCKET", &socket_path)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert_eq!(recv_text(&socket), "READY=1");
    assert!(is_mounted(&mnt), "READY=1 came before the mount was live");
    assert_eq!(std::fs::read(mnt.join("f.txt")).unwrap(), b"ready");
    run_ok(Command::new("fusermount3").arg("-u").arg(&mnt));
    assert_eq!(recv_text(&socket), "STOPPING=1");
    let output = child_output(&mut child);
    assert!(output.0, "the mount process failed: {}", output.1);
    // In the foreground the log goes to stderr, mount and unmount at info level.
    assert!(output.1.contains("mounted"), "{}", output.1);
    assert!(output.1.contains("unmounted"), "{}", output.1);
    assert!(!output.1.contains(SECRET_KEY), "{}", output.1);
}

fn child_output(child: &mut std::process::Child) -> (bool, String) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut stderr = String::new();
            use std::io::Read;
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut stderr)
                .unwrap();
            return (status.success(), stderr);
        }
        assert!(Instant::now() < deadline, "the mount process did not exit");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A background mount without --log-file logs to syslog: the mount line (info, secrets
/// redacted) and one warning per S3 request that failed after its retries.
#[test]
fn background_mount_logs_to_syslog() {
    let work = tempfile::tempdir().unwrap();
    let socket_path = work.path().join("log.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let server = Server::start(&[BUCKET]);
    put_directly(&server, "broken.bin", b"some bytes");
    let syslog_arg = format!("--syslog-socket={}", socket_path.display());
    let mut mount = Mount::on(server, BUCKET, &[&syslog_arg, "--max-retries", "1"]);
    // Start-up lines (the write budget, for one) may come first; the mount line is the one.
    let mounted = loop {
        let text = recv_text(&socket);
        if text.contains("mounted") {
            break text;
        }
    };
    // daemon facility (3) * 8 + informational (6)
    assert!(mounted.starts_with("<30>scribefs["), "{mounted}");
    assert!(mounted.contains("mounted"), "{mounted}");
    assert!(
        mounted.contains(&format!("static key {ACCESS_KEY} (secret redacted)")),
        "{mounted}"
    );
    assert!(!mounted.contains(SECRET_KEY), "{mounted}");
    mount.server.set_fail_rate(1.0);
    assert!(std::fs::read(mount.path("broken.bin")).is_err());
    mount.server.set_fail_rate(0.0);
    let mut warnings = Vec::new();
    while let Ok(text) = {
        socket
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let mut buf = vec![0u8; 8192];
        socket
            .recv(&mut buf)
            .map(|n| String::from_utf8_lossy(&buf[..n]).into_owned())
    } {
        warnings.push(text);
    }
    let failed: Vec<_> = warnings
        .iter()
        .filter(|w| w.contains("S3 request failed"))
        .collect();
    assert!(!failed.is_empty(), "{warnings:#?}");
    for line in &failed {
        // daemon facility (3) * 8 + warning (4)
        assert!(line.starts_with("<28>scribefs["), "{line}");
        assert!(line.contains("attempts=2"), "{line}");
        assert!(line.contains("status="), "{line}");
        assert!(line.contains("latency_ms="), "{line}");
    }
    mount.unmount();
}

/// Credentials from ~/.aws/credentials by profile name; a wrong profile secret is refused.
#[test]
fn profile_credentials_come_from_the_aws_files() {
    let server = Server::start(&[BUCKET]);
    let home = tempfile::tempdir().unwrap();
    std::fs::create_dir(home.path().join(".aws")).unwrap();
    std::fs::write(
        home.path().join(".aws/credentials"),
        format!(
            "[good]\naws_access_key_id = {ACCESS_KEY}\naws_secret_access_key = {SECRET_KEY}\n\
             [bad]\naws_access_key_id = {ACCESS_KEY}\naws_secret_access_key = wrong\n"
        ),
    )
    .unwrap();
    std::fs::write(
        home.path().join(".aws/config"),
        "[profile good]\nregion = us-east-1\n[profile bad]\nregion = us-east-1\n",
    )
    .unwrap();
    let health = |profile: &str| {
        Command::new(BIN)
            .env_clear()
            .env("HOME", home.path())
            .args(["--profile", profile, "--force-path-style", "--endpoint-url"])
            .arg(server.endpoint())
            .args(["--bucket", BUCKET, "segments", "health"])
            .output()
            .unwrap()
    };
    let good = health("good");
    assert!(
        good.status.success(),
        "{}",
        String::from_utf8_lossy(&good.stderr)
    );
    let bad = health("bad");
    assert!(!bad.status.success());
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(stderr.contains("access denied"), "{stderr}");
    assert_eq!(server.stats().head_bucket, 2);
}

/// Keys in a config file other users can read work, with a warning naming the file.
#[test]
fn a_world_readable_key_file_is_warned_about() {
    let server = Server::start(&[BUCKET]);
    let dir = tempfile::tempdir().unwrap();
    let config = connection_file(dir.path(), &server, &format!("bucket = \"{BUCKET}\"\n"));
    let health = || {
        Command::new(BIN)
            .env_clear()
            .arg("--config")
            .arg(&config)
            .args(["segments", "health"])
            .output()
            .unwrap()
    };
    let private = health();
    assert!(private.status.success());
    assert!(private.stderr.is_empty(), "{:?}", private.stderr);
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();
    let shared = health();
    assert!(shared.status.success());
    let stderr = String::from_utf8_lossy(&shared.stderr);
    assert!(
        stderr.contains("readable by other users") && stderr.contains("scribefs.toml"),
        "{stderr}"
    );
}

/// Mount options from the `[mount]` table, beaten by SCRIBEFS_* variables, beaten by flags.
#[test]
fn mount_options_layer_flags_over_environment_over_file() {
    let server = Server::start(&[BUCKET]);
    put_directly(&server, "f", b"x");
    let dir = tempfile::tempdir().unwrap();
    let config = connection_file(
        dir.path(),
        &server,
        "[mount]\nfile_mode = \"600\"\ndir_mode = \"700\"\nuid = 1111\nread_only = true\n",
    );
    let config_arg = format!("--config={}", config.display());
    let mount_with = |env: &[(&str, &str)], args: &[&str]| {
        let mnt = tempfile::tempdir().unwrap();
        let mut command = Command::new(BIN);
        command.env_clear().envs(env.iter().copied());
        run_ok(
            command
                .args(["mount", BUCKET])
                .arg(mnt.path())
                .arg(&config_arg)
                .args(args),
        );
        mnt
    };
    let stat = |mnt: &tempfile::TempDir| {
        use std::os::unix::fs::MetadataExt;
        let file = std::fs::metadata(mnt.path().join("f")).unwrap();
        let root = std::fs::metadata(mnt.path()).unwrap();
        let writable = std::fs::write(mnt.path().join("w"), b"w").is_ok();
        let result = (
            file.mode() & 0o777,
            root.mode() & 0o777,
            file.uid(),
            writable,
        );
        run_ok(Command::new("fusermount3").arg("-u").arg(mnt.path()));
        result
    };
    let file_only = mount_with(&[], &[]);
    assert_eq!(stat(&file_only), (0o600, 0o700, 1111, false));
    let env = [("SCRIBEFS_FILE_MODE", "640"), ("SCRIBEFS_UID", "2222")];
    let with_env = mount_with(&env, &[]);
    assert_eq!(stat(&with_env), (0o640, 0o700, 2222, false));
    let with_flags = mount_with(&env, &["--uid", "3333", "-o", "file_mode=604"]);
    assert_eq!(stat(&with_flags), (0o604, 0o700, 3333, false));
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[mount]\ncache_sise_mib = 4\n").unwrap();
    let output = Command::new(BIN)
        .arg("--config")
        .arg(&bad)
        .args(["mount", BUCKET, "/nonexistent"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("cache_sise_mib"));
}

fn s3(metrics: &std::collections::HashMap<String, f64>, operation: &str) -> f64 {
    let prefix = format!("scribefs_s3_requests_total{{operation=\"{operation}\",");
    metrics
        .iter()
        .filter(|(k, _)| k.starts_with(&prefix))
        .map(|(_, v)| v)
        .sum()
}

/// `--metrics-addr` serves Prometheus text whose S3 counters match the server's own counts
/// exactly, whose byte counters match the workload, and the unmount logs a summary.
#[test]
fn metrics_endpoint_counts_the_workload() {
    let server = Server::start(&[BUCKET]);
    let object: Vec<u8> = (0..3 << 20).map(|i| (i % 251) as u8).collect();
    put_directly(&server, "big.bin", &object);
    server.reset_stats();
    let addr = free_local_addr();
    let work = tempfile::tempdir().unwrap();
    let log = work.path().join("mount.log");
    let log_arg = format!("--log-file={}", log.display());
    let mut mount = Mount::on(server, BUCKET, &["--metrics-addr", &addr, &log_arg]);
    let before = scrape(&addr);
    assert_eq!(s3(&before, "HeadBucket"), 1.0);
    assert_eq!(before["scribefs_s3_bytes_read_total"], 0.0);

    assert_eq!(std::fs::read(mount.path("big.bin")).unwrap(), object);
    std::fs::write(mount.path("small.txt"), vec![b's'; 100]).unwrap();
    let after = scrape(&addr);
    let stats = mount.server.stats();
    assert_eq!(s3(&after, "HeadBucket"), stats.head_bucket as f64);
    assert_eq!(s3(&after, "HeadObject"), stats.head as f64);
    assert_eq!(s3(&after, "GetObject"), stats.get as f64);
    assert_eq!(s3(&after, "PutObject"), stats.put as f64);
    assert_eq!(s3(&after, "ListObjectsV2"), stats.list as f64);
    assert!(stats.get >= 1 && stats.put == 1);
    assert_eq!(after["scribefs_s3_bytes_read_total"], (3 << 20) as f64);
    assert_eq!(after["scribefs_s3_bytes_written_total"], 100.0);
    assert_eq!(after["scribefs_uploads_in_flight"], 0.0);
    // Every byte came in once, through a demand fetch or a prefetch, and is held.
    assert_eq!(
        after["scribefs_cache_miss_bytes_total"] + after["scribefs_cache_prefetched_bytes_total"],
        (3 << 20) as f64
    );
    assert_eq!(after["scribefs_cache_bytes"], (3 << 20) as f64);
    assert_eq!(after["scribefs_cache_evictions_total"], 0.0);
    let histogram =
        "scribefs_s3_request_duration_seconds_count{operation=\"PutObject\",outcome=\"ok\"}";
    assert_eq!(after[histogram], 1.0);

    mount.unmount();
    let deadline = Instant::now() + Duration::from_secs(20);
    let summary = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if let Some(line) = text.lines().find(|l| l.contains("unmounted")) {
            break line.to_string();
        }
        assert!(Instant::now() < deadline, "no unmount line in {text}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(summary.contains("PutObject=1"), "{summary}");
    assert!(
        summary.contains(&format!("s3 bytes read={} written=100", 3 << 20)),
        "{summary}"
    );
}
