//! Real documents of the classes that used to lose their text: TeX bitmap
//! (PK) fonts as Type 3 fonts, and 8-bit Cyrillic fonts that name their
//! glyphs only inside the embedded font program. The files, where they come
//! from and their licences are listed in `tests/real/SOURCES.md`.

use pdftext::{extract, token_f1, token_recall, Limits};

fn real(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/real")
        .join(name)
}

fn text_of(name: &str) -> String {
    let ex = extract(&std::fs::read(real(name)).unwrap(), &Limits::default()).unwrap_or_else(|e| panic!("{name}: {e}"));
    let lost = ex.stats.iter().filter(|s| s.lost_text()).count();
    assert_eq!(lost, 0, "{name}: {lost} pages lost text");
    ex.pages.join("\n")
}

fn reference(name: &str) -> String {
    std::fs::read_to_string(real(name)).unwrap()
}

/// Recall of `reference`'s tokens where a token also counts as found when
/// it is a piece of one of ours. pdftotext is not sound on these files: it
/// drops every ligature glyph (TeX's fi, ff, ffl: "rst" for "first", "di"
/// and "erent" for "different") and keeps words hyphenated across lines
/// ("pro-", "duce") that we join; those pieces are in our whole words.
fn recall_of_pieces(text: &str, reference: &str) -> f64 {
    let ours = pdftext::f1::tokens(text);
    let whole: std::collections::HashSet<&str> = ours.iter().map(String::as_str).collect();
    let refs = pdftext::f1::tokens(reference);
    let found = refs
        .iter()
        .filter(|t| {
            let piece = t.strip_suffix('-').unwrap_or(t);
            whole.contains(t.as_str()) || (!piece.is_empty() && ours.iter().any(|o| o.contains(piece)))
        })
        .count();
    found as f64 / refs.len().max(1) as f64
}

/// Share of the letters that are Cyrillic.
fn cyrillic_share(text: &str) -> f64 {
    let letters: Vec<char> = text.chars().filter(|c| c.is_alphabetic()).collect();
    let cyrillic = letters.iter().filter(|c| ('\u{400}'..='\u{4FF}').contains(*c)).count();
    cyrillic as f64 / letters.len().max(1) as f64
}

/// Ghostscript's conversion of dvips bitmap fonts: Type 3 fonts with
/// FontMatrix [1 0 0 -1 0 0] drawn at 0.12 Tf, glyphs named in base 36
/// (/BZ, /CW), kerned with TJ. Before: "the PDF's text cannot be decoded";
/// words split at every kern once the names were read.
#[test]
fn a_tugboat_article_in_ghostscript_bitmap_fonts_reads_as_words() {
    let text = text_of("tub-octavo.pdf");
    let reference = reference("tub-octavo.reference.txt");
    let recall = token_recall(&text, &reference);
    let pieces = recall_of_pieces(&text, &reference);
    eprintln!("FIGURE tub-octavo: recall of pdftotext's words {recall:.4}, counting pieces {pieces:.4}");
    assert!(recall >= 0.9, "recall {recall}");
    assert!(pieces >= 0.97, "recall counting pieces {pieces}");
    for phrase in [
        "The Octavo Package",
        "Donald Knuth developed TEX because of his growing dissatisfaction",
        "typesetting system",
        "handbook",
    ] {
        assert!(text.contains(phrase), "missing “{phrase}”");
    }
    // Words with TeX's ligatures, which pdftotext drops ("modi cation").
    let words = pdftext::f1::tokens(&text);
    for word in ["modification", "different", "first"] {
        assert!(words.iter().any(|w| w == word), "missing “{word}”");
    }
    // Ghostscript's own ToUnicode turns every 'c' into a carriage return
    // and ']' into ℄; neither comes through.
    assert!(!text.contains('\r') && !text.contains('℄'));
    assert!(text.contains("[4]"), "citation brackets");
}

/// The same kind of file in German (T1-encoded bitmap fonts: umlauts above
/// 0x80), whose ToUnicode maps '@' to a backspace.
#[test]
fn a_german_manual_in_ghostscript_bitmap_fonts_keeps_umlauts_and_macro_names() {
    let text = text_of("minipage-marginpar.pdf");
    let reference = reference("minipage-marginpar.reference.txt");
    let recall = token_recall(&text, &reference);
    let pieces = recall_of_pieces(&text, &reference);
    eprintln!("FIGURE minipage-marginpar: recall of pdftotext's words {recall:.4}, counting pieces {pieces:.4}");
    assert!(recall >= 0.95, "recall {recall}");
    assert!(pieces >= 0.97, "recall counting pieces {pieces}");
    for phrase in [
        "Innerhalb von Boxen",
        "\\mpgmpar@savemarginpars",
        "Rückwärtskompatibilitäts",
    ] {
        assert!(text.contains(phrase), "missing “{phrase}”");
    }
    assert!(!text.contains('\u{8}'));
}

/// Ghostscript-made CFF subsets of a Cyrillic Arial: the glyph names live
/// only in the CFF program's own encoding and charset. Before: F1 0.76.
#[test]
fn a_russian_class_manual_in_cff_subsets_agrees_with_pdftotext() {
    let text = text_of("eskd.pdf");
    let f1 = token_f1(&text, &reference("eskd.reference.txt"));
    eprintln!("FIGURE eskd: F1 against pdftotext {f1:.4}");
    assert!(f1 >= 0.95, "F1 {f1}");
    assert!(text.contains("Тольяттинский государственный университет"));
    // The manual is a LaTeX class's documented source: Russian prose
    // between Latin macro code.
    assert!(cyrillic_share(&text) > 0.3, "{}", cyrillic_share(&text));
}

/// pdfTeX 0.13d bitmap fonts named /a0../a255 in T2A: poppler reads them as
/// Latin-1 mojibake, so the check is that the text is Cyrillic and says
/// what the page says. Before: F1 0 and no Cyrillic at all.
#[test]
fn ukrainian_hyphenation_rules_in_t2a_bitmap_fonts_are_cyrillic() {
    let text = text_of("rules90.pdf");
    let share = cyrillic_share(&text);
    eprintln!("FIGURE rules90: Cyrillic share of letters {share:.3}");
    assert!(share >= 0.9, "Cyrillic share {share}");
    for phrase in [
        "ПРАВИЛА ПЕРЕНОСУ",
        "Орфографiчнi",
        "правила переносу",
        "Український правопис",
    ] {
        assert!(text.contains(phrase), "missing “{phrase}”");
    }
}
