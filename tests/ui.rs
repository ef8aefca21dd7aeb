//! The browser UI end to end: a real daemon (local model, dev mode, a fixed
//! port so the page can reconnect after a restart) and `tests/ui/ui.test.mjs`
//! driving Debian's headless Chromium through playwright-core. The script
//! asks for a daemon restart mid-job with a line on stdout; this test kills
//! the daemon with SIGKILL, starts it again on the same port and answers.
//! Screenshots of each state land in `target/ui-screenshots/`.

mod common;
#[path = "../crates/pdftext/tests/support/mod.rs"]
mod pdf_support;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use uuid::Uuid;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_ui_end_to_end() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let ui_dir = root.join("tests/ui");
    assert!(
        ui_dir.join("node_modules/playwright-core").is_dir(),
        "tests/ui/node_modules is missing: run `npm ci` in tests/ui (scripts/test.sh does)"
    );
    assert!(
        Path::new("/usr/bin/chromium").exists(),
        "/usr/bin/chromium is missing: scripts/test-tools.sh installs Debian's chromium"
    );
    let user = Uuid::new_v4();
    let port = free_port();
    let opts = Opts::local()
        .with("DOCULEARN_HTTP__LISTEN", format!("127.0.0.1:{port}"))
        .with("DOCULEARN_HTTP__DEV_MODE", "true")
        .with("DOCULEARN_HTTP__DEV_USER_ID", user)
        .with("DOCULEARN_QUEUE__LEASE_SECS", 3)
        // The first job to reach embedding hangs there, so the restart
        // happens while a card is mid-way.
        .with("DOCULEARN_FAULTS__HANG_IN_STAGE", "embedding")
        .with("DOCULEARN_FAULTS__HANG_SECS", 3600)
        .with("DOCULEARN_FAULTS__HANG_TIMES", 1);
    let mut daemon = Daemon::start(opts).await;
    let shots = root.join("target/ui-screenshots");
    let _ = std::fs::remove_dir_all(&shots);

    // A PDF whose second page's font maps to no text: its card must warn.
    let warn_pdf = Path::new(env!("CARGO_TARGET_TMPDIR")).join("private-font.pdf");
    std::fs::write(
        &warn_pdf,
        pdf_support::document(
            &[
                pdf_support::text_page("F1", "Readable words on a page in a standard font", 20),
                pdf_support::text_page("F2", "ABCDEFGHIJKLMNOPQRSTUVWXYZ", 20),
                pdf_support::text_page("F1", "More readable words on the last page", 20),
            ],
            &[pdf_support::HELVETICA.to_vec(), pdf_support::undecodable_font()],
        ),
    )
    .unwrap();
    let mut node = Command::new("node")
        .arg("ui.test.mjs")
        .current_dir(&ui_dir)
        .env("BASE_URL", format!("http://127.0.0.1:{port}"))
        .env("TOKEN", daemon.token(user))
        .env("CORPUS", corpus())
        .env("SCREENSHOTS", &shots)
        .env("WARN_PDF", &warn_pdf)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start node (Debian's nodejs)");
    let mut stdin = node.stdin.take().unwrap();
    let stdout = node.stdout.take().unwrap();
    let stderr = node.stderr.take().unwrap();
    // Everything the script prints, kept so a failure names its reason.
    let transcript = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let out = transcript.clone();
    let stdout_reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            println!("ui| {line}");
            if line.trim() == "@@restart" {
                let _ = tx.send(line.clone());
            }
            out.lock().unwrap().push(line);
        }
    });
    let err = transcript.clone();
    let stderr_reader = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("ui! {line}");
            err.lock().unwrap().push(line);
        }
    });

    let mut restarts = 0;
    let status = loop {
        if let Ok(Some(status)) = node.try_wait() {
            break status;
        }
        if rx.try_recv().is_ok() {
            restarts += 1;
            daemon.kill9();
            // The page must see its socket die and back off before the
            // daemon is back.
            tokio::time::sleep(Duration::from_secs(3)).await;
            daemon.opts = daemon.opts.clone().with("DOCULEARN_FAULTS__HANG_IN_STAGE", "");
            daemon.spawn();
            assert_eq!(daemon.addr, format!("127.0.0.1:{port}"), "restarted on the same port");
            writeln!(stdin, "@@restarted").unwrap();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let _ = stdout_reader.join();
    let _ = stderr_reader.join();
    if !status.success() {
        let lines = transcript.lock().unwrap();
        // The failing tests first (node's reporter marks them with ✖), then
        // the last lines printed.
        let failed: Vec<&String> = lines
            .iter()
            .filter(|l| l.contains('✖') || l.contains("not ok"))
            .collect();
        let tail = &lines[lines.len().saturating_sub(60)..];
        panic!(
            "the browser tests failed ({status}); daemon log: {}\nfailing: {failed:#?}\nlast lines:\n{}",
            daemon.log.display(),
            tail.join("\n")
        );
    }
    assert_eq!(restarts, 1, "the script asked for exactly one restart");

    // What the page showed is what the database holds: the job that lived
    // through the restart completed once, with all its chunks.
    let db = daemon.db().await;
    let (completed, chunks, chunk_count): (i64, i64, Option<i32>) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM job_progress_history h WHERE h.job_id = j.job_id AND h.event_type = 'job_completed'), \
                (SELECT count(*) FROM chunks c WHERE c.document_id = d.id), d.chunk_count \
         FROM documents d JOIN job_progress j ON j.document_id = d.id WHERE d.name = 'debian-manifesto.txt'",
    )
    .fetch_one(&db)
    .await
    .unwrap();
    assert_eq!(completed, 1, "one completed event for the restarted job");
    assert_eq!(
        Some(chunks as i32),
        chunk_count,
        "chunk count matches the stored chunks"
    );
    assert!(chunks > 0);

    for name in [
        "01-sign-in",
        "02-running-before-restart",
        "03-socket-down",
        "04-completed-after-restart",
        "05-pdf-embedding",
        "06-pdf-completed",
        "07-broken-failed",
        "08-search",
        "09-batch",
        "10-phone",
    ] {
        let p = shots.join(format!("{name}.png"));
        assert!(
            std::fs::metadata(&p).map(|m| m.len() > 1000).unwrap_or(false),
            "screenshot {name} was kept"
        );
    }
}
