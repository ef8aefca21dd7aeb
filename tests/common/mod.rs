//! Test harness: runs the real `doculearn` binary against the real
//! PostgreSQL (a fresh database per daemon) and Redis (a fresh queue name and
//! progress channel per daemon), and talks to it over HTTP and WebSocket
//! exactly as a client would.

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;
use uuid::Uuid;

pub const SECRET: &str = "test-secret-test-secret-test-secret-0001";
pub const PG_ADMIN: &str = "postgres://postgres@127.0.0.1:5432/postgres";

pub fn corpus() -> PathBuf {
    let dir = std::env::var("DOCULEARN_CORPUS")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus"));
    assert!(
        dir.join("manifest.tsv").exists(),
        "the corpus is missing at {} (set DOCULEARN_CORPUS)",
        dir.display()
    );
    dir
}

/// Whether this CPU has bf16 arithmetic (AVX-512 BF16 or AMX), read from
/// /proc/cpuinfo: independent of what OpenVINO reports, which the code
/// under test goes by.
pub fn cpu_has_bf16() -> bool {
    std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("flags"))
        .any(|l| l.split_whitespace().any(|f| f == "avx512_bf16" || f == "amx_bf16"))
}

/// The engine the daemon runs by default on this CPU: OpenVINO in bf16
/// where the CPU has bf16 arithmetic, else in f32 (saying why at start-up).
pub fn default_engine() -> &'static str {
    if cpu_has_bf16() {
        "openvino-2026.4.1/bf16"
    } else {
        "openvino-2026.4.1/f32"
    }
}

/// A port nobody listens on right now (for a daemon or server that must
/// come back on the same port after a restart).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Every stage a successful job reports, in order.
pub const STAGES: [&str; 7] = [
    "queued",
    "downloading",
    "extracting",
    "chunking",
    "embedding",
    "storing",
    "completed",
];

pub fn corpus_file(name: &str) -> PathBuf {
    corpus().join(name)
}

#[path = "../support/corpus.rs"]
mod corpus_files;

/// Every corpus document, sorted.
pub fn corpus_documents() -> Vec<PathBuf> {
    corpus_files::documents(&corpus())
}

pub fn model_dir() -> PathBuf {
    std::env::var("DOCULEARN_MODEL_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join(".local/models/all-MiniLM-L6-v2"))
}

pub fn openvino_dir() -> PathBuf {
    std::env::var("DOCULEARN_OPENVINO_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join(".local/openvino"))
}

/// Options for one daemon.
#[derive(Clone)]
pub struct Opts {
    /// "local" (the real model) or "hash".
    pub provider: &'static str,
    pub env: Vec<(String, String)>,
    /// Extra arguments after `serve`.
    pub args: Vec<String>,
}

impl Default for Opts {
    fn default() -> Self {
        Opts {
            provider: "hash",
            env: Vec::new(),
            args: Vec::new(),
        }
    }
}

impl Opts {
    pub fn local() -> Self {
        Opts {
            provider: "local",
            env: Vec::new(),
            args: Vec::new(),
        }
    }
    pub fn arg(mut self, a: &str) -> Self {
        self.args.push(a.to_string());
        self
    }
    pub fn with(mut self, key: &str, value: impl ToString) -> Self {
        self.env.push((key.to_string(), value.to_string()));
        self
    }
}

/// A running daemon, with its own database and queue.
pub struct Daemon {
    pub addr: String,
    pub db_name: String,
    pub db_url: String,
    pub queue: String,
    pub channel: String,
    pub opts: Opts,
    pub log: PathBuf,
    child: Option<Child>,
    keep_db: bool,
}

fn test_name() -> String {
    std::thread::current()
        .name()
        .unwrap_or("test")
        .rsplit("::")
        .next()
        .unwrap_or("test")
        .to_string()
}

impl Daemon {
    pub async fn start(opts: Opts) -> Daemon {
        let tag = Uuid::new_v4().simple().to_string()[..12].to_string();
        let db_name = format!("dl_test_{tag}");
        let db_url = format!("postgres://postgres@127.0.0.1:5432/{db_name}");
        let mut d = Daemon {
            addr: String::new(),
            db_name,
            db_url,
            queue: format!("dltest:{tag}:queue"),
            channel: format!("dltest:{tag}:progress"),
            opts,
            log: PathBuf::new(),
            child: None,
            keep_db: std::env::var("KEEP_TEST_DB").is_ok(),
        };
        d.spawn();
        d
    }

    /// A second instance of the same deployment: same database, queue and
    /// channel, its own options and process.
    pub fn sibling(&self, opts: Opts) -> Daemon {
        let mut d = Daemon {
            addr: String::new(),
            db_name: self.db_name.clone(),
            db_url: self.db_url.clone(),
            queue: self.queue.clone(),
            channel: self.channel.clone(),
            opts,
            log: PathBuf::new(),
            child: None,
            // The first instance cleans up.
            keep_db: true,
        };
        d.spawn();
        d
    }

    /// The environment every daemon of this test shares.
    fn env(&self) -> Vec<(String, String)> {
        let mut env = vec![
            ("DOCULEARN_AUTH__JWT_SECRET".to_string(), SECRET.to_string()),
            ("DOCULEARN_DATABASE_URL".into(), self.db_url.clone()),
            ("DOCULEARN_DATABASE__MAX_CONNECTIONS".into(), "5".into()),
            ("DOCULEARN_QUEUE__NAME".into(), self.queue.clone()),
            ("DOCULEARN_PROGRESS__CHANNEL".into(), self.channel.clone()),
            ("DOCULEARN_HTTP__LISTEN".into(), "127.0.0.1:0".into()),
            ("DOCULEARN_EMBEDDING__PROVIDER".into(), self.opts.provider.into()),
            (
                "DOCULEARN_EMBEDDING__MODEL_DIR".into(),
                model_dir().display().to_string(),
            ),
            (
                "DOCULEARN_EMBEDDING__OPENVINO_DIR".into(),
                openvino_dir().display().to_string(),
            ),
            ("DOCULEARN_QUEUE__POLL_INTERVAL_MS".into(), "50".into()),
            ("DOCULEARN_QUEUE__SHUTDOWN_GRACE_SECS".into(), "3".into()),
        ];
        env.extend(self.opts.env.iter().cloned());
        env
    }

    /// Starts (or restarts) the daemon process and waits for its address.
    pub fn spawn(&mut self) {
        let log_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("daemon-logs");
        std::fs::create_dir_all(&log_dir).unwrap();
        self.log = log_dir.join(format!(
            "{}-{}-{}.log",
            test_name(),
            &self.db_name,
            Uuid::new_v4().simple()
        ));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        // DOCULEARN_TEST_EXE runs the daemon tests against another build
        // (to measure a figure before a change); normally this build's binary.
        let exe = std::env::var_os("DOCULEARN_TEST_EXE")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_doculearn")));
        let mut cmd = Command::new(exe);
        cmd.arg("serve")
            .args(&self.opts.args)
            .env_remove("RUST_LOG")
            .envs(self.env())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log));
        // Tests set only what they need; a stray DOCULEARN_* in the caller's shell must not leak in.
        for (k, _) in std::env::vars() {
            if k.starts_with("DOCULEARN_") && !self.env().iter().any(|(e, _)| e == &k) {
                cmd.env_remove(&k);
            }
        }
        let mut child = cmd.spawn().expect("start doculearn");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = tx.send(line);
            }
            for _ in lines {}
        });
        let line = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(l) => l,
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "daemon did not start; log:\n{}",
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
        };
        self.addr = line
            .strip_prefix("doculearn listening on http://")
            .unwrap_or_else(|| panic!("unexpected first line: {line}"))
            .to_string();
        self.child = Some(child);
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// SIGKILL, no shutdown.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for exit (up to `timeout`); returns the exit status.
    pub fn terminate(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let mut c = self.child.take()?;
        let _ = Command::new("kill").arg("-TERM").arg(c.id().to_string()).status();
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Ok(Some(status)) = c.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = c.kill();
        c.wait().ok()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The stored chunks of a document: content and page, in order.
    pub async fn chunks(&self, document_id: &str) -> Vec<(String, Option<i32>)> {
        let pool = self.db().await;
        sqlx::query_as("SELECT content, page FROM chunks WHERE document_id = $1::uuid ORDER BY chunk_index")
            .bind(document_id)
            .fetch_all(&pool)
            .await
            .unwrap()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn token(&self, user: Uuid) -> String {
        keys().mint(user, false, 3600)
    }

    pub fn admin_token(&self, user: Uuid) -> String {
        keys().mint(user, true, 3600)
    }

    pub async fn db(&self) -> sqlx::PgPool {
        sqlx::postgres::PgPoolOptions::new()
            .max_connections(2)
            .connect(&self.db_url)
            .await
            .expect("connect test db")
    }

    pub async fn redis(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open("redis://127.0.0.1:6379/0")
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }

    /// Uploads files (multipart) to `POST /api/v1/documents`.
    pub async fn upload(&self, token: &str, files: &[(&str, Vec<u8>)]) -> reqwest::Response {
        self.upload_at("/api/v1/documents", token, files).await
    }

    /// Posts files (multipart) to `path` (documents with a query, batches).
    pub async fn upload_at(&self, path: &str, token: &str, files: &[(&str, Vec<u8>)]) -> reqwest::Response {
        let mut form = reqwest::multipart::Form::new();
        for (name, bytes) in files {
            form = form.part(
                "file",
                reqwest::multipart::Part::bytes(bytes.clone()).file_name(name.to_string()),
            );
        }
        client()
            .post(self.url(path))
            .bearer_auth(token)
            .multipart(form)
            .send()
            .await
            .unwrap()
    }

    /// Uploads one file and returns `(document_id, job_id)`.
    pub async fn upload_one(&self, token: &str, name: &str, bytes: Vec<u8>) -> (String, String) {
        let resp = self.upload(token, &[(name, bytes)]).await;
        assert_eq!(resp.status(), 202, "upload of {name}");
        let v: Value = resp.json().await.unwrap();
        (
            v["document_id"].as_str().unwrap().to_string(),
            v["job_id"].as_str().unwrap().to_string(),
        )
    }

    /// Uploads a corpus file and waits until its job ended: (document id, job id, job).
    pub async fn process_corpus_file(&self, token: &str, name: &str, timeout: Duration) -> (String, String, Value) {
        let (document_id, job_id) = self
            .upload_one(token, name, std::fs::read(corpus_file(name)).unwrap())
            .await;
        let job = self.wait_job(token, &job_id, timeout).await;
        (document_id, job_id, job)
    }

    /// `GET /metrics` as text.
    pub async fn metrics_text(&self) -> String {
        client()
            .get(self.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// `POST /api/v1/jobs/progress` with the service token; the status.
    pub async fn external_progress(&self, service_token: &str, body: &Value) -> u16 {
        client()
            .post(self.url("/api/v1/jobs/progress"))
            .bearer_auth(service_token)
            .json(body)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    pub async fn get_json(&self, token: &str, path: &str) -> (u16, Value) {
        let r = client().get(self.url(path)).bearer_auth(token).send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn post_json(&self, token: &str, path: &str, body: &Value) -> (u16, Value) {
        let r = client()
            .post(self.url(path))
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn ws(&self, user: Uuid, token: &str) -> Ws {
        let url = format!("ws://{}/api/v1/ws/{}?token={}", self.addr, user, token);
        let (stream, _) = tokio_tungstenite::connect_async(url).await.expect("ws connect");
        Ws { stream }
    }

    /// Polls the job until it is completed or failed.
    /// Waits until the job is in `stage` (say, hanging there by an injected
    /// fault); returns the job.
    pub async fn wait_stage(&self, token: &str, job_id: &str, stage: &str, timeout: Duration) -> Value {
        let start = Instant::now();
        loop {
            let (_, job) = self.get_json(token, &format!("/api/v1/jobs/{job_id}")).await;
            if job["stage"] == stage {
                return job;
            }
            assert!(start.elapsed() < timeout, "job {job_id} never reached {stage}: {job}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn wait_job(&self, token: &str, job_id: &str, timeout: Duration) -> Value {
        let start = Instant::now();
        loop {
            let (status, job) = self.get_json(token, &format!("/api/v1/jobs/{job_id}")).await;
            if status == 200 && matches!(job["stage"].as_str(), Some("completed") | Some("failed")) {
                return job;
            }
            if start.elapsed() > timeout {
                panic!(
                    "job {job_id} did not end within {timeout:?}: {job}\nlog: {}",
                    self.log.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
        if !self.keep_db {
            let _ = Command::new("psql")
                .args(["-h", "127.0.0.1", "-U", "postgres", "-qc"])
                .arg(format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.db_name))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            let _ = Command::new("redis-cli")
                .args(["del", &self.queue, &format!("{}:health-check", self.queue)])
                .stdout(Stdio::null())
                .status();
        }
    }
}

pub fn keys() -> doculearn::http::auth::AuthKeys {
    doculearn::http::auth::AuthKeys::hs256(SECRET, "doculearn", "doculearn")
}

pub fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap()
}

pub struct Ws {
    pub stream: tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
}

impl Ws {
    pub async fn send_text(&mut self, text: &str) {
        self.stream.send(Message::Text(text.into())).await.unwrap();
    }

    /// Next text message, or `None` on close/timeout.
    pub async fn next_text(&mut self, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.stream.next()).await {
                Ok(Some(Ok(Message::Text(t)))) => return Some(t.to_string()),
                Ok(Some(Ok(Message::Close(_)))) | Ok(None) | Ok(Some(Err(_))) | Err(_) => return None,
                Ok(Some(Ok(_))) => continue,
            }
        }
    }

    /// Reads progress events until every job in `jobs` has a terminal event.
    /// Returns the events per job in arrival order.
    pub async fn collect_until_done(&mut self, jobs: &[String], timeout: Duration) -> HashMap<String, Vec<Value>> {
        let deadline = Instant::now() + timeout;
        let mut events: HashMap<String, Vec<Value>> = HashMap::new();
        let mut done = std::collections::HashSet::new();
        while done.len() < jobs.len() {
            let left = deadline.saturating_duration_since(Instant::now());
            let Some(text) = self.next_text(left).await else {
                panic!(
                    "socket ended or timed out with {}/{} jobs done; events so far: {:#?}",
                    done.len(),
                    jobs.len(),
                    events
                        .iter()
                        .map(|(k, v)| (k, v.last().map(|e| e["stage"].clone())))
                        .collect::<Vec<_>>()
                );
            };
            let Ok(v) = serde_json::from_str::<Value>(&text) else {
                continue;
            };
            let Some(job) = v["job_id"].as_str() else { continue };
            if !jobs.iter().any(|j| j == job) {
                continue;
            }
            if matches!(v["type"].as_str(), Some("job_completed") | Some("job_failed")) {
                done.insert(job.to_string());
            }
            events.entry(job.to_string()).or_default().push(v);
        }
        events
    }
}

pub async fn count(pool: &sqlx::PgPool, sql: &'static str, id: &str) -> i64 {
    sqlx::query_scalar::<_, i64>(sql)
        .bind(Uuid::parse_str(id).unwrap())
        .fetch_one(pool)
        .await
        .unwrap()
}

/// nginx running one of the shipped sites (`config/nginx/<site>`) in a
/// folder of its own, stopped however the test ends.
pub struct Nginx {
    pub port: u16,
    pub dir: PathBuf,
    child: Child,
}

impl Nginx {
    /// Starts nginx with the site file after `edit(site, port, dir)` (which
    /// points its upstream at the test's daemons); `listen 80`, the IPv6
    /// listen and the log folder are rewritten to the test's port and folder.
    pub fn start(site: &str, edit: impl FnOnce(String) -> String) -> Nginx {
        let dir = std::env::temp_dir().join(format!("dl-nginx-{}", Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let port = free_port();
        let text =
            std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("config/nginx").join(site)).unwrap();
        assert!(text.contains("listen 80;"), "{site} listens on port 80");
        let text = edit(text)
            .replace("listen 80;", &format!("listen 127.0.0.1:{port};"))
            .replace("listen [::]:80;", "")
            .replace("/var/log/nginx/", &format!("{}/", dir.display()));
        std::fs::write(dir.join("site.conf"), text).unwrap();
        let p = |n: &str| dir.join(n).display().to_string();
        let conf = format!(
            "daemon off;\npid {};\nerror_log {} info;\nevents {{ worker_connections 512; }}\nhttp {{\n  access_log {};\n  client_body_temp_path {};\n  proxy_temp_path {};\n  fastcgi_temp_path {};\n  uwsgi_temp_path {};\n  scgi_temp_path {};\n  include {};\n}}\n",
            p("nginx.pid"), p("error.log"), p("access.log"), p("body"), p("proxy"), p("fastcgi"), p("uwsgi"), p("scgi"), p("site.conf")
        );
        std::fs::write(dir.join("nginx.conf"), conf).unwrap();
        let child = Command::new("nginx")
            .args(["-c", &p("nginx.conf"), "-p", &dir.display().to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nginx (run scripts/test-tools.sh)");
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "nginx did not start: {}",
                std::fs::read_to_string(p("error.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Nginx { port, dir, child }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
