//! The library's modules form layers: each imports only modules of its own layer or
//! below (STYLE.md 16; issue 11 cut a loop of 14 files). This reads every source file
//! and fails on an upward `crate::` import, naming the file and the module it reached.

use std::path::Path;

/// Bottom to top; a module may use modules of earlier rows, and of its own row only where
/// the row lists them in the order they may be used (left may not use right).
const LAYERS: &[&[&str]] = &[
    &["error", "util", "metrics"],
    &["analysis", "schema", "encoder"],
    &["catalog", "vectors"],
    &["intent", "index"],
    &["behavior", "suggest", "experiments"],
    &["retrieve", "rank"],
    &["settings", "jobs", "keys", "cluster"],
    &["engine"],
    &["offline"],
    &["server"],
];

fn position(module: &str) -> Option<(usize, usize)> {
    LAYERS
        .iter()
        .enumerate()
        .find_map(|(row, mods)| mods.iter().position(|m| *m == module).map(|col| (row, col)))
}

/// Top-level modules named by `crate::NAME` in `text` (test modules cut off).
fn imports(text: &str) -> Vec<String> {
    let code = text.split("#[cfg(test)]").next().unwrap_or(text);
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + "crate::".len()..];
        if rest.starts_with('{') {
            // `crate::{a, b::c}`: every first segment inside the braces.
            let end = rest.find("};").unwrap_or(rest.len());
            let inner = &rest[1..end];
            let mut depth = 0;
            let mut start = true;
            let mut name = String::new();
            for ch in inner.chars() {
                match ch {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        start = true;
                        continue;
                    }
                    _ => {}
                }
                if depth == 0 && start {
                    if ch.is_alphanumeric() || ch == '_' {
                        name.push(ch);
                    } else if !name.is_empty() {
                        out.push(std::mem::take(&mut name));
                        start = false;
                    }
                }
            }
            if !name.is_empty() {
                out.push(name);
            }
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            out.push(name);
        }
    }
    out
}

fn walk(dir: &Path, files: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            walk(&path, files);
        } else if path.extension().is_some_and(|x| x == "rs") {
            files.push(path);
        }
    }
}

#[test]
fn modules_import_only_downward() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    walk(&src, &mut files);
    let mut upward = Vec::new();
    for file in &files {
        let rel = file.strip_prefix(&src).unwrap();
        let top = rel.iter().next().unwrap().to_string_lossy().to_string();
        let top = top.trim_end_matches(".rs").to_string();
        if ["lib", "main", "cli"].contains(&top.as_str()) {
            continue;
        }
        let me = position(&top).unwrap_or_else(|| {
            panic!("{}: module `{top}` is in no layer of LAYERS", rel.display())
        });
        let text = std::fs::read_to_string(file).unwrap();
        for used in imports(&text) {
            if used == top {
                continue;
            }
            let Some(them) = position(&used) else {
                continue;
            };
            if them.0 > me.0 || (them.0 == me.0 && them.1 > me.1) {
                upward.push(format!("{} uses crate::{used}", rel.display()));
            }
        }
    }
    assert!(upward.is_empty(), "upward imports:\n{}", upward.join("\n"));
    assert!(imports("use crate::{a::b, c::{d, e}};").contains(&"c".to_string()));
}
