//! The write budget through a real mount, on the dev server over HTTP: the buffers writers are
//! filling count in the one budget all uploads of the mount share, a writer waits for memory
//! when it is full, and that wait holds up no other writer's close.

mod common;

use std::fs::File;
use std::io::Write;
use std::time::{Duration, Instant};

use common::mount::{BUCKET, Mount, scrape};

const MIB: usize = 1 << 20;
const WAITING: &str = "scribefs_uploads_waiting_for_memory";

fn content(seed: usize, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| ((i * 31 + seed * 7) % 251) as u8)
        .collect()
}

fn metrics_addr() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    format!("127.0.0.1:{}", listener.local_addr().unwrap().port())
}

/// Waits for the mount's gauge of writers waiting for memory to read `n`.
fn until_waiting(addr: &str, n: f64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while scrape(addr)[WAITING] != n {
        assert!(Instant::now() < deadline, "{WAITING} never reached {n}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `--part-size 5M --cache-size-mib 1 --max-memory-target 46` leaves the uploads 45 MiB: nine
/// files of one 5 MiB part, held open, hold all of it in the buffers they filled (a part leaves
/// only when more follows or at close). 5 MiB parts are what crowded uploads get anyway, so
/// the part size stays the same however many writers share the budget. A tenth writer then waits for memory, and closing one of the nine
/// still completes: its PutObject needs no more memory than its buffer holds. The memory it
/// gives back lets the tenth go on.
#[test]
fn a_writer_waiting_for_memory_does_not_block_another_close() {
    let addr = metrics_addr();
    let mount = Mount::new(&[
        "--part-size",
        "5M",
        "--cache-size-mib",
        "1",
        "--max-memory-target",
        "46",
        "--metrics-addr",
        &addr,
    ]);
    let mut held: Vec<(String, File)> = (0..9)
        .map(|i| {
            let name = format!("held-{i}");
            let mut file = File::create(mount.path(&name)).unwrap();
            file.write_all(&content(i, 5 * MIB)).unwrap();
            (name, file)
        })
        .collect();
    assert_eq!(scrape(&addr)[WAITING], 0.0);

    let tenth_path = mount.path("tenth");
    let tenth = std::thread::spawn(move || {
        let mut file = File::create(tenth_path).unwrap();
        file.write_all(&content(10, 3 * MIB)).unwrap();
        file.sync_all().unwrap();
    });
    until_waiting(&addr, 1.0);
    assert!(!tenth.is_finished());

    let (name, first) = held.remove(0);
    drop(first); // close(2): flush uploads the file, and returns once S3 has it
    let bucket = mount.server.bucket(BUCKET);
    assert_eq!(bucket.object(&name).unwrap().data, content(0, 5 * MIB));

    tenth.join().unwrap();
    assert_eq!(bucket.object("tenth").unwrap().data, content(10, 3 * MIB));
    for (name, file) in held {
        file.sync_all().unwrap();
        let seed: usize = name.trim_start_matches("held-").parse().unwrap();
        assert_eq!(bucket.object(&name).unwrap().data, content(seed, 5 * MIB));
    }
    assert_eq!(scrape(&addr)[WAITING], 0.0);
}
