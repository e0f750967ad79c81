//! The documentation is checked against the code it describes, so that it stays true when
//! options and modules are added:
//!
//! - `docs/CONFIGURATION.md` has a row for every long option of `scribefs mount` (its own and
//!   the global ones, taken from clap's `Command`, so a new flag fails here until documented),
//!   and every spelling a row claims (`-o`, `[mount]` or `[storage.s3]` key, environment
//!   variable) is tried on the code that reads it: a claimed spelling that does nothing, or a
//!   working one left out, fails. The options of the other commands must be named too.
//! - The README says which flags are no `-o` option and which are no `[mount]` key; both
//!   lists are checked against the code, both ways. The `[default: ...]` that `--help` gives
//!   for `--region` is the one CONFIGURATION.md gives.
//! - `docs/ARCHITECTURE.md` names every module file and folder under `src/` in its tree and
//!   nothing that does not exist, and its dependency table is the one the sources have.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use clap::CommandFactory;
use scribefs::cli::args::{Cli, ConnectionArgs};
use scribefs::cli::{config, layers, logging, options};

fn read_doc(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("docs")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The code spans (`...`) of a piece of markdown.
fn code_spans(text: &str) -> Vec<&str> {
    text.split('`').skip(1).step_by(2).collect()
}

/// The cells of a table row; `\|` inside a cell is no separator.
fn cells(row: &str) -> Vec<String> {
    let mut cells = vec![String::new()];
    let mut chars = row.trim().trim_start_matches('|').chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&'|') => {
                cells.last_mut().expect("a cell").push('|');
                chars.next();
            }
            '|' => cells.push(String::new()),
            _ => cells.last_mut().expect("a cell").push(c),
        }
    }
    if cells.last().is_some_and(|c| c.trim().is_empty()) {
        cells.pop();
    }
    cells
}

/// One row of an option table (`| flag | -o | TOML [table] | environment | default |`).
#[derive(Debug)]
struct Row {
    /// `mount` or `storage.s3`: the table its TOML column names.
    toml_table: String,
    flag_cell: String,
    o_cell: String,
    toml_cell: String,
    env_cell: String,
    default_cell: String,
}

/// Every row of CONFIGURATION.md's option tables, by the long options its first cell names.
fn option_rows(doc: &str) -> BTreeMap<String, Row> {
    let mut rows = BTreeMap::new();
    let mut table: Option<String> = None;
    for line in doc.lines() {
        if !line.starts_with('|') {
            table = None;
            continue;
        }
        let cells = cells(line);
        if cells.first().is_some_and(|c| c.trim() == "flag") {
            let toml = cells.get(2).map(String::as_str).unwrap_or("");
            table = Some(if toml.contains("[storage.s3]") {
                "storage.s3".to_string()
            } else {
                assert!(toml.contains("[mount]"), "option table header {line:?}");
                "mount".to_string()
            });
            continue;
        }
        let Some(toml_table) = &table else { continue };
        if cells.len() < 4 || cells[0].starts_with("---") || cells[0].trim().starts_with('-') {
            continue;
        }
        // The row's option is the first `--` span; later ones are references
        // (`--sse-kms-key-id KEY` (needs `--sse aws:kms*`)).
        if let Some(span) = code_spans(&cells[0])
            .into_iter()
            .find(|span| span.starts_with("--"))
        {
            let name = &span[2..];
            let name = name.split_whitespace().next().unwrap_or(name);
            let previous = rows.insert(
                name.to_string(),
                Row {
                    toml_table: toml_table.clone(),
                    flag_cell: cells[0].clone(),
                    o_cell: cells[1].clone(),
                    toml_cell: cells[2].clone(),
                    env_cell: cells[3].clone(),
                    default_cell: cells.get(4).cloned().unwrap_or_default(),
                },
            );
            assert!(previous.is_none(), "--{name} has two rows");
        }
    }
    rows
}

/// A long option: its name with underscores (as `-o` and `[mount]` spell it), and whether it
/// takes a value.
#[derive(Debug)]
struct Flag {
    key: String,
    takes_value: bool,
}

fn long_flags(command: &clap::Command) -> Vec<Flag> {
    command
        .get_arguments()
        .filter_map(|arg| {
            let long = arg.get_long()?;
            (long != "help" && long != "version").then(|| Flag {
                key: long.replace('-', "_"),
                takes_value: arg.get_action().takes_values(),
            })
        })
        .collect()
}

const MOUNT: [&str; 4] = ["scribefs", "mount", "bucket", "/mnt"];

fn argv(extra: &[&str]) -> Vec<OsString> {
    MOUNT.iter().chain(extra).map(OsString::from).collect()
}

/// What `layers` appends for a flag set only by the environment variable `name`.
fn through_env(name: &str, value: &str) -> Vec<String> {
    let added = layers::apply(argv(&[]), Cli::command(), &|var| {
        (var == name).then(|| value.to_string())
    })
    .unwrap_or_else(|e| panic!("{name}={value}: {e}"));
    strings(added).split_off(MOUNT.len())
}

/// What `layers` appends for a flag set only by `key = value` in the `[mount]` table; `None`
/// when the table refuses the key.
fn through_mount_table(key: &str, value: &str) -> Option<Vec<String>> {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("c.toml");
    std::fs::write(&path, format!("[mount]\n{key} = {value}\n")).expect("write");
    let config = format!("--config={}", path.display());
    let added = layers::apply(argv(&[&config]), Cli::command(), &|_| None).ok()?;
    Some(strings(added).split_off(MOUNT.len() + 1))
}

/// Whether `[storage.s3]` accepts `key` (with a value of some type).
fn s3_table_accepts(key: &str) -> bool {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("c.toml");
    ["\"1\"", "1", "true"].iter().any(|value| {
        std::fs::write(
            &path,
            format!("[storage.s3]\nbucket = \"b\"\n{key} = {value}\n"),
        )
        .expect("write");
        let args = ConnectionArgs {
            config: Some(path.clone()),
            ..Default::default()
        };
        match config::resolve(&args, &|_| None) {
            Ok(_) => true,
            Err(e) => !e.to_string().contains("unknown field"),
        }
    })
}

/// What the mount helper form makes of one `-o` item.
fn through_o(item: &str) -> Result<Vec<String>, String> {
    let args = ["scribefs", "bucket", "/mnt", "-o", item]
        .iter()
        .map(OsString::from)
        .collect();
    let out = options::normalize(args, &Cli::command())?;
    Ok(strings(out).split_off(MOUNT.len()))
}

fn strings(args: Vec<OsString>) -> Vec<String> {
    args.into_iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect()
}

/// Every environment variable the connection settings and the log filter read, found by
/// asking them with an environment that records the names.
fn variables_read() -> BTreeSet<String> {
    let asked = Mutex::new(BTreeSet::new());
    let record = |name: &str| {
        asked.lock().expect("lock").insert(name.to_string());
        None
    };
    let args = ConnectionArgs {
        bucket: Some("b".into()),
        ..Default::default()
    };
    config::resolve(&args, &record).expect("resolves");
    logging::filter(None, "warn", &record).expect("filter");
    let mut names = asked.into_inner().expect("lock");
    // Read by the AWS SDK's profile loader, not by us: documented with --profile.
    names.insert("AWS_PROFILE".into());
    names
}

#[test]
fn configuration_md_has_every_mount_option_with_its_true_spellings() {
    let doc = read_doc("CONFIGURATION.md");
    let rows = option_rows(&doc);
    // Built, as for `scribefs mount --help`: mount then has the global options it accepts.
    let mut command = Cli::command();
    command.build();
    let mount = command.find_subcommand("mount").expect("mount");
    let flags: Vec<Flag> = long_flags(mount);
    assert!(flags.len() > 20, "{flags:?}");
    let read = variables_read();
    let mut problems = Vec::new();
    for flag in &flags {
        let long = flag.key.replace('_', "-");
        let Some(row) = rows.get(&long) else {
            problems.push(format!("--{long}: no row in the option tables"));
            continue;
        };
        let expected: Vec<String> = if flag.takes_value {
            vec![format!("--{long}=1")]
        } else {
            vec![format!("--{long}")]
        };
        let value = if flag.takes_value { "1" } else { "true" };

        // -o: the expected spelling is there, and every spelling claimed works.
        let o_spans = code_spans(&row.o_cell);
        let o_form = if flag.takes_value {
            format!("{}=", flag.key)
        } else {
            flag.key.clone()
        };
        if !o_spans.contains(&o_form.as_str()) {
            problems.push(format!("--{long}: -o column lacks `{o_form}`"));
        }
        for span in o_spans {
            let item = match span.strip_suffix('=') {
                Some(key) => format!("{key}=1"),
                None => span.to_string(),
            };
            match through_o(&item) {
                Ok(out) if out == expected || (span == "ro" && out == ["--read-only"]) => {}
                other => problems.push(format!("--{long}: -o {item} gives {other:?}")),
            }
        }

        // The environment: SCRIBEFS_<KEY> where layers provides it, and only names that
        // something reads.
        let own = layers::env_name(&flag.key);
        let has_own = through_env(&own, value) == expected;
        let env_spans: Vec<&str> = code_spans(&row.env_cell)
            .into_iter()
            .filter(|s| {
                s.chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
            })
            .collect();
        if has_own && !env_spans.contains(&own.as_str()) {
            problems.push(format!("--{long}: environment column lacks {own}"));
        }
        for span in &env_spans {
            let works = if span.starts_with("SCRIBEFS_") {
                *span == own && has_own
            } else {
                read.contains(*span)
            };
            if !works {
                problems.push(format!(
                    "--{long}: {span} is claimed but nothing reads it for this option"
                ));
            }
        }

        // The config file: the [mount] key where layers provides it; [storage.s3] keys that
        // the table accepts.
        let toml_spans: Vec<&str> = code_spans(&row.toml_cell)
            .into_iter()
            .filter(|s| s.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
            .collect();
        let toml_value = if flag.takes_value { "\"1\"" } else { "true" };
        let has_mount_key =
            through_mount_table(&flag.key, toml_value).is_some_and(|out| out == expected);
        match row.toml_table.as_str() {
            "mount" => {
                if has_mount_key && !toml_spans.contains(&flag.key.as_str()) {
                    problems.push(format!("--{long}: [mount] column lacks `{}`", flag.key));
                }
                for span in &toml_spans {
                    if *span != flag.key || !has_mount_key {
                        problems.push(format!("--{long}: [mount] {span} does not set it"));
                    }
                }
            }
            _ => {
                if has_mount_key {
                    problems.push(format!(
                        "--{long}: is a [mount] key ({}), but its row is in the [storage.s3] table",
                        flag.key
                    ));
                }
                for span in &toml_spans {
                    if !s3_table_accepts(span) {
                        problems.push(format!("--{long}: [storage.s3] has no key {span}"));
                    }
                }
            }
        }
        if !row.flag_cell.contains(&format!("`--{long}")) {
            problems.push(format!("--{long}: row found but not as `--{long}`"));
        }
    }
    // Rows of options that are not mount's: global options that a mount does not take (a
    // mount's bucket is its BUCKET argument) may have rows, without a -o spelling.
    let global = long_flags(&command);
    for (name, row) in &rows {
        if flags.iter().any(|f| f.key.replace('_', "-") == *name) {
            continue;
        }
        if !global.iter().any(|f| f.key.replace('_', "-") == *name) {
            problems.push(format!(
                "--{name}: documented, but scribefs has no such flag"
            ));
        } else if !code_spans(&row.o_cell).is_empty() {
            problems.push(format!(
                "--{name}: not a mount option, but given a -o spelling"
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "docs/CONFIGURATION.md:\n{}",
        problems.join("\n")
    );
}

/// The long options `scribefs mount` takes, and the global ones it does not (`--bucket`).
fn mount_and_global_flags() -> Vec<Flag> {
    let mut command = Cli::command();
    command.build();
    let mut flags = long_flags(command.find_subcommand("mount").expect("mount"));
    for flag in long_flags(&command) {
        if !flags.iter().any(|f| f.key == flag.key) {
            flags.push(flag);
        }
    }
    flags
}

/// Whether `-o item` becomes `expected` and `scribefs mount` then knows that flag (the value
/// "1" may be refused: only an unknown argument counts against it).
fn o_item_mounts(item: &str, expected: &[String]) -> bool {
    if through_o(item).ok().as_deref() != Some(expected) {
        return false;
    }
    let args = MOUNT
        .iter()
        .map(|a| a.to_string())
        .chain(expected.iter().cloned());
    match Cli::command().try_get_matches_from(args) {
        Ok(_) => true,
        Err(e) => e.kind() != clap::error::ErrorKind::UnknownArgument,
    }
}

/// The option names (underscored) of the `--flag` code spans between `start` and the next
/// `end` in `text`, read with its lines joined.
fn flags_between(text: &str, start: &str, end: &str) -> BTreeSet<String> {
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let from = text
        .find(start)
        .unwrap_or_else(|| panic!("README.md lacks {start:?}"))
        + start.len();
    let to = from
        + text[from..]
            .find(end)
            .unwrap_or_else(|| panic!("README.md lacks {end:?} after {start:?}"));
    code_spans(&text[from..to])
        .into_iter()
        .filter_map(|span| span.strip_prefix("--"))
        .map(|name| name.replace('-', "_"))
        .collect()
}

#[test]
fn readme_names_exactly_the_flags_that_are_no_o_option_and_no_mount_key() {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("README.md");
    let flags = mount_and_global_flags();
    assert!(flags.len() > 20, "{flags:?}");
    let spelled = |flag: &Flag| -> (Vec<String>, String) {
        let long = flag.key.replace('_', "-");
        if flag.takes_value {
            (vec![format!("--{long}=1")], "\"1\"".to_string())
        } else {
            (vec![format!("--{long}")], "true".to_string())
        }
    };
    let mut no_o = BTreeSet::new();
    let mut no_mount_key = BTreeSet::new();
    for flag in &flags {
        let (expected, toml_value) = spelled(flag);
        let item = if flag.takes_value {
            format!("{}=1", flag.key)
        } else {
            flag.key.clone()
        };
        if !o_item_mounts(&item, &expected) {
            no_o.insert(flag.key.clone());
        }
        if through_mount_table(&flag.key, &toml_value) != Some(expected) {
            no_mount_key.insert(flag.key.clone());
        }
    }
    assert_eq!(
        flags_between(
            &readme,
            "Every flag of `scribefs mount` but",
            "is also a `-o` option"
        ),
        no_o,
        "README.md: the flags that are no -o option"
    );
    assert_eq!(
        flags_between(&readme, "which are not `[mount]` keys:", "which live in"),
        no_mount_key,
        "README.md: the flags that are no [mount] key"
    );
}

/// `--region`'s help states the default the code applies (the profile's region, else the
/// bucket's own, found from its answer), as CONFIGURATION.md does: not a fixed region.
#[test]
fn the_region_default_in_help_is_the_documented_one() {
    let command = Cli::command();
    let help = command
        .get_arguments()
        .find(|arg| arg.get_long() == Some("region"))
        .and_then(|arg| arg.get_help())
        .expect("--region has help")
        .to_string();
    let default = help
        .split_once("[default: ")
        .and_then(|(_, rest)| rest.split_once(']'))
        .map(|(default, _)| default.to_string())
        .unwrap_or_else(|| panic!("--region help names no default: {help}"));
    let doc = read_doc("CONFIGURATION.md");
    let rows = option_rows(&doc);
    let documented = rows["region"]
        .default_cell
        .trim()
        .replace(" (see Region)", "");
    assert_eq!(default, documented, "--region: help and CONFIGURATION.md");
    assert!(
        !default.contains(scribefs::store::config::DEFAULT_REGION),
        "{default}: the fixed region is only the first guess before the bucket answers"
    );
}

/// The other commands' options are named (in prose or in a table).
#[test]
fn configuration_md_names_every_option_of_the_other_commands() {
    let doc = read_doc("CONFIGURATION.md");
    let spans: BTreeSet<&str> = code_spans(&doc)
        .into_iter()
        .filter_map(|s| s.split_whitespace().next())
        .collect();
    let mut missing = Vec::new();
    fn walk(
        command: &clap::Command,
        path: &str,
        spans: &BTreeSet<&str>,
        missing: &mut Vec<String>,
    ) {
        for sub in command.get_subcommands() {
            let path = format!("{path} {}", sub.get_name());
            if sub.get_name() != "mount" {
                for arg in sub.get_arguments() {
                    let Some(long) = arg.get_long() else { continue };
                    if arg.is_global_set() || long == "help" {
                        continue;
                    }
                    if !spans.contains(format!("--{long}").as_str()) {
                        missing.push(format!("{path} --{long}"));
                    }
                }
            }
            walk(sub, &path, spans, missing);
        }
    }
    walk(&Cli::command(), "scribefs", &spans, &mut missing);
    assert!(
        missing.is_empty(),
        "docs/CONFIGURATION.md does not name: {missing:?}"
    );
}

/// The module files and folders under `src/`, as paths relative to it (folders end in `/`).
fn source_tree(dir: &Path, relative: &Path, out: &mut BTreeSet<String>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .expect("src/ readable")
        .map(|e| e.expect("entry").path())
        .collect();
    entries.sort();
    for path in entries {
        let name = path
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        let rel: PathBuf = relative.join(&name);
        if path.is_dir() {
            out.insert(format!("{}/", rel.display()));
            source_tree(&path, &rel, out);
        } else if name.ends_with(".rs") {
            out.insert(rel.display().to_string());
        }
    }
}

/// The tree of ARCHITECTURE.md's first code block: an entry is a line whose first word ends in
/// `/` or `.rs`, indented two spaces per level below its folder; description lines continue at
/// 12 spaces or more.
fn documented_tree(doc: &str) -> BTreeSet<String> {
    let block = doc.split("```").nth(1).expect("a code block with the tree");
    let mut entries = BTreeSet::new();
    let mut folders: Vec<String> = Vec::new();
    for line in block.lines() {
        let indent = line.len() - line.trim_start().len();
        let Some(word) = line.split_whitespace().next() else {
            continue;
        };
        if indent >= 12 || !(word.ends_with('/') || word.ends_with(".rs")) {
            continue;
        }
        assert!(indent % 2 == 0, "odd indentation in the tree: {line:?}");
        let depth = indent / 2;
        assert!(
            depth <= folders.len(),
            "{line:?} is indented past its folder"
        );
        folders.truncate(depth);
        let path = format!("{}{word}", folders.concat());
        if word.ends_with('/') {
            folders.push(word.to_string());
        }
        assert!(entries.insert(path.clone()), "{path} is named twice");
    }
    entries
}

#[test]
fn architecture_md_names_every_module_and_nothing_else() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut tree = BTreeSet::new();
    source_tree(&root.join("src"), Path::new("src"), &mut tree);
    tree.insert("src/".into());
    let doc = read_doc("ARCHITECTURE.md");
    let documented = documented_tree(&doc);
    let missing: Vec<_> = tree.difference(&documented).collect();
    let extra: Vec<_> = documented.difference(&tree).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "docs/ARCHITECTURE.md's tree lacks {missing:?} and names {extra:?}, which do not exist"
    );
    // Paths named in the prose (`fs/metadata.rs`, `upload/abort_retry.rs`) exist too: a span
    // is taken for a path when it starts with a folder of src/ or of the repository (`key/`
    // and `entries/` are an S3 prefix and a directory of the mount).
    for span in code_spans(&doc) {
        let first = span.split('/').next().unwrap_or("");
        let looks_like_path = span.contains('/')
            && (span.ends_with(".rs") || span.ends_with('/'))
            && span
                .chars()
                .all(|c| c.is_ascii_lowercase() || "_/.-".contains(c))
            && !first.is_empty()
            && (root.join(first).is_dir() || root.join("src").join(first).is_dir());
        // From the repository's root (`tests/docs.rs`) or from src/ (`fs/metadata.rs`).
        if looks_like_path {
            assert!(
                root.join(span).exists() || root.join("src").join(span).exists(),
                "docs/ARCHITECTURE.md names `{span}`, which does not exist"
            );
        }
    }
}

/// The top-level modules each top-level module refers to (`crate::name`), from its sources.
fn module_dependencies(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let modules: Vec<String> = std::fs::read_dir(src)
        .expect("src/")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.is_dir() && p.file_name().is_some_and(|n| n != "bin"))
        .map(|p| p.file_name().expect("name").to_string_lossy().into_owned())
        .collect();
    let mut graph = BTreeMap::new();
    for module in &modules {
        let mut files = BTreeSet::new();
        source_tree(&src.join(module), Path::new(module), &mut files);
        let mut uses = BTreeSet::new();
        for file in files.iter().filter(|f| f.ends_with(".rs")) {
            let text = std::fs::read_to_string(src.join(file)).expect("source");
            for line in text.lines() {
                let code = line.split("//").next().unwrap_or("");
                for other in &modules {
                    if other != module && refers_to(code, other) {
                        uses.insert(other.clone());
                    }
                }
            }
        }
        graph.insert(module.clone(), uses);
    }
    graph
}

/// Whether `code` names `crate::module` (as a path start, not `crate::modules`).
fn refers_to(code: &str, module: &str) -> bool {
    let needle = format!("crate::{module}");
    code.match_indices(&needle).any(|(at, _)| {
        code[at + needle.len()..]
            .chars()
            .next()
            .is_none_or(|c| !(c.is_alphanumeric() || c == '_'))
    })
}

#[test]
fn architecture_md_dependency_table_is_the_sources() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let actual = module_dependencies(&root.join("src"));
    let doc = read_doc("ARCHITECTURE.md");
    let table = doc
        .split("## Dependencies")
        .nth(1)
        .and_then(|s| s.split("```").nth(1))
        .expect("a ## Dependencies section with a code block");
    let mut documented = BTreeMap::new();
    for line in table.lines().filter(|l| l.contains("->")) {
        let (module, uses) = line.split_once("->").expect("->");
        let uses: BTreeSet<String> = uses
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect();
        documented.insert(module.trim().to_string(), uses);
    }
    assert_eq!(
        documented, actual,
        "docs/ARCHITECTURE.md ## Dependencies (left) vs src/ (right)"
    );
    // The registry is a leaf: it must not reach back into the layers that report into it.
    assert!(
        actual.get("metrics").is_some_and(BTreeSet::is_empty),
        "{actual:?}"
    );
}
