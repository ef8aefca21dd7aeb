//! The daemon end to end, as users and operators see it: real binary, real
//! PostgreSQL + pgvector, real Redis, real corpus documents.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};
use uuid::Uuid;

fn stage_rank(stage: &str) -> usize {
    STAGES
        .iter()
        .position(|s| *s == stage)
        .unwrap_or_else(|| panic!("unknown stage {stage}"))
}

fn read(name: &str) -> Vec<u8> {
    std::fs::read(corpus_file(name)).unwrap()
}

/// Several real documents (text, Markdown, PDFs incl. an RC4-encrypted one
/// with an empty user password) go through every stage with the local model;
/// the history holds each stage in order with monotonic progress, the
/// seed's marks and consecutive seq, and the socket showed it live (every
/// stage's first and last event); the chunks are in pgvector; a sentence
/// from each document finds that document first.
#[tokio::test(flavor = "multi_thread")]
async fn documents_flow_through_every_stage_and_become_searchable() {
    let d = Daemon::start(Opts::local()).await;
    let user = Uuid::new_v4();
    let token = d.token(user);
    let mut ws = d.ws(user, &token).await;

    let docs: [(&str, &str); 5] = [
        (
            "debian-manifesto.txt",
            "The primary purpose of the Debian project is to finally create a distribution that lives up to the Linux name.",
        ),
        ("google-docs-skia-example.pdf", "Errors should never pass silently. Unless explicitly silenced."),
        (
            "encrypted-empty-userpw-word-novapdf.pdf",
            "Network administrators can install Backup4all on a single computer and enter a single network registration key.",
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
    let files: Vec<(&str, Vec<u8>)> = docs.iter().map(|(n, _)| (*n, read(n))).collect();
    let resp = d.upload(&token, &files).await;
    assert_eq!(resp.status(), 202);
    let accepted: Vec<Value> = resp.json().await.unwrap();
    assert_eq!(accepted.len(), docs.len());
    let jobs: Vec<String> = accepted
        .iter()
        .map(|a| a["job_id"].as_str().unwrap().to_string())
        .collect();
    for a in &accepted {
        assert_eq!(a["status"], "queued");
        assert_eq!(a["job_id"], format!("doc:{}", a["document_id"].as_str().unwrap()));
    }

    let events = ws.collect_until_done(&jobs, Duration::from_secs(600)).await;
    let pool = d.db().await;
    for (i, a) in accepted.iter().enumerate() {
        let job = &jobs[i];
        let name = docs[i].0;
        let evs = &events[job];
        assert_eq!(evs.first().unwrap()["type"], "job_queued", "{name}");
        let last = evs.last().unwrap();
        assert_eq!(last["type"], "job_completed", "{name}: {last}");
        assert_eq!(last["progress"], 1.0);
        // History is the whole truth: seq 1, 2, 3, … with no gap.
        let (status, history) = d.get_json(&token, &format!("/api/v1/jobs/{job}/history")).await;
        assert_eq!(status, 200);
        let hist = history["events"].as_array().unwrap();
        for (k, e) in hist.iter().enumerate() {
            assert_eq!(
                e["seq"].as_i64().unwrap(),
                k as i64 + 1,
                "{name}: history seq must be consecutive"
            );
        }
        let mut prev_rank = 0;
        let mut prev_progress = 0.0;
        let mut seen = std::collections::BTreeSet::new();
        for e in hist {
            let rank = stage_rank(e["stage"].as_str().unwrap());
            assert!(rank >= prev_rank, "{name}: stage went back: {e}");
            let p = e["progress"].as_f64().unwrap();
            assert!(p >= prev_progress && p <= 1.0, "{name}: progress went back: {e}");
            prev_rank = rank;
            prev_progress = p;
            seen.insert(e["stage"].as_str().unwrap().to_string());
        }
        for stage in STAGES {
            assert!(seen.contains(stage), "{name}: stage {stage} never reported");
        }
        // The seed plan's marks.
        let at = |stage: &str| -> Vec<f64> {
            hist.iter()
                .filter(|e| e["stage"] == stage)
                .map(|e| e["progress"].as_f64().unwrap())
                .collect()
        };
        assert_eq!(at("downloading"), vec![0.05, 0.15], "{name}");
        assert_eq!(at("chunking"), vec![0.35, 0.40], "{name}");
        assert_eq!(at("storing"), vec![0.85, 0.95], "{name}");
        assert!(at("embedding").iter().all(|p| (0.40..=0.85).contains(p)), "{name}");

        // The socket showed that history, live: every event it sent is the
        // history's event of that seq, in order; the only ones it may leave
        // out are intermediate events coalesced by the per-job rate limit,
        // and never the first or the last event of a stage.
        let mut prev_seq = 0;
        for e in evs {
            let seq = e["seq"].as_i64().unwrap();
            assert!(seq > prev_seq, "{name}: socket seq went back: {e}");
            let h = &hist[(seq - 1) as usize];
            assert_eq!(e["type"], h["type"], "{name}: seq {seq}");
            assert_eq!(e["stage"], h["stage"], "{name}: seq {seq}");
            assert_eq!(e["progress"], h["progress"], "{name}: seq {seq}");
            assert_eq!(e["document_name"], name);
            prev_seq = seq;
        }
        let shown: std::collections::BTreeSet<i64> = evs.iter().map(|e| e["seq"].as_i64().unwrap()).collect();
        for (k, h) in hist.iter().enumerate() {
            let stage_edge = k == 0
                || k + 1 == hist.len()
                || hist[k - 1]["stage"] != h["stage"]
                || hist[k + 1]["stage"] != h["stage"];
            if stage_edge {
                assert!(
                    shown.contains(&(k as i64 + 1)),
                    "{name}: the socket left out {h}, where a stage began or ended"
                );
            }
        }

        let document_id = a["document_id"].as_str().unwrap();
        let stored = count(&pool, "SELECT count(*) FROM chunks WHERE document_id = $1", document_id).await;
        assert_eq!(stored, last["details"]["chunks"].as_i64().unwrap(), "{name}");
        assert!(stored > 0);
        let (status, doc) = d.get_json(&token, &format!("/api/v1/documents/{document_id}")).await;
        assert_eq!(status, 200);
        assert_eq!(doc["chunk_count"].as_i64().unwrap(), stored);
        assert_eq!(doc["stage"], "completed");
    }

    // Search: a sentence from each document finds that document first.
    for (i, (name, sentence)) in docs.iter().enumerate() {
        let (status, r) = d
            .post_json(&token, "/api/v1/search", &json!({ "query": sentence, "k": 3 }))
            .await;
        assert_eq!(status, 200, "{r}");
        let top = &r["results"][0];
        assert_eq!(
            top["document_id"], accepted[i]["document_id"],
            "search for a sentence of {name} ranked {} first: {r}",
            top["document_name"]
        );
        assert_eq!(top["document_name"], *name);
    }
    // Another user finds nothing of this user's.
    let stranger = d.token(Uuid::new_v4());
    let (status, r) = d
        .post_json(&stranger, "/api/v1/search", &json!({ "query": docs[0].1 }))
        .await;
    assert_eq!(status, 200);
    assert_eq!(r["results"], json!([]));
}

/// Bad input fails its own job with a reason a user understands, in the
/// stage it failed in, keeping the progress reached; the daemon and a good
/// document uploaded afterwards carry on.
#[tokio::test(flavor = "multi_thread")]
async fn bad_files_fail_with_a_readable_reason_and_others_still_complete() {
    let d = Daemon::start(Opts::default()).await;
    let user = Uuid::new_v4();
    let token = d.token(user);
    let png: Vec<u8> =
        b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00\x1f\x15\xc4\x89"
            .to_vec();
    let mut truncated = read("groff-mom-pdf.pdf");
    truncated.truncate(2000);
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "broken.pdf",
            b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ngarbage garbage".to_vec(),
            "damaged",
        ),
        ("truncated.pdf", truncated, "damaged"),
        // A PNG named .pdf is read as the image it is (OCR); this one is broken.
        ("photo.pdf", png, "PNG image"),
        ("locked.pdf", read("encrypted-userpw-test.pdf"), "password"),
        ("empty.txt", Vec::new(), "empty"),
    ];
    let mut jobs = Vec::new();
    for (name, bytes, _) in &cases {
        jobs.push(d.upload_one(&token, name, bytes.clone()).await.1);
    }
    let good = d
        .upload_one(&token, "debian-manifesto.txt", read("debian-manifesto.txt"))
        .await
        .1;

    for ((name, _, expect), job_id) in cases.iter().zip(&jobs) {
        let job = d.wait_job(&token, job_id, Duration::from_secs(60)).await;
        assert_eq!(job["stage"], "failed", "{name}: {job}");
        assert_eq!(job["failed_stage"], "extracting", "{name}: {job}");
        let error = job["error"].as_str().unwrap();
        assert!(
            error.to_lowercase().contains(&expect.to_lowercase()),
            "{name}: error “{error}” should mention “{expect}”"
        );
        assert!(
            job["progress"].as_f64().unwrap() >= 0.25,
            "{name}: progress reached is kept: {job}"
        );
        // The failure event says the same.
        let (_, h) = d.get_json(&token, &format!("/api/v1/jobs/{job_id}/history")).await;
        let last = h["events"].as_array().unwrap().last().unwrap().clone();
        assert_eq!(last["type"], "job_failed");
        assert_eq!(last["error"], job["error"]);
        assert_eq!(last["details"]["failed_stage"], "extracting");
    }
    let job = d.wait_job(&token, &good, Duration::from_secs(60)).await;
    assert_eq!(job["stage"], "completed", "{job}");
    let (status, _) = d.get_json(&token, "/api/v1/documents").await;
    assert_eq!(status, 200, "the daemon is still up");
}

/// A document actor that panics mid-stage is restarted by its supervisor; the
/// job ends `completed` exactly once, in a new attempt.
#[tokio::test(flavor = "multi_thread")]
async fn a_panicking_document_actor_is_restarted_and_the_job_still_completes() {
    let d = Daemon::start(
        Opts::default()
            .with("DOCULEARN_FAULTS__PANIC_IN_STAGE", "embedding")
            .with("DOCULEARN_FAULTS__PANIC_TIMES", 1),
    )
    .await;
    let user = Uuid::new_v4();
    let token = d.token(user);
    let (_, job_id) = d
        .upload_one(&token, "debian-manifesto.txt", read("debian-manifesto.txt"))
        .await;
    let job = d.wait_job(&token, &job_id, Duration::from_secs(60)).await;
    assert_eq!(job["stage"], "completed", "{job}");
    assert_eq!(job["attempt"], 2, "the crashed attempt was followed by a second one");
    let (_, h) = d.get_json(&token, &format!("/api/v1/jobs/{job_id}/history")).await;
    let events = h["events"].as_array().unwrap();
    let completed = events.iter().filter(|e| e["type"] == "job_completed").count();
    assert_eq!(completed, 1, "exactly one completed event");
    // Attempt 1 got as far as chunking, then panicked entering embedding;
    // attempt 2 ran every stage.
    let first: Vec<&Value> = events.iter().filter(|e| e["attempt"] == 1).collect();
    assert_eq!(first.last().unwrap()["stage"], "chunking", "{first:?}");
    assert!(events.iter().any(|e| e["attempt"] == 2 && e["stage"] == "embedding"));
    assert!(d.log_text().contains("document actor crashed"), "the crash is logged");
    // A job that keeps crashing ends failed, not stuck.
    let d2 = Daemon::start(
        Opts::default()
            .with("DOCULEARN_FAULTS__PANIC_IN_STAGE", "chunking")
            .with("DOCULEARN_FAULTS__PANIC_TIMES", 100),
    )
    .await;
    let token2 = d2.token(user);
    let (_, job_id) = d2
        .upload_one(&token2, "debian-manifesto.txt", read("debian-manifesto.txt"))
        .await;
    let job = d2.wait_job(&token2, &job_id, Duration::from_secs(60)).await;
    assert_eq!(job["stage"], "failed", "{job}");
    assert!(job["error"].as_str().unwrap().contains("crashed"), "{job}");
}

/// Limits and authentication on the HTTP API.
#[tokio::test(flavor = "multi_thread")]
async fn uploads_are_limited_and_every_route_needs_a_token() {
    let d = Daemon::start(Opts::default().with("DOCULEARN_HTTP__MAX_UPLOAD_BYTES", 4096)).await;
    let user = Uuid::new_v4();
    let token = d.token(user);
    let big = d.upload(&token, &[("big.txt", vec![b'a'; 5000])]).await;
    assert_eq!(big.status(), 413);
    let body: Value = big.json().await.unwrap();
    assert_eq!(body["error"]["code"], "payload_too_large");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("“big.txt”") && message.contains("upload limit of 4 KiB"),
        "{message}"
    );

    let c = client();
    for (method, path) in [
        ("GET", "/api/v1/documents"),
        ("POST", "/api/v1/documents"),
        ("GET", "/api/v1/jobs/doc:x"),
        ("POST", "/api/v1/search"),
    ] {
        let r = c.request(method.parse().unwrap(), d.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 401, "{method} {path}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["code"], "unauthorized");
        let r = c
            .request(method.parse().unwrap(), d.url(path))
            .bearer_auth("garbage")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{method} {path} with a bad token");
    }
    let expired = keys().mint(user, false, -3600);
    let r = c
        .get(d.url("/api/v1/documents"))
        .bearer_auth(expired)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["message"], "the token has expired");
    // Health needs no token.
    assert_eq!(c.get(d.url("/healthz")).send().await.unwrap().status(), 200);
    let ready = c.get(d.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);

    // Wrong body kinds are explained.
    let r = c
        .post(d.url("/api/v1/documents"))
        .bearer_auth(&token)
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415);
    let (status, v) = d
        .post_json(&token, "/api/v1/documents", &json!({ "url": "ftp://example.org/x" }))
        .await;
    assert_eq!(status, 400, "{v}");

    // Someone else's document is simply not there.
    let (doc, job) = d.upload_one(&token, "a.txt", b"hello world".to_vec()).await;
    let other = d.token(Uuid::new_v4());
    assert_eq!(d.get_json(&other, &format!("/api/v1/documents/{doc}")).await.0, 404);
    assert_eq!(d.get_json(&other, &format!("/api/v1/jobs/{job}")).await.0, 404);
    assert_eq!(d.get_json(&other, &format!("/api/v1/jobs/{job}/history")).await.0, 404);
    assert_eq!(d.get_json(&token, &format!("/api/v1/documents/{doc}")).await.0, 200);
}

/// The socket: ping/pong, resume replays what was missed, refusals.
#[tokio::test(flavor = "multi_thread")]
async fn the_socket_answers_ping_replays_on_resume_and_refuses_strangers() {
    let d = Daemon::start(Opts::default()).await;
    let user = Uuid::new_v4();
    let token = d.token(user);
    let (_, job_id) = d
        .upload_one(&token, "debian-manifesto.txt", read("debian-manifesto.txt"))
        .await;
    d.wait_job(&token, &job_id, Duration::from_secs(60)).await;

    let mut ws = d.ws(user, &token).await;
    ws.send_text("ping").await;
    assert_eq!(ws.next_text(Duration::from_secs(5)).await.as_deref(), Some("pong"));
    // A client that saw up to seq 3 gets everything after it, in order.
    ws.send_text(&json!({ "type": "resume", "after": { job_id.clone(): 3 } }).to_string())
        .await;
    let mut seqs = Vec::new();
    loop {
        let text = ws.next_text(Duration::from_secs(5)).await.expect("resume answers");
        let v: Value = serde_json::from_str(&text).unwrap();
        if v["type"] == "resumed" {
            break;
        }
        assert_eq!(v["job_id"], job_id);
        seqs.push(v["seq"].as_i64().unwrap());
    }
    let (_, h) = d.get_json(&token, &format!("/api/v1/jobs/{job_id}/history")).await;
    let total = h["events"].as_array().unwrap().len() as i64;
    assert_eq!(seqs, (4..=total).collect::<Vec<_>>());
    // Another user's job id replays nothing.
    let other = Uuid::new_v4();
    let other_token = d.token(other);
    let mut other_ws = d.ws(other, &other_token).await;
    other_ws
        .send_text(&json!({ "type": "resume", "after": { job_id.clone(): 0 } }).to_string())
        .await;
    let text = other_ws.next_text(Duration::from_secs(5)).await.unwrap();
    assert_eq!(serde_json::from_str::<Value>(&text).unwrap()["type"], "resumed");

    // Invalid messages get an error; repeated ones close the socket with 1008.
    ws.send_text("hello?").await;
    let text = ws.next_text(Duration::from_secs(5)).await.unwrap();
    assert_eq!(serde_json::from_str::<Value>(&text).unwrap()["type"], "error");
    for _ in 0..5 {
        ws.send_text("{\"type\":\"nonsense\"}").await;
    }
    let mut closed_with = None;
    while let Ok(Some(msg)) =
        tokio::time::timeout(Duration::from_secs(5), futures::StreamExt::next(&mut ws.stream)).await
    {
        if let Ok(tokio_tungstenite::tungstenite::Message::Close(frame)) = msg {
            closed_with = frame.map(|f| u16::from(f.code));
            break;
        }
    }
    assert_eq!(closed_with, Some(1008));

    // The path's user must be the token's user; no token, no socket.
    let url = format!("ws://{}/api/v1/ws/{}?token={}", d.addr, Uuid::new_v4(), token);
    let err = tokio_tungstenite::connect_async(url).await.unwrap_err();
    assert!(err.to_string().contains("403"), "{err}");
    let url = format!("ws://{}/api/v1/ws/{}", d.addr, user);
    let err = tokio_tungstenite::connect_async(url).await.unwrap_err();
    assert!(err.to_string().contains("401"), "{err}");
    // The token may come in Sec-WebSocket-Protocol, as browsers send it.
    let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(format!(
        "ws://{}/api/v1/ws/{}",
        d.addr, user
    ))
    .unwrap();
    req.headers_mut()
        .insert("sec-websocket-protocol", format!("bearer, {token}").parse().unwrap());
    let (mut ws2, resp) = tokio_tungstenite::connect_async(req)
        .await
        .expect("protocol token accepted");
    assert_eq!(resp.headers()["sec-websocket-protocol"], "bearer");
    futures::SinkExt::send(&mut ws2, tokio_tungstenite::tungstenite::Message::Text("ping".into()))
        .await
        .unwrap();
}

/// Our upload enqueues exactly what arq's `enqueue_job` would: a pickled
/// job dict with arq's keys, on the configured queue (checked with Python's
/// own pickle).
#[tokio::test(flavor = "multi_thread")]
async fn uploads_enqueue_arq_jobs_in_arqs_wire_format() {
    // An API-only instance: nothing claims the job, so it can be inspected.
    let d = Daemon::start(Opts::default().arg("--role").arg("api")).await;
    let user = Uuid::new_v4();
    let token = d.token(user);
    let (doc, job_id) = d.upload_one(&token, "a.txt", b"hello arq".to_vec()).await;
    let mut r = d.redis().await;
    let bytes: Vec<u8> = redis::cmd("GET")
        .arg(format!("arq:job:{job_id}"))
        .query_async(&mut r)
        .await
        .unwrap();
    let ttl: i64 = redis::cmd("PTTL")
        .arg(format!("arq:job:{job_id}"))
        .query_async(&mut r)
        .await
        .unwrap();
    assert!(
        ttl > 3_500_000 && ttl <= 3_600_000,
        "job expires after 3600 s, got {ttl} ms"
    );
    let score: Option<f64> = redis::cmd("ZSCORE")
        .arg(&d.queue)
        .arg(&job_id)
        .query_async(&mut r)
        .await
        .unwrap();
    assert!(score.is_some(), "the job is on the configured queue");
    let script = format!(
        "import pickle,sys\nd=pickle.loads(sys.stdin.buffer.read())\nassert list(d)==['t','f','a','k','et'], list(d)\n\
         assert d['t'] is None and d['f']=='process_document' and d['k']=={{}}\n\
         assert d['a']==('{doc}','{user}'), d['a']\nassert isinstance(d['et'], int) and d['et']>1700000000000\nprint('ok')"
    );
    let mut py = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(py.stdin.as_mut().unwrap(), &bytes).unwrap();
    let out = py.wait_with_output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "ok",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (_, job) = d.get_json(&token, &format!("/api/v1/jobs/{job_id}")).await;
    assert_eq!(job["stage"], "queued");
}

/// A setting that is wrong stops start-up with one line naming it.
#[test]
fn a_bad_setting_stops_startup_with_one_line_naming_it() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_doculearn"))
        .arg("serve")
        .env("DOCULEARN_AUTH__JWT_SECRET", SECRET)
        .env("DOCULEARN_QUEUE__MAX_JOBS", "lots")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("`queue.max_jobs`"), "{err}");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_doculearn"))
        .arg("serve")
        .env_remove("DOCULEARN_AUTH__JWT_SECRET")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("`auth.jwt_secret`"));
}
