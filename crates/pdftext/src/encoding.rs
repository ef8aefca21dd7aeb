//! Simple-font encodings and glyph names: the base encodings of PDF
//! Appendix D (Standard, MacRoman, WinAnsi, PDFDoc), glyph names to Unicode
//! (Adobe Glyph List, `uniXXXX`, `uXXXX`, ligature and suffixed names), and
//! the widths of the 14 core fonts for files that do not embed them.

use std::sync::OnceLock;

use crate::symbolic::{DINGBATS_ENCODING, SYMBOL_ENCODING};
use crate::tables::{CORE14_WIDTHS, GLYPH_LIST, LATIN_ENCODINGS};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BaseEncoding {
    Standard,
    MacRoman,
    WinAnsi,
    PdfDoc,
}

impl BaseEncoding {
    pub fn from_name(name: &str) -> Option<BaseEncoding> {
        Some(match name {
            "StandardEncoding" => BaseEncoding::Standard,
            "MacRomanEncoding" => BaseEncoding::MacRoman,
            "WinAnsiEncoding" => BaseEncoding::WinAnsi,
            "PDFDocEncoding" => BaseEncoding::PdfDoc,
            _ => return None,
        })
    }

    /// The 256 glyph names of this encoding.
    pub fn names(self) -> &'static [Option<&'static str>; 256] {
        static TABLES: OnceLock<[[Option<&'static str>; 256]; 4]> = OnceLock::new();
        let tables = TABLES.get_or_init(|| {
            let mut t = [[None; 256]; 4];
            for (name, std, mac, win, pdf) in LATIN_ENCODINGS {
                for (k, code) in [*std, *mac, *win, *pdf].into_iter().enumerate() {
                    if code != 0 {
                        t[k][code as usize] = Some(*name);
                    }
                }
            }
            // WinAnsi: 0xA0 is a no-break space, 0xAD a soft hyphen (PDF 1.7 D.2 notes).
            t[2][0xa0] = Some("space");
            t[2][0xad] = Some("hyphen");
            t
        });
        &tables[self as usize]
    }
}

/// Unicode text of a glyph name, as poppler resolves it.
pub fn glyph_to_unicode(name: &str) -> Option<String> {
    if name.is_empty() || name == ".notdef" {
        return None;
    }
    if let Ok(i) = GLYPH_LIST.binary_search_by(|(n, _)| n.cmp(&name)) {
        return Some(GLYPH_LIST[i].1.to_string());
    }
    // uniXXXX[XXXX...]: one or more 4-hex-digit BMP values.
    if let Some(hex) = name.strip_prefix("uni") {
        if hex.len() >= 4 && hex.len() % 4 == 0 && hex.chars().all(|c| c.is_ascii_hexdigit()) {
            let mut out = String::new();
            for i in (0..hex.len()).step_by(4) {
                let v = u32::from_str_radix(&hex[i..i + 4], 16).ok()?;
                out.push(char::from_u32(v)?);
            }
            return Some(out);
        }
    }
    // uXXXX to uXXXXXX
    if let Some(hex) = name.strip_prefix('u') {
        if (4..=6).contains(&hex.len()) && hex.chars().all(|c| c.is_ascii_hexdigit()) {
            return char::from_u32(u32::from_str_radix(hex, 16).ok()?).map(String::from);
        }
    }
    // "f_f_i" ligatures, "a.sc" variants.
    if let Some((base, _)) = name.split_once('.') {
        return glyph_to_unicode(base);
    }
    if name.contains('_') {
        let parts: Option<Vec<String>> = name.split('_').map(glyph_to_unicode).collect();
        return parts.map(|p| p.concat());
    }
    None
}

/// The glyph name at `code` in the built-in encoding of the symbolic core
/// font `core` ("Symbol" or "ZapfDingbats"; see [`core14_name`]).
pub fn symbolic_builtin(core: &str, code: u8) -> Option<&'static str> {
    let table = symbolic_table(core)?;
    table
        .binary_search_by_key(&code, |(c, _, _)| *c)
        .ok()
        .map(|i| table[i].1)
}

/// Unicode text of a glyph name in a symbolic core font: ZapfDingbats'
/// names (a1 ... a191) are not in the Adobe Glyph List, and Symbol draws
/// Delta, Omega and mu as Greek letters where the list offers other signs.
/// `None` for other fonts or names (use [`glyph_to_unicode`]).
pub fn symbolic_to_unicode(core: &str, name: &str) -> Option<String> {
    symbolic_table(core)?
        .iter()
        .find(|(_, n, _)| *n == name)
        .map(|(_, _, c)| c.to_string())
}

fn symbolic_table(core: &str) -> Option<&'static [(u8, &'static str, char)]> {
    match core {
        "Symbol" => Some(SYMBOL_ENCODING),
        "ZapfDingbats" => Some(DINGBATS_ENCODING),
        _ => None,
    }
}

/// The 14 core fonts' widths by character, for a (possibly aliased) base font name.
pub fn core14_width(base_font: &str, ch: char) -> Option<u16> {
    let name = core14_name(base_font)?;
    let (_, widths) = CORE14_WIDTHS.iter().find(|(n, _)| *n == name)?;
    widths.binary_search_by(|(c, _)| c.cmp(&ch)).ok().map(|i| widths[i].1)
}

/// Maps a BaseFont name (subset prefix, common aliases) to a core-14 name.
pub fn core14_name(base_font: &str) -> Option<&'static str> {
    let name = match base_font.split_once('+') {
        Some((prefix, rest)) if prefix.len() == 6 => rest,
        _ => base_font,
    };
    let lower = name.to_ascii_lowercase().replace([' ', '-', ','], "");
    let bold = lower.contains("bold");
    let italic = lower.contains("italic") || lower.contains("oblique");
    let family = if lower.starts_with("courier") {
        "Courier"
    } else if lower.starts_with("helvetica") || lower.starts_with("arial") {
        "Helvetica"
    } else if lower.starts_with("times") {
        "Times"
    } else if lower.starts_with("symbol") {
        return Some("Symbol");
    } else if lower.starts_with("zapfdingbats") {
        return Some("ZapfDingbats");
    } else {
        return None;
    };
    Some(match (family, bold, italic) {
        ("Courier", false, false) => "Courier",
        ("Courier", true, false) => "Courier-Bold",
        ("Courier", false, true) => "Courier-Oblique",
        ("Courier", true, true) => "Courier-BoldOblique",
        ("Helvetica", false, false) => "Helvetica",
        ("Helvetica", true, false) => "Helvetica-Bold",
        ("Helvetica", false, true) => "Helvetica-Oblique",
        ("Helvetica", true, true) => "Helvetica-BoldOblique",
        ("Times", false, false) => "Times-Roman",
        ("Times", true, false) => "Times-Bold",
        ("Times", false, true) => "Times-Italic",
        _ => "Times-BoldItalic",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symbolic_core_encodings() {
        assert_eq!(symbolic_builtin("Symbol", b'a'), Some("alpha"));
        assert_eq!(symbolic_builtin("Symbol", 0xB7), Some("bullet"));
        assert_eq!(symbolic_builtin("Symbol", 0x80), None);
        assert_eq!(symbolic_builtin("ZapfDingbats", b'3'), Some("a19"));
        assert_eq!(symbolic_to_unicode("ZapfDingbats", "a19").as_deref(), Some("\u{2713}"));
        assert_eq!(symbolic_to_unicode("Symbol", "Omega").as_deref(), Some("\u{3a9}"));
        assert_eq!(symbolic_to_unicode("Helvetica", "Omega"), None);
        assert_eq!(symbolic_builtin("Helvetica", b'a'), None);
    }

    #[test]
    fn glyph_names() {
        assert_eq!(glyph_to_unicode("A").as_deref(), Some("A"));
        assert_eq!(glyph_to_unicode("fi").as_deref(), Some("\u{fb01}"));
        assert_eq!(glyph_to_unicode("quoteright").as_deref(), Some("\u{2019}"));
        assert_eq!(glyph_to_unicode("uni00E9").as_deref(), Some("é"));
        assert_eq!(glyph_to_unicode("uni00660069").as_deref(), Some("fi"));
        assert_eq!(glyph_to_unicode("u1D400").as_deref(), Some("\u{1d400}"));
        assert_eq!(glyph_to_unicode("f_f_i").as_deref(), Some("ffi"));
        assert_eq!(glyph_to_unicode("a.sc").as_deref(), Some("a"));
        assert_eq!(glyph_to_unicode("g123"), None);
        assert_eq!(glyph_to_unicode(".notdef"), None);
    }

    #[test]
    fn base_encodings() {
        assert_eq!(BaseEncoding::WinAnsi.names()[0x93], Some("quotedblleft"));
        assert_eq!(BaseEncoding::Standard.names()[0x27], Some("quoteright"));
        assert_eq!(BaseEncoding::MacRoman.names()[0x8e], Some("eacute"));
        assert_eq!(BaseEncoding::WinAnsi.names()[b'A' as usize], Some("A"));
    }

    #[test]
    fn core14() {
        assert_eq!(core14_name("ABCDEF+Arial,Bold"), Some("Helvetica-Bold"));
        assert_eq!(core14_name("TimesNewRomanPS-ItalicMT"), Some("Times-Italic"));
        assert_eq!(core14_width("Courier", 'x'), Some(600));
        assert_eq!(core14_width("Helvetica", ' '), Some(278));
        assert_eq!(core14_name("LinLibertineT"), None);
    }
}
