//! Mount options a user sets on the command line, each checked through a real mount.

mod common;

use std::io::ErrorKind;
use std::os::unix::fs::{MetadataExt, PermissionsExt};

use common::devserver::Server;
use common::mount::{BUCKET, Mount, put_directly};

#[test]
fn owner_and_mode_options_apply_to_files_without_metadata() {
    let server = Server::start(&[BUCKET]);
    put_directly(&server, "dir/file", b"x");
    let args = [
        "--uid",
        "1234",
        "--gid",
        "4321",
        "--dir-mode",
        "700",
        "--file-mode",
        "600",
    ];
    let mount = Mount::on(server, BUCKET, &args);
    let dir = std::fs::metadata(mount.path("dir")).unwrap();
    assert_eq!((dir.uid(), dir.gid()), (1234, 4321));
    assert_eq!(dir.permissions().mode() & 0o7777, 0o700);
    let file = std::fs::metadata(mount.path("dir/file")).unwrap();
    assert_eq!((file.uid(), file.gid()), (1234, 4321));
    assert_eq!(file.permissions().mode() & 0o7777, 0o600);
    assert!(file.is_file() && dir.is_dir());
}

#[test]
fn dash_o_ro_makes_the_mount_read_only() {
    let mount = Mount::new(&["-o", "ro"]);
    let error = std::fs::write(mount.path("f"), b"x").unwrap_err();
    assert_eq!(error.raw_os_error(), Some(libc::EROFS));
    assert!(mount.server.bucket(BUCKET).keys().is_empty());
}

#[test]
fn prefix_roots_the_mount_below_a_key_prefix() {
    let server = Server::start(&[BUCKET]);
    put_directly(&server, "data/inside.txt", b"in");
    put_directly(&server, "outside.txt", b"out");
    let mount = Mount::on(server, BUCKET, &["--prefix", "data/"]);
    let names: Vec<String> = std::fs::read_dir(mount.root())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, vec!["inside.txt"]);
    std::fs::write(mount.path("new.txt"), b"new").unwrap();
    let object = mount
        .server
        .bucket(BUCKET)
        .object("data/new.txt")
        .expect("written under the prefix");
    assert_eq!(object.data.as_ref(), b"new");
}

#[test]
fn indefinite_ttl_keeps_listings_until_this_mount_changes_them() {
    let server = Server::start(&[BUCKET]);
    put_directly(&server, "a", b"1");
    let mount = Mount::on(server, BUCKET, &["--metadata-ttl", "indefinite"]);
    assert_eq!(std::fs::read_dir(mount.root()).unwrap().count(), 1);
    // Another client's new object stays unseen: the listing is trusted for ever.
    put_directly(&mount.server, "b", b"2");
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let error = std::fs::metadata(mount.path("b")).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::NotFound);
    // A change through this mount shows at once.
    std::fs::write(mount.path("c"), b"3").unwrap();
    let mut names: Vec<String> = std::fs::read_dir(mount.root())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, vec!["a", "c"]);
}

#[test]
fn small_blocks_and_a_tiny_cache_still_read_every_byte() {
    let server = Server::start(&[BUCKET]);
    let data: Vec<u8> = (0..3_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    put_directly(&server, "big.bin", &data);
    let mount = Mount::on(
        server,
        BUCKET,
        &["--block-size", "256K", "--cache-size-mib", "1"],
    );
    assert_eq!(std::fs::read(mount.path("big.bin")).unwrap(), data);
    assert_eq!(std::fs::read(mount.path("big.bin")).unwrap(), data);
}

#[test]
fn bad_option_values_are_refused_with_one_line() {
    let server = Server::start(&[BUCKET]);
    let dir = tempfile::tempdir().unwrap();
    for args in [
        vec!["--metadata-ttl", "soon"],
        vec!["--block-size", "lots"],
        vec!["--file-mode", "999"],
        vec!["--part-size", "1M"],
    ] {
        let output = common::mount::scribefs(&server)
            .arg("mount")
            .arg(BUCKET)
            .arg(dir.path())
            .args(&args)
            .output()
            .unwrap();
        assert!(!output.status.success(), "{args:?} accepted");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(args[1]), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(!common::mount::is_mounted(dir.path()));
    }
    // A value outside a list keeps clap's list of the valid ones, on a line of its own.
    let output = common::mount::scribefs(&server)
        .arg("mount")
        .arg(BUCKET)
        .arg(dir.path())
        .args(["--layout", "tree"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.starts_with("scribefs: error: "), "{stderr}");
    assert!(
        stderr.contains("[possible values: keys, segments]"),
        "{stderr}"
    );
    assert!(!common::mount::is_mounted(dir.path()));
}
