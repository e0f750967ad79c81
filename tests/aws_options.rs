//! What AWS users set up, against the dev server over HTTP and real mounts: credentials from a
//! `credential_process` profile (and a failing one named as a credentials problem) and from web
//! identity through an STS stub and an SSO profile through a portal stub, a bucket in
//! another region found without `--region`, the request options (encryption, storage class,
//! requester pays, expected owner, User-Agent prefix) checked on the headers the server
//! received in each of their four spellings, `--auto-unmount` after a `kill -9`,
//! `--negative-metadata-ttl`, `--max-memory-target` and `--debug`.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::devserver::{ACCESS_KEY, SECRET_KEY, Server};
use common::mount::{BUCKET, is_mounted, mount_pid, put_directly, scribefs};
use common::proc_server::PlainMount;
use scribefs::devserver::{DevServerConfig, Operation, RecordedRequest};

const BIN: &str = env!("CARGO_BIN_EXE_scribefs");

/// `scribefs` reaching `server` with no credentials or region of its own: a HOME of
/// `home` (its ~/.aws files decide), no instance metadata to fall back on.
fn aws_user(server: &Server, home: &Path) -> Command {
    let mut command = Command::new(BIN);
    command
        .env_clear()
        .env("HOME", home)
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("XDG_CACHE_HOME", server.machine.path())
        .args(["--force-path-style", "--endpoint-url"])
        .arg(server.endpoint());
    command
}

/// `scribefs FLAGS --bucket test segments SUBCOMMAND`, run to its end.
trait Segments {
    fn segments(&mut self, flags: &[&str], subcommand: &str) -> Output;
}

impl Segments for Command {
    fn segments(&mut self, flags: &[&str], subcommand: &str) -> Output {
        self.args(flags)
            .args(["--bucket", BUCKET, "segments", subcommand])
            .output()
            .unwrap()
    }
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The one line a failed command printed.
fn one_error_line(output: &Output) -> String {
    assert!(!output.status.success(), "succeeded: {}", stderr(output));
    let text = stderr(output);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1, "not one line: {text}");
    lines[0].to_string()
}

fn write_file(path: &Path, text: &str, mode: u32) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A profile whose keys come from `credential_process` mounts; the process really ran; a
/// process that fails, and no credentials at all, are each one line that says "credentials"
/// and where they were looked for.
#[test]
fn credential_process_profiles_supply_the_keys() {
    let server = Server::start(&[BUCKET]);
    let home = tempfile::tempdir().unwrap();
    let ran = home.path().join("process-ran");
    let good = home.path().join("bin/creds");
    write_file(
        &good,
        &format!(
            "#!/bin/sh\ntouch {}\necho '{{\"Version\": 1, \"AccessKeyId\": \"{ACCESS_KEY}\", \"SecretAccessKey\": \"{SECRET_KEY}\"}}'\n",
            ran.display()
        ),
        0o755,
    );
    let bad = home.path().join("bin/expired");
    write_file(
        &bad,
        "#!/bin/sh\necho 'the SSO session has expired' >&2\nexit 1\n",
        0o755,
    );
    write_file(
        &home.path().join(".aws/config"),
        &format!(
            "[profile proc]\nregion = us-east-1\ncredential_process = {}\n\
             [profile broken]\nregion = us-east-1\ncredential_process = {}\n",
            good.display(),
            bad.display()
        ),
        0o600,
    );

    let mut command = aws_user(&server, home.path());
    command.args(["--profile", "proc"]);
    let mount = PlainMount::with(command, BUCKET, &[]);
    mount.sh_ok("echo through-process > f && cat f");
    assert!(ran.exists(), "credential_process never ran");
    drop(mount);
    let stored = server.bucket(BUCKET);
    let body = server
        .runtime
        .block_on(scribefs::store::ObjectStore::get(
            stored.as_ref(),
            scribefs::store::GetRequest::whole("f"),
        ))
        .unwrap();
    let body = server.runtime.block_on(body.collect()).unwrap();
    assert_eq!(&body[..], b"through-process\n");

    let health = aws_user(&server, home.path()).segments(&["--profile", "broken"], "health");
    let line = one_error_line(&health);
    assert!(
        line.contains("credentials") && line.contains("profile \"broken\""),
        "{line}"
    );
    let dir = tempfile::tempdir().unwrap();
    let mount = aws_user(&server, home.path())
        .args(["--profile", "broken", "mount", BUCKET])
        .arg(dir.path())
        .output()
        .unwrap();
    let line = one_error_line(&mount);
    assert!(
        line.contains("credentials") && line.contains("broken"),
        "{line}"
    );
    assert!(!is_mounted(dir.path()));

    let empty = tempfile::tempdir().unwrap();
    let none = aws_user(&server, empty.path()).segments(&["--region", "us-east-1"], "ls");
    let line = one_error_line(&none);
    assert!(
        line.contains("no AWS credentials") && line.contains("default chain"),
        "{line}"
    );
}

fn regional_server(region: &str) -> Server {
    Server::start_with(DevServerConfig {
        region: Some(region.to_string()),
        ..DevServerConfig::for_tests(&[BUCKET])
    })
}

/// A bucket in another region mounts without `--region`: its HeadBucket's 301 names the
/// region, and everything after is signed for it (one HeadBucket more, nothing else). The
/// segment commands find it the same way. A region given explicitly is never overridden: the
/// error names the right one.
#[test]
fn a_bucket_in_another_region_is_found_without_region() {
    let server = regional_server("eu-west-2");
    let home = tempfile::tempdir().unwrap();
    let keys = |command: &mut Command| {
        command
            .env("S3_ACCESS_KEY_ID", ACCESS_KEY)
            .env("S3_SECRET_ACCESS_KEY", SECRET_KEY);
    };
    let mut command = aws_user(&server, home.path());
    keys(&mut command);
    let mount = PlainMount::with(command, BUCKET, &[]);
    assert_eq!(server.stats().head_bucket, 2, "{:?}", server.stats());
    mount.sh_ok("mkdir d && echo moved > d/f && mv d/f d/g && cat d/g >/dev/null && rm d/g");
    drop(mount);
    let requests = server.requests();
    let regions: Vec<Option<&str>> = requests
        .iter()
        .map(|r| r.signed_region.as_deref())
        .collect();
    assert_eq!(regions[0], Some("us-east-1"), "{requests:?}");
    assert!(
        regions[1..].iter().all(|r| *r == Some("eu-west-2")),
        "{regions:?}"
    );

    put_directly(&server, "segments/segment-000000000000002a.bin", b"x");
    let mut ls = aws_user(&server, home.path());
    keys(&mut ls);
    let output = ls.segments(&[], "ls");
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        "000000000000002a"
    );

    let mut explicit = aws_user(&server, home.path());
    keys(&mut explicit);
    let output = explicit.segments(&["--region", "us-east-1"], "health");
    let line = one_error_line(&output);
    assert!(
        line.contains("eu-west-2") && line.contains("--region"),
        "{line}"
    );
}

/// The profile's region is used as it is: no redirect, one HeadBucket.
#[test]
fn the_profiles_region_is_used() {
    let server = regional_server("ap-south-1");
    let home = tempfile::tempdir().unwrap();
    write_file(
        &home.path().join(".aws/config"),
        "[default]\nregion = ap-south-1\n",
        0o600,
    );
    let output = aws_user(&server, home.path())
        .env("S3_ACCESS_KEY_ID", ACCESS_KEY)
        .env("S3_SECRET_ACCESS_KEY", SECRET_KEY)
        .segments(&[], "health");
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(server.stats().head_bucket, 1);
}

const OPTIONS: &[(&str, &str)] = &[
    ("sse", "aws:kms"),
    (
        "sse_kms_key_id",
        "arn:aws:kms:us-east-1:111122223333:key/test-key",
    ),
    ("storage_class", "STANDARD_IA"),
    ("requester_pays", "true"),
    ("expected_bucket_owner", "111122223333"),
    ("user_agent_prefix", "ledger-backup/2.1"),
];

/// Each write (PUT, CreateMultipartUpload, CopyObject) carries the encryption and storage
/// class; every request carries who pays, the expected owner and the User-Agent prefix.
fn assert_headers(requests: &[RecordedRequest], spelling: &str) {
    let writes: Vec<&RecordedRequest> = requests
        .iter()
        .filter(|r| {
            matches!(r.operation, Operation::Put | Operation::Copy)
                || (r.operation == Operation::Multipart
                    && r.method == "POST"
                    && r.target.contains("uploads"))
        })
        .collect();
    assert!(!writes.is_empty(), "{spelling}: no writes recorded");
    for write in &writes {
        assert_eq!(
            write.header("x-amz-server-side-encryption"),
            Some("aws:kms"),
            "{spelling}: {write:?}"
        );
        assert_eq!(
            write.header("x-amz-server-side-encryption-aws-kms-key-id"),
            Some("arn:aws:kms:us-east-1:111122223333:key/test-key"),
            "{spelling}: {write:?}"
        );
        assert_eq!(
            write.header("x-amz-storage-class"),
            Some("STANDARD_IA"),
            "{spelling}: {write:?}"
        );
    }
    for request in requests {
        assert_eq!(
            request.header("x-amz-request-payer"),
            Some("requester"),
            "{spelling}: {request:?}"
        );
        assert_eq!(
            request.header("x-amz-expected-bucket-owner"),
            Some("111122223333"),
            "{spelling}: {request:?}"
        );
        assert!(
            request
                .header("user-agent")
                .is_some_and(|ua| ua.starts_with("ledger-backup/2.1 ")),
            "{spelling}: {request:?}"
        );
    }
}

/// The options as flags, as `-o` items, as `[mount]` keys and as SCRIBEFS_* variables: each
/// spelling puts the same headers on a small PUT, a multipart upload and a rename's copy.
#[test]
fn request_options_reach_the_server_in_every_spelling() {
    let server = Server::start(&[BUCKET]);
    let config_dir = tempfile::tempdir().unwrap();
    let toml: String = OPTIONS
        .iter()
        .map(|(key, value)| match *value {
            "true" => format!("{key} = true\n"),
            _ => format!("{key} = \"{value}\"\n"),
        })
        .collect();
    let config = config_dir.path().join("scribefs.toml");
    write_file(&config, &format!("[mount]\n{toml}"), 0o600);

    let flags: Vec<String> = OPTIONS
        .iter()
        .flat_map(|(key, value)| {
            let flag = format!("--{}", key.replace('_', "-"));
            match *value {
                "true" => vec![flag],
                _ => vec![flag, value.to_string()],
            }
        })
        .collect();
    let items: Vec<String> = OPTIONS
        .iter()
        .map(|(key, value)| match *value {
            "true" => key.to_string(),
            _ => format!("{key}={value}"),
        })
        .collect();
    let dash_o = vec!["-o".to_string(), items.join(",")];
    let file = vec!["--config".to_string(), config.display().to_string()];

    for (spelling, args, env) in [
        ("flags", flags, false),
        ("-o", dash_o, false),
        ("[mount]", file, false),
        ("environment", Vec::new(), true),
    ] {
        let mut command = scribefs(&server);
        if env {
            for (key, value) in OPTIONS {
                command.env(format!("SCRIBEFS_{}", key.to_ascii_uppercase()), value);
            }
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut all = vec!["--part-size", "5M"];
        all.extend(args);
        server.reset_stats();
        let mount = PlainMount::with(command, BUCKET, &all);
        mount.sh_ok(
            "echo small > s && head -c 12000000 /dev/zero > big && mv s renamed && ls -l >/dev/null",
        );
        drop(mount);
        let requests = server.requests();
        assert!(
            requests.iter().any(|r| r.operation == Operation::Copy),
            "{spelling}: no copy"
        );
        assert!(
            requests.iter().any(|r| r.operation == Operation::Multipart),
            "{spelling}: no multipart upload"
        );
        assert_headers(&requests, spelling);
    }
}

/// Bad values of the new options are one line and exit status 2, before anything is sent.
#[test]
fn bad_request_options_are_refused_by_name() {
    for (args, named) in [
        (vec!["--sse", "kms"], "--sse"),
        (vec!["--storage-class", "COLD"], "--storage-class"),
        (
            vec!["--expected-bucket-owner", "12"],
            "--expected-bucket-owner",
        ),
        (vec!["--sse-kms-key-id", "k"], "--sse"),
        (vec!["--user-agent-prefix", ""], "--user-agent-prefix"),
        (
            vec!["--negative-metadata-ttl", "-1"],
            "--negative-metadata-ttl",
        ),
        (vec!["--debug", "--log-level", "info"], "--debug"),
    ] {
        let output = Command::new(BIN)
            .args(["mount", "b", "/nonexistent"])
            .args(&args)
            .output()
            .unwrap();
        assert_eq!(
            output.status.code(),
            Some(2),
            "{args:?}: {}",
            stderr(&output)
        );
        let text = stderr(&output);
        assert!(
            text.starts_with("scribefs: error:") && text.contains(named),
            "{args:?}: {text}"
        );
    }
}

/// `--auto-unmount` (also `-o auto_unmount`): a mount process killed with SIGKILL leaves no
/// dead mount point behind; the kernel's mount goes with it.
#[test]
fn auto_unmount_leaves_no_dead_mount_point() {
    let server = Server::start(&[BUCKET]);
    for args in [["--auto-unmount"], ["-oauto_unmount"]] {
        let mount = PlainMount::with(scribefs(&server), BUCKET, &args);
        mount.sh_ok("echo x > f");
        let pid = mount_pid(mount.root());
        // SAFETY: kill sends a signal to a pid we found; it touches no memory.
        assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGKILL) }, 0);
        let deadline = Instant::now() + Duration::from_secs(20);
        while is_mounted(mount.root()) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        if is_mounted(mount.root()) {
            let ps = Command::new("ps")
                .args(["-eo", "pid,ppid,stat,args"])
                .output()
                .unwrap();
            panic!(
                "{args:?}: still mounted after killing {pid}:\n{}",
                String::from_utf8_lossy(&ps.stdout)
            );
        }
        assert!(
            std::fs::read_dir(mount.root()).is_ok(),
            "{args:?}: dead mount point"
        );
    }
}

/// A miss is trusted for `--negative-metadata-ttl`, not `--metadata-ttl`: with 0, a name
/// another client creates is seen at the next lookup; with the default (the metadata TTL,
/// 60 s here) it stays missing, without a request.
#[test]
fn negative_metadata_ttl_bounds_remembered_misses() {
    let server = Server::start(&[BUCKET]);
    let stat = |mount: &PlainMount, name: &str| mount.path(name).exists();
    for (args, seen) in [
        (
            vec!["--metadata-ttl", "60", "--negative-metadata-ttl", "0"],
            true,
        ),
        (vec!["--metadata-ttl", "60"], false),
    ] {
        let mount = PlainMount::with(scribefs(&server), BUCKET, &args);
        let name = if seen { "later-a" } else { "later-b" };
        // A lookup in a directory never listed: a HEAD and a windowed LIST, then a miss.
        assert!(!stat(&mount, &format!("d/{name}")));
        put_directly(&server, &format!("d/{name}"), b"x");
        server.reset_stats();
        assert_eq!(stat(&mount, &format!("d/{name}")), seen, "{args:?}");
        let asked = server.stats().total();
        if seen {
            assert!(asked > 0, "{args:?}: no request");
        } else {
            assert_eq!(asked, 0, "{args:?}: {:?}", server.stats());
        }
    }
}

/// `--debug` logs the requests (debug level) of a one-shot command on its stderr.
#[test]
fn debug_logs_at_debug_level() {
    let server = Server::start(&[BUCKET]);
    let output = scribefs(&server).segments(&["--debug"], "health");
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stderr(&output).contains("DEBUG"), "{}", stderr(&output));
}

/// `--max-memory-target` below the cache plus one upload's parts is one line naming it, before
/// anything is sent; one that fits mounts, and several large writes at once share it.
#[test]
fn max_memory_target_bounds_the_uploads_together() {
    let server = Server::start(&[BUCKET]);
    let dir = tempfile::tempdir().unwrap();
    let refused = scribefs(&server)
        .args(["mount", BUCKET])
        .arg(dir.path())
        .args(["--max-memory-target", "100"])
        .output()
        .unwrap();
    let line = one_error_line(&refused);
    assert!(line.contains("--max-memory-target 100"), "{line}");
    assert_eq!(server.stats().total(), 0, "{:?}", server.stats());

    let mount = PlainMount::with(
        scribefs(&server),
        BUCKET,
        &[
            "--max-memory-target",
            "120",
            "--cache-size-mib",
            "64",
            "--part-size",
            "5M",
        ],
    );
    mount.sh_ok(
        "for i in 1 2 3; do head -c 24000000 /dev/urandom > src$i; done && \
         for i in 1 2 3; do cp src$i copy$i & done; wait && \
         for i in 1 2 3; do cmp src$i copy$i; done",
    );
}

/// Web identity (EKS's IRSA): a token file and a role; STS, here a stub on loopback, trades
/// them for keys with a session token, which the mount then signs with.
#[test]
fn web_identity_credentials_come_from_sts() {
    let server = Server::start(&[BUCKET]);
    let sts_answer = format!(
        "<AssumeRoleWithWebIdentityResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">\
         <AssumeRoleWithWebIdentityResult><Credentials>\
         <AccessKeyId>{ACCESS_KEY}</AccessKeyId><SecretAccessKey>{SECRET_KEY}</SecretAccessKey>\
         <SessionToken>session-token</SessionToken><Expiration>2099-01-01T00:00:00Z</Expiration>\
         </Credentials><AssumedRoleUser><Arn>arn:aws:sts::123456789012:assumed-role/ledger/s</Arn>\
         <AssumedRoleUserId>AROAEXAMPLE:s</AssumedRoleUserId></AssumedRoleUser>\
         </AssumeRoleWithWebIdentityResult><ResponseMetadata><RequestId>1</RequestId>\
         </ResponseMetadata></AssumeRoleWithWebIdentityResponse>"
    );
    let sts = server
        .runtime
        .block_on(common::tiny_server::TinyServer::start(
            sts_answer.into_bytes(),
            Duration::ZERO,
        ));
    let home = tempfile::tempdir().unwrap();
    let token = home.path().join("token");
    write_file(&token, "eyJ.web.identity", 0o600);
    server.reset_stats();
    let output = aws_user(&server, home.path())
        .env("AWS_WEB_IDENTITY_TOKEN_FILE", &token)
        .env("AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/ledger")
        .env("AWS_ROLE_SESSION_NAME", "s")
        .env("AWS_ENDPOINT_URL_STS", &sts.endpoint)
        .segments(&["--region", "us-east-1"], "health");
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(sts.requests(), 1);
    let requests = server.requests();
    assert!(
        requests
            .iter()
            .all(|r| r.header("x-amz-security-token") == Some("session-token")),
        "{requests:?}"
    );
}

/// An IAM Identity Center (SSO) profile after `aws sso login`: the cached token is traded at
/// the SSO portal, here a stub on loopback, for the role's keys.
#[test]
fn sso_profiles_trade_the_cached_token_for_keys() {
    let server = Server::start(&[BUCKET]);
    let portal_answer = format!(
        "{{\"roleCredentials\": {{\"accessKeyId\": \"{ACCESS_KEY}\", \"secretAccessKey\": \"{SECRET_KEY}\", \
         \"sessionToken\": \"sso-session\", \"expiration\": 4102444800000}}}}"
    );
    let portal = server
        .runtime
        .block_on(common::tiny_server::TinyServer::start(
            portal_answer.into_bytes(),
            Duration::ZERO,
        ));
    let home = tempfile::tempdir().unwrap();
    let start_url = "https://ledger.awsapps.com/start";
    write_file(
        &home.path().join(".aws/config"),
        &format!(
            "[profile sso]\nsso_start_url = {start_url}\nsso_region = us-east-1\n\
             sso_account_id = 123456789012\nsso_role_name = ledger\nregion = us-east-1\n"
        ),
        0o600,
    );
    // `aws sso login` caches the token under the SHA-1 of the start URL.
    let sha1 = Command::new("sh")
        .arg("-c")
        .arg(format!("printf %s '{start_url}' | sha1sum | cut -d' ' -f1"))
        .output()
        .unwrap();
    let name = String::from_utf8_lossy(&sha1.stdout).trim().to_string();
    write_file(
        &home.path().join(format!(".aws/sso/cache/{name}.json")),
        &format!(
            "{{\"accessToken\": \"cached-token\", \"expiresAt\": \"2099-01-01T00:00:00Z\", \
             \"region\": \"us-east-1\", \"startUrl\": \"{start_url}\"}}"
        ),
        0o600,
    );
    let output = aws_user(&server, home.path())
        .env("AWS_ENDPOINT_URL_SSO", &portal.endpoint)
        .segments(&["--profile", "sso"], "health");
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(portal.requests(), 1);
    assert!(
        server
            .requests()
            .iter()
            .all(|r| r.header("x-amz-security-token") == Some("sso-session")),
        "{:?}",
        server.requests()
    );
}
