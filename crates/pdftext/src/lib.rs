//! Text extraction from PDF, built on lopdf's object model rather than its
//! `extract_text`: our own page-tree walk (inheritance, cycles, limits), a
//! content-stream interpreter that follows Form XObjects, fonts with
//! ToUnicode, predefined and embedded CMaps, simple encodings with
//! Differences and glyph names, and a layout step that places spaces and
//! line breaks from glyph geometry, page by page. One bad page becomes a
//! page error; the rest of the document still counts.
//!
//! - [`extract`]: bytes → text per page, or a [`PdfError`] a user can read
//! - [`f1`]: token F1 against a reference text (how agreement is measured)

#![forbid(unsafe_code)]

mod cff;
mod cmap;
mod encoding;
pub mod f1;
mod font;
mod interp;
mod symbolic;
mod tables;
mod tex;
mod tex_tables;

use std::collections::HashSet;

use lopdf::{Dictionary, Document, LoadOptions, Object, ObjectId};

pub use f1::{token_f1, token_recall};

/// Bounds on the work one document may cause.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Total bytes inflated from streams for one document (a bound on work).
    pub max_decompressed_bytes: u64,
    /// The most any one stream may inflate to, and the most one page's
    /// content may add up to (a bound on memory: real content streams, fonts
    /// and object streams stay far below).
    pub max_stream_bytes: u64,
    pub max_objects: usize,
    pub max_pages: usize,
    /// Nesting of Form XObjects followed (and of arrays/dictionaries accepted).
    pub max_depth: usize,
    pub max_output_chars: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_decompressed_bytes: 256 << 20,
            max_stream_bytes: 32 << 20,
            max_objects: 2_000_000,
            max_pages: 10_000,
            max_depth: 64,
            max_output_chars: 50_000_000,
        }
    }
}

/// How much of a page's text could be decoded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PageStats {
    /// Glyphs the page shows.
    pub glyphs: usize,
    /// Of those, glyphs whose font gives them no text (no mapping at all).
    pub undecoded: usize,
    /// Images the page draws (image XObjects, inline images): a page
    /// without text that draws one may be a scan.
    pub images: usize,
}

impl PageStats {
    /// Text was lost on this page: at least 20 glyphs, and a tenth of them, had no text.
    pub fn lost_text(&self) -> bool {
        self.undecoded >= 20 && self.undecoded * 10 >= self.glyphs
    }
}

#[derive(Debug, Clone)]
pub struct Extraction {
    /// Text of each page, in page order ("" for a page without text).
    pub pages: Vec<String>,
    /// Per page, what was shown and what could not be decoded.
    pub stats: Vec<PageStats>,
    /// (0-based page index, reason) for pages that failed or were cut short.
    pub page_errors: Vec<(usize, String)>,
    /// The file was encrypted (and opened with the empty user password).
    pub encrypted: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum PdfError {
    #[error("the file is not a PDF (it does not start with %PDF-)")]
    NotPdf,
    #[error("the PDF needs a password to open")]
    PasswordRequired,
    #[error("the PDF is damaged: {0}")]
    Malformed(String),
    #[error("the PDF is too large to process: {0}")]
    LimitExceeded(String),
    #[error(
        "the PDF has no text layer (it looks like a scanned image); {pages} {} checked",
        if *pages == 1 { "page" } else { "pages" }
    )]
    NoText { pages: usize },
    #[error(
        "the PDF's text cannot be decoded: its fonts give no characters for {percent}% of what it shows ({affected} of {pages} pages); it needs a copy with a text layer that maps to Unicode"
    )]
    Undecodable {
        percent: usize,
        affected: usize,
        pages: usize,
    },
}

/// Bytes in words: "512 MiB", "64 KiB", "900 bytes".
pub fn human_bytes(n: u64) -> String {
    if n >= 1 << 30 && n.is_multiple_of(1 << 30) {
        format!("{} GiB", n >> 30)
    } else if n >= 1 << 20 {
        format!("{} MiB", (n + (1 << 19)) >> 20)
    } else if n >= 1 << 10 {
        format!("{} KiB", (n + 512) >> 10)
    } else {
        format!("{n} bytes")
    }
}

/// Nesting beyond which a file is refused before parsing (real files stay
/// far below; deeply nested arrays are a known way to exhaust a parser's stack).
const MAX_SYNTAX_NESTING: usize = 2000;

/// Rejects absurd nesting of arrays and dictionaries outside streams
/// without parsing anything.
fn check_nesting(bytes: &[u8]) -> Result<(), PdfError> {
    let mut depth = 0usize;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'[' => depth += 1,
            b'<' if bytes.get(i + 1) == Some(&b'<') => {
                depth += 1;
                i += 1;
            }
            b']' => depth = depth.saturating_sub(1),
            b'>' if bytes.get(i + 1) == Some(&b'>') => {
                depth = depth.saturating_sub(1);
                i += 1;
            }
            b's' if bytes[i..].starts_with(b"stream") && (i == 0 || !bytes[i - 1].is_ascii_alphabetic()) => {
                // Skip binary stream data, where brackets mean nothing.
                match find(&bytes[i..], b"endstream") {
                    Some(end) => i += end + 8,
                    None => break,
                }
                depth = 0;
            }
            b'e' if bytes[i..].starts_with(b"endobj") => depth = 0,
            _ => {}
        }
        if depth > MAX_SYNTAX_NESTING {
            return Err(PdfError::LimitExceeded(format!(
                "arrays or dictionaries are nested more than {MAX_SYNTAX_NESTING} levels deep"
            )));
        }
        i += 1;
    }
    Ok(())
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn describe_load_error(e: &lopdf::Error, max_stream_bytes: u64) -> PdfError {
    let text = e.to_string();
    let lower = text.to_lowercase();
    if lower.contains("password") || lower.contains("decrypt") || lower.contains("encrypt") {
        return PdfError::PasswordRequired;
    }
    if lower.contains("limit") && lower.contains("exceed") {
        return PdfError::LimitExceeded(format!(
            "a compressed stream inflates to more than {}",
            human_bytes(max_stream_bytes)
        ));
    }
    // lopdf reports an object stream over the size limit like a corrupt one.
    if lower.contains("decompress") {
        return PdfError::Malformed(format!(
            "a compressed part of its structure cannot be inflated (it is corrupt, or inflates to more than {})",
            human_bytes(max_stream_bytes)
        ));
    }
    PdfError::Malformed(format!("its structure cannot be read ({text})"))
}

/// A page with the resources it inherits.
struct PageRef {
    id: ObjectId,
    resources: Option<ObjectId>,
    inline_resources: Option<Dictionary>,
}

/// Walks the page tree: inheritance of /Resources, cycle and depth guards,
/// and the page limit (including what /Count claims).
fn collect_pages(doc: &Document, limits: &Limits) -> Result<Vec<PageRef>, PdfError> {
    let root = doc
        .trailer
        .get(b"Root")
        .ok()
        .and_then(|o| doc.dereference(o).ok())
        .and_then(|(_, o)| o.as_dict().ok())
        .ok_or_else(|| PdfError::Malformed("it has no document catalog".into()))?;
    let pages_obj = root
        .get(b"Pages")
        .map_err(|_| PdfError::Malformed("it has no page tree".into()))?;
    let (pages_id, pages) = doc
        .dereference(pages_obj)
        .map_err(|_| PdfError::Malformed("its page tree is missing".into()))?;
    if let Some(count) = pages
        .as_dict()
        .ok()
        .and_then(|d| d.get(b"Count").ok())
        .and_then(|c| c.as_i64().ok())
    {
        if count > limits.max_pages as i64 {
            return Err(PdfError::LimitExceeded(format!(
                "it claims {count} pages; the limit is {}",
                limits.max_pages
            )));
        }
    }
    let mut out = Vec::new();
    let mut seen: HashSet<ObjectId> = HashSet::new();
    // (node, inherited resources by id, inherited inline resources, depth)
    let mut stack: Vec<(&Object, Option<ObjectId>, Option<Dictionary>, usize)> = vec![(pages_obj, None, None, 0)];
    let _ = pages_id;
    while let Some((node, inherited_id, inherited_inline, depth)) = stack.pop() {
        if depth > limits.max_depth {
            return Err(PdfError::Malformed("its page tree is nested too deeply".into()));
        }
        let Ok((id, obj)) = doc.dereference(node) else { continue };
        if let Some(id) = id {
            if !seen.insert(id) {
                continue; // a cycle, or a page listed twice
            }
        }
        let Ok(dict) = obj.as_dict() else { continue };
        let (res_id, res_inline) = match dict.get(b"Resources") {
            Ok(Object::Reference(r)) => (Some(*r), None),
            Ok(Object::Dictionary(d)) => (None, Some(d.clone())),
            _ => (inherited_id, inherited_inline.clone()),
        };
        let is_pages = dict.get(b"Kids").is_ok() && dict.get_type().map(|t| t != b"Page").unwrap_or(true);
        if is_pages {
            if let Ok(kids) = dict
                .get(b"Kids")
                .and_then(|k| doc.dereference(k))
                .and_then(|(_, k)| k.as_array())
            {
                for kid in kids.iter().rev() {
                    stack.push((kid, res_id, res_inline.clone(), depth + 1));
                }
            }
        } else if let Some(id) = id {
            out.push(PageRef {
                id,
                resources: res_id,
                inline_resources: res_inline,
            });
            if out.len() > limits.max_pages {
                return Err(PdfError::LimitExceeded(format!(
                    "it has more than {} pages",
                    limits.max_pages
                )));
            }
        }
    }
    Ok(out)
}

/// Extracts the text of every page. Never panics on any input: lopdf is
/// called under `catch_unwind`, and our own code bounds recursion, loops
/// and allocations by `limits`.
pub fn extract(bytes: &[u8], limits: &Limits) -> Result<Extraction, PdfError> {
    let head = &bytes[..bytes.len().min(1024)];
    if !head.windows(5).any(|w| w == b"%PDF-") {
        return Err(PdfError::NotPdf);
    }
    check_nesting(bytes)?;
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| extract_inner(bytes, limits))) {
        Ok(r) => r,
        Err(_) => Err(PdfError::Malformed("the reader failed on its structure".into())),
    }
}

fn extract_inner(bytes: &[u8], limits: &Limits) -> Result<Extraction, PdfError> {
    let options = LoadOptions {
        // Per stream (object and xref streams are inflated while loading).
        max_decompressed_size: Some(
            limits
                .max_stream_bytes
                .min(limits.max_decompressed_bytes)
                .min(usize::MAX as u64) as usize,
        ),
        ..LoadOptions::default()
    };
    let mut doc = Document::load_mem_with_options(bytes, options)
        .map_err(|e| describe_load_error(&e, limits.max_stream_bytes))?;
    let encrypted = doc.is_encrypted() || doc.encryption_state.is_some();
    if doc.is_encrypted() {
        doc.decrypt("").map_err(|_| PdfError::PasswordRequired)?;
    }
    if doc.objects.len() > limits.max_objects {
        return Err(PdfError::LimitExceeded(format!(
            "it has {} objects; the limit is {}",
            doc.objects.len(),
            limits.max_objects
        )));
    }
    let pages = collect_pages(&doc, limits)?;
    let mut interp = interp::Interpreter::new(
        &doc,
        limits.max_decompressed_bytes,
        limits.max_stream_bytes,
        limits.max_depth,
        limits.max_output_chars,
    );
    let mut texts = Vec::with_capacity(pages.len());
    let mut stats = Vec::with_capacity(pages.len());
    let mut page_errors = Vec::new();
    let mut total_chars = 0usize;
    for (index, page) in pages.iter().enumerate() {
        interp.start_page();
        let errors_before = interp.stream_errors;
        let resources: Option<&Dictionary> = match (&page.inline_resources, page.resources) {
            (Some(d), _) => Some(d),
            (None, Some(id)) => doc.get_dictionary(id).ok(),
            _ => None,
        };
        let result = page_content(&doc, page.id, &mut interp, limits.max_stream_bytes).and_then(|content| {
            let mut visiting = vec![page.id];
            interp.run(&content, resources, interp::Matrix::IDENTITY, 0, &mut visiting)?;
            match doc.get_dictionary(page.id) {
                Ok(page_dict) => interp.annotations(page_dict, &mut visiting),
                Err(_) => Ok(()),
            }
        });
        let text = interp::layout(&interp.placed);
        match result {
            Ok(()) => {}
            Err(interp::PageError::Budget) => {
                return Err(PdfError::LimitExceeded(format!(
                    "its streams inflate to more than {} (or one of them to more than {})",
                    human_bytes(limits.max_decompressed_bytes),
                    human_bytes(limits.max_stream_bytes)
                )));
            }
            Err(interp::PageError::Glyphs) => {
                return Err(PdfError::LimitExceeded(format!(
                    "it holds more than {} characters",
                    limits.max_output_chars
                )));
            }
            Err(interp::PageError::Other(reason)) => page_errors.push((index, reason)),
        }
        if interp.stream_errors > errors_before {
            page_errors.push((
                index,
                "its content is damaged; the text before the damage was kept".into(),
            ));
        }
        stats.push(PageStats {
            glyphs: interp.page_glyphs(),
            undecoded: interp.page_undecoded,
            images: interp.page_images,
        });
        total_chars += text.len();
        if total_chars > limits.max_output_chars.saturating_mul(4) {
            return Err(PdfError::LimitExceeded(format!(
                "it holds more than {} characters",
                limits.max_output_chars
            )));
        }
        texts.push(text);
    }
    // Text drawn with fonts that map it to nothing: a failure when that is
    // nearly all of it (the rest would be junk), a warning per page otherwise.
    let (glyphs, undecoded) = stats
        .iter()
        .fold((0usize, 0usize), |(g, u), s| (g + s.glyphs, u + s.undecoded));
    if glyphs >= 50 && undecoded * 10 >= glyphs * 8 {
        return Err(PdfError::Undecodable {
            percent: undecoded * 100 / glyphs,
            affected: stats.iter().filter(|s| s.lost_text()).count(),
            pages: pages.len(),
        });
    }
    if texts.iter().all(|t| t.trim().is_empty()) {
        if pages.is_empty() {
            return Err(PdfError::Malformed("it has no pages".into()));
        }
        let failed: HashSet<usize> = page_errors.iter().map(|(i, _)| *i).collect();
        if failed.len() == pages.len() {
            return Err(PdfError::Malformed(page_errors[0].1.clone()));
        }
        if interp.fontless_strings > 0 {
            // Text is drawn, but with fonts that cannot be read: damage, not a scan.
            return Err(PdfError::Malformed(
                "its text uses fonts that are missing or broken (the file may be truncated)".into(),
            ));
        }
        return Err(PdfError::NoText { pages: pages.len() });
    }
    Ok(Extraction {
        pages: texts,
        stats,
        page_errors,
        encrypted,
    })
}

/// The page's content streams, concatenated, within the decompression budget.
fn page_content(
    doc: &Document,
    page: ObjectId,
    interp: &mut interp::Interpreter,
    max_bytes: u64,
) -> Result<Vec<u8>, interp::PageError> {
    let dict = doc
        .get_dictionary(page)
        .map_err(|e| interp::PageError::Other(e.to_string()))?;
    let Ok(contents) = dict.get(b"Contents") else {
        return Ok(Vec::new());
    };
    let (_, contents) = doc
        .dereference(contents)
        .map_err(|e| interp::PageError::Other(e.to_string()))?;
    let refs: Vec<&Object> = match contents {
        Object::Array(items) => items.iter().collect(),
        other => vec![other],
    };
    let mut out = Vec::new();
    let (mut read, mut lost) = (0usize, 0usize);
    for r in refs.into_iter().take(10_000) {
        if matches!(r, Object::Null) {
            continue; // no content
        }
        let stream = doc.dereference(r).ok().and_then(|(_, obj)| obj.as_stream().ok());
        let Some(stream) = stream else {
            lost += 1; // missing (e.g. a truncated file) or not a stream
            continue;
        };
        match interp.stream_content(stream) {
            // Bytes that decode to nothing: a filter failed (lopdf then yields nothing).
            Ok(data) if data.is_empty() && !stream.content.is_empty() => lost += 1,
            Ok(data) => {
                if (out.len() + data.len()) as u64 > max_bytes {
                    return Err(interp::PageError::Budget);
                }
                out.extend_from_slice(&data);
                out.push(b'\n');
                read += 1;
            }
            Err(interp::PageError::Other(_)) => lost += 1,
            Err(e) => return Err(e),
        }
    }
    if lost > 0 && read == 0 {
        return Err(interp::PageError::Other(
            "its content stream is missing or cannot be decoded (the file may be truncated)".into(),
        ));
    }
    if lost > 0 {
        interp.stream_errors += 1; // reported as damaged content, with the text that was read
    }
    Ok(out)
}
