//! OCR through the real daemon, Tesseract and poppler's pdftoppm (installed
//! by `scripts/setup.sh`): a real scanned PDF, images made from a corpus
//! page, a PDF with one text page and one scanned page (upright and
//! sideways), a page that takes too long, and OCR switched off.

mod common;
#[path = "../crates/pdftext/tests/support/mod.rs"]
mod pdf_support;

use std::io::Write;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;
use uuid::Uuid;

/// The page of the gnuplot manual the images are made from (prose).
const PAGE: &str = "23";

fn render(format: &str, dpi: u32) -> Vec<u8> {
    let dir = std::env::temp_dir().join(format!("doculearn-ocr-test-{}", Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("page");
    // Without a format flag pdftoppm writes PGM (with -gray).
    let format_flag: &[&str] = if format == "-pgm" { &[] } else { &[format] };
    let status = Command::new("pdftoppm")
        .args(["-f", PAGE, "-l", PAGE, "-r", &dpi.to_string(), "-gray", "-singlefile"])
        .args(format_flag)
        .arg(corpus_file("gnuplot-manual.pdf"))
        .arg(&out)
        .status()
        .expect("pdftoppm (scripts/setup.sh installs poppler-utils)");
    assert!(status.success());
    let ext = match format {
        "-png" => "png",
        "-jpeg" => "jpg",
        "-tiff" => "tif",
        _ => "pgm",
    };
    let bytes = std::fs::read(out.with_extension(ext)).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    bytes
}

/// What the page says, from its text layer.
fn known_text() -> String {
    let out = Command::new("pdftotext")
        .args(["-f", PAGE, "-l", PAGE, "-raw"])
        .arg(corpus_file("gnuplot-manual.pdf"))
        .arg("-")
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap()
}

/// Share of the known text's words (with a letter or digit) that OCR found.
fn recall(ocr: &str, known: &str) -> f64 {
    let words: Vec<&str> = known
        .split_whitespace()
        .filter(|w| w.chars().any(char::is_alphanumeric))
        .collect();
    pdftext::token_recall(ocr, &words.join(" "))
}

fn text_of(stored: &[(String, Option<i32>)], page: Option<i32>) -> String {
    stored
        .iter()
        .filter(|(_, p)| page.is_none() || *p == page)
        .map(|(c, _)| c.as_str())
        .collect::<Vec<_>>()
        .join("\n")
}

async fn events(d: &Daemon, token: &str, job_id: &str) -> Vec<Value> {
    let (_, history) = d.get_json(token, &format!("/api/v1/jobs/{job_id}/history")).await;
    history["events"]
        .as_array()
        .or(history.as_array())
        .expect("events")
        .clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_scanned_pdf_and_images_are_read_by_ocr_with_progress_per_page() {
    let d = Daemon::start(Opts::default()).await;
    let user = Uuid::new_v4();
    let token = d.token(user);

    // The corpus's real scan (a page of Huckleberry Finn, no text layer).
    let started = Instant::now();
    let (document_id, job_id) = d
        .upload_one(
            &token,
            "huckfinn.pdf",
            std::fs::read(corpus_file("scan-huckfinn-page-image-only.pdf")).unwrap(),
        )
        .await;
    let job = d.wait_job(&token, &job_id, Duration::from_secs(120)).await;
    eprintln!(
        "FIGURE huckfinn scan: 1 page OCR'd, job in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(job["stage"], "completed", "{job}");
    let (_, doc) = d.get_json(&token, &format!("/api/v1/documents/{document_id}")).await;
    assert_eq!(doc["ocr_pages"], serde_json::json!([1]), "{doc}");
    let confidence = doc["ocr_confidence"].as_f64().expect("a confidence");
    eprintln!("FIGURE huckfinn scan: mean confidence {confidence:.1}");
    assert!(confidence > 60.0, "{doc}");
    let text = text_of(&d.chunks(&document_id).await, Some(1));
    assert!(text.contains("MISS WATSON") && text.contains("Miss Watson"), "{text}");
    let history = events(&d, &token, &job_id).await;
    assert!(
        history.iter().any(|e| e["message"] == "OCR page 1 of 1"),
        "no per-page OCR progress: {history:?}"
    );

    // Images made from a prose page of a corpus PDF, against its text layer.
    let known = known_text();
    let webp =
        std::fs::read(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/ocr/gnuplot-page23.webp"))
            .unwrap();
    for (name, bytes) in [
        ("page.png", render("-png", 200)),
        ("page.jpg", render("-jpeg", 200)),
        ("page.tif", render("-tiff", 200)),
        ("page.webp", webp),
    ] {
        let started = Instant::now();
        let (document_id, job_id) = d.upload_one(&token, name, bytes).await;
        let job = d.wait_job(&token, &job_id, Duration::from_secs(120)).await;
        assert_eq!(job["stage"], "completed", "{name}: {job}");
        let text = text_of(&d.chunks(&document_id).await, None);
        let r = recall(&text, &known);
        eprintln!(
            "FIGURE {name}: word recall {r:.3} against the page's text layer, job in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        assert!(r >= 0.9, "{name}: recall {r}\n{text}");
        let (_, doc) = d.get_json(&token, &format!("/api/v1/documents/{document_id}")).await;
        assert_eq!(doc["detected_type"], "image", "{doc}");
        assert_eq!(doc["ocr_pages"], serde_json::json!([1]), "{doc}");
    }
}

/// A multi-page, uncompressed, 8-bit grey TIFF of the given pages.
fn tiff_of(pages: &[(usize, usize, Vec<u8>)]) -> Vec<u8> {
    let mut out = b"II*\x00\x00\x00\x00\x00".to_vec();
    let mut link = 4; // where the offset of the next IFD goes
    for (w, h, px) in pages {
        let strip = out.len() as u32;
        out.extend_from_slice(px);
        if out.len() % 2 == 1 {
            out.push(0);
        }
        let ifd = out.len() as u32;
        out[link..link + 4].copy_from_slice(&ifd.to_le_bytes());
        let entries: [(u16, u16, u32); 9] = [
            (256, 4, *w as u32),
            (257, 4, *h as u32),
            (258, 3, 8),
            (259, 3, 1),
            (262, 3, 1),
            (273, 4, strip),
            (277, 3, 1),
            (278, 4, *h as u32),
            (279, 4, (w * h) as u32),
        ];
        out.extend_from_slice(&(entries.len() as u16).to_le_bytes());
        for (tag, kind, value) in entries {
            out.extend_from_slice(&tag.to_le_bytes());
            out.extend_from_slice(&kind.to_le_bytes());
            out.extend_from_slice(&1u32.to_le_bytes());
            if kind == 3 {
                out.extend_from_slice(&(value as u16).to_le_bytes());
                out.extend_from_slice(&[0, 0]);
            } else {
                out.extend_from_slice(&value.to_le_bytes());
            }
        }
        link = out.len();
        out.extend_from_slice(&[0, 0, 0, 0]);
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn a_multi_page_tiff_is_read_page_by_page() {
    let d = Daemon::start(Opts::default()).await;
    let user = Uuid::new_v4();
    let token = d.token(user);
    let page = pgm_pixels(&render("-pgm", 150));
    let tiff = tiff_of(&[page.clone(), page]);
    let (document_id, job_id) = d.upload_one(&token, "two-pages.tif", tiff).await;
    let job = d.wait_job(&token, &job_id, Duration::from_secs(120)).await;
    assert_eq!(job["stage"], "completed", "{job}");
    let (_, doc) = d.get_json(&token, &format!("/api/v1/documents/{document_id}")).await;
    assert_eq!(doc["pages"], 2, "{doc}");
    assert_eq!(doc["ocr_pages"], serde_json::json!([1, 2]), "{doc}");
    let stored = d.chunks(&document_id).await;
    // Both pages are the same page: every word of it twice. (A chunk is
    // tagged with the page it starts on, so page 2's first lines sit in a
    // chunk of page 1.)
    let known = known_text();
    let r = recall(&text_of(&stored, None), &format!("{known}\n{known}"));
    eprintln!("FIGURE two-page TIFF: recall {r:.3} of both pages' words");
    assert!(r >= 0.9, "recall {r}");
    assert!(stored.iter().any(|(_, p)| *p == Some(2)), "chunks of page 2");
    let history = events(&d, &token, &job_id).await;
    assert!(
        history.iter().any(|e| e["message"] == "OCR of the image's 2 pages"),
        "{history:?}"
    );
}

/// Raw 8-bit grey pixels of a PGM (P5) file.
fn pgm_pixels(pgm: &[u8]) -> (usize, usize, Vec<u8>) {
    let mut fields = Vec::new();
    let mut i = 2;
    while fields.len() < 3 {
        while pgm[i].is_ascii_whitespace() {
            i += 1;
        }
        let start = i;
        while !pgm[i].is_ascii_whitespace() {
            i += 1;
        }
        fields.push(std::str::from_utf8(&pgm[start..i]).unwrap().parse::<usize>().unwrap());
    }
    let (w, h) = (fields[0], fields[1]);
    (w, h, pgm[i + 1..i + 1 + w * h].to_vec())
}

/// The pixels turned a quarter clockwise, as a page fed into a scanner sideways.
fn rotate(w: usize, h: usize, px: &[u8]) -> (usize, usize, Vec<u8>) {
    let mut out = vec![0u8; w * h];
    for y in 0..h {
        for x in 0..w {
            out[x * h + (h - 1 - y)] = px[y * w + x];
        }
    }
    (h, w, out)
}

fn deflate(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// A PDF of a text page followed by image-only pages (each image filling
/// its page).
fn mixed_pdf(text: &str, scans: &[(usize, usize, Vec<u8>)]) -> Vec<u8> {
    let n = 1 + scans.len();
    let kids: String = (0..n).map(|i| format!("{} 0 R ", 3 + i)).collect();
    let mut bodies = vec![
        b"<< /Type /Catalog /Pages 2 0 R >>".to_vec(),
        format!("<< /Type /Pages /Kids [{kids}] /Count {n} >>").into_bytes(),
    ];
    // Objects: pages 3.., then the text page's content and font, then per
    // scan its content and image.
    let text_content = 3 + n;
    let font = text_content + 1;
    bodies.push(
        format!(
            "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents {text_content} 0 R /Resources << /Font << /F1 {font} 0 R >> >> >>"
        )
        .into_bytes(),
    );
    for (k, (w, h, _)) in scans.iter().enumerate() {
        let content = font + 1 + 2 * k;
        let (pw, ph) = if w > h { (792, 612) } else { (612, 792) };
        bodies.push(
            format!(
                "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 {pw} {ph}] /Contents {content} 0 R /Resources << /XObject << /Im1 {} 0 R >> >> >>",
                content + 1
            )
            .into_bytes(),
        );
    }
    bodies.push(pdf_support::stream("", &pdf_support::text_page("F1", text, 10)));
    bodies.push(pdf_support::HELVETICA.to_vec());
    for (w, h, px) in scans {
        let (pw, ph) = if w > h { (792, 612) } else { (612, 792) };
        bodies.push(pdf_support::stream(
            "",
            format!("q {pw} 0 0 {ph} 0 0 cm /Im1 Do Q").as_bytes(),
        ));
        bodies.push(pdf_support::stream(
            &format!("/Type /XObject /Subtype /Image /Width {w} /Height {h} /ColorSpace /DeviceGray /BitsPerComponent 8 /Filter /FlateDecode"),
            &deflate(px),
        ));
    }
    pdf_support::build(&bodies)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_mixed_pdf_keeps_its_text_layer_and_reads_its_scans_upright_or_sideways() {
    let d = Daemon::start(Opts::default()).await;
    let user = Uuid::new_v4();
    let token = d.token(user);
    let (w, h, px) = pgm_pixels(&render("-pgm", 200));
    let sideways = rotate(w, h, &px);
    let words = "This first page has a real text layer that must be kept as it is";
    let pdf = mixed_pdf(words, &[(w, h, px), sideways]);
    let started = Instant::now();
    let (document_id, job_id) = d.upload_one(&token, "mixed.pdf", pdf).await;
    let job = d.wait_job(&token, &job_id, Duration::from_secs(180)).await;
    eprintln!(
        "FIGURE mixed PDF: 2 of 3 pages OCR'd, job in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(job["stage"], "completed", "{job}");
    assert_eq!(job["warnings"], serde_json::json!([]), "{job}");
    let (_, doc) = d.get_json(&token, &format!("/api/v1/documents/{document_id}")).await;
    assert_eq!(doc["ocr_pages"], serde_json::json!([2, 3]), "{doc}");
    let stored = d.chunks(&document_id).await;
    assert!(text_of(&stored, Some(1)).contains(words), "the text layer is kept");
    let known = known_text();
    let upright = recall(&text_of(&stored, Some(2)), &known);
    let turned = recall(&text_of(&stored, Some(3)), &known);
    eprintln!("FIGURE mixed PDF: recall upright {upright:.3}, sideways {turned:.3}");
    assert!(upright >= 0.9, "upright scan: recall {upright}");
    assert!(turned >= 0.9, "sideways scan: recall {turned}");
    let history = events(&d, &token, &job_id).await;
    for m in ["OCR page 1 of 2", "OCR page 2 of 2"] {
        assert!(history.iter().any(|e| e["message"] == m), "no “{m}”");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_page_that_takes_too_long_is_skipped_with_a_warning_and_ocr_off_says_so() {
    // 600 dpi makes one page take several seconds; the limit is one.
    let d = Daemon::start(
        Opts::default()
            .with("DOCULEARN_PIPELINE__OCR_DPI", 600)
            .with("DOCULEARN_PIPELINE__OCR_PAGE_TIMEOUT_SECS", 1),
    )
    .await;
    let user = Uuid::new_v4();
    let token = d.token(user);
    let (w, h, px) = pgm_pixels(&render("-pgm", 200));
    let words = "A page of real text before a scan that takes too long";
    let (_, job_id) = d.upload_one(&token, "slow.pdf", mixed_pdf(words, &[(w, h, px)])).await;
    let job = d.wait_job(&token, &job_id, Duration::from_secs(120)).await;
    assert_eq!(job["stage"], "completed", "{job}");
    assert_eq!(
        job["warnings"],
        serde_json::json!(["OCR of page 2 took longer than 1 s and was skipped"]),
        "{job}"
    );
    // The scan alone: nothing could be read, and the job says why.
    let (_, job_id) = d
        .upload_one(
            &token,
            "huckfinn.pdf",
            std::fs::read(corpus_file("scan-huckfinn-page-image-only.pdf")).unwrap(),
        )
        .await;
    let job = d.wait_job(&token, &job_id, Duration::from_secs(120)).await;
    assert_eq!(job["stage"], "failed", "{job}");
    assert!(
        job["error"].as_str().unwrap().contains("took longer than 1 s a page"),
        "{job}"
    );

    let off = Daemon::start(Opts::default().with("DOCULEARN_PIPELINE__OCR", false)).await;
    let token = off.token(user);
    let (_, job_id) = off
        .upload_one(
            &token,
            "huckfinn.pdf",
            std::fs::read(corpus_file("scan-huckfinn-page-image-only.pdf")).unwrap(),
        )
        .await;
    let job = off.wait_job(&token, &job_id, Duration::from_secs(60)).await;
    assert!(job["error"].as_str().unwrap().contains("no text layer"), "{job}");
    let (_, job_id) = off.upload_one(&token, "page.png", render("-png", 100)).await;
    let job = off.wait_job(&token, &job_id, Duration::from_secs(60)).await;
    let error = job["error"].as_str().unwrap();
    assert!(
        error.contains("is a PNG image") && error.contains("OCR, which is switched off"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_blank_page_is_not_sent_to_ocr() {
    let d = Daemon::start(Opts::default()).await;
    let user = Uuid::new_v4();
    let token = d.token(user);
    let words = "Only the first page has words; the second is blank on purpose";
    let pdf = pdf_support::document(
        &[pdf_support::text_page("F1", words, 5), b"q Q".to_vec()],
        &[pdf_support::HELVETICA.to_vec()],
    );
    let (document_id, job_id) = d.upload_one(&token, "blank-page.pdf", pdf).await;
    let job = d.wait_job(&token, &job_id, Duration::from_secs(60)).await;
    assert_eq!(job["stage"], "completed", "{job}");
    let (_, doc) = d.get_json(&token, &format!("/api/v1/documents/{document_id}")).await;
    assert_eq!(doc["ocr_pages"], serde_json::json!([]), "{doc}");
    let history = events(&d, &token, &job_id).await;
    assert!(
        !history
            .iter()
            .any(|e| e["message"].as_str().unwrap_or("").starts_with("OCR")),
        "{history:?}"
    );
}

/// Processes whose parent is `pid` (every thread's children).
fn children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in tasks.flatten() {
            if let Ok(list) = std::fs::read_to_string(t.path().join("children")) {
                out.extend(list.split_whitespace().filter_map(|p| p.parse::<u32>().ok()));
            }
        }
    }
    out
}

fn cmdline(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default()
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.split(") ").nth(1).unwrap_or("").starts_with('Z'))
        .unwrap_or(false)
}

/// Cancelling a job in the middle of a page ends the OCR worker and the
/// tools it runs (they are its process group), not only the worker.
#[tokio::test(flavor = "multi_thread")]
async fn cancelling_a_job_mid_page_leaves_no_ocr_tool_running() {
    let d = Daemon::start(
        Opts::default()
            .with("DOCULEARN_PIPELINE__OCR_DPI", 600)
            .with("DOCULEARN_PIPELINE__OCR_PAGE_TIMEOUT_SECS", 120),
    )
    .await;
    let user = Uuid::new_v4();
    let token = d.token(user);
    let (_, job_id) = d
        .upload_one(
            &token,
            "huckfinn.pdf",
            std::fs::read(corpus_file("scan-huckfinn-page-image-only.pdf")).unwrap(),
        )
        .await;
    // Wait until the worker runs a tool.
    let deadline = Instant::now() + Duration::from_secs(60);
    let tools = loop {
        let workers: Vec<u32> = children(d.pid())
            .into_iter()
            .filter(|p| cmdline(*p).contains("ocr-worker"))
            .collect();
        let tools: Vec<u32> = workers.iter().flat_map(|w| children(*w)).collect();
        if !tools.is_empty() {
            break tools;
        }
        assert!(Instant::now() < deadline, "no OCR tool started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let (status, body) = d
        .post_json(&token, &format!("/api/v1/jobs/{job_id}/cancel"), &serde_json::json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    let deadline = Instant::now() + Duration::from_secs(5);
    while tools.iter().any(|p| alive(*p)) {
        assert!(
            Instant::now() < deadline,
            "OCR tools still running after the cancel: {:?}",
            tools.iter().map(|p| cmdline(*p)).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
