//! The segment view (`--layout segments`) through a real mount, on a dev server seeded with
//! demo Scribe Ledger segments: what `ls`, `cat`, `cp`, `rm` and xattrs do, and what is refused.

mod common;

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use common::devserver::Server;
use common::mount::{BUCKET, Mount, assert_fails_with, free_local_addr, fuse_ops, put_directly};
use scribefs::devserver::DevServerConfig;
use scribefs::segment::{SegmentFile, file_name};

/// Ids of the four demo segments the dev server seeds (0x1000 + i*7 + (i%3)*2).
const SEEDED: [u64; 4] = [0x1000, 0x1009, 0x1012, 0x1015];

fn seeded_server() -> Server {
    Server::start_with(DevServerConfig {
        seed_segments: SEEDED.len(),
        ..DevServerConfig::for_tests(&[BUCKET])
    })
}

fn object_bytes(mount: &Mount, key: &str) -> Option<Vec<u8>> {
    mount
        .server
        .bucket(BUCKET)
        .object(key)
        .map(|o| o.data.to_vec())
}

fn data_name(id: u64) -> String {
    file_name(id, SegmentFile::Data)
}

fn meta_name(id: u64) -> String {
    file_name(id, SegmentFile::Meta)
}

/// Names in the order readdir returns them (no sorting by the caller).
fn readdir_order(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

/// getxattr(2) of `name` on `path`, as bytes.
fn getxattr(path: &Path, name: &str) -> std::io::Result<Vec<u8>> {
    let path = CString::new(path.as_os_str().as_bytes()).unwrap();
    let name = CString::new(name).unwrap();
    let mut buffer = vec![0u8; 256];
    // SAFETY: both strings are NUL-terminated and the buffer is writable for its length.
    let len = unsafe {
        libc::getxattr(
            path.as_ptr(),
            name.as_ptr(),
            buffer.as_mut_ptr().cast(),
            buffer.len(),
        )
    };
    if len < 0 {
        return Err(std::io::Error::last_os_error());
    }
    buffer.truncate(len as usize);
    Ok(buffer)
}

#[test]
fn ls_shows_only_segment_files_in_id_order() {
    let server = seeded_server();
    // Stray keys the view must hide, and a short-hex segment whose name sorts after the others
    // but whose id (0xff) is the smallest.
    put_directly(&server, "segments/notes.txt", b"not a segment\n");
    put_directly(&server, "segments/sub/x", b"nested\n");
    put_directly(&server, "segments/segment-zz.bin", b"bad hex\n");
    put_directly(&server, "segments/segment-ff.bin", b"short id\n");
    put_directly(
        &server,
        "elsewhere/segment-0000000000000001.bin",
        b"other prefix\n",
    );
    let mount = Mount::on(server, BUCKET, &["--layout", "segments"]);

    let mut want = vec!["segment-ff.bin".to_string()];
    for id in SEEDED {
        want.push(data_name(id));
        want.push(meta_name(id));
    }
    assert_eq!(readdir_order(mount.root()), want);
    assert_eq!(mount.sh_ok("ls -U"), want.join("\n") + "\n");
    assert_fails_with(&mount, "cat notes.txt", "No such file or directory");
    assert_fails_with(&mount, "ls sub", "No such file or directory");
}

#[test]
fn cat_and_sha256sum_of_segments_match_the_bucket() {
    let mount = Mount::on(seeded_server(), BUCKET, &["--layout", "segments"]);
    let mut sums = String::new();
    for id in SEEDED {
        for name in [data_name(id), meta_name(id)] {
            let want = object_bytes(&mount, &format!("segments/{name}")).unwrap();
            let cat = mount.sh(&format!("cat {name}"));
            assert!(cat.status.success());
            assert!(cat.stdout == want, "cat {name} differs from the bucket");
            let local = tempfile::NamedTempFile::new().unwrap();
            std::fs::write(local.path(), &want).unwrap();
            let sum = mount.sh_ok(&format!("sha256sum < {}", local.path().display()));
            sums.push_str(&format!(
                "{}  {name}\n",
                sum.split_whitespace().next().unwrap()
            ));
        }
    }
    let list = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(list.path(), &sums).unwrap();
    let checked = mount.sh_ok(&format!("sha256sum -c {}", list.path().display()));
    assert_eq!(checked.matches(": OK").count(), SEEDED.len() * 2);
    // Sizes in `ls -l` are the objects' sizes.
    let size = mount.sh_ok(&format!("stat -c %s {}", data_name(SEEDED[1])));
    let want = object_bytes(&mount, &format!("segments/{}", data_name(SEEDED[1]))).unwrap();
    assert_eq!(size.trim(), want.len().to_string());
}

#[test]
fn names_that_are_not_segments_and_directories_are_refused_with_einval() {
    let mount = Mount::on(seeded_server(), BUCKET, &["--layout", "segments"]);
    assert_fails_with(&mount, "touch notes.txt", "Invalid argument");
    assert_fails_with(&mount, "echo x > notes.txt", "Invalid argument");
    assert_fails_with(&mount, "mkdir sub", "Invalid argument");
    assert_fails_with(
        &mount,
        "mkdir segment-0000000000000abc.bin",
        "Invalid argument",
    );
    // rename(2) itself: mv words EINVAL as "cannot move ... to a subdirectory of itself".
    let renamed = std::fs::rename(mount.path(&data_name(SEEDED[0])), mount.path("notes.txt"));
    assert_eq!(renamed.unwrap_err().raw_os_error(), Some(libc::EINVAL));
    let keys = mount.server.bucket(BUCKET).keys();
    assert_eq!(keys.len(), SEEDED.len() * 2, "{keys:?}");
    assert!(
        keys.iter()
            .all(|k| !k.contains("notes") && !k.contains("sub"))
    );
}

#[test]
fn existing_segments_are_immutable_without_allow_overwrite() {
    let mount = Mount::on(seeded_server(), BUCKET, &["--layout", "segments"]);
    let name = data_name(SEEDED[0]);
    let key = format!("segments/{name}");
    let before = object_bytes(&mount, &key).unwrap();
    assert_fails_with(
        &mount,
        &format!("echo x >> {name}"),
        "Operation not permitted",
    );
    assert_fails_with(
        &mount,
        &format!("echo x > {name}"),
        "Operation not permitted",
    );
    assert_fails_with(
        &mount,
        &format!("truncate -s 1 {name}"),
        "Operation not permitted",
    );
    assert_fails_with(
        &mount,
        &format!("printf X | dd of={name} conv=notrunc status=none"),
        "Operation not permitted",
    );
    assert!(object_bytes(&mount, &key).unwrap() == before);
    assert!(mount.sh(&format!("cat {name}")).stdout == before);
}

#[test]
fn allow_overwrite_lets_writers_replace_segments() {
    let mount = Mount::on(
        seeded_server(),
        BUCKET,
        &["--layout", "segments", "--allow-overwrite"],
    );
    let name = data_name(SEEDED[2]);
    let key = format!("segments/{name}");
    let mut want = object_bytes(&mount, &key).unwrap();
    mount.sh_ok(&format!("printf appended >> {name}"));
    want.extend_from_slice(b"appended");
    assert!(object_bytes(&mount, &key).unwrap() == want);

    mount.sh_ok(&format!("printf replaced > {name}"));
    assert_eq!(object_bytes(&mount, &key).unwrap(), b"replaced");
    assert_eq!(mount.sh_ok(&format!("cat {name}")), "replaced");
    mount.sh_ok(&format!("truncate -s 3 {name}"));
    assert_eq!(object_bytes(&mount, &key).unwrap(), b"rep");

    let new = data_name(0x5000);
    mount.sh_ok(&format!("printf renamed > {new} && mv {new} {name}"));
    assert_eq!(object_bytes(&mount, &key).unwrap(), b"renamed");
    assert!(object_bytes(&mount, &format!("segments/{new}")).is_none());
}

#[test]
fn cp_creates_a_new_segment_and_rm_deletes_one() {
    let mount = Mount::on(seeded_server(), BUCKET, &["--layout", "segments"]);
    let local = tempfile::tempdir().unwrap();
    let body: Vec<u8> = (0..200_000u32).map(|i| (i * 31 % 251) as u8).collect();
    std::fs::write(local.path().join("new.bin"), &body).unwrap();
    std::fs::write(local.path().join("new.meta.json"), b"{\"id\":8192}\n").unwrap();
    let id = 0x2000;
    mount.sh_ok(&format!(
        "cp {0}/new.bin {1} && cp {0}/new.meta.json {2}",
        local.path().display(),
        data_name(id),
        meta_name(id)
    ));
    assert!(object_bytes(&mount, &format!("segments/{}", data_name(id))).unwrap() == body);
    assert_eq!(
        object_bytes(&mount, &format!("segments/{}", meta_name(id))).unwrap(),
        b"{\"id\":8192}\n"
    );
    let listed = readdir_order(mount.root());
    assert_eq!(
        &listed[listed.len() - 2..],
        &[data_name(id), meta_name(id)],
        "the new segment sorts last by id"
    );
    mount.sh_ok(&format!(
        "cmp {}/new.bin {}",
        local.path().display(),
        data_name(id)
    ));

    mount.sh_ok(&format!(
        "rm {} {}",
        data_name(SEEDED[1]),
        meta_name(SEEDED[1])
    ));
    assert!(object_bytes(&mount, &format!("segments/{}", data_name(SEEDED[1]))).is_none());
    assert!(object_bytes(&mount, &format!("segments/{}", meta_name(SEEDED[1]))).is_none());
    assert!(!readdir_order(mount.root()).contains(&data_name(SEEDED[1])));
    assert_fails_with(
        &mount,
        &format!("cat {}", data_name(SEEDED[1])),
        "No such file or directory",
    );
}

#[test]
fn segment_id_xattr_is_the_decimal_id() {
    let mount = Mount::on(seeded_server(), BUCKET, &["--layout", "segments"]);
    for id in SEEDED {
        for name in [data_name(id), meta_name(id)] {
            let value = getxattr(&mount.path(&name), "user.scribe.segment_id").unwrap();
            assert_eq!(String::from_utf8(value).unwrap(), id.to_string(), "{name}");
        }
    }
    let missing = getxattr(&mount.path(&data_name(SEEDED[0])), "user.other").unwrap_err();
    assert_eq!(missing.raw_os_error(), Some(libc::ENODATA));
    // No labels or ACLs: EOPNOTSUPP, as on a local file system without them.
    for name in ["security.selinux", "system.posix_acl_access", "trusted.x"] {
        let unsupported = getxattr(&mount.path(&data_name(SEEDED[0])), name).unwrap_err();
        assert_eq!(unsupported.raw_os_error(), Some(libc::EOPNOTSUPP), "{name}");
    }
}

/// `ls -l` asks for a security label and an ACL per file; EOPNOTSUPP on the first makes it stop
/// asking for the whole mount, so listing many segments costs no xattr request per file.
#[test]
fn ls_l_asks_for_no_xattr_per_file() {
    let addr = free_local_addr();
    let args = ["--layout", "segments", "--metrics-addr", &addr];
    let mount = Mount::on(seeded_server(), BUCKET, &args);
    let listed = mount.sh_ok("LC_ALL=C ls -l | wc -l");
    assert_eq!(listed.trim(), (2 * SEEDED.len() + 1).to_string());
    // The root's label and its two ACLs at most; nothing per file.
    let asked = fuse_ops(&addr, "getxattr") + fuse_ops(&addr, "listxattr");
    assert!(asked <= 3.0, "{asked} xattr requests for ls -l");
}

#[test]
fn prefix_roots_the_view_elsewhere() {
    let server = seeded_server();
    put_directly(&server, "other/segment-0000000000000007.bin", b"seven");
    put_directly(&server, "other/segment-0000000000000007.meta.json", b"{}");
    put_directly(&server, "other/segment-0000000000000003.bin", b"three");
    put_directly(&server, "other/readme.txt", b"hidden");
    let mount = Mount::on(
        server,
        BUCKET,
        &["--layout", "segments", "--prefix", "other/"],
    );
    assert_eq!(
        readdir_order(mount.root()),
        vec![data_name(3), data_name(7), meta_name(7)]
    );
    assert_eq!(mount.sh_ok(&format!("cat {}", data_name(7))), "seven");
    let value = getxattr(&mount.path(&data_name(7)), "user.scribe.segment_id").unwrap();
    assert_eq!(value, b"7");
    mount.sh_ok(&format!("printf nine > {}", data_name(9)));
    assert_eq!(
        object_bytes(&mount, &format!("other/{}", data_name(9))).unwrap(),
        b"nine"
    );
    assert!(object_bytes(&mount, &format!("segments/{}", data_name(9))).is_none());
}

#[test]
fn rsync_writes_new_segments_through_its_temporary_names() {
    let mount = Mount::on(seeded_server(), BUCKET, &["--layout", "segments"]);
    let local = tempfile::tempdir().unwrap();
    let body: Vec<u8> = (0..50_000u32).map(|i| (i * 7 % 253) as u8).collect();
    let id = 0x3000;
    std::fs::write(local.path().join(data_name(id)), &body).unwrap();
    std::fs::write(local.path().join(meta_name(id)), b"{}\n").unwrap();
    mount.sh_ok(&format!("rsync -a {}/ ./", local.path().display()));
    assert!(object_bytes(&mount, &format!("segments/{}", data_name(id))).unwrap() == body);
    assert_eq!(
        object_bytes(&mount, &format!("segments/{}", meta_name(id))).unwrap(),
        b"{}\n"
    );
    let keys = mount.server.bucket(BUCKET).keys();
    assert_eq!(
        keys.len(),
        (SEEDED.len() + 1) * 2,
        "temporaries left: {keys:?}"
    );
}

#[test]
fn mv_onto_an_existing_segment_is_refused_without_allow_overwrite() {
    let mount = Mount::on(seeded_server(), BUCKET, &["--layout", "segments"]);
    let target = data_name(SEEDED[3]);
    let key = format!("segments/{target}");
    let before = object_bytes(&mount, &key).unwrap();
    let new = data_name(0x4000);
    mount.sh_ok(&format!("printf new > {new}"));
    assert_fails_with(
        &mount,
        &format!("mv {new} {target}"),
        "Operation not permitted",
    );
    assert!(object_bytes(&mount, &key).unwrap() == before);
    assert_eq!(
        object_bytes(&mount, &format!("segments/{new}")).unwrap(),
        b"new"
    );

    // Renaming to a free segment name is a create plus an rm, both allowed.
    let free = data_name(0x4001);
    mount.sh_ok(&format!("mv {new} {free}"));
    assert_eq!(
        object_bytes(&mount, &format!("segments/{free}")).unwrap(),
        b"new"
    );
    assert!(object_bytes(&mount, &format!("segments/{new}")).is_none());
}
