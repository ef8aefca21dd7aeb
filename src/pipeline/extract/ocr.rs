//! OCR of scanned pages and images with Tesseract (Debian's `tesseract-ocr`).
//!
//! A page reaches Tesseract as an image: a PDF page is rendered by poppler's
//! `pdftoppm` (8-bit grey at `ocr_dpi`), which handles every image encoding
//! a scan may use (JPEG, Flate, CCITT, JBIG2, JPX) and the page's rotation;
//! an uploaded image is given to Tesseract as it is. Each page runs in its own
//! child (`doculearn ocr-worker`) with a memory limit reserved from the
//! extraction budget, a CPU limit and a wall-clock timeout; a page that times
//! out is a warning on the job, not a failed document.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// The text Tesseract read on one page.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct OcrPage {
    pub text: String,
    /// Mean word confidence, 0–100 (None: no words).
    pub confidence: Option<f32>,
    pub words: usize,
    /// The text of each page when the image had several (a multi-page TIFF).
    #[serde(default)]
    pub by_page: Vec<String>,
}

/// What `ocr-worker` writes on stdout.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OcrReply {
    Ok(OcrPage),
    Error(String),
}

/// How one page is OCR'd.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OcrJob {
    /// "pdf" (render `page` first) or "image".
    pub kind: String,
    /// 1-based page of a PDF.
    pub page: u32,
    /// Tesseract's language list ("eng", "eng+deu").
    pub languages: String,
    pub dpi: u32,
    /// Wall-clock limit of each tool run, seconds.
    pub timeout_secs: u64,
}

/// Tesseract's TSV output as text: words of a line joined by spaces, lines
/// by newlines, paragraphs and blocks by a blank line; the mean confidence
/// of the words.
pub fn parse_tsv(tsv: &str) -> OcrPage {
    let mut by_page: Vec<String> = Vec::new();
    let mut last: Option<(u32, u32, u32, u32)> = None;
    let (mut sum, mut words) = (0f64, 0usize);
    for line in tsv.lines().skip(1) {
        let cols: Vec<&str> = line.splitn(12, '\t').collect();
        if cols.len() < 12 || cols[0] != "5" {
            continue;
        }
        let word = cols[11].trim();
        let conf: f64 = cols[10].parse().unwrap_or(-1.0);
        if word.is_empty() || conf < 0.0 {
            continue;
        }
        let num = |i: usize| cols[i].parse::<u32>().unwrap_or(0);
        let key = (num(1), num(2), num(3), num(4));
        // Pages are numbered from 1; a page without words stays empty.
        let page = (key.0.max(1) as usize).min(10_000);
        if by_page.len() < page {
            by_page.resize(page, String::new());
            last = None;
        }
        let text = &mut by_page[page - 1];
        if let Some(prev) = last {
            if (prev.0, prev.1, prev.2) != (key.0, key.1, key.2) {
                text.push_str("\n\n");
            } else if prev.3 != key.3 {
                text.push('\n');
            } else {
                text.push(' ');
            }
        }
        text.push_str(word);
        last = Some(key);
        sum += conf;
        words += 1;
    }
    for page in &mut by_page {
        if !page.is_empty() {
            page.push('\n');
        }
    }
    OcrPage {
        text: by_page
            .iter()
            .map(|p| p.trim_end())
            .filter(|p| !p.is_empty())
            .collect::<Vec<_>>()
            .join("\n\n")
            + if words > 0 { "\n" } else { "" },
        confidence: (words > 0).then(|| (sum / words as f64) as f32),
        words,
        by_page: if by_page.len() > 1 { by_page } else { Vec::new() },
    }
}

/// Pages of a TIFF (its chain of image file directories); 1 for anything
/// else or a broken chain.
pub fn tiff_pages(b: &[u8]) -> usize {
    let le = match b.get(..4) {
        Some(b"II*\x00") => true,
        Some(b"MM\x00*") => false,
        _ => return 1,
    };
    let u16_at = |o: usize| {
        b.get(o..o + 2).map(|s| {
            if le {
                u16::from_le_bytes([s[0], s[1]])
            } else {
                u16::from_be_bytes([s[0], s[1]])
            }
        })
    };
    let u32_at = |o: usize| {
        b.get(o..o + 4).map(|s| {
            let a = [s[0], s[1], s[2], s[3]];
            if le {
                u32::from_le_bytes(a)
            } else {
                u32::from_be_bytes(a)
            }
        })
    };
    let mut seen = std::collections::HashSet::new();
    let mut offset = u32_at(4).unwrap_or(0) as usize;
    while offset != 0 && seen.len() < 10_000 && seen.insert(offset) {
        let Some(entries) = u16_at(offset) else { break };
        match u32_at(offset + 2 + 12 * entries as usize) {
            Some(next) => offset = next as usize,
            None => break,
        }
    }
    seen.len().max(1)
}

/// Runs a tool with a wall-clock limit, killing it when it overruns.
fn run_tool(mut cmd: Command, what: &str, timeout: Duration) -> Result<Vec<u8>, String> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{what} could not be started ({e}); is it installed? (scripts/setup.sh installs it)"))?;
    let mut stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    let out = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stdout.read_to_end(&mut buf);
        buf
    });
    let err = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = (&mut stderr).take(64 << 10).read_to_end(&mut buf);
        buf
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            break status;
        }
        if started.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("timeout: {what} took longer than {} s", timeout.as_secs()));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = out.join().unwrap_or_default();
    let err = err.join().unwrap_or_default();
    if !status.success() {
        let reason = String::from_utf8_lossy(&err);
        let reason = reason.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("").trim();
        return Err(format!(
            "{what} failed ({status}){}",
            if reason.is_empty() {
                String::new()
            } else {
                format!(": {reason}")
            }
        ));
    }
    Ok(out)
}

/// OCRs one page of `bytes` (in this process: call it from the worker).
pub fn ocr_bytes(bytes: &[u8], job: &OcrJob, dir: &Path) -> Result<OcrPage, String> {
    let timeout = Duration::from_secs(job.timeout_secs.max(1));
    let image = if job.kind == "pdf" {
        let input = dir.join("in.pdf");
        std::fs::write(&input, bytes).map_err(|e| e.to_string())?;
        let mut cmd = Command::new("pdftoppm");
        cmd.arg("-f")
            .arg(job.page.to_string())
            .arg("-l")
            .arg(job.page.to_string())
            .arg("-r")
            .arg(job.dpi.to_string())
            .arg("-gray")
            .arg("-png")
            .arg("-singlefile")
            .arg(&input)
            .arg(dir.join("page"));
        run_tool(cmd, "pdftoppm (rendering the page)", timeout)?;
        dir.join("page.png")
    } else {
        let input = dir.join("image");
        std::fs::write(&input, bytes).map_err(|e| e.to_string())?;
        input
    };
    let mut cmd = Command::new("tesseract");
    // --psm 1: page segmentation with orientation detection, so a page
    // scanned sideways is turned before it is read.
    cmd.arg(&image)
        .arg("stdout")
        .arg("-l")
        .arg(&job.languages)
        .arg("--psm")
        .arg("1")
        .arg("tsv")
        // One thread: OCR shares two cores with the rest of the pipeline.
        .env("OMP_THREAD_LIMIT", "1");
    let tsv = run_tool(cmd, "tesseract", timeout)?;
    Ok(parse_tsv(&String::from_utf8_lossy(&tsv)))
}

/// Body of `doculearn ocr-worker`: sets its limits (inherited by pdftoppm
/// and tesseract), reads the file on stdin, answers one [`OcrReply`].
pub fn worker_main(job_json: &str, memory_mb: u64, cpu_secs: u64) -> std::io::Result<()> {
    let bytes_limit = memory_mb.saturating_mul(1024 * 1024);
    let _ = rlimit::setrlimit(rlimit::Resource::DATA, bytes_limit, bytes_limit);
    let _ = rlimit::setrlimit(rlimit::Resource::CPU, cpu_secs, cpu_secs + 1);
    let _ = rlimit::setrlimit(rlimit::Resource::CORE, 0, 0);
    let job: OcrJob = serde_json::from_str(job_json).map_err(std::io::Error::other)?;
    let mut input = Vec::new();
    std::io::stdin().read_to_end(&mut input)?;
    let dir = std::env::temp_dir().join(format!("doculearn-ocr-{}-{}", std::process::id(), job.page));
    std::fs::create_dir_all(&dir)?;
    let reply = match ocr_bytes(&input, &job, &dir) {
        Ok(page) => OcrReply::Ok(page),
        Err(e) => OcrReply::Error(e),
    };
    let _ = std::fs::remove_dir_all(&dir);
    let mut stdout = std::io::stdout().lock();
    serde_json::to_writer(&mut stdout, &reply).map_err(std::io::Error::other)?;
    stdout.flush()
}

/// Whether Tesseract and the named languages are installed: `Err` says what
/// is missing, in one line.
pub fn check_installed(languages: &str) -> Result<(), String> {
    let out = Command::new("tesseract")
        .arg("--list-langs")
        .output()
        .map_err(|_| "tesseract is not installed (scripts/setup.sh installs tesseract-ocr)".to_string())?;
    let listed = String::from_utf8_lossy(&out.stdout);
    let have: Vec<&str> = listed.lines().skip(1).map(str::trim).collect();
    let missing: Vec<&str> = languages.split('+').filter(|l| !have.contains(l)).collect();
    if !missing.is_empty() {
        return Err(format!(
            "OCR language data missing: {} (apt-get install {})",
            missing.join(", "),
            missing
                .iter()
                .map(|l| format!("tesseract-ocr-{l}"))
                .collect::<Vec<_>>()
                .join(" ")
        ));
    }
    if Command::new("pdftoppm").arg("-v").output().is_err() {
        return Err("pdftoppm is not installed (scripts/setup.sh installs poppler-utils)".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tsv_becomes_lines_and_paragraphs_with_a_mean_confidence() {
        let tsv = "level\tpage_num\tblock_num\tpar_num\tline_num\tword_num\tleft\ttop\twidth\theight\tconf\ttext\n\
            1\t1\t0\t0\t0\t0\t0\t0\t100\t100\t-1\t\n\
            5\t1\t1\t1\t1\t1\t0\t0\t1\t1\t90\tHello\n\
            5\t1\t1\t1\t1\t2\t0\t0\t1\t1\t80\tworld\n\
            5\t1\t1\t1\t2\t1\t0\t0\t1\t1\t70\tnext\n\
            5\t1\t2\t1\t1\t1\t0\t0\t1\t1\t60\tpara\n\
            5\t1\t2\t1\t1\t2\t0\t0\t1\t1\t-1\t \n";
        let page = parse_tsv(tsv);
        assert_eq!(page.text, "Hello world\nnext\n\npara\n");
        assert_eq!(page.words, 4);
        assert_eq!(page.confidence, Some(75.0));
        assert_eq!(parse_tsv("header\n").confidence, None);
        assert!(page.by_page.is_empty());
        // A multi-page TIFF: text per page.
        let two = "h\n5\t1\t1\t1\t1\t1\t0\t0\t1\t1\t90\tone\n5\t2\t1\t1\t1\t1\t0\t0\t1\t1\t90\ttwo\n";
        let page = parse_tsv(two);
        assert_eq!(page.by_page, ["one\n", "two\n"]);
        assert_eq!(page.text, "one\n\ntwo\n");
    }

    #[test]
    fn tiff_pages_are_counted_from_the_ifd_chain() {
        // Little-endian, two IFDs of no entries: 8 -> 14 -> 0.
        let mut t = b"II*\x00\x08\x00\x00\x00".to_vec();
        t.extend([0, 0, 14, 0, 0, 0]);
        t.extend([0, 0, 0, 0, 0, 0]);
        assert_eq!(tiff_pages(&t), 2);
        // A loop counts each IFD once.
        let mut looped = b"II*\x00\x08\x00\x00\x00".to_vec();
        looped.extend([0, 0, 8, 0, 0, 0]);
        assert_eq!(tiff_pages(&looped), 1);
        assert_eq!(tiff_pages(b"\x89PNG"), 1);
    }
}

/// Kills a process group when dropped (nothing is left once it ended).
struct KillGroup(Option<u32>);

impl Drop for KillGroup {
    fn drop(&mut self) {
        if let Some(pid) = self.0.and_then(|p| rustix::process::Pid::from_raw(p as i32)) {
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
        }
    }
}

/// Why one page could not be OCR'd.
#[derive(Debug)]
pub enum PageFailure {
    TimedOut,
    Failed(String),
}

/// OCRs one page in a child of our own binary (`ocr-worker`) with a memory
/// limit of `memory_mb`, a CPU limit and a wall-clock limit; without an
/// executable (extraction in-process), on a blocking thread.
pub async fn page(exe: Option<&Path>, bytes: &[u8], job: &OcrJob, memory_mb: u64) -> Result<OcrPage, PageFailure> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // Two tool runs (render, read) within the page's time, and a margin.
    let deadline = Duration::from_secs(job.timeout_secs.max(1) * 2 + 5);
    let Some(exe) = exe else {
        let (bytes, job) = (bytes.to_vec(), job.clone());
        let run = tokio::task::spawn_blocking(move || {
            let dir = std::env::temp_dir().join(format!(
                "doculearn-ocr-{}-{}-{}",
                std::process::id(),
                job.page,
                rand::random::<u32>()
            ));
            std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
            let result = ocr_bytes(&bytes, &job, &dir);
            let _ = std::fs::remove_dir_all(&dir);
            result
        });
        return match tokio::time::timeout(deadline, run).await {
            Ok(Ok(Ok(page))) => Ok(page),
            Ok(Ok(Err(e))) if e.starts_with("timeout:") => Err(PageFailure::TimedOut),
            Ok(Ok(Err(e))) => Err(PageFailure::Failed(e)),
            Ok(Err(_)) => Err(PageFailure::Failed("the OCR task failed".into())),
            Err(_) => Err(PageFailure::TimedOut),
        };
    };
    let job_json = serde_json::to_string(job).expect("job serializes");
    // The worker leads its own process group, so that when the page is
    // given up (its time is up, or the job is cancelled and this future
    // dropped) pdftoppm and tesseract end with it, not only the worker.
    let mut child = tokio::process::Command::new(exe)
        .process_group(0)
        .arg("ocr-worker")
        .arg("--job")
        .arg(&job_json)
        .arg("--memory-mb")
        .arg(memory_mb.to_string())
        .arg("--cpu-secs")
        .arg((job.timeout_secs.max(1) * 2).to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| PageFailure::Failed(format!("the OCR worker could not be started ({e})")))?;
    let _group = KillGroup(child.id());
    let mut stdin = child.stdin.take().expect("piped");
    let mut stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    let input = bytes.to_vec();
    let run = async move {
        let feed = async move {
            let _ = stdin.write_all(&input).await;
            drop(stdin);
        };
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let (_, a, b) = tokio::join!(feed, stdout.read_to_end(&mut out), stderr.read_to_end(&mut err));
        a?;
        b?;
        let status = child.wait().await?;
        Ok::<_, std::io::Error>((status, out, err))
    };
    let (status, out, err) = match tokio::time::timeout(deadline, run).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => return Err(PageFailure::Failed(format!("the OCR worker failed ({e})"))),
        Err(_) => return Err(PageFailure::TimedOut),
    };
    if !status.success() {
        use std::os::unix::process::ExitStatusExt;
        if matches!(status.signal(), Some(9) | Some(24)) {
            return Err(PageFailure::TimedOut);
        }
        let detail = String::from_utf8_lossy(&err);
        let detail = detail
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("")
            .to_string();
        return Err(PageFailure::Failed(format!(
            "the OCR worker stopped ({status}){}",
            if detail.is_empty() {
                String::new()
            } else {
                format!(": {detail}")
            }
        )));
    }
    match serde_json::from_slice::<OcrReply>(&out) {
        Ok(OcrReply::Ok(page)) => Ok(page),
        Ok(OcrReply::Error(e)) if e.starts_with("timeout:") => Err(PageFailure::TimedOut),
        Ok(OcrReply::Error(e)) => Err(PageFailure::Failed(e)),
        Err(_) => Err(PageFailure::Failed("the OCR worker gave no answer".into())),
    }
}

/// The text of each page of `ex` (split at its page starts; pages are
/// joined by a blank line).
pub fn page_texts(ex: &super::Extracted) -> Vec<String> {
    let n = ex.pages.unwrap_or(1).max(1) as usize;
    let mut starts = ex.page_starts.clone();
    starts.resize(n, ex.text.len());
    (0..n)
        .map(|i| {
            let end = starts.get(i + 1).copied().unwrap_or(ex.text.len()).min(ex.text.len());
            let start = starts[i].min(end);
            ex.text[start..end].trim().to_string()
        })
        .collect()
}

/// Puts page texts back together as the PDF reader does.
pub fn join_pages(ex: &mut super::Extracted, texts: &[String]) {
    let mut text = String::new();
    let mut starts = Vec::with_capacity(texts.len());
    for page in texts {
        if !text.is_empty() {
            text.push_str("\n\n");
        }
        starts.push(text.len());
        text.push_str(page.trim_end());
    }
    ex.text = text;
    ex.page_starts = starts;
}
