//! The extracting stage: find out what the bytes really are (never trusting
//! the name or the declared type), then turn them into plain text: PDF
//! through our lopdf-based extractor, text in any encoding, HTML and Markdown
//! as text without markup. Untrusted parsing runs in a child process of our
//! own binary (`doculearn extract-worker`) with an address-space and CPU
//! limit, so a parser crash (stack overflow, allocation abort) only fails
//! that job.

pub mod budget;
pub mod ocr;
pub mod office;
pub(crate) mod pdf;
pub mod plausible;
pub mod sniff;
pub mod text;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::StageError;
use crate::config::PipelineSettings;
pub use sniff::Kind;

/// Names the extraction code in the stage cache: bump the revision when the
/// text extraction changes, so older cached text is not reused.
pub const EXTRACTOR: &str = concat!("doculearn-", env!("CARGO_PKG_VERSION"), "-r3");

/// What we read, for error messages ("…; doculearn reads …").
pub const SUPPORTED: &str = "doculearn reads PDF (scans through OCR), Word (.docx), OpenDocument text (.odt), PowerPoint (.pptx), EPUB, PNG, JPEG, TIFF and WebP images (OCR), plain text, Markdown and HTML";

/// Which pages of a document were read by OCR, and how sure Tesseract was.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct OcrSummary {
    /// 1-based pages whose text came from OCR.
    pub pages: Vec<u32>,
    /// Mean word confidence over those pages, 0–100.
    pub mean_confidence: Option<f32>,
}

/// Text of a document, ready for chunking.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct Extracted {
    pub text: String,
    /// What the bytes turned out to be ("pdf", "html", "markdown", "text").
    pub kind: String,
    /// Pages (PDF only).
    pub pages: Option<u32>,
    /// Byte offset in `text` where each page starts (PDF only).
    pub page_starts: Vec<usize>,
    /// The character encoding a text file was read as.
    pub encoding: Option<String>,
    /// Pages that could not be read (the rest of the document still counts).
    pub page_errors: Vec<String>,
    /// What the user should know about text that was lost or guessed, in
    /// sentences ("14 of 153 pages had text that could not be decoded").
    /// Shown on the job's events, its document and the UI card.
    #[serde(default)]
    pub warnings: Vec<String>,
    /// 1-based pages the reader found no text on, still to be OCR'd (the
    /// OCR step empties it).
    #[serde(default)]
    pub ocr_pages: Vec<u32>,
    /// Pages that came from OCR, once it ran.
    #[serde(default)]
    pub ocr: Option<OcrSummary>,
    /// An uploaded image, in words ("a PNG image").
    #[serde(default)]
    pub image: Option<String>,
}

impl Extracted {
    /// 1-based page of a byte offset into `text`.
    pub fn page_at(&self, offset: usize) -> Option<i32> {
        if self.page_starts.is_empty() {
            return None;
        }
        let idx = self.page_starts.partition_point(|&start| start <= offset);
        Some(idx.max(1) as i32)
    }
}

/// Limits applied to one extraction.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Limits {
    pub max_pages: usize,
    pub max_decompressed_bytes: u64,
    /// The most one stream (and one page's content) may inflate to.
    pub max_stream_bytes: u64,
    pub max_objects: usize,
    pub max_depth: usize,
    pub max_chars: usize,
    /// Pages without text and images are left for OCR rather than refused.
    #[serde(default)]
    pub ocr: bool,
}

impl Limits {
    pub fn from_settings(p: &PipelineSettings) -> Self {
        Limits {
            max_pages: p.max_pdf_pages,
            max_decompressed_bytes: p.max_decompressed_mb * 1024 * 1024,
            max_stream_bytes: p.max_stream_mb * 1024 * 1024,
            max_objects: p.max_pdf_objects,
            max_depth: p.max_nesting_depth,
            max_chars: p.max_text_chars,
            ocr: p.ocr,
        }
    }
}

/// Extracts in this process. Pure and synchronous: call it from a blocking
/// thread or, better, through [`extract_sandboxed`].
pub fn extract_bytes(bytes: &[u8], name: &str, declared_type: &str, limits: &Limits) -> Result<Extracted, String> {
    if bytes.is_empty() {
        return Err("the file is empty (0 bytes)".into());
    }
    let kind = sniff::sniff(bytes, name, declared_type);
    let extracted = match kind {
        Kind::Pdf => pdf::extract(bytes, limits)?,
        Kind::Html => text::html(bytes, limits)?,
        Kind::Markdown => text::markdown(bytes, limits)?,
        Kind::Text => text::plain(bytes, limits)?,
        Kind::Office(format) => office::extract(bytes, format, limits)?,
        // An image is one page, all of it for OCR.
        Kind::Image(what) if limits.ocr => Extracted {
            kind: "image".into(),
            image: Some(what.into()),
            // A multi-page TIFF is one OCR run of all its pages.
            pages: Some(ocr::tiff_pages(bytes).min(limits.max_pages) as u32),
            page_starts: vec![0],
            ocr_pages: vec![1],
            ..Extracted::default()
        },
        Kind::Image(what) => {
            return Err(format!(
                "“{name}” is {what}; reading images takes OCR, which is switched off here (pipeline.ocr)"
            ));
        }
        Kind::NotPdf(what) => {
            return Err(format!(
                "“{name}” is not a PDF: it has no PDF header (%PDF-) and looks like {what}; {SUPPORTED}"
            ));
        }
        Kind::Unsupported(what) => {
            let claimed = sniff::claimed_kind(name, declared_type);
            return Err(match claimed {
                Some(claimed) => {
                    format!("“{name}” is {what}, not {claimed}; {SUPPORTED}")
                }
                None => format!("“{name}” is {what}; {SUPPORTED}"),
            });
        }
    };
    if extracted.text.chars().count() > limits.max_chars {
        return Err(format!(
            "the document's text is longer than the limit of {} characters",
            limits.max_chars
        ));
    }
    if extracted.text.trim().is_empty() && extracted.ocr_pages.is_empty() {
        return Err(match kind {
            Kind::Pdf => "the PDF has no text layer (it looks like a scanned image)".into(),
            _ => "the file contains no text".into(),
        });
    }
    Ok(extracted)
}

/// Where and how to run the extraction child (its memory limit is the share
/// of [`budget::MemoryBudget`] each extraction reserves).
#[derive(Debug, Clone)]
pub struct Sandbox {
    /// Our own binary (the child runs `extract-worker`).
    pub exe: PathBuf,
    pub timeout: Duration,
}

/// What the child writes on stdout.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkerReply {
    Ok(Box<Extracted>),
    Error(String),
}

/// Runs [`extract_bytes`] in a child process with a memory limit of
/// `memory_mb` (reserved from the budget by the caller), a CPU-time limit
/// and a wall-clock timeout.
pub async fn extract_sandboxed(
    sandbox: &Sandbox,
    memory_mb: u64,
    bytes: &[u8],
    name: &str,
    declared_type: &str,
    limits: &Limits,
) -> Result<Extracted, StageError> {
    let limits_json = serde_json::to_string(limits).expect("limits serialize");
    let cpu_secs = sandbox.timeout.as_secs().max(1);
    let mut child = tokio::process::Command::new(&sandbox.exe)
        .arg("extract-worker")
        .arg("--name")
        .arg(name)
        .arg("--content-type")
        .arg(declared_type)
        .arg("--limits")
        .arg(&limits_json)
        .arg("--memory-mb")
        .arg(memory_mb.to_string())
        .arg("--cpu-secs")
        .arg(cpu_secs.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| {
            tracing::error!(exe = %sandbox.exe.display(), error = %e, "cannot start the extraction worker");
            StageError::transient("the extraction worker could not be started")
        })?;

    let mut stdin = child.stdin.take().expect("piped stdin");
    let mut stdout = child.stdout.take().expect("piped stdout");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let input = bytes.to_vec();
    let run = async move {
        let feed = async move {
            // The child may die before reading everything; that shows in its status.
            let _ = stdin.write_all(&input).await;
            drop(stdin);
        };
        let mut out = Vec::new();
        let mut err = Vec::new();
        let (_, out_res, err_res) = tokio::join!(feed, stdout.read_to_end(&mut out), stderr.read_to_end(&mut err));
        out_res?;
        err_res?;
        let status = child.wait().await?;
        Ok::<_, std::io::Error>((status, out, err))
    };
    let (status, out, err) = match tokio::time::timeout(sandbox.timeout, run).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            tracing::error!(error = %e, "extraction worker i/o failed");
            return Err(StageError::transient("the extraction worker failed"));
        }
        // Dropping the future drops the child: kill_on_drop ends it.
        Err(_) => return Err(StageError::TimedOut(sandbox.timeout)),
    };
    if !status.success() {
        let detail = String::from_utf8_lossy(&err);
        let detail = detail.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("");
        tracing::warn!(?status, detail, "extraction worker died");
        return Err(StageError::permanent(describe_crash(&status)));
    }
    match serde_json::from_slice::<WorkerReply>(&out) {
        Ok(WorkerReply::Ok(extracted)) => Ok(*extracted),
        Ok(WorkerReply::Error(reason)) => Err(StageError::Permanent(reason)),
        Err(e) => {
            tracing::error!(error = %e, "extraction worker wrote an unreadable reply");
            Err(StageError::permanent(
                "the file could not be read (the extraction worker gave no answer)",
            ))
        }
    }
}

fn describe_crash(status: &std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match status.signal() {
        Some(9) | Some(24) => "reading the file took more time than a document may use, so it was stopped".into(),
        // Rust aborts on a failed allocation (the address-space limit) and
        // on a stack overflow: either way the file is beyond what we read.
        Some(6) => "the document reader ran out of memory or stack on this file and was stopped; it is probably damaged or hostile".into(),
        Some(sig) => format!("the file crashed the document reader (signal {sig}); it is probably damaged or hostile"),
        None => "the file could not be read: the document reader ran out of memory or failed".into(),
    }
}

/// Address space the extraction child may map beyond its data limit: the
/// executable, shared libraries and the stack.
const ADDRESS_SPACE_HEADROOM: u64 = 512 << 20;

/// Body of `doculearn extract-worker`: sets its own limits, reads the file
/// from stdin and answers one [`WorkerReply`] on stdout.
pub fn worker_main(
    name: &str,
    content_type: &str,
    limits_json: &str,
    memory_mb: u64,
    cpu_secs: u64,
) -> std::io::Result<()> {
    use std::io::{Read, Write};
    let bytes_limit = memory_mb.saturating_mul(1024 * 1024);
    // Set before reading any input: from here on a runaway allocation fails
    // inside this process only. The data limit (heap and private mappings)
    // is what the budget reserved; the address-space limit above it leaves
    // room for the executable's own mappings only.
    let _ = rlimit::setrlimit(rlimit::Resource::DATA, bytes_limit, bytes_limit);
    let space = bytes_limit.saturating_add(ADDRESS_SPACE_HEADROOM);
    let _ = rlimit::setrlimit(rlimit::Resource::AS, space, space);
    let _ = rlimit::setrlimit(rlimit::Resource::CPU, cpu_secs, cpu_secs + 1);
    let _ = rlimit::setrlimit(rlimit::Resource::CORE, 0, 0);
    let limits: Limits = serde_json::from_str(limits_json).map_err(std::io::Error::other)?;
    let mut input = Vec::new();
    std::io::stdin().read_to_end(&mut input)?;
    let reply = match std::panic::catch_unwind(|| extract_bytes(&input, name, content_type, &limits)) {
        Ok(Ok(ex)) => WorkerReply::Ok(Box::new(ex)),
        Ok(Err(reason)) => WorkerReply::Error(reason),
        Err(_) => WorkerReply::Error("the file could not be read: the document reader failed on it".into()),
    };
    let mut stdout = std::io::stdout().lock();
    serde_json::to_writer(&mut stdout, &reply).map_err(std::io::Error::other)?;
    stdout.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_at_maps_offsets() {
        let ex = Extracted {
            text: "aaaa\n\nbbbb".into(),
            kind: "pdf".into(),
            pages: Some(2),
            page_starts: vec![0, 6],
            encoding: None,
            page_errors: vec![],
            warnings: vec![],
            ..Extracted::default()
        };
        assert_eq!(ex.page_at(0), Some(1));
        assert_eq!(ex.page_at(5), Some(1));
        assert_eq!(ex.page_at(6), Some(2));
        assert_eq!(ex.page_at(9), Some(2));
    }
}
