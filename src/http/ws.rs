//! `GET /api/v1/ws/{user_id}`: the progress socket. The token comes as
//! `?token=` or in `Sec-WebSocket-Protocol: bearer, <token>`; the path's user
//! must be the token's `sub`. The socket is split (axum's chat example): a
//! writer task drains two channels, live events (fed by the user's
//! `SessionActor`, never awaited there: a full buffer means a slow reader,
//! which is closed with 1008) and replies (fed by the reader half, awaited:
//! back-pressure). The reader answers `ping` with `pong`, replays history on
//! `{"type":"resume","after":{job_id: seq}}` (one query, streamed), and
//! closes the socket after repeated invalid messages.
//!
//! The socket is registered before anything else and only once the session
//! that will deliver acknowledged it (retried against a fresh session if
//! the acknowledgement does not come); when either half ends it is
//! unregistered at once. So every open socket gets every event, or is closed.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use futures::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::mpsc;
use uuid::Uuid;

use super::auth::AuthUser;
use super::error::ApiError;
use super::socket_leases::Lease;
use super::AppState;
use crate::actors::registry::RegistryMsg;
use crate::actors::session::{Outgoing, Registration, SocketHandle};
use crate::db;

/// Invalid messages tolerated before the socket is closed with 1008.
const MAX_INVALID: u32 = 5;
/// Jobs one `resume` may ask about.
const MAX_RESUME_JOBS: usize = 1000;
/// Live events buffered per socket before it counts as too slow.
const OUTGOING_BUFFER: usize = 1024;
/// Replies (pong, resumed history) buffered per socket; the reader waits for room.
const REPLY_BUFFER: usize = 256;
/// Bytes of frames a socket's writer gathers before it must write them.
const WRITE_BUFFER: usize = 16 * 1024;
/// Registration attempts before the socket is closed with 1011.
const REGISTER_TRIES: u32 = 6;
/// How long live events wait for a new socket's first message (its `resume`).
const LIVE_HOLD: Duration = Duration::from_secs(1);
/// Jobs a socket remembers the last sent seq of (the oldest are forgotten).
const SENT_JOBS: usize = 4096;

/// Which seqs of each job this socket sent: the highest, and a window of
/// the 64 below it, so an event that comes both live and in a replay goes
/// out once, and a replayed event older than a live one already sent (a
/// `resume` that came after live events started to flow) still goes out.
/// Below the window a replayed event is sent again (at worst a repeat,
/// which the client's seq check absorbs; never a loss), a live one is not:
/// live events wait while a replay is queued, so one that far below the
/// newest was held during the replay that sent it. Bounded: past
/// [`SENT_JOBS`] jobs the memory is cleared.
#[derive(Default)]
struct SentSeqs(HashMap<Arc<str>, (i64, u64), foldhash::fast::RandomState>);

impl SentSeqs {
    /// Whether (job, seq) is new on this socket (and remember it); `live`:
    /// it came from the session, not from a replay.
    fn first_time(&mut self, job: Arc<str>, seq: i64, live: bool) -> bool {
        if let Some((max, window)) = self.0.get_mut(&job) {
            if seq > *max {
                let shift = (seq - *max) as u64;
                // Bit k: seq max-1-k was sent.
                *window = if shift > 64 {
                    0
                } else {
                    ((*window << 1) | 1) << (shift - 1)
                };
                *max = seq;
                return true;
            }
            if seq == *max {
                return false;
            }
            let k = (*max - 1 - seq) as u64;
            if k >= 64 {
                return !live;
            }
            let sent = *window & (1 << k) != 0;
            *window |= 1 << k;
            return !sent;
        }
        if self.0.len() >= SENT_JOBS {
            self.0.clear();
        }
        self.0.insert(job, (seq, 0));
        true
    }
}

/// How long a socket over the per-user limit waits for closed ones to leave.
const REFUSAL_GRACE: Duration = Duration::from_millis(1500);

#[derive(Deserialize)]
pub struct WsQuery {
    token: Option<String>,
}

/// Token from `Sec-WebSocket-Protocol: bearer, <token>`.
fn protocol_token(ws: &WebSocketUpgrade) -> Option<String> {
    let protocols: Vec<String> = ws
        .requested_protocols()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(',').map(|p| p.trim().to_string()).collect::<Vec<_>>())
        .collect();
    let pos = protocols.iter().position(|p| p.eq_ignore_ascii_case("bearer"))?;
    protocols.get(pos + 1).cloned()
}

/// Is this browser Origin allowed to open a socket? No Origin (not a
/// browser) is allowed; otherwise it must be listed in
/// `http.allowed_origins` or be this server's own origin.
pub fn origin_allowed(origin: Option<&str>, host: Option<&str>, allowed: &[String]) -> bool {
    let Some(origin) = origin else { return true };
    let origin = origin.trim_end_matches('/');
    if allowed
        .iter()
        .any(|a| a.trim_end_matches('/').eq_ignore_ascii_case(origin) || a == "*")
    {
        return true;
    }
    let origin_host = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"))
        .unwrap_or("");
    host.is_some_and(|h| !origin_host.is_empty() && h.eq_ignore_ascii_case(origin_host))
}

#[utoipa::path(get, path = "/api/v1/ws/{user_id}", operation_id = "ws_handler", tag = "progress",
    description = "WebSocket upgrade. The server pushes the user's progress events (ProgressEvent JSON); the client may send `ping` (answered `pong`) or `{\"type\":\"resume\",\"after\":{\"<job_id>\": seq}}`. Token as `?token=` or `Sec-WebSocket-Protocol: bearer, <token>`.",
    params(("user_id" = Uuid, Path, description = "must be the token's sub"), ("token" = Option<String>, Query, description = "bearer token")),
    responses(
        (status = 400, description = "Malformed path, query or body", body = crate::http::openapi::ErrorBody),
        (status = 101, description = "Switching protocols"),
        (status = 401, description = "No valid token", body = crate::http::openapi::ErrorBody),
        (status = 403, description = "Path user is not the token's user, or origin not allowed", body = crate::http::openapi::ErrorBody),
    ))]
pub async fn handler(
    ws: WebSocketUpgrade,
    Path(path_user): Path<String>,
    Query(q): Query<WsQuery>,
    headers: axum::http::HeaderMap,
    State(state): State<AppState>,
) -> Result<Response, ApiError> {
    let origin = headers.get(axum::http::header::ORIGIN).and_then(|v| v.to_str().ok());
    let host = headers.get(axum::http::header::HOST).and_then(|v| v.to_str().ok());
    if !origin_allowed(origin, host, &state.services.settings.http.allowed_origins) {
        return Err(ApiError::Forbidden(format!(
            "WebSocket connections from origin {} are not allowed",
            origin.unwrap_or("")
        )));
    }
    let from_protocol = protocol_token(&ws);
    let token = q.token.clone().or(from_protocol.clone()).ok_or_else(|| {
        ApiError::Unauthorized("missing token (send ?token= or Sec-WebSocket-Protocol: bearer, <token>)".into())
    })?;
    let user = state.auth.verify(&token).map_err(ApiError::Unauthorized)?;
    let path_user = Uuid::parse_str(&path_user)
        .map_err(|_| ApiError::Forbidden("the path's user id is not the token's user".into()))?;
    if path_user != user.user_id {
        return Err(ApiError::Forbidden("the path's user id is not the token's user".into()));
    }
    let max = state.services.settings.websocket.max_message_bytes;
    let mut ws = ws
        .max_message_size(max)
        .max_frame_size(max)
        .read_buffer_size(4096)
        // Frames wait in the buffer until the writer flushes (below), or
        // this much is waiting.
        .write_buffer_size(WRITE_BUFFER);
    if from_protocol.is_some() {
        ws.set_selected_protocol(HeaderValue::from_static("bearer"));
    }
    Ok(ws.on_upgrade(move |socket| serve(socket, state, user)).into_response())
}

fn close(code: u16, reason: &str) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: reason.into(),
    }))
}

/// Registers the socket with the session that will deliver to it; retries
/// against a fresh session when the acknowledgement does not come (the
/// session was stopping, or the registry is being restarted). A socket
/// refused for the per-user limit is tried again for a moment first: the
/// sockets a reconnecting client just dropped may not have been noticed as
/// closed yet, and a reconnect must not be refused for them.
async fn register(state: &AppState, user_id: Uuid, socket: SocketHandle) -> Result<Registration, ()> {
    let mut refused_since: Option<std::time::Instant> = None;
    let mut attempt = 0u32;
    loop {
        if let Some(registry) = state.registry.get() {
            let socket = socket.clone();
            match ractor::call_t!(registry, |reply| RegistryMsg::Register { user_id, socket, reply }, 2000) {
                Ok(Registration::Accepted) => return Ok(Registration::Accepted),
                Ok(Registration::Refused(reason)) => {
                    let since = *refused_since.get_or_insert_with(std::time::Instant::now);
                    if since.elapsed() >= REFUSAL_GRACE {
                        return Ok(Registration::Refused(reason));
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
                Err(e) => {
                    tracing::debug!(user_id = %user_id, attempt, error = %e, "socket registration not acknowledged; retrying")
                }
            }
        }
        attempt += 1;
        if attempt >= REGISTER_TRIES {
            return Err(());
        }
        tokio::time::sleep(Duration::from_millis(25 << attempt)).await;
    }
}

/// A cluster-wide lease for the socket (see [`super::socket_leases`]),
/// retried for [`REFUSAL_GRACE`] like a local refusal: the leases of
/// sockets a reconnecting client just dropped may still be there.
async fn lease(state: &AppState, user_id: Uuid, socket_id: u64) -> bool {
    let started = std::time::Instant::now();
    loop {
        if state.socket_leases.acquire(user_id, socket_id).await == Lease::Granted {
            return true;
        }
        if started.elapsed() >= REFUSAL_GRACE {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn serve(socket: WebSocket, state: AppState, user: AuthUser) {
    let socket_id = state.socket_ids.fetch_add(1, Ordering::Relaxed);
    let (live_tx, mut live_rx) = mpsc::channel::<Outgoing>(OUTGOING_BUFFER);
    let (tx, mut reply_rx) = mpsc::channel::<Outgoing>(REPLY_BUFFER);
    let kick = tokio_util::sync::CancellationToken::new();
    let (mut sink, mut stream) = socket.split();
    let handle = SocketHandle {
        id: socket_id,
        tx: live_tx,
        kick: kick.clone(),
    };
    if !lease(&state, user.user_id, socket_id).await {
        let limit = state.socket_leases.limit();
        let reason = format!("more than {limit} open sockets for this user (on all instances)");
        let _ = sink.send(close(1008, &reason)).await;
        return;
    }
    match register(&state, user.user_id, handle).await {
        Ok(Registration::Accepted) => {}
        Ok(Registration::Refused(reason)) => {
            state.socket_leases.release(user.user_id, socket_id).await;
            let _ = sink.send(close(1008, &reason)).await;
            return;
        }
        Err(()) => {
            state.socket_leases.release(user.user_id, socket_id).await;
            let _ = sink.send(close(1011, "server is not ready; reconnect")).await;
            return;
        }
    }
    tracing::debug!(user_id = %user.user_id, socket = socket_id, "socket opened");
    crate::metrics::socket_opened();
    let opened = std::time::Instant::now();

    let shutdown = state.shutdown.clone();
    let expires_in = Duration::from_secs((user.exp - chrono::Utc::now().timestamp()).max(0) as u64);
    // Set by the reader as soon as the client's first message arrives.
    let first_message = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let first_seen = first_message.clone();
    let mut writer = tokio::spawn(async move {
        let expiry = tokio::time::sleep(expires_in);
        tokio::pin!(expiry);
        // Live events wait (in their bounded channel) until the client's
        // first message was answered, so a reconnecting client's `resume`
        // replays what it missed *before* anything newer of the same job:
        // each job's events reach it in order. A client that sends nothing
        // gets them after LIVE_HOLD; one whose first message came in time
        // waits for its answer however long that takes (a `resume` under
        // load), or live events would overtake the replay.
        let hold = tokio::time::sleep(LIVE_HOLD);
        let mut hold_over = false;
        tokio::pin!(hold);
        let mut live = false;
        let mut sent = SentSeqs::default();
        // Made once, not per message: a fresh `cancelled()` future would
        // register with (and leave) the token's waiter list each time, and
        // the shutdown token is shared by every socket.
        let kicked = kick.cancelled();
        tokio::pin!(kicked);
        let shutting_down = shutdown.cancelled();
        tokio::pin!(shutting_down);
        loop {
            let mut from_live = false;
            let next = tokio::select! {
                _ = &mut hold, if !live && !hold_over => {
                    hold_over = true;
                    if first_message.load(Ordering::Acquire) {
                        continue;
                    }
                    Outgoing::Ready
                }
                msg = live_rx.recv(), if live => match msg {
                    Some(m) => {
                        from_live = true;
                        m
                    }
                    None => {
                        // The session let go of this socket: unregistered
                        // after the reader ended (which queued its own close
                        // first), or the session was restarted. Never stay
                        // open without live events.
                        let mut close = Outgoing::Close { code: 1011, reason: "progress stream restarted; reconnect and resume".into() };
                        while let Ok(m) = reply_rx.try_recv() {
                            if matches!(m, Outgoing::Close { .. }) {
                                close = m;
                                break;
                            }
                        }
                        close
                    }
                },
                msg = reply_rx.recv() => match msg {
                    Some(m) => m,
                    None => break,
                },
                _ = &mut kicked => Outgoing::Close {
                    code: 1008,
                    reason: "too slow to receive progress; reconnect and resume".into(),
                },
                _ = &mut expiry => Outgoing::Close { code: 1008, reason: "token expired".into() },
                _ = &mut shutting_down => Outgoing::Close { code: 1001, reason: "server shutting down".into() },
            };
            match next {
                Outgoing::Ready => live = true,
                Outgoing::Hold => live = false,
                Outgoing::Text(text) => {
                    if sink.feed(Message::Text(text)).await.is_err() {
                        break;
                    }
                    crate::metrics::socket_sent();
                }
                Outgoing::Event { text, job, seq } => {
                    // Already on this socket (live, then replayed): once is enough.
                    if sent.first_time(job, seq, from_live) {
                        if sink.feed(Message::Text(text)).await.is_err() {
                            break;
                        }
                        crate::metrics::socket_sent();
                    }
                }
                Outgoing::Close { code, reason } => {
                    let _ = sink.send(close(code, &reason)).await;
                    break;
                }
            }
            // Messages are fed into the socket's buffer and written when
            // nothing more is waiting: one write for all that queued up
            // while the last one went out (under load), one per message
            // otherwise.
            if reply_rx.is_empty() && (!live || live_rx.is_empty()) && sink.flush().await.is_err() {
                break;
            }
        }
    });

    let mut invalid = 0u32;
    let reader_state = state.clone();
    let max_rate = state.services.settings.websocket.max_messages_per_sec;
    let reader = async {
        let mut window = tokio::time::Instant::now();
        let mut in_window = 0u32;
        let mut ready_sent = false;
        while let Some(msg) = stream.next().await {
            first_seen.store(true, Ordering::Release);
            if window.elapsed() >= Duration::from_secs(1) {
                window = tokio::time::Instant::now();
                in_window = 0;
            }
            in_window += 1;
            if in_window > max_rate {
                let _ = tx
                    .send(Outgoing::Close {
                        code: 1008,
                        reason: format!("more than {max_rate} messages per second"),
                    })
                    .await;
                return;
            }
            let answered = match msg {
                Ok(Message::Text(text)) => handle_text(&reader_state, user.user_id, text.as_str(), &tx).await,
                Ok(Message::Binary(_)) => Err("binary messages are not accepted".to_string()),
                Ok(Message::Close(_)) => break,
                Err(e) => {
                    // tungstenite refuses a message above max_message_bytes.
                    let text = e.to_string();
                    if text.contains("too long") || text.contains("Space limit") || text.contains("too big") {
                        let _ = tx
                            .send(Outgoing::Close {
                                code: 1009,
                                reason: "message too big".into(),
                            })
                            .await;
                    }
                    return;
                }
                Ok(Message::Ping(_)) | Ok(Message::Pong(_)) => Ok(true),
            };
            if !ready_sent {
                ready_sent = true;
                // After the answer (a resume's whole replay) is queued.
                if tx.send(Outgoing::Ready).await.is_err() {
                    return;
                }
            }
            match answered {
                Ok(true) => {}
                // The writer is gone: the socket is closing.
                Ok(false) => return,
                Err(problem) => {
                    invalid += 1;
                    let text = json!({ "type": "error", "message": problem }).to_string();
                    if invalid >= MAX_INVALID {
                        let _ = tx
                            .send(Outgoing::Close {
                                code: 1008,
                                reason: "too many invalid messages".into(),
                            })
                            .await;
                        return;
                    }
                    if tx.send(Outgoing::Text(text.into())).await.is_err() {
                        return;
                    }
                }
            }
        }
    };
    let reader = std::pin::pin!(reader);
    let reader_ended = tokio::select! {
        _ = reader => true,
        _ = &mut writer => false,
    };
    // Unregistered at once, so a reconnect is never refused for a socket that is gone.
    state.registry.cast(RegistryMsg::Unregister {
        user_id: user.user_id,
        socket_id,
    });
    if reader_ended {
        // Let the writer flush a pending close frame, then stop it.
        let _ = tokio::time::timeout(Duration::from_secs(1), &mut writer).await;
        writer.abort();
    }
    state.socket_leases.release(user.user_id, socket_id).await;
    crate::metrics::socket_closed(opened.elapsed().as_secs_f64());
    tracing::debug!(user_id = %user.user_id, socket = socket_id, "socket closed");
}

/// What a client may send.
#[derive(Debug, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientMessage {
    Resume {
        after: std::collections::HashMap<String, i64>,
    },
    /// A struct variant (not a unit one) so unknown fields are refused too.
    Ping {},
    /// The plain-text `ping` of the seed plan.
    #[serde(skip)]
    TextPing,
}

/// Validates one text message: `ping`, `{"type":"ping"}` or
/// `{"type":"resume","after":{job_id: seq}}` (at most 1000 jobs, job ids of
/// at most 255 characters, seq ≥ 0). Anything else is an error message.
pub fn parse_client_message(text: &str) -> Result<ClientMessage, String> {
    if text == "ping" {
        return Ok(ClientMessage::TextPing);
    }
    let msg: ClientMessage = serde_json::from_str(text).map_err(|_| {
        "unknown message; send \"ping\" or {\"type\":\"resume\",\"after\":{\"<job_id>\":<seq>}}".to_string()
    })?;
    if let ClientMessage::Resume { after } = &msg {
        if after.len() > MAX_RESUME_JOBS {
            return Err(format!("resume asks about more than {MAX_RESUME_JOBS} jobs"));
        }
        if after.iter().any(|(job, seq)| job.len() > 255 || *seq < 0) {
            return Err("resume: job ids are at most 255 characters and seq is not negative".into());
        }
    }
    Ok(msg)
}

/// Answers one text message into the reply channel. `Err` is an invalid
/// message; `Ok(false)` means the socket is closing.
async fn handle_text(state: &AppState, user: Uuid, text: &str, tx: &mpsc::Sender<Outgoing>) -> Result<bool, String> {
    let send = |text: String| async move { tx.send(Outgoing::Text(text.into())).await.is_ok() };
    match parse_client_message(text)? {
        ClientMessage::TextPing => Ok(send("pong".to_string()).await),
        ClientMessage::Ping {} => Ok(send(json!({ "type": "pong" }).to_string()).await),
        ClientMessage::Resume { after } => {
            crate::metrics::socket_resumed();
            // Live events wait while the replay is queued (a new socket's
            // already do; this is for a `resume` after a `resync`): each
            // job's events keep their order, and an event sent live cannot
            // come again in a late replay. `Ready` follows the replay.
            if tx.send(Outgoing::Hold).await.is_err() {
                return Ok(false);
            }
            let (jobs, seqs): (Vec<String>, Vec<i64>) = after.into_iter().unzip();
            // One query, its rows sent as they come; the reply channel's
            // back-pressure paces it, on the history's own small pool.
            let mut rows = std::pin::pin!(db::history_many(&state.services.history_db, user, &jobs, &seqs));
            while let Some(row) = rows.next().await {
                let row = row.map_err(|e| e.to_string()).and_then(|event| {
                    let text = serde_json::to_string(&event).map_err(|e| e.to_string())?;
                    Ok((event, text))
                });
                match row {
                    Ok((event, text)) => {
                        let text = Utf8Bytes::from(text);
                        let out = Outgoing::Event {
                            text,
                            job: event.job_id.as_str().into(),
                            seq: event.seq,
                        };
                        if tx.send(out).await.is_err() {
                            return Ok(false);
                        }
                    }
                    Err(e) => {
                        // Live events must not flow past a replay that did
                        // not happen (they would hide the gap): the socket
                        // closes, and the client reconnects and resumes.
                        tracing::warn!(user_id = %user, error = %e, "resume query failed; closing the socket");
                        let _ = tx
                            .send(Outgoing::Close {
                                code: 1011,
                                reason: "history is unavailable right now; reconnect and resume".into(),
                            })
                            .await;
                        return Ok(false);
                    }
                }
            }
            if !send(json!({ "type": "resumed" }).to_string()).await {
                return Ok(false);
            }
            Ok(tx.send(Outgoing::Ready).await.is_ok())
        }
    }
}

/// Shared counter type for socket ids.
pub type SocketIds = Arc<std::sync::atomic::AtomicU64>;

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn documented_messages_parse_and_others_do_not() {
        assert_eq!(parse_client_message("ping"), Ok(ClientMessage::TextPing));
        assert_eq!(parse_client_message(r#"{"type":"ping"}"#), Ok(ClientMessage::Ping {}));
        assert!(matches!(
            parse_client_message(r#"{"type":"resume","after":{"doc:1":3}}"#),
            Ok(ClientMessage::Resume { .. })
        ));
        for bad in [
            "",
            "PING",
            "pong",
            "{}",
            r#"{"type":"resume"}"#,
            r#"{"type":"resume","after":{"x":-1}}"#,
            r#"{"type":"ping","x":1}"#,
            r#"{"type":"TextPing"}"#,
            "null",
            "[1]",
        ] {
            assert!(parse_client_message(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn each_seq_goes_out_once_and_older_replayed_ones_still_go_out() {
        let mut sent = SentSeqs::default();
        let job: Arc<str> = "doc:1".into();
        // Live 5, 6 first; then a replay of 2..=6.
        assert!(sent.first_time(job.clone(), 5, true));
        assert!(sent.first_time(job.clone(), 6, true));
        let replay: Vec<bool> = (2..=6).map(|s| sent.first_time(job.clone(), s, false)).collect();
        assert_eq!(replay, [true, true, true, false, false]);
        // Again: nothing new.
        assert!((2..=6).all(|s| !sent.first_time(job.clone(), s, false)));
        // A jump past the window forgets the old ones: replayed, they are
        // sent again (never lost) ...
        assert!(sent.first_time(job.clone(), 200, false));
        assert!(sent.first_time(job.clone(), 6, false));
        assert!(!sent.first_time(job.clone(), 200, true));
        assert!(sent.first_time(job.clone(), 199, true));
        assert!(!sent.first_time(job.clone(), 199, true));
        // ... live, they were held while the replay that got past them went out.
        assert!(!sent.first_time(job, 7, true));
    }

    #[test]
    fn origins() {
        let allowed = vec!["https://app.example.org".to_string()];
        assert!(origin_allowed(None, Some("x"), &[]));
        assert!(origin_allowed(Some("https://app.example.org/"), None, &allowed));
        assert!(origin_allowed(
            Some("http://127.0.0.1:8000"),
            Some("127.0.0.1:8000"),
            &[]
        ));
        assert!(!origin_allowed(
            Some("https://evil.example"),
            Some("127.0.0.1:8000"),
            &allowed
        ));
        assert!(!origin_allowed(Some("null"), Some("127.0.0.1:8000"), &[]));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Any text: a clean Ok or Err, never a panic; Ok only for the documented forms.
        #[test]
        fn arbitrary_text_never_panics(text in ".{0,300}") {
            if let Ok(m) = parse_client_message(&text) {
                match m {
                    ClientMessage::TextPing => prop_assert_eq!(text, "ping"),
                    ClientMessage::Ping {} => prop_assert!(text.contains("ping")),
                    ClientMessage::Resume { after } => prop_assert!(after.len() <= MAX_RESUME_JOBS),
                }
            }
        }

        /// JSON-shaped input with random keys and values.
        #[test]
        fn arbitrary_json_never_panics(
            kind in prop::sample::select(vec!["resume", "ping", "subscribe", "", "RESUME"]),
            key in "[a-z:0-9-]{0,300}",
            seq in any::<i64>(),
            extra in proptest::option::of("[a-z]{1,8}"),
        ) {
            let mut v = serde_json::json!({"type": kind, "after": {key.clone(): seq}});
            if let Some(e) = &extra {
                v[e.as_str()] = serde_json::json!(1);
            }
            let parsed = parse_client_message(&v.to_string());
            if parsed.is_ok() {
                prop_assert!(kind == "resume" || kind == "ping");
                if kind == "resume" {
                    prop_assert!(seq >= 0 && key.len() <= 255);
                }
            }
        }
    }
}
