//! CMaps: the embedded ToUnicode maps (code → text) and encoding CMaps
//! (code → CID), parsed from their PostScript-like text. Handles codespace
//! ranges of 1–4 bytes, `bfchar`, `bfrange` (incrementing and array forms,
//! UTF-16 surrogates, multi-character targets such as ligatures), `cidchar`,
//! `cidrange` and `usecmap` (through a resolver for predefined CMaps).

use std::collections::HashMap;

/// A range of codes of one byte length.
#[derive(Debug, Clone, Copy)]
struct CodeRange {
    len: usize,
    lo: u32,
    hi: u32,
}

#[derive(Debug, Clone, Default)]
pub struct CMap {
    codespace: Vec<CodeRange>,
    /// code (with its byte length) → text.
    unicode: HashMap<(u8, u32), String>,
    /// Incrementing bfranges kept as ranges (they can be huge).
    unicode_ranges: Vec<(CodeRange, Vec<u16>)>,
    /// code → CID.
    cid: HashMap<(u8, u32), u32>,
    cid_ranges: Vec<(CodeRange, u32)>,
    pub name: Option<String>,
}

#[derive(Debug, PartialEq)]
enum Tok {
    Hex(Vec<u8>),
    Name(String),
    Int(i64),
    Kw(String),
    ArrOpen,
    ArrClose,
    Other,
}

fn tokenize(data: &[u8]) -> Vec<Tok> {
    let mut toks = Vec::new();
    let mut i = 0;
    while i < data.len() {
        let c = data[i];
        match c {
            b'%' => {
                while i < data.len() && data[i] != b'\n' && data[i] != b'\r' {
                    i += 1;
                }
            }
            b'<' if data.get(i + 1) == Some(&b'<') => {
                toks.push(Tok::Other);
                i += 2;
            }
            b'>' if data.get(i + 1) == Some(&b'>') => {
                toks.push(Tok::Other);
                i += 2;
            }
            b'<' => {
                let start = i + 1;
                let end = data[start..]
                    .iter()
                    .position(|&b| b == b'>')
                    .map(|p| start + p)
                    .unwrap_or(data.len());
                let hex: Vec<u8> = data[start..end]
                    .iter()
                    .copied()
                    .filter(|b| b.is_ascii_hexdigit())
                    .collect();
                let mut bytes = Vec::with_capacity(hex.len() / 2 + 1);
                for pair in hex.chunks(2) {
                    let s = std::str::from_utf8(pair).unwrap_or("0");
                    let v = if pair.len() == 2 {
                        u8::from_str_radix(s, 16).unwrap_or(0)
                    } else {
                        u8::from_str_radix(s, 16).unwrap_or(0) << 4
                    };
                    bytes.push(v);
                }
                toks.push(Tok::Hex(bytes));
                i = end + 1;
            }
            b'(' => {
                // Literal strings appear in headers (Registry etc.); skip them.
                let mut depth = 0;
                while i < data.len() {
                    match data[i] {
                        b'\\' => i += 1,
                        b'(' => depth += 1,
                        b')' => {
                            depth -= 1;
                            if depth == 0 {
                                break;
                            }
                        }
                        _ => {}
                    }
                    i += 1;
                }
                toks.push(Tok::Other);
                i += 1;
            }
            b'[' => {
                toks.push(Tok::ArrOpen);
                i += 1;
            }
            b']' => {
                toks.push(Tok::ArrClose);
                i += 1;
            }
            b'/' => {
                let start = i + 1;
                i = start;
                while i < data.len() && !is_delim(data[i]) {
                    i += 1;
                }
                toks.push(Tok::Name(String::from_utf8_lossy(&data[start..i]).into_owned()));
            }
            c if c.is_ascii_whitespace() => i += 1,
            _ => {
                let start = i;
                while i < data.len() && !is_delim(data[i]) {
                    i += 1;
                }
                if i == start {
                    i += 1;
                    continue;
                }
                let word = String::from_utf8_lossy(&data[start..i]).into_owned();
                match word.parse::<i64>() {
                    Ok(n) => toks.push(Tok::Int(n)),
                    Err(_) => toks.push(Tok::Kw(word)),
                }
            }
        }
    }
    toks
}

fn is_delim(b: u8) -> bool {
    b.is_ascii_whitespace() || matches!(b, b'/' | b'[' | b']' | b'<' | b'>' | b'(' | b')' | b'%' | b'{' | b'}')
}

fn code_of(bytes: &[u8]) -> u32 {
    bytes.iter().take(4).fold(0u32, |acc, &b| (acc << 8) | b as u32)
}

fn utf16_units(bytes: &[u8]) -> Vec<u16> {
    bytes
        .chunks(2)
        .map(|c| {
            if c.len() == 2 {
                u16::from_be_bytes([c[0], c[1]])
            } else {
                c[0] as u16
            }
        })
        .collect()
}

pub fn utf16_to_string(units: &[u16]) -> String {
    char::decode_utf16(units.iter().copied())
        .map(|r| r.unwrap_or('\u{fffd}'))
        .collect()
}

/// Largest range a bfrange/cidrange may span (guards hostile CMaps).
const MAX_RANGE: u32 = 1 << 20;

impl CMap {
    /// Parses a CMap. `resolve` loads a predefined CMap named by `usecmap`.
    pub fn parse(data: &[u8], resolve: &dyn Fn(&str) -> Option<CMap>) -> CMap {
        let toks = tokenize(data);
        let mut cmap = CMap::default();
        let mut i = 0;
        while i < toks.len() {
            match &toks[i] {
                Tok::Name(n) if n == "CMapName" => {
                    if let Some(Tok::Name(v)) = toks.get(i + 1) {
                        cmap.name = Some(v.clone());
                    }
                    i += 1;
                }
                Tok::Kw(k) if k == "usecmap" => {
                    if let Some(Tok::Name(base)) = i.checked_sub(1).and_then(|j| toks.get(j)) {
                        if let Some(parent) = resolve(base) {
                            cmap.merge(parent);
                        }
                    }
                }
                Tok::Kw(k) if k == "begincodespacerange" => {
                    i += 1;
                    while i + 1 < toks.len() {
                        match (&toks[i], &toks[i + 1]) {
                            (Tok::Hex(lo), Tok::Hex(hi)) => {
                                if !lo.is_empty() && lo.len() <= 4 {
                                    cmap.codespace.push(CodeRange {
                                        len: lo.len(),
                                        lo: code_of(lo),
                                        hi: code_of(hi),
                                    });
                                }
                                i += 2;
                            }
                            _ => break,
                        }
                    }
                    continue;
                }
                Tok::Kw(k) if k == "beginbfchar" => {
                    i += 1;
                    while i + 1 < toks.len() {
                        match (&toks[i], &toks[i + 1]) {
                            (Tok::Hex(src), Tok::Hex(dst)) => {
                                cmap.put_unicode(src, utf16_to_string(&utf16_units(dst)));
                                i += 2;
                            }
                            (Tok::Hex(src), Tok::Name(glyph)) => {
                                if let Some(text) = crate::encoding::glyph_to_unicode(glyph) {
                                    cmap.put_unicode(src, text);
                                }
                                i += 2;
                            }
                            _ => break,
                        }
                    }
                    continue;
                }
                Tok::Kw(k) if k == "beginbfrange" => {
                    i += 1;
                    while i + 2 < toks.len() {
                        let (Tok::Hex(lo), Tok::Hex(hi)) = (&toks[i], &toks[i + 1]) else {
                            break;
                        };
                        let (lo_c, hi_c) = (code_of(lo), code_of(hi));
                        let len = lo.len().clamp(1, 4);
                        match &toks[i + 2] {
                            Tok::Hex(dst) => {
                                if hi_c >= lo_c && hi_c - lo_c < MAX_RANGE {
                                    cmap.unicode_ranges.push((
                                        CodeRange {
                                            len,
                                            lo: lo_c,
                                            hi: hi_c,
                                        },
                                        utf16_units(dst),
                                    ));
                                }
                                i += 3;
                            }
                            Tok::ArrOpen => {
                                let mut j = i + 3;
                                let mut code = lo_c;
                                while j < toks.len() && toks[j] != Tok::ArrClose {
                                    if let Tok::Hex(dst) = &toks[j] {
                                        if code <= hi_c {
                                            cmap.unicode
                                                .insert((len as u8, code), utf16_to_string(&utf16_units(dst)));
                                        }
                                        code = code.wrapping_add(1);
                                    }
                                    j += 1;
                                }
                                i = j + 1;
                            }
                            _ => break,
                        }
                    }
                    continue;
                }
                Tok::Kw(k) if k == "begincidchar" => {
                    i += 1;
                    while i + 1 < toks.len() {
                        match (&toks[i], &toks[i + 1]) {
                            (Tok::Hex(src), Tok::Int(cid)) => {
                                cmap.cid
                                    .insert((src.len().clamp(1, 4) as u8, code_of(src)), *cid as u32);
                                i += 2;
                            }
                            _ => break,
                        }
                    }
                    continue;
                }
                Tok::Kw(k) if k == "begincidrange" => {
                    i += 1;
                    while i + 2 < toks.len() {
                        match (&toks[i], &toks[i + 1], &toks[i + 2]) {
                            (Tok::Hex(lo), Tok::Hex(hi), Tok::Int(cid)) => {
                                let (lo_c, hi_c) = (code_of(lo), code_of(hi));
                                if hi_c >= lo_c && hi_c - lo_c < MAX_RANGE {
                                    cmap.cid_ranges.push((
                                        CodeRange {
                                            len: lo.len().clamp(1, 4),
                                            lo: lo_c,
                                            hi: hi_c,
                                        },
                                        *cid as u32,
                                    ));
                                }
                                i += 3;
                            }
                            _ => break,
                        }
                    }
                    continue;
                }
                _ => {}
            }
            i += 1;
        }
        cmap
    }

    fn merge(&mut self, parent: CMap) {
        if self.codespace.is_empty() {
            self.codespace = parent.codespace;
        }
        for (k, v) in parent.unicode {
            self.unicode.entry(k).or_insert(v);
        }
        self.unicode_ranges.extend(parent.unicode_ranges);
        for (k, v) in parent.cid {
            self.cid.entry(k).or_insert(v);
        }
        self.cid_ranges.extend(parent.cid_ranges);
    }

    fn put_unicode(&mut self, src: &[u8], text: String) {
        if !src.is_empty() {
            self.unicode.insert((src.len().clamp(1, 4) as u8, code_of(src)), text);
        }
    }

    pub fn has_codespace(&self) -> bool {
        !self.codespace.is_empty()
    }

    /// Length of the code starting `bytes`, by the codespace ranges (the
    /// shortest match, as the CMap spec says); `default` when none matches.
    pub fn code_len(&self, bytes: &[u8], default: usize) -> usize {
        for len in 1..=4.min(bytes.len()) {
            let code = code_of(&bytes[..len]);
            if self
                .codespace
                .iter()
                .any(|r| r.len == len && r.lo <= code && code <= r.hi)
            {
                return len;
            }
        }
        // Not in any range: consume as many bytes as the shortest range uses.
        self.codespace
            .iter()
            .map(|r| r.len)
            .min()
            .unwrap_or(default)
            .min(bytes.len())
            .max(1)
    }

    pub fn lookup_unicode(&self, code: u32, len: usize) -> Option<String> {
        if let Some(s) = self.unicode.get(&(len as u8, code)) {
            return Some(s.clone());
        }
        // Some producers write ToUnicode codes with another byte length than
        // the font uses; try any length.
        for (r, dst) in &self.unicode_ranges {
            if r.lo <= code && code <= r.hi && (r.len == len || self.codespace.is_empty()) {
                let mut units = dst.clone();
                if let Some(last) = units.last_mut() {
                    *last = last.wrapping_add((code - r.lo) as u16);
                }
                return Some(utf16_to_string(&units));
            }
        }
        for l in 1..=4u8 {
            if l as usize != len {
                if let Some(s) = self.unicode.get(&(l, code)) {
                    return Some(s.clone());
                }
            }
        }
        None
    }

    pub fn lookup_cid(&self, code: u32, len: usize) -> Option<u32> {
        if let Some(c) = self.cid.get(&(len as u8, code)) {
            return Some(*c);
        }
        self.cid_ranges
            .iter()
            .rev()
            .find(|(r, _)| r.len == len && r.lo <= code && code <= r.hi)
            .map(|(r, cid)| cid.saturating_add(code - r.lo))
    }

    pub fn is_empty(&self) -> bool {
        self.unicode.is_empty() && self.unicode_ranges.is_empty() && self.cid.is_empty() && self.cid_ranges.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TO_UNICODE: &[u8] = b"/CIDInit /ProcSet findresource begin 12 dict begin begincmap
/CMapName /Adobe-Identity-UCS def
1 begincodespacerange <0000> <FFFF> endcodespacerange
3 beginbfchar
<0003> <0020>
<0011> <FB01>
<0012> <00660066>
endbfchar
2 beginbfrange
<0024> <0026> <0041>
<0030> <0031> [<D835DC00> <00E9>]
endbfrange
endcmap CMapName currentdict /CMap defineresource pop end end";

    #[test]
    fn bfchar_bfrange_and_surrogates() {
        let m = CMap::parse(TO_UNICODE, &|_| None);
        assert_eq!(m.code_len(&[0, 3], 1), 2);
        assert_eq!(m.lookup_unicode(3, 2).as_deref(), Some(" "));
        assert_eq!(m.lookup_unicode(0x11, 2).as_deref(), Some("\u{fb01}"));
        assert_eq!(m.lookup_unicode(0x12, 2).as_deref(), Some("ff"));
        assert_eq!(m.lookup_unicode(0x25, 2).as_deref(), Some("B"));
        assert_eq!(m.lookup_unicode(0x30, 2).as_deref(), Some("\u{1d400}"));
        assert_eq!(m.lookup_unicode(0x31, 2).as_deref(), Some("é"));
        assert_eq!(m.lookup_unicode(0x99, 2), None);
        assert_eq!(m.name.as_deref(), Some("Adobe-Identity-UCS"));
    }

    #[test]
    fn cid_ranges_and_mixed_code_lengths() {
        let m = CMap::parse(
            b"2 begincodespacerange <00> <80> <8140> <FEFE> endcodespacerange
             1 begincidrange <20> <7e> 1 endcidrange
             1 begincidrange <8140> <817e> 633 endcidrange
             1 begincidchar <8150> 9999 endcidchar",
            &|_| None,
        );
        assert_eq!(m.code_len(b"A", 1), 1);
        assert_eq!(m.code_len(&[0x81, 0x41], 1), 2);
        assert_eq!(m.lookup_cid(0x41, 1), Some(34));
        assert_eq!(m.lookup_cid(0x8141, 2), Some(634));
        assert_eq!(m.lookup_cid(0x8150, 2), Some(9999));
    }

    #[test]
    fn hostile_cmaps_do_not_explode() {
        let m = CMap::parse(
            b"1 beginbfrange <0000> <FFFFFFFF> <0041> endbfrange <<<<< [[[ )))",
            &|_| None,
        );
        assert!(m.is_empty());
        let _ = CMap::parse(&[0xff; 1000], &|_| None);
        let _ = CMap::parse(b"<", &|_| None);
    }
}
