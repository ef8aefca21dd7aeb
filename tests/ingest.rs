//! `doculearn ingest FILE...` against a real daemon: the summary lines, the
//! exit status, the stage lines it prints when not on a terminal, minting a
//! token from the config, files already uploaded (and `--on-duplicate`), and
//! following a job through a daemon restart.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;
use uuid::Uuid;

fn ingest(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_doculearn"));
    cmd.arg("ingest").args(args);
    for (k, _) in std::env::vars() {
        if k.starts_with("DOCULEARN_") {
            cmd.env_remove(&k);
        }
    }
    cmd.envs(env.iter().copied());
    cmd.output().expect("run doculearn ingest")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[tokio::test]
async fn ingest_reports_each_file_and_fails_when_one_fails() {
    let d = Daemon::start(Opts::default()).await;
    let user = Uuid::new_v4();
    let token = d.token(user);
    let dir = tempdir();
    let broken = dir.join("broken.pdf");
    std::fs::write(&broken, b"%PDF-1.4\nnot really a PDF\n").unwrap();
    let pdf = corpus_file("gofpdf-tables.pdf");
    let txt = corpus_file("debian-manifesto.txt");
    let server = format!("http://{}", d.addr);

    let out = ingest(
        &[
            "--server",
            &server,
            "--token",
            &token,
            pdf.to_str().unwrap(),
            txt.to_str().unwrap(),
            broken.to_str().unwrap(),
        ],
        &[],
    );
    let stdout = text(&out.stdout);
    let stderr = text(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "one file failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );

    // The summary: one line per file, in the order given, with the chunk
    // count the database holds.
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    let db = d.db().await;
    for (line, name) in lines.iter().zip(["gofpdf-tables.pdf", "debian-manifesto.txt"]) {
        let chunks: i32 = sqlx::query_scalar("SELECT chunk_count FROM documents WHERE name = $1")
            .bind(name)
            .fetch_one(&db)
            .await
            .unwrap();
        let prefix = format!("✓ {name}: completed in ");
        assert!(line.starts_with(&prefix), "{line}");
        assert!(line.ends_with(&format!(" s with {chunks} chunks")), "{line}");
        let secs: f64 = line[prefix.len()..].split(' ').next().unwrap().parse().unwrap();
        assert!(secs > 0.0 && secs < 120.0, "{line}");
    }
    assert!(
        lines[2].starts_with("✗ broken.pdf: failed: the PDF is damaged") && lines[2].ends_with("(in extracting)"),
        "{}",
        lines[2]
    );

    // Off a terminal, each stage change is a plain line on stderr.
    for stage in ["queued", "extracting", "chunking", "embedding", "storing", "completed"] {
        assert!(
            stderr.contains(&format!("gofpdf-tables.pdf: {stage}: ")),
            "no {stage} line:\n{stderr}"
        );
    }
    assert!(stderr.contains("broken.pdf: failed: the PDF is damaged"), "{stderr}");

    // All good: exit 0. The token here is minted from the configured secret;
    // the file is uploaded once more on purpose (`keep`: a second document).
    let out = ingest(
        &[
            "--server",
            &server,
            "--user",
            &user.to_string(),
            "--on-duplicate",
            "keep",
            pdf.to_str().unwrap(),
        ],
        &[("DOCULEARN_AUTH__JWT_SECRET", SECRET)],
    );
    assert_eq!(out.status.code(), Some(0), "{}{}", text(&out.stdout), text(&out.stderr));
    assert!(text(&out.stdout).starts_with("✓ gofpdf-tables.pdf: completed in "));

    // Refusals are explained, and nothing is uploaded.
    let out = ingest(&["--server", &server, pdf.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("give --token"), "{}", text(&out.stderr));
    let out = ingest(&["--server", &server, "--token", "garbage", pdf.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("not a JWT"), "{}", text(&out.stderr));
    let missing = dir.join("missing.pdf");
    let out = ingest(
        &["--server", &server, "--token", &token, missing.to_str().unwrap()],
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stdout).starts_with("✗ missing.pdf: failed: cannot read"),
        "{}",
        text(&out.stdout)
    );
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM documents")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(n, 4, "three uploads, then one more; the refused runs uploaded nothing");
}

/// A file already uploaded is said to be so, with its document's state, and
/// not waited for; `--on-duplicate replace` processes that document again
/// and follows the new run; a refused value is explained before any upload.
#[tokio::test]
async fn ingest_says_already_uploaded_and_replaces_on_request() {
    let d = Daemon::start(Opts::default()).await;
    let token = d.token(Uuid::new_v4());
    let server = format!("http://{}", d.addr);
    let db = d.db().await;
    let txt = corpus_file("debian-manifesto.txt");
    let run = |extra: &[&str]| {
        let mut args = vec!["--server", server.as_str(), "--token", token.as_str()];
        args.extend_from_slice(extra);
        args.push(txt.to_str().unwrap());
        ingest(&args, &[])
    };

    let out = run(&[]);
    assert_eq!(out.status.code(), Some(0), "{}{}", text(&out.stdout), text(&out.stderr));
    assert!(text(&out.stdout).starts_with("✓ debian-manifesto.txt: completed in "));
    let (doc,): (Uuid,) = sqlx::query_as("SELECT id FROM documents").fetch_one(&db).await.unwrap();

    // Again: "already uploaded", the document and its state; nothing new.
    let out = run(&[]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert_eq!(
        stdout.trim_end(),
        format!("= debian-manifesto.txt: already uploaded as document {doc} (completed)")
    );
    assert!(text(&out.stderr).contains("debian-manifesto.txt: already uploaded: "));
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM documents")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(n, 1);

    // Replace: the same document runs again, and ingest waits for that run
    // (not the earlier run's completed event).
    let out = run(&["--on-duplicate", "replace"]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert!(stdout.starts_with("✓ debian-manifesto.txt: completed in "), "{stdout}");
    let (attempt, completions): (i32, i64) = sqlx::query_as(
        "SELECT j.attempt, (SELECT count(*) FROM job_progress_history h WHERE h.job_id = j.job_id \
         AND h.event_type = 'job_completed') FROM job_progress j WHERE j.document_id = $1",
    )
    .bind(doc)
    .fetch_one(&db)
    .await
    .unwrap();
    assert_eq!(
        (attempt, completions),
        (2, 2),
        "a second run of the same job, to its end"
    );
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM documents")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(n, 1);

    let out = run(&["--on-duplicate", "overwrite"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("replace"), "{}", text(&out.stderr));
}

#[tokio::test]
async fn ingest_follows_a_job_through_a_daemon_restart() {
    let port = free_port();
    let mut d = Daemon::start(
        Opts::default()
            .with("DOCULEARN_HTTP__LISTEN", format!("127.0.0.1:{port}"))
            .with("DOCULEARN_QUEUE__LEASE_SECS", 3)
            .with("DOCULEARN_FAULTS__HANG_IN_STAGE", "embedding")
            .with("DOCULEARN_FAULTS__HANG_SECS", 3600)
            .with("DOCULEARN_FAULTS__HANG_TIMES", 1),
    )
    .await;
    let token = d.token(Uuid::new_v4());
    let txt = corpus_file("debian-manifesto.txt");
    let mut child = Command::new(env!("CARGO_BIN_EXE_doculearn"))
        .args([
            "ingest",
            "--server",
            &format!("http://127.0.0.1:{port}"),
            "--token",
            &token,
        ])
        .arg(&txt)
        .env_remove("DOCULEARN_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            all.push_str(&line);
            all.push('\n');
            let _ = tx.send(line);
        }
        all
    });
    // Wait until the job hangs in embedding, then kill the daemon under it.
    let start = Instant::now();
    loop {
        let line = rx.recv_timeout(Duration::from_secs(60)).expect("ingest reports stages");
        if line.starts_with("debian-manifesto.txt: embedding: ") {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(60));
    }
    d.kill9();
    std::thread::sleep(Duration::from_secs(2));
    d.opts = d.opts.clone().with("DOCULEARN_FAULTS__HANG_IN_STAGE", "");
    d.spawn();

    let out = child.wait_with_output().unwrap();
    let stderr = reader.join().unwrap();
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.starts_with("✓ debian-manifesto.txt: completed in "), "{stdout}");
    assert!(
        stderr.contains("socket: reconnecting"),
        "the socket dropped and came back:\n{stderr}"
    );
    let db = d.db().await;
    let completed: i64 =
        sqlx::query_scalar("SELECT count(*) FROM job_progress_history WHERE event_type = 'job_completed'")
            .fetch_one(&db)
            .await
            .unwrap();
    assert_eq!(completed, 1);
}

fn tempdir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("dl-ingest-{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn cli(command: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_doculearn"));
    cmd.arg(command).args(args);
    for (k, _) in std::env::vars() {
        if k.starts_with("DOCULEARN_") {
            cmd.env_remove(&k);
        }
    }
    cmd.envs(env.iter().copied());
    cmd.output().expect("run doculearn")
}

/// From a fresh shell: a token and the address are all a client needs (no
/// JWT secret, no database URL, no --server: the address comes from
/// DOCULEARN_SERVER or http.listen); `search` prints the passages.
#[tokio::test]
async fn clients_need_only_a_token_and_search_prints_passages() {
    let d = Daemon::start(Opts::default()).await;
    let user = Uuid::new_v4();
    let token = d.token(user);
    let txt = corpus_file("debian-manifesto.txt");
    let listen = d.addr.to_string();
    // The address from the layered http.listen, nothing else configured.
    let out = cli(
        "ingest",
        &["--token", &token, txt.to_str().unwrap()],
        &[("DOCULEARN_HTTP__LISTEN", &listen)],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout:\n{}\nstderr:\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(
        text(&out.stdout).contains("debian-manifesto.txt"),
        "{}",
        text(&out.stdout)
    );

    // The address from DOCULEARN_SERVER, the token from DOCULEARN_TOKEN.
    let server = format!("http://{listen}");
    let out = cli(
        "search",
        &["-k", "2", "Debian", "will", "be", "distributed"],
        &[("DOCULEARN_SERVER", &server), ("DOCULEARN_TOKEN", &token)],
    );
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout:\n{stdout}\nstderr:\n{}",
        text(&out.stderr)
    );
    assert!(stdout.starts_with("1. debian-manifesto.txt (score "), "{stdout}");
    assert_eq!(
        stdout
            .lines()
            .filter(|l| l.starts_with(|c: char| c.is_ascii_digit()))
            .count(),
        2,
        "{stdout}"
    );

    // Another user's search finds nothing of it.
    let stranger = d.token(Uuid::new_v4());
    let out = cli("search", &["--server", &server, "--token", &stranger, "Debian"], &[]);
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&out.stdout).contains("no passages match"), "{}", text(&out.stdout));

    // No token: said in one line, exit status 2; a bad token: the daemon's reason.
    let out = cli("search", &["--server", &server, "Debian"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("search: give --token"),
        "{}",
        text(&out.stderr)
    );
    let out = cli(
        "search",
        &["--server", &server, "--token", "not-a-token", "Debian"],
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("401"), "{}", text(&out.stderr));
}
