//! The configuration reference (`docs/configuration.md`) and the code agree: every `FERRY_*`
//! variable the Rust code reads is documented there, and every variable documented there is
//! read (by the code, or by a script under `scripts/` or the deploy checks in `tests/deploy`).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Every `FERRY_*` name in `text`.
fn names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("FERRY_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(tail.len());
        let name = tail[..end].trim_end_matches('_');
        if name.len() > "FERRY_".len() {
            out.insert(name.to_owned());
        }
        rest = &tail[end..];
    }
    out
}

fn files(dir: &Path, ext: &str, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files(&path, ext, out);
        } else if path.extension().is_some_and(|e| e == ext) {
            out.push(path);
        }
    }
}

/// The variables the Rust code reads: the `FERRY_*` names in the crates' sources outside
/// comments, except those a process sets for a child it starts (`.env("FERRY_…", …)`), which
/// the child's script then names too.
fn read_by_code() -> BTreeSet<String> {
    let mut sources = Vec::new();
    for dir in ["shared/src", "functions", "infra"] {
        files(&root().join(dir), "rs", &mut sources);
    }
    let mut out = BTreeSet::new();
    let mut set_for_children = BTreeSet::new();
    for file in sources {
        for line in std::fs::read_to_string(&file).unwrap().lines() {
            let line = line.trim_start();
            if line.starts_with("//") {
                continue;
            }
            if line.contains(".env(\"FERRY_") {
                set_for_children.extend(names(line));
                continue;
            }
            out.extend(names(line));
        }
    }
    // What a child reads (a watchdog script gets FERRY_PARENT) is set, not configured.
    out.retain(|n| !set_for_children.contains(n));
    out
}

/// The variables named in the first column of the tables of `docs/configuration.md`.
fn documented() -> BTreeSet<String> {
    let text = std::fs::read_to_string(root().join("docs/configuration.md")).unwrap();
    text.lines()
        .filter(|l| l.starts_with("| `FERRY_"))
        .flat_map(|l| names(l.split('|').nth(1).unwrap_or("")))
        .collect()
}

#[test]
fn documented_variables_are_the_ones_read() {
    let code = read_by_code();
    let docs = documented();
    let mut scripts = String::new();
    let mut paths = Vec::new();
    files(&root().join("scripts"), "sh", &mut paths);
    files(&root().join("scripts"), "py", &mut paths);
    files(&root().join("tests/deploy"), "py", &mut paths);
    for p in paths {
        scripts.push_str(&std::fs::read_to_string(p).unwrap());
    }
    let scripts = names(&scripts);
    let undocumented: Vec<&String> = code.difference(&docs).collect();
    assert!(
        undocumented.is_empty(),
        "read by the code but not in docs/configuration.md: {undocumented:?}"
    );
    let unread: Vec<&String> = docs
        .iter()
        .filter(|d| !code.contains(*d) && !scripts.contains(*d))
        .collect();
    assert!(
        unread.is_empty(),
        "in docs/configuration.md but read by nothing: {unread:?}"
    );
    assert!(code.len() > 40, "the scan found the variables: {code:?}");
}
