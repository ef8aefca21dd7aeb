//! The actor tree under hostile input and load, as users and operators see
//! it: queue entries that cannot be read fail themselves while everyone
//! else's work goes on; a reader that stops reading delays nobody else and
//! is closed; uploads are all or nothing and safe to retry; reconnect storms
//! and big resumes end with every socket live; a frozen tree is reported
//! dead (HTTP and systemd's watchdog); retries go through fairness.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::*;
use futures::StreamExt;
use redis::AsyncCommands;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;
use uuid::Uuid;

const SERVICE: &str = "tree-test-service-token-tree-test-0001";

fn read(name: &str) -> Vec<u8> {
    std::fs::read(corpus_file(name)).unwrap()
}

/// Pushes one progress event through the external workers' route.
async fn external(d: &Daemon, job_id: &str, stage: &str, progress: f64, details: Value) -> u16 {
    let body =
        json!({ "job_id": job_id, "stage": stage, "progress": progress, "message": "external", "details": details });
    d.external_progress(SERVICE, &body).await
}

/// `n` tiny documents stored without being queued (their job rows exist;
/// events can be pushed to them through the external route). Job ids.
async fn stored_jobs(d: &Daemon, token: &str, n: usize) -> Vec<String> {
    let files: Vec<(String, Vec<u8>)> = (0..n)
        .map(|i| (format!("note-{i}.txt"), format!("note {i}").into_bytes()))
        .collect();
    let files: Vec<(&str, Vec<u8>)> = files.iter().map(|(n, b)| (n.as_str(), b.clone())).collect();
    let r = d.upload_at("/api/v1/documents?enqueue=false", token, &files).await;
    assert_eq!(r.status(), 202);
    let v: Value = r.json().await.unwrap();
    let items = if v.is_array() {
        v.as_array().unwrap().clone()
    } else {
        vec![v]
    };
    items
        .iter()
        .map(|x| x["job_id"].as_str().unwrap().to_string())
        .collect()
}

/// Waits for the next event of `job` on the socket (skipping others).
async fn next_event_of(ws: &mut Ws, job: &str, timeout: Duration) -> Option<Value> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let text = ws.next_text(left).await?;
        if let Ok(v) = serde_json::from_str::<Value>(&text) {
            if v["job_id"] == job {
                return Some(v);
            }
        }
    }
}

fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<u64> = rest.split_whitespace().filter_map(|x| x.parse().ok()).collect();
    f.get(10).copied().unwrap_or(0) + f.get(11).copied().unwrap_or(0)
}

/// Writes a job dict straight into Redis and queues it, as a buggy backend
/// (or anyone who can write to Redis) would.
async fn queue_raw(d: &Daemon, job_id: &str, bytes: &[u8]) {
    let mut con = d.redis().await;
    let now = chrono::Utc::now().timestamp_millis();
    let _: () = con.pset_ex(format!("arq:job:{job_id}"), bytes, 600_000).await.unwrap();
    let _: () = con.zadd(&d.queue, job_id, now).await.unwrap();
}

/// Hostile job payloads, each queued ahead of a good upload: every one ends
/// as arq's failed result with a readable reason, the good document
/// completes, the daemon stays responsive and goes idle, and a restarted
/// daemon does not run them again.
#[tokio::test(flavor = "multi_thread")]
async fn hostile_queue_entries_fail_themselves_and_everyone_else_carries_on() {
    let mut d = Daemon::start(Opts::default()).await;
    let user = Uuid::new_v4();
    let token = d.token(user);
    let doc = Uuid::new_v4();
    let mut deep_list = b"\x80\x04".to_vec();
    deep_list.extend(std::iter::repeat_n(b']', 100_000));
    deep_list.extend(std::iter::repeat_n(b'a', 99_999));
    deep_list.push(b'.');
    let mut overflow = b"\x80\x05\x96".to_vec();
    overflow.extend(0xffff_ffff_ffff_fff0u64.to_le_bytes());
    overflow.extend(b"abc.");
    let good = doculearn::jobs::job_def(doculearn::jobs::PROCESS_DOCUMENT, doc, user)
        .encode(doculearn::config::Serializer::Pickle);
    let mut truncated = good.clone();
    truncated.truncate(good.len() / 2);
    let mut seed = 0x9e3779b97f4a7c15u64;
    let random: Vec<u8> = (0..4096)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 24) as u8
        })
        .collect();
    let wrong_args = doculearn::arq::JobDef {
        job_try: None,
        function: "process_document".into(),
        args: vec![doculearn::arq::PyValue::Int(7), doculearn::arq::PyValue::List(vec![])],
        kwargs: vec![],
        enqueue_time_ms: 1,
    }
    .encode(doculearn::config::Serializer::Pickle);
    let mut nested = doculearn::arq::PyValue::str("x");
    for _ in 0..40 {
        nested = doculearn::arq::PyValue::List(vec![nested]);
    }
    let deep_args = doculearn::arq::JobDef {
        job_try: None,
        function: "process_document".into(),
        args: vec![nested],
        kwargs: vec![],
        enqueue_time_ms: 1,
    }
    .encode(doculearn::config::Serializer::Pickle);
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("bad:overflowing-length", overflow, "unable to deserialize job"),
        ("bad:nested-100000-deep", deep_list, "unable to deserialize job"),
        ("bad:truncated", truncated, "unable to deserialize job"),
        ("bad:random-bytes", random, "unable to deserialize job"),
        ("bad:wrong-argument-types", wrong_args, "must be a UUID"),
        ("bad:arguments-nested-deep", deep_args, "unable to deserialize job"),
    ];
    let queued_at = Instant::now();
    for (id, bytes, _) in &cases {
        queue_raw(&d, id, bytes).await;
    }
    let (_, good_job) = d
        .upload_one(&token, "debian-manifesto.txt", read("debian-manifesto.txt"))
        .await;
    // When each bad job's arq result appears (from when they were queued).
    let mut con = d.redis().await;
    let mut ended: HashMap<&str, (Duration, String)> = HashMap::new();
    while ended.len() < cases.len() && queued_at.elapsed() < Duration::from_secs(30) {
        for (id, _, _) in &cases {
            if ended.contains_key(id) {
                continue;
            }
            let bytes: Option<Vec<u8>> = con.get(format!("arq:result:{id}")).await.unwrap();
            if let Some(b) = bytes {
                ended.insert(id, (queued_at.elapsed(), String::from_utf8_lossy(&b).to_string()));
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let job = d.wait_job(&token, &good_job, Duration::from_secs(60)).await;
    assert_eq!(job["stage"], "completed", "the good document completes: {job}");
    let mut longest = Duration::ZERO;
    for (id, _, expect) in &cases {
        let (took, result) = ended.get(id).unwrap_or_else(|| panic!("{id} never got an arq result"));
        assert!(
            result.contains("JobExecutionFailed"),
            "{id} ended as arq's JobExecutionFailed: {result}"
        );
        assert!(result.contains(expect), "{id}: result {result} should say {expect}");
        assert!(!result.contains("panicked"), "{id}: {result}");
        println!("{id}: failed {took:?} after it was queued");
        longest = longest.max(*took);
    }
    println!("the longest any bad payload took from being queued to its failed result: {longest:?}");
    // Responsive, and idle: no handler spinning.
    let (status, ready) = d.get_json(&token, "/readyz").await;
    assert_eq!(status, 200, "{ready}");
    let (status, _) = d.get_json(&token, "/healthz").await;
    assert_eq!(status, 200);
    let before = cpu_ticks(d.pid());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let used = cpu_ticks(d.pid()) - before;
    assert!(
        used < 100,
        "the daemon is idle afterwards (used {used} ticks of 200 in 2 s)"
    );
    // A restarted daemon comes up and does not take them again.
    d.kill9();
    d.spawn();
    let (status, _) = d.get_json(&token, "/healthz").await;
    assert_eq!(status, 200);
    let mut con = d.redis().await;
    for (id, _, _) in &cases {
        let queued: Option<f64> = con.zscore(&d.queue, id).await.unwrap();
        assert_eq!(queued, None, "{id} is not queued again");
    }
}

/// A socket whose reader stopped reading delays nobody else's events, and
/// is closed with 1008 once its buffer is full.
#[tokio::test(flavor = "multi_thread")]
async fn a_reader_that_stops_reading_delays_nobody_and_is_closed() {
    let d = Daemon::start(Opts::default().with("DOCULEARN_AUTH__SERVICE_TOKEN", SERVICE)).await;
    let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
    let (ta, tb) = (d.token(alice), d.token(bob));
    let alice_jobs = stored_jobs(&d, &ta, 1).await;
    let bob_jobs = stored_jobs(&d, &tb, 1).await;
    let mut stuck = d.ws(alice, &ta).await; // never read until the end
    let mut live = d.ws(bob, &tb).await;
    // Alice's socket gets big events, stage after stage (never coalesced).
    let filler = json!({ "blob": "x".repeat(15_000) });
    let stages = ["downloading", "extracting"];
    let mut bob_latency = Vec::new();
    for i in 0..1500 {
        assert_eq!(
            external(&d, &alice_jobs[0], stages[i % 2], 0.1, filler.clone()).await,
            200
        );
        if i % 150 == 0 {
            let sent = Instant::now();
            let stage = if (i / 150) % 2 == 0 { "chunking" } else { "embedding" };
            assert_eq!(external(&d, &bob_jobs[0], stage, 0.5, json!({ "n": i })).await, 200);
            let e = next_event_of(&mut live, &bob_jobs[0], Duration::from_secs(5))
                .await
                .expect("bob's event arrives while alice's socket is stuck");
            assert_eq!(e["details"]["n"], i);
            bob_latency.push(sent.elapsed());
        }
    }
    println!("bob's events took {bob_latency:?} while alice's reader was stuck");
    // Alice's socket: whatever was buffered, then a 1008 close.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut code = None;
    while let Ok(Some(msg)) =
        tokio::time::timeout(deadline.saturating_duration_since(Instant::now()), stuck.stream.next()).await
    {
        match msg {
            Ok(Message::Close(frame)) => {
                code = frame.map(|f| (u16::from(f.code), f.reason.to_string()));
                break;
            }
            Ok(_) => continue,
            Err(_) => break,
        }
    }
    let (code, reason) = code.expect("the stuck socket is closed with a close frame");
    assert_eq!(code, 1008);
    assert!(reason.contains("too slow"), "{reason}");
}

/// A 3-file upload whose third file fails to store leaves nothing; its retry
/// with the same Idempotency-Key stores each file once, a replay answers the
/// same, and the key with a different request is refused. Batches too.
#[tokio::test(flavor = "multi_thread")]
async fn uploads_are_all_or_nothing_and_safe_to_retry() {
    for path in ["/api/v1/documents", "/api/v1/batches"] {
        let d = Daemon::start(
            Opts::default()
                .with("DOCULEARN_FAULTS__FAIL_UPLOAD_AT_FILE", 3)
                .with("DOCULEARN_FAULTS__FAIL_UPLOAD_TIMES", 1),
        )
        .await;
        let token = d.token(Uuid::new_v4());
        let pool = d.db().await;
        let files = |tag: &str| -> reqwest::multipart::Form {
            let mut form = reqwest::multipart::Form::new();
            for i in 0..3 {
                form = form.part(
                    "file",
                    reqwest::multipart::Part::bytes(format!("{tag} file {i}: some words to index").into_bytes())
                        .file_name(format!("{tag}-{i}.txt")),
                );
            }
            form
        };
        let post = |key: &'static str, form: reqwest::multipart::Form| {
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
                (status, r.json::<Value>().await.unwrap_or(Value::Null))
            }
        };
        let count = |table: &'static str| {
            let pool = pool.clone();
            async move {
                sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
                    .fetch_one(&pool)
                    .await
                    .unwrap()
            }
        };
        let (status, body) = post("key-1", files("a")).await;
        assert_eq!(status, 500, "{path}: the injected fault: {body}");
        assert_eq!(count("documents").await, 0, "{path}: nothing stored");
        assert_eq!(count("job_progress").await, 0, "{path}: no job row");
        assert_eq!(count("batches").await, 0, "{path}: no batch row");
        let (status, first) = post("key-1", files("a")).await;
        assert_eq!(status, 202, "{path}: {first}");
        let (status, again) = post("key-1", files("a")).await;
        assert_eq!(status, 202);
        assert_eq!(again, first, "{path}: a replay gets the same answer");
        assert_eq!(count("documents").await, 3, "{path}: each file stored once");
        let (status, body) = post("key-1", files("something else")).await;
        assert_eq!(status, 422, "{path}: the key with another request: {body}");
        assert_eq!(count("documents").await, 3);
        if path == "/api/v1/batches" {
            assert_eq!(count("batches").await, 1);
        }
    }
}

/// Hundreds of users, ten sockets each (the limit), every socket dropped
/// and reopened after 0 ms, 1 s or 3 s: every reopened socket is accepted
/// and receives the next live event after its `resume`.
#[tokio::test(flavor = "multi_thread")]
async fn a_reconnect_storm_ends_with_every_socket_live() {
    let d = Daemon::start(
        Opts::default()
            .with("DOCULEARN_AUTH__SERVICE_TOKEN", SERVICE)
            .with("DOCULEARN_HTTP__UPLOADS_PER_MINUTE", 0),
    )
    .await;
    let users: Vec<(Uuid, String)> = (0..150).map(|_| Uuid::new_v4()).map(|u| (u, d.token(u))).collect();
    let mut jobs = HashMap::new();
    for (u, t) in &users {
        jobs.insert(*u, stored_jobs(&d, t, 1).await.remove(0));
    }
    // Open the limit, ten per user.
    let mut sockets: Vec<(Uuid, Ws)> = Vec::new();
    for (u, t) in &users {
        for _ in 0..10 {
            sockets.push((*u, d.ws(*u, t).await));
        }
    }
    // Drop every socket, and reopen: a third of the users at once, a third
    // after 1 s, a third after 3 s.
    drop(sockets);
    let mut reopened: Vec<(Uuid, Ws)> = Vec::new();
    let dropped = Instant::now();
    for (k, delay) in [(0usize, 0u64), (1, 1000), (2, 3000)] {
        tokio::time::sleep(Duration::from_millis(delay).saturating_sub(dropped.elapsed())).await;
        for (u, t) in users.iter().skip(k).step_by(3) {
            for _ in 0..10 {
                let mut ws = d.ws(*u, t).await;
                ws.send_text(&json!({ "type": "resume", "after": { jobs[u].clone(): 0 } }).to_string())
                    .await;
                reopened.push((*u, ws));
            }
        }
    }
    // Every socket is open and has resumed.
    let mut refused = 0;
    for (_, ws) in reopened.iter_mut() {
        loop {
            match ws.next_text(Duration::from_secs(10)).await {
                Some(t) if t.contains("\"resumed\"") => break,
                Some(_) => continue,
                None => {
                    refused += 1;
                    break;
                }
            }
        }
    }
    assert_eq!(refused, 0, "every reopened socket was accepted and resumed");
    // A live event for every user reaches all ten of their sockets.
    for (u, _) in &users {
        assert_eq!(
            external(&d, &jobs[u], "extracting", 0.3, json!({ "live": true })).await,
            200
        );
    }
    for (u, ws) in reopened.iter_mut() {
        let e = next_event_of(ws, &jobs[u], Duration::from_secs(10))
            .await
            .unwrap_or_else(|| panic!("a socket of {u} got no live event"));
        assert_eq!(e["details"]["live"], true);
    }
}

/// `resume` naming 1,000 jobs returns every missed event on a live socket.
#[tokio::test(flavor = "multi_thread")]
async fn resume_naming_a_thousand_jobs_returns_all_their_events() {
    let d = Daemon::start(
        Opts::default()
            .with("DOCULEARN_AUTH__SERVICE_TOKEN", SERVICE)
            .with("DOCULEARN_HTTP__UPLOADS_PER_MINUTE", 0),
    )
    .await;
    let user = Uuid::new_v4();
    let token = d.token(user);
    let jobs = stored_jobs(&d, &token, 1000).await;
    assert_eq!(jobs.len(), 1000);
    // Two more events for each of the first hundred (three in all: queued + two).
    for j in jobs.iter().take(100) {
        external(&d, j, "downloading", 0.1, json!({})).await;
        external(&d, j, "extracting", 0.25, json!({})).await;
    }
    let mut ws = d.ws(user, &token).await;
    let after: serde_json::Map<String, Value> = jobs.iter().map(|j| (j.clone(), json!(0))).collect();
    ws.send_text(&json!({ "type": "resume", "after": after }).to_string())
        .await;
    let mut seen: HashMap<String, Vec<i64>> = HashMap::new();
    loop {
        let text = ws
            .next_text(Duration::from_secs(30))
            .await
            .expect("the socket stays open");
        let v: Value = serde_json::from_str(&text).unwrap();
        if v["type"] == "resumed" {
            break;
        }
        seen.entry(v["job_id"].as_str().unwrap().to_string())
            .or_default()
            .push(v["seq"].as_i64().unwrap());
    }
    assert_eq!(seen.len(), 1000, "every job's events came back");
    for (k, j) in jobs.iter().enumerate() {
        let want: Vec<i64> = if k < 100 { vec![1, 2, 3] } else { vec![1] };
        assert_eq!(seen[j], want, "{j}");
    }
    // Still live afterwards.
    ws.send_text("ping").await;
    assert_eq!(ws.next_text(Duration::from_secs(5)).await.as_deref(), Some("pong"));
}

/// A tree that stops answering is dead to liveness (HTTP 503 naming who did
/// not answer) and to systemd's watchdog (the pings stop), although the
/// HTTP server still runs.
#[tokio::test(flavor = "multi_thread")]
async fn a_frozen_tree_is_reported_dead_and_stops_the_watchdog() {
    let socket_path = std::env::temp_dir().join(format!("dl-notify-{}.sock", Uuid::new_v4().simple()));
    let listener = std::os::unix::net::UnixDatagram::bind(&socket_path).unwrap();
    listener.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let d = Daemon::start(
        Opts::default()
            .with("DOCULEARN_FAULTS__FREEZE_SUPERVISOR_AFTER_SECS", 3)
            .with("NOTIFY_SOCKET", socket_path.display())
            .with("WATCHDOG_USEC", 400_000),
    )
    .await;
    let token = d.token(Uuid::new_v4());
    let (status, body) = d.get_json(&token, "/healthz").await;
    assert_eq!(status, 200, "{body}");
    let mut pings = Vec::new();
    let start = Instant::now();
    let mut buf = [0u8; 256];
    while start.elapsed() < Duration::from_secs(7) {
        if let Ok(n) = listener.recv(&mut buf) {
            pings.push((start.elapsed(), String::from_utf8_lossy(&buf[..n]).to_string()));
        }
    }
    assert!(
        pings.iter().any(|(_, m)| m == "WATCHDOG=1"),
        "watchdog pings while alive: {pings:?}"
    );
    let last_ping = pings
        .iter()
        .filter(|(_, m)| m == "WATCHDOG=1")
        .map(|(t, _)| *t)
        .max()
        .unwrap();
    assert!(
        last_ping < Duration::from_secs(5),
        "no watchdog ping once the tree froze (last one at {last_ping:?}): {pings:?}"
    );
    let (status, body) = d.get_json(&token, "/healthz").await;
    assert_eq!(status, 503, "{body}");
    assert!(body["reason"].as_str().unwrap().contains("supervisor"), "{body}");
    let (status, body) = d.get_json(&token, "/readyz").await;
    assert_eq!(status, 503, "{body}");
    let _ = std::fs::remove_file(socket_path);
}

/// A retry enters the queue through fairness, like any upload: a user at
/// their share waits.
#[tokio::test(flavor = "multi_thread")]
async fn a_retry_waits_for_the_users_share() {
    let d = Daemon::start(
        Opts::default()
            .with("DOCULEARN_QUEUE__PER_USER_ACTIVE_JOBS", 1)
            .with("DOCULEARN_FAULTS__HANG_IN_STAGE", "embedding")
            .with("DOCULEARN_FAULTS__HANG_SECS", 5)
            .with("DOCULEARN_FAULTS__HANG_TIMES", 1),
    )
    .await;
    let user = Uuid::new_v4();
    let token = d.token(user);
    let pool = d.db().await;
    let (_, broken) = d
        .upload_one(
            &token,
            "broken.pdf",
            b"%PDF-1.4\n1 0 obj << >> endobj\ngarbage".to_vec(),
        )
        .await;
    assert_eq!(
        d.wait_job(&token, &broken, Duration::from_secs(30)).await["stage"],
        "failed"
    );
    let (_, slow) = d
        .upload_one(&token, "debian-manifesto.txt", read("debian-manifesto.txt"))
        .await;
    d.wait_stage(&token, &slow, "embedding", Duration::from_secs(30)).await;
    let (status, _) = d
        .post_json(&token, &format!("/api/v1/jobs/{broken}/retry"), &json!({}))
        .await;
    assert_eq!(status, 202);
    let held: bool = sqlx::query_scalar("SELECT enqueued_at IS NULL FROM job_progress WHERE job_id = $1")
        .bind(&broken)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(held, "the retry is held while the user's one slot runs");
    let mut con = d.redis().await;
    let queued: Option<f64> = con.zscore(&d.queue, &broken).await.unwrap();
    assert_eq!(queued, None, "and not in the queue");
    // When the slow job ends, the retry runs (and fails again, the file being broken).
    assert_eq!(
        d.wait_job(&token, &slow, Duration::from_secs(60)).await["stage"],
        "completed"
    );
    let job = d.wait_job(&token, &broken, Duration::from_secs(60)).await;
    assert_eq!(job["stage"], "failed");
    assert_eq!(job["attempt"], 2, "it ran again: {job}");
}
