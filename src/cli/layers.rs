//! Gives every flag two more sources: the environment (`SCRIBEFS_<FLAG>`) and the `[mount]`
//! table of the `--config` file (keys are the flag names with underscores). Precedence is
//! flags > environment > file > defaults: a value from a lower source is appended to the
//! command line only when the higher ones left that flag unset. The `[storage.s3]` connection
//! settings keep their own layering in `config`.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::parser::ValueSource;

use super::options::mount_flags;

/// Flags that `[storage.s3]` and the S3_* variables already cover.
const CONNECTION_KEYS: &[&str] = &[
    "endpoint_url",
    "force_path_style",
    "region",
    "bucket",
    "max_retries",
    "timeout_secs",
    "pool_size",
    "config",
];

/// The environment variable standing for a flag key, e.g. `SCRIBEFS_CACHE_SIZE_MIB`.
pub fn env_name(key: &str) -> String {
    format!("SCRIBEFS_{}", key.to_ascii_uppercase())
}

/// `argv` plus the flags the environment and the config file set. Parse errors are left for
/// the real parse to report.
pub fn apply(
    argv: Vec<OsString>,
    command: clap::Command,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<OsString>, String> {
    let Ok(root) = command.clone().try_get_matches_from(&argv) else {
        return Ok(argv);
    };
    let mut matches = &root;
    while let Some((_, sub)) = matches.subcommand() {
        matches = sub;
    }
    let table = match root.get_one::<PathBuf>("config") {
        Some(path) => read_table(path)?,
        None => toml::Table::new(),
    };
    // Flags of `mount` itself mean nothing to the other commands.
    let is_mount = root.subcommand_name() == Some("mount");
    let all: Vec<_> = mount_flags(&command)
        .into_iter()
        .filter(|f| !CONNECTION_KEYS.contains(&f.key.as_str()))
        .collect();
    if let Some(unknown) = table.keys().find(|k| !all.iter().any(|f| &f.key == *k)) {
        return Err(format!("unknown key {unknown:?} in the [mount] table"));
    }
    let flags = all.into_iter().filter(|f| {
        is_mount
            || command
                .get_arguments()
                .any(|a| a.get_id() == f.key.as_str())
    });
    let mut out = argv;
    for flag in flags {
        let source = matches.value_source(&flag.key);
        if matches!(
            source,
            Some(ValueSource::CommandLine) | Some(ValueSource::EnvVariable)
        ) {
            continue;
        }
        let from_env = env(&env_name(&flag.key)).filter(|v| !v.is_empty());
        let value = match (from_env, table.get(&flag.key)) {
            (Some(text), _) => text,
            (None, Some(value)) => toml_text(&flag.key, value)?,
            (None, None) => continue,
        };
        let long = format!("--{}", flag.key.replace('_', "-"));
        if flag.takes_value {
            out.push(format!("{long}={value}").into());
        } else {
            match super::config::parse_bool(&value) {
                Some(true) => out.push(long.into()),
                Some(false) => {}
                None => return Err(format!("{}: {value:?} is not true or false", flag.key)),
            }
        }
    }
    Ok(out)
}

fn read_table(path: &std::path::Path) -> Result<toml::Table, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut file: toml::Table =
        toml::from_str(&text).map_err(|e| super::config::toml_error(path, &text, &e))?;
    match file.remove("mount") {
        None => Ok(toml::Table::new()),
        Some(toml::Value::Table(table)) => Ok(table),
        Some(_) => Err(format!("{}: mount must be a table", path.display())),
    }
}

fn toml_text(key: &str, value: &toml::Value) -> Result<String, String> {
    match value {
        toml::Value::String(s) => Ok(s.clone()),
        toml::Value::Integer(i) => Ok(i.to_string()),
        toml::Value::Float(f) => Ok(f.to_string()),
        toml::Value::Boolean(b) => Ok(b.to_string()),
        _ => Err(format!("[mount] {key} must be a string, number or boolean")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;
    use std::collections::HashMap;

    fn layered(args: &[&str], env: &[(&str, &str)], file: &str) -> Result<Vec<String>, String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, file).unwrap();
        let mut argv: Vec<OsString> = args.iter().map(OsString::from).collect();
        argv.push(format!("--config={}", path.display()).into());
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let out = apply(argv, crate::cli::args::Cli::command(), &|n| {
            env.get(n).cloned()
        })?;
        Ok(out
            .into_iter()
            .skip(args.len() + 1)
            .map(|a| a.to_string_lossy().into_owned())
            .collect())
    }

    #[test]
    fn file_and_environment_fill_only_what_flags_left_unset() {
        let file = "[storage.s3]\nbucket = \"b\"\n[mount]\ncache_size_mib = 64\nprefix = \"p/\"\n\
                    read_only = true\nallow_other = false\nprofile = \"prod\"\n";
        let mount = ["scribefs", "mount", "b", "/m"];
        let added = layered(&mount, &[], file).unwrap();
        assert_eq!(
            added,
            [
                "--profile=prod",
                "--prefix=p/",
                "--read-only",
                "--cache-size-mib=64"
            ]
        );
        let env = [
            ("SCRIBEFS_CACHE_SIZE_MIB", "32"),
            ("SCRIBEFS_PROFILE", "dev"),
        ];
        let added = layered(&mount, &env, file).unwrap();
        assert_eq!(
            added,
            [
                "--profile=dev",
                "--prefix=p/",
                "--read-only",
                "--cache-size-mib=32"
            ]
        );
        let flags = [
            "scribefs",
            "mount",
            "b",
            "/m",
            "--cache-size-mib",
            "8",
            "--read-only",
        ];
        let added = layered(&flags, &env, file).unwrap();
        assert_eq!(added, ["--profile=dev", "--prefix=p/"]);
        // Other commands take only the global flags from the table.
        let added = layered(&["scribefs", "segments", "ls"], &[], file).unwrap();
        assert_eq!(added, ["--profile=prod"]);
    }

    #[test]
    fn unknown_keys_and_bad_booleans_are_errors() {
        let mount = ["scribefs", "mount", "b", "/m"];
        let err = layered(&mount, &[], "[mount]\nbucket = \"b\"\n").unwrap_err();
        assert!(err.contains("bucket"), "{err}");
        let err = layered(&mount, &[("SCRIBEFS_READ_ONLY", "perhaps")], "").unwrap_err();
        assert!(err.contains("read_only"), "{err}");
    }

    #[test]
    fn the_documented_examples_are_valid() {
        let example = include_str!("../../docs/examples/ledger.toml");
        let added = layered(&["scribefs", "mount", "b", "/m"], &[], example).unwrap();
        assert!(
            added.contains(&"--layout=segments".to_string()),
            "{added:?}"
        );
        let fstab = include_str!("../../docs/examples/fstab");
        let line = fstab.lines().find(|l| !l.starts_with('#')).unwrap();
        let fields: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(fields[2], "fuse.scribefs");
        let argv = ["scribefs", fields[0], fields[1], "-o", fields[3]];
        let argv = argv.iter().map(OsString::from).collect();
        let out =
            super::super::options::normalize(argv, &crate::cli::args::Cli::command()).unwrap();
        assert!(out.contains(&OsString::from("--read-only")), "{out:?}");
    }
}
