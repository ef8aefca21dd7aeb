//! PDF to text through the `pdftext` crate (our extractor on lopdf's object
//! model). Pages are joined with a blank line; their start offsets are kept so
//! each chunk knows its page.

use super::{Extracted, Limits};

pub fn extract(bytes: &[u8], limits: &Limits) -> Result<Extracted, String> {
    let pdf_limits = pdftext::Limits {
        max_decompressed_bytes: limits.max_decompressed_bytes,
        max_objects: limits.max_objects,
        max_pages: limits.max_pages,
        max_depth: limits.max_depth,
        max_output_chars: limits.max_chars,
    };
    let extraction = pdftext::extract(bytes, &pdf_limits).map_err(|e| e.to_string())?;
    let mut text = String::new();
    let mut page_starts = Vec::with_capacity(extraction.pages.len());
    for page in &extraction.pages {
        if !text.is_empty() {
            text.push_str("\n\n");
        }
        page_starts.push(text.len());
        // NUL cannot be stored in Postgres text or JSON; other controls are noise.
        text.extend(
            page.trim_end()
                .chars()
                .filter(|c| !c.is_control() || *c == '\n' || *c == '\t'),
        );
    }
    let page_errors = extraction
        .page_errors
        .iter()
        .map(|(page, reason)| format!("page {}: {reason}", page + 1))
        .collect();
    Ok(Extracted {
        text,
        kind: "pdf".into(),
        pages: Some(extraction.pages.len() as u32),
        page_starts,
        encoding: None,
        page_errors,
    })
}
