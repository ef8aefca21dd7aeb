//! Search quality over the public corpus, measured, not asserted.
//!
//!     cargo bench --bench search              # hybrid, semantic, keyword
//!     cargo bench --bench search -- trgm      # also pg_trgm as the keyword side
//!     bash scripts/bench-search.sh            # the same, bounded
//!
//! Starts the real daemon with the local model on a fresh database (loopback
//! only), uploads every corpus document, waits for every job to end, then
//! asks each query of `benches/search_queries.json` in each mode (k = 5)
//! and prints recall@5 per mode and per query class, and the mean query
//! latency. A query is found when one of its top 5 chunks is of the expected
//! document and holds the expected passage (compared lower-cased, without
//! whitespace, so line breaks and the spaces some PDFs put between CJK
//! characters do not count). `trgm`: the same queries through pg_trgm
//! (`word_similarity`, a GIN trigram index), the alternative the full-text
//! side was chosen against, straight in SQL on the same chunks.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const SECRET: &str = "bench-secret-bench-secret-bench-secret-01";
const K: usize = 5;

#[path = "../tests/support/corpus.rs"]
mod corpus_files;
use corpus_files::corpus;

#[derive(serde::Deserialize)]
struct Query {
    class: String,
    query: String,
    document: String,
    passage: String,
}

fn psql(db: &str, sql: &str) -> String {
    let out = Command::new("psql")
        .args(["-h", "127.0.0.1", "-U", "postgres", "-d", db, "-Atqc", sql])
        .output()
        .expect("psql");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn norm(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_whitespace())
        .flat_map(char::to_lowercase)
        .collect()
}

/// Whether one of the hits (document name, chunk text) is the query's passage.
fn found(q: &Query, hits: &[(String, String)]) -> bool {
    let passage = norm(&q.passage);
    hits.iter()
        .take(K)
        .any(|(doc, text)| doc == &q.document && norm(text).contains(&passage))
}

/// Recall per class and in all, and the mean latency, for one mode.
struct Tally {
    by_class: BTreeMap<String, (usize, usize)>,
    elapsed: Duration,
    missed: Vec<String>,
}

impl Tally {
    fn new() -> Self {
        Tally {
            by_class: BTreeMap::new(),
            elapsed: Duration::ZERO,
            missed: Vec::new(),
        }
    }

    fn add(&mut self, q: &Query, hit: bool, took: Duration) {
        let e = self.by_class.entry(q.class.clone()).or_default();
        e.1 += 1;
        if hit {
            e.0 += 1;
        } else {
            self.missed.push(q.query.clone());
        }
        self.elapsed += took;
    }

    fn row(&self, label: &str, classes: &[String]) -> String {
        let (mut hit, mut all) = (0, 0);
        let mut cells = Vec::new();
        for c in classes {
            let (h, n) = self.by_class.get(c).copied().unwrap_or_default();
            hit += h;
            all += n;
            cells.push(format!("{h}/{n} = {:.2}", h as f64 / n.max(1) as f64));
        }
        format!(
            "| {label} | {hit}/{all} = {:.2} | {} | {:.1} ms |",
            hit as f64 / all.max(1) as f64,
            cells.join(" | "),
            self.elapsed.as_secs_f64() * 1000.0 / all.max(1) as f64
        )
    }
}

struct Daemon {
    child: std::process::Child,
    addr: String,
    db: String,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = Command::new("psql")
            .args(["-h", "127.0.0.1", "-U", "postgres", "-qc"])
            .arg(format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.db))
            .output();
    }
}

fn start_daemon() -> Daemon {
    let tag = format!("{:x}", std::process::id());
    let db = format!("dl_bench_search_{tag}");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
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
        .env("DOCULEARN_EMBEDDING__PROVIDER", "local")
        .env(
            "DOCULEARN_EMBEDDING__MODEL_DIR",
            root.join(".local/models/all-MiniLM-L6-v2"),
        )
        .env("DOCULEARN_EMBEDDING__OPENVINO_DIR", root.join(".local/openvino"))
        .env("DOCULEARN_QUEUE__MAX_JOBS", "2")
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
    Daemon { child, addr, db }
}

fn upload_all(d: &Daemon, token: &str, files: &[PathBuf]) {
    let mut curl = Command::new("curl");
    curl.args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-H"])
        .arg(format!("Authorization: Bearer {token}"));
    for f in files {
        curl.arg("-F").arg(format!("file=@{}", f.display()));
    }
    curl.arg(format!("http://{}/api/v1/documents", d.addr));
    let status = String::from_utf8_lossy(&curl.output().unwrap().stdout).to_string();
    assert_eq!(status, "202", "upload");
    let start = Instant::now();
    loop {
        let ended: usize = psql(
            &d.db,
            "SELECT count(*) FROM job_progress WHERE stage IN ('completed','failed')",
        )
        .parse()
        .unwrap_or(0);
        if ended == files.len() {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(1800), "not done after 30 minutes");
        std::thread::sleep(Duration::from_millis(200));
    }
    println!(
        "ingested {} documents in {:.0} s: {} chunks",
        files.len(),
        start.elapsed().as_secs_f64(),
        psql(&d.db, "SELECT count(*) FROM chunks")
    );
}

async fn ask(http: &reqwest::Client, d: &Daemon, token: &str, q: &str, mode: &str) -> Vec<(String, String)> {
    let resp = http
        .post(format!("http://{}/api/v1/search", d.addr))
        .bearer_auth(token)
        .json(&json!({ "query": q, "k": K, "mode": mode }))
        .send()
        .await
        .expect("search");
    assert!(resp.status().is_success(), "{mode} {q}: {}", resp.status());
    let body: Value = resp.json().await.unwrap();
    body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["document_name"].as_str().unwrap().to_string(),
                h["content"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// pg_trgm as the keyword side: chunks whose words are most similar to the query.
async fn trigram(pool: &sqlx::PgPool, q: &str) -> Vec<(String, String)> {
    sqlx::query_as(
        "SELECT d.name, c.content FROM chunks c JOIN documents d ON d.id = c.document_id \
         WHERE $1 <% c.content ORDER BY word_similarity($1, c.content) DESC, c.document_id, c.chunk_index LIMIT 5",
    )
    .bind(q)
    .fetch_all(pool)
    .await
    .expect("trigram query")
}

fn main() {
    let trgm = std::env::args().any(|a| a == "trgm");
    let queries: Vec<Query> = serde_json::from_str(
        &std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/search_queries.json"))
            .expect("the query set"),
    )
    .expect("the query set is JSON");
    let mut classes: Vec<String> = queries.iter().map(|q| q.class.clone()).collect();
    classes.sort();
    classes.dedup();
    let files = corpus_files::documents(&corpus());
    let d = start_daemon();
    let user = uuid::Uuid::new_v4();
    let token = doculearn::http::auth::AuthKeys::hs256(SECRET, "doculearn", "doculearn").mint(user, false, 7200);
    upload_all(&d, &token, &files);
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let http = reqwest::Client::new();
        // One query first, so the model and the connections are warm.
        ask(&http, &d, &token, "warm up", "hybrid").await;
        let mut rows = Vec::new();
        let mut misses = Vec::new();
        for mode in ["hybrid", "semantic", "keyword"] {
            let mut t = Tally::new();
            for q in &queries {
                let start = Instant::now();
                let hits = ask(&http, &d, &token, &q.query, mode).await;
                t.add(q, found(q, &hits), start.elapsed());
            }
            rows.push(t.row(mode, &classes));
            misses.push((mode, t.missed));
        }
        if trgm {
            let pool = sqlx::PgPool::connect(&format!("postgres://postgres@127.0.0.1:5432/{}", d.db))
                .await
                .unwrap();
            let start = Instant::now();
            sqlx::raw_sql(
                "CREATE EXTENSION IF NOT EXISTS pg_trgm; \
                 CREATE INDEX chunks_content_trgm ON chunks USING gin (content gin_trgm_ops)",
            )
            .execute(&pool)
            .await
            .unwrap();
            println!("pg_trgm GIN index built in {:.1} s", start.elapsed().as_secs_f64());
            // The chosen full-text side on the same footing (SQL only, no HTTP).
            let mut t = Tally::new();
            for q in &queries {
                let start = Instant::now();
                let hits = doculearn::db::keyword_search(&pool, user, &q.query, K as i64, None)
                    .await
                    .unwrap();
                let hits: Vec<(String, String)> = hits.into_iter().map(|h| (h.document_name, h.content)).collect();
                t.add(q, found(q, &hits), start.elapsed());
            }
            rows.push(t.row("keyword, tsvector (SQL only)", &classes));
            let mut t = Tally::new();
            for q in &queries {
                let start = Instant::now();
                let hits = trigram(&pool, &q.query).await;
                t.add(q, found(q, &hits), start.elapsed());
            }
            rows.push(t.row("pg_trgm (SQL only)", &classes));
            misses.push(("pg_trgm", t.missed));
            pool.close().await;
        }
        let counts: Vec<String> = classes
            .iter()
            .map(|c| format!("{c} ({})", queries.iter().filter(|q| &q.class == c).count()))
            .collect();
        println!(
            "recall@{K} over {} queries, {} corpus documents",
            queries.len(),
            files.len()
        );
        println!("| mode | all | {} | mean latency |", counts.join(" | "));
        println!("|---|---|{}---|", "---|".repeat(classes.len()));
        for r in rows {
            println!("{r}");
        }
        for (mode, missed) in misses {
            println!("{mode} missed {}: {}", missed.len(), missed.join(" · "));
        }
    });
}
