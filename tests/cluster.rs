//! Several instances, one service: two API-role and two worker-role
//! processes on one database and Redis, with real nginx in front of both API
//! instances (`config/nginx/doculearn-cluster.conf`, the shipped example).
//! Events of a job run by either worker reach sockets on either API
//! instance; a cancel sent to an API instance stops the job on the worker
//! running it; kill -9 of a worker mid-batch loses nothing; a rolling
//! restart of both API instances under an open browser session (Debian's
//! Chromium through playwright-core, `tests/ui/cluster.test.mjs`) loses and
//! duplicates no event.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;
use uuid::Uuid;

struct Cluster {
    api: Vec<Daemon>,
    workers: Vec<Daemon>,
    /// nginx's address, `http://127.0.0.1:port`.
    url: String,
    _nginx: Nginx,
}

impl Cluster {
    /// `extra` applies to every process; API instances listen on fixed ports
    /// (nginx's upstream) so a restarted one comes back where nginx looks.
    async fn start(extra: Opts) -> Cluster {
        let ports = [free_port(), free_port()];
        let api_opts = |port: u16| {
            extra
                .clone()
                .arg("--role")
                .arg("api")
                .with("DOCULEARN_HTTP__LISTEN", format!("127.0.0.1:{port}"))
                .with("DOCULEARN_HTTP__TRUSTED_PROXIES", "[\"127.0.0.1/32\"]")
        };
        let first = Daemon::start(api_opts(ports[0])).await;
        let second = first.sibling(api_opts(ports[1]));
        let workers = (0..2)
            .map(|_| first.sibling(extra.clone().arg("--role").arg("worker")))
            .collect();
        let nginx = Nginx::start("doculearn-cluster.conf", |site| {
            assert!(site.contains("server 127.0.0.1:8001 ") && site.contains("server 127.0.0.1:8002 "));
            site.replace("server 127.0.0.1:8001 ", &format!("server 127.0.0.1:{} ", ports[0]))
                .replace("server 127.0.0.1:8002 ", &format!("server 127.0.0.1:{} ", ports[1]))
        });
        let url = format!("http://127.0.0.1:{}", nginx.port);
        Cluster {
            api: vec![first, second],
            workers,
            url,
            _nginx: nginx,
        }
    }

    fn token(&self, user: Uuid) -> String {
        self.api[0].token(user)
    }

    /// Restarts API instance `i` (SIGTERM, drain, start on the same port).
    fn restart_api(&mut self, i: usize) {
        self.api[i].terminate(Duration::from_secs(20));
        self.api[i].spawn();
    }

    /// Which worker's log says it started this job.
    fn worker_of(&self, job_id: &str) -> Option<usize> {
        self.workers.iter().position(|w| {
            w.log_text()
                .lines()
                .any(|l| l.contains("job started") && l.contains(job_id))
        })
    }
}

/// Uploads files through nginx; the job ids.
async fn upload(url: &str, token: &str, files: &[(String, Vec<u8>)]) -> Vec<String> {
    let mut jobs = Vec::new();
    for (name, bytes) in files {
        let form = reqwest::multipart::Form::new().part(
            "file",
            reqwest::multipart::Part::bytes(bytes.clone()).file_name(name.clone()),
        );
        let resp = client()
            .post(format!("{url}/api/v1/documents"))
            .bearer_auth(token)
            .multipart(form)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 202, "upload of {name} through nginx");
        let v: Value = resp.json().await.unwrap();
        jobs.push(v["job_id"].as_str().unwrap().to_string());
    }
    jobs
}

fn texts(prefix: &str, n: usize) -> Vec<(String, Vec<u8>)> {
    (0..n)
        .map(|i| {
            (
                format!("{prefix}-{i}.txt"),
                format!("{prefix} document {i}: rivers, mountains and the weather of {i} valleys.").into_bytes(),
            )
        })
        .collect()
}

/// Every stored event seq of a job, in order.
async fn history_seqs(pool: &sqlx::PgPool, job_id: &str) -> Vec<i64> {
    sqlx::query_scalar("SELECT seq FROM job_progress_history WHERE job_id = $1 ORDER BY seq")
        .bind(job_id)
        .fetch_all(pool)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn events_of_either_worker_reach_sockets_on_either_api_instance() {
    let c = Cluster::start(Opts::default()).await;
    let user = Uuid::new_v4();
    let token = c.token(user);
    let mut sockets = Vec::new();
    for d in &c.api {
        let mut ws = d.ws(user, &token).await;
        ws.send_text("ping").await;
        assert_eq!(ws.next_text(Duration::from_secs(5)).await.as_deref(), Some("pong"));
        sockets.push(ws);
    }
    let jobs = upload(&c.url, &token, &texts("spread", 8)).await;
    let pool = c.api[0].db().await;
    for (i, ws) in sockets.iter_mut().enumerate() {
        let events = ws.collect_until_done(&jobs, Duration::from_secs(60)).await;
        for job in &jobs {
            let seqs: Vec<i64> = events[job].iter().map(|e| e["seq"].as_i64().unwrap()).collect();
            assert_eq!(
                seqs,
                history_seqs(&pool, job).await,
                "api instance {i}, {job}: every event, in order"
            );
            assert_eq!(events[job].last().unwrap()["type"], "job_completed");
        }
    }
    // Both workers ran some of them (the API instances run none).
    let ran: Vec<usize> = jobs.iter().filter_map(|j| c.worker_of(j)).collect();
    assert_eq!(ran.len(), jobs.len(), "every job ran on a worker");
    assert!(ran.contains(&0) && ran.contains(&1), "both workers took jobs: {ran:?}");
    for api in &c.api {
        assert!(
            !api.log_text().contains("job started"),
            "an API-role instance ran a job"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cancel_sent_to_an_api_instance_stops_the_job_on_its_worker() {
    let c = Cluster::start(
        Opts::default()
            .with("DOCULEARN_FAULTS__HANG_IN_STAGE", "embedding")
            .with("DOCULEARN_FAULTS__HANG_SECS", 600),
    )
    .await;
    let user = Uuid::new_v4();
    let token = c.token(user);
    let job = upload(&c.url, &token, &texts("cancel", 1)).await.remove(0);
    c.api[1]
        .wait_stage(&token, &job, "embedding", Duration::from_secs(30))
        .await;
    let worker = c.worker_of(&job).expect("a worker runs it");
    let mut ws = c.api[1].ws(user, &token).await;
    let asked = Instant::now();
    let (status, body) = c.api[1]
        .post_json(&token, &format!("/api/v1/jobs/{job}/cancel"), &serde_json::json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    let answered = asked.elapsed();
    let job_view = c.api[0].wait_job(&token, &job, Duration::from_secs(10)).await;
    assert_eq!(job_view["stage"], "failed", "{job_view}");
    assert_eq!(job_view["error"], "cancelled", "{job_view}");
    // The socket on the other API instance saw the end.
    let events = ws
        .collect_until_done(std::slice::from_ref(&job), Duration::from_secs(10))
        .await;
    assert_eq!(events[&job].last().unwrap()["type"], "job_failed");
    assert!(
        c.workers[worker].log_text().contains("cancel"),
        "the worker that ran it logged the cancel"
    );
    eprintln!(
        "FIGURE cluster: cancel through API instance 2 of a job running on worker {}: answered in {:.0} ms",
        worker + 1,
        answered.as_secs_f64() * 1000.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn kill9_of_a_worker_mid_batch_loses_nothing() {
    let mut c = Cluster::start(
        Opts::default()
            .with("DOCULEARN_QUEUE__LEASE_SECS", 3)
            .with("DOCULEARN_FAULTS__HANG_IN_STAGE", "embedding")
            .with("DOCULEARN_FAULTS__HANG_SECS", 2),
    )
    .await;
    let user = Uuid::new_v4();
    let token = c.token(user);
    let jobs = upload(&c.url, &token, &texts("survive", 12)).await;
    // Wait until the first worker is in the middle of some of them.
    let start = Instant::now();
    while !jobs.iter().any(|j| c.worker_of(j) == Some(0)) {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "worker 1 never started a job"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    c.workers[0].kill9();
    let pool = c.api[0].db().await;
    for job in &jobs {
        let view = c.api[1].wait_job(&token, job, Duration::from_secs(90)).await;
        assert_eq!(view["stage"], "completed", "{job}: {view}");
    }
    let once: Vec<(String, i64)> = sqlx::query_as(
        "SELECT job_id::text, count(*) FROM job_progress_history WHERE event_type = 'job_completed' GROUP BY job_id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(once.len(), jobs.len());
    assert!(
        once.iter().all(|(_, n)| *n == 1),
        "each job completed exactly once: {once:?}"
    );
    let wrong: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM documents d WHERE d.chunk_count IS DISTINCT FROM (SELECT count(*)::int FROM chunks c WHERE c.document_id = d.id) \
         OR d.chunk_count < 1",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(wrong, 0, "every document has its chunks, once");
    let recovered: i64 = sqlx::query_scalar("SELECT count(*) FROM job_progress WHERE attempt > 1")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(recovered >= 1, "the killed worker's jobs ran again elsewhere");
    eprintln!("FIGURE cluster: kill -9 of worker 1 mid-batch: 12/12 completed exactly once, {recovered} taken over by worker 2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_of_the_api_instances_under_a_browser_session_loses_and_duplicates_nothing() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let ui_dir = root.join("tests/ui");
    assert!(
        ui_dir.join("node_modules/playwright-core").is_dir(),
        "tests/ui/node_modules is missing: run `npm ci` in tests/ui (scripts/test.sh does)"
    );
    let mut c = Cluster::start(
        Opts::default()
            .with("DOCULEARN_FAULTS__HANG_IN_STAGE", "embedding")
            .with("DOCULEARN_FAULTS__HANG_SECS", 3),
    )
    .await;
    let user = Uuid::new_v4();
    let token = c.token(user);
    let shots: PathBuf = root.join("target/ui-screenshots");
    let node_log = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("cluster-node-{}.log", Uuid::new_v4().simple()));
    let mut node = Command::new("node")
        .arg("cluster.test.mjs")
        .current_dir(&ui_dir)
        .env("BASE_URL", &c.url)
        .env("TOKEN", &token)
        .env("SCREENSHOTS", &shots)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&node_log).unwrap())
        .spawn()
        .expect("start node (Debian's nodejs)");
    let mut stdin = node.stdin.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let stdout = node.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut transcript = Vec::new();
    let mut wait_for = |prefix: &str, within: Duration| -> String {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) if line.starts_with(prefix) => return line,
                Ok(line) => transcript.push(line),
                Err(_) => panic!(
                    "the browser script never said {prefix}; it said:\n{}\n{}",
                    transcript.join("\n"),
                    std::fs::read_to_string(&node_log).unwrap_or_default()
                ),
            }
        }
    };
    wait_for("@@ready", Duration::from_secs(60));

    // Work that spans both restarts: 12 documents, each held 3 s in embedding.
    let jobs = upload(&c.url, &token, &texts("rolling", 12)).await;
    c.api[0]
        .wait_stage(&token, &jobs[0], "embedding", Duration::from_secs(30))
        .await;
    c.restart_api(0);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    c.restart_api(1);
    let pool = c.api[0].db().await;
    for job in &jobs {
        assert_eq!(
            c.api[1].wait_job(&token, job, Duration::from_secs(90)).await["stage"],
            "completed"
        );
    }
    writeln!(stdin, "@@done {}", jobs.join(",")).unwrap();
    let frames = wait_for("@@frames ", Duration::from_secs(60));
    let status = node.wait().unwrap();
    let stderr = std::fs::read_to_string(&node_log).unwrap_or_default();
    assert!(
        status.success(),
        "the browser script failed:\n{}\n{stderr}",
        transcript.join("\n")
    );
    let frames: Vec<Value> = serde_json::from_str(frames.trim_start_matches("@@frames ")).unwrap();

    // Per job: what reached the page over all its sockets, against the record.
    let mut got: HashMap<String, BTreeMap<i64, usize>> = HashMap::new();
    for f in &frames {
        if let (Some(job), Some(seq)) = (f["job_id"].as_str(), f["seq"].as_i64()) {
            *got.entry(job.to_string()).or_default().entry(seq).or_default() += 1;
        }
    }
    let (mut lost, mut duplicated, mut total) = (0, 0, 0);
    let mut problems = Vec::new();
    for job in &jobs {
        let want = history_seqs(&pool, job).await;
        let seen = got.remove(job).unwrap_or_default();
        let missing: Vec<i64> = want.iter().filter(|s| !seen.contains_key(s)).copied().collect();
        let twice: Vec<i64> = seen.iter().filter(|(_, n)| **n > 1).map(|(s, _)| *s).collect();
        lost += missing.len();
        duplicated += seen.values().map(|n| n - 1).sum::<usize>();
        total += want.len();
        if !missing.is_empty() || !twice.is_empty() {
            problems.push(format!("{job}: missing seqs {missing:?}, twice {twice:?} of {want:?}"));
        }
    }
    // On each socket, each job's events come in seq order (the page applies
    // an event only if it is newer than the last one it applied).
    let mut out_of_order = 0;
    let mut last: HashMap<String, i64> = HashMap::new();
    for f in &frames {
        if f["socket_opened"].as_bool() == Some(true) {
            last.clear();
        } else if let (Some(job), Some(seq)) = (f["job_id"].as_str(), f["seq"].as_i64()) {
            if last.get(job).is_some_and(|l| seq <= *l) {
                out_of_order += 1;
            }
            last.insert(job.to_string(), seq);
        }
    }
    assert_eq!(out_of_order, 0, "events of a job out of order on a socket");
    let sockets = frames
        .iter()
        .filter(|f| f["socket_opened"].as_bool() == Some(true))
        .count();
    eprintln!(
        "FIGURE cluster: rolling restart of both API instances under a browser session: {total} events, {lost} lost, {duplicated} duplicated, over {sockets} sockets"
    );
    assert!(
        sockets >= 2,
        "the page's socket was reconnected through nginx ({sockets} sockets)"
    );
    assert_eq!(
        (lost, duplicated),
        (0, 0),
        "events lost / duplicated at the page:\n{}\nbrowser script:\n{}",
        problems.join("\n"),
        transcript.join("\n")
    );
}
