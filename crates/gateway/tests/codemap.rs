//! ARCHITECTURE.md's codemap is how a newcomer finds each concern of the gateway by its name. This
//! tidy test fails when a file under `crates/gateway/src` is missing from it, or when it names a
//! file that is gone.
//!
//! The rule, also stated in the codemap itself: within the `crates/gateway` entry, a path in
//! backticks is relative to `src/` (`config.rs`, `broker/redis.rs`). In a bullet that begins with
//! a directory (`` `store/` ``), paths are relative to that directory (`memory.rs`,
//! `postgres/batch.rs`), and a directory stands for its `mod.rs`. Paths beginning with `crates/`
//! are relative to the repository. Every file must be named: a directory's other files are not
//! covered by naming the directory.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

const HEADING: &str = "**`crates/gateway`**";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every file under `dir`, as `/`-separated paths relative to `root`.
fn files_under(root: &Path, dir: &Path, out: &mut BTreeSet<String>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            files_under(root, &path, out);
        } else {
            let relative = path.strip_prefix(root).expect("under the root");
            let parts: Vec<_> = relative.iter().map(|p| p.to_string_lossy()).collect();
            out.insert(parts.join("/"));
        }
    }
}

/// The gateway's entry of the codemap: from its heading to the next crate's, or the next section.
fn gateway_entry(doc: &str) -> &str {
    let start = doc
        .find(HEADING)
        .unwrap_or_else(|| panic!("ARCHITECTURE.md has no {HEADING} entry"));
    let rest = &doc[start + HEADING.len()..];
    let end = ["\n**`", "\n## "]
        .iter()
        .filter_map(|marker| rest.find(marker))
        .min()
        .unwrap_or(rest.len());
    &rest[..end]
}

/// A backticked span that names a file (`name.ext`) or a directory (`name/`).
fn is_path(span: &str) -> bool {
    let valid = !span.is_empty()
        && span
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-./".contains(c));
    let last = span.rsplit('/').next().unwrap_or_default();
    let file = last
        .rsplit_once('.')
        .is_some_and(|(stem, ext)| !stem.is_empty() && ext.chars().all(|c| c.is_ascii_lowercase()));
    valid && (span.ends_with('/') || file)
}

/// Every path the entry names, resolved: `src/…` or repository-relative (`crates/…`).
fn named_paths(entry: &str) -> Vec<String> {
    // Bullets and paragraphs, each with its continuation lines, so that a span may wrap.
    let mut blocks: Vec<String> = Vec::new();
    let mut open = false;
    for line in entry.lines() {
        let line = line.trim_end();
        match blocks.last_mut() {
            _ if line.is_empty() => open = false,
            Some(block) if open && !line.starts_with("- ") => {
                block.push(' ');
                block.push_str(line.trim_start());
            }
            _ => {
                blocks.push(line.to_owned());
                open = true;
            }
        }
    }
    let mut paths = Vec::new();
    for block in &blocks {
        let spans: Vec<&str> = block.split('`').skip(1).step_by(2).collect();
        let base = match (block.starts_with("- `"), spans.first()) {
            (true, Some(first)) if first.ends_with('/') => *first,
            _ => "",
        };
        for span in spans.into_iter().filter(|s| is_path(s)) {
            if span.starts_with("crates/") {
                paths.push(span.to_owned());
            } else if span == base {
                paths.push(format!("src/{span}"));
            } else {
                paths.push(format!("src/{base}{span}"));
            }
        }
    }
    paths
}

/// Which files the named paths cover, and the named paths that do not exist.
fn covered(crate_dir: &Path, repo: &Path, named: &[String]) -> (BTreeSet<String>, Vec<String>) {
    let mut covered = BTreeSet::new();
    let mut gone = Vec::new();
    for path in named {
        let (on_disk, relative) = match path.strip_prefix("crates/gateway/") {
            Some(inside) => (crate_dir.join(inside), inside.to_owned()),
            None if path.starts_with("crates/") => (repo.join(path), path.clone()),
            None => (crate_dir.join(path), path.clone()),
        };
        if let Some(dir) = relative.strip_suffix('/') {
            if !on_disk.is_dir() {
                gone.push(path.clone());
            } else if on_disk.join("mod.rs").is_file() {
                covered.insert(format!("{dir}/mod.rs"));
            }
        } else if on_disk.is_file() {
            covered.insert(relative);
        } else {
            gone.push(path.clone());
        }
    }
    (covered, gone)
}

#[test]
fn every_gateway_source_file_is_in_the_codemap_and_every_named_file_exists() {
    let doc =
        std::fs::read_to_string(repo_root().join("ARCHITECTURE.md")).expect("ARCHITECTURE.md");
    let named = named_paths(gateway_entry(&doc));
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let (covered, gone) = covered(crate_dir, &repo_root(), &named);

    let mut sources = BTreeSet::new();
    files_under(crate_dir, &src(), &mut sources);
    assert!(sources.len() > 20, "found only {sources:?}");
    let missing: Vec<_> = sources.difference(&covered).collect();
    let mut problems = Vec::new();
    if !missing.is_empty() {
        problems.push(format!(
            "it does not name {missing:?} (in a directory's bullet, relative to that directory: \
             `session/` … `social.rs`)"
        ));
    }
    if !gone.is_empty() {
        problems.push(format!("it names {gone:?}, which do not exist"));
    }
    assert!(
        problems.is_empty(),
        "ARCHITECTURE.md's codemap is out of date:\n  - {}",
        problems.join("\n  - ")
    );
}

#[test]
fn a_directory_bullet_names_its_files_relative_to_itself() {
    let entry = "intro `lib.rs`\n\
                 - `main.rs` — thin; see `store/` and `broker/redis.rs`.\n\
                 - `store/` — `Store` trait; `memory.rs`; `postgres/` with\n  \
                   `postgres/batch.rs`. SQL in `crates/gateway/migrations/`.\n\
                 - `app.rs` — `App`, `gateway\n  token`, `session:ready`, `0.6`.\n\
                 \n\
                 after `http.rs`\n";
    assert_eq!(
        named_paths(entry),
        [
            "src/lib.rs",
            "src/main.rs",
            "src/store/",
            "src/broker/redis.rs",
            "src/store/",
            "src/store/memory.rs",
            "src/store/postgres/",
            "src/store/postgres/batch.rs",
            "crates/gateway/migrations/",
            "src/app.rs",
            "src/http.rs",
        ]
    );
}
