//! Type 3 fonts whose glyph space is not the 1/1000 em of other fonts.
//!
//! The generated page mimics Ghostscript's rendering of a dvips bitmap
//! font (see `tests/real.rs` for the real files): FontMatrix [1 0 0 -1 0 0],
//! glyphs about 42 units wide drawn at 0.12 Tf, so a letter is 5 units
//! wide; glyph names in base 36 (/CP for code 97), a ToUnicode that maps
//! 'c' to a carriage return, and words kerned with TJ by a quarter unit.
//! Judged against 0.12 units, every kern looked like a word break and
//! every small baseline shift like a new line.

mod support;

use pdftext::{extract, Limits};
use support::{document, stream};

const SIZE: f64 = 0.12;

fn width(c: u8) -> f64 {
    match c {
        b'i' | b'l' | b't' => 23.0,
        b'm' | b'w' => 69.0,
        b'A'..=b'Z' => 60.0,
        _ => 42.0,
    }
}

/// Ghostscript's name for a code: base 36 with a letter for the first digit.
fn gs_name(code: u8) -> String {
    let digit = |d: u8| {
        if d < 10 {
            (b'0' + d) as char
        } else {
            (b'A' + d - 10) as char
        }
    };
    format!("{}{}", (b'A' + code / 36) as char, digit(code % 36))
}

fn type3_font(text: &str, to_unicode: usize) -> Vec<u8> {
    let mut codes: Vec<u8> = text.bytes().filter(|b| *b != b' ').collect();
    codes.sort();
    codes.dedup();
    let differences: String = codes.iter().map(|&c| format!("{c} /{} ", gs_name(c))).collect();
    // The glyph procedures are never run by a text extractor; each name
    // points at the same (empty) procedure object.
    let procs: String = codes
        .iter()
        .map(|&c| format!("/{} {to_unicode} 0 R ", gs_name(c)))
        .collect();
    let widths: String = (0..=127u8)
        .map(|c| format!("{} ", if codes.contains(&c) { width(c) } else { 0.0 }))
        .collect();
    format!(
        "<< /Type /Font /Subtype /Type3 /FontMatrix [1 0 0 -1 0 0] /FontBBox [0 0 1000 1000] \
         /Resources << >> /FirstChar 0 /LastChar 127 /Widths [{widths}] \
         /Encoding << /Type /Encoding /BaseEncoding /WinAnsiEncoding /Differences [{differences}] >> \
         /CharProcs << {procs}>> /ToUnicode {to_unicode} 0 R >>"
    )
    .into_bytes()
}

const CMAP: &str = "/CIDInit /ProcSet findresource begin 12 dict begin begincmap /CMapType 2 def \
    1 begincodespacerange <00> <ff> endcodespacerange 1 beginbfrange <63> <63> <000d> endbfrange \
    endcmap CMapName currentdict /CMap defineresource pop end end";

/// A line drawn word by word as Ghostscript does: each word's letters in
/// one TJ, kerned apart by -1997 (a quarter unit), the next word placed
/// with Td a third of an em after the last.
fn line(words: &[&str]) -> String {
    let mut out = String::new();
    for w in words {
        let pieces: Vec<String> = w
            .as_bytes()
            .chunks(2)
            .map(|p| format!("({})", String::from_utf8_lossy(p)))
            .collect();
        out.push_str(&format!("[{}]TJ\n", pieces.join("-1997")));
        let advance: f64 = w.bytes().map(width).sum::<f64>() * SIZE + (pieces.len() - 1) as f64 * 1.997 * SIZE;
        out.push_str(&format!("{:.4} 0 Td\n", advance + 3.3));
    }
    out
}

#[test]
fn a_bitmap_font_at_a_tiny_size_reads_as_words_and_lines() {
    let first = [
        "The", "book", "class", "was", "written", "to", "help", "produce", "books",
    ];
    let second = ["of", "classical", "design", "and", "layout"];
    let all = format!("{} {}", first.join(" "), second.join(" "));
    let content = format!(
        "BT /F1 {SIZE} Tf 1 0 0 -1 72 700 Tm\n{}ET\nBT /F1 {SIZE} Tf 1 0 0 -1 72 712 Tm\n{}ET",
        line(&first),
        line(&second)
    );
    // Objects: 1 catalog, 2 pages, 3 page, 4 content, 5 font, 6 ToUnicode.
    let pdf = document(
        &[content.into_bytes()],
        &[type3_font(&all, 6), stream("", CMAP.as_bytes())],
    );
    let ex = extract(&pdf, &Limits::default()).unwrap();
    let lines: Vec<&str> = ex.pages[0].lines().collect();
    assert_eq!(
        lines,
        [
            "The book class was written to help produce books",
            "of classical design and layout"
        ],
        "{:?}",
        ex.pages[0]
    );
    assert_eq!(ex.stats[0].undecoded, 0);
}
