//! Operating doculearn: batches and their arithmetic, fairness between
//! users, analytics checked against the history table, Prometheus metrics.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};
use uuid::Uuid;

const SERVICE: &str = "operations-service-token-operations-0001";

async fn upload_batch(d: &Daemon, token: &str, files: &[(&str, Vec<u8>)]) -> Value {
    let r = d.upload_at("/api/v1/batches", token, files).await;
    assert_eq!(r.status(), 202);
    r.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn batch_progress_is_weighted_by_size_and_ends_once_with_the_failures_counted() {
    // No workers: progress is set exactly through the external-progress route.
    let d = Daemon::start(
        Opts::default()
            .arg("--role")
            .arg("api")
            .with("DOCULEARN_AUTH__SERVICE_TOKEN", SERVICE),
    )
    .await;
    let user = Uuid::new_v4();
    let token = d.token(user);
    let mut ws = d.ws(user, &token).await;
    let batch = upload_batch(
        &d,
        &token,
        &[("small.txt", vec![b'a'; 100]), ("large.txt", vec![b'b'; 300])],
    )
    .await;
    assert_eq!(batch["total"], 2);
    let docs = batch["documents"].as_array().unwrap();
    let (small, large) = (docs[0]["job_id"].as_str().unwrap(), docs[1]["job_id"].as_str().unwrap());
    let batch_job = batch["job_id"].as_str().unwrap().to_string();
    let report = |job: &str, stage: &str, progress: f64, error: Option<&str>| {
        let body = json!({"job_id": job, "stage": stage, "progress": progress, "error": error});
        let d = &d;
        async move { assert_eq!(d.external_progress(SERVICE, &body).await, 200) }
    };
    report(small, "extracting", 0.5, None).await;
    report(large, "completed", 1.0, None).await;
    report(small, "failed", 0.5, Some("broken")).await;
    let mut batch_events = Vec::new();
    while let Some(text) = ws.next_text(Duration::from_secs(5)).await {
        let v: Value = serde_json::from_str(&text).unwrap();
        if v["type"] == "batch_progress" {
            let done = v["stage"] == "completed";
            batch_events.push(v);
            if done {
                break;
            }
        }
    }
    let fractions: Vec<f64> = batch_events.iter().map(|e| e["progress"].as_f64().unwrap()).collect();
    // queued → 0; small at 0.5 → (100·0.5 + 300·0)/400; large done → (100·0.5 + 300·1)/400; small failed → ended.
    assert_eq!(fractions, vec![0.0, 0.125, 0.875, 1.0], "{batch_events:#?}");
    let last = batch_events.last().unwrap();
    assert_eq!(last["job_id"], batch_job);
    assert_eq!(last["details"]["completed"], 1);
    assert_eq!(last["details"]["failed"], 1);
    assert_eq!(last["details"]["total"], 2);
    assert!(last["message"].as_str().unwrap().contains("1 failed"));
    let seqs: Vec<i64> = batch_events.iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
    let (status, view) = d
        .get_json(
            &token,
            &format!("/api/v1/batches/{}", batch["batch_id"].as_str().unwrap()),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(view["status"], "completed_with_failures");
    assert_eq!(view["progress"], 1.0);
    // The batch ended once: a late event does not end it again.
    report(large, "completed", 1.0, None).await;
    let (_, h) = d.get_json(&token, &format!("/api/v1/jobs/{batch_job}/history")).await;
    let ends = h["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["stage"] == "completed")
        .count();
    assert_eq!(ends, 1);
    // Someone else's batch is not there.
    let other = d.token(Uuid::new_v4());
    assert_eq!(
        d.get_json(
            &other,
            &format!("/api/v1/batches/{}", batch["batch_id"].as_str().unwrap())
        )
        .await
        .0,
        404
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_real_batch_runs_to_the_end() {
    let d = Daemon::start(Opts::default()).await;
    let user = Uuid::new_v4();
    let token = d.token(user);
    let files: Vec<(&str, Vec<u8>)> = vec![
        (
            "manifesto.txt",
            std::fs::read(corpus_file("debian-manifesto.txt")).unwrap(),
        ),
        (
            "skia.pdf",
            std::fs::read(corpus_file("google-docs-skia-example.pdf")).unwrap(),
        ),
        ("photo.pdf", b"\x89PNG\r\n\x1a\n0000".to_vec()),
    ];
    let batch = upload_batch(&d, &token, &files).await;
    let id = batch["batch_id"].as_str().unwrap();
    let start = Instant::now();
    loop {
        let (_, view) = d.get_json(&token, &format!("/api/v1/batches/{id}")).await;
        if view["status"] != "running" {
            assert_eq!(view["status"], "completed_with_failures");
            assert_eq!(view["completed"], 2);
            assert_eq!(view["failed"], 1);
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "{view}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn one_users_big_batch_does_not_starve_another_users_single_file() {
    let d = Daemon::start(
        Opts::default()
            .with("DOCULEARN_QUEUE__MAX_JOBS", 2)
            .with("DOCULEARN_QUEUE__PER_USER_ACTIVE_JOBS", 2)
            .with("DOCULEARN_FAULTS__HANG_IN_STAGE", "embedding")
            .with("DOCULEARN_FAULTS__HANG_SECS", 1),
    )
    .await;
    let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
    let (ta, tb) = (d.token(alice), d.token(bob));
    let files: Vec<(String, Vec<u8>)> = (0..50)
        .map(|i| (format!("a{i}.txt"), format!("alice document {i}").into_bytes()))
        .collect();
    let refs: Vec<(&str, Vec<u8>)> = files.iter().map(|(n, b)| (n.as_str(), b.clone())).collect();
    let batch = upload_batch(&d, &ta, &refs).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let bob_started = Instant::now();
    let (_, bob_job) = d.upload_one(&tb, "bob.txt", b"bob's only document".to_vec()).await;
    let job = d.wait_job(&tb, &bob_job, Duration::from_secs(60)).await;
    assert_eq!(job["stage"], "completed");
    let bob_took = bob_started.elapsed();
    let (_, view) = d
        .get_json(&ta, &format!("/api/v1/batches/{}", batch["batch_id"].as_str().unwrap()))
        .await;
    let alice_done = view["completed"].as_i64().unwrap();
    assert!(
        alice_done < 45,
        "bob finished while alice's batch was still running ({alice_done}/50 done)"
    );
    // FIFO would have put bob behind ~50 one-second jobs on 2 workers (~25 s).
    assert!(bob_took < Duration::from_secs(8), "bob waited {bob_took:?}");
    eprintln!("FIGURE fairness: bob's single file completed in {:.1}s while alice's 50-document batch had {alice_done}/50 done (2 workers, 1 s per job)", bob_took.as_secs_f64());
}

/// A stage's time, from its first event in an attempt to the job's next such first event.
fn spans(events: &[Value]) -> Vec<(String, f64)> {
    let mut firsts: Vec<(String, chrono::DateTime<chrono::Utc>)> = Vec::new();
    let mut seen: Vec<(i64, String)> = Vec::new();
    for e in events {
        let stage = e["stage"].as_str().unwrap().to_string();
        let key = (e["attempt"].as_i64().unwrap(), stage.clone());
        if !seen.contains(&key) {
            seen.push(key);
            let t = chrono::DateTime::parse_from_rfc3339(e["timestamp"].as_str().unwrap())
                .unwrap()
                .with_timezone(&chrono::Utc);
            firsts.push((stage, t));
        }
    }
    firsts
        .windows(2)
        .map(|w| {
            (
                w[0].0.clone(),
                (w[1].1 - w[0].1).num_microseconds().unwrap() as f64 / 1e6,
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn analytics_agree_with_the_history_and_metrics_are_exposed() {
    let d = Daemon::start(Opts::default()).await;
    let (alice, bob, admin) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let (ta, tb, tadmin) = (d.token(alice), d.token(bob), d.admin_token(admin));
    let mut jobs = Vec::new();
    for (t, name, bytes) in [
        (
            &ta,
            "a1.txt",
            std::fs::read(corpus_file("debian-manifesto.txt")).unwrap(),
        ),
        (&ta, "a2.pdf", std::fs::read(corpus_file("gofpdf-tables.pdf")).unwrap()),
        (&ta, "a3.pdf", b"%PDF-1.4 broken".to_vec()),
        (
            &tb,
            "b1.md",
            std::fs::read(corpus_file("disser-README-ru-cp1251.md")).unwrap(),
        ),
    ] {
        let (_, job) = d.upload_one(t, name, bytes).await;
        jobs.push((t.clone(), job));
    }
    let mut expected: HashMap<String, Vec<f64>> = HashMap::new();
    let mut alice_failed_extracting = 0;
    for (t, job) in &jobs {
        let j = d.wait_job(t, job, Duration::from_secs(60)).await;
        let (_, h) = d.get_json(t, &format!("/api/v1/jobs/{job}/history")).await;
        if *t == ta {
            for (stage, secs) in spans(h["events"].as_array().unwrap()) {
                if stage != "completed" && stage != "failed" {
                    expected.entry(stage).or_default().push(secs);
                }
            }
            if j["stage"] == "failed" && j["failed_stage"] == "extracting" {
                alice_failed_extracting += 1;
            }
        }
    }
    assert_eq!(alice_failed_extracting, 1);
    let (status, stats) = d.get_json(&ta, "/api/v1/analytics/processing").await;
    assert_eq!(status, 200, "{stats}");
    assert_eq!(stats["scope"], alice.to_string());
    for s in stats["stages"].as_array().unwrap() {
        let stage = s["stage"].as_str().unwrap();
        let want = &expected[stage];
        assert_eq!(s["count"].as_i64().unwrap() as usize, want.len(), "{stage}: {s}");
        let avg = want.iter().sum::<f64>() / want.len() as f64;
        assert!(
            (s["avg_seconds"].as_f64().unwrap() - avg).abs() < 0.002,
            "{stage}: {s} vs {avg}"
        );
        let max = want.iter().cloned().fold(0.0, f64::max);
        assert!(s["p95_seconds"].as_f64().unwrap() <= max + 0.002);
        if stage == "extracting" {
            assert_eq!(s["jobs"], 3);
            assert_eq!(s["errors"], 1);
            assert!((s["error_rate"].as_f64().unwrap() - 1.0 / 3.0).abs() < 1e-9);
        } else {
            assert_eq!(s["errors"], 0, "{stage}");
        }
    }
    let types: Vec<&str> = stats["by_content_type"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["content_type"].as_str().unwrap())
        .collect();
    assert!(types.contains(&"pdf") && types.contains(&"text"), "{types:?}");
    // Scopes: bob sees his own; an admin sees everyone or one user; a user cannot ask about another.
    let (_, bob_stats) = d.get_json(&tb, "/api/v1/analytics/processing").await;
    let jobs_in = |v: &Value, stage: &str| {
        v["stages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["stage"] == stage)
            .map(|s| s["jobs"].as_i64().unwrap())
            .unwrap_or(0)
    };
    assert_eq!(jobs_in(&bob_stats, "downloading"), 1);
    let (_, all) = d.get_json(&tadmin, "/api/v1/analytics/processing").await;
    assert_eq!(all["scope"], "all");
    assert_eq!(jobs_in(&all, "downloading"), 4);
    let (_, one) = d
        .get_json(&tadmin, &format!("/api/v1/analytics/processing?user_id={bob}"))
        .await;
    assert_eq!(jobs_in(&one, "downloading"), 1);
    assert_eq!(
        d.get_json(&ta, &format!("/api/v1/analytics/processing?user_id={bob}"))
            .await
            .0,
        404
    );

    // Metrics: every documented family, no user or document in any label.
    let mut ws = d.ws(alice, &ta).await;
    ws.send_text(&json!({"type": "resume", "after": {}}).to_string()).await;
    let _ = ws.next_text(Duration::from_secs(2)).await;
    let text = d.metrics_text().await;
    for family in [
        "document_processing_duration_seconds_bucket{stage=\"extracting\"",
        "document_processing_errors_total{",
        "active_processing_jobs",
        "queue_depth",
        "jobs_total{outcome=\"completed\"}",
        "jobs_total{outcome=\"failed\"}",
        "embedding_request_duration_seconds_bucket{provider=\"hash\"",
        "embedding_batch_size_bucket",
        "websocket_connections",
        "websocket_messages_sent_total",
        "websocket_reconnections_total",
    ] {
        assert!(text.contains(family), "missing {family} in\n{text}");
    }
    assert!(text.contains("error_type=\"invalid_input\""), "{text}");
    for id in [alice.to_string(), bob.to_string()] {
        assert!(!text.contains(&id), "a user id in a label");
    }
    assert!(!text.contains("doc:"), "a job id in a label");
    // promtool (Debian's prometheus package; scripts/test-tools.sh installs it) checks the format.
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (run scripts/test-tools.sh)");
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The shipped nginx site in front of the daemon: an upload and a whole
/// WebSocket progress session go through it, and the daemon sees the real
/// client address from X-Forwarded-For because nginx is a trusted proxy.
#[tokio::test(flavor = "multi_thread")]
async fn the_shipped_nginx_site_proxies_uploads_and_progress_sockets() {
    let d = Daemon::start(Opts::default().with("DOCULEARN_HTTP__TRUSTED_PROXIES", "[\"127.0.0.1/32\"]")).await;
    let nginx = Nginx::start("doculearn.conf", |site| {
        assert!(site.contains("server 127.0.0.1:8000;"));
        site.replace("server 127.0.0.1:8000;", &format!("server {};", d.addr))
    });
    let (port, dir) = (nginx.port, nginx.dir.clone());
    let proxied = format!("127.0.0.1:{port}");
    let user = Uuid::new_v4();
    let token = d.token(user);
    // The socket, through nginx, before the upload.
    let (stream, _) = tokio_tungstenite::connect_async(format!("ws://{proxied}/api/v1/ws/{user}?token={token}"))
        .await
        .expect("ws via nginx");
    let mut ws = Ws { stream };
    ws.send_text("ping").await;
    assert_eq!(ws.next_text(Duration::from_secs(5)).await.as_deref(), Some("pong"));
    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(std::fs::read(corpus_file("gofpdf-tables.pdf")).unwrap())
            .file_name("tables.pdf"),
    );
    let r = client()
        .post(format!("http://{proxied}/api/v1/documents"))
        .bearer_auth(&token)
        .header("X-Forwarded-For", "203.0.113.9")
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let v: Value = r.json().await.unwrap();
    let job = v["job_id"].as_str().unwrap().to_string();
    let events = ws
        .collect_until_done(std::slice::from_ref(&job), Duration::from_secs(60))
        .await;
    let evs = &events[&job];
    assert_eq!(evs.last().unwrap()["type"], "job_completed");
    let stages: Vec<&str> = evs.iter().map(|e| e["stage"].as_str().unwrap()).collect();
    for s in STAGES {
        assert!(stages.contains(&s), "{s} missing in {stages:?}");
    }
    // The rest of the API through nginx too.
    let r = client()
        .get(format!("http://{proxied}/api/v1/jobs/{job}"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        client()
            .get(format!("http://{proxied}/metrics"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    // The daemon logged the real client, taken from the trusted proxy's header.
    assert!(d.log_text().contains("client=203.0.113.9"), "{}", d.log_text());
    // The socket's token is not in nginx's access log (written when the socket closes).
    let _ = futures::SinkExt::close(&mut ws.stream).await;
    drop(ws);
    let start = Instant::now();
    while !std::fs::read_to_string(dir.join("doculearn.access.log"))
        .unwrap_or_default()
        .contains("/api/v1/ws/")
    {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "the socket never showed up in the access log"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let access = std::fs::read_to_string(dir.join("doculearn.access.log")).unwrap();
    assert!(access.contains("/api/v1/ws/"), "{access}");
    assert!(!access.contains(&token), "the token leaked into nginx's log");
    let _ = std::fs::remove_dir_all(&dir);
}
