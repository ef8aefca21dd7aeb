//! Hostile and broken input: every case ends in an error or a partial
//! extraction, quickly and within bounded memory; nothing panics.

mod support;

use std::io::Write;
use std::time::{Duration, Instant};

use pdftext::{extract, Limits, PdfError};
use support::{build, random_bytes, stream, HELVETICA};

/// A valid one-page document with the given content stream.
fn one_page(content: &[u8], extra: &[Vec<u8>]) -> Vec<u8> {
    let mut bodies = vec![
        b"<< /Type /Catalog /Pages 2 0 R >>".to_vec(),
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>".to_vec(),
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R /Resources << /Font << /F1 5 0 R >> /XObject << /X1 6 0 R >> >> >>".to_vec(),
        stream("", content),
        HELVETICA.to_vec(),
    ];
    bodies.extend_from_slice(extra);
    build(&bodies)
}

fn run(bytes: &[u8], limits: &Limits) -> Result<pdftext::Extraction, PdfError> {
    let start = Instant::now();
    let r = extract(bytes, limits);
    assert!(start.elapsed() < Duration::from_secs(10), "took {:?}", start.elapsed());
    r
}

#[test]
fn the_builder_makes_a_readable_pdf() {
    let pdf = one_page(b"BT /F1 12 Tf 72 720 Td (Hello hostile world) Tj ET", &[]);
    let ex = run(&pdf, &Limits::default()).unwrap();
    assert_eq!(ex.pages[0].trim(), "Hello hostile world");
}

#[test]
fn empty_random_and_text_bytes_are_not_pdfs() {
    assert!(matches!(run(b"", &Limits::default()), Err(PdfError::NotPdf)));
    let random = random_bytes(0x2545F4914F6CDD1D, 100_000);
    assert!(matches!(run(&random, &Limits::default()), Err(PdfError::NotPdf)));
    // Random bytes after a valid header: an error, not a crash.
    let mut headed = b"%PDF-1.4\n".to_vec();
    headed.extend_from_slice(&random);
    assert!(run(&headed, &Limits::default()).is_err());
}

#[test]
fn truncated_files_fail_or_yield_what_is_readable() {
    let corpus = std::env::var("DOCULEARN_CORPUS")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/corpus"));
    for name in ["groff-mom-pdf.pdf", "gnuplot-manual.pdf", "debian-refcard-ja.pdf"] {
        let bytes = std::fs::read(corpus.join(name)).unwrap();
        for cut in [bytes.len() / 2, bytes.len() / 10, 2000, 200] {
            match run(&bytes[..cut], &Limits::default()) {
                Ok(ex) => assert!(!ex.pages.is_empty()),
                Err(e) => assert!(!e.to_string().is_empty()),
            }
        }
    }
}

#[test]
fn a_broken_xref_is_rebuilt_or_reported() {
    let mut pdf = one_page(b"BT /F1 12 Tf 72 720 Td (Still readable) Tj ET", &[]);
    // Point startxref at garbage.
    let pos = pdf.windows(9).rposition(|w| w == b"startxref").unwrap();
    pdf.truncate(pos);
    pdf.extend_from_slice(b"startxref\n999999\n%%EOF\n");
    match run(&pdf, &Limits::default()) {
        Ok(ex) => assert!(ex.pages[0].contains("Still readable")),
        Err(e) => assert!(matches!(e, PdfError::Malformed(_)), "{e:?}"),
    }
}

#[test]
fn reference_cycles_end() {
    // The page tree lists itself as its own kid; a form draws itself.
    let pdf = build(&[
        b"<< /Type /Catalog /Pages 2 0 R >>".to_vec(),
        b"<< /Type /Pages /Kids [2 0 R 3 0 R] /Count 2 >>".to_vec(),
        b"<< /Type /Page /Parent 2 0 R /Contents 4 0 R /Resources << /Font << /F1 5 0 R >> /XObject << /X1 6 0 R >> >> >>".to_vec(),
        stream("", b"BT /F1 12 Tf 10 10 Td (cycle) Tj ET /X1 Do"),
        HELVETICA.to_vec(),
        stream(
            "/Type /XObject /Subtype /Form /BBox [0 0 100 100] /Resources << /Font << /F1 5 0 R >> /XObject << /X1 6 0 R >> >>",
            b"BT /F1 12 Tf 0 0 Td (inner) Tj ET /X1 Do",
        ),
        // An object that refers to itself.
        b"7 0 R".to_vec(),
    ]);
    let ex = run(&pdf, &Limits::default()).unwrap();
    assert_eq!(ex.pages.len(), 1);
    assert!(
        ex.pages[0].contains("cycle") && ex.pages[0].contains("inner"),
        "{:?}",
        ex.pages
    );
    assert_eq!(
        ex.pages[0].matches("inner").count(),
        1,
        "the self-drawing form is drawn once"
    );
}

#[test]
fn deep_nesting_is_refused_before_parsing() {
    let deep = format!("{}1{}", "[".repeat(100_000), "]".repeat(100_000));
    let pdf = one_page(b"BT ET", &[deep.into_bytes()]);
    let err = run(&pdf, &Limits::default()).unwrap_err();
    assert!(matches!(err, PdfError::LimitExceeded(_)), "{err:?}");
    assert!(err.to_string().contains("nested"));
    let deep_dicts = format!("{}{}", "<< /A ".repeat(50_000), ">>".repeat(50_000));
    assert!(run(&one_page(b"BT ET", &[deep_dicts.into_bytes()]), &Limits::default()).is_err());
}

#[test]
fn a_stream_that_inflates_past_the_limit_is_stopped() {
    let zeros = vec![b' '; 64 << 20];
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
    z.write_all(&zeros).unwrap();
    let bomb = z.finish().unwrap();
    assert!(bomb.len() < 1 << 20, "the bomb is small: {}", bomb.len());
    let mut pdf = build(&[
        b"<< /Type /Catalog /Pages 2 0 R >>".to_vec(),
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>".to_vec(),
        b"<< /Type /Page /Parent 2 0 R /Contents 4 0 R /Resources << /Font << /F1 5 0 R >> >> >>".to_vec(),
        stream("/Filter /FlateDecode", &bomb),
        HELVETICA.to_vec(),
    ]);
    let limits = Limits {
        max_decompressed_bytes: 8 << 20,
        ..Limits::default()
    };
    let err = run(&pdf, &limits).unwrap_err();
    assert!(matches!(err, PdfError::LimitExceeded(_)), "{err:?}");
    assert!(err.to_string().contains("inflate"), "{err}");
    pdf.clear();
}

#[test]
fn a_document_claiming_millions_of_pages_is_refused() {
    let pdf = build(&[
        b"<< /Type /Catalog /Pages 2 0 R >>".to_vec(),
        b"<< /Type /Pages /Kids [3 0 R] /Count 5000000 >>".to_vec(),
        b"<< /Type /Page /Parent 2 0 R >>".to_vec(),
    ]);
    let err = run(&pdf, &Limits::default()).unwrap_err();
    assert!(err.to_string().contains("5000000 pages"), "{err}");
    // And one that really has more pages than allowed.
    let kids: Vec<String> = (0..50).map(|i| format!("{} 0 R", i + 3)).collect();
    let mut bodies = vec![
        b"<< /Type /Catalog /Pages 2 0 R >>".to_vec(),
        format!("<< /Type /Pages /Kids [{}] /Count 1 >>", kids.join(" ")).into_bytes(),
    ];
    for _ in 0..50 {
        bodies.push(b"<< /Type /Page /Parent 2 0 R >>".to_vec());
    }
    let limits = Limits {
        max_pages: 10,
        ..Limits::default()
    };
    assert!(matches!(run(&build(&bodies), &limits), Err(PdfError::LimitExceeded(_))));
}

#[test]
fn huge_output_is_bounded() {
    let content =
        "BT /F1 1 Tf ".to_string() + &"(xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx) Tj ".repeat(20_000) + "ET";
    let limits = Limits {
        max_output_chars: 100_000,
        ..Limits::default()
    };
    let err = run(&one_page(content.as_bytes(), &[]), &limits).unwrap_err();
    assert!(matches!(err, PdfError::LimitExceeded(_)), "{err:?}");
}

#[test]
fn a_damaged_content_stream_keeps_the_text_before_the_damage() {
    let pdf = one_page(b"BT /F1 12 Tf 72 720 Td (Before) Tj ) ] >> (unterminated ET", &[]);
    match run(&pdf, &Limits::default()) {
        Ok(ex) => assert!(ex.pages[0].contains("Before"), "{:?}", ex.pages),
        Err(e) => panic!("one bad stream should not fail the document: {e}"),
    }
}

#[test]
fn garbage_operands_do_not_panic() {
    let content = b"BT /F1 1e308 Tf 1e308 1e308 Td (x) Tj /F9 12 Tf (y) Tj ET q q q Q Q Q Q Q 0 0 0 0 0 0 cm BT /F1 12 Tf [(a) -1e30 (b)] TJ ET /Nope Do";
    let _ = run(&one_page(content, &[]), &Limits::default());
}
