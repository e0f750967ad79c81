//! Starts moto's S3 server on a free loopback port, once per test binary.
//!
//! The server must never outlive the tests: it is started with `PR_SET_PDEATHSIG = SIGKILL`,
//! which fires when the *thread* that spawned it ends, so the spawning thread is a keeper that
//! waits on the child for as long as the test process lives. When the process exits, the kernel
//! kills moto.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// Runs `moto.server` after one fix: moto 5.x names the root element of a
/// CompleteMultipartUpload answer `CompleteMultipartUploadResponse`, where S3 sends
/// `CompleteMultipartUploadResult`; botocore does not care, but the Rust SDK rejects it.
const LAUNCH: &str = r#"
import sys
from moto.core import serialize

_serialize = serialize.S3Serializer._serialized_result_to_response

def _with_s3_root(self, resp, result, shape, serialized_result):
    if shape is not None and self.operation_model.name == "CompleteMultipartUpload":
        shape.serialization.setdefault("resultWrapper", "CompleteMultipartUploadResult")
    return _serialize(self, resp, result, shape, serialized_result)

serialize.S3Serializer._serialized_result_to_response = _with_s3_root

from moto.server import main
main(sys.argv[1:])
"#;

pub struct Moto {
    /// `http://127.0.0.1:PORT`
    pub endpoint: String,
}

/// The shared moto server: accepts any credentials.
pub fn shared() -> &'static Moto {
    static SHARED: OnceLock<Moto> = OnceLock::new();
    SHARED.get_or_init(|| start(&[]))
}

/// A second moto server that checks credentials from the first request on (its IAM knows no
/// access keys, so every signed request is refused with 403).
pub fn checking_credentials() -> &'static Moto {
    static CHECKING: OnceLock<Moto> = OnceLock::new();
    CHECKING.get_or_init(|| start(&[("INITIAL_NO_AUTH_ACTION_COUNT", "0")]))
}

/// A loopback port nothing listens on right now.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// The real interpreter: `python3` may be a shim that would stand between us and moto.
fn python() -> String {
    let output = Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .expect("python3 must be installed for the moto tests");
    String::from_utf8(output.stdout).unwrap().trim().to_string()
}

fn start(env: &[(&str, &str)]) -> Moto {
    let port = free_port();
    let python = python();
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let (started, spawned) = mpsc::channel();
    let exited = Arc::new(AtomicBool::new(false));
    let exited_in_keeper = Arc::clone(&exited);
    std::thread::Builder::new()
        .name(format!("moto-keeper-{port}"))
        .spawn(move || {
            let parent = std::process::id() as libc::pid_t;
            let mut command = Command::new(python);
            command
                .args(["-c", LAUNCH, "-H", "127.0.0.1", "-p", &port.to_string()])
                .envs(env)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            // SAFETY: only async-signal-safe calls between fork and exec.
            unsafe {
                command.pre_exec(move || {
                    if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    // The parent may have died before the prctl took effect.
                    if libc::getppid() != parent {
                        libc::_exit(1);
                    }
                    Ok(())
                });
            }
            match command.spawn() {
                Ok(mut child) => {
                    started.send(Ok(())).unwrap();
                    let status = child.wait();
                    exited_in_keeper.store(true, Ordering::SeqCst);
                    eprintln!("moto on port {port} exited: {status:?}");
                }
                Err(err) => started.send(Err(err)).unwrap(),
            }
        })
        .unwrap();
    spawned.recv().unwrap().expect("cannot start moto");
    wait_until_listening(port, &exited);
    Moto {
        endpoint: format!("http://127.0.0.1:{port}"),
    }
}

fn wait_until_listening(port: u16, exited: &AtomicBool) {
    let address = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + Duration::from_secs(60);
    while TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_err() {
        assert!(
            !exited.load(Ordering::SeqCst),
            "moto exited before listening on port {port}"
        );
        assert!(
            Instant::now() < deadline,
            "moto did not start listening on port {port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
