//! The layering rule of ARCHITECTURE.md, checked: no top-level module uses one above it.
//!
//! Every `.rs` file under `mpush/src/` is scanned for paths into other top-level modules
//! (`crate::x`, `crate::{x, y}`, and `super::` chains that climb to the crate root). A use
//! that the table below does not allow fails the test with its file and line. The scan is
//! textual on purpose: it needs no parser, and a `use` the compiler accepts always has one of
//! these shapes. Comment lines are skipped (intra-doc links are not dependencies).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Which top-level modules each top-level module may use. Written once; ARCHITECTURE.md draws
/// the same table. `config`, `spi` and `clock` are shared leaves everyone above `protocol` may
/// use; `net` holds the socket helpers shared by the server and the push SDK.
const ALLOWED: &[(&str, &[&str])] = &[
    ("protocol", &[]),
    ("clock", &[]),
    ("metrics", &[]),
    ("testkit", &[]),
    ("config", &["protocol"]),
    ("spi", &["protocol", "config", "clock"]),
    ("address", &["config"]),
    ("net", &["protocol", "config", "address"]),
    ("tls", &["config"]),
    ("httpd", &["tls"]),
    ("router", &["protocol", "config", "spi", "clock"]),
    (
        "push",
        &["protocol", "config", "spi", "clock", "router", "metrics"],
    ),
    (
        "server",
        &[
            "protocol", "config", "spi", "clock", "address", "net", "router", "push", "metrics",
            "tls", "httpd",
        ],
    ),
    (
        "sender",
        &[
            "protocol", "config", "spi", "clock", "address", "net", "router", "tls",
        ],
    ),
    ("client", &["protocol", "config", "spi", "clock", "tls"]),
    (
        "alloc",
        &[
            "protocol", "config", "spi", "clock", "sender", "tls", "httpd",
        ],
    ),
];

/// Files that may use anything: the crate root (re-exports) and this checker.
const UNRESTRICTED: &[&str] = &["lib", "layers"];

fn allowed(from: &str) -> Option<&'static [&'static str]> {
    ALLOWED.iter().find(|(m, _)| *m == from).map(|(_, a)| *a)
}

/// The module path of a file relative to `src/`: `server/handler/bind.rs` →
/// `[server, handler, bind]`, `server/mod.rs` → `[server]`, `lib.rs` → `[]`.
fn module_path(rel: &Path) -> Vec<String> {
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    if let Some(last) = parts.pop() {
        let stem = last.trim_end_matches(".rs").to_string();
        if stem != "mod" && stem != "lib" {
            parts.push(stem);
        }
    }
    parts
}

fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

fn leading_ident(s: &str) -> &str {
    let end = s.find(|c: char| !is_ident_char(c)).unwrap_or(s.len());
    &s[..end]
}

/// The top-level modules named right after a crate-root prefix at the start of `rest`:
/// `server::x` → `server`; `{server, push::y}` → `server`, `push`.
fn roots_after_prefix(rest: &str) -> Vec<String> {
    if let Some(group) = rest.strip_prefix('{') {
        let mut depth = 0usize;
        let mut out = Vec::new();
        let mut at_item_start = true;
        for (i, c) in group.char_indices() {
            match c {
                '{' => depth += 1,
                '}' if depth == 0 => break,
                '}' => depth -= 1,
                ',' if depth == 0 => at_item_start = true,
                c if at_item_start && !c.is_whitespace() => {
                    at_item_start = false;
                    let id = leading_ident(&group[i..]);
                    if !id.is_empty() && id != "self" {
                        out.push(id.to_string());
                    }
                }
                _ => {}
            }
        }
        return out;
    }
    let id = leading_ident(rest);
    if id.is_empty() {
        Vec::new()
    } else {
        vec![id.to_string()]
    }
}

/// The top-level modules a line refers to, given the file's module depth.
fn referenced_roots(line: &str, depth: usize) -> Vec<String> {
    let mut out = Vec::new();
    let bytes = line.as_bytes();
    let mut i = 0;
    while i < line.len() {
        let rest = &line[i..];
        let boundary = i == 0 || !is_ident_char(bytes[i - 1] as char);
        if boundary && rest.starts_with("crate::") && !line[..i].ends_with('$') {
            out.extend(roots_after_prefix(&rest["crate::".len()..]));
            i += "crate::".len();
            continue;
        }
        if boundary && rest.starts_with("super::") {
            let mut supers = 0;
            let mut tail = rest;
            while let Some(t) = tail.strip_prefix("super::") {
                supers += 1;
                tail = t;
            }
            // `super` from a module at depth d climbs to the crate root after d steps.
            if depth > 0 && supers >= depth {
                out.extend(roots_after_prefix(tail));
            }
            i += supers * "super::".len();
            continue;
        }
        i += rest.chars().next().map_or(1, char::len_utf8);
    }
    out
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Every use of a higher layer in the crate, as `file:line: from -> to`.
fn violations(src: &Path) -> Vec<String> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    files.sort();
    let tops: BTreeSet<&str> = ALLOWED.iter().map(|(m, _)| *m).collect();
    let mut found = Vec::new();
    for file in files {
        let rel = file.strip_prefix(src).expect("file under src");
        let path = module_path(rel);
        let from = path.first().map_or("lib", String::as_str);
        if UNRESTRICTED.contains(&from) {
            continue;
        }
        let allowed = allowed(from).unwrap_or_else(|| {
            panic!(
                "{}: top-level module `{from}` is missing from the layer table",
                rel.display()
            )
        });
        let text = std::fs::read_to_string(&file).expect("read source file");
        for (n, line) in text.lines().enumerate() {
            if line.trim_start().starts_with("//") {
                continue;
            }
            for to in referenced_roots(line, path.len()) {
                if to == from || !tops.contains(to.as_str()) {
                    continue;
                }
                if !allowed.contains(&to.as_str()) {
                    found.push(format!(
                        "{}:{}: `{from}` uses `{to}`: {}",
                        rel.display(),
                        n + 1,
                        line.trim()
                    ));
                }
            }
        }
    }
    found
}

#[test]
fn no_module_uses_a_layer_above_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let found = violations(&src);
    assert!(
        found.is_empty(),
        "{} use(s) of a higher layer:\n{}",
        found.len(),
        found.join("\n")
    );
}

#[test]
fn every_top_level_module_is_in_the_table() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    for file in files {
        let rel = file.strip_prefix(&src).expect("file under src");
        let top = module_path(rel)
            .first()
            .cloned()
            .unwrap_or_else(|| "lib".into());
        assert!(
            UNRESTRICTED.contains(&top.as_str()) || allowed(&top).is_some(),
            "{}: `{top}` has no row in the layer table",
            rel.display()
        );
    }
}

#[test]
fn the_scanner_sees_each_path_shape() {
    assert_eq!(
        referenced_roots("use crate::server::Connection;", 2),
        ["server"]
    );
    assert_eq!(
        referenced_roots("use crate::{push::AckModel, router, self};", 2),
        ["push", "router"]
    );
    assert_eq!(
        referenced_roots("use crate::{server::{a, b}, sender::udp};", 1),
        ["server", "sender"]
    );
    // From push/local.rs (depth 2) `super::super::server` reaches the crate root.
    assert_eq!(
        referenced_roots("use super::super::server::X;", 2),
        ["server"]
    );
    // From server/handler/bind.rs (depth 3) it stays inside `server`.
    assert!(referenced_roots("use super::super::connection::X;", 3).is_empty());
    assert_eq!(
        referenced_roots("let x = crate::push::local::f(crate::router::y);", 1),
        ["push", "router"]
    );
    assert!(referenced_roots("let notcrate::server = 1;", 1).is_empty());
    assert!(referenced_roots("$crate::server::x", 1).is_empty());
}

#[test]
fn module_paths_follow_rust_file_layout() {
    assert_eq!(
        module_path(Path::new("server/handler/bind.rs")),
        ["server", "handler", "bind"]
    );
    assert_eq!(module_path(Path::new("server/mod.rs")), ["server"]);
    assert_eq!(module_path(Path::new("config.rs")), ["config"]);
    assert!(module_path(Path::new("lib.rs")).is_empty());
}
