//! Per-user dedup of uploads against a real daemon: the same user uploading
//! the same bytes twice gets the existing document back, two users with the
//! same file never learn of each other (and do not share the stage cache),
//! `on_duplicate=replace` re-processes into the same document, `keep` makes
//! a second one, batches report their duplicates, and two simultaneous
//! uploads of the same bytes make one document.

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(60);

fn text(tag: &str) -> Vec<u8> {
    format!("{tag}: a short document about rivers, bridges and the towns between them.\n")
        .repeat(30)
        .into_bytes()
}

async fn post(d: &Daemon, path: &str, token: &str, files: &[(&str, Vec<u8>)]) -> (u16, Value) {
    let r = d.upload_at(path, token, files).await;
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn documents(pool: &sqlx::PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM documents")
        .fetch_one(pool)
        .await
        .unwrap()
}

/// Whether the job's (latest) extracting event says its text came from the stage cache.
async fn extraction_was_cached(d: &Daemon, token: &str, job_id: &str) -> bool {
    let (status, h) = d.get_json(token, &format!("/api/v1/jobs/{job_id}/history")).await;
    assert_eq!(status, 200, "{h}");
    let events = h["events"].as_array().unwrap();
    let ev = events
        .iter()
        .rev()
        .find(|e| e["stage"] == "extracting" && e["details"].get("cached").is_some())
        .unwrap_or_else(|| panic!("no extraction event with `cached` in {h}"));
    ev["details"]["cached"].as_bool().unwrap()
}

/// Uploads `bytes` as `name` with `on_duplicate=keep`, waits for it to
/// complete, and says whether its extraction came from the stage cache.
async fn kept_copy_was_cached(d: &Daemon, token: &str, name: &str, bytes: &[u8]) -> bool {
    let (status, v) = post(
        d,
        "/api/v1/documents?on_duplicate=keep",
        token,
        &[(name, bytes.to_vec())],
    )
    .await;
    assert_eq!(status, 202, "{v}");
    let job = v["job_id"].as_str().unwrap();
    let ended = d.wait_job(token, job, WAIT).await;
    assert_eq!(ended["stage"], "completed", "{ended}");
    extraction_was_cached(d, token, job).await
}

#[tokio::test(flavor = "multi_thread")]
async fn the_same_user_uploading_the_same_bytes_gets_the_existing_document() {
    let d = Daemon::start(Opts::default()).await;
    let token = d.token(Uuid::new_v4());
    let pool = d.db().await;

    let (doc, job) = d.upload_one(&token, "rivers.txt", text("rivers")).await;
    assert_eq!(d.wait_job(&token, &job, WAIT).await["stage"], "completed");
    // The same bytes under another name: 200, the existing document, nothing stored.
    let (status, v) = post(&d, "/api/v1/documents", &token, &[("copy.txt", text("rivers"))]).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["document_id"], doc.as_str(), "{v}");
    assert_eq!(v["job_id"], job.as_str(), "{v}");
    assert_eq!(v["duplicate_of"], doc.as_str(), "{v}");
    assert_eq!(v["status"], "completed", "{v}");
    assert_eq!(documents(&pool).await, 1);
    // As a multipart form field, `keep` makes a second document on purpose.
    let form = reqwest::multipart::Form::new().text("on_duplicate", "keep").part(
        "file",
        reqwest::multipart::Part::bytes(text("rivers")).file_name("again.txt"),
    );
    let r = client()
        .post(d.url("/api/v1/documents"))
        .bearer_auth(&token)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let kept: Value = r.json().await.unwrap();
    assert_ne!(kept["document_id"], doc.as_str());
    assert!(kept.get("duplicate_of").is_none(), "{kept}");
    assert_eq!(documents(&pool).await, 2);

    // Two identical files in one request: the second is a duplicate of the first.
    let (status, v) = post(
        &d,
        "/api/v1/documents",
        &token,
        &[("one.txt", text("pair")), ("two.txt", text("pair"))],
    )
    .await;
    assert_eq!(status, 202, "{v}");
    let first = v[0]["document_id"].as_str().unwrap();
    assert!(v[0].get("duplicate_of").is_none(), "{v}");
    assert_eq!(v[1]["document_id"], first, "{v}");
    assert_eq!(v[1]["duplicate_of"], first, "{v}");
    assert_eq!(documents(&pool).await, 3);

    // A failed document is no duplicate: the same broken bytes make a new one.
    let broken = b"%PDF-1.4\nnot really a PDF at all\n".to_vec();
    let (bad, bad_job) = d.upload_one(&token, "broken.pdf", broken.clone()).await;
    assert_eq!(d.wait_job(&token, &bad_job, WAIT).await["stage"], "failed");
    let (again, _) = d.upload_one(&token, "broken.pdf", broken).await;
    assert_ne!(again, bad);
    // Nor is a deleted one.
    let r = client()
        .delete(d.url(&format!("/api/v1/documents/{doc}")))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let (status, v) = post(
        &d,
        "/api/v1/documents?on_duplicate=existing",
        &token,
        &[("r.txt", text("rivers"))],
    )
    .await;
    // The kept copy of the same bytes is still there: it answers.
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["document_id"], kept["document_id"], "{v}");

    // Bad values are refused with the allowed ones named, and nothing is stored.
    let before = documents(&pool).await;
    for path in [
        "/api/v1/documents?on_duplicate=overwrite",
        "/api/v1/batches?on_duplicate=KEEP",
    ] {
        let (status, v) = post(&d, path, &token, &[("x.txt", text("x")), ("y.txt", text("y"))]).await;
        assert_eq!(status, 400, "{path}: {v}");
        let message = v["error"]["message"].as_str().unwrap();
        assert!(message.contains("existing, replace, keep"), "{message}");
    }
    let form = reqwest::multipart::Form::new()
        .text("on_duplicate", "replace")
        .part("file", reqwest::multipart::Part::bytes(text("z")).file_name("z.txt"));
    let r = client()
        .post(d.url("/api/v1/documents?on_duplicate=keep"))
        .bearer_auth(&token)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400, "query and form disagree");
    assert_eq!(documents(&pool).await, before);
}

#[tokio::test(flavor = "multi_thread")]
async fn two_users_with_the_same_file_never_meet_not_even_in_the_cache() {
    let d = Daemon::start(Opts::default()).await;
    let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
    let (ta, tb) = (d.token(alice), d.token(bob));
    let pool = d.db().await;
    let bytes = std::fs::read(corpus_file("debian-manifesto.txt")).unwrap();

    let (status, first) = post(&d, "/api/v1/documents", &ta, &[("manifesto.txt", bytes.clone())]).await;
    assert_eq!(status, 202);
    let a_job = first["job_id"].as_str().unwrap();
    assert_eq!(d.wait_job(&ta, a_job, WAIT).await["stage"], "completed");
    assert!(!extraction_was_cached(&d, &ta, a_job).await, "the first run extracts");

    // Bob's upload of the very same bytes: a new document, an answer of the
    // same shape as Alice's first, nothing that points at hers.
    let (status, b) = post(&d, "/api/v1/documents", &tb, &[("manifesto.txt", bytes.clone())]).await;
    assert_eq!(status, 202, "{b}");
    assert_ne!(b["document_id"], first["document_id"]);
    let keys = |v: &Value| {
        let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    };
    assert_eq!(keys(&b), keys(&first), "{b}");
    let b_job = b["job_id"].as_str().unwrap();
    assert_eq!(d.wait_job(&tb, b_job, WAIT).await["stage"], "completed");
    // ... and it was not served from Alice's cached extraction.
    assert!(
        !extraction_was_cached(&d, &tb, b_job).await,
        "Bob's job extracted for itself"
    );

    // Alice's own second copy (on purpose) is.
    let (status, kept) = post(
        &d,
        "/api/v1/documents?on_duplicate=keep",
        &ta,
        &[("manifesto-2.txt", bytes.clone())],
    )
    .await;
    assert_eq!(status, 202, "{kept}");
    let kept_job = kept["job_id"].as_str().unwrap();
    assert_eq!(d.wait_job(&ta, kept_job, WAIT).await["stage"], "completed");
    assert!(
        extraction_was_cached(&d, &ta, kept_job).await,
        "Alice's keep reused her cache"
    );

    // One cache row per owner for the same bytes, under the OCR-aware key.
    let rows: Vec<(Uuid, String)> =
        sqlx::query_as("SELECT owner_id, extractor FROM extraction_cache ORDER BY owner_id")
            .fetch_all(&pool)
            .await
            .unwrap();
    let mut owners: Vec<Uuid> = rows.iter().map(|r| r.0).collect();
    owners.sort();
    let mut want = vec![alice, bob];
    want.sort();
    assert_eq!(owners, want, "{rows:?}");
    assert!(rows.iter().all(|r| r.1.contains(";ocr=")), "{rows:?}");
    let chunk_owners: i64 = sqlx::query_scalar("SELECT count(DISTINCT owner_id) FROM chunk_cache")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(chunk_owners, 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn replace_reprocesses_into_the_same_document_and_waits_for_a_running_job() {
    // The first job to reach embedding hangs there: the busy one.
    let d = Daemon::start(
        Opts::default()
            .with("DOCULEARN_FAULTS__HANG_IN_STAGE", "embedding")
            .with("DOCULEARN_FAULTS__HANG_SECS", 3600)
            .with("DOCULEARN_FAULTS__HANG_TIMES", 1),
    )
    .await;
    let token = d.token(Uuid::new_v4());
    let pool = d.db().await;
    let (busy, busy_job) = d.upload_one(&token, "busy.txt", text("busy")).await;
    d.wait_stage(&token, &busy_job, "embedding", WAIT).await;
    // A duplicate of a running document answers with its stage ...
    let (status, v) = post(&d, "/api/v1/documents", &token, &[("busy.txt", text("busy"))]).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["document_id"], busy.as_str());
    assert_eq!(v["status"], "embedding", "{v}");
    // ... and cannot replace it while it runs.
    let (status, v) = post(
        &d,
        "/api/v1/documents?on_duplicate=replace",
        &token,
        &[("busy.txt", text("busy"))],
    )
    .await;
    assert_eq!(status, 409, "{v}");
    assert_eq!(v["error"]["code"], "conflict");
    assert!(v["error"]["message"].as_str().unwrap().contains("embedding"), "{v}");
    assert_eq!(documents(&pool).await, 1);

    let (doc, job) = d.upload_one(&token, "report.txt", text("report")).await;
    assert_eq!(d.wait_job(&token, &job, WAIT).await["stage"], "completed");
    let chunk_ids = |pool: sqlx::PgPool, doc: String| async move {
        sqlx::query_scalar::<_, i64>("SELECT id FROM chunks WHERE document_id = $1::uuid ORDER BY id")
            .bind(doc)
            .fetch_all(&pool)
            .await
            .unwrap()
    };
    let before = chunk_ids(pool.clone(), doc.clone()).await;
    assert!(!before.is_empty());

    let (status, v) = post(
        &d,
        "/api/v1/documents?on_duplicate=replace",
        &token,
        &[("report-final.txt", text("report"))],
    )
    .await;
    assert_eq!(status, 202, "{v}");
    assert_eq!(v["document_id"], doc.as_str(), "{v}");
    assert_eq!(v["job_id"], job.as_str(), "{v}");
    assert_eq!(v["replaced"], true, "{v}");
    assert_eq!(v["status"], "queued", "{v}");
    let ended = d.wait_job(&token, &job, WAIT).await;
    assert_eq!(ended["stage"], "completed", "{ended}");
    assert_eq!(ended["attempt"], 2, "a new attempt of the same job: {ended}");
    // Its chunks were replaced, as many as before, none of the old rows left.
    let after = chunk_ids(pool.clone(), doc.clone()).await;
    assert_eq!(after.len(), before.len());
    assert!(after.iter().all(|id| !before.contains(id)), "{before:?} / {after:?}");
    let (_, view) = d.get_json(&token, &format!("/api/v1/documents/{doc}")).await;
    assert_eq!(view["name"], "report-final.txt", "it takes the new upload's name");
    assert_eq!(view["chunk_count"], after.len() as i64);
    let (_, h) = d.get_json(&token, &format!("/api/v1/jobs/{job}/history")).await;
    let events = h["events"].as_array().unwrap();
    assert_eq!(events.iter().filter(|e| e["type"] == "job_completed").count(), 2);
    let requeued = events
        .iter()
        .find(|e| e["type"] == "job_queued" && e["details"]["replaced"] == true)
        .unwrap_or_else(|| panic!("no replace event: {h}"));
    assert_eq!(v["seq"], requeued["seq"], "the answer names the new run's first event");
    assert_eq!(documents(&pool).await, 2, "replace stored no new document");
}

#[tokio::test(flavor = "multi_thread")]
async fn two_simultaneous_uploads_of_the_same_bytes_make_one_document() {
    let d = Daemon::start(Opts::default().with("DOCULEARN_HTTP__UPLOADS_PER_MINUTE", 0)).await;
    let token = d.token(Uuid::new_v4());
    let pool = d.db().await;
    for round in 0..5 {
        let bytes = text(&format!("round {round}"));
        let (a, b) = ([("a.txt", bytes.clone())], [("b.txt", bytes.clone())]);
        let one = post(&d, "/api/v1/documents", &token, &a);
        let two = post(&d, "/api/v1/documents", &token, &b);
        let ((s1, v1), (s2, v2)) = tokio::join!(one, two);
        let mut statuses = [s1, s2];
        statuses.sort();
        assert_eq!(statuses, [200, 202], "round {round}: {v1} / {v2}");
        assert_eq!(v1["document_id"], v2["document_id"], "round {round}");
        let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM documents WHERE name IN ('a.txt', 'b.txt')")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(rows, round + 1, "round {round}: one document per round");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn batches_report_their_duplicates_and_count_only_their_own_documents() {
    let d = Daemon::start(Opts::default()).await;
    let token = d.token(Uuid::new_v4());
    let pool = d.db().await;
    let (old, old_job) = d.upload_one(&token, "old.txt", text("old")).await;
    assert_eq!(d.wait_job(&token, &old_job, WAIT).await["stage"], "completed");

    let files = [
        ("old-again.txt", text("old")),
        ("new.txt", text("new")),
        ("new-copy.txt", text("new")),
        ("other.txt", text("other")),
    ];
    let (status, b) = post(&d, "/api/v1/batches", &token, &files).await;
    assert_eq!(status, 202, "{b}");
    assert_eq!(b["total"], 2, "members: new.txt and other.txt: {b}");
    assert_eq!(b["duplicates"], 2, "{b}");
    let docs = b["documents"].as_array().unwrap();
    assert_eq!(docs.len(), 4, "an entry per file, in order");
    assert_eq!(docs[0]["duplicate_of"], old.as_str());
    assert_eq!(docs[0]["status"], "completed");
    assert!(docs[1].get("duplicate_of").is_none());
    assert_eq!(docs[2]["duplicate_of"], docs[1]["document_id"]);
    assert!(docs[3].get("duplicate_of").is_none());
    assert_eq!(documents(&pool).await, 3);

    // The batch's progress and end count its two documents only.
    let id = b["batch_id"].as_str().unwrap();
    for member in [&docs[1], &docs[3]] {
        d.wait_job(&token, member["job_id"].as_str().unwrap(), WAIT).await;
    }
    let deadline = std::time::Instant::now() + WAIT;
    let view = loop {
        let (_, view) = d.get_json(&token, &format!("/api/v1/batches/{id}")).await;
        if view["status"] != "running" || std::time::Instant::now() > deadline {
            break view;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(view["status"], "completed", "{view}");
    assert_eq!(view["total"], 2, "{view}");
    assert_eq!(view["completed"], 2, "{view}");
    assert_eq!(view["progress"], 1.0, "{view}");
    assert_eq!(view["documents"].as_array().unwrap().len(), 2, "{view}");
    let (_, batch_job) = d.get_json(&token, &format!("/api/v1/jobs/batch:{id}")).await;
    assert_eq!(batch_job["stage"], "completed", "{batch_job}");
    assert_eq!(batch_job["details"]["total"], 2, "{batch_job}");

    // Nothing but duplicates: 200, no batch. With a key, a replay answers the same.
    let batches = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM batches")
            .fetch_one(&pool)
            .await
            .unwrap()
    };
    let before = batches().await;
    let send = |path: &'static str, key: &'static str| {
        let form = reqwest::multipart::Form::new()
            .part("file", reqwest::multipart::Part::bytes(text("old")).file_name("1.txt"))
            .part(
                "file",
                reqwest::multipart::Part::bytes(text("other")).file_name("2.txt"),
            );
        let (url, token) = (d.url(path), token.clone());
        async move {
            let r = client()
                .post(url)
                .bearer_auth(token)
                .header("Idempotency-Key", key)
                .multipart(form)
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap())
        }
    };
    let (status, all_dups) = send("/api/v1/batches", "dup-key").await;
    assert_eq!(status, 200, "{all_dups}");
    assert_eq!(all_dups["batch_id"], Value::Null, "{all_dups}");
    assert_eq!(all_dups["total"], 0);
    assert_eq!(all_dups["duplicates"], 2);
    assert_eq!(all_dups["status"], "duplicate");
    assert_eq!(batches().await, before, "no batch was created");
    let (status, replay) = send("/api/v1/batches", "dup-key").await;
    assert_eq!(status, 200);
    assert_eq!(replay, all_dups);
    // on_duplicate is part of the request the key stands for.
    let (status, v) = send("/api/v1/batches?on_duplicate=keep", "dup-key").await;
    assert_eq!(status, 422, "{v}");
    assert_eq!(documents(&pool).await, 3);
}

/// The stage cache is keyed by what the file was read as (the name decides
/// between Markdown and text) and by the OCR settings that change the text:
/// the same bytes under another kind, or after a change of `ocr_dpi`, are
/// extracted again; the same kind under the same settings is served.
#[tokio::test(flavor = "multi_thread")]
async fn the_stage_cache_is_keyed_by_kind_and_ocr_settings() {
    let mut d = Daemon::start(Opts::default()).await;
    let token = d.token(Uuid::new_v4());
    let bytes = "# Rivers\n\nA *short* note about rivers and the bridges over them.\n"
        .repeat(20)
        .into_bytes();
    assert!(
        !kept_copy_was_cached(&d, &token, "notes.md", &bytes).await,
        "the first run extracts"
    );
    assert!(
        kept_copy_was_cached(&d, &token, "again.md", &bytes).await,
        "the same bytes read the same way are served"
    );
    assert!(
        !kept_copy_was_cached(&d, &token, "notes.txt", &bytes).await,
        "read as plain text: not the Markdown's extraction"
    );
    // The same database under another OCR dpi: nothing made under the old settings is reused.
    d.kill9();
    let other = d.sibling(Opts::default().with("DOCULEARN_PIPELINE__OCR_DPI", 150));
    assert!(
        !kept_copy_was_cached(&other, &token, "third.md", &bytes).await,
        "another dpi: extracted again"
    );
    assert!(kept_copy_was_cached(&other, &token, "fourth.md", &bytes).await);
}
