//! `doculearn ingest FILE...`: uploads files through a running daemon and
//! follows them on the progress socket, one bar per file, until each is
//! completed or failed; then one summary line per file. The socket is opened
//! before the first upload and every reconnect sends `resume` with the last
//! `seq` per job, so no event is lost; a slow poll of `GET /api/v1/jobs/{id}`
//! backs the socket up. A file the user already uploaded is not uploaded
//! again: it is reported as "already uploaded" with that document's state
//! and not waited for (`--on-duplicate replace` processes that document
//! again and follows it; `keep` makes a second document). Exit status: 0 if
//! every file completed (or was already uploaded), 1 if not.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use futures::{SinkExt, StreamExt};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

/// What `ingest` needs: the server, a token and the files.
pub struct IngestArgs {
    /// `http://host:port` (or https) of the daemon.
    pub server: String,
    pub token: String,
    pub files: Vec<PathBuf>,
    /// Give up on files not finished after this long.
    pub timeout: Duration,
    /// `existing`, `replace` or `keep` (the upload's `on_duplicate`).
    pub on_duplicate: String,
}

/// One file's fate.
struct Tracked {
    name: String,
    job_id: Option<String>,
    bar: ProgressBar,
    started: Instant,
    last_seq: i64,
    stage: String,
    outcome: Option<Outcome>,
}

enum Outcome {
    Completed {
        secs: f64,
        chunks: Option<i64>,
        warnings: Vec<String>,
    },
    Failed {
        reason: String,
    },
    /// The daemon already had these bytes: the existing document's state.
    AlreadyUploaded {
        document_id: String,
        status: String,
    },
}

/// What the daemon made of one upload.
enum Answer {
    /// A job to follow; events up to `after_seq` are an earlier run's.
    Queued { job_id: String, after_seq: i64 },
    /// The user's existing document with the same bytes.
    Duplicate { document_id: String, status: String },
}

const BACKOFF_START: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
const POLL_EVERY: Duration = Duration::from_secs(5);

/// The `sub` of a JWT (not verified: the server does that).
fn token_subject(token: &str) -> anyhow::Result<String> {
    use base64::Engine;
    let payload = token
        .split('.')
        .nth(1)
        .ok_or_else(|| anyhow!("the token is not a JWT (no payload part)"))?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .context("the token's payload is not base64url")?;
    let claims: Value = serde_json::from_slice(&bytes).context("the token's payload is not JSON")?;
    claims["sub"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| anyhow!("the token names no user (no `sub` claim)"))
}

fn ws_url(server: &str, user: &str) -> anyhow::Result<String> {
    let base = server.trim_end_matches('/');
    let rest = if let Some(r) = base.strip_prefix("https://") {
        format!("wss://{r}")
    } else if let Some(r) = base.strip_prefix("http://") {
        format!("ws://{r}")
    } else {
        bail!("--server must start with http:// or https:// (got “{server}”)");
    };
    Ok(format!("{rest}/api/v1/ws/{user}"))
}

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(url: &str, token: &str) -> anyhow::Result<Socket> {
    let mut req = url.into_client_request()?;
    req.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        format!("bearer, {token}")
            .parse()
            .context("the token has characters a header cannot carry")?,
    );
    let (socket, _) = tokio_tungstenite::connect_async(req)
        .await
        .with_context(|| format!("cannot open the progress socket at {url}"))?;
    Ok(socket)
}

fn style() -> ProgressStyle {
    ProgressStyle::with_template("{prefix:24!} [{bar:28}] {percent:>3}% {wide_msg}")
        .expect("a valid template")
        .progress_chars("=> ")
}

/// Plain lines when the output is not a terminal (logs, CI): one per stage.
fn plain_line(quiet_bars: bool, name: &str, stage: &str, message: &str) {
    if quiet_bars {
        eprintln!("{name}: {stage}: {message}");
    }
}

/// Runs the command; `Ok(true)` when every file completed.
pub async fn run(args: IngestArgs) -> anyhow::Result<bool> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    if args.files.is_empty() {
        bail!("name at least one file");
    }
    let user = token_subject(&args.token)?;
    let url = ws_url(&args.server, &user)?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(300))
        .build()
        .context("cannot build the HTTP client")?;

    let plain = !std::io::stderr().is_terminal();
    let multi = MultiProgress::with_draw_target(if plain {
        ProgressDrawTarget::hidden()
    } else {
        ProgressDrawTarget::stderr()
    });

    // The socket first, so events of the first upload are not missed.
    let mut socket = Some(connect(&url, &args.token).await?);

    let mut tracked: Vec<Tracked> = Vec::new();
    let mut by_job: HashMap<String, usize> = HashMap::new();
    for path in &args.files {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| path.display().to_string());
        let bar = multi.add(ProgressBar::new(100));
        bar.set_style(style());
        bar.set_prefix(name.clone());
        bar.set_message("uploading");
        let mut t = Tracked {
            name: name.clone(),
            job_id: None,
            bar,
            started: Instant::now(),
            last_seq: 0,
            stage: "uploading".into(),
            outcome: None,
        };
        match upload(&http, &args, path, &name).await {
            Ok(Answer::Queued { job_id, after_seq }) => {
                let how = if after_seq > 0 { "replacing" } else { "uploaded as" };
                plain_line(plain, &name, "queued", &format!("{how} {job_id}"));
                t.bar.set_message(format!("queued ({job_id})"));
                by_job.insert(job_id.clone(), tracked.len());
                t.job_id = Some(job_id);
                t.last_seq = after_seq;
            }
            Ok(Answer::Duplicate { document_id, status }) => {
                let line = format!("already uploaded as document {document_id} ({status})");
                plain_line(plain, &name, "already uploaded", &line);
                t.bar.finish_with_message(line);
                t.outcome = Some(Outcome::AlreadyUploaded { document_id, status });
            }
            Err(reason) => {
                plain_line(plain, &name, "failed", &reason);
                t.bar.abandon_with_message(format!("failed: {reason}"));
                t.outcome = Some(Outcome::Failed { reason });
            }
        }
        tracked.push(t);
    }

    let deadline = Instant::now() + args.timeout;
    let mut backoff = BACKOFF_START;
    let mut need_resume = true;
    let mut last_poll = Instant::now();
    while tracked.iter().any(|t| t.outcome.is_none()) {
        if Instant::now() > deadline {
            for t in tracked.iter_mut().filter(|t| t.outcome.is_none()) {
                let reason = format!(
                    "still {} after {} s; it goes on in the daemon",
                    t.stage,
                    args.timeout.as_secs()
                );
                t.bar.abandon_with_message(format!("gave up: {reason}"));
                t.outcome = Some(Outcome::Failed { reason });
            }
            break;
        }
        let Some(ws) = socket.as_mut() else {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(BACKOFF_MAX);
            match connect(&url, &args.token).await {
                Ok(s) => {
                    socket = Some(s);
                    backoff = BACKOFF_START;
                    need_resume = true;
                }
                Err(e) => plain_line(plain, "socket", "reconnecting", &format!("{e:#}")),
            }
            continue;
        };
        if need_resume {
            let after: serde_json::Map<String, Value> = tracked
                .iter()
                .filter(|t| t.outcome.is_none())
                .filter_map(|t| t.job_id.as_ref().map(|j| (j.clone(), json!(t.last_seq))))
                .collect();
            let msg = json!({ "type": "resume", "after": after }).to_string();
            if ws.send(Message::Text(msg.into())).await.is_err() {
                socket = None;
                continue;
            }
            need_resume = false;
        }
        if last_poll.elapsed() >= POLL_EVERY {
            last_poll = Instant::now();
            poll(&http, &args.server, &args.token, &mut tracked, plain).await;
            continue;
        }
        match tokio::time::timeout(Duration::from_millis(500), ws.next()).await {
            Err(_) => {}
            Ok(Some(Ok(Message::Text(text)))) => {
                let Ok(ev) = serde_json::from_str::<Value>(&text) else {
                    continue;
                };
                if ev["type"] == "resync" {
                    need_resume = true;
                    continue;
                }
                let Some(job_id) = ev["job_id"].as_str() else { continue };
                if let Some(&i) = by_job.get(job_id) {
                    apply(&mut tracked[i], &ev, plain);
                }
            }
            Ok(Some(Ok(Message::Close(frame)))) => {
                let reason = frame.map(|f| f.reason.to_string()).unwrap_or_default();
                if reason.contains("token expired") {
                    bail!("the token expired while waiting; mint a longer one (doculearn token --ttl 1d)");
                }
                socket = None;
            }
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(_))) | Ok(None) => socket = None,
        }
    }
    if let Some(mut ws) = socket {
        let _ = ws.close(None).await;
    }
    drop(multi);

    let mut all_ok = true;
    for t in &tracked {
        match &t.outcome {
            Some(Outcome::Completed { secs, chunks, warnings }) => {
                let chunks = chunks.map(|c| format!(" with {c} chunks")).unwrap_or_default();
                println!("✓ {}: completed in {secs:.1} s{chunks}", t.name);
                for w in warnings {
                    println!("  ! warning: {w}");
                }
            }
            Some(Outcome::Failed { reason }) => {
                all_ok = false;
                println!("✗ {}: failed: {reason}", t.name);
            }
            Some(Outcome::AlreadyUploaded { document_id, status }) => {
                println!("= {}: already uploaded as document {document_id} ({status})", t.name);
            }
            None => unreachable!("the loop ends only when every file has an outcome"),
        }
    }
    Ok(all_ok)
}

/// Applies one event (newer than what the bar shows) to a file's bar.
fn apply(t: &mut Tracked, ev: &Value, plain: bool) {
    let seq = ev["seq"].as_i64().unwrap_or(0);
    if seq <= t.last_seq || t.outcome.is_some() {
        return;
    }
    t.last_seq = seq;
    let stage = ev["stage"].as_str().unwrap_or("").to_string();
    let message = ev["message"].as_str().unwrap_or("").to_string();
    let progress = ev["progress"].as_f64().unwrap_or(0.0);
    t.bar.set_position((progress * 100.0).round().clamp(0.0, 100.0) as u64);
    match ev["type"].as_str() {
        Some("job_completed") => {
            let secs = t.started.elapsed().as_secs_f64();
            let chunks = ev["details"]["chunks"].as_i64();
            let warnings: Vec<String> = ev["details"]["warnings"]
                .as_array()
                .map(|w| w.iter().filter_map(|s| s.as_str().map(String::from)).collect())
                .unwrap_or_default();
            plain_line(plain, &t.name, "completed", &message);
            t.bar.finish_with_message(if warnings.is_empty() {
                "completed"
            } else {
                "completed, with a warning"
            });
            t.outcome = Some(Outcome::Completed { secs, chunks, warnings });
        }
        Some("job_failed") => {
            let reason = ev["error"].as_str().unwrap_or(&message).to_string();
            let failed_stage = ev["details"]["failed_stage"].as_str().unwrap_or("?");
            let reason = format!("{reason} (in {failed_stage})");
            plain_line(plain, &t.name, "failed", &reason);
            t.bar.abandon_with_message(format!("failed: {reason}"));
            t.outcome = Some(Outcome::Failed { reason });
        }
        _ => {
            // A new stage, and each page OCR'd (a scan takes seconds a page).
            if stage != t.stage || message.starts_with("OCR ") {
                plain_line(plain, &t.name, &stage, &message);
            }
            t.bar.set_message(format!("{stage}: {message}"));
        }
    }
    t.stage = stage;
}

/// The socket's backstop: reads the state of jobs not yet ended.
async fn poll(http: &reqwest::Client, server: &str, token: &str, tracked: &mut [Tracked], plain: bool) {
    for t in tracked.iter_mut().filter(|t| t.outcome.is_none()) {
        let Some(job_id) = t.job_id.clone() else { continue };
        let url = format!("{}/api/v1/jobs/{job_id}", server.trim_end_matches('/'));
        let Ok(resp) = http.get(url).bearer_auth(token).send().await else {
            continue;
        };
        let Ok(job) = resp.json::<Value>().await else { continue };
        let Some(seq) = job["seq"].as_i64() else { continue };
        let kind = match job["stage"].as_str() {
            Some("completed") => "job_completed",
            Some("failed") => "job_failed",
            _ => "job_progress",
        };
        let ev = json!({
            "type": kind, "seq": seq, "stage": job["stage"], "progress": job["progress"],
            "message": job["message"], "error": job["error"],
            "details": { "failed_stage": job["failed_stage"], "chunks": job["details"]["chunks"],
                         "warnings": job["warnings"] },
        });
        apply(t, &ev, plain);
    }
}

/// Uploads one file; what the daemon made of it, or why it was refused.
async fn upload(
    http: &reqwest::Client,
    args: &IngestArgs,
    path: &std::path::Path,
    name: &str,
) -> Result<Answer, String> {
    let server = &args.server;
    let bytes = tokio::fs::read(path)
        .await
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(bytes).file_name(name.to_string()),
    );
    let url = format!("{}/api/v1/documents", server.trim_end_matches('/'));
    let resp = http
        .post(url)
        .query(&[("on_duplicate", args.on_duplicate.as_str())])
        .bearer_auth(&args.token)
        .multipart(form)
        .send()
        .await
        .map_err(|e| format!("cannot reach the daemon at {server}: {e}"))?;
    let status = resp.status();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    if !matches!(status.as_u16(), 200 | 202) {
        let msg = body["error"]["message"].as_str().unwrap_or("no reason given");
        return Err(format!("the daemon refused the upload ({}): {msg}", status.as_u16()));
    }
    answer(&body)
}

/// Reads an upload's answer (one entry).
fn answer(body: &Value) -> Result<Answer, String> {
    let job_id = body["job_id"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| "the daemon's answer has no job id".to_string())?;
    match body["duplicate_of"].as_str() {
        Some(document_id) if body["replaced"] != true => Ok(Answer::Duplicate {
            document_id: document_id.to_string(),
            status: body["status"].as_str().unwrap_or("?").to_string(),
        }),
        _ => Ok(Answer::Queued {
            job_id,
            after_seq: body["seq"].as_i64().map_or(0, |s| s - 1),
        }),
    }
}

/// An HTTP client for the daemon's JSON routes (60 s per request).
fn json_client() -> anyhow::Result<reqwest::Client> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .context("cannot build the HTTP client")
}

/// Sends `req` with the token; the JSON answer, or the daemon's reason as the error.
async fn call_json(req: reqwest::RequestBuilder, server: &str, token: &str) -> anyhow::Result<Value> {
    let resp = req
        .bearer_auth(token)
        .send()
        .await
        .with_context(|| format!("cannot reach the daemon at {server}"))?;
    let status = resp.status();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        let reason = body["error"]["message"].as_str().unwrap_or("no reason given");
        bail!("the daemon answered {status}: {reason}");
    }
    Ok(body)
}

/// `doculearn search QUERY`: asks the daemon and prints the passages, best
/// first: score, document, page, then the snippet on an indented line with
/// the query's words in bold on a terminal, in `[[...]]` otherwise.
pub async fn search(server: &str, token: &str, query: &str, k: u32, mode: &str) -> anyhow::Result<()> {
    let http = json_client()?;
    let url = format!("{}/api/v1/search", server.trim_end_matches('/'));
    let body = call_json(
        http.post(&url).json(&json!({ "query": query, "k": k, "mode": mode })),
        server,
        token,
    )
    .await?;
    let results = body["results"].as_array().cloned().unwrap_or_default();
    if results.is_empty() {
        println!("no passages match “{query}”");
        return Ok(());
    }
    let marks = if std::io::IsTerminal::is_terminal(&std::io::stdout()) {
        ("\x1b[1m", "\x1b[0m")
    } else {
        ("[[", "]]")
    };
    for (i, hit) in results.iter().enumerate() {
        let name = hit["document_name"].as_str().unwrap_or("?");
        let page = hit["page"].as_i64().map(|p| format!(", page {p}")).unwrap_or_default();
        let score = hit["score"].as_f64().unwrap_or(0.0);
        println!("{}. {name}{page} (score {score:.3})", i + 1);
        println!("   {}", marked_snippet(hit, marks));
    }
    Ok(())
}

/// `doculearn reembed`: starts the re-embed (admin route) and, when
/// `wait`, follows its status until every document is searched with the
/// configured model. `Ok(false)`: some documents could not be re-embedded.
pub async fn reembed(
    server: &str,
    token: &str,
    of_user: Option<uuid::Uuid>,
    wait: bool,
    timeout: Duration,
) -> anyhow::Result<bool> {
    let http = json_client()?;
    let mut url = format!("{}/api/v1/admin/reembed", server.trim_end_matches('/'));
    if let Some(u) = of_user {
        url.push_str(&format!("?user_id={u}"));
    }
    let call = |req: reqwest::RequestBuilder| call_json(req, server, token);
    let started = call(http.post(&url)).await?;
    let model = started["model"].as_str().unwrap_or("?").to_string();
    println!(
        "re-embedding with {model}: {} queued now, {} already under way",
        started["queued"], started["under_way"]
    );
    if !wait {
        return Ok(true);
    }
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last = String::new();
    let mut idle_polls = 0;
    let mut restarted = false;
    loop {
        let st = call(http.get(&url)).await?;
        let (on, remaining) = (
            st["on_configured_model"].as_i64().unwrap_or(0),
            st["remaining"].as_i64().unwrap_or(0),
        );
        let (pending, failed) = (st["pending"].as_i64().unwrap_or(0), st["failed"].as_i64().unwrap_or(0));
        let line = format!(
            "{on} of {} documents searched with {model}; {pending} re-embeds pending, {failed} failed",
            on + remaining
        );
        if line != last {
            println!("{line}");
            last = line;
        }
        if remaining == 0 {
            println!("done: search uses {model} for every document");
            return Ok(true);
        }
        if pending == 0 {
            idle_polls += 1;
            if idle_polls >= 3 && !restarted {
                // Documents that were being processed, or whose run failed, meanwhile.
                call(http.post(&url)).await?;
                restarted = true;
                idle_polls = 0;
            } else if idle_polls >= 3 {
                println!(
                    "{remaining} documents are still searched with a previous model: {failed} re-embeds failed \
                     (see GET /api/v1/admin/jobs?stage=failed); run `doculearn reembed` again to retry them"
                );
                return Ok(false);
            }
        } else {
            idle_polls = 0;
        }
        if tokio::time::Instant::now() >= deadline {
            println!("stopped waiting; the re-embeds go on in the daemon (run again to follow them)");
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// A hit's snippet with `marks` around its highlights, whitespace runs as one space.
fn marked_snippet(hit: &Value, (open, close): (&str, &str)) -> String {
    let snippet: Vec<char> = hit["snippet"].as_str().unwrap_or("").chars().collect();
    let mut ranges: Vec<(usize, usize)> = hit["highlights"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|r| Some((r["start"].as_u64()? as usize, r["end"].as_u64()? as usize)))
                .collect()
        })
        .unwrap_or_default();
    ranges.sort_unstable();
    let mut out = String::new();
    let mut at = 0;
    for (start, end) in ranges {
        if start < at || end > snippet.len() || start >= end {
            continue;
        }
        out.extend(&snippet[at..start]);
        out.push_str(open);
        out.extend(&snippet[start..end]);
        out.push_str(close);
        at = end;
    }
    out.extend(&snippet[at..]);
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subject_and_socket_url() {
        // {"sub":"u-1"} as base64url, no padding.
        let token = "x.eyJzdWIiOiJ1LTEifQ.y";
        assert_eq!(token_subject(token).unwrap(), "u-1");
        assert!(token_subject("nonsense").is_err());
        assert_eq!(ws_url("http://h:1/", "u").unwrap(), "ws://h:1/api/v1/ws/u");
        assert_eq!(ws_url("https://h", "u").unwrap(), "wss://h/api/v1/ws/u");
        assert!(ws_url("ftp://h", "u").is_err());
    }

    #[test]
    fn answers_are_read() {
        let new = json!({ "document_id": "d", "job_id": "doc:d", "status": "queued" });
        assert!(matches!(answer(&new), Ok(Answer::Queued { after_seq: 0, .. })));
        let dup = json!({ "document_id": "d", "job_id": "doc:d", "status": "completed", "duplicate_of": "d" });
        assert!(matches!(answer(&dup), Ok(Answer::Duplicate { status, .. }) if status == "completed"));
        let replaced = json!({ "document_id": "d", "job_id": "doc:d", "status": "queued", "duplicate_of": "d",
                               "replaced": true, "seq": 9 });
        assert!(matches!(answer(&replaced), Ok(Answer::Queued { after_seq: 8, .. })));
        assert!(answer(&json!({})).is_err());
    }

    #[test]
    fn snippets_mark_their_highlights() {
        let hit = json!({"snippet": "Größe  of\nthe GRÖSSE", "highlights": [{"start": 0, "end": 5}, {"start": 14, "end": 20}]});
        assert_eq!(marked_snippet(&hit, ("[[", "]]")), "[[Größe]] of the [[GRÖSSE]]");
    }
}
