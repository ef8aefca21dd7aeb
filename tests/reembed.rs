//! Re-embedding on a change of model, across daemon restarts: documents
//! embedded with the instant feature-hash model, the daemon restarted with
//! the real local model. Search must never come back empty for the old
//! documents — while the re-embeds are stuck, across the restart that
//! resumes them, and after the switch — and the old vectors go only once
//! every document of a user has the new ones.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;
use uuid::Uuid;

const LOCAL: &str = "sentence-transformers/all-MiniLM-L6-v2";
const HASH: &str = "doculearn/feature-hash";

const DOCS: [(&str, &str); 3] = [
    (
        "otters.txt",
        "Sea otters wrap themselves in kelp before they sleep so the current does not carry them away. \
         A raft of otters can hold more than a hundred animals floating together.",
    ),
    (
        "volcano.txt",
        "Basaltic lava from a shield volcano flows for kilometres because it is hot and runny; \
         the islands of Hawaii were built this way over millions of years.",
    ),
    (
        "bread.txt",
        "A sourdough starter is a culture of wild yeast and lactobacilli; feed it flour and water \
         every day and the loaf will rise slowly with a sour tang.",
    ),
];

/// Search as `token`; the document names of the hits, best first.
async fn search_names(d: &Daemon, token: &str, query: &str) -> Vec<String> {
    let (status, body) = d
        .post_json(token, "/api/v1/search", &json!({ "query": query, "k": 5 }))
        .await;
    assert_eq!(status, 200, "search: {body}");
    body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["document_name"].as_str().unwrap().to_string())
        .collect()
}

/// Chunks per model name.
async fn vectors_by_model(pool: &sqlx::PgPool) -> Vec<(String, i64)> {
    sqlx::query_as(
        "SELECT m.name, count(*) FROM chunks c JOIN embedding_models m ON m.id = c.model_id GROUP BY m.name ORDER BY m.name",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_model_change_reembeds_in_the_background_and_search_never_goes_empty() {
    let mut d = Daemon::start(Opts::default()).await;
    let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
    let (a, b) = (d.token(alice), d.token(bob));
    let admin = d.admin_token(Uuid::new_v4());
    let mut jobs = Vec::new();
    for (name, text) in DOCS {
        let (_, job) = d.upload_one(&a, name, text.as_bytes().to_vec()).await;
        jobs.push(job);
    }
    let (_, bob_job) = d
        .upload_one(&b, "bob.txt", b"Bob keeps bees; the hive swarmed in May.".to_vec())
        .await;
    for job in &jobs {
        assert_eq!(d.wait_job(&a, job, Duration::from_secs(30)).await["stage"], "completed");
    }
    assert_eq!(
        d.wait_job(&b, &bob_job, Duration::from_secs(30)).await["stage"],
        "completed"
    );
    assert_eq!(search_names(&d, &a, "otters kelp raft").await[0], "otters.txt");
    let pool = d.db().await;
    let before = vectors_by_model(&pool).await;
    assert_eq!(before.len(), 1, "{before:?}");
    assert_eq!(before[0].0, HASH);

    // The new model; every re-embed hangs in its embedding stage.
    d.terminate(Duration::from_secs(20));
    d.opts = Opts::local()
        .with("DOCULEARN_FAULTS__HANG_IN_STAGE", "embedding")
        .with("DOCULEARN_FAULTS__HANG_SECS", 600);
    d.spawn();
    let stuck = d.wait_stage(&a, &jobs[0], "embedding", Duration::from_secs(60)).await;
    assert!(
        stuck["message"]
            .as_str()
            .unwrap()
            .starts_with("Re-embedding 1 chunk with sentence-transformers/all-MiniLM-L6-v2"),
        "{stuck}"
    );
    // Old documents are still found, with the old model's vectors.
    assert_eq!(search_names(&d, &a, "otters kelp raft").await[0], "otters.txt");
    assert_eq!(search_names(&d, &b, "bees hive").await, vec!["bob.txt"]);
    let (status, st) = d.get_json(&admin, "/api/v1/admin/reembed").await;
    assert_eq!(status, 200);
    assert_eq!(st["model"], LOCAL, "{st}");
    assert_eq!(st["remaining"], 4, "{st}");
    assert_eq!(st["done"], false, "{st}");
    assert!(st["pending"].as_i64().unwrap() >= 1, "{st}");
    assert_eq!(
        vectors_by_model(&pool).await,
        before,
        "no old vector is dropped before the switch"
    );
    // A second start while they run queues nothing twice.
    let (status, again) = d.post_json(&admin, "/api/v1/admin/reembed", &json!({})).await;
    assert_eq!(status, 200);
    assert_eq!(again["queued"], 0, "{again}");

    // Restarted without the fault: the re-embeds resume and finish. Search
    // is asked all along and must always find the old documents.
    d.terminate(Duration::from_secs(20));
    d.opts = Opts::local();
    d.spawn();
    let (_, new_job) = d
        .upload_one(
            &a,
            "comet.txt",
            b"A comet's tail always points away from the Sun, pushed by the solar wind.".to_vec(),
        )
        .await;
    let start = Instant::now();
    let mut searches = 0;
    loop {
        let names = search_names(&d, &a, "otters kelp raft").await;
        assert!(
            names.contains(&"otters.txt".to_string()),
            "search lost the old document: {names:?}"
        );
        assert!(
            !search_names(&d, &b, "bees hive").await.is_empty(),
            "bob's search went empty"
        );
        searches += 2;
        let (_, st) = d.get_json(&admin, "/api/v1/admin/reembed").await;
        if st["done"] == true {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "re-embedding did not finish: {st}\nlog: {}",
            d.log.display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(searches >= 2);
    assert_eq!(
        d.wait_job(&a, &new_job, Duration::from_secs(60)).await["stage"],
        "completed"
    );

    // Switched: only the new model's vectors are left, every document is
    // searched with it, and the answers are the new model's.
    let after = vectors_by_model(&pool).await;
    assert_eq!(after.len(), 1, "old vectors dropped after the switch: {after:?}");
    assert_eq!(after[0].0, LOCAL);
    let (_, body) = d
        .post_json(
            &a,
            "/api/v1/search",
            &json!({ "query": "animals that sleep holding seaweed" }),
        )
        .await;
    assert_eq!(body["model"], LOCAL);
    assert_eq!(body["results"][0]["document_name"], "otters.txt", "{body}");
    assert_eq!(
        search_names(&d, &a, "why a comet tail points away from the sun").await[0],
        "comet.txt"
    );
    assert_eq!(
        search_names(&d, &b, "bees hive").await,
        vec!["bob.txt"],
        "bob sees only his own"
    );
    // Each re-embed told its progress like any job, in stage embedding.
    let (_, history) = d.get_json(&a, &format!("/api/v1/jobs/{}/history", jobs[1])).await;
    let events = history["events"].as_array().unwrap();
    let messages: Vec<&str> = events.iter().filter_map(|e| e["message"].as_str()).collect();
    assert!(
        messages
            .iter()
            .any(|m| m.starts_with("Re-embedding queued: doculearn/feature-hash → ")),
        "{messages:?}"
    );
    assert!(
        events
            .iter()
            .any(|e| e["stage"] == "embedding" && e["details"]["reembed"] == true),
        "{messages:?}"
    );
    assert_eq!(events.last().unwrap()["type"], "job_completed");
    assert!(
        messages.last().unwrap().starts_with("Re-embedded 1 chunk with"),
        "{messages:?}"
    );

    // The CLI agrees that nothing is left, and queues nothing.
    let out = Command::new(env!("CARGO_BIN_EXE_doculearn"))
        .args(["reembed", "--server", &format!("http://{}", d.addr), "--token", &admin])
        .env_remove("DOCULEARN_TOKEN")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("0 queued now"), "{stdout}");
    assert!(
        stdout.contains("done: search uses sentence-transformers/all-MiniLM-L6-v2 for every document"),
        "{stdout}"
    );
}

/// `doculearn reembed` with a user's (not an admin's) token is refused with
/// the daemon's reason and exit status 1.
#[tokio::test(flavor = "multi_thread")]
async fn reembed_needs_an_admin() {
    let d = Daemon::start(Opts::default()).await;
    let out = Command::new(env!("CARGO_BIN_EXE_doculearn"))
        .args([
            "reembed",
            "--server",
            &format!("http://{}", d.addr),
            "--token",
            &d.token(Uuid::new_v4()),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("403") && stderr.contains("admin"), "{stderr}");
}
