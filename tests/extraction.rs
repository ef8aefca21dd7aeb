//! What reading a document promises its user, through the real daemon:
//! text that could not be decoded is said on the job's last event, its
//! document and its job; what is not a PDF or not text fails as such while
//! real legacy encodings still read; and hostile files read at once stay
//! within one memory budget for the whole process group.

mod common;
#[path = "../crates/pdftext/tests/support/mod.rs"]
mod pdf_support;

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use serde_json::Value;
use uuid::Uuid;

const WORDS: &str = "Readable words on a page in a standard font";

async fn chunk_text(d: &Daemon, document_id: &str) -> String {
    let pool = d.db().await;
    let rows: Vec<String> =
        sqlx::query_scalar("SELECT content FROM chunks WHERE document_id = $1::uuid ORDER BY chunk_index")
            .bind(document_id)
            .fetch_all(&pool)
            .await
            .unwrap();
    rows.join("\n")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_page_that_cannot_be_decoded_is_said_on_the_event_the_document_and_the_job() {
    let d = Daemon::start(Opts::default()).await;
    let user = Uuid::new_v4();
    let token = d.token(user);
    let pdf = pdf_support::document(
        &[
            pdf_support::text_page("F1", WORDS, 20),
            pdf_support::text_page("F2", "ABCDEFGHIJKLMNOPQRSTUVWXYZ", 20),
            pdf_support::text_page("F1", WORDS, 20),
        ],
        &[pdf_support::HELVETICA.to_vec(), pdf_support::undecodable_font()],
    );
    let (document_id, job_id) = d.upload_one(&token, "private-font.pdf", pdf).await;
    let job = d.wait_job(&token, &job_id, Duration::from_secs(60)).await;
    let warning = "1 of 3 pages had text that could not be decoded (page 2)";

    // The job: completed, with the warning.
    assert_eq!(job["stage"], "completed", "{job}");
    assert_eq!(job["warnings"], serde_json::json!([warning]), "{job}");
    assert!(job["message"].as_str().unwrap().contains(warning), "{job}");
    // Its final event says so too (what sockets and the history carry).
    let (_, history) = d.get_json(&token, &format!("/api/v1/jobs/{job_id}/history")).await;
    let events = history["events"]
        .as_array()
        .or(history.as_array())
        .expect("events")
        .clone();
    let last = events.last().expect("events");
    assert_eq!(last["type"], "job_completed", "{last}");
    assert_eq!(last["details"]["warnings"][0], warning, "{last}");
    assert!(
        last["message"].as_str().unwrap().contains("completed with a warning"),
        "{last}"
    );
    let extracted = events
        .iter()
        .find(|e| e["stage"] == "extracting" && e["details"]["characters"].is_number())
        .expect("the extracting stage's result event");
    assert_eq!(extracted["details"]["warnings"][0], warning, "{extracted}");
    // Its document.
    let (_, doc) = d.get_json(&token, &format!("/api/v1/documents/{document_id}")).await;
    assert_eq!(doc["warnings"], serde_json::json!([warning]), "{doc}");
    // The readable pages were indexed.
    assert!(chunk_text(&d, &document_id).await.contains(WORDS));

    // A document that is nothing but such glyphs fails with that reason.
    let junk = pdf_support::document(
        &[
            pdf_support::text_page("F2", "ABCDEFGHIJKLMNOPQRSTUVWXYZ", 30),
            pdf_support::text_page("F2", "ZYXWVUTSRQPONMLKJIHGFEDCBA", 30),
        ],
        &[pdf_support::HELVETICA.to_vec(), pdf_support::undecodable_font()],
    );
    let (_, job_id) = d.upload_one(&token, "all-private.pdf", junk).await;
    let job = d.wait_job(&token, &job_id, Duration::from_secs(60)).await;
    assert_eq!(job["stage"], "failed", "{job}");
    assert_eq!(job["failed_stage"], "extracting", "{job}");
    let error = job["error"].as_str().unwrap();
    assert!(
        error.contains("text cannot be decoded") && error.contains("2 of 2 pages"),
        "{error}"
    );

    // A clean document carries no warning.
    let clean = pdf_support::document(
        &[pdf_support::text_page("F1", WORDS, 5)],
        &[pdf_support::HELVETICA.to_vec()],
    );
    let (_, job_id) = d.upload_one(&token, "clean.pdf", clean).await;
    let job = d.wait_job(&token, &job_id, Duration::from_secs(60)).await;
    assert_eq!(job["stage"], "completed", "{job}");
    assert_eq!(job["warnings"], serde_json::json!([]), "{job}");
    assert_eq!(job["message"], "Document processing completed successfully", "{job}");
}

/// xorshift64 noise in 0x80..=0xFF: no NUL, no ASCII, every byte a
/// character in some legacy encoding.
fn high_bytes(n: usize) -> Vec<u8> {
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            0x80 | (x >> 57) as u8
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn bytes_that_are_not_text_fail_as_such_and_real_encodings_still_read() {
    let d = Daemon::start(Opts::default()).await;
    let user = Uuid::new_v4();
    let token = d.token(user);
    let russian = "Отчёт о работе за 2024 год.\r\nРаздел 1. Введение: результаты измерений приведены ниже.\r\n";
    let utf16: Vec<u8> = russian
        .repeat(20)
        .encode_utf16()
        .flat_map(|u| u.to_le_bytes())
        .collect();
    let cp1251 = std::fs::read(corpus_file("disser-README-ru-cp1251.md")).unwrap();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("scan.pdf", vec![0xFF; 64 << 10], "is not a PDF"),
        (
            "report.pdf",
            b"Dear customer, your invoice is attached.\n".repeat(50),
            "is not a PDF",
        ),
        ("notes.txt", high_bytes(64 << 10), "the file is not text"),
        // One byte more than scan.pdf: the same bytes again would be a duplicate of it.
        ("ff.txt", vec![0xFF; (64 << 10) + 1], "one character repeated"),
        ("utf16-no-bom.txt", utf16, "completed"),
        ("disser-README-ru-cp1251.md", cp1251, "completed"),
    ];
    let mut jobs = Vec::new();
    for (name, bytes, _) in &cases {
        jobs.push(d.upload_one(&token, name, bytes.clone()).await);
    }
    for ((name, _, expect), (document_id, job_id)) in cases.iter().zip(&jobs) {
        let job = d.wait_job(&token, job_id, Duration::from_secs(60)).await;
        if *expect == "completed" {
            assert_eq!(job["stage"], "completed", "{name}: {job}");
            let text = chunk_text(&d, document_id).await;
            match *name {
                "utf16-no-bom.txt" => assert!(text.contains("Раздел 1. Введение"), "{name}: {text:.200}"),
                _ => assert!(
                    text.contains("Пакет disser предназначен для верстки дипломов"),
                    "{name}: {text:.200}"
                ),
            }
        } else {
            assert_eq!(job["stage"], "failed", "{name}: {job}");
            let error = job["error"].as_str().unwrap();
            assert!(error.contains(expect), "{name}: “{error}” lacks “{expect}”");
            assert_eq!(job["failed_stage"], "extracting", "{name}: {job}");
            eprintln!("{name}: {error}");
        }
    }
}

/// Resident memory (KiB) of `root` and every process below it.
fn group_rss_kib(root: u32) -> u64 {
    let mut parent_of = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // "pid (comm) state ppid ...": comm may contain spaces and parentheses.
        let Some(after) = stat.rfind(')').map(|i| &stat[i + 2..]) else {
            continue;
        };
        let ppid: u32 = after.split(' ').nth(1).and_then(|p| p.parse().ok()).unwrap_or(0);
        parent_of.push((pid, ppid));
    }
    let mut group = vec![root];
    let mut i = 0;
    while i < group.len() {
        let p = group[i];
        group.extend(parent_of.iter().filter(|(_, pp)| *pp == p).map(|(c, _)| *c));
        i += 1;
    }
    group
        .iter()
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/status")).ok())
        .filter_map(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse::<u64>().ok()))
        })
        .sum()
}

fn deflate(parts: usize, part: &[u8]) -> Vec<u8> {
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
    for _ in 0..parts {
        z.write_all(part).unwrap();
    }
    z.finish().unwrap()
}

/// Four kinds of decompression bomb: a content stream of 1 GiB, an object
/// stream of 1 GiB, twenty pages sharing one 30 MiB content stream (600 MiB
/// read in all), and an embedded font program of 1 GiB.
fn bombs() -> Vec<(&'static str, Vec<u8>)> {
    let gib_of_zeros = deflate(1024, &vec![0u8; 1 << 20]);
    let spaces = deflate(30, &vec![b' '; 1 << 20]);
    let page = |contents: Vec<u8>, font: &str| {
        pdf_support::build(&[
            b"<< /Type /Catalog /Pages 2 0 R >>".to_vec(),
            b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>".to_vec(),
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R /Resources << /Font << /F1 5 0 R >> >> >>".to_vec(),
            contents,
            font.as_bytes().to_vec(),
            pdf_support::stream("/Filter /FlateDecode /Length1 1000", &gib_of_zeros),
        ])
    };
    let content_bomb = page(
        pdf_support::stream("/Filter /FlateDecode", &gib_of_zeros),
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    );
    let font_bomb = page(
        pdf_support::stream("", b"BT /F1 12 Tf 72 720 Td (font bomb) Tj ET"),
        "<< /Type /Font /Subtype /Type1 /BaseFont /Bomb /FirstChar 32 /LastChar 126 \
          /FontDescriptor << /Type /FontDescriptor /FontName /Bomb /Flags 32 /FontFile 6 0 R >> >>",
    );
    let object_stream_bomb = pdf_support::build(&[
        b"<< /Type /Catalog /Pages 2 0 R >>".to_vec(),
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>".to_vec(),
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R >>".to_vec(),
        pdf_support::stream("", b"BT ET"),
        pdf_support::stream("/Type /ObjStm /N 1 /First 4 /Filter /FlateDecode", &gib_of_zeros),
    ]);
    let kids: String = (0..20).map(|i| format!("{} 0 R ", 4 + i)).collect();
    let mut bodies = vec![
        b"<< /Type /Catalog /Pages 2 0 R >>".to_vec(),
        format!("<< /Type /Pages /Kids [{kids}] /Count 20 >>").into_bytes(),
        pdf_support::stream("/Filter /FlateDecode", &spaces),
    ];
    for _ in 0..20 {
        bodies.push(b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 3 0 R >>".to_vec());
    }
    let many_pages = pdf_support::build(&bodies);
    vec![
        ("content-bomb.pdf", content_bomb),
        ("objstm-bomb.pdf", object_stream_bomb),
        ("pages-bomb.pdf", many_pages),
        ("font-bomb.pdf", font_bomb),
    ]
}

/// Four bombs uploaded together: the daemon and its extraction children,
/// sampled every 100 ms, stay under 512 MB together; each bomb fails with a
/// reason in human units, and a real document read afterwards completes.
#[tokio::test(flavor = "multi_thread")]
async fn four_bombs_at_once_keep_the_whole_process_group_under_512_mb() {
    let d = Daemon::start(Opts::default().with("DOCULEARN_QUEUE__MAX_JOBS", 4)).await;
    let user = Uuid::new_v4();
    let token = d.token(user);
    let bombs = bombs();
    let pid = d.pid();
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = std::thread::spawn({
        let stop = stop.clone();
        move || {
            let (mut peak, mut samples) = (0u64, 0u32);
            while !stop.load(Ordering::Relaxed) {
                peak = peak.max(group_rss_kib(pid));
                samples += 1;
                std::thread::sleep(Duration::from_millis(100));
            }
            (peak, samples)
        }
    });
    let files: Vec<(&str, Vec<u8>)> = bombs.iter().map(|(n, b)| (*n, b.clone())).collect();
    let resp = d.upload(&token, &files).await;
    assert_eq!(resp.status(), 202);
    let body: Value = resp.json().await.unwrap();
    let jobs: Vec<String> = body
        .as_array()
        .or(body["documents"].as_array())
        .expect("one answer per file")
        .iter()
        .map(|f| f["job_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(jobs.len(), 4, "{body}");
    let mut reasons = Vec::new();
    for ((name, _), job_id) in bombs.iter().zip(&jobs) {
        let job = d.wait_job(&token, job_id, Duration::from_secs(240)).await;
        if *name == "font-bomb.pdf" {
            // The font program is refused at its limit; the page's text is
            // still read with the standard metrics.
            assert_eq!(job["stage"], "completed", "{name}: {job}");
            reasons.push(format!("{name}: completed (its font program was left unread)"));
            continue;
        }
        assert_eq!(job["stage"], "failed", "{name}: {job}");
        let error = job["error"].as_str().unwrap().to_string();
        assert!(
            error.contains("MiB") || error.contains("damaged") || error.contains("no text"),
            "{name}: “{error}”"
        );
        let longest_number = error
            .split(|c: char| !c.is_ascii_digit())
            .map(str::len)
            .max()
            .unwrap_or(0);
        assert!(longest_number < 6, "{name}: a limit in raw bytes in “{error}”");
        reasons.push(format!("{name}: {error}"));
    }
    let (_, good) = d
        .upload_one(
            &token,
            "groff-mom-pdf.pdf",
            std::fs::read(corpus_file("groff-mom-pdf.pdf")).unwrap(),
        )
        .await;
    let job = d.wait_job(&token, &good, Duration::from_secs(60)).await;
    assert_eq!(job["stage"], "completed", "{job}");
    stop.store(true, Ordering::Relaxed);
    let (peak_kib, samples) = sampler.join().unwrap();
    eprintln!(
        "four bombs: peak RSS of daemon + extraction children {:.0} MB over {samples} samples\n  {}",
        peak_kib as f64 / 1024.0,
        reasons.join("\n  ")
    );
    assert!(samples >= 5, "the sampler ran {samples} times");
    assert!(peak_kib < 512 * 1024, "peak {} MB", peak_kib / 1024);
}
