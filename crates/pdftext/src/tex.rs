//! Fonts that name their glyphs only by number.
//!
//! pdfTeX and dvips embed TeX's bitmap (PK) fonts as Type 3 fonts whose
//! glyphs are called /a0 … /a255 after their codes: the names say nothing,
//! and there is no ToUnicode. What each code means is the font's TeX
//! encoding, which the PDF does not name either; it shows in which codes
//! the (subset) font has. Cyrillic text in T2A fills 0xC0–0xFF with
//! letters; T1 puts accented Latin letters above 0x80 but far fewer of them
//! than the plain Latin ones; OT1, the Computer Modern default, has nothing
//! above 0x7F; and a font whose glyphs all have one width is a typewriter
//! font, whose OT1 layout is ASCII.

use crate::tex_tables::{OT1, OT1_TT, T1, T2A};

/// The number a glyph name stands for when it is nothing but a number:
/// "a65", "65", "char65" (None for real names such as "A" or "afii10017").
pub fn numbered_name(name: &str) -> Option<usize> {
    let digits = name
        .strip_prefix("char")
        .or_else(|| name.strip_prefix('a'))
        .unwrap_or(name);
    if digits.is_empty() || digits.len() > 3 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Ghostscript's names for the glyphs of a bitmap font: the code in base 36
/// with a letter for its first digit ("A0" = 0, "AF" = 15, "BT" = 65, "D8" = 116).
pub fn base36_name(name: &str) -> Option<usize> {
    let &[high, low] = name.as_bytes() else {
        return None;
    };
    let high = high.checked_sub(b'A').filter(|h| *h < 8)? as usize;
    let low = (low as char).to_digit(36).filter(|_| !low.is_ascii_lowercase())? as usize;
    Some(high * 36 + low).filter(|c| *c < 256)
}

/// The TeX layout of a font whose every glyph is named by its own code
/// (`names[code]`), judged from the codes it has and their `widths`;
/// `None` when the names are real names (then they are read as such).
pub fn numbered_layout(names: &[Option<String>; 256], widths: &[f64; 256]) -> Option<&'static [&'static str; 256]> {
    let mut present = [false; 256];
    for (code, name) in names.iter().enumerate() {
        let Some(name) = name.as_deref().filter(|n| *n != ".notdef") else {
            continue;
        };
        if numbered_name(name) != Some(code) && base36_name(name) != Some(code) {
            return None;
        }
        present[code] = true;
    }
    code_layout(&present, widths)
}

/// The TeX layout of a bitmap font whose glyph names mean nothing at all
/// (Ghostscript names a PK font's glyphs /BZ, /CW, /D8 …): judged, as for
/// numbered names, from the codes it has (`present`) and their widths.
pub fn code_layout(present: &[bool; 256], widths: &[f64; 256]) -> Option<&'static [&'static str; 256]> {
    if !present.iter().any(|p| *p) {
        return None;
    }
    let count = |range: std::ops::RangeInclusive<usize>| range.filter(|&c| present[c]).count();
    let cyrillic = count(0xC0..=0xFF);
    let latin = count(0x41..=0x5A) + count(0x61..=0x7A);
    if cyrillic >= 8 && cyrillic * 2 >= latin {
        return Some(&T2A);
    }
    if count(0x80..=0xFF) > 0 || (count(0x1B..=0x1F) > 0 && count(0x0B..=0x0F) == 0) {
        return Some(&T1);
    }
    // One width for every glyph (at least a dozen of them): typewriter.
    let mut shown = (0..256)
        .filter(|&c| present[c])
        .map(|c| widths[c])
        .filter(|w| w.is_finite() && *w > 0.0);
    let monospace = match shown.next() {
        Some(first) => {
            let rest: Vec<f64> = shown.collect();
            rest.len() >= 11 && rest.iter().all(|w| (w - first).abs() <= first * 1e-3)
        }
        None => false,
    };
    Some(if monospace { &OT1_TT } else { &OT1 })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn font(
        codes: impl IntoIterator<Item = usize>,
        width: impl Fn(usize) -> f64,
    ) -> ([Option<String>; 256], [f64; 256]) {
        let mut names: [Option<String>; 256] = std::array::from_fn(|_| None);
        let mut widths = [0.0; 256];
        for c in codes {
            names[c] = Some(format!("a{c}"));
            widths[c] = width(c);
        }
        (names, widths)
    }

    #[test]
    fn numbers_are_told_from_names() {
        assert_eq!(numbered_name("a65"), Some(65));
        assert_eq!(numbered_name("char200"), Some(200));
        assert_eq!(numbered_name("7"), Some(7));
        assert_eq!(numbered_name("afii10017"), None);
        assert_eq!(numbered_name("A"), None);
        assert_eq!(numbered_name("a"), None);
        assert_eq!(base36_name("A0"), Some(0));
        assert_eq!(base36_name("AF"), Some(15));
        assert_eq!(base36_name("BT"), Some(65));
        assert_eq!(base36_name("D8"), Some(116));
        assert_eq!(base36_name("Aa"), None);
        assert_eq!(base36_name("AE0"), None);
    }

    #[test]
    fn the_codes_a_font_has_tell_its_layout() {
        // Russian text: most letters at 0xC0..0xFF.
        let (n, w) = font((0xC0..=0xFF).chain(0x41..=0x45).chain([0x2C, 0x2E]), |c| {
            300.0 + c as f64
        });
        assert_eq!(numbered_layout(&n, &w).map(|t| t[0xC0]), Some("afii10017"));
        // French in T1: a few accented letters among many plain ones.
        let (n, w) = font((0x41..=0x5A).chain(0x61..=0x7A).chain([0xE9, 0xE8, 0xE0, 0xE7]), |c| {
            300.0 + c as f64
        });
        assert_eq!(numbered_layout(&n, &w).map(|t| t[0xE9]), Some("eacute"));
        // Plain English in OT1: the fi ligature at 0x0C, the en dash at 0x7B.
        let (n, w) = font((0x61..=0x7A).chain([0x0C, 0x7B, 0x5C, 0x22]), |c| 300.0 + c as f64);
        let t = numbered_layout(&n, &w).unwrap();
        assert_eq!((t[0x0C], t[0x7B], t[0x5C]), ("fi", "endash", "quotedblleft"));
        // The same codes in a typewriter font are ASCII.
        let (n, w) = font((0x61..=0x7A).chain([0x7B, 0x5C]), |_| 525.0);
        let t = numbered_layout(&n, &w).unwrap();
        assert_eq!((t[0x7B], t[0x5C]), ("braceleft", "backslash"));
    }

    #[test]
    fn real_names_are_left_alone() {
        let mut names: [Option<String>; 256] = std::array::from_fn(|_| None);
        names[65] = Some("a65".into());
        names[66] = Some("B".into());
        assert_eq!(numbered_layout(&names, &[500.0; 256]), None);
        // A number that is not the code is not this scheme either.
        names[66] = Some("a12".into());
        assert_eq!(numbered_layout(&names, &[500.0; 256]), None);
    }
}
