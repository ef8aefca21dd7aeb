//! Fonts as text extraction needs them: how a shown string splits into
//! codes, what text each code stands for, and how far it advances.
//!
//! Simple fonts (Type1, MMType1, TrueType, Type3): one byte per code;
//! text from ToUnicode first, then /Encoding (base encoding + Differences
//! through glyph names), then the embedded Type 1 program's built-in
//! encoding; widths from /Widths, else the core-14 metrics.
//! Composite fonts (Type0): codes split by the encoding CMap (Identity-H/V,
//! predefined CMaps from poppler-data, or an embedded CMap); text from
//! ToUnicode, else the code itself for UCS-2/UTF-16 CMaps, else the CID
//! through the registry's CID→Unicode table (poppler-data); widths from
//! /W and /DW.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use lopdf::{Dictionary, Document, Object};

use crate::cmap::{utf16_to_string, CMap};
use crate::encoding::{
    core14_name, core14_width, glyph_to_unicode, symbolic_builtin, symbolic_to_unicode, BaseEncoding,
};

/// One code of a shown string.
#[derive(Debug, Clone)]
pub struct Glyph {
    pub text: String,
    /// Advance in text space units per unit font size (width / 1000).
    pub width: f64,
    /// A single-byte code 32 (word spacing applies to it).
    pub is_space_code: bool,
}

#[derive(Debug)]
enum Kind {
    Simple {
        codes: Box<[Option<String>; 256]>,
        widths: Box<[f64; 256]>,
    },
    Composite {
        encoding: Box<Encoding>,
        cid_to_unicode: Option<Arc<Vec<u32>>>,
        widths: HashMap<u32, f64>,
        default_width: f64,
        /// Codes are UTF-16BE (Uni*-UCS2 / Uni*-UTF16 CMaps).
        unicode_codes: bool,
    },
}

#[derive(Debug)]
enum Encoding {
    Identity,
    CMap(CMap),
}

#[derive(Debug)]
pub struct Font {
    kind: Kind,
    to_unicode: Option<CMap>,
    /// Type 3: glyph space → text space scale (FontMatrix a); else 0.001.
    scale: f64,
    /// The font's em as a multiple of its size. 1 except for Type 3 fonts,
    /// whose glyph space has no em: a dvips bitmap font at 0.12 Tf with
    /// glyphs 42 units wide has letters 5 units wide, so gaps and line
    /// changes are judged against ten units, not 0.12.
    pub em: f64,
    pub vertical: bool,
}

/// Where poppler-data lives (CID→Unicode tables, predefined CMaps).
fn poppler_data_dir() -> PathBuf {
    std::env::var_os("DOCULEARN_POPPLER_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/share/poppler"))
}

type CidTable = Option<Arc<Vec<u32>>>;

/// CID→Unicode table of a character collection, loaded once per process.
fn cid_to_unicode(ordering: &str) -> CidTable {
    static CACHE: OnceLock<Mutex<HashMap<String, CidTable>>> = OnceLock::new();
    let cache = CACHE.get_or_init(|| Mutex::new(HashMap::new()));
    // A panic elsewhere while the lock was held must not disable the tables.
    let mut guard = cache.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    guard
        .entry(ordering.to_string())
        .or_insert_with(|| {
            let path = poppler_data_dir()
                .join("cidToUnicode")
                .join(format!("Adobe-{ordering}"));
            let text = std::fs::read_to_string(path).ok()?;
            Some(Arc::new(
                text.lines()
                    .map(|l| u32::from_str_radix(l.split_whitespace().next().unwrap_or("0"), 16).unwrap_or(0))
                    .collect(),
            ))
        })
        .clone()
}

/// A predefined CMap by name, from poppler-data (searched in every collection).
fn predefined_cmap(name: &str, depth: usize) -> Option<CMap> {
    if depth > 4 || name.contains('/') || name.contains("..") {
        return None;
    }
    let root = poppler_data_dir().join("cMap");
    for entry in std::fs::read_dir(&root).ok()?.flatten() {
        let path = entry.path().join(name);
        if let Ok(data) = std::fs::read(&path) {
            return Some(CMap::parse(&data, &|base| predefined_cmap(base, depth + 1)));
        }
    }
    None
}

fn num(o: &Object) -> Option<f64> {
    match o {
        Object::Integer(i) => Some(*i as f64),
        Object::Real(r) => Some(*r as f64),
        _ => None,
    }
}

fn deref<'a>(doc: &'a Document, o: &'a Object) -> &'a Object {
    doc.dereference(o).map(|(_, o)| o).unwrap_or(o)
}

fn dict_get<'a>(doc: &'a Document, d: &'a Dictionary, key: &[u8]) -> Option<&'a Object> {
    d.get(key).ok().map(|o| deref(doc, o))
}

fn stream_bytes(doc: &Document, o: &Object, budget: &mut u64) -> Option<Vec<u8>> {
    let s = deref(doc, o).as_stream().ok()?;
    let limit = (*budget).min(64 << 20) as usize;
    let data = s.get_plain_content_with_limit(limit).ok()?;
    *budget = budget.saturating_sub(data.len() as u64);
    Some(data)
}

/// Built-in encoding of an embedded Type 1 font program (`dup 65 /A put`).
fn type1_builtin_encoding(program: &[u8]) -> Option<HashMap<u8, String>> {
    let text = &program[..program.len().min(64 * 1024)];
    let s = String::from_utf8_lossy(text);
    if s.contains("/Encoding StandardEncoding") {
        return None;
    }
    let mut map = HashMap::new();
    let mut words = s.split_whitespace().peekable();
    while let Some(w) = words.next() {
        if w == "dup" {
            let code = words.next().and_then(|c| c.parse::<u16>().ok());
            let name = words.next().and_then(|n| n.strip_prefix('/'));
            if let (Some(code), Some(name)) = (code, name) {
                if code < 256 && words.peek() == Some(&"put") {
                    map.insert(code as u8, name.to_string());
                }
            }
        } else if (w == "readonly" && !map.is_empty()) || w == "eexec" {
            break;
        }
    }
    (!map.is_empty()).then_some(map)
}

impl Font {
    /// Builds a font from its dictionary. `budget`: decompression bytes left.
    pub fn load(doc: &Document, dict: &Dictionary, budget: &mut u64) -> Font {
        let subtype = dict.get(b"Subtype").and_then(Object::as_name).unwrap_or(b"Type1");
        let mut to_unicode = dict_get(doc, dict, b"ToUnicode")
            .and_then(|o| stream_bytes(doc, o, budget))
            .map(|data| CMap::parse(&data, &|name| predefined_cmap(name, 0)))
            .filter(|c| !c.is_empty());
        if subtype == b"Type0" {
            return Self::load_composite(doc, dict, to_unicode);
        }
        let base_font = dict
            .get(b"BaseFont")
            .and_then(Object::as_name)
            .map(|n| String::from_utf8_lossy(n).into_owned())
            .unwrap_or_default();
        let is_type3 = subtype == b"Type3";
        let scale = if is_type3 {
            dict_get(doc, dict, b"FontMatrix")
                .and_then(|m| m.as_array().ok())
                .and_then(|a| a.first().and_then(num))
                .unwrap_or(0.001)
        } else {
            0.001
        };
        let descriptor = dict_get(doc, dict, b"FontDescriptor").and_then(|o| o.as_dict().ok());
        let flags = descriptor
            .and_then(|d| dict_get(doc, d, b"Flags"))
            .and_then(num)
            .unwrap_or(0.0) as u32;
        let symbolic = flags & 4 != 0;
        let core = core14_name(&base_font);

        // Code → glyph name.
        let mut names: [Option<String>; 256] = std::array::from_fn(|_| None);
        let enc = dict_get(doc, dict, b"Encoding");
        let (base, differences) = match enc {
            Some(Object::Name(n)) => (BaseEncoding::from_name(&String::from_utf8_lossy(n)), None),
            Some(Object::Dictionary(d)) => (
                d.get(b"BaseEncoding")
                    .and_then(Object::as_name)
                    .ok()
                    .and_then(|n| BaseEncoding::from_name(&String::from_utf8_lossy(n))),
                dict_get(doc, d, b"Differences").and_then(|o| o.as_array().ok()),
            ),
            _ => (None, None),
        };
        // Without an /Encoding base, codes mean what the embedded program's
        // own encoding says: a Type 1 program's `dup N /name put`, or a CFF
        // program's encoding and charset (Ghostscript's Cyrillic subsets).
        let builtin = if base.is_none() && !is_type3 {
            let type1 = descriptor
                .and_then(|d| dict_get(doc, d, b"FontFile"))
                .and_then(|o| stream_bytes(doc, o, budget))
                .and_then(|p| type1_builtin_encoding(&p));
            type1.or_else(|| {
                let file = descriptor.and_then(|d| dict_get(doc, d, b"FontFile3"))?;
                let is_cff = file
                    .as_stream()
                    .ok()
                    .and_then(|s| s.dict.get(b"Subtype").ok())
                    .and_then(|t| t.as_name().ok())
                    .is_some_and(|t| t == b"Type1C");
                if !is_cff {
                    return None;
                }
                stream_bytes(doc, file, budget).and_then(|p| crate::cff::builtin_encoding(&p))
            })
        } else {
            None
        };
        let explicit_base = base.is_some();
        let base = base.unwrap_or(if subtype == b"TrueType" && !symbolic {
            BaseEncoding::WinAnsi
        } else {
            BaseEncoding::Standard
        });
        let base_names = base.names();
        let symbol_font = matches!(core, Some("Symbol") | Some("ZapfDingbats"));
        for code in 0..256 {
            names[code] = match &builtin {
                Some(b) => b.get(&(code as u8)).cloned(),
                // Symbol and ZapfDingbats have their own built-in encoding
                // (Greek, math, arrows, bullets), not Standard's Latin.
                None if symbol_font && !explicit_base => {
                    core.and_then(|c| symbolic_builtin(c, code as u8)).map(str::to_string)
                }
                // A Type 3 font's codes are what its Differences name, nothing more.
                None if is_type3 && !explicit_base => None,
                None => base_names[code].map(str::to_string),
            };
        }
        let mut differed = [false; 256];
        let has_differences = differences.is_some();
        if let Some(diffs) = differences {
            let mut code = 0usize;
            for item in diffs {
                match deref(doc, item) {
                    Object::Integer(i) => code = (*i).clamp(0, 255) as usize,
                    Object::Name(n) => {
                        if code < 256 {
                            names[code] = Some(String::from_utf8_lossy(n).into_owned());
                            differed[code] = true;
                        }
                        code += 1;
                    }
                    _ => {}
                }
            }
        }
        let mut codes: Box<[Option<String>; 256]> = Box::new(std::array::from_fn(|_| None));
        for code in 0..256 {
            codes[code] = match &names[code] {
                Some(name) => core
                    .and_then(|c| symbolic_to_unicode(c, name))
                    .or_else(|| glyph_to_unicode(name))
                    .or_else(|| numeric_glyph_name(name)),
                // Symbolic TrueType without an encoding: codes are often
                // (Mac/Win) Latin text; take them as Latin-1.
                None if symbolic && !symbol_font && (32..127).contains(&code) => Some((code as u8 as char).to_string()),
                None => None,
            };
        }

        // Widths.
        let mut widths = Box::new([f64::NAN; 256]);
        let first = dict_get(doc, dict, b"FirstChar").and_then(num).unwrap_or(0.0) as usize;
        if let Some(ws) = dict_get(doc, dict, b"Widths").and_then(|o| o.as_array().ok()) {
            for (i, w) in ws.iter().enumerate() {
                if let (Some(slot), Some(w)) =
                    (first.checked_add(i).and_then(|c| widths.get_mut(c)), num(deref(doc, w)))
                {
                    *slot = w;
                }
            }
        }
        let missing = descriptor
            .and_then(|d| dict_get(doc, d, b"MissingWidth"))
            .and_then(num)
            .filter(|w| *w > 0.0);
        for code in 0..256 {
            if widths[code].is_nan() {
                let from_core = core.and_then(|_| {
                    codes[code]
                        .as_ref()
                        .and_then(|t| t.chars().next())
                        .and_then(|c| core14_width(&base_font, c))
                        .or_else(|| {
                            // Symbol/Dingbats: look the width up by code as Latin-1.
                            core14_width(&base_font, code as u8 as char)
                        })
                });
                widths[code] = from_core
                    .map(f64::from)
                    .or(missing)
                    .unwrap_or(if core == Some("Courier") { 600.0 } else { 500.0 });
            }
        }
        // Type 3 bitmap fonts of TeX name glyphs by code only (/a65): the
        // codes are read in the TeX layout the font's codes point to.
        // (Also beside a ToUnicode: it may map only some codes, and
        // Ghostscript's maps 'c' to a carriage return.)
        let mut em = 1.0;
        if is_type3 {
            // Names that mean nothing (no code of the font decodes, as in
            // Ghostscript's /BZ, /CW of a dvips PK font): the codes are TeX's.
            // Only codes whose glyph the font draws count (a base encoding
            // names every code, CharProcs holds the glyphs there are).
            let procs = dict_get(doc, dict, b"CharProcs").and_then(|o| o.as_dict().ok());
            // With Differences, they name what the font is for; a base
            // encoding's name may coincide with a glyph's (WinAnsi's /AE at
            // 198, Ghostscript's /AE for code 14).
            let named: [bool; 256] = std::array::from_fn(|c| {
                names[c]
                    .as_deref()
                    .is_some_and(|n| n != ".notdef" && procs.is_none_or(|p| p.has(n.as_bytes())))
                    && (differed[c] || !has_differences)
            });
            let drawn: [Option<String>; 256] = std::array::from_fn(|c| names[c].clone().filter(|_| named[c]));
            let opaque = named.iter().any(|n| *n) && (0..256).all(|c| !named[c] || codes[c].is_none());
            let layout = crate::tex::numbered_layout(&drawn, &widths)
                .or_else(|| opaque.then(|| crate::tex::code_layout(&named, &widths)).flatten());
            if let Some(layout) = layout {
                for code in 0..256 {
                    codes[code] = glyph_to_unicode(layout[code]);
                }
            }
            // Ghostscript wrote its ToUnicode from those same names read as
            // if they were Adobe's (/AE → Æ, /CL → ℄, /CR → a carriage
            // return): with base-36 names it is no information at all.
            if layout.is_some()
                && (0..256).all(|c| {
                    drawn[c]
                        .as_deref()
                        .is_none_or(|n| crate::tex::base36_name(n) == Some(c))
                })
            {
                to_unicode = None;
            }
            em = type3_em(&codes, &widths, scale, &named);
        }
        Font {
            kind: Kind::Simple { codes, widths },
            to_unicode,
            scale,
            em,
            vertical: false,
        }
    }

    fn load_composite(doc: &Document, dict: &Dictionary, to_unicode: Option<CMap>) -> Font {
        let enc_obj = dict_get(doc, dict, b"Encoding");
        let (encoding, enc_name) = match enc_obj {
            Some(Object::Name(n)) => {
                let name = String::from_utf8_lossy(n).into_owned();
                if name == "Identity-H" || name == "Identity-V" {
                    (Encoding::Identity, name)
                } else {
                    match predefined_cmap(&name, 0) {
                        Some(c) => (Encoding::CMap(c), name),
                        None => (Encoding::Identity, name),
                    }
                }
            }
            Some(Object::Stream(s)) => {
                let data = s.get_plain_content_with_limit(4 << 20).unwrap_or_default();
                let cmap = CMap::parse(&data, &|name| predefined_cmap(name, 0));
                let name = cmap.name.clone().unwrap_or_default();
                (Encoding::CMap(cmap), name)
            }
            _ => (Encoding::Identity, "Identity-H".to_string()),
        };
        let vertical = enc_name.ends_with("-V");
        let unicode_codes = enc_name.starts_with("Uni") && (enc_name.contains("UCS2") || enc_name.contains("UTF16"));
        let descendant = dict_get(doc, dict, b"DescendantFonts")
            .and_then(|o| o.as_array().ok())
            .and_then(|a| a.first())
            .map(|o| deref(doc, o))
            .and_then(|o| o.as_dict().ok());
        let mut widths = HashMap::new();
        let mut default_width = 1000.0;
        let mut cid_map = None;
        if let Some(desc) = descendant {
            default_width = dict_get(doc, desc, b"DW").and_then(num).unwrap_or(1000.0);
            if let Some(w) = dict_get(doc, desc, b"W").and_then(|o| o.as_array().ok()) {
                let mut i = 0;
                while i < w.len() && widths.len() < 200_000 {
                    let first = num(deref(doc, &w[i])).unwrap_or(0.0) as u32;
                    match w.get(i + 1).map(|o| deref(doc, o)) {
                        Some(Object::Array(list)) => {
                            for (k, v) in list.iter().enumerate() {
                                if let Some(v) = num(deref(doc, v)) {
                                    widths.insert(first.saturating_add(k as u32), v);
                                }
                            }
                            i += 2;
                        }
                        Some(last) => {
                            let last = num(last).unwrap_or(first as f64) as u32;
                            let v = w
                                .get(i + 2)
                                .map(|o| deref(doc, o))
                                .and_then(num)
                                .unwrap_or(default_width);
                            if last >= first && last - first < 65_536 {
                                for c in first..=last {
                                    widths.insert(c, v);
                                }
                            }
                            i += 3;
                        }
                        None => break,
                    }
                }
            }
            let ordering = dict_get(doc, desc, b"CIDSystemInfo")
                .and_then(|o| o.as_dict().ok())
                .and_then(|csi| dict_get(doc, csi, b"Ordering"))
                .and_then(|o| o.as_str().ok())
                .map(|s| String::from_utf8_lossy(s).into_owned());
            if let Some(ordering) = ordering.filter(|o| o != "Identity") {
                cid_map = cid_to_unicode(&ordering);
            }
        }
        Font {
            kind: Kind::Composite {
                encoding: Box::new(encoding),
                cid_to_unicode: cid_map,
                widths,
                default_width,
                unicode_codes,
            },
            to_unicode,
            scale: 0.001,
            em: 1.0,
            vertical,
        }
    }

    /// Splits a shown string into glyphs. Stops after the glyph whose text
    /// takes the total past `max_text_bytes` (ToUnicode entries can map one
    /// code to long strings), so a hostile string cannot allocate unbounded.
    pub fn decode(&self, bytes: &[u8], max_text_bytes: usize) -> Vec<Glyph> {
        let mut out = Vec::with_capacity(bytes.len().min(4096));
        let mut text_bytes = 0usize;
        match &self.kind {
            Kind::Simple { codes, widths } => {
                for &b in bytes {
                    let text = self
                        .to_unicode
                        .as_ref()
                        .and_then(|m| m.lookup_unicode(b as u32, 1))
                        .filter(|t| !is_control(t))
                        .or_else(|| codes[b as usize].clone())
                        .unwrap_or_default();
                    text_bytes += text.len();
                    out.push(Glyph {
                        text,
                        width: widths[b as usize] * self.scale,
                        is_space_code: b == 32,
                    });
                    if text_bytes > max_text_bytes {
                        break;
                    }
                }
            }
            Kind::Composite {
                encoding,
                cid_to_unicode,
                widths,
                default_width,
                unicode_codes,
            } => {
                let mut i = 0;
                while i < bytes.len() {
                    let len = match encoding.as_ref() {
                        // UTF-16 codes without the predefined CMap's codespace
                        // (poppler-data absent): a surrogate pair is one code.
                        Encoding::Identity
                            if *unicode_codes
                                && bytes.len() >= i + 4
                                && (0xD8..0xDC).contains(&bytes[i])
                                && (0xDC..0xE0).contains(&bytes[i + 2]) =>
                        {
                            4
                        }
                        Encoding::Identity => 2,
                        Encoding::CMap(c) if c.has_codespace() => c.code_len(&bytes[i..], 2),
                        Encoding::CMap(_) => 2,
                    }
                    .min(bytes.len() - i)
                    .max(1);
                    let code = bytes[i..i + len].iter().fold(0u32, |a, &b| (a << 8) | b as u32);
                    let cid = match encoding.as_ref() {
                        Encoding::Identity => code,
                        Encoding::CMap(c) => c.lookup_cid(code, len).unwrap_or(0),
                    };
                    let text = self
                        .to_unicode
                        .as_ref()
                        .and_then(|m| m.lookup_unicode(code, len))
                        .or_else(|| {
                            if *unicode_codes {
                                let units: Vec<u16> = bytes[i..i + len]
                                    .chunks(2)
                                    .map(|c| u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]))
                                    .collect();
                                Some(utf16_to_string(&units))
                            } else {
                                None
                            }
                        })
                        .or_else(|| {
                            cid_to_unicode
                                .as_ref()
                                .and_then(|t| t.get(cid as usize).copied())
                                .filter(|&u| u != 0)
                                .and_then(char::from_u32)
                                .map(String::from)
                        })
                        .unwrap_or_default();
                    text_bytes += text.len();
                    out.push(Glyph {
                        text,
                        width: widths.get(&cid).copied().unwrap_or(*default_width) * self.scale,
                        is_space_code: false,
                    });
                    i += len;
                    if text_bytes > max_text_bytes {
                        break;
                    }
                }
            }
        }
        out
    }
}

/// Glyph names that carry their code: `cid123`, `g123`, `c65`, `index65`.
/// pdfTeX's and others' Type 3 fonts use them. Only printable results count.
/// A Type 3 font's em in units of its size, judged from its glyphs: a
/// lowercase letter is about half an em wide, a capital about two thirds.
/// 1 (the size itself) for a font without letters: dots of a plot, rules.
fn type3_em(codes: &[Option<String>; 256], widths: &[f64; 256], scale: f64, drawn: &[bool; 256]) -> f64 {
    let median_width = |keep: fn(char) -> bool| {
        let mut w: Vec<f64> = (0..256)
            .filter(|&c| drawn[c])
            .filter(|&c| {
                let mut chars = codes[c].as_deref().unwrap_or("").chars();
                matches!((chars.next(), chars.next()), (Some(ch), None) if keep(ch))
            })
            .map(|c| widths[c] * scale.abs())
            .filter(|w| w.is_finite() && *w > 0.0)
            .collect();
        w.sort_by(f64::total_cmp);
        w.get(w.len() / 2).copied()
    };
    let em = median_width(char::is_lowercase)
        .map(|w| 2.0 * w)
        .or_else(|| median_width(char::is_alphabetic).map(|w| 1.5 * w))
        .unwrap_or(1.0);
    em.clamp(1e-4, 1e4)
}

/// A ToUnicode value that is a control character (U+0000–U+001F, U+007F
/// except tab and line breaks) is no text: Ghostscript writes U+000D for
/// TeX's 'c'. The code is then read as if there were no ToUnicode entry.
fn is_control(text: &str) -> bool {
    let mut chars = text.chars();
    matches!((chars.next(), chars.next()), (Some(c), None) if (c < ' ' && !matches!(c, '\t' | '\n')) || c == '\u{7f}')
}

fn numeric_glyph_name(name: &str) -> Option<String> {
    for prefix in ["cid", "index", "glyph", "g", "c", "G", "C"] {
        if let Some(rest) = name.strip_prefix(prefix) {
            if !rest.is_empty() && rest.len() <= 3 && rest.chars().all(|c| c.is_ascii_digit()) {
                let v: u32 = rest.parse().ok()?;
                if (33..127).contains(&v) && prefix != "cid" && prefix != "g" && prefix != "glyph" {
                    return Some((v as u8 as char).to_string());
                }
                return None;
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type1_program_encoding() {
        let prog = b"%!PS-AdobeFont-1.0: CMMI9\n/Encoding 256 array\n0 1 255 {1 index exch /.notdef put} for\ndup 11 /alpha put\ndup 65 /A put\nreadonly def\ncurrentfile eexec";
        let m = type1_builtin_encoding(prog).unwrap();
        assert_eq!(m.get(&11).map(String::as_str), Some("alpha"));
        assert_eq!(m.get(&65).map(String::as_str), Some("A"));
        assert!(type1_builtin_encoding(b"/Encoding StandardEncoding def").is_none());
    }

    #[test]
    fn numeric_names() {
        assert_eq!(numeric_glyph_name("c65").as_deref(), Some("A"));
        assert_eq!(numeric_glyph_name("g12"), None);
        assert_eq!(numeric_glyph_name("cid1234"), None);
    }
}
