//! First real mounts: the basics every other mount test builds on.

mod common;

use common::mount::Mount;

#[test]
fn write_list_read_remove_through_a_real_mount() {
    let mount = Mount::new(&[]);
    std::fs::write(mount.path("hello.txt"), b"hello world\n").unwrap();
    let listed: Vec<String> = std::fs::read_dir(mount.root())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(listed, vec!["hello.txt"]);
    assert_eq!(
        std::fs::read(mount.path("hello.txt")).unwrap(),
        b"hello world\n"
    );
    let object = mount
        .server
        .bucket("test")
        .object("hello.txt")
        .expect("uploaded at close");
    assert_eq!(object.data.as_ref(), b"hello world\n");
    std::fs::remove_file(mount.path("hello.txt")).unwrap();
    assert!(mount.server.bucket("test").object("hello.txt").is_none());
}
