//! Without poppler-data (its path pointed elsewhere), fonts whose codes are
//! UTF-16 (`Uni*-UTF16-H`) still decode, surrogate pairs included; CID
//! fonts that would need a CID→Unicode table give what they can, no error.
//! One test per binary: it sets a process-wide environment variable.

mod support;

use support::build;

#[test]
fn utf16_cmaps_decode_without_poppler_data() {
    std::env::set_var("DOCULEARN_POPPLER_DATA", "/nonexistent/poppler-data");
    let content =
        b"BT /F1 12 Tf 72 700 Td <D835DC0000410042> Tj /F2 12 Tf 72 650 Td <0041> Tj /F3 12 Tf 72 600 Td (plain) Tj ET";
    let mut stream = format!("<< /Length {} >>\nstream\n", content.len()).into_bytes();
    stream.extend_from_slice(content);
    stream.extend_from_slice(b"\nendstream");
    let descendant = |ordering: &str| {
        format!(
            "<< /Type /Font /Subtype /CIDFontType0 /BaseFont /KozMinPro-Regular \
             /CIDSystemInfo << /Registry (Adobe) /Ordering ({ordering}) /Supplement 6 >> >>"
        )
        .into_bytes()
    };
    let pdf = build(&[
        b"<< /Type /Catalog /Pages 2 0 R >>".to_vec(),
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>".to_vec(),
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R \
           /Resources << /Font << /F1 5 0 R /F2 6 0 R /F3 9 0 R >> >> >>"
            .to_vec(),
        stream,
        b"<< /Type /Font /Subtype /Type0 /BaseFont /KozMinPro-Regular /Encoding /UniJIS-UTF16-H /DescendantFonts [7 0 R] >>"
            .to_vec(),
        b"<< /Type /Font /Subtype /Type0 /BaseFont /KozMinPro-Regular /Encoding /Identity-H /DescendantFonts [8 0 R] >>"
            .to_vec(),
        descendant("Japan1"),
        descendant("Japan1"),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>".to_vec(),
    ]);
    let ex = pdftext::extract(&pdf, &pdftext::Limits::default()).unwrap();
    let text = &ex.pages[0];
    assert!(text.contains("\u{1d400}AB"), "{text:?}");
    assert!(text.contains("plain"), "{text:?}");
    assert!(ex.page_errors.is_empty(), "{:?}", ex.page_errors);
}
