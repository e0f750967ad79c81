//! The mount helper's command line, rewritten into ours before clap sees it.
//!
//! `mount -t fuse.scribefs BUCKET DIR -o OPTS` (and an /etc/fstab line) makes mount.fuse3 run
//! `scribefs BUCKET DIR -o OPTS`. So a first argument that is no subcommand means `mount`, and
//! each `-o` item becomes the long flag of the same name (`cache_size_mib=64` is
//! `--cache-size-mib 64`), stays a FUSE option (`allow_other`, `nodev`, ...), or is dropped when
//! it only concerns mount(8) or systemd (`_netdev`, `nofail`, `x-systemd.*`, ...).

use std::ffi::OsString;

/// Options of mount(8), fstab and systemd that mean nothing to the file system itself.
const IGNORED: &[&str] = &[
    "rw",
    "auto",
    "noauto",
    "user",
    "users",
    "nouser",
    "owner",
    "group",
    "defaults",
    "_netdev",
    "nofail",
    "async",
    "sync",
    "atime",
    "noatime",
    "relatime",
    "norelatime",
    "strictatime",
    "nodiratime",
    "lazytime",
    "nolazytime",
    "loud",
    "silent",
];

/// Options handed to the kernel (through fuser) as they are.
pub const FUSE_OPTIONS: &[&str] = &[
    "allow_other",
    "allow_root",
    "default_permissions",
    "dev",
    "nodev",
    "suid",
    "nosuid",
    "exec",
    "noexec",
];

/// A long flag of the command line: its name with underscores, and whether it takes a value.
#[derive(Debug, Clone)]
pub struct Flag {
    pub key: String,
    pub takes_value: bool,
}

/// Every long flag `scribefs mount` accepts (its own and the global ones), keyed the way a
/// `-o` item or a config file spells it.
pub fn mount_flags(command: &clap::Command) -> Vec<Flag> {
    let mount = command.find_subcommand("mount");
    command
        .get_arguments()
        .chain(mount.into_iter().flat_map(|m| m.get_arguments()))
        .filter_map(|arg| {
            let long = arg.get_long()?;
            if matches!(long, "help" | "version") {
                return None;
            }
            Some(Flag {
                key: long.replace('-', "_"),
                takes_value: arg.get_action().takes_values(),
            })
        })
        .collect()
}

/// Rewrites `args` (program name first) into the `scribefs mount ...` form with long flags.
pub fn normalize(args: Vec<OsString>, command: &clap::Command) -> Result<Vec<OsString>, String> {
    let mut args = args;
    let is_subcommand = |arg: &OsString| {
        let name = arg.to_string_lossy();
        name == "help" || command.find_subcommand(name.as_ref()).is_some()
    };
    if let Some(first) = args.get(1)
        && !first.to_string_lossy().starts_with('-')
        && !is_subcommand(first)
    {
        args.insert(1, OsString::from("mount"));
    }
    let Some(mount_at) = args.iter().position(|a| a == "mount") else {
        return Ok(args);
    };
    let flags = mount_flags(command);
    let mut out: Vec<OsString> = args[..=mount_at].to_vec();
    let mut rest = args.into_iter().skip(mount_at + 1);
    while let Some(arg) = rest.next() {
        let text = arg.to_string_lossy().into_owned();
        let list = if text == "-o" {
            match rest.next() {
                Some(value) => value.to_string_lossy().into_owned(),
                None => return Err("-o needs a comma-separated list of options".into()),
            }
        } else if let Some(list) = text.strip_prefix("-o")
            && !text.starts_with("--")
        {
            list.to_string()
        } else {
            out.push(arg);
            continue;
        };
        for item in list.split(',').filter(|item| !item.is_empty()) {
            out.extend(translate(item, &flags)?);
        }
    }
    Ok(out)
}

/// One `-o` item as the arguments it stands for.
fn translate(item: &str, flags: &[Flag]) -> Result<Vec<OsString>, String> {
    let (key, value) = match item.split_once('=') {
        Some((key, value)) => (key, Some(value)),
        None => (item, None),
    };
    if IGNORED.contains(&key) || key.starts_with("x-") || key == "comment" {
        return Ok(Vec::new());
    }
    if key == "ro" {
        return Ok(vec!["--read-only".into()]);
    }
    // Flags first: allow_other and allow_root have flags of their own.
    if let Some(flag) = flags.iter().find(|f| f.key == key) {
        return match (flag.takes_value, value) {
            (true, Some(value)) => Ok(vec![format!("--{}={value}", key.replace('_', "-")).into()]),
            (true, None) => Err(format!("mount option {key} needs a value ({key}=...)")),
            (false, None) => Ok(vec![format!("--{}", key.replace('_', "-")).into()]),
            (false, Some(value)) => match super::config::parse_bool(value) {
                Some(true) => Ok(vec![format!("--{}", key.replace('_', "-")).into()]),
                Some(false) => Ok(Vec::new()),
                None => Err(format!(
                    "mount option {item}: {value:?} is not true or false"
                )),
            },
        };
    }
    if FUSE_OPTIONS.contains(&key) && value.is_none() || key == "fsname" || key == "subtype" {
        return Ok(vec!["-o".into(), item.into()]);
    }
    Err(format!(
        "unknown mount option {item:?} (see scribefs mount --help; every --flag is also -o flag)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn run(args: &[&str]) -> Result<Vec<String>, String> {
        let args = args.iter().map(OsString::from).collect();
        normalize(args, &super::super::args::Cli::command()).map(|out| {
            out.into_iter()
                .map(|a| a.to_string_lossy().into_owned())
                .collect()
        })
    }

    #[test]
    fn mount_helper_form_becomes_mount_with_long_flags() {
        let out = run(&[
            "scribefs",
            "bucket",
            "/mnt",
            "-o",
            "rw,nosuid,nodev,endpoint_url=http://h:1,read_only,_netdev,nofail,x-systemd.automount,\
             cache_size_mib=64,allow_other,force_path_style,foreground=false",
        ])
        .unwrap();
        assert_eq!(
            out,
            [
                "scribefs",
                "mount",
                "bucket",
                "/mnt",
                "-o",
                "nosuid",
                "-o",
                "nodev",
                "--endpoint-url=http://h:1",
                "--read-only",
                "--cache-size-mib=64",
                "--allow-other",
                "--force-path-style",
            ]
        );
    }

    #[test]
    fn subcommands_and_plain_flags_are_left_alone() {
        let segments = ["scribefs", "--bucket", "b", "segments", "ls"];
        assert_eq!(run(&segments).unwrap(), segments);
        let mount = ["scribefs", "mount", "b", "/m", "--prefix", "p/", "-oro"];
        assert_eq!(
            run(&mount).unwrap(),
            [
                "scribefs",
                "mount",
                "b",
                "/m",
                "--prefix",
                "p/",
                "--read-only"
            ]
        );
    }

    #[test]
    fn unknown_options_and_missing_values_are_errors() {
        let err = run(&["scribefs", "b", "/m", "-o", "bogus"]).unwrap_err();
        assert!(err.contains("bogus"), "{err}");
        let err = run(&["scribefs", "b", "/m", "-o", "prefix"]).unwrap_err();
        assert!(err.contains("needs a value"), "{err}");
        assert!(run(&["scribefs", "b", "/m", "-o"]).is_err());
    }
}
