//! The public test corpus (`../shared/corpus`, or `DOCULEARN_CORPUS`): shared
//! by the black-box tests and the benches (`#[path]`-included by both).

#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// Where the corpus is.
pub fn corpus() -> PathBuf {
    std::env::var("DOCULEARN_CORPUS")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus"))
}

/// The documents themselves, sorted (not the reference texts, the manifest or its README).
pub fn documents(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy().to_string();
            !n.ends_with(".raw.txt") && !n.ends_with(".ref.txt") && n != "README.md" && n != "manifest.tsv"
        })
        .collect();
    files.sort();
    files
}
