//! The repository documents itself: no file may cite documents that live outside it (the
//! specification files the port was first written from). Facts the code relies on are in
//! docs/protocol.md, docs/storage.md and docs/compatibility.md, and that is what code cites.
//!
//! [`PENDING`] lists files whose citations are rewritten together with other work in flight;
//! empty it once they are done, and the check then covers every file of the repository.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::path::{Path, PathBuf};

/// Files (paths relative to the repository root, `/`-separated; a trailing `/` names a
/// directory) still allowed to hold old citations until their rewrite is merged.
const PENDING: &[&str] = &[
    "teamtalk-core/src/msg_server/",
    "teamtalk-core/src/store/",
    "teamtalk-core/src/service/",
    "teamtalk-core/src/command.rs",
    "teamtalk-core/src/message.rs",
    "teamtalk-core/src/pdu.rs",
    "teamtalk-core/src/routing.rs",
    "teamtalk-core/src/balance.rs",
    "teamtalk-core/src/file_transfer.rs",
    "teamtalk-core/src/client.rs",
    "teamtalk-core/src/link.rs",
    "teamtalk-core/src/lib.rs",
    "teamtalk-servers/src/main.rs",
    "teamtalk-servers/src/msg_server.rs",
    "teamtalk-servers/src/route_server.rs",
    "teamtalk-servers/src/login_server.rs",
    "teamtalk-servers/src/file_server.rs",
    "teamtalk-servers/src/link.rs",
];

/// Directories never searched: build output and version control.
const SKIPPED_DIRS: &[&str] = &["target", ".git"];

/// Names of the external documents (assembled at run time so that this file does not match).
fn external_names() -> Vec<String> {
    ["quirks", "wire", "messages", "servers"]
        .iter()
        .map(|name| format!("{name}.md"))
        .collect()
}

/// The reason `line` cites an external document, if it does.
fn offending(line: &str, names: &[String]) -> Option<String> {
    let spec_dir = format!("{}/", "spec");
    let bytes = line.as_bytes();
    let mut from = 0;
    while let Some(pos) = line[from..].find(&spec_dir) {
        let at = from + pos;
        // The directory as a path of its own, not the tail of a longer word.
        let standalone =
            at == 0 || !(bytes[at - 1].is_ascii_alphanumeric() || bytes[at - 1] == b'_');
        if standalone {
            return Some(spec_dir);
        }
        from = at + spec_dir.len();
    }
    if let Some(name) = names.iter().find(|name| line.contains(name.as_str())) {
        return Some(name.clone());
    }
    // The storage document is also one of ours, under docs/; only a bare one is external.
    let storage = format!("{}.md", "storage");
    let mut from = 0;
    while let Some(pos) = line[from..].find(&storage) {
        let at = from + pos;
        if !line[..at].ends_with("docs/") {
            return Some(storage);
        }
        from = at + storage.len();
    }
    None
}

fn walk(root: &Path, dir: &Path, found: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).expect("read_dir");
    for entry in entries {
        let path = entry.expect("dir entry").path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if path.is_dir() {
            if !SKIPPED_DIRS.contains(&name) {
                walk(root, &path, found);
            }
        } else {
            found.push(path.strip_prefix(root).expect("under root").to_path_buf());
        }
    }
}

fn pending(relative: &str) -> bool {
    PENDING.iter().any(|allowed| {
        if allowed.ends_with('/') {
            relative.starts_with(allowed)
        } else {
            relative == *allowed
        }
    })
}

#[test]
fn no_file_cites_documents_outside_the_repository() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root");
    let names = external_names();
    let mut files = Vec::new();
    walk(root, root, &mut files);
    assert!(
        files.len() > 50,
        "the walk found the repository ({} files)",
        files.len()
    );

    let mut citations = Vec::new();
    for relative in &files {
        let shown = relative.to_string_lossy().replace('\\', "/");
        if pending(&shown) {
            continue;
        }
        // Binary files (fuzz corpora, images) cannot hold a citation worth reporting.
        let Ok(text) = std::fs::read_to_string(root.join(relative)) else {
            continue;
        };
        for (number, line) in text.lines().enumerate() {
            if let Some(what) = offending(line, &names) {
                citations.push(format!(
                    "{shown}:{}: cites {what}: {}",
                    number + 1,
                    line.trim()
                ));
            }
        }
    }
    assert!(
        citations.is_empty(),
        "cite docs/protocol.md, docs/storage.md or docs/compatibility.md instead:\n{}",
        citations.join("\n")
    );
}

#[test]
fn the_check_recognises_external_citations() {
    let names = external_names();
    let spec = format!("{}/", "spec");
    let quirks = format!("{}.md Q-02", "quirks");
    let storage = format!("see {}.md §4", "storage");
    assert!(offending(&format!("//! as in {spec}x.md §11"), &names).is_some());
    assert!(offending(&format!("see {}", names[1]), &names).is_some());
    assert!(offending(&format!("(`{spec}`)"), &names).is_some());
    assert!(offending(&quirks, &names).is_some());
    assert!(offending(&storage, &names).is_some());
    assert!(offending("see docs/storage.md § Redis keys", &names).is_none());
    assert!(offending("[docs/storage.md](docs/storage.md)", &names).is_none());
    assert!(offending("docs/compatibility.md Q-02", &names).is_none());
    assert!(offending("an inspec/ directory", &names).is_none());
}
