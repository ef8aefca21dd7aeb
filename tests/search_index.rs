//! Chunks stored outside the ANN index and moved into it in the background:
//! searchable the moment their job completes, the same answers once
//! indexed, indexed and not-yet-indexed chunks ranked together, and the
//! indexer staying out of the way while jobs run.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};
use uuid::Uuid;

const NEVER: &str = "3600000";

fn read(name: &str) -> Vec<u8> {
    std::fs::read(corpus_file(name)).unwrap()
}

async fn unindexed(pool: &sqlx::PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM chunks WHERE NOT indexed")
        .fetch_one(pool)
        .await
        .unwrap()
}

async fn hnsw_scans(pool: &sqlx::PgPool) -> i64 {
    sqlx::query_scalar(
        "SELECT COALESCE(sum(idx_scan), 0)::int8 FROM pg_stat_user_indexes \
         WHERE indexrelname LIKE 'chunks_embedding_m%_hnsw'",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

async fn search(d: &Daemon, token: &str, query: &str, k: i64) -> Vec<Value> {
    let (status, r) = d
        .post_json(token, "/api/v1/search", &json!({ "query": query, "k": k }))
        .await;
    assert_eq!(status, 200, "{r}");
    r["results"].as_array().unwrap().clone()
}

fn ids(hits: &[Value]) -> Vec<(String, i64)> {
    hits.iter()
        .map(|h| {
            (
                h["document_id"].as_str().unwrap().to_string(),
                h["chunk_index"].as_i64().unwrap(),
            )
        })
        .collect()
}

const DOCS: [(&str, &str); 3] = [
    (
        "debian-manifesto.txt",
        "The primary purpose of the Debian project is to finally create a distribution that lives up to the Linux name.",
    ),
    (
        "groff-mom-pdf.pdf",
        "One reason to prefer using the native PDF driver is that papersizes set within mom source files do not require a corresponding flag on the command line.",
    ),
    (
        "pdfplumber-README.md",
        "Plumb a PDF for detailed information about each text character, rectangle, and line.",
    ),
];

/// A completed job's chunks are found before the indexer ran (exact scan);
/// once it moved them into the HNSW index, the same queries give the same
/// answers through the index; chunks of a later job, not yet indexed, rank
/// together with indexed ones.
#[tokio::test(flavor = "multi_thread")]
async fn chunks_are_searchable_before_and_after_the_indexer_moves_them() {
    // This instance never indexes (its indexer's first tick is an hour away).
    let d = Daemon::start(Opts::default().with("DOCULEARN_INDEXING__INTERVAL_MS", NEVER)).await;
    let token = d.token(Uuid::new_v4());
    let pool = d.db().await;
    let mut documents = Vec::new();
    for (name, _) in DOCS {
        let (document_id, job_id) = d.upload_one(&token, name, read(name)).await;
        let job = d.wait_job(&token, &job_id, Duration::from_secs(60)).await;
        assert_eq!(job["stage"], "completed", "{job}");
        documents.push(document_id);
    }
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM chunks")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(stored > 0);
    assert_eq!(unindexed(&pool).await, stored, "nothing indexed yet");
    let mut before = Vec::new();
    for (i, (name, sentence)) in DOCS.iter().enumerate() {
        let hits = search(&d, &token, sentence, 5).await;
        assert_eq!(hits[0]["document_id"], documents[i].as_str(), "{name} first: {hits:?}");
        before.push(ids(&hits));
    }

    // A second instance with a working indexer (nothing else runs: it indexes at once).
    let mut indexer = d.sibling(Opts::default().with("DOCULEARN_INDEXING__INTERVAL_MS", "100"));
    let start = Instant::now();
    while unindexed(&pool).await > 0 {
        assert!(start.elapsed() < Duration::from_secs(60), "the indexer never finished");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    indexer.kill9();
    let scans = hnsw_scans(&pool).await;
    for (i, (_, sentence)) in DOCS.iter().enumerate() {
        let hits = search(&d, &token, sentence, 5).await;
        assert_eq!(ids(&hits), before[i], "same answers through the index");
    }
    // The index served them (Postgres's statistics arrive within a second or so).
    let start = Instant::now();
    while hnsw_scans(&pool).await <= scans {
        assert!(start.elapsed() < Duration::from_secs(10), "the HNSW index was not used");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // A new document while nobody indexes: its chunks and the indexed ones rank together.
    let (late, job_id) = d
        .upload_one(
            &token,
            "google-docs-skia-example.pdf",
            read("google-docs-skia-example.pdf"),
        )
        .await;
    assert_eq!(
        d.wait_job(&token, &job_id, Duration::from_secs(60)).await["stage"],
        "completed"
    );
    assert!(unindexed(&pool).await > 0);
    let hits = search(
        &d,
        &token,
        "Errors should never pass silently. Unless explicitly silenced.",
        50,
    )
    .await;
    assert_eq!(hits[0]["document_id"], late.as_str(), "{hits:?}");
    let from: std::collections::BTreeSet<&str> = hits.iter().map(|h| h["document_id"].as_str().unwrap()).collect();
    assert!(
        from.len() >= 3,
        "hits from indexed and not-yet-indexed documents: {from:?}"
    );
    let scores: Vec<f64> = hits.iter().map(|h| h["score"].as_f64().unwrap()).collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]), "ranked by score: {scores:?}");
    let hits = search(&d, &token, DOCS[0].1, 1).await;
    assert_eq!(hits[0]["document_id"], documents[0].as_str());
    // Another user still sees nothing of this user's, on either side.
    assert!(search(&d, &d.token(Uuid::new_v4()), DOCS[0].1, 50).await.is_empty());
}

/// The indexer leaves the CPU to running jobs: a completed document's
/// chunks wait while another job is still being processed, and go into the
/// index once nothing runs.
#[tokio::test(flavor = "multi_thread")]
async fn the_indexer_waits_while_jobs_run() {
    let d = Daemon::start(
        Opts::default()
            .with("DOCULEARN_INDEXING__INTERVAL_MS", "100")
            .with("DOCULEARN_FAULTS__HANG_IN_STAGE", "embedding")
            .with("DOCULEARN_FAULTS__HANG_SECS", "6")
            .with("DOCULEARN_FAULTS__HANG_TIMES", "1"),
    )
    .await;
    let token = d.token(Uuid::new_v4());
    let pool = d.db().await;
    let (_, slow) = d
        .upload_one(&token, "debian-manifesto.txt", read("debian-manifesto.txt"))
        .await;
    d.wait_stage(&token, &slow, "embedding", Duration::from_secs(30)).await;
    let (quick_doc, quick) = d
        .upload_one(&token, "groff-mom-pdf.pdf", read("groff-mom-pdf.pdf"))
        .await;
    assert_eq!(
        d.wait_job(&token, &quick, Duration::from_secs(30)).await["stage"],
        "completed"
    );
    // Several indexer ticks while the slow job still hangs in embedding.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (_, job) = d.get_json(&token, &format!("/api/v1/jobs/{slow}")).await;
    assert_eq!(job["stage"], "embedding", "the slow job is still running: {job}");
    let waiting: i64 = sqlx::query_scalar("SELECT count(*) FROM chunks WHERE NOT indexed AND document_id = $1::uuid")
        .bind(&quick_doc)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(waiting > 0, "chunks wait for the index while a job runs");
    assert_eq!(
        d.wait_job(&token, &slow, Duration::from_secs(60)).await["stage"],
        "completed"
    );
    let start = Instant::now();
    while unindexed(&pool).await > 0 {
        assert!(start.elapsed() < Duration::from_secs(30), "indexed once nothing runs");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
