//! End-to-end throughput over the public corpus, measured, not asserted.
//!
//!     cargo bench --bench pipeline            # instant (hash) and local model
//!     cargo bench --bench pipeline -- hash    # one provider only
//!     cargo bench --bench pipeline -- long    # one 5,000-chunk HTML page, local model
//!     DOCULEARN_CORPUS=../shared/peer/sample cargo bench --bench pipeline -- local
//!
//! For each embedder: starts the real daemon on a fresh database, uploads
//! every corpus document at once, waits until each job has ended, and prints
//! wall time, pages/s and chunks/s, each stage's share of the work (from the
//! history table), the daemon's peak RSS, and when the background indexer
//! had every chunk in the ANN index. `long`: upload to completed of one
//! generated HTML page of about 5,000 chunks. `copy`: the storing path on
//! its own (COPY of 384-d vectors into pgvector with and without an HNSW
//! index).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const SECRET: &str = "bench-secret-bench-secret-bench-secret-01";

#[path = "../tests/support/corpus.rs"]
mod corpus_files;
use corpus_files::corpus;

fn psql(db: &str, sql: &str) -> String {
    let out = Command::new("psql")
        .args(["-h", "127.0.0.1", "-U", "postgres", "-d", db, "-Atqc", sql])
        .output()
        .expect("psql");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn vm_hwm_mb(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmHWM:")).map(str::to_string))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse::<f64>().ok()))
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

fn corpus_files() -> Vec<PathBuf> {
    corpus_files::documents(&corpus())
}

/// One HTML page of about 5,000 chunks (1000/200): the corpus's reference
/// texts, paragraph by paragraph, numbered, until it is long enough.
fn long_page() -> PathBuf {
    let sources = [
        "gnuplot-manual.pdf.raw.txt",
        "reportlab-userguide.pdf.raw.txt",
        "xorg-icccm-fop.pdf.raw.txt",
    ];
    let shared = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus");
    let mut html = String::from("<!doctype html><html><head><title>A long page</title></head><body>\n");
    let texts: Vec<String> = sources
        .iter()
        .map(|name| std::fs::read_to_string(shared.join(name)).expect("corpus reference text"))
        .collect();
    let paragraphs: Vec<&str> = texts
        .iter()
        .flat_map(|t| t.split("\n\n"))
        .filter(|p| !p.trim().is_empty())
        .collect();
    // About 760 bytes of this HTML make one 1000/200 chunk of text.
    for (i, para) in paragraphs.iter().cycle().enumerate() {
        if html.len() >= 5_000 * 762 {
            break;
        }
        let escaped = para.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;");
        html.push_str(&format!("<p>({i}) {escaped}</p>\n"));
    }
    html.push_str("</body></html>\n");
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join("bench-long-page.html");
    std::fs::write(&path, html).unwrap();
    path
}

fn run_provider(provider: &str, files: &[PathBuf]) {
    let tag = format!(
        "{:x}",
        std::process::id() as u64 * 7919 + Instant::now().elapsed().subsec_nanos() as u64
    );
    let db = format!("dl_bench_{provider}_{tag}");
    let model_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(".local/models/all-MiniLM-L6-v2");
    let mut child = Command::new(env!("CARGO_BIN_EXE_doculearn"))
        .arg("serve")
        .env("DOCULEARN_AUTH__JWT_SECRET", SECRET)
        .env(
            "DOCULEARN_DATABASE_URL",
            format!("postgres://postgres@127.0.0.1:5432/{db}"),
        )
        .env("DOCULEARN_QUEUE__NAME", format!("bench:{tag}:queue"))
        .env("DOCULEARN_PROGRESS__CHANNEL", format!("bench:{tag}:progress"))
        .env("DOCULEARN_HTTP__LISTEN", "127.0.0.1:0")
        .env("DOCULEARN_EMBEDDING__PROVIDER", provider)
        .env("DOCULEARN_EMBEDDING__MODEL_DIR", &model_dir)
        .env(
            "DOCULEARN_EMBEDDING__OPENVINO_DIR",
            Path::new(env!("CARGO_MANIFEST_DIR")).join(".local/openvino"),
        )
        .env("DOCULEARN_QUEUE__MAX_JOBS", "4")
        .env("DOCULEARN_QUEUE__POLL_INTERVAL_MS", "20")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start daemon");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .trim_start_matches("doculearn listening on http://")
        .to_string();
    let token = doculearn::http::auth::AuthKeys::hs256(SECRET, "doculearn", "doculearn").mint(
        uuid::Uuid::new_v4(),
        false,
        7200,
    );

    let start = Instant::now();
    let mut curl = Command::new("curl");
    curl.args([
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "-H",
        &format!("Authorization: Bearer {token}"),
    ]);
    for f in files {
        curl.arg("-F").arg(format!("file=@{}", f.display()));
    }
    curl.arg(format!("http://{addr}/api/v1/documents"));
    let status = String::from_utf8_lossy(&curl.output().unwrap().stdout).to_string();
    assert_eq!(status, "202", "upload");
    let n = files.len();
    loop {
        let ended: usize = psql(
            &db,
            "SELECT count(*) FROM job_progress WHERE stage IN ('completed','failed')",
        )
        .parse()
        .unwrap_or(0);
        if ended == n {
            break;
        }
        if start.elapsed() > Duration::from_secs(3600) {
            panic!("not done after an hour");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let wall = start.elapsed().as_secs_f64();
    let rss = vm_hwm_mb(child.id());
    // The background indexer moves every stored chunk into the ANN index.
    let indexed_after = loop {
        let waiting: i64 = psql(&db, "SELECT count(*) FROM chunks WHERE NOT indexed")
            .parse()
            .unwrap_or(-1);
        if waiting == 0 {
            break start.elapsed().as_secs_f64();
        }
        if start.elapsed() > Duration::from_secs(3600) {
            panic!("chunks still outside the index after an hour");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let _ = child.kill();
    let _ = child.wait();

    let completed = psql(&db, "SELECT count(*) FROM job_progress WHERE stage = 'completed'");
    let failed = psql(&db, "SELECT string_agg(d.name || ': ' || j.error, E'\\n') FROM job_progress j JOIN documents d ON d.id = j.document_id WHERE j.stage = 'failed'");
    let pages: f64 = psql(
        &db,
        "SELECT COALESCE(sum(pages), 0) FROM documents WHERE chunk_count IS NOT NULL",
    )
    .parse()
    .unwrap_or(0.0);
    let chunks: f64 = psql(&db, "SELECT count(*) FROM chunks").parse().unwrap_or(0.0);
    // Time spent in each stage: from a stage's first event to the next stage's first event.
    let shares = psql(
        &db,
        "WITH firsts AS ( \
           SELECT job_id, stage, min(timestamp) AS t FROM job_progress_history GROUP BY job_id, stage), \
         spans AS ( \
           SELECT stage, EXTRACT(EPOCH FROM (lead(t) OVER (PARTITION BY job_id ORDER BY t) - t)) AS s FROM firsts) \
         SELECT string_agg(stage || '=' || round(total::numeric, 2) || 's (' || round((100 * total / grand)::numeric, 1) || '%)', '  ' ORDER BY \
           array_position(ARRAY['queued','downloading','extracting','chunking','embedding','storing'], stage)) \
         FROM (SELECT stage, sum(s) AS total, sum(sum(s)) OVER () AS grand FROM spans \
               WHERE s IS NOT NULL AND stage NOT IN ('completed','failed') GROUP BY stage) x",
    );
    println!("== {provider} embedder: {n} documents ({completed} completed)");
    println!("wall {wall:.1} s | {pages} pages, {chunks} chunks | {:.1} pages/s, {:.1} chunks/s | daemon peak RSS {rss:.0} MB", pages / wall, chunks / wall);
    println!("stage time (summed over jobs): {shares}");
    println!(
        "every chunk in the ANN index {:.1} s after the upload began ({:.1} s after the last job ended)",
        indexed_after,
        indexed_after - wall
    );
    if !failed.is_empty() {
        println!("failed as expected:\n{failed}");
    }
    if std::env::var("BENCH_STORE_DETAIL").is_ok() {
        println!("{}", psql(&db, "WITH e AS (SELECT job_id, progress, timestamp FROM job_progress_history WHERE stage IN ('storing','completed')) \
            SELECT 'store 0.85->0.95 ms: ' || round(avg(EXTRACT(EPOCH FROM b.timestamp - a.timestamp))::numeric*1000, 1) || ', 0.95->completed ms: ' || round(avg(EXTRACT(EPOCH FROM c.timestamp - b.timestamp))::numeric*1000, 1) \
            FROM e a JOIN e b ON a.job_id = b.job_id AND a.progress = 0.85 AND b.progress = 0.95 JOIN e c ON c.job_id = a.job_id AND c.progress = 1"));
    }
    let _ = Command::new("psql")
        .args([
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-qc",
            &format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"),
        ])
        .output();
}

fn copy_bench() {
    let db = format!("dl_bench_copy_{}", std::process::id());
    psql("postgres", &format!("CREATE DATABASE {db}"));
    psql(
        &db,
        "CREATE EXTENSION vector; CREATE TABLE v (id bigserial, e vector(384))",
    );
    let rows = 20_000;
    let mut data = String::with_capacity(rows * 384 * 10);
    let mut seed = 88172645463325252u64;
    for _ in 0..rows {
        data.push('[');
        for k in 0..384 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            if k > 0 {
                data.push(',');
            }
            data.push_str(&format!("{:.6}", (seed % 2000) as f64 / 1000.0 - 1.0));
        }
        data.push_str("]\n");
    }
    let file = std::env::temp_dir().join(format!("copy-bench-{}.txt", std::process::id()));
    std::fs::write(&file, &data).unwrap();
    let copy = |label: &str| {
        let t = Instant::now();
        let out = Command::new("psql")
            .args(["-h", "127.0.0.1", "-U", "postgres", "-d", &db, "-qc"])
            .arg(format!("\\copy v (e) FROM '{}'", file.display()))
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let s = t.elapsed().as_secs_f64();
        println!("COPY {rows} x 384-d {label}: {s:.2} s = {:.0} rows/s", rows as f64 / s);
    };
    println!("== storing path (COPY text into pgvector)");
    copy("into a table without an index");
    let t = Instant::now();
    psql(
        &db,
        "SET maintenance_work_mem = '512MB'; CREATE INDEX ON v USING hnsw (e vector_cosine_ops)",
    );
    println!("HNSW build over {rows} rows: {:.1} s", t.elapsed().as_secs_f64());
    copy(&format!("into a table with an HNSW index ({rows} rows already)"));
    let _ = std::fs::remove_file(&file);
    psql("postgres", &format!("DROP DATABASE {db} WITH (FORCE)"));
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let want = |p: &str| args.is_empty() || args.iter().any(|a| a == p);
    if want("hash") {
        run_provider("hash", &corpus_files());
    }
    if want("local") {
        run_provider("local", &corpus_files());
    }
    if args.iter().any(|a| a == "long") {
        run_provider("local", &[long_page()]);
    }
    if want("copy") {
        copy_bench();
    }
}
