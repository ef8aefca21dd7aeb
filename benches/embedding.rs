//! The local embedder against sentence-transformers on PyTorch, measured
//! side by side in one run, not asserted.
//!
//!     cargo bench --bench embedding             # speed + fidelity on the corpus
//!     cargo bench --bench embedding -- --quick  # the 200 bench chunks only
//!     cargo bench --bench embedding -- --rounds 5
//!     cargo bench --bench embedding -- --file some.pdf   # fidelity on these files instead
//!
//! The Python side runs in the benches' own venv (`scripts/bench-venv.sh`
//! makes it once: sentence-transformers, PyTorch and the same model wheel
//! doculearn installs), in a child process that keeps the model loaded, so
//! the two engines take turns (Python, us, Python, us, ...) on a machine
//! whose load changes from minute to minute. OPENBLAS_* are removed from the
//! Python side's environment only.
//!
//! Ours is the daemon's path: the configured local embedder (the embedding
//! pool) fed the way a document actor feeds it, batches of
//! `embedding.batch_size` with the next one submitted while the current one
//! is awaited.
//!
//! 1. Speed: the 200 chunks of `../shared/notes/embedding-speed.md`
//!    (`text[i*800 .. i*800+1000]` of the gnuplot manual's reference text):
//!    chunks/s and CPU-seconds per pass for both, the ratio, and the cosine
//!    of our vectors against PyTorch's fp32 ones (min / mean).
//! 2. Fidelity (skipped with --quick): every chunk of every corpus document
//!    as the daemon extracts and chunks it, embedded by both: cosine min /
//!    mean over all of them, the worst document, and both speeds.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::time::Instant;

use doculearn::config::Settings;
use doculearn::pipeline::embed::{self, Embedder};
use doculearn::pipeline::{chunk, extract};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[path = "../tests/support/corpus.rs"]
mod corpus_files;
use corpus_files::corpus;

/// CPU seconds this process has used (user + system).
fn cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may hold spaces): utime is the 12th, stime the 13th.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<f64> = rest.split_whitespace().filter_map(|x| x.parse().ok()).collect();
    // USER_HZ is 100 on Linux.
    f.get(10).zip(f.get(11)).map(|(u, s)| (u + s) / 100.0).unwrap_or(0.0)
}

struct Python {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Python {
    fn start(threads: usize) -> Python {
        let out = Command::new("bash")
            .arg(root().join("scripts/bench-venv.sh"))
            .stderr(Stdio::inherit())
            .output()
            .expect("run scripts/bench-venv.sh");
        assert!(out.status.success(), "scripts/bench-venv.sh failed");
        let python = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let mut child = Command::new(&python)
            .arg(root().join("benches/st_embed.py"))
            .arg(threads.to_string())
            .env_remove("OPENBLAS_CORETYPE")
            .env_remove("OPENBLAS_L2_SIZE")
            .env("HF_HUB_OFFLINE", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the sentence-transformers side");
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let mut p = Python { child, stdin, stdout };
        let ready = p.read();
        println!(
            "sentence-transformers: PyTorch {}, {} threads, max_seq_length {}",
            ready["torch"].as_str().unwrap_or("?"),
            ready["threads"],
            ready["max_seq_length"]
        );
        p
    }

    fn read(&mut self) -> serde_json::Value {
        let mut line = String::new();
        self.stdout.read_line(&mut line).expect("python answers");
        serde_json::from_str(&line).unwrap_or_else(|_| panic!("python said: {line:?}"))
    }

    fn call(&mut self, msg: serde_json::Value) -> serde_json::Value {
        writeln!(self.stdin, "{msg}").unwrap();
        self.stdin.flush().unwrap();
        self.read()
    }

    fn load(&mut self, texts: &[String]) {
        let path = std::env::temp_dir().join(format!("embed-bench-{}.json", std::process::id()));
        std::fs::write(&path, serde_json::to_vec(texts).unwrap()).unwrap();
        let r = self.call(serde_json::json!({"cmd": "load", "path": path}));
        assert_eq!(r["n"].as_u64(), Some(texts.len() as u64));
        let _ = std::fs::remove_file(path);
    }

    /// (wall, cpu) seconds of one pass over the loaded texts.
    fn run(&mut self) -> (f64, f64) {
        let r = self.call(serde_json::json!({"cmd": "run"}));
        (r["wall"].as_f64().unwrap(), r["cpu"].as_f64().unwrap())
    }

    fn vectors(&mut self, dim: usize) -> Vec<Vec<f32>> {
        let path = std::env::temp_dir().join(format!("embed-bench-{}.f32", std::process::id()));
        self.call(serde_json::json!({"cmd": "save", "path": path}));
        let bytes = std::fs::read(&path).unwrap();
        let _ = std::fs::remove_file(path);
        bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect::<Vec<_>>()
            .chunks(dim)
            .map(<[f32]>::to_vec)
            .collect()
    }
}

impl Drop for Python {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Embeds `texts` as a document actor does: batches, one submitted ahead.
async fn ours(embedder: &Arc<dyn Embedder>, texts: &[String]) -> Vec<Vec<f32>> {
    let pieces: Vec<Vec<String>> = texts.chunks(embedder.batch_size()).map(<[String]>::to_vec).collect();
    let mut out = Vec::with_capacity(texts.len());
    let mut ahead = pieces.first().map(|p| embedder.clone().submit(p.clone()));
    for k in 0..pieces.len() {
        let current = ahead.take().unwrap();
        ahead = pieces.get(k + 1).map(|p| embedder.clone().submit(p.clone()));
        out.extend(current.await.expect("embeds"));
    }
    out
}

fn cosines(a: &[Vec<f32>], b: &[Vec<f32>]) -> Vec<f64> {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| {
            let dot: f64 = x.iter().zip(y).map(|(p, q)| *p as f64 * *q as f64).sum();
            let nx: f64 = x.iter().map(|p| (*p as f64).powi(2)).sum::<f64>().sqrt();
            let ny: f64 = y.iter().map(|q| (*q as f64).powi(2)).sum::<f64>().sqrt();
            dot / (nx * ny)
        })
        .collect()
}

fn min_mean(c: &[f64]) -> (f64, f64) {
    (
        c.iter().cloned().fold(f64::INFINITY, f64::min),
        c.iter().sum::<f64>() / c.len().max(1) as f64,
    )
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// Both engines, taking turns, `rounds` passes each after one warm-up pass.
/// Returns our last vectors and PyTorch's.
fn race(
    rt: &tokio::runtime::Runtime,
    py: &mut Python,
    embedder: &Arc<dyn Embedder>,
    texts: &[String],
    rounds: usize,
    label: &str,
) -> (Vec<Vec<f32>>, Vec<Vec<f32>>) {
    py.load(texts);
    py.run();
    rt.block_on(ours(embedder, texts));
    let (mut py_wall, mut py_cpu, mut our_wall, mut our_cpu) = (vec![], vec![], vec![], vec![]);
    let mut vectors = Vec::new();
    for _ in 0..rounds {
        let (w, c) = py.run();
        py_wall.push(w);
        py_cpu.push(c);
        let (t, c0) = (Instant::now(), cpu_secs());
        vectors = rt.block_on(ours(embedder, texts));
        our_wall.push(t.elapsed().as_secs_f64());
        our_cpu.push(cpu_secs() - c0);
    }
    let n = texts.len() as f64;
    let (py_rate, our_rate) = (n / median(&py_wall), n / median(&our_wall));
    println!(
        "== {label}: {} texts, median of {rounds} passes each, taking turns",
        texts.len()
    );
    println!(
        "sentence-transformers (PyTorch fp32): {py_rate:6.1} chunks/s  ({:.2} CPU-s per pass)",
        median(&py_cpu)
    );
    println!(
        "doculearn {:<26} {our_rate:6.1} chunks/s  ({:.2} CPU-s per pass)",
        format!("({}):", embedder.engine()),
        median(&our_cpu)
    );
    println!(
        "ratio: {:.2}x by wall time, {:.2}x by CPU time",
        our_rate / py_rate,
        median(&py_cpu) / median(&our_cpu)
    );
    let reference = py.vectors(embedder.dimension());
    (vectors, reference)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|a| a == "--quick");
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse::<usize>().ok())
    };
    let rounds = value("--rounds").unwrap_or(3).max(1);
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);

    // The daemon's own settings with the local provider (a JWT secret only
    // to pass validation; nothing here serves HTTP).
    std::env::set_var(
        "DOCULEARN_AUTH__JWT_SECRET",
        "bench-secret-bench-secret-bench-secret-01",
    );
    std::env::set_var("DOCULEARN_EMBEDDING__PROVIDER", "local");
    let settings = Settings::load(None).expect("settings");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let _ = tracing_subscriber::fmt().with_env_filter("doculearn=info").try_init();
    let t = Instant::now();
    let embedder = rt
        .block_on(async { embed::build(&settings) })
        .expect("local model loads");
    println!(
        "doculearn: {} ({}), loaded in {:.2} s",
        embedder.engine(),
        embedder.model(),
        t.elapsed().as_secs_f64()
    );
    let mut py = Python::start(threads);

    let text = std::fs::read_to_string(corpus().join("gnuplot-manual.pdf.raw.txt")).expect("corpus");
    let chars: Vec<char> = text.chars().collect();
    let chunks: Vec<String> = (0..200)
        .map(|i| chars[i * 800..i * 800 + 1000].iter().collect())
        .collect();
    let (ours_v, reference) = race(&rt, &mut py, &embedder, &chunks, rounds, "speed, 200 bench chunks");
    let (min, mean) = min_mean(&cosines(&ours_v, &reference));
    println!("cosine vs PyTorch fp32: min {min:.5}, mean {mean:.5}");

    if quick {
        return;
    }
    // Every corpus document (or the files named with --file) as the daemon reads and chunks it.
    let limits = extract::Limits::from_settings(&settings.pipeline);
    let named: Vec<PathBuf> = args
        .iter()
        .enumerate()
        .filter(|(_, a)| *a == "--file")
        .filter_map(|(i, _)| args.get(i + 1).map(PathBuf::from))
        .collect();
    let files: Vec<PathBuf> = if named.is_empty() {
        corpus_files::documents(&corpus())
    } else {
        named
    };
    let mut texts = Vec::new();
    let mut owner = Vec::new();
    for f in &files {
        let bytes = std::fs::read(f).unwrap();
        let name = f.file_name().unwrap().to_string_lossy().to_string();
        match extract::extract_bytes(&bytes, &name, "", &limits) {
            Ok(ex) => {
                for c in chunk::split(&ex, settings.pipeline.chunk_size, settings.pipeline.chunk_overlap) {
                    texts.push(c.text);
                    owner.push(name.clone());
                }
            }
            Err(e) => println!("(skipped {name}: {e})"),
        }
    }
    let documents = owner.iter().collect::<std::collections::BTreeSet<_>>().len();
    let (ours_v, reference) = race(
        &rt,
        &mut py,
        &embedder,
        &texts,
        1,
        &format!("fidelity, every chunk of {documents} corpus documents"),
    );
    let c = cosines(&ours_v, &reference);
    let (min, mean) = min_mean(&c);
    println!(
        "cosine vs PyTorch fp32 over {} chunks: min {min:.5}, mean {mean:.5}",
        c.len()
    );
    let mut worst: std::collections::BTreeMap<&String, (f64, f64, usize)> = Default::default();
    for (name, cos) in owner.iter().zip(&c) {
        let e = worst.entry(name).or_insert((f64::INFINITY, 0.0, 0));
        e.0 = e.0.min(*cos);
        e.1 += cos;
        e.2 += 1;
    }
    let mut per_doc: Vec<_> = worst.into_iter().collect();
    per_doc.sort_by(|a, b| a.1 .0.partial_cmp(&b.1 .0).unwrap());
    println!("per document (lowest minimum first):");
    for (name, (min, sum, n)) in per_doc {
        println!("  {name:<48} {n:5} chunks  min {min:.5}  mean {:.5}", sum / n as f64);
    }
}
