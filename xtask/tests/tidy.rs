//! Project checks that are also tests, in the spirit of rust-analyzer's tidy test (`src/tidy.rs` of
//! its xtask):
//! the crate graph matches the edges allowed in docs/crate-graph.md, and every reference in the
//! docs and the code resolves (file paths, `docs/method.md` section numbers).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {path:?}: {e}"))
}

/// The allowed edges: the lines `crate -> dep, dep, ...` of docs/crate-graph.md's text block.
fn allowed_edges() -> BTreeMap<String, BTreeSet<String>> {
    let doc = read(&root().join("docs/crate-graph.md"));
    let block = doc
        .split("```text")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .unwrap_or_else(|| panic!("docs/crate-graph.md has no ```text block"));
    let mut edges = BTreeMap::new();
    for line in block.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let (from, to) = line
            .split_once("->")
            .unwrap_or_else(|| panic!("docs/crate-graph.md: no `->` in {line:?}"));
        let deps = to.split(',').map(|d| d.trim().to_string()).collect();
        edges.insert(from.trim().to_string(), deps);
    }
    edges
}

/// Each workspace crate's normal and build dependencies, from `cargo metadata`.
fn actual_edges() -> BTreeMap<String, BTreeSet<String>> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .current_dir(root())
        .output()
        .unwrap_or_else(|e| panic!("running cargo metadata: {e}"));
    assert!(
        out.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("parsing cargo metadata: {e}"));
    let mut edges = BTreeMap::new();
    for pkg in meta["packages"].as_array().into_iter().flatten() {
        let name = pkg["name"].as_str().unwrap_or_default().to_string();
        let deps = pkg["dependencies"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|d| d["kind"].as_str() != Some("dev"))
            .filter_map(|d| d["name"].as_str().map(str::to_string))
            .collect();
        edges.insert(name, deps);
    }
    edges
}

#[test]
fn crate_graph_matches_docs() {
    let allowed = allowed_edges();
    let actual = actual_edges();
    let mut problems = Vec::new();
    for (krate, deps) in &actual {
        let Some(ok) = allowed.get(krate) else {
            problems.push(format!("{krate} is not listed"));
            continue;
        };
        for dep in deps.difference(ok) {
            problems.push(format!("{krate} -> {dep} is not allowed"));
        }
    }
    for krate in allowed.keys().filter(|k| !actual.contains_key(*k)) {
        problems.push(format!("{krate} is listed but not in the workspace"));
    }
    assert!(
        problems.is_empty(),
        "the crate graph breaks docs/crate-graph.md: {problems:#?}"
    );
    // The parts of the layering that a reader relies on, spelled out.
    assert!(!allowed["daa-backbones"].contains("daa-diffusion"));
    assert!(!allowed["daa-diffusion"].contains("daa-backbones"));
    assert!(allowed["xtask"].iter().all(|d| !d.starts_with("daa-")));
}

/// Files with the given extensions under `dir` (recursively), skipping build output.
fn files(dir: &Path, exts: &[&str], out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().to_string();
        if path.is_dir() {
            if !name.starts_with('.') && name != "target" && name != "runs" {
                files(&path, exts, out);
            }
        } else if exts.iter().any(|e| name.ends_with(e)) {
            out.push(path);
        }
    }
}

/// Repository paths named in `text`: words starting `docs/`, `crates/`, `scripts/`, `xtask/` or
/// `datasets/`. Patterns (followed by `<`, `*` or `{`) are skipped.
fn repo_paths(text: &str) -> Vec<String> {
    let is_path_char = |c: char| c.is_ascii_alphanumeric() || "_./-".contains(c);
    let mut found = Vec::new();
    for prefix in ["docs/", "crates/", "scripts/", "xtask/", "datasets/"] {
        for (i, _) in text.match_indices(prefix) {
            if text[..i].chars().next_back().is_some_and(is_path_char) {
                continue; // part of a longer path or word
            }
            let len = text[i..]
                .find(|c: char| !is_path_char(c))
                .unwrap_or(text.len() - i);
            if text[i + len..].starts_with(['<', '*', '{']) {
                continue;
            }
            found.push(
                text[i..i + len]
                    .trim_end_matches(['.', ',', ':', ';'])
                    .to_string(),
            );
        }
    }
    found
}

/// Relative Markdown link targets `](target)` in `text` (not URLs or anchors).
fn md_links(text: &str) -> Vec<String> {
    text.match_indices("](")
        .filter_map(|(i, _)| text[i + 2..].split_once(')').map(|(t, _)| t))
        .filter(|t| !t.contains("://") && !t.starts_with('#') && !t.starts_with("mailto:"))
        .map(|t| t.split('#').next().unwrap_or(t).to_string())
        .collect()
}

#[test]
fn every_doc_reference_resolves() {
    let root = root();
    let mut docs = vec![root.join("README.md")];
    files(&root.join("docs"), &[".md"], &mut docs);
    let mut code = Vec::new();
    for dir in ["crates", "xtask", "scripts"] {
        files(&root.join(dir), &[".rs", ".py", ".sh", ".toml"], &mut code);
    }
    let sections: BTreeSet<u32> = read(&root.join("docs/method.md"))
        .lines()
        .filter_map(|l| l.strip_prefix("## ")?.split_once(". ")?.0.parse().ok())
        .collect();
    assert!(
        (1..=8).all(|n| sections.contains(&n)),
        "docs/method.md must number its sections 1-8, has {sections:?}"
    );
    // Built at run time so that this file does not name the missing document itself.
    let missing_doc = ["METHOD", ".md"].concat();
    let cite = ["docs/method.md", " section "].concat();
    let mut problems = Vec::new();
    for file in docs.iter().chain(&code) {
        let text = read(file);
        let shown = file
            .strip_prefix(&root)
            .unwrap_or(file)
            .display()
            .to_string();
        for path in repo_paths(&text) {
            if !root.join(&path).exists() {
                problems.push(format!("{shown}: no file {path}"));
            }
        }
        if file.extension().is_some_and(|e| e == "md") {
            let dir = file.parent().unwrap_or(&root);
            for link in md_links(&text) {
                if !dir.join(&link).exists() {
                    problems.push(format!("{shown}: broken link {link}"));
                }
            }
        }
        for (i, _) in text.match_indices(&cite) {
            let digits: String = text[i + cite.len()..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            match digits.parse::<u32>() {
                Ok(n) if sections.contains(&n) => {}
                _ => problems.push(format!("{shown}: `{cite}{digits}` names no section")),
            }
        }
        if text.contains(&missing_doc) {
            problems.push(format!(
                "{shown}: cites {missing_doc}, which the repository does not contain (cite docs/method.md)"
            ));
        }
    }
    assert!(problems.is_empty(), "unresolved references: {problems:#?}");
}

#[test]
fn the_reference_scanner_finds_paths_and_skips_patterns() {
    let text = "see `docs/method.md`, crates/*/tests/ and runs/x/docs/y; [a](results/b.png) \
                and crates/daa-<name>/src.";
    assert_eq!(repo_paths(text), vec!["docs/method.md".to_string()]);
    assert_eq!(md_links(text), vec!["results/b.png".to_string()]);
}
