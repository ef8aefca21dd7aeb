//! Pages say how many images they draw, so a reader can tell a scan (no
//! text, an image) from a blank page (neither).

mod support;

use pdftext::{extract, Limits};
use support::{build, stream, HELVETICA};

fn page_pdf(content: &[u8], xobject: Option<Vec<u8>>) -> Vec<u8> {
    let resources = if xobject.is_some() {
        "/XObject << /Im1 5 0 R >> /Font << /F1 6 0 R >>"
    } else {
        "/Font << /F1 6 0 R >>"
    };
    build(&[
        b"<< /Type /Catalog /Pages 2 0 R >>".to_vec(),
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>".to_vec(),
        format!("<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R /Resources << {resources} >> >>")
            .into_bytes(),
        stream("", content),
        xobject.unwrap_or_else(|| b"null".to_vec()),
        HELVETICA.to_vec(),
    ])
}

#[test]
fn image_xobjects_and_inline_images_are_counted_per_page() {
    let image = stream(
        "/Type /XObject /Subtype /Image /Width 2 /Height 2 /ColorSpace /DeviceGray /BitsPerComponent 8",
        &[0, 255, 255, 0],
    );
    let pdf = page_pdf(
        b"q 100 0 0 100 0 0 cm /Im1 Do Q BT /F1 9 Tf 10 10 Td (7) Tj ET",
        Some(image),
    );
    let ex = extract(&pdf, &Limits::default()).unwrap();
    assert_eq!(ex.stats[0].images, 1);

    let inline = page_pdf(
        b"q 100 0 0 100 0 0 cm BI /W 2 /H 2 /CS /G /BPC 8 ID \x00\xff\xff\x00 EI Q BT /F1 9 Tf 10 10 Td (7) Tj ET",
        None,
    );
    let ex = extract(&inline, &Limits::default()).unwrap();
    assert_eq!(ex.stats[0].images, 1, "inline image");

    let text_only = page_pdf(b"BT /F1 9 Tf 10 10 Td (Words only) Tj ET", None);
    let ex = extract(&text_only, &Limits::default()).unwrap();
    assert_eq!(ex.stats[0].images, 0);
}
