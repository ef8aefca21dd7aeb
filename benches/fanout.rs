//! Progress fan-out capacity, measured, not asserted.
//!
//!     bash scripts/bench-fanout.sh            # 10,000 sockets, 1,000 users
//!     bash scripts/bench-fanout.sh --sockets 2000 --users 200 --secs 10
//!     bash scripts/bench-fanout.sh --phases steady,alone   # some phases only
//!
//! Starts the real daemon (`serve --role api`, loopback only, a fresh
//! database and channel, both dropped at the end) and, in this process,
//! 1,000 job rows (one per user) and a "worker": each job has the worker's
//! own `Reporter` (the code a document actor reports with), so every event
//! takes the normal path: worker → Postgres (the group-commit writer) →
//! Redis → the daemon's relay, registry and sessions → sockets. This process
//! also holds the sockets (tokio-tungstenite), 10 per user, and measures:
//!
//! - **open**: time to open every socket (each answers a ping), and the
//!   daemon's RSS before and after: RSS per socket;
//! - **steady**: events at `--rate` (1,000/s) for `--secs`; latency from the
//!   event's creation (the worker's clock, just before `Reporter::progress`,
//!   carried in `details.t`) to its arrival on a socket: p50/p99/max;
//! - **full path, higher rates**: the same at 2k, 5k, 10k, 20k events/s
//!   (until the worker cannot keep the rate or p99 passes a second);
//! - **fan-out alone**: numbered events published straight to Redis (as the
//!   writer does after its commit) at rising rates: the socket side's ceiling;
//! - **reconnect storm**: with events flowing, every socket drops at once,
//!   reconnects and `resume`s from its last seq; time until all resumed, and
//!   at the end every socket's events are checked: none lost, none twice.
//!
//! CPU seconds per second of the daemon, this process (client + worker),
//! Postgres and Redis are printed beside each phase (2 cores in all, so
//! this process's share is load the daemon would not carry in production).
//! Figures only: nothing here passes or fails.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use doculearn::domain::{ProgressEvent, Stage};
use doculearn::events::{EventSink, JobMeta, Publisher};
use doculearn::progress::Reporter;
use futures::{SinkExt, StreamExt};
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use uuid::Uuid;

const SECRET: &str = "bench-secret-bench-secret-bench-secret-01";
const SERVICE_TOKEN: &str = "bench-service-token-bench-service-token-01";

struct Args {
    sockets: usize,
    users: usize,
    rate: u64,
    secs: u64,
    /// Which phases run: steady, rates, route, alone, storm (all by default).
    phases: Vec<String>,
}

impl Args {
    fn runs(&self, phase: &str) -> bool {
        self.phases.iter().any(|p| p == phase)
    }
}

fn args() -> Args {
    let mut a = Args {
        sockets: 10_000,
        users: 1_000,
        rate: 1_000,
        secs: 20,
        phases: ["steady", "rates", "route", "alone", "storm"]
            .map(String::from)
            .to_vec(),
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < argv.len() {
        let value = || argv.get(i + 1).and_then(|v| v.parse::<u64>().ok());
        match argv[i].as_str() {
            "--sockets" => a.sockets = value().expect("--sockets N") as usize,
            "--users" => a.users = value().expect("--users N") as usize,
            "--rate" => a.rate = value().expect("--rate N"),
            "--secs" => a.secs = value().expect("--secs N"),
            "--phases" => {
                let list = argv.get(i + 1).expect("--phases steady,rates,route,alone,storm");
                a.phases = list.split(',').map(|p| p.trim().to_string()).collect();
            }
            _ => {
                i += 1;
                continue;
            }
        }
        i += 2;
    }
    a
}

fn now_us() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

// ---------------------------------------------------------------- CPU, RSS

fn ticks_of(pid: &str) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let Some(rest) = stat.rsplit(')').next() else { return 0 };
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime, stime are fields 14 and 15 (1-based), 12 and 13 after ")" and state.
    f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
}

fn comm_of(pid: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// CPU ticks (1/100 s) of the daemon, this process, Postgres and Redis.
#[derive(Clone, Copy, Default)]
struct Cpu {
    daemon: u64,
    bench: u64,
    postgres: u64,
    redis: u64,
    at: Option<Instant>,
}

fn cpu(daemon: u32) -> Cpu {
    let mut c = Cpu {
        daemon: ticks_of(&daemon.to_string()),
        bench: ticks_of("self"),
        at: Some(Instant::now()),
        ..Cpu::default()
    };
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if !name.bytes().all(|b| b.is_ascii_digit()) {
                continue;
            }
            let comm = comm_of(&name);
            if comm.starts_with("postgres") {
                c.postgres += ticks_of(&name);
            } else if comm.starts_with("redis-server") {
                c.redis += ticks_of(&name);
            }
        }
    }
    c
}

/// CPU seconds per second since `before`: daemon, bench, postgres, redis.
fn cpu_since(before: Cpu, daemon: u32) -> String {
    let now = cpu(daemon);
    let secs = before.at.map(|t| t.elapsed().as_secs_f64()).unwrap_or(1.0).max(0.001);
    let r = |a: u64, b: u64| a.saturating_sub(b) as f64 / 100.0 / secs;
    format!(
        "{:.2} {:.2} {:.2} {:.2}",
        r(now.daemon, before.daemon),
        r(now.bench, before.bench),
        r(now.postgres, before.postgres),
        r(now.redis, before.redis)
    )
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

// ---------------------------------------------------------------- latency

/// Arrival latencies: 1 µs buckets up to 100 ms, then 1 ms buckets up to 60 s.
struct Hist {
    buckets: Vec<AtomicU64>,
}

const FINE: u64 = 100_000;

impl Hist {
    fn new() -> Self {
        Hist {
            buckets: (0..FINE + 60_000).map(|_| AtomicU64::new(0)).collect(),
        }
    }
    fn record(&self, us: i64) {
        let us = us.max(0) as u64;
        let i = if us < FINE {
            us
        } else {
            (FINE + (us - FINE) / 1000).min(FINE + 59_999)
        };
        self.buckets[i as usize].fetch_add(1, Ordering::Relaxed);
    }
    fn reset(&self) {
        for b in &self.buckets {
            b.store(0, Ordering::Relaxed);
        }
    }
    fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).sum()
    }
    /// The q-quantile in milliseconds.
    fn quantile_ms(&self, q: f64) -> f64 {
        let total = self.count();
        if total == 0 {
            return f64::NAN;
        }
        let want = ((total as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, b) in self.buckets.iter().enumerate() {
            seen += b.load(Ordering::Relaxed);
            if seen >= want {
                let i = i as u64;
                let us = if i < FINE { i } else { FINE + (i - FINE) * 1000 };
                return us as f64 / 1000.0;
            }
        }
        f64::NAN
    }
    fn max_ms(&self) -> f64 {
        for (i, b) in self.buckets.iter().enumerate().rev() {
            if b.load(Ordering::Relaxed) > 0 {
                let i = i as u64;
                let us = if i < FINE { i } else { FINE + (i - FINE) * 1000 };
                return us as f64 / 1000.0;
            }
        }
        f64::NAN
    }
}

// ---------------------------------------------------------------- sockets

#[derive(Deserialize)]
struct Incoming<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    #[serde(default)]
    job_id: Option<&'a str>,
    #[serde(default)]
    seq: Option<i64>,
    #[serde(default)]
    details: Option<Details>,
}

#[derive(Deserialize)]
struct Details {
    #[serde(default)]
    t: Option<i64>,
}

#[derive(Default)]
struct Totals {
    deliveries: AtomicU64,
    /// Events a socket saw a seq gap before (not made good by a later resume).
    gaps: AtomicU64,
    duplicates: AtomicU64,
    /// The same for the fan-out-alone events (not in Postgres: a resume cannot bring them).
    alone_gaps: AtomicU64,
    alone_duplicates: AtomicU64,
    resyncs: AtomicU64,
    /// Events that arrived after a later one of their job (a replay
    /// bringing what a socket had not seen when live events overtook it).
    late: AtomicU64,
    resumed: AtomicUsize,
    emit_errors: AtomicU64,
    open: AtomicUsize,
    refused: AtomicU64,
}

struct Shared {
    hist: Hist,
    totals: Totals,
    /// Resume round trips in the storm (reconnect to `resumed`), µs.
    storm: Hist,
    /// From an event's creation to its reporter's return (recorded in
    /// Postgres and published): the write path's share of the latency.
    written: Hist,
}

/// What the socket tasks are told.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Ctl {
    /// Drop the connection now, reconnect and resume.
    Drop,
    Stop,
}

type Stream = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(url: &str) -> Result<Stream, String> {
    // A small read buffer, as the daemon's own: tungstenite's default (128
    // KiB) is zeroed on every read, which cost this client more CPU than
    // everything else it does (a fifth of the machine at 100,000 frames/s),
    // CPU the daemon then did not have.
    let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default().read_buffer_size(4096);
    let (ws, _) = tokio_tungstenite::connect_async_with_config(url, Some(config), true)
        .await
        .map_err(|e| e.to_string())?;
    Ok(ws)
}

/// One socket's life: connect, ping (so live events flow at once), count
/// events and check their order; on `Drop`, reconnect and resume.
async fn socket(
    url: String,
    jobs: [String; 2],
    shared: Arc<Shared>,
    mut ctl: mpsc::Receiver<Ctl>,
    ready: tokio::sync::mpsc::Sender<()>,
    permit: tokio::sync::OwnedSemaphorePermit,
) -> HashMap<String, std::collections::HashSet<i64>> {
    // Its user's jobs start at seq 0: every event from 1 on must arrive.
    let mut last: HashMap<String, i64> = jobs.iter().map(|j| (j.clone(), 0)).collect();
    let mut received: HashMap<String, std::collections::HashSet<i64>> =
        jobs.into_iter().map(|j| (j, Default::default())).collect();
    let mut permit = Some(permit);
    let mut ws = loop {
        match connect(&url).await {
            Ok(ws) => break ws,
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    let _ = ws.send(Message::Text(r#"{"type":"ping"}"#.into())).await;
    let mut announced = false;
    let mut dropped_at: Option<Instant> = None;
    loop {
        tokio::select! {
            order = ctl.recv() => {
                let Some(order) = order else { return received };
                match order {
                    Ctl::Stop => { let _ = ws.close(None).await; return received; }
                    Ctl::Drop => {
                        // Abrupt: the TCP connection goes without a close frame.
                        drop(ws);
                        shared.totals.open.fetch_sub(1, Ordering::Relaxed);
                        let started = Instant::now();
                        ws = loop {
                            match connect(&url).await {
                                Ok(ws) => break ws,
                                Err(_) => {
                                    shared.totals.refused.fetch_add(1, Ordering::Relaxed);
                                    tokio::time::sleep(Duration::from_millis(50)).await
                                }
                            }
                        };
                        shared.totals.open.fetch_add(1, Ordering::Relaxed);
                        let after: HashMap<&str, i64> = last.iter().map(|(k, v)| (k.as_str(), *v)).collect();
                        let resume = serde_json::json!({"type": "resume", "after": after}).to_string();
                        let _ = ws.send(Message::Text(resume.into())).await;
                        dropped_at = Some(started);
                    }
                }
            }
            msg = ws.next() => {
                let text = match msg {
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                        // Closed by the server (too slow, restarted): reconnect and resume.
                        shared.totals.open.fetch_sub(1, Ordering::Relaxed);
                        ws = loop {
                            match connect(&url).await {
                                Ok(ws) => break ws,
                                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                            }
                        };
                        shared.totals.open.fetch_add(1, Ordering::Relaxed);
                        let after: HashMap<&str, i64> = last.iter().map(|(k, v)| (k.as_str(), *v)).collect();
                        let resume = serde_json::json!({"type": "resume", "after": after}).to_string();
                        let _ = ws.send(Message::Text(resume.into())).await;
                        continue;
                    }
                    Some(Ok(_)) => continue,
                };
                let Ok(m) = serde_json::from_str::<Incoming>(text.as_str()) else { continue };
                match m.kind {
                    "pong" => {
                        if !announced {
                            announced = true;
                            shared.totals.open.fetch_add(1, Ordering::Relaxed);
                            drop(permit.take());
                            let _ = ready.send(()).await;
                        }
                    }
                    "resumed" => {
                        if let Some(t) = dropped_at.take() {
                            shared.storm.record(t.elapsed().as_micros() as i64);
                            shared.totals.resumed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    "resync" => {
                        shared.totals.resyncs.fetch_add(1, Ordering::Relaxed);
                        let after: HashMap<&str, i64> = last.iter().map(|(k, v)| (k.as_str(), *v)).collect();
                        let resume = serde_json::json!({"type": "resume", "after": after}).to_string();
                        let _ = ws.send(Message::Text(resume.into())).await;
                    }
                    _ => {
                        let (Some(job), Some(seq)) = (m.job_id, m.seq) else { continue };
                        shared.totals.deliveries.fetch_add(1, Ordering::Relaxed);
                        if let Some(t) = m.details.and_then(|d| d.t) {
                            shared.hist.record(now_us() - t);
                        }
                        let alone = job.starts_with("alone:");
                        let Some(l) = last.get_mut(job) else { continue };
                        let (gaps, dups) = if alone {
                            (&shared.totals.alone_gaps, &shared.totals.alone_duplicates)
                        } else {
                            (&shared.totals.gaps, &shared.totals.duplicates)
                        };
                        if !received.get_mut(job).is_some_and(|r| r.insert(seq)) {
                            dups.fetch_add(1, Ordering::Relaxed);
                        } else if seq < *l {
                            shared.totals.late.fetch_add(1, Ordering::Relaxed);
                        } else {
                            if seq > *l + 1 {
                                gaps.fetch_add((seq - *l - 1) as u64, Ordering::Relaxed);
                            }
                            *l = seq;
                        }
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------- daemon

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

fn start_daemon(tag: &str, per_user: usize) -> Daemon {
    use std::io::BufRead;
    let db = format!("dl_bench_fanout_{tag}");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    // DOCULEARN_BENCH_EXE: the daemon of another build (to measure a figure before a change).
    let exe = std::env::var_os("DOCULEARN_BENCH_EXE").unwrap_or_else(|| env!("CARGO_BIN_EXE_doculearn").into());
    let mut cmd = Command::new(exe);
    cmd.args(["serve", "--role", "api"]);
    for (k, _) in std::env::vars() {
        if k.starts_with("DOCULEARN_") {
            cmd.env_remove(k);
        }
    }
    let mut child = cmd
        .env("DOCULEARN_AUTH__JWT_SECRET", SECRET)
        .env("DOCULEARN_AUTH__SERVICE_TOKEN", SERVICE_TOKEN)
        .env(
            "DOCULEARN_DATABASE_URL",
            format!("postgres://postgres@127.0.0.1:5432/{db}"),
        )
        .env("DOCULEARN_QUEUE__NAME", format!("bench:{tag}:queue"))
        .env("DOCULEARN_PROGRESS__CHANNEL", format!("bench:{tag}:progress"))
        .env("DOCULEARN_HTTP__LISTEN", "127.0.0.1:0")
        .env("DOCULEARN_EMBEDDING__PROVIDER", "hash")
        .env(
            "DOCULEARN_EMBEDDING__MODEL_DIR",
            root.join(".local/models/all-MiniLM-L6-v2"),
        )
        .env("DOCULEARN_EMBEDDING__OPENVINO_DIR", root.join(".local/openvino"))
        .env("DOCULEARN_WEBSOCKET__MAX_SOCKETS_PER_USER", per_user.to_string())
        // Intermediate events of one job closer than 1/4 s are coalesced by
        // default (the newest goes out); every event is counted here, so
        // none is coalesced (a gap of 0).
        .env("DOCULEARN_WEBSOCKET__MAX_EVENTS_PER_JOB_PER_SEC", u32::MAX.to_string())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start daemon");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .trim_start_matches("doculearn listening on http://")
        .to_string();
    Daemon { child, addr, db }
}

// ---------------------------------------------------------------- events

struct Jobs {
    users: Vec<Uuid>,
    job_ids: Vec<String>,
}

/// Emitters: one `Reporter` per job, `rate` events a second in all, spread
/// evenly; each keeps its own schedule (a late one catches up, so the
/// achieved rate shows whether the write path kept up). Returns events sent.
async fn emit_for(
    sink: EventSink,
    jobs: Arc<Jobs>,
    shared: Arc<Shared>,
    rate: u64,
    secs: f64,
    progress_base: f64,
) -> u64 {
    let n = jobs.job_ids.len();
    let period = Duration::from_secs_f64(n as f64 / rate as f64);
    let start = tokio::time::Instant::now() + Duration::from_millis(20);
    let end = start + Duration::from_secs_f64(secs);
    let sent = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let sink = sink.clone();
        let jobs = jobs.clone();
        let sent = sent.clone();
        let shared = shared.clone();
        tasks.push(tokio::spawn(async move {
            let meta = JobMeta {
                job_id: jobs.job_ids[i].clone(),
                user_id: jobs.users[i],
                document_id: None,
                batch_id: None,
                document_name: None,
            };
            let mut reporter = Reporter::new(sink, meta, 1, Duration::ZERO);
            let offset = period.mul_f64(i as f64 / n as f64);
            let mut k: u32 = 0;
            loop {
                let at = start + offset + period * k;
                if at >= end {
                    break;
                }
                tokio::time::sleep_until(at).await;
                let t = now_us();
                let details = serde_json::json!({ "t": t, "chunk": k });
                let p = progress_base + 0.0001 * (k % 100) as f64;
                if let Err(e) = reporter
                    .progress(Stage::Embedding, p, format!("Embedding chunk {k}"), details)
                    .await
                {
                    if shared.totals.emit_errors.fetch_add(1, Ordering::Relaxed) == 0 {
                        println!("  worker: an event was not recorded: {e}");
                    }
                    break;
                }
                shared.written.record(now_us() - t);
                sent.fetch_add(1, Ordering::Relaxed);
                k += 1;
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    sent.load(Ordering::Relaxed)
}

/// Numbered events straight to Redis (no Postgres): the socket side alone.
async fn publish_alone(publisher: &Publisher, users: &[Uuid], seqs: &mut [i64], rate: u64, secs: f64) -> u64 {
    let tick = Duration::from_millis(2);
    let per_tick = (rate as f64 * tick.as_secs_f64()).round().max(1.0) as usize;
    let start = tokio::time::Instant::now();
    let mut next = start;
    let mut sent = 0u64;
    let mut cursor = 0usize;
    while start.elapsed().as_secs_f64() < secs {
        let mut batch: Vec<(Uuid, ProgressEvent)> = Vec::with_capacity(per_tick);
        for _ in 0..per_tick {
            let u = cursor % users.len();
            cursor += 1;
            seqs[u] += 1;
            batch.push((
                users[u],
                ProgressEvent {
                    kind: doculearn::domain::EventType::JobProgress,
                    job_id: format!("alone:{u}"),
                    document_id: None,
                    batch_id: None,
                    stage: Stage::Embedding,
                    progress: 0.5,
                    message: format!("Embedding chunk {}", seqs[u]),
                    details: serde_json::json!({ "t": now_us(), "chunk": seqs[u] }),
                    error: None,
                    seq: seqs[u],
                    attempt: 1,
                    timestamp: chrono::Utc::now(),
                    document_name: None,
                },
            ));
        }
        let refs: Vec<(Uuid, &ProgressEvent)> = batch.iter().map(|(u, e)| (*u, e)).collect();
        publisher.publish_many(&refs).await;
        sent += batch.len() as u64;
        next += tick;
        tokio::time::sleep_until(next).await;
    }
    sent
}

/// `POST /api/v1/jobs/progress` (an external worker's route) as fast as
/// `clients` callers get answers, each for its own share of the jobs.
async fn post_external(addr: &str, jobs: &Arc<Jobs>, clients: usize, secs: f64, progress_base: f64) -> u64 {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(clients)
        .build()
        .unwrap();
    let url = format!("http://{addr}/api/v1/jobs/progress");
    let end = Instant::now() + Duration::from_secs_f64(secs);
    let sent = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (http, url, jobs, sent) = (http.clone(), url.clone(), jobs.clone(), sent.clone());
        tasks.push(tokio::spawn(async move {
            let mine: Vec<usize> = (c..jobs.job_ids.len()).step_by(clients).collect();
            let mut k = 0usize;
            while Instant::now() < end && !mine.is_empty() {
                let i = mine[k % mine.len()];
                let body = serde_json::json!({
                    "job_id": jobs.job_ids[i],
                    "stage": "embedding",
                    "progress": progress_base,
                    "message": format!("Embedding chunk {k}"),
                    "details": { "t": now_us(), "chunk": k },
                });
                let ok = http
                    .post(&url)
                    .bearer_auth(SERVICE_TOKEN)
                    .json(&body)
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success());
                if ok {
                    sent.fetch_add(1, Ordering::Relaxed);
                }
                k += 1;
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    sent.load(Ordering::Relaxed)
}

/// Waits until what is still on its way has arrived (deliveries stop
/// growing for half a second; a minute at most), so one phase's backlog is
/// not counted in the next.
async fn settle(shared: &Shared) {
    let started = Instant::now();
    let mut seen = shared.totals.deliveries.load(Ordering::Relaxed);
    while started.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = shared.totals.deliveries.load(Ordering::Relaxed);
        if now == seen {
            return;
        }
        seen = now;
    }
}

// ---------------------------------------------------------------- main

fn main() {
    let a = args();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let per_user = a.sockets.div_ceil(a.users);
    let tag = format!("{:x}", std::process::id());
    let daemon = start_daemon(&tag, per_user);
    let pid = daemon.child.id();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // The worker (reporters and the progress writer) on threads of its own,
    // as it would be in its own process: not queued behind 10,000 socket
    // tasks in this runtime.
    let worker = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("worker")
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run(a, daemon, pid, tag, worker.handle().clone()));
}

async fn run(a: Args, daemon: Daemon, pid: u32, tag: String, worker: tokio::runtime::Handle) {
    let db_url = format!("postgres://postgres@127.0.0.1:5432/{}", daemon.db);
    let pool = doculearn::db::connect(&db_url, 4, false).await.expect("database");
    let channel = format!("bench:{tag}:progress");
    let redis = redis::aio::ConnectionManager::new(redis::Client::open("redis://127.0.0.1:6379/0").unwrap())
        .await
        .expect("redis");
    let publisher = Publisher::new(redis, channel.clone());
    let sink = {
        let db_url = db_url.clone();
        worker
            .spawn(async move {
                let pool = doculearn::db::connect(&db_url, 4, false).await.expect("database");
                let redis =
                    redis::aio::ConnectionManager::new(redis::Client::open("redis://127.0.0.1:6379/0").unwrap())
                        .await
                        .expect("redis");
                EventSink::new(pool, Publisher::new(redis, channel))
            })
            .await
            .unwrap()
    };
    let keys = doculearn::http::auth::AuthKeys::hs256(SECRET, "doculearn", "doculearn");

    let users: Vec<Uuid> = (0..a.users).map(|_| Uuid::new_v4()).collect();
    let job_ids: Vec<String> = (0..a.users).map(|i| format!("fanout:{i}")).collect();
    sqlx::query(
        "INSERT INTO job_progress (job_id, user_id, stage, progress, attempt, started_at) \
         SELECT j, u, 'embedding', 0, 1, now() FROM unnest($1::text[], $2::uuid[]) AS x(j, u)",
    )
    .bind(&job_ids)
    .bind(&users)
    .execute(&pool)
    .await
    .expect("job rows");
    // As a running deployment's tables would be: with statistics.
    sqlx::query("ANALYZE job_progress")
        .execute(&pool)
        .await
        .expect("analyze");
    let jobs = Arc::new(Jobs {
        users: users.clone(),
        job_ids: job_ids.clone(),
    });

    println!(
        "fan-out bench: {} sockets, {} users ({} each), {} CPUs, daemon pid {pid} at {}",
        a.sockets,
        a.users,
        a.sockets.div_ceil(a.users),
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        daemon.addr
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_before = rss_kib(pid);

    // ---- open
    let shared = Arc::new(Shared {
        hist: Hist::new(),
        totals: Totals::default(),
        storm: Hist::new(),
        written: Hist::new(),
    });
    // One control channel per socket (a shared watch would put every
    // socket's wake-up behind one lock).
    let mut controls: Vec<mpsc::Sender<Ctl>> = Vec::with_capacity(a.sockets);
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<()>(a.sockets.max(1));
    let opening = Instant::now();
    let gate = Arc::new(tokio::sync::Semaphore::new(256));
    let mut tasks = Vec::with_capacity(a.sockets);
    for s in 0..a.sockets {
        let u = s % a.users;
        let token = keys.mint(users[u], false, 3600);
        let url = format!("ws://{}/api/v1/ws/{}?token={token}", daemon.addr, users[u]);
        let shared = shared.clone();
        let (ctl_tx, ctl) = mpsc::channel(2);
        controls.push(ctl_tx);
        let ready = ready_tx.clone();
        let permit = gate.clone().acquire_owned().await.unwrap();
        let jobs = [format!("fanout:{u}"), format!("alone:{u}")];
        tasks.push((u, tokio::spawn(socket(url, jobs, shared, ctl, ready, permit))));
    }
    drop(ready_tx);
    for _ in 0..a.sockets {
        if tokio::time::timeout(Duration::from_secs(60), ready_rx.recv())
            .await
            .ok()
            .flatten()
            .is_none()
        {
            println!(
                "open: only {} sockets opened within a minute",
                shared.totals.open.load(Ordering::Relaxed)
            );
            break;
        }
    }
    let open_secs = opening.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_after = rss_kib(pid);
    let opened = shared.totals.open.load(Ordering::Relaxed);
    println!(
        "open: {opened} sockets in {open_secs:.1} s; daemon RSS {:.1} MiB before, {:.1} MiB after: {:.1} KiB per socket",
        rss_before as f64 / 1024.0,
        rss_after as f64 / 1024.0,
        rss_after.saturating_sub(rss_before) as f64 / opened.max(1) as f64
    );
    println!();
    println!(
        "{:<26} {:>9} {:>12} {:>7} {:>7} {:>8} {:>13} {:>5}   CPU s/s: daemon bench postgres redis",
        "phase", "events/s", "deliveries/s", "p50 ms", "p99 ms", "max ms", "write p50/p99", "gaps"
    );
    let gaps_seen = AtomicU64::new(0);
    let row = |name: &str, events: u64, secs: f64, deliveries: u64, shared: &Shared, cpu: String| {
        let gaps = shared.totals.gaps.load(Ordering::Relaxed) + shared.totals.alone_gaps.load(Ordering::Relaxed);
        let lost = gaps - gaps_seen.swap(gaps, Ordering::Relaxed);
        println!(
            "{:<26} {:>9.0} {:>12.0} {:>7.2} {:>7.2} {:>8.1} {:>6.2}/{:<6.2} {lost:>5}   {cpu}",
            name,
            events as f64 / secs,
            deliveries as f64 / secs,
            shared.hist.quantile_ms(0.5),
            shared.hist.quantile_ms(0.99),
            shared.hist.max_ms(),
            shared.written.quantile_ms(0.5),
            shared.written.quantile_ms(0.99),
        )
    };

    // ---- steady and higher rates, full path
    let mut progress_base = 0.1;
    let mut rates = Vec::new();
    if a.runs("steady") {
        rates.push(a.rate);
    }
    if a.runs("rates") {
        rates.extend([2_000u64, 5_000, 10_000, 20_000].into_iter().filter(|r| *r > a.rate));
    }
    for (i, rate) in rates.iter().copied().enumerate() {
        let i = if a.runs("steady") { i } else { i + 1 };
        let secs = if i == 0 {
            a.secs as f64
        } else {
            (a.secs as f64 / 2.0).max(5.0)
        };
        shared.hist.reset();
        shared.written.reset();
        let d0 = shared.totals.deliveries.load(Ordering::Relaxed);
        let c0 = cpu(pid);
        let t0 = Instant::now();
        let sent = worker
            .spawn(emit_for(
                sink.clone(),
                jobs.clone(),
                shared.clone(),
                rate,
                secs,
                progress_base,
            ))
            .await
            .unwrap_or(0);
        // Arrivals of the last events.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let took = t0.elapsed().as_secs_f64() - 0.3;
        let cpu_s = cpu_since(c0, pid);
        let d = shared.totals.deliveries.load(Ordering::Relaxed) - d0;
        let name = if i == 0 {
            format!("steady {rate}/s, full path")
        } else {
            format!("{rate}/s, full path")
        };
        row(&name, sent, took, d, &shared, cpu_s);
        settle(&shared).await;
        progress_base += 0.01;
        let kept = sent as f64 / took >= 0.8 * rate as f64;
        if !kept || shared.hist.quantile_ms(0.99) > 1000.0 {
            println!("  (the worker could not keep {rate}/s, or p99 passed a second: no higher rates)");
            break;
        }
    }

    // ---- an external worker's route
    let route_callers: &[usize] = if a.runs("route") { &[16, 64] } else { &[] };
    for clients in route_callers.iter().copied() {
        shared.hist.reset();
        shared.written.reset();
        let d0 = shared.totals.deliveries.load(Ordering::Relaxed);
        let c0 = cpu(pid);
        let t0 = Instant::now();
        let secs = (a.secs as f64 / 2.0).max(5.0);
        let sent = post_external(&daemon.addr, &jobs, clients, secs, progress_base).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let took = t0.elapsed().as_secs_f64() - 0.3;
        let cpu_s = cpu_since(c0, pid);
        let d = shared.totals.deliveries.load(Ordering::Relaxed) - d0;
        row(
            &format!("POST progress, {clients} callers"),
            sent,
            took,
            d,
            &shared,
            cpu_s,
        );
        settle(&shared).await;
        progress_base += 0.01;
    }

    // ---- fan-out alone
    let mut seqs = vec![0i64; a.users];
    let alone_rates: &[u64] = if a.runs("alone") {
        &[5_000, 10_000, 20_000, 40_000]
    } else {
        &[]
    };
    for rate in alone_rates.iter().copied() {
        shared.hist.reset();
        shared.written.reset();
        let d0 = shared.totals.deliveries.load(Ordering::Relaxed);
        let r0 = shared.totals.resyncs.load(Ordering::Relaxed);
        let c0 = cpu(pid);
        let t0 = Instant::now();
        let secs = (a.secs as f64 / 2.0).max(5.0);
        let sent = publish_alone(&publisher, &users, &mut seqs, rate, secs).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let took = t0.elapsed().as_secs_f64() - 0.3;
        let cpu_s = cpu_since(c0, pid);
        let d = shared.totals.deliveries.load(Ordering::Relaxed) - d0;
        row(&format!("{rate}/s, fan-out alone"), sent, took, d, &shared, cpu_s);
        settle(&shared).await;
        let resyncs = shared.totals.resyncs.load(Ordering::Relaxed) - r0;
        if resyncs > 0 || shared.hist.quantile_ms(0.99) > 1000.0 {
            println!("  ({resyncs} resyncs: the daemon dropped events it could not deliver in time; no higher rates)");
            break;
        }
    }
    let alone_gaps = shared.totals.alone_gaps.load(Ordering::Relaxed);
    let alone_dups = shared.totals.alone_duplicates.load(Ordering::Relaxed);
    if a.runs("alone") {
        println!(
            "  fan-out alone: {alone_gaps} events not delivered (not in Postgres, so no resume brings them), {alone_dups} twice"
        );
    }

    // ---- reconnect storm
    if a.runs("storm") {
        shared.hist.reset();
        shared.storm.reset();
        shared.totals.resumed.store(0, Ordering::Relaxed);
        let refused0 = shared.totals.refused.load(Ordering::Relaxed);
        let storm_secs = 12.0;
        let rate = a.rate;
        let emitter = worker.spawn(emit_for(
            sink.clone(),
            jobs.clone(),
            shared.clone(),
            rate,
            storm_secs,
            progress_base,
        ));
        let c0 = cpu(pid);
        tokio::time::sleep(Duration::from_secs(3)).await;
        let dropped = Instant::now();
        let rss_pre_storm = rss_kib(pid);
        for c in &controls {
            let _ = c.try_send(Ctl::Drop);
        }
        let mut all_back = None;
        let mut peak_rss = rss_pre_storm;
        while dropped.elapsed() < Duration::from_secs(60) {
            peak_rss = peak_rss.max(rss_kib(pid));
            if shared.totals.resumed.load(Ordering::Relaxed) >= opened {
                all_back = Some(dropped.elapsed());
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let sent = emitter.await.unwrap_or(0);
        tokio::time::sleep(Duration::from_secs(2)).await;
        let cpu_s = cpu_since(c0, pid);
        let resumed = shared.totals.resumed.load(Ordering::Relaxed);
        match all_back {
        Some(t) => println!(
            "storm: {opened} sockets dropped at once with {rate} events/s flowing; all {resumed} reconnected and resumed in {:.2} s \
             (each: p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms); {} connection attempts refused and retried; daemon RSS peak {:.1} MiB",
            t.as_secs_f64(),
            shared.storm.quantile_ms(0.5),
            shared.storm.quantile_ms(0.99),
            shared.storm.max_ms(),
            shared.totals.refused.load(Ordering::Relaxed) - refused0,
            peak_rss as f64 / 1024.0
        ),
        None => println!("storm: only {resumed} of {opened} sockets resumed within a minute"),
    }
        println!(
        "storm events: {sent} in {storm_secs:.0} s, latency of live events p50 {:.2} ms, p99 {:.2} ms, max {:.0} ms; CPU s/s {cpu_s}",
        shared.hist.quantile_ms(0.5),
        shared.hist.quantile_ms(0.99),
        shared.hist.max_ms()
    );
    }

    // ---- every socket has every event of its job, once
    // (after what is still on its way has arrived: deliveries stop growing)
    settle(&shared).await;
    let finals: Vec<(String, i64)> =
        sqlx::query_as("SELECT job_id, seq FROM job_progress WHERE job_id LIKE 'fanout:%'")
            .fetch_all(&pool)
            .await
            .unwrap_or_default();
    let total_events: i64 = finals.iter().map(|(_, s)| *s).sum();
    for c in &controls {
        let _ = c.try_send(Ctl::Stop);
    }
    let final_of: HashMap<String, i64> = finals.into_iter().collect();
    let mut tail_lost = 0i64;
    let mut alone_tail = 0i64;
    for (u, t) in tasks {
        let Ok(Ok(got)) = tokio::time::timeout(Duration::from_secs(5), t).await else {
            continue;
        };
        let job = format!("fanout:{u}");
        let have = |job: &str, upto: i64| {
            got.get(job)
                .map_or(0, |r| r.iter().filter(|s| **s >= 1 && **s <= upto).count() as i64)
        };
        let upto = final_of.get(&job).copied().unwrap_or(0);
        tail_lost += upto - have(&job, upto);
        alone_tail += seqs[u] - have(&format!("alone:{u}"), seqs[u]);
    }
    let dups = shared.totals.duplicates.load(Ordering::Relaxed);
    let resyncs = shared.totals.resyncs.load(Ordering::Relaxed);
    let late = shared.totals.late.load(Ordering::Relaxed);
    println!(
        "full path in all: {total_events} events recorded, {} deliveries; every socket, every event of its user's job: \
         lost {tail_lost}, duplicated {dups}, late (after a newer one) {late}; resyncs {resyncs}; \
         fan-out alone (not in Postgres): lost {alone_tail}",
        shared.totals.deliveries.load(Ordering::Relaxed),
    );
    if resyncs > 0 {
        println!(
            "  (the daemon shed events under overload and told the sockets to resync; a socket resumes after \
             its newest seq, as the UI does after reloading its documents, so events shed before it count \
             as lost above: see the gaps column for the phase)"
        );
    }
}
