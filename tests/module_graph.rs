//! The modules of `src/` import one another without circles: a module that needs another's
//! type never has that module need one of its own back (docs/ARCHITECTURE.md, "Module map").
//!
//! Each file's references to other modules of the crate (`use` trees, braces expanded, and paths
//! written inline such as `crate::store::StoreError`) make a graph; a path to a module's own
//! ancestor (`super::Fs`, the parent's items) or descendant is not an edge. Comments are skipped,
//! so a doc link is no import.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Module path (`fs::file`) of every `.rs` file under `src/`, with its text.
fn modules() -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut dirs = vec![Path::new(env!("CARGO_MANIFEST_DIR")).join("src")];
    let root = dirs[0].clone();
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("src/ is readable") {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let relative = path
                .strip_prefix(&root)
                .expect("below src/")
                .with_extension("");
            let mut parts: Vec<String> = relative
                .iter()
                .map(|p| p.to_string_lossy().into_owned())
                .collect();
            if parts
                .last()
                .is_some_and(|p| p == "mod" || p == "lib" || p == "main")
            {
                parts.pop();
            }
            if parts.first().is_some_and(|p| p == "bin") {
                continue;
            }
            let text = std::fs::read_to_string(&path).expect("a source file is readable");
            out.insert(parts.join("::"), text);
        }
    }
    out
}

/// The text without `//` comments.
fn code_of(text: &str) -> String {
    text.lines()
        .map(|line| match line.find("//") {
            Some(at) if !line[..at].contains('"') => &line[..at],
            _ => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Expands a `use` tree (`super::{a, b::{c, d}}`) into its paths.
fn expand(tree: &str) -> Vec<String> {
    let tree = tree.trim();
    let Some(open) = tree.find('{') else {
        return vec![tree.split(" as ").next().unwrap_or(tree).trim().to_string()];
    };
    let prefix = &tree[..open];
    let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&inner[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&inner[start..]);
    parts
        .into_iter()
        .filter(|p| !p.trim().is_empty())
        .flat_map(expand)
        .map(|p| format!("{prefix}{p}"))
        .collect()
}

/// Every crate-relative path a module's code names: `use` trees and inline paths.
fn paths_in(code: &str) -> Vec<String> {
    let mut paths = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("use ") {
        let boundary = at == 0 || !rest.as_bytes()[at - 1].is_ascii_alphanumeric();
        let end = rest[at..].find(';').map_or(rest.len(), |e| at + e);
        if boundary {
            paths.extend(expand(&rest[at + 4..end]));
        }
        rest = &rest[(at + 4).min(end)..];
    }
    for start in ["crate::", "super::"] {
        let mut from = 0;
        while let Some(at) = code[from..].find(start).map(|a| a + from) {
            let len = code[at..]
                .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                .unwrap_or(code.len() - at);
            paths.push(code[at..at + len].trim_end_matches(':').to_string());
            from = at + len.max(1);
        }
    }
    paths
}

/// The module a path leads to from `module` (the deepest known one), if any.
fn target(module: &str, path: &str, known: &BTreeMap<String, String>) -> Option<String> {
    let mut segments = path.split("::").map(str::trim).peekable();
    let mut at: Vec<&str> = match segments.peek() {
        Some(&"crate") => {
            segments.next();
            Vec::new()
        }
        Some(&"super") | Some(&"self") => module.split("::").filter(|s| !s.is_empty()).collect(),
        _ => return None,
    };
    let mut found = None;
    for segment in segments {
        match segment {
            "super" => {
                at.pop();
            }
            "self" => {}
            name => {
                at.push(name);
                let candidate = at.join("::");
                if !known.contains_key(&candidate) {
                    break;
                }
                found = Some(candidate);
            }
        }
    }
    found
}

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let modules = modules();
    let mut edges = BTreeMap::new();
    for (module, text) in &modules {
        let targets: BTreeSet<String> = paths_in(&code_of(text))
            .iter()
            .filter_map(|path| target(module, path, &modules))
            .filter(|t| {
                let related = |a: &str, b: &str| a.is_empty() || b.starts_with(&format!("{a}::"));
                t != module && !related(t, module) && !related(module, t)
            })
            .collect();
        edges.insert(module.clone(), targets);
    }
    edges
}

/// Modules from which `from` can be reached again: the circles through `from`.
fn circle_through(from: &str, edges: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    let mut stack = vec![vec![from.to_string()]];
    let mut seen = BTreeSet::new();
    while let Some(path) = stack.pop() {
        let last = path.last().expect("paths are never empty");
        for next in edges.get(last).into_iter().flatten() {
            if next == from {
                return Some(path);
            }
            if seen.insert(next.clone()) {
                let mut longer = path.clone();
                longer.push(next.clone());
                stack.push(longer);
            }
        }
    }
    None
}

#[test]
fn no_module_imports_one_that_imports_it_back() {
    let edges = graph();
    let circles: Vec<String> = edges
        .keys()
        .filter_map(|m| circle_through(m, &edges))
        .map(|circle| format!("{} -> {}", circle.join(" -> "), circle[0]))
        .collect();
    assert!(
        circles.is_empty(),
        "import circles:\n{}",
        circles.join("\n")
    );
}

#[test]
fn the_graph_sees_the_imports_it_checks() {
    let edges = graph();
    let of = |m: &str| edges.get(m).cloned().unwrap_or_default();
    assert!(
        of("fs::file").contains("fs::write_handle"),
        "{:?}",
        of("fs::file")
    );
    assert!(
        of("fs::handles").contains("fs::readdir"),
        "{:?}",
        of("fs::handles")
    );
    assert!(of("cli::mount").contains("store"), "{:?}", of("cli::mount"));
    assert!(
        !of("fs::file").contains("fs"),
        "a path to the parent is no edge"
    );
    let circle = BTreeMap::from([
        ("a".to_string(), BTreeSet::from(["b".to_string()])),
        ("b".to_string(), BTreeSet::from(["a".to_string()])),
    ]);
    assert!(circle_through("a", &circle).is_some());
}
