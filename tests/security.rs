//! Security as an attacker and an operator would test it: an authorization
//! matrix over every route, token algorithms, WebSocket limits and Origin
//! checks, upload rate limits, URL ingestion against local servers, and logs
//! free of secrets. Real daemon, real PostgreSQL and Redis.

mod common;

use std::time::{Duration, Instant};

use common::*;
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use uuid::Uuid;

const SERVICE: &str = "security-service-token-security-service-0001";

async fn status(method: &str, url: &str, token: Option<&str>, body: Option<Value>) -> u16 {
    let c = client();
    let mut req = c.request(method.parse().unwrap(), url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    req.send().await.unwrap().status().as_u16()
}

/// Reads until the socket closes; returns the close code.
async fn close_code(ws: &mut Ws, within: Duration) -> Option<u16> {
    let deadline = Instant::now() + within;
    while let Ok(Some(msg)) =
        tokio::time::timeout(deadline.saturating_duration_since(Instant::now()), ws.stream.next()).await
    {
        match msg {
            Ok(Message::Close(frame)) => return frame.map(|f| u16::from(f.code)),
            Ok(_) => continue,
            Err(_) => return None,
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread")]
async fn authorization_matrix_over_every_route() {
    let d = Daemon::start(Opts::default().with("DOCULEARN_AUTH__SERVICE_TOKEN", SERVICE)).await;
    let (alice, bob, admin_id) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let a = d.token(alice);
    let b = d.token(bob);
    let admin = d.admin_token(admin_id);
    let expired = keys().mint(alice, false, -3600);
    let other_key =
        doculearn::http::auth::AuthKeys::hs256("another-secret-another-secret-another", "doculearn", "doculearn")
            .mint(alice, false, 3600);
    let other_aud =
        doculearn::http::auth::AuthKeys::hs256(SECRET, "doculearn", "someone-else").mint(alice, false, 3600);
    let other_iss = doculearn::http::auth::AuthKeys::hs256(SECRET, "evil", "doculearn").mint(alice, false, 3600);

    let (doc, job) = d
        .upload_one(&a, "alice.txt", b"alice's private notes about the river".to_vec())
        .await;
    d.wait_job(&a, &job, Duration::from_secs(30)).await;

    // (method, path, body, alice, bob, admin): expected statuses with valid tokens.
    type Row = (&'static str, String, Option<Value>, u16, u16, u16);
    let routes: Vec<Row> = vec![
        ("GET", "/api/v1/documents".into(), None, 200, 200, 200),
        ("GET", format!("/api/v1/documents/{doc}"), None, 200, 404, 404),
        ("GET", format!("/api/v1/documents/{doc}/text"), None, 200, 404, 404),
        (
            "GET",
            format!("/api/v1/documents/{doc}/text?page=1"),
            None,
            200,
            404,
            404,
        ),
        ("GET", format!("/api/v1/jobs/{job}"), None, 200, 404, 404),
        ("GET", format!("/api/v1/jobs/{job}/history"), None, 200, 404, 404),
        ("POST", format!("/api/v1/jobs/{job}/retry"), None, 409, 404, 404),
        ("POST", format!("/api/v1/jobs/{job}/cancel"), None, 409, 404, 404),
        (
            "POST",
            "/api/v1/search".into(),
            Some(json!({"query": "river"})),
            200,
            200,
            200,
        ),
        (
            "POST",
            "/api/v1/search".into(),
            Some(json!({"query": "river", "document_ids": [doc]})),
            200,
            404,
            404,
        ),
        (
            "POST",
            "/api/v1/search".into(),
            Some(json!({"query": "river", "mode": "keyword", "document_ids": [doc]})),
            200,
            404,
            404,
        ),
        (
            "POST",
            "/api/v1/admin/jobs/recover-stalled?dry_run=true".into(),
            None,
            403,
            403,
            200,
        ),
        ("GET", "/api/v1/admin/jobs".into(), None, 403, 403, 200),
        ("GET", "/api/v1/admin/reembed".into(), None, 403, 403, 200),
        (
            "POST",
            format!("/api/v1/admin/reembed?user_id={alice}"),
            None,
            403,
            403,
            200,
        ),
        (
            "POST",
            "/api/v1/jobs/progress".into(),
            Some(json!({"job_id": job, "stage": "storing", "progress": 0.9})),
            401,
            401,
            401,
        ),
        ("DELETE", format!("/api/v1/documents/{doc}"), None, 204, 404, 404),
    ];
    for (method, path, body, want_a, want_b, want_admin) in &routes {
        let url = d.url(path);
        // Bob and the admin first: Alice's DELETE must come last.
        assert_eq!(
            status(method, &url, Some(&b), body.clone()).await,
            *want_b,
            "bob {method} {path}"
        );
        assert_eq!(
            status(method, &url, Some(&admin), body.clone()).await,
            *want_admin,
            "admin {method} {path}"
        );
        for (who, t) in [
            ("no token", None),
            ("expired", Some(expired.as_str())),
            ("other key", Some(other_key.as_str())),
            ("other audience", Some(other_aud.as_str())),
            ("other issuer", Some(other_iss.as_str())),
            ("garbage", Some("a.b.c")),
        ] {
            assert_eq!(
                status(method, &url, t, body.clone()).await,
                401,
                "{who} {method} {path}"
            );
        }
        assert_eq!(
            status(method, &url, Some(&a), body.clone()).await,
            *want_a,
            "alice {method} {path}"
        );
    }
    // What the 200s contained: nobody else's data.
    let (_, list) = d.get_json(&b, "/api/v1/documents").await;
    assert_eq!(list["documents"], json!([]));
    let (alice_text, job_alice) = d
        .upload_one(&a, "alice3.txt", b"the river keeps its secrets".to_vec())
        .await;
    d.wait_job(&a, &job_alice, Duration::from_secs(30)).await;
    for mode in ["keyword", "hybrid", "semantic"] {
        let (_, r) = d
            .post_json(&b, "/api/v1/search", &json!({"query": "river secrets", "mode": mode}))
            .await;
        assert_eq!(r["results"], json!([]), "bob's {mode} search");
        let (_, r) = d
            .post_json(&a, "/api/v1/search", &json!({"query": "river secrets", "mode": mode}))
            .await;
        assert_eq!(
            r["results"][0]["document_id"],
            alice_text.as_str(),
            "alice's {mode} search"
        );
    }
    // The external progress route: the service token, and only into the stream of the job's owner.
    let (_, job2) = d.upload_one(&a, "alice2.txt", b"second".to_vec()).await;
    let as_bob = json!({"job_id": job2, "user_id": bob, "stage": "storing", "progress": 0.9});
    assert_eq!(
        status("POST", &d.url("/api/v1/jobs/progress"), Some(SERVICE), Some(as_bob)).await,
        404
    );
    // The WebSocket: own path only.
    let url = |user: Uuid, t: &str| format!("ws://{}/api/v1/ws/{user}?token={t}", d.addr);
    assert!(tokio_tungstenite::connect_async(url(alice, &a)).await.is_ok());
    for (who, u, t, code) in [
        ("bob on alice's path", alice, b.as_str(), "403"),
        ("admin on alice's path", alice, admin.as_str(), "403"),
        ("expired", alice, expired.as_str(), "401"),
        ("other key", alice, other_key.as_str(), "401"),
    ] {
        let err = tokio_tungstenite::connect_async(url(u, t)).await.unwrap_err();
        assert!(err.to_string().contains(code), "{who}: {err}");
    }
}

fn openssl(args: &[&str]) {
    let ok = std::process::Command::new("openssl").args(args).output().unwrap();
    assert!(
        ok.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&ok.stderr)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn rs256_and_es256_tokens_are_checked_with_the_public_key() {
    let dir = std::env::temp_dir().join(format!("dl-keys-{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = |n: &str| dir.join(n).display().to_string();
    openssl(&[
        "genpkey",
        "-algorithm",
        "RSA",
        "-pkeyopt",
        "rsa_keygen_bits:2048",
        "-out",
        &p("rsa.pem"),
    ]);
    openssl(&["pkey", "-in", &p("rsa.pem"), "-pubout", "-out", &p("rsa.pub")]);
    openssl(&[
        "genpkey",
        "-algorithm",
        "EC",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-out",
        &p("ec.pem"),
    ]);
    openssl(&[
        "pkcs8",
        "-topk8",
        "-nocrypt",
        "-in",
        &p("ec.pem"),
        "-out",
        &p("ec8.pem"),
    ]);
    openssl(&["pkey", "-in", &p("ec.pem"), "-pubout", "-out", &p("ec.pub")]);
    for (alg, public, private) in [
        ("RS256", p("rsa.pub"), p("rsa.pem")),
        ("ES256", p("ec.pub"), p("ec8.pem")),
    ] {
        let d = Daemon::start(
            Opts::default()
                .with("DOCULEARN_AUTH__ALGORITHM", alg)
                .with("DOCULEARN_AUTH__PUBLIC_KEY_FILE", &public),
        )
        .await;
        let settings = doculearn::config::AuthSettings {
            algorithm: if alg == "RS256" {
                doculearn::config::JwtAlgorithm::RS256
            } else {
                doculearn::config::JwtAlgorithm::ES256
            },
            jwt_secret: String::new().into(),
            public_key_file: public.clone().into(),
            private_key_file: private.clone().into(),
            issuer: "doculearn".into(),
            audience: "doculearn".into(),
            token_ttl_secs: 60,
            service_token: String::new().into(),
        };
        let signer = doculearn::http::auth::AuthKeys::from_settings(&settings).unwrap();
        let user = Uuid::new_v4();
        let good = signer.mint(user, false, 600);
        assert_eq!(
            status("GET", &d.url("/api/v1/documents"), Some(&good), None).await,
            200,
            "{alg}"
        );
        // An HS256 token (even with the shared test secret) is refused: the algorithm is pinned.
        assert_eq!(
            status("GET", &d.url("/api/v1/documents"), Some(&d.token(user)), None).await,
            401,
            "{alg}"
        );
        // The CLI mints with the private key.
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_doculearn"))
            .args(["token", "--user", &user.to_string()])
            .env("DOCULEARN_AUTH__ALGORITHM", alg)
            .env("DOCULEARN_AUTH__PUBLIC_KEY_FILE", &public)
            .env("DOCULEARN_AUTH__PRIVATE_KEY_FILE", &private)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let cli = String::from_utf8(out.stdout).unwrap();
        assert_eq!(
            status("GET", &d.url("/api/v1/documents"), Some(cli.trim()), None).await,
            200
        );
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread")]
async fn websocket_limits_close_with_the_right_codes() {
    let d = Daemon::start(
        Opts::default()
            .with("DOCULEARN_WEBSOCKET__MAX_SOCKETS_PER_USER", 2)
            .with("DOCULEARN_WEBSOCKET__MAX_MESSAGE_BYTES", 1024)
            .with("DOCULEARN_WEBSOCKET__MAX_MESSAGES_PER_SEC", 5),
    )
    .await;
    let user = Uuid::new_v4();
    let token = d.token(user);
    // Sockets per user.
    let mut s1 = d.ws(user, &token).await;
    let mut s2 = d.ws(user, &token).await;
    s1.send_text("ping").await;
    assert_eq!(s1.next_text(Duration::from_secs(5)).await.as_deref(), Some("pong"));
    s2.send_text("ping").await;
    assert_eq!(s2.next_text(Duration::from_secs(5)).await.as_deref(), Some("pong"));
    let mut s3 = d.ws(user, &token).await;
    assert_eq!(
        close_code(&mut s3, Duration::from_secs(5)).await,
        Some(1008),
        "third socket"
    );
    drop(s2);
    // Message size.
    s1.send_text(&"x".repeat(2000)).await;
    assert_eq!(
        close_code(&mut s1, Duration::from_secs(5)).await,
        Some(1009),
        "oversized message"
    );
    // Message rate.
    let mut s4 = d.ws(user, &token).await;
    for _ in 0..12 {
        let _ = s4.stream.send(Message::Text("ping".into())).await;
    }
    assert_eq!(
        close_code(&mut s4, Duration::from_secs(5)).await,
        Some(1008),
        "too many messages"
    );
    // A token that expires closes its socket with a reason.
    let short = keys().mint(user, false, 2);
    let mut s5 = d.ws(user, &short).await;
    let t = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut reason = String::new();
    while let Ok(Some(Ok(msg))) =
        tokio::time::timeout(deadline.saturating_duration_since(Instant::now()), s5.stream.next()).await
    {
        if let Message::Close(Some(frame)) = msg {
            assert_eq!(u16::from(frame.code), 1008);
            reason = frame.reason.to_string();
            break;
        }
    }
    assert_eq!(reason, "token expired");
    assert!(t.elapsed() < Duration::from_secs(5));
}

/// The socket limit counts a user's sockets on every instance (leases in
/// Redis); a socket that closes gives its place back at once, and the
/// sockets of an instance killed with -9 stop counting when their leases
/// expire.
#[tokio::test(flavor = "multi_thread")]
async fn the_socket_limit_holds_across_instances() {
    let opts = Opts::default()
        .with("DOCULEARN_WEBSOCKET__MAX_SOCKETS_PER_USER", 3)
        .with("DOCULEARN_WEBSOCKET__SOCKET_LEASE_SECS", 2);
    let mut a = Daemon::start(opts.clone()).await;
    let b = a.sibling(opts);
    let user = Uuid::new_v4();
    let token = a.token(user);
    let mut open = Vec::new();
    for d in [&a, &a, &b] {
        let mut ws = d.ws(user, &token).await;
        ws.send_text("ping").await;
        assert_eq!(ws.next_text(Duration::from_secs(5)).await.as_deref(), Some("pong"));
        open.push(ws);
    }
    // A fourth, on the instance that holds only one of them.
    let refusal = |mut ws: Ws| async move {
        let deadline = Instant::now() + Duration::from_secs(5);
        while let Ok(Some(Ok(msg))) =
            tokio::time::timeout(deadline.saturating_duration_since(Instant::now()), ws.stream.next()).await
        {
            if let Message::Close(Some(frame)) = msg {
                assert_eq!(u16::from(frame.code), 1008);
                return frame.reason.to_string();
            }
        }
        String::new()
    };
    let limit = "more than 3 open sockets for this user (on all instances)";
    assert_eq!(refusal(b.ws(user, &token).await).await, limit);
    // One of the first instance's closes: its place is free for the other instance.
    drop(open.remove(0));
    let mut again = b.ws(user, &token).await;
    again.send_text("ping").await;
    assert_eq!(again.next_text(Duration::from_secs(5)).await.as_deref(), Some("pong"));
    open.push(again);
    // Renewed, the leases outlive their 2 s (b renews both of its sockets'
    // leases in one command): still no room for a fourth.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(refusal(b.ws(user, &token).await).await, limit);
    // The first instance dies with its socket still counted ...
    a.kill9();
    let mut redis = a.redis().await;
    let leases: i64 = redis::cmd("ZCARD")
        .arg(format!("{}:doculearn:sockets:{user}", a.queue))
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(leases, 3, "two sockets on b and the dead instance's one");
    // ... until its lease expires: then b takes a new socket.
    let start = Instant::now();
    loop {
        let mut ws = b.ws(user, &token).await;
        ws.send_text("ping").await;
        if ws.next_text(Duration::from_secs(3)).await.as_deref() == Some("pong") {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the dead instance's socket still counts"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn websocket_origins_are_checked() {
    let d =
        Daemon::start(Opts::default().with("DOCULEARN_HTTP__ALLOWED_ORIGINS", "[\"https://app.example.org\"]")).await;
    let user = Uuid::new_v4();
    let token = d.token(user);
    let with_origin = |origin: Option<&str>| {
        let mut req = format!("ws://{}/api/v1/ws/{user}?token={token}", d.addr)
            .into_client_request()
            .unwrap();
        if let Some(o) = origin {
            req.headers_mut().insert("origin", o.parse().unwrap());
        }
        req
    };
    let err = tokio_tungstenite::connect_async(with_origin(Some("https://evil.example")))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("403"), "{err}");
    assert!(
        tokio_tungstenite::connect_async(with_origin(Some("https://app.example.org")))
            .await
            .is_ok()
    );
    let own = format!("http://{}", d.addr);
    assert!(
        tokio_tungstenite::connect_async(with_origin(Some(&own))).await.is_ok(),
        "same origin"
    );
    assert!(
        tokio_tungstenite::connect_async(with_origin(None)).await.is_ok(),
        "no Origin: not a browser"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn outgoing_events_are_coalesced_per_job_but_stage_changes_and_the_end_are_not() {
    let d = Daemon::start(
        Opts::default()
            .arg("--role")
            .arg("api")
            .with("DOCULEARN_AUTH__SERVICE_TOKEN", SERVICE)
            .with("DOCULEARN_WEBSOCKET__MAX_EVENTS_PER_JOB_PER_SEC", 2),
    )
    .await;
    let user = Uuid::new_v4();
    let token = d.token(user);
    let (_, job) = d.upload_one(&token, "paced.txt", b"paced".to_vec()).await;
    let mut ws = d.ws(user, &token).await;
    let c = client();
    let send = |stage: &'static str, progress: f64| {
        let c = c.clone();
        let url = d.url("/api/v1/jobs/progress");
        let body = json!({"job_id": job, "user_id": user, "stage": stage, "progress": progress, "message": format!("{stage} {progress}")});
        async move {
            let r = c.post(url).bearer_auth(SERVICE).json(&body).send().await.unwrap();
            assert_eq!(r.status(), 200);
        }
    };
    send("embedding", 0.40).await;
    for i in 1..=20 {
        send("embedding", 0.40 + 0.02 * i as f64).await;
    }
    send("storing", 0.85).await;
    send("completed", 1.0).await;
    let mut got = Vec::new();
    while let Some(text) = ws.next_text(Duration::from_secs(3)).await {
        let v: Value = serde_json::from_str(&text).unwrap();
        let done = v["stage"] == "completed";
        got.push(v);
        if done {
            break;
        }
    }
    let embedding = got.iter().filter(|e| e["stage"] == "embedding").count();
    assert!(
        (1..10).contains(&embedding),
        "21 embedding events were coalesced to {embedding}"
    );
    let last_embedding = got.iter().rev().find(|e| e["stage"] == "embedding").unwrap();
    assert_eq!(
        last_embedding["progress"].as_f64().unwrap(),
        0.80,
        "the newest held-back event goes out before the stage changes: {got:?}"
    );
    assert_eq!(
        got.iter().filter(|e| e["stage"] == "storing").count(),
        1,
        "a stage change always goes out"
    );
    assert_eq!(
        got.last().unwrap()["stage"],
        "completed",
        "the final event always goes out"
    );
    // History keeps every event.
    let (_, h) = d.get_json(&token, &format!("/api/v1/jobs/{job}/history")).await;
    assert_eq!(h["events"].as_array().unwrap().len(), 1 + 21 + 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn uploads_per_minute_are_limited_with_retry_after() {
    let d = Daemon::start(Opts::default().with("DOCULEARN_HTTP__UPLOADS_PER_MINUTE", 3)).await;
    let token = d.token(Uuid::new_v4());
    // Different bytes each: the same bytes again would be a duplicate (200), still charged.
    for i in 0..3 {
        let r = d
            .upload(&token, &[(&format!("f{i}.txt"), format!("x{i}").into_bytes())])
            .await;
        assert_eq!(r.status(), 202);
    }
    let r = d.upload(&token, &[("f4.txt", b"x4".to_vec())]).await;
    assert_eq!(r.status(), 429);
    let retry: u64 = r.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "rate_limited");
    // Another user is not affected.
    let other = d.token(Uuid::new_v4());
    assert_eq!(d.upload(&other, &[("g.txt", b"y".to_vec())]).await.status(), 202);
}

/// A minimal HTTP server on 127.0.0.1: answers every request with `response`.
async fn serve_once_forever(response: Vec<u8>) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                break;
            };
            let response = response.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = sock.read(&mut buf).await;
                let _ = sock.write_all(&response).await;
                let _ = sock.shutdown().await;
            });
        }
    });
    port
}

fn http_ok(content_type: &str, body: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

#[tokio::test(flavor = "multi_thread")]
async fn url_ingestion_refuses_private_addresses_unless_allowed_and_sniffs_the_bytes() {
    let text_port = serve_once_forever(http_ok(
        "text/plain",
        b"A document served over HTTP about lighthouses and ships.",
    ))
    .await;
    // Claims HTML, is a PDF.
    let pdf = std::fs::read(corpus_file("google-docs-skia-example.pdf")).unwrap();
    let pdf_port = serve_once_forever(http_ok("text/html", &pdf)).await;
    let redirect_port =
        serve_once_forever(format!("HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:{text_port}/doc.txt\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").into_bytes()).await;

    // Default: loopback is refused.
    let d = Daemon::start(Opts::default()).await;
    let token = d.token(Uuid::new_v4());
    let (status, body) = d
        .post_json(
            &token,
            "/api/v1/documents",
            &json!({"url": format!("http://127.0.0.1:{text_port}/doc.txt")}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let job = d
        .wait_job(&token, body["job_id"].as_str().unwrap(), Duration::from_secs(30))
        .await;
    assert_eq!(job["stage"], "failed");
    assert_eq!(job["failed_stage"], "downloading");
    assert!(
        job["error"].as_str().unwrap().contains("local or private address"),
        "{job}"
    );
    for url in ["file:///etc/passwd", "gopher://127.0.0.1/", "not a url"] {
        let (status, _) = d.post_json(&token, "/api/v1/documents", &json!({ "url": url })).await;
        assert_eq!(status, 400, "{url}");
    }
    // Metadata endpoints and private ranges by address.
    for url in [
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.1/",
        "http://[::1]/",
    ] {
        let (_, body) = d.post_json(&token, "/api/v1/documents", &json!({ "url": url })).await;
        let job = d
            .wait_job(&token, body["job_id"].as_str().unwrap(), Duration::from_secs(30))
            .await;
        assert!(
            job["error"].as_str().unwrap().contains("local or private address"),
            "{url}: {job}"
        );
    }

    // Allowed by config: the server's own port, but not the port it redirects to.
    let allowed = format!("[\"127.0.0.1:{pdf_port}\", \"127.0.0.1:{redirect_port}\"]");
    let d2 = Daemon::start(Opts::default().with("DOCULEARN_PIPELINE__URL_ALLOW_PRIVATE", allowed)).await;
    let token2 = d2.token(Uuid::new_v4());
    let (_, body) = d2
        .post_json(
            &token2,
            "/api/v1/documents",
            &json!({"url": format!("http://127.0.0.1:{pdf_port}/page.html")}),
        )
        .await;
    let job = d2
        .wait_job(&token2, body["job_id"].as_str().unwrap(), Duration::from_secs(30))
        .await;
    assert_eq!(job["stage"], "completed", "{job}");
    let (_, doc) = d2
        .get_json(
            &token2,
            &format!("/api/v1/documents/{}", body["document_id"].as_str().unwrap()),
        )
        .await;
    assert_eq!(
        doc["detected_type"], "pdf",
        "sniffed from the bytes, not the header: {doc}"
    );
    assert_eq!(doc["content_type"], "application/pdf");
    let (_, body) = d2
        .post_json(
            &token2,
            "/api/v1/documents",
            &json!({"url": format!("http://127.0.0.1:{redirect_port}/go")}),
        )
        .await;
    let job = d2
        .wait_job(&token2, body["job_id"].as_str().unwrap(), Duration::from_secs(30))
        .await;
    assert_eq!(job["stage"], "failed");
    assert!(
        job["error"].as_str().unwrap().contains("local or private address"),
        "the redirect target is checked too: {job}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn secrets_never_reach_the_log_and_errors_carry_no_internals() {
    let d = Daemon::start(
        Opts::default()
            .with("DOCULEARN_AUTH__SERVICE_TOKEN", SERVICE)
            .with("RUST_LOG", "debug"),
    )
    .await;
    let user = Uuid::new_v4();
    let token = d.token(user);
    let (_, job) = d.upload_one(&token, "s.txt", b"secret-free".to_vec()).await;
    d.wait_job(&token, &job, Duration::from_secs(30)).await;
    let _ = status("GET", &d.url("/api/v1/documents"), Some("not-a-token"), None).await;
    let _ = status(
        "POST",
        &d.url("/api/v1/jobs/progress"),
        Some("wrong-service-token"),
        Some(json!({})),
    )
    .await;
    let (_, v) = d
        .post_json(&token, "/api/v1/search", &json!({"query": "x", "k": 0}))
        .await;
    assert_eq!(v["error"]["code"], "bad_request");
    let r = client()
        .get(d.url("/api/v1/documents"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert!(
        r.headers().contains_key("x-request-id"),
        "every response carries a request id"
    );
    let log = d.log_text();
    assert!(log.contains("document accepted"), "the log is there");
    for secret in [SECRET, SERVICE, token.as_str()] {
        assert!(!log.contains(secret), "a secret leaked into the log");
    }
}
