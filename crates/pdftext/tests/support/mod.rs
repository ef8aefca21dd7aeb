//! Building small PDFs by hand for tests (shared by the test files of this
//! crate and by the daemon's fault tests through `#[path]`).
#![allow(dead_code)]

use std::io::Write;

/// Assembles a PDF from object bodies (object i+1 = bodies[i]) with a
/// correct xref table and a trailer pointing at object 1 as the catalog.
pub fn build(bodies: &[Vec<u8>]) -> Vec<u8> {
    let mut out = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n".to_vec();
    let mut offsets = Vec::new();
    for (i, body) in bodies.iter().enumerate() {
        offsets.push(out.len());
        writeln!(out, "{} 0 obj", i + 1).unwrap();
        out.extend_from_slice(body);
        out.extend_from_slice(b"\nendobj\n");
    }
    let xref = out.len();
    write!(out, "xref\n0 {}\n0000000000 65535 f \n", bodies.len() + 1).unwrap();
    for o in offsets {
        writeln!(out, "{o:010} 00000 n ").unwrap();
    }
    write!(
        out,
        "trailer\n<< /Size {} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n",
        bodies.len() + 1
    )
    .unwrap();
    out
}

/// A stream object with a correct /Length.
pub fn stream(dict: &str, data: &[u8]) -> Vec<u8> {
    let mut v = format!("<< {dict} /Length {} >>\nstream\n", data.len()).into_bytes();
    v.extend_from_slice(data);
    v.extend_from_slice(b"\nendstream");
    v
}

/// A non-embedded core-14 font.
pub const HELVETICA: &[u8] = b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>";

/// Deterministic noise (xorshift64): `n` bytes from `seed`.
pub fn random_bytes(mut seed: u64, n: usize) -> Vec<u8> {
    (0..n)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as u8
        })
        .collect()
}

/// A document of several pages: `contents[i]` is page i's content stream;
/// every page has the fonts /F1, /F2, ... = `fonts[0]`, `fonts[1]`, ...
pub fn document(contents: &[Vec<u8>], fonts: &[Vec<u8>]) -> Vec<u8> {
    let n = contents.len();
    // 1 catalog, 2 pages, 3.. page objects, then contents, then fonts.
    let first_page = 3;
    let first_content = first_page + n;
    let first_font = first_content + n;
    let font_refs: String = (0..fonts.len())
        .map(|i| format!("/F{} {} 0 R ", i + 1, first_font + i))
        .collect();
    let kids: String = (0..n).map(|i| format!("{} 0 R ", first_page + i)).collect();
    let mut bodies = vec![
        b"<< /Type /Catalog /Pages 2 0 R >>".to_vec(),
        format!("<< /Type /Pages /Kids [{kids}] /Count {n} >>").into_bytes(),
    ];
    for i in 0..n {
        bodies.push(
            format!(
                "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents {} 0 R /Resources << /Font << {font_refs}>> >> >>",
                first_content + i
            )
            .into_bytes(),
        );
    }
    for c in contents {
        bodies.push(stream("", c));
    }
    bodies.extend_from_slice(fonts);
    build(&bodies)
}

/// A simple font whose codes 65..=90 are named glyphs no table knows
/// (/g1 ... /g26), without ToUnicode or an embedded program: what it shows
/// cannot be decoded into text.
pub fn undecodable_font() -> Vec<u8> {
    let names: String = (1..=26).map(|i| format!("/g{i} ")).collect();
    let widths = "500 ".repeat(26);
    format!(
        "<< /Type /Font /Subtype /Type1 /BaseFont /PrivateGlyphs /FirstChar 65 /LastChar 90 \
         /Widths [{widths}] /Encoding << /Type /Encoding /Differences [65 {names}] >> >>"
    )
    .into_bytes()
}

/// Page content showing `lines` lines of `text` with font `font` ("F1").
pub fn text_page(font: &str, text: &str, lines: usize) -> Vec<u8> {
    let mut c = format!("BT /{font} 11 Tf 72 740 Td 14 TL\n").into_bytes();
    for _ in 0..lines {
        c.extend_from_slice(format!("({text}) '\n").as_bytes());
    }
    c.extend_from_slice(b"ET");
    c
}
