//! `GET /api/v1/ws/{user_id}`: the progress socket. The token comes as
//! `?token=` or in `Sec-WebSocket-Protocol: bearer, <token>`; the path's user
//! must be the token's `sub`. The socket is split (axum's chat example): a
//! writer task drains the channel the user's `SessionActor` and the reader
//! feed; the reader answers `ping` with `pong`, replays history on
//! `{"type":"resume","after":{job_id: seq}}`, and closes the socket after
//! repeated invalid messages. When either half ends, the socket leaves its
//! session.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
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
use super::AppState;
use crate::actors::session::{Outgoing, SocketHandle};
use crate::actors::SupervisorMsg;
use crate::db;

/// Largest message a client may send (resume maps of many jobs fit easily).
pub const MAX_INCOMING_BYTES: usize = 64 * 1024;
/// Invalid messages tolerated before the socket is closed with 1008.
const MAX_INVALID: u32 = 5;
/// Jobs one `resume` may ask about.
const MAX_RESUME_JOBS: usize = 1000;
/// Outgoing messages buffered per socket before it counts as too slow.
const OUTGOING_BUFFER: usize = 1024;

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

pub async fn handler(
    ws: WebSocketUpgrade,
    Path(path_user): Path<String>,
    Query(q): Query<WsQuery>,
    State(state): State<AppState>,
) -> Result<Response, ApiError> {
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
    let mut ws = ws
        .max_message_size(MAX_INCOMING_BYTES)
        .max_frame_size(MAX_INCOMING_BYTES)
        .read_buffer_size(4096)
        .write_buffer_size(0);
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

async fn serve(socket: WebSocket, state: AppState, user: AuthUser) {
    let socket_id = state.socket_ids.fetch_add(1, Ordering::Relaxed);
    let (tx, mut rx) = mpsc::channel::<Outgoing>(OUTGOING_BUFFER);
    let (mut sink, mut stream) = socket.split();
    if state
        .supervisor
        .cast(SupervisorMsg::RegisterSocket {
            user_id: user.user_id,
            socket: SocketHandle {
                id: socket_id,
                tx: tx.clone(),
            },
        })
        .is_err()
    {
        let _ = sink.send(close(1011, "server is not ready")).await;
        return;
    }
    tracing::debug!(user_id = %user.user_id, socket = socket_id, "socket opened");

    let shutdown = state.shutdown.clone();
    let expires_in = Duration::from_secs((user.exp - chrono::Utc::now().timestamp()).max(0) as u64);
    let mut writer = tokio::spawn(async move {
        let expiry = tokio::time::sleep(expires_in);
        tokio::pin!(expiry);
        loop {
            tokio::select! {
                msg = rx.recv() => match msg {
                    Some(Outgoing::Text(text)) => {
                        if sink.send(Message::Text((&*text).into())).await.is_err() {
                            break;
                        }
                    }
                    Some(Outgoing::Close { code, reason }) => {
                        let _ = sink.send(close(code, &reason)).await;
                        break;
                    }
                    None => {
                        // The session dropped this socket (too slow).
                        let _ = sink.send(close(1008, "too slow to receive progress; reconnect and resume")).await;
                        break;
                    }
                },
                _ = &mut expiry => {
                    let _ = sink.send(close(1008, "token expired")).await;
                    break;
                }
                _ = shutdown.cancelled() => {
                    let _ = sink.send(close(1001, "server shutting down")).await;
                    break;
                }
            }
        }
    });

    let mut invalid = 0u32;
    let reader_state = state.clone();
    let reader = async {
        while let Some(msg) = stream.next().await {
            let reply = match msg {
                Ok(Message::Text(text)) => handle_text(&reader_state, user.user_id, text.as_str()).await,
                Ok(Message::Binary(_)) => Err("binary messages are not accepted".to_string()),
                Ok(Message::Close(_)) | Err(_) => break,
                Ok(Message::Ping(_)) | Ok(Message::Pong(_)) => Ok(Vec::new()),
            };
            match reply {
                Ok(messages) => {
                    for m in messages {
                        if tx.send(Outgoing::Text(m.into())).await.is_err() {
                            return;
                        }
                    }
                }
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
    tokio::select! {
        _ = reader => {
            // Let the writer flush a pending close frame, then stop it.
            let _ = tokio::time::timeout(Duration::from_secs(1), &mut writer).await;
            writer.abort();
        }
        _ = &mut writer => {}
    }
    let _ = state.supervisor.cast(SupervisorMsg::UnregisterSocket {
        user_id: user.user_id,
        socket_id,
    });
    tracing::debug!(user_id = %user.user_id, socket = socket_id, "socket closed");
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum ClientMessage {
    Resume {
        after: std::collections::HashMap<String, i64>,
    },
    Ping,
}

/// Answers one text message; `Err` is an invalid message.
async fn handle_text(state: &AppState, user: Uuid, text: &str) -> Result<Vec<String>, String> {
    if text == "ping" {
        return Ok(vec!["pong".to_string()]);
    }
    let msg: ClientMessage = serde_json::from_str(text).map_err(|_| {
        "unknown message; send \"ping\" or {\"type\":\"resume\",\"after\":{\"<job_id>\":<seq>}}".to_string()
    })?;
    match msg {
        ClientMessage::Ping => Ok(vec![json!({ "type": "pong" }).to_string()]),
        ClientMessage::Resume { after } => {
            if after.len() > MAX_RESUME_JOBS {
                return Err(format!("resume asks about more than {MAX_RESUME_JOBS} jobs"));
            }
            let mut out = Vec::new();
            for (job_id, seq) in after {
                // Other users' jobs look exactly like unknown ones.
                match db::history(&state.services.db, user, &job_id, seq.max(0)).await {
                    Ok(Some(events)) => {
                        for e in events {
                            out.push(serde_json::to_string(&e).map_err(|e| e.to_string())?);
                        }
                    }
                    Ok(None) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "resume query failed");
                        return Err("history is unavailable right now; resume again shortly".into());
                    }
                }
            }
            out.push(json!({ "type": "resumed" }).to_string());
            Ok(out)
        }
    }
}

/// Shared counter type for socket ids.
pub type SocketIds = Arc<std::sync::atomic::AtomicU64>;
