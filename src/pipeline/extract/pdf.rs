//! PDF to text through the `pdftext` crate (our extractor on lopdf's object
//! model). Pages are joined with a blank line; their start offsets are kept so
//! each chunk knows its page. Text the fonts could not give and pages that
//! could not be read become warnings the user sees.

use super::{Extracted, Limits};

pub fn extract(bytes: &[u8], limits: &Limits) -> Result<Extracted, String> {
    let pdf_limits = pdftext::Limits {
        max_decompressed_bytes: limits.max_decompressed_bytes,
        max_stream_bytes: limits.max_stream_bytes,
        max_objects: limits.max_objects,
        max_pages: limits.max_pages,
        max_depth: limits.max_depth,
        max_output_chars: limits.max_chars,
    };
    let extraction = match pdftext::extract(bytes, &pdf_limits) {
        Ok(extraction) => extraction,
        // A scan: every page goes to OCR.
        Err(pdftext::PdfError::NoText { pages }) if limits.ocr => {
            return Ok(Extracted {
                kind: "pdf".into(),
                pages: Some(pages as u32),
                page_starts: vec![0; pages],
                ocr_pages: (1..=pages as u32).collect(),
                ..Extracted::default()
            });
        }
        Err(e) => return Err(e.to_string()),
    };
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
    let page_errors: Vec<String> = extraction
        .page_errors
        .iter()
        .map(|(page, reason)| format!("page {}: {reason}", page + 1))
        .collect();
    let total = extraction.pages.len();
    let mut warnings = Vec::new();
    let lost: Vec<usize> = (0..total)
        .filter(|&i| extraction.stats.get(i).is_some_and(|s| s.lost_text()))
        .collect();
    if !lost.is_empty() {
        warnings.push(format!(
            "{} of {total} {} had text that could not be decoded ({})",
            lost.len(),
            if total == 1 { "page" } else { "pages" },
            page_list(&lost)
        ));
    }
    if !extraction.page_errors.is_empty() {
        let unread: Vec<usize> = extraction.page_errors.iter().map(|(p, _)| *p).collect();
        let first = &extraction.page_errors[0].1;
        warnings.push(format!(
            "{} of {total} {} could not be read in full ({}: {first})",
            unread.len(),
            if total == 1 { "page" } else { "pages" },
            page_list(&unread)
        ));
    }
    // Pages without text that draw an image (a scan, a photographed page)
    // go to OCR, also with a word or two of real text (a stamped page
    // number); a blank page does not.
    let ocr_pages: Vec<u32> = if limits.ocr {
        (0..total)
            .filter(|&i| extraction.stats.get(i).is_some_and(|s| s.images > 0))
            .filter(|&i| extraction.pages[i].chars().filter(|c| c.is_alphanumeric()).count() < 3)
            .map(|i| i as u32 + 1)
            .collect()
    } else {
        Vec::new()
    };
    Ok(Extracted {
        text,
        kind: "pdf".into(),
        pages: Some(total as u32),
        page_starts,
        encoding: None,
        page_errors,
        warnings,
        ocr_pages,
        ocr: None,
        image: None,
    })
}

/// "page 4", "pages 2, 5 and 9", "pages 2, 5, 7, 9, 11 and 14 more" (1-based).
pub(crate) fn page_list(pages: &[usize]) -> String {
    const SHOWN: usize = 5;
    let names: Vec<String> = pages.iter().take(SHOWN).map(|p| (p + 1).to_string()).collect();
    match pages.len() {
        0 => String::new(),
        1 => format!("page {}", names[0]),
        n if n <= SHOWN => format!("pages {} and {}", names[..n - 1].join(", "), names[n - 1]),
        n => format!("pages {} and {} more", names.join(", "), n - SHOWN),
    }
}

#[cfg(test)]
mod tests {
    use super::page_list;

    #[test]
    fn page_lists_read_as_words() {
        assert_eq!(page_list(&[3]), "page 4");
        assert_eq!(page_list(&[1, 4, 8]), "pages 2, 5 and 9");
        assert_eq!(page_list(&[0, 1, 2, 3, 4, 5, 6]), "pages 1, 2, 3, 4, 5 and 2 more");
    }
}
