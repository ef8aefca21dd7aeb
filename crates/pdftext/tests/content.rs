//! Content interpretation details that the corpus does not pin down:
//! Form XObjects inherit the graphics and text state where they are drawn,
//! and annotation appearances are drawn as pdftotext does (the visible
//! ones; Hidden and NoView ones are not); the symbolic core fonts use their
//! own built-in encodings.

mod support;

use support::{build, stream, HELVETICA};

#[test]
fn a_form_inherits_the_font_set_before_it_is_drawn() {
    let pdf = build(&[
        b"<< /Type /Catalog /Pages 2 0 R >>".to_vec(),
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>".to_vec(),
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R \
           /Resources << /Font << /F1 5 0 R >> /XObject << /X1 6 0 R >> >> >>"
            .to_vec(),
        stream("", b"BT /F1 12 Tf ET /X1 Do"),
        HELVETICA.to_vec(),
        stream(
            "/Type /XObject /Subtype /Form /BBox [0 0 612 792]",
            b"BT 72 700 Td (inherited font) Tj ET",
        ),
    ]);
    let ex = pdftext::extract(&pdf, &pdftext::Limits::default()).unwrap();
    assert_eq!(ex.pages[0].trim(), "inherited font");
}

#[test]
fn visible_annotation_appearances_are_text_hidden_ones_are_not() {
    let widget = |flags: u32, ap: u32| {
        format!("<< /Type /Annot /Subtype /Widget /F {flags} /Rect [72 600 300 620] /AP << /N {ap} 0 R >> >>")
            .into_bytes()
    };
    let appearance = |text: &str| {
        stream(
            "/Type /XObject /Subtype /Form /BBox [0 0 228 20] /Resources << /Font << /F1 5 0 R >> >>",
            format!("/Tx BMC BT /F1 10 Tf 2 5 Td ({text}) Tj ET EMC").as_bytes(),
        )
    };
    let pdf = build(&[
        b"<< /Type /Catalog /Pages 2 0 R >>".to_vec(),
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>".to_vec(),
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R \
           /Resources << /Font << /F1 5 0 R >> >> /Annots [6 0 R 7 0 R 8 0 R] >>"
            .to_vec(),
        stream("", b"BT /F1 12 Tf 72 700 Td (page text) Tj ET"),
        HELVETICA.to_vec(),
        widget(4, 9),   // Print: shown
        widget(2, 10),  // Hidden
        widget(32, 11), // NoView
        appearance("field value"),
        appearance("hidden value"),
        appearance("noview value"),
    ]);
    let ex = pdftext::extract(&pdf, &pdftext::Limits::default()).unwrap();
    let text = &ex.pages[0];
    assert!(text.contains("page text") && text.contains("field value"), "{text:?}");
    assert!(!text.contains("hidden") && !text.contains("noview"), "{text:?}");
}

#[test]
fn symbol_and_dingbats_core_fonts_use_their_built_in_encodings() {
    let pdf = build(&[
        b"<< /Type /Catalog /Pages 2 0 R >>".to_vec(),
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>".to_vec(),
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R \
           /Resources << /Font << /F1 5 0 R /F2 6 0 R /F3 7 0 R /F4 8 0 R >> >> >>"
            .to_vec(),
        stream(
            "",
            b"BT /F1 12 Tf 72 700 Td (abg \\263 \\267 p) Tj ET \
              BT /F2 12 Tf 72 680 Td (3 l) Tj ET \
              BT /F3 12 Tf 72 660 Td (ab) Tj ET \
              BT /F4 12 Tf 72 640 Td (ab) Tj ET",
        ),
        // Not embedded, no /Encoding: the font's own encoding applies.
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Symbol >>".to_vec(),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /ZapfDingbats >>".to_vec(),
        // /Differences over Symbol's encoding win where they are given.
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Symbol /Encoding << /Differences [97 /Omega] >> >>".to_vec(),
        // An explicit base encoding is obeyed.
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Symbol /Encoding /WinAnsiEncoding >>".to_vec(),
    ]);
    let ex = pdftext::extract(&pdf, &pdftext::Limits::default()).unwrap();
    let lines: Vec<&str> = ex.pages[0].lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    assert_eq!(
        lines,
        [
            "\u{3b1}\u{3b2}\u{3b3} \u{2265} \u{2022} \u{3c0}",
            "\u{2713} \u{25cf}",
            "\u{3a9}\u{3b2}",
            "ab"
        ]
    );
}
