//! Per-page bounds on work and memory (found by fuzzing small hostile
//! files): one shown string of millions of codes, ToUnicode entries that
//! expand one code into long text, forms that draw forms ten times over
//! ("billion laughs"), operations with millions of operands, and font
//! dictionaries with absurd numbers. Each ends quickly with the page's
//! text so far plus a page error (or a document error), never an abort.

mod support;

use std::time::{Duration, Instant};

use pdftext::{extract, Limits, PdfError};
use support::{build, stream, HELVETICA};

/// One page; fonts /F1 = object 5, /F2 = object 6; /X1 = object 7.
/// `objects` are objects 5, 6, 7, ...
fn page(content: &[u8], objects: &[Vec<u8>]) -> Vec<u8> {
    let mut bodies = vec![
        b"<< /Type /Catalog /Pages 2 0 R >>".to_vec(),
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>".to_vec(),
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R \
           /Resources << /Font << /F1 5 0 R /F2 6 0 R >> /XObject << /X1 7 0 R >> >> >>"
            .to_vec(),
        stream("", content),
    ];
    bodies.extend_from_slice(objects);
    build(&bodies)
}

fn run(pdf: &[u8]) -> Result<pdftext::Extraction, PdfError> {
    let start = Instant::now();
    let r = extract(pdf, &Limits::default());
    assert!(start.elapsed() < Duration::from_secs(15), "took {:?}", start.elapsed());
    r
}

fn page_error(ex: &pdftext::Extraction) -> String {
    ex.page_errors
        .iter()
        .map(|(_, e)| e.as_str())
        .collect::<Vec<_>>()
        .join("; ")
}

#[test]
fn one_huge_string_stops_at_the_page_glyph_bound() {
    // 8 M codes in one Tj: the decoder must not materialise them all.
    let mut content = b"BT /F1 1 Tf 0 700 Td (".to_vec();
    content.resize(content.len() + 8_000_000, b'a');
    content.extend_from_slice(b") Tj ET");
    let ex = run(&page(&content, &[HELVETICA.to_vec(), b"null".to_vec()])).unwrap();
    assert!(page_error(&ex).contains("glyphs"), "{:?}", ex.page_errors);
    assert!(ex.pages[0].len() <= 1_100_000, "{}", ex.pages[0].len());
}

#[test]
fn tounicode_expansion_is_bounded() {
    // One code maps to 30 000 characters; shown a million times that would be 30 GB.
    let target = "0041".repeat(30_000);
    let cmap = format!("1 begincodespacerange <00> <FF> endcodespacerange 1 beginbfchar <01> <{target}> endbfchar");
    let font = b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /ToUnicode 7 0 R >>".to_vec();
    let mut content = b"BT /F1 1 Tf (".to_vec();
    content.resize(content.len() + 1_000_000, 1);
    content.extend_from_slice(b") Tj ET");
    let ex = run(&page(&content, &[font, b"null".to_vec(), stream("", cmap.as_bytes())])).unwrap();
    assert!(page_error(&ex).contains("MiB of text"), "{:?}", ex.page_errors);
    assert!(ex.pages[0].len() < 20 << 20);
}

#[test]
fn forms_drawing_forms_tenfold_are_cut_off() {
    // Ten levels, each form drawing the next ten times: 10^9 draws unbounded.
    let mut objects = vec![HELVETICA.to_vec(), b"null".to_vec()];
    for level in 0..10 {
        let (me, next) = (7 + level, 8 + level);
        let body = if level < 9 {
            format!("/X{next} Do ").repeat(10)
        } else {
            "BT /F1 12 Tf (laugh) Tj ET".to_string()
        };
        let _ = me;
        objects.push(stream(
            &format!(
                "/Type /XObject /Subtype /Form /BBox [0 0 10 10] \
                 /Resources << /Font << /F1 5 0 R >> /XObject << /X{next} {next} 0 R >> >>"
            ),
            body.as_bytes(),
        ));
    }
    let ex = run(&page(b"/X1 Do", &objects)).unwrap();
    assert!(page_error(&ex).contains("forms"), "{:?}", ex.page_errors);
    assert!(ex.pages[0].contains("laugh"));
}

#[test]
fn an_operation_with_millions_of_operands_is_refused() {
    // lopdf would hold every element as a ~120-byte object: 50 M of them is 6 GB.
    let mut content = b"BT /F1 12 Tf 0 700 Td (kept) Tj ET BT /F1 1 Tf [".to_vec();
    for _ in 0..1_200_000 {
        content.extend_from_slice(b"1 ");
    }
    content.extend_from_slice(b"] TJ ET");
    match run(&page(&content, &[HELVETICA.to_vec(), b"null".to_vec()])) {
        Ok(ex) => assert!(page_error(&ex).contains("operands"), "{:?}", ex.page_errors),
        Err(e) => assert!(matches!(e, PdfError::Malformed(_)), "{e:?}"),
    }
}

#[test]
fn absurd_numbers_in_one_font_do_not_fail_the_document() {
    // /W starting near u32::MAX and /FirstChar beyond usize: arithmetic
    // overflow there used to panic (in debug builds), failing the whole file.
    let pdf = build(&[
        b"<< /Type /Catalog /Pages 2 0 R >>".to_vec(),
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>".to_vec(),
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R \
           /Resources << /Font << /F1 5 0 R /F2 6 0 R /F3 7 0 R >> >> >>"
            .to_vec(),
        stream(
            "",
            b"BT /F2 12 Tf 0 700 Td <00410042> Tj ET BT /F3 12 Tf 0 650 Td (abc) Tj ET \
              BT /F1 12 Tf 0 600 Td (readable) Tj ET",
        ),
        HELVETICA.to_vec(),
        b"<< /Type /Font /Subtype /Type0 /BaseFont /X /Encoding /Identity-H /DescendantFonts [8 0 R] >>".to_vec(),
        b"<< /Type /Font /Subtype /TrueType /BaseFont /Y /FirstChar 1e300 /Widths [1 2 3] >>".to_vec(),
        b"<< /Type /Font /Subtype /CIDFontType2 /BaseFont /X \
           /CIDSystemInfo << /Registry (Adobe) /Ordering (Identity) /Supplement 0 >> \
           /W [4294967295 [1 2 3] 1e30 [4 5] 10 4294967295 500] >>"
            .to_vec(),
    ]);
    let ex = run(&pdf).unwrap();
    assert!(ex.pages[0].contains("readable"), "{:?}", ex.pages);
    assert!(ex.page_errors.is_empty(), "{:?}", ex.page_errors);
}

#[test]
fn undecodable_content_is_damage_not_a_missing_text_layer() {
    // Page 2's /Contents is `contents`; object 7 is `seventh`.
    let two_pages = |contents: &str, seventh: Vec<u8>| {
        build(&[
            b"<< /Type /Catalog /Pages 2 0 R >>".to_vec(),
            b"<< /Type /Pages /Kids [3 0 R 6 0 R] /Count 2 >>".to_vec(),
            b"<< /Type /Page /Parent 2 0 R /Contents 4 0 R /Resources << /Font << /F1 5 0 R >> >> >>".to_vec(),
            stream("", b"BT /F1 12 Tf 72 700 Td (first page) Tj ET"),
            HELVETICA.to_vec(),
            format!("<< /Type /Page /Parent 2 0 R /Contents {contents} /Resources << /Font << /F1 5 0 R >> >> >>")
                .into_bytes(),
            seventh,
        ])
    };
    // The second page's content is not deflate data (as when a file was
    // encrypted and lost its /Encrypt entry): that page fails alone.
    let garbage = stream("/Filter /FlateDecode", b"\x8f\x13 this is not zlib data \x00\xff");
    let ex = run(&two_pages("7 0 R", garbage.clone())).unwrap();
    assert!(ex.pages[0].contains("first page"));
    assert_eq!(ex.pages[1], "");
    assert_eq!(
        ex.page_errors.iter().map(|e| e.0).collect::<Vec<_>>(),
        vec![1],
        "{:?}",
        ex.page_errors
    );
    // A content object that is not in the file (a truncated file) likewise;
    // one that is null is an empty page, as in poppler.
    let ex = run(&two_pages("[4 0 R 99 0 R]", b"null".to_vec())).unwrap();
    assert_eq!(
        ex.page_errors.iter().map(|e| e.0).collect::<Vec<_>>(),
        vec![1],
        "{:?}",
        ex.page_errors
    );
    assert!(ex.pages[1].contains("first page"), "the readable part is kept");
    let ex = run(&two_pages("7 0 R", b"null".to_vec())).unwrap();
    assert!(ex.page_errors.is_empty(), "{:?}", ex.page_errors);
    // When no page can be read the file is damaged, not "a scan without text".
    let pdf = build(&[
        b"<< /Type /Catalog /Pages 2 0 R >>".to_vec(),
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>".to_vec(),
        b"<< /Type /Page /Parent 2 0 R /Contents 4 0 R >>".to_vec(),
        garbage,
    ]);
    let err = run(&pdf).unwrap_err();
    assert!(matches!(err, PdfError::Malformed(_)), "{err:?}");
    assert!(err.to_string().starts_with("the PDF is damaged: "), "{err}");
}
