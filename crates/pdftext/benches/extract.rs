//! Extraction speed next to pdftotext (poppler), on the same files in the
//! same session, taking turns file by file: our extractor in this process
//! (one thread), then `pdftotext -raw FILE -` as a process. Best of
//! `--rounds` (default 3) per file and tool. Figures only.
//!
//!     cargo bench -p pdftext --bench extract -- [--rounds N] FOLDER...
//!
//! `scripts/bench-extract.sh` installs poppler-utils when missing and runs
//! this over ../shared/corpus and ../shared/peer/sample.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn main() {
    let mut rounds = 3usize;
    let mut folders = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--rounds" => rounds = args.next().and_then(|n| n.parse().ok()).expect("--rounds N"),
            "--bench" => {}
            _ => folders.push(PathBuf::from(a)),
        }
    }
    assert!(!folders.is_empty(), "usage: extract [--rounds N] FOLDER...");
    let poppler = Command::new("pdftotext").arg("-v").stderr(Stdio::piped()).output().ok();
    let poppler_version = poppler.as_ref().map(|o| {
        String::from_utf8_lossy(&o.stderr)
            .lines()
            .next()
            .unwrap_or("")
            .to_string()
    });
    println!(
        "extraction, best of {rounds}, one file at a time; pdftotext: {}",
        poppler_version
            .as_deref()
            .unwrap_or("not installed (apt-get install poppler-utils)")
    );
    for folder in folders {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&folder)
            .unwrap_or_else(|e| panic!("{}: {e}", folder.display()))
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "pdf"))
            .collect();
        files.sort();
        let (mut pages, mut ours, mut theirs, mut n) = (0usize, Duration::ZERO, Duration::ZERO, 0usize);
        for path in &files {
            let bytes = std::fs::read(path).unwrap();
            let mut best_ours = Duration::MAX;
            let mut best_theirs = Duration::MAX;
            let mut file_pages = None;
            for _ in 0..rounds {
                let t = Instant::now();
                let r = pdftext::extract(&bytes, &pdftext::Limits::default());
                best_ours = best_ours.min(t.elapsed());
                file_pages = r.ok().map(|ex| ex.pages.len());
                if poppler.is_some() {
                    let t = Instant::now();
                    let ok = Command::new("pdftotext")
                        .args(["-raw"])
                        .arg(path)
                        .arg("-")
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .status()
                        .is_ok_and(|s| s.success());
                    if ok {
                        best_theirs = best_theirs.min(t.elapsed());
                    }
                }
            }
            // Files one of the two cannot read (encrypted, image-only) are left out.
            let Some(p) = file_pages.filter(|_| poppler.is_none() || best_theirs != Duration::MAX) else {
                continue;
            };
            pages += p;
            ours += best_ours;
            if best_theirs != Duration::MAX {
                theirs += best_theirs;
            }
            n += 1;
        }
        let rate = |d: Duration| pages as f64 / d.as_secs_f64().max(1e-9);
        print!(
            "{}: {n} files, {pages} pages: pdftext {:.2} s = {:.0} pages/s",
            folder.display(),
            ours.as_secs_f64(),
            rate(ours)
        );
        if poppler.is_some() {
            println!(
                "; pdftotext {:.2} s = {:.0} pages/s; pdftext is {:.1}x pdftotext",
                theirs.as_secs_f64(),
                rate(theirs),
                theirs.as_secs_f64() / ours.as_secs_f64().max(1e-9)
            );
        } else {
            println!();
        }
    }
}
