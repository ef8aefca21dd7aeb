//! The browser UI at `/`: one HTML page, one script and one stylesheet,
//! compiled into the binary (no CDN, no build step). In dev mode,
//! `GET /dev/token` hands the page a token for `http.dev_user_id`.

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use super::error::ApiError;
use super::AppState;

const INDEX_HTML: &str = include_str!("index.html");
const APP_JS: &str = include_str!("app.js");
const APP_CSS: &str = include_str!("app.css");

/// Scripts, styles and sockets only from this origin; no inline code, no
/// framing. `'self'` covers same-origin `ws:`/`wss:` in CSP level 3.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

/// Lifetime of the development token.
const DEV_TOKEN_TTL_SECS: i64 = 7 * 24 * 3600;

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // The assets change with the binary; revalidate rather than cache stale code.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    (headers, body).into_response()
}

async fn index() -> Response {
    asset("text/html; charset=utf-8", INDEX_HTML)
}

async fn app_js() -> Response {
    asset("text/javascript; charset=utf-8", APP_JS)
}

async fn app_css() -> Response {
    asset("text/css; charset=utf-8", APP_CSS)
}

/// `GET /dev/token` (dev mode only): a token for the configured dev user.
async fn dev_token(State(state): State<AppState>) -> Result<Response, ApiError> {
    let http = &state.services.settings.http;
    let token = state
        .auth
        .try_mint(http.dev_user_id, false, DEV_TOKEN_TTL_SECS)
        .map_err(|e| ApiError::Internal(anyhow::anyhow!(e)))?;
    let mut res = Json(json!({ "token": token, "user_id": http.dev_user_id })).into_response();
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(res)
}

/// The UI's routes; `/dev/token` exists only when `http.dev_mode` is on.
pub fn routes(dev_mode: bool) -> Router<AppState> {
    let r = Router::new()
        .route("/", get(index))
        .route("/ui/app.js", get(app_js))
        .route("/ui/app.css", get(app_css));
    if dev_mode {
        r.route("/dev/token", get(dev_token))
    } else {
        r
    }
}
