//! A bounded reader of a bare CFF font program (Adobe Technical Note #5176,
//! "The Compact Font Format Specification"), as a PDF embeds it in
//! /FontFile3 with /Subtype /Type1C. It reads only what text extraction
//! needs: the built-in encoding of the first font, as glyph names.
//!
//! Every offset is checked against the data, every loop is bounded by the
//! data or by a Card8/Card16 count, and nothing here can panic: malformed
//! input yields `None` (or, when a charset or encoding is cut short, the part
//! of the map read before the cut).
//!
//! Supported: header, Name / Top DICT / String INDEXes (offSize 1..=4), Top
//! DICT operands of every kind (integers and reals are skipped correctly),
//! the predefined ISOAdobe charset and charset formats 0, 1 and 2, encoding
//! formats 0 and 1 with or without supplements.
//! Not supported, by returning `None`: CID-keyed fonts (ROS in the Top DICT),
//! the predefined Standard and Expert encodings (the caller applies Adobe
//! StandardEncoding itself), the predefined Expert and ExpertSubset charsets
//! (rare in PDFs: they only serve expert-set fonts), CFF2 (major version 2).

use std::collections::HashMap;

/// Operands one DICT operator may take (TN5176 Appendix B: 48 at most).
const MAX_OPERANDS: usize = 48;
/// Offset 0 of the charset operator: the predefined ISOAdobe charset.
const CHARSET_ISOADOBE: i64 = 0;
/// Highest GID (and SID) the ISOAdobe charset names: GID i is SID i.
const ISOADOBE_LAST: usize = 228;
/// SIDs below this are standard strings; above, they index the String INDEX.
const N_STD_STRINGS: usize = 391;

/// Code → glyph name of the font's built-in encoding (the first font of the
/// CFF's Name INDEX), or None if the data is not a readable CFF or the font
/// is CID-keyed (has ROS in its Top DICT).
pub fn builtin_encoding(data: &[u8]) -> Option<HashMap<u8, String>> {
    // Header: major, minor, hdrSize, offSize (absolute offsets' size, unused).
    let major = *data.first()?;
    let hdr_size = usize::from(*data.get(2)?);
    if major != 1 || hdr_size < 4 || hdr_size > data.len() {
        return None;
    }
    let names = Index::read(data, hdr_size)?;
    if names.count == 0 {
        return None;
    }
    let tops = Index::read(data, names.end)?;
    let top = parse_top_dict(tops.get(0)?)?;
    if top.cid_keyed {
        return None;
    }
    let strings = Index::read(data, tops.end)?;
    // The Global Subr INDEX follows; only charstrings would need it.

    let charstrings = Index::read(data, to_offset(data, top.charstrings?)?)?;
    let n_glyphs = charstrings.count;
    if n_glyphs == 0 {
        return None;
    }
    let sids = read_charset(data, top.charset, n_glyphs)?;
    let code_sids = read_encoding(data, top.encoding, &sids)?;

    let mut out = HashMap::new();
    for (code, sid) in code_sids.iter().enumerate() {
        let (Some(sid), Ok(code)) = (sid, u8::try_from(code)) else {
            continue;
        };
        if let Some(name) = sid_name(*sid, &strings) {
            if name != ".notdef" {
                out.insert(code, name);
            }
        }
    }
    Some(out)
}

/// The offset an operand gives, if it points inside the data.
fn to_offset(data: &[u8], value: i64) -> Option<usize> {
    let off = usize::try_from(value).ok()?;
    (off < data.len()).then_some(off)
}

fn card8(data: &[u8], pos: usize) -> Option<u8> {
    data.get(pos).copied()
}

fn card16(data: &[u8], pos: usize) -> Option<u16> {
    let b = data.get(pos..pos.checked_add(2)?)?;
    Some(u16::from_be_bytes([b[0], b[1]]))
}

/// A big-endian unsigned offset of `size` bytes (1..=4).
fn offset_of(data: &[u8], pos: usize, size: usize) -> Option<usize> {
    let b = data.get(pos..pos.checked_add(size)?)?;
    let v = b.iter().fold(0u32, |v, &x| (v << 8) | u32::from(x));
    usize::try_from(v).ok()
}

/// One INDEX: `count` objects whose offsets are validated on access.
struct Index<'a> {
    data: &'a [u8],
    count: usize,
    off_size: usize,
    /// Position of the offset array.
    offsets: usize,
    /// Position of the byte before the object data (offsets are 1-based).
    base: usize,
    /// First byte after the INDEX.
    end: usize,
}

impl<'a> Index<'a> {
    fn read(data: &'a [u8], pos: usize) -> Option<Index<'a>> {
        let count = usize::from(card16(data, pos)?);
        if count == 0 {
            let end = pos + 2;
            return Some(Index {
                data,
                count,
                off_size: 1,
                offsets: end,
                base: end,
                end,
            });
        }
        let off_size = usize::from(card8(data, pos + 2)?);
        if !(1..=4).contains(&off_size) {
            return None;
        }
        let offsets = pos + 3;
        // count ≤ 65,535 and off_size ≤ 4: no overflow on any usize ≥ 32 bits.
        let base = offsets.checked_add((count + 1).checked_mul(off_size)?)? - 1;
        let last = offset_of(data, base + 1 - off_size, off_size)?;
        let end = base.checked_add(last)?;
        if last == 0 || end > data.len() {
            return None;
        }
        Some(Index {
            data,
            count,
            off_size,
            offsets,
            base,
            end,
        })
    }

    /// Object `i`, or None when out of range or its offsets are inconsistent.
    fn get(&self, i: usize) -> Option<&'a [u8]> {
        if i >= self.count {
            return None;
        }
        let at = |k: usize| offset_of(self.data, self.offsets + k * self.off_size, self.off_size);
        let (start, stop) = (at(i)?, at(i + 1)?);
        if start == 0 || start > stop {
            return None;
        }
        let (start, stop) = (self.base.checked_add(start)?, self.base.checked_add(stop)?);
        if stop > self.end {
            return None;
        }
        self.data.get(start..stop)
    }
}

/// What the Top DICT tells this reader.
#[derive(Debug, Default, PartialEq)]
struct TopDict {
    /// Operand of `charset` (15); 0 (ISOAdobe) when absent.
    charset: i64,
    /// Operand of `Encoding` (16); 0 (Standard) when absent.
    encoding: i64,
    /// Operand of `CharStrings` (17); required.
    charstrings: Option<i64>,
    /// `ROS` (12 30) present: a CID-keyed font.
    cid_keyed: bool,
}

/// One DICT operand: an integer, or a real number (never an offset).
type Operand = Option<i64>;

/// Parses a Top DICT; None when an operand is cut short or too many pile up.
fn parse_top_dict(dict: &[u8]) -> Option<TopDict> {
    let mut top = TopDict::default();
    let mut operands: Vec<Operand> = Vec::with_capacity(MAX_OPERANDS);
    let mut pos = 0;
    while let Some(&b0) = dict.get(pos) {
        pos += 1;
        let operand: Operand = match b0 {
            32..=246 => Some(i64::from(b0) - 139),
            247..=250 => {
                let b1 = card8(dict, pos)?;
                pos += 1;
                Some((i64::from(b0) - 247) * 256 + i64::from(b1) + 108)
            }
            251..=254 => {
                let b1 = card8(dict, pos)?;
                pos += 1;
                Some(-(i64::from(b0) - 251) * 256 - i64::from(b1) - 108)
            }
            28 => {
                let v = card16(dict, pos)? as i16;
                pos += 2;
                Some(i64::from(v))
            }
            29 => {
                let b = dict.get(pos..pos + 4)?;
                pos += 4;
                Some(i64::from(i32::from_be_bytes([b[0], b[1], b[2], b[3]])))
            }
            30 => {
                pos = skip_real(dict, pos)?;
                None
            }
            _ => {
                // An operator: 0..=21 (12 escapes to a second byte); 22..=27,
                // 31 and 255 are reserved and treated as operators too.
                let op = if b0 == 12 {
                    let b1 = card8(dict, pos)?;
                    pos += 1;
                    1200 + u16::from(b1)
                } else {
                    u16::from(b0)
                };
                let last = operands.last().copied().flatten();
                match op {
                    15 => top.charset = last?,
                    16 => top.encoding = last?,
                    17 => top.charstrings = Some(last?),
                    1230 => top.cid_keyed = true,
                    _ => {}
                }
                operands.clear();
                continue;
            }
        };
        if operands.len() == MAX_OPERANDS {
            return None;
        }
        operands.push(operand);
    }
    Some(top)
}

/// Skips the nibbles of a real number starting at `pos`; the position after.
fn skip_real(dict: &[u8], mut pos: usize) -> Option<usize> {
    loop {
        let b = card8(dict, pos)?;
        pos += 1;
        if b >> 4 == 0xf || b & 0xf == 0xf {
            return Some(pos);
        }
    }
}

/// GID → SID for the `n_glyphs` glyphs (GID 0 is .notdef, SID 0). A charset
/// cut short gives fewer entries; the glyphs past it have no name.
fn read_charset(data: &[u8], offset: i64, n_glyphs: usize) -> Option<Vec<u16>> {
    if offset == CHARSET_ISOADOBE {
        let n = n_glyphs.min(ISOADOBE_LAST + 1);
        return Some((0..n).filter_map(|i| u16::try_from(i).ok()).collect());
    }
    if offset == 1 || offset == 2 {
        // Predefined Expert / ExpertSubset charsets: not supported (rare in
        // PDFs, they only serve expert-set fonts).
        return None;
    }
    let pos = to_offset(data, offset)?;
    let format = card8(data, pos)?;
    let body = data.get(pos + 1..)?;
    let card16 = |b: &[u8]| u16::from_be_bytes([b[0], b[1]]);
    let mut sids = vec![0u16];
    match format {
        0 => sids.extend(body.chunks_exact(2).take(n_glyphs.saturating_sub(1)).map(card16)),
        1 | 2 => {
            // Ranges (first SID, nLeft as Card8 or Card16); bounded by the data.
            let step = if format == 1 { 3 } else { 4 };
            for range in body.chunks_exact(step) {
                if sids.len() >= n_glyphs {
                    break;
                }
                let first = u32::from(card16(range));
                let n_left = if format == 1 {
                    u32::from(range[2])
                } else {
                    u32::from(card16(&range[2..]))
                };
                let sids_left = (first..=first + n_left).map_while(|sid| u16::try_from(sid).ok());
                sids.extend(sids_left.take(n_glyphs - sids.len()));
            }
        }
        _ => return None,
    }
    Some(sids)
}

/// Code → SID (through GID and the charset, or directly for supplements).
/// None for the predefined encodings and for unknown formats; an encoding
/// cut short gives the codes read before the cut.
fn read_encoding(data: &[u8], offset: i64, sids: &[u16]) -> Option<[Option<u16>; 256]> {
    if offset == 0 || offset == 1 {
        // Predefined Standard / Expert encodings: the caller's business.
        return None;
    }
    let pos = to_offset(data, offset)?;
    let format = card8(data, pos)?;
    let count = usize::from(card8(data, pos + 1)?);
    let body = data.get(pos + 2..)?;
    let mut codes = [None; 256];
    let mut set = |code: usize, gid: usize| {
        if let (Some(slot), Some(&sid)) = (codes.get_mut(code), sids.get(gid)) {
            *slot = Some(sid);
        }
    };
    // Format 0: nCodes codes for GIDs 1, 2, ...; format 1: nRanges (first,
    // nLeft) pairs for consecutive GIDs from 1.
    let len = match format & 0x7f {
        0 => {
            body.iter()
                .take(count)
                .enumerate()
                .for_each(|(i, &code)| set(usize::from(code), i + 1));
            count
        }
        1 => {
            let mut gid = 1;
            for range in body.chunks_exact(2).take(count) {
                for code in usize::from(range[0])..=usize::from(range[0]) + usize::from(range[1]) {
                    set(code, gid);
                    gid += 1;
                }
            }
            2 * count
        }
        _ => return None,
    };
    if format & 0x80 != 0 {
        // Supplements: nSups, then (code, SID) pairs.
        let sups = body.get(len..).unwrap_or_default();
        let n_sups = usize::from(sups.first().copied().unwrap_or(0));
        for sup in sups.get(1..).unwrap_or_default().chunks_exact(3).take(n_sups) {
            codes[usize::from(sup[0])] = Some(u16::from_be_bytes([sup[1], sup[2]]));
        }
    }
    Some(codes)
}

/// The name a SID stands for: a standard string or one of the String INDEX.
fn sid_name(sid: u16, strings: &Index) -> Option<String> {
    let sid = usize::from(sid);
    match STANDARD_STRINGS.get(sid) {
        Some(name) => Some((*name).to_string()),
        None => strings
            .get(sid - N_STD_STRINGS)
            .map(|b| String::from_utf8_lossy(b).into_owned()),
    }
}

/// The 391 standard strings, SIDs 0..=390 (TN5176 Appendix A).
#[rustfmt::skip]
const STANDARD_STRINGS: [&str; N_STD_STRINGS] = [
    ".notdef", "space", "exclam", "quotedbl", "numbersign", "dollar", "percent", "ampersand",
    "quoteright", "parenleft", "parenright", "asterisk", "plus", "comma", "hyphen", "period",
    "slash", "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
    "colon", "semicolon", "less", "equal", "greater", "question", "at", "A", "B", "C", "D", "E",
    "F", "G", "H", "I", "J", "K", "L", "M", "N", "O", "P", "Q", "R", "S", "T", "U", "V", "W", "X",
    "Y", "Z", "bracketleft", "backslash", "bracketright", "asciicircum", "underscore", "quoteleft",
    "a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "l", "m", "n", "o", "p", "q", "r", "s",
    "t", "u", "v", "w", "x", "y", "z", "braceleft", "bar", "braceright", "asciitilde",
    "exclamdown", "cent", "sterling", "fraction", "yen", "florin", "section", "currency",
    "quotesingle", "quotedblleft", "guillemotleft", "guilsinglleft", "guilsinglright", "fi", "fl",
    "endash", "dagger", "daggerdbl", "periodcentered", "paragraph", "bullet", "quotesinglbase",
    "quotedblbase", "quotedblright", "guillemotright", "ellipsis", "perthousand", "questiondown",
    "grave", "acute", "circumflex", "tilde", "macron", "breve", "dotaccent", "dieresis", "ring",
    "cedilla", "hungarumlaut", "ogonek", "caron", "emdash", "AE", "ordfeminine", "Lslash",
    "Oslash", "OE", "ordmasculine", "ae", "dotlessi", "lslash", "oslash", "oe", "germandbls",
    "onesuperior", "logicalnot", "mu", "trademark", "Eth", "onehalf", "plusminus", "Thorn",
    "onequarter", "divide", "brokenbar", "degree", "thorn", "threequarters", "twosuperior",
    "registered", "minus", "eth", "multiply", "threesuperior", "copyright", "Aacute",
    "Acircumflex", "Adieresis", "Agrave", "Aring", "Atilde", "Ccedilla", "Eacute", "Ecircumflex",
    "Edieresis", "Egrave", "Iacute", "Icircumflex", "Idieresis", "Igrave", "Ntilde", "Oacute",
    "Ocircumflex", "Odieresis", "Ograve", "Otilde", "Scaron", "Uacute", "Ucircumflex", "Udieresis",
    "Ugrave", "Yacute", "Ydieresis", "Zcaron", "aacute", "acircumflex", "adieresis", "agrave",
    "aring", "atilde", "ccedilla", "eacute", "ecircumflex", "edieresis", "egrave", "iacute",
    "icircumflex", "idieresis", "igrave", "ntilde", "oacute", "ocircumflex", "odieresis", "ograve",
    "otilde", "scaron", "uacute", "ucircumflex", "udieresis", "ugrave", "yacute", "ydieresis",
    "zcaron", "exclamsmall", "Hungarumlautsmall", "dollaroldstyle", "dollarsuperior",
    "ampersandsmall", "Acutesmall", "parenleftsuperior", "parenrightsuperior", "twodotenleader",
    "onedotenleader", "zerooldstyle", "oneoldstyle", "twooldstyle", "threeoldstyle",
    "fouroldstyle", "fiveoldstyle", "sixoldstyle", "sevenoldstyle", "eightoldstyle",
    "nineoldstyle", "commasuperior", "threequartersemdash", "periodsuperior", "questionsmall",
    "asuperior", "bsuperior", "centsuperior", "dsuperior", "esuperior", "isuperior", "lsuperior",
    "msuperior", "nsuperior", "osuperior", "rsuperior", "ssuperior", "tsuperior", "ff", "ffi",
    "ffl", "parenleftinferior", "parenrightinferior", "Circumflexsmall", "hyphensuperior",
    "Gravesmall", "Asmall", "Bsmall", "Csmall", "Dsmall", "Esmall", "Fsmall", "Gsmall", "Hsmall",
    "Ismall", "Jsmall", "Ksmall", "Lsmall", "Msmall", "Nsmall", "Osmall", "Psmall", "Qsmall",
    "Rsmall", "Ssmall", "Tsmall", "Usmall", "Vsmall", "Wsmall", "Xsmall", "Ysmall", "Zsmall",
    "colonmonetary", "onefitted", "rupiah", "Tildesmall", "exclamdownsmall", "centoldstyle",
    "Lslashsmall", "Scaronsmall", "Zcaronsmall", "Dieresissmall", "Brevesmall", "Caronsmall",
    "Dotaccentsmall", "Macronsmall", "figuredash", "hypheninferior", "Ogoneksmall", "Ringsmall",
    "Cedillasmall", "questiondownsmall", "oneeighth", "threeeighths", "fiveeighths",
    "seveneighths", "onethird", "twothirds", "zerosuperior", "foursuperior", "fivesuperior",
    "sixsuperior", "sevensuperior", "eightsuperior", "ninesuperior", "zeroinferior", "oneinferior",
    "twoinferior", "threeinferior", "fourinferior", "fiveinferior", "sixinferior", "seveninferior",
    "eightinferior", "nineinferior", "centinferior", "dollarinferior", "periodinferior",
    "commainferior", "Agravesmall", "Aacutesmall", "Acircumflexsmall", "Atildesmall",
    "Adieresissmall", "Aringsmall", "AEsmall", "Ccedillasmall", "Egravesmall", "Eacutesmall",
    "Ecircumflexsmall", "Edieresissmall", "Igravesmall", "Iacutesmall", "Icircumflexsmall",
    "Idieresissmall", "Ethsmall", "Ntildesmall", "Ogravesmall", "Oacutesmall", "Ocircumflexsmall",
    "Otildesmall", "Odieresissmall", "OEsmall", "Oslashsmall", "Ugravesmall", "Uacutesmall",
    "Ucircumflexsmall", "Udieresissmall", "Yacutesmall", "Thornsmall", "Ydieresissmall", "001.000",
    "001.001", "001.002", "001.003", "Black", "Bold", "Book", "Light", "Medium", "Regular",
    "Roman", "Semibold",
];

#[cfg(test)]
mod tests {
    use super::*;

    /// The real font: a subset of ArialMT-Regular with Cyrillic glyphs
    /// (BaseFont ELOVCG+ArialMT-Regular~c), the /FontFile3 (/Type1C) stream
    /// of eskd.pdf, the documentation of the eskd LaTeX package (LPPL) as
    /// shipped in Debian's texlive-lang-cyrillic package.
    const ESKD_ARIAL: &[u8] = include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/eskd-arial-cyr.cff"));

    /// An INDEX of `objs`, with offSize 1 when its offsets fit, else 2.
    fn index(objs: &[&[u8]]) -> Vec<u8> {
        let mut out = (objs.len() as u16).to_be_bytes().to_vec();
        let total = objs.iter().map(|o| o.len()).sum::<usize>() + 1;
        let off_size = if total <= 0xff { 1 } else { 2 };
        if !objs.is_empty() {
            out.push(off_size as u8);
            let ends = objs
                .iter()
                .scan(1, |off, o| Some(std::mem::replace(off, *off + o.len())));
            for off in ends.chain([total]) {
                out.extend_from_slice(&(off as u32).to_be_bytes()[4 - off_size..]);
            }
            objs.iter().for_each(|o| out.extend_from_slice(o));
        }
        out
    }

    /// A DICT integer operand in its fixed-width 5-byte form, then `op`.
    fn int5(v: i32, op: &[u8]) -> Vec<u8> {
        [&[29][..], &v.to_be_bytes(), op].concat()
    }

    /// A charset or encoding: a predefined offset (0, 1 or 2), or bytes.
    enum Table {
        At(i32),
        Bytes(Vec<u8>),
    }
    use Table::{At, Bytes};

    /// A one-font CFF: `extra_top` first in the Top DICT, then charset,
    /// Encoding and CharStrings; after the (empty) Global Subr INDEX come
    /// the charstrings, the charset bytes and the encoding bytes.
    fn build(strings: &[&str], n_glyphs: usize, charset: Table, encoding: Table, extra_top: &[u8]) -> Vec<u8> {
        let top = |cs, enc, chs| [extra_top, &int5(cs, &[15]), &int5(enc, &[16]), &int5(chs, &[17])].concat();
        let mut out = [&[1, 0, 4, 1][..], &index(&[b"Test"])].concat();
        let strs = index(&strings.iter().map(|s| s.as_bytes()).collect::<Vec<_>>());
        let charstrings_at = out.len() + index(&[&top(0, 0, 0)]).len() + strs.len() + 2;
        let charstrings = index(&vec![&[14u8][..]; n_glyphs]);
        let charset_at = charstrings_at + charstrings.len();
        let (cs_off, cs_bytes) = match charset {
            At(o) => (o, vec![]),
            Bytes(b) => (charset_at as i32, b),
        };
        let (enc_off, enc_bytes) = match encoding {
            At(o) => (o, vec![]),
            Bytes(b) => ((charset_at + cs_bytes.len()) as i32, b),
        };
        out.extend(index(&[&top(cs_off, enc_off, charstrings_at as i32)]));
        out.extend([strs, vec![0, 0], charstrings, cs_bytes, enc_bytes].concat());
        out
    }

    /// .notdef and A (SID 34) at code 0x41, with `extra_top` in the Top DICT.
    fn a_font(strings: &[&str], extra_top: &[u8]) -> Vec<u8> {
        build(strings, 2, Bytes(vec![0, 0, 34]), Bytes(vec![0, 1, 0x41]), extra_top)
    }

    fn map(pairs: &[(u8, &str)]) -> Option<HashMap<u8, String>> {
        Some(pairs.iter().map(|&(c, n)| (c, n.to_string())).collect())
    }

    /// Charset format 0: .notdef, afii10017 (391), afii10018 (392), comma (13).
    fn cyrillic_format0() -> Vec<u8> {
        let charset = vec![0, 0x01, 0x87, 0x01, 0x88, 0, 13];
        build(
            &["afii10017", "afii10018"],
            4,
            Bytes(charset),
            Bytes(vec![0, 3, 0xC0, 0xC1, 0x2C]),
            &[],
        )
    }

    #[test]
    fn format0_encoding_with_charset_format0_names_from_string_index() {
        let want = map(&[(0xC0, "afii10017"), (0xC1, "afii10018"), (0x2C, "comma")]);
        assert_eq!(builtin_encoding(&cyrillic_format0()), want);
    }

    #[test]
    fn format1_encoding_ranges_with_charset_format1() {
        // Charset ranges: A B C (SIDs 34..=36), then afii10017 (391).
        let charset = vec![1, 0, 34, 2, 0x01, 0x87, 0];
        // Encoding ranges: 0x41..=0x43 → GIDs 1..=3, 0xC0 → GID 4.
        let data = build(
            &["afii10017"],
            5,
            Bytes(charset),
            Bytes(vec![1, 2, 0x41, 2, 0xC0, 0]),
            &[],
        );
        let want = map(&[(0x41, "A"), (0x42, "B"), (0x43, "C"), (0xC0, "afii10017")]);
        assert_eq!(builtin_encoding(&data), want);
    }

    #[test]
    fn charset_format2_ranges_with_card16_counts() {
        // One range of 3 glyphs from SID 391, with a Card16 nLeft.
        let (charset, encoding) = (vec![2, 0x01, 0x87, 0, 2], vec![0, 3, 0xE0, 0xE1, 0xE2]);
        let data = build(
            &["afii10065", "afii10066", "afii10067"],
            4,
            Bytes(charset),
            Bytes(encoding),
            &[],
        );
        let want = map(&[(0xE0, "afii10065"), (0xE1, "afii10066"), (0xE2, "afii10067")]);
        assert_eq!(builtin_encoding(&data), want);
    }

    #[test]
    fn supplements_map_codes_to_sids() {
        // Format 0 with supplement flag: 0x41 → GID 1 (A), then two supplements.
        let encoding = vec![0x80, 1, 0x41, 2, 0xA0, 0, 1, 0xC5, 0x01, 0x87];
        let data = build(&["afii10022"], 2, Bytes(vec![0, 0, 34]), Bytes(encoding), &[]);
        assert_eq!(
            builtin_encoding(&data),
            map(&[(0x41, "A"), (0xA0, "space"), (0xC5, "afii10022")])
        );
        // Format 1 with supplement flag.
        let encoding = vec![0x81, 1, 0x61, 0, 1, 0x20, 0, 1];
        let data = build(&[], 2, Bytes(vec![0, 0, 66]), Bytes(encoding), &[]);
        assert_eq!(builtin_encoding(&data), map(&[(0x61, "a"), (0x20, "space")]));
    }

    #[test]
    fn isoadobe_predefined_charset_maps_gid_to_sid() {
        let data = build(&[], 4, At(0), Bytes(vec![0, 3, 0x20, 0x21, 0x22]), &[]);
        assert_eq!(
            builtin_encoding(&data),
            map(&[(0x20, "space"), (0x21, "exclam"), (0x22, "quotedbl")])
        );
        // Codes 0..=255 on GIDs 1..=256: ISOAdobe names GIDs 1..=228 only.
        let got = builtin_encoding(&build(&[], 300, At(0), Bytes(vec![1, 1, 0, 255]), &[])).unwrap();
        assert_eq!(
            (got.len(), got[&0].as_str(), got[&227].as_str()),
            (228, "space", "zcaron")
        );
    }

    #[test]
    fn predefined_encodings_and_expert_charsets_give_none() {
        for enc in [0, 1] {
            assert_eq!(
                builtin_encoding(&build(&[], 4, At(0), At(enc), &[])),
                None,
                "encoding {enc}"
            );
        }
        for cs in [1, 2] {
            let data = build(&[], 2, At(cs), Bytes(vec![0, 1, 0x41]), &[]);
            assert_eq!(builtin_encoding(&data), None, "charset {cs}");
        }
    }

    #[test]
    fn cid_keyed_font_gives_none() {
        // ROS: Registry SID 391, Ordering SID 392, Supplement 0, then 12 30.
        let ros = [int5(391, &[]), int5(392, &[139, 12, 30])].concat();
        assert_eq!(builtin_encoding(&a_font(&["Adobe", "Identity"], &ros)), None);
        assert_eq!(
            builtin_encoding(&a_font(&["Adobe", "Identity"], &[])),
            map(&[(0x41, "A")])
        );
    }

    #[test]
    fn every_operand_form_is_skipped() {
        let extra = [
            &[30, 0x0a, 0x00, 0x1f, 139, 139][..],                // real 0.001, 0 0
            &[30, 0xa0, 0x01, 0xc2, 0xff, 139, 139, 12, 7],       // real .001E-2, 0 0, FontMatrix
            &[251, 0x10, 247, 0x20, 250, 0xff, 254, 0xff, 5],     // 2-byte ints, FontBBox
            &[28, 0x80, 0x00, 13, 32, 246, 12, 12, 30, 0x5f, 14], // 28-form, 1-byte ints, real 5
            &int5(-7, &[12, 3]),                                  // 29-form, UnderlinePosition
        ];
        assert_eq!(builtin_encoding(&a_font(&[], &extra.concat())), map(&[(0x41, "A")]));
        let top = parse_top_dict(&[247, 0, 15, 251, 0, 16, 28, 0x01, 0x00, 17]).unwrap();
        assert_eq!((top.charset, top.encoding, top.charstrings), (108, -108, Some(256)));
        // A real number where an offset belongs: not readable.
        assert_eq!(parse_top_dict(&[30, 0x1f, 16]), None);
    }

    #[test]
    fn not_cff_gives_none() {
        assert_eq!(builtin_encoding(b""), None);
        assert_eq!(builtin_encoding(b"%!PS-AdobeFont-1.0: Foo"), None);
        let mut cff2 = cyrillic_format0();
        cff2[0] = 2;
        assert_eq!(builtin_encoding(&cff2), None);
        let mut bad_off_size = cyrillic_format0();
        bad_off_size[6] = 5; // the Name INDEX's offSize
        assert_eq!(builtin_encoding(&bad_off_size), None);
        let past_end = build(&[], 2, Bytes(vec![0, 0, 34]), At(0x7fff_ffff), &[]);
        assert_eq!(builtin_encoding(&past_end), None);
    }

    #[test]
    fn standard_strings_match_the_spec() {
        // FNV-1a 64 of the 391 names joined by '\n', computed from fontTools'
        // cffStandardStrings (TN5176 Appendix A).
        let fnv = |h: u64, b: u8| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        let hash = STANDARD_STRINGS.join("\n").bytes().fold(0xcbf2_9ce4_8422_2325, fnv);
        assert_eq!(hash, 0xea4f_3f39_d5c4_9a2b);
        assert_eq!((STANDARD_STRINGS[1], STANDARD_STRINGS[390]), ("space", "Semibold"));
    }

    #[test]
    fn real_eskd_arial_cyrillic_subset() {
        // fontTools reads this font's Encoding (format 0, 30 codes) with its
        // format 0 charset as these names, among others.
        let got = builtin_encoding(ESKD_ARIAL).unwrap();
        assert_eq!(got.len(), 30);
        let some = [
            (0x2C, "comma"),
            (0xC0, "afii10017"),
            (0xD2, "afii10036"),
            (0xE0, "afii10065"),
            (0xFF, "afii10097"),
        ];
        for (code, name) in some {
            assert_eq!(got.get(&code).map(String::as_str), Some(name), "code {code:#x}");
        }
    }

    /// Every cut of `data` gives None or a part of the full map.
    fn check_truncations(data: &[u8]) {
        let full = builtin_encoding(data).unwrap();
        for len in 0..data.len() {
            for (code, name) in builtin_encoding(&data[..len]).unwrap_or_default() {
                assert_eq!(full.get(&code), Some(&name), "cut at {len}");
            }
        }
    }

    #[test]
    fn truncation_at_every_length_never_panics() {
        check_truncations(ESKD_ARIAL);
        check_truncations(&cyrillic_format0());
        let charset = vec![1, 0, 34, 2, 0x01, 0x87, 0];
        let encoding = vec![0x81, 2, 0x41, 2, 0xC0, 0, 2, 0x20, 0, 1, 0xA0, 0x01, 0x87];
        check_truncations(&build(&["afii10017"], 5, Bytes(charset), Bytes(encoding), &[]));
    }

    #[test]
    fn random_mutations_never_panic() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as usize
        };
        let small = cyrillic_format0();
        for round in 0..4000 {
            let mut data = if round % 2 == 0 {
                ESKD_ARIAL.to_vec()
            } else {
                small.clone()
            };
            // A few bytes anywhere, and one in the header/INDEX/DICT area.
            for _ in 0..1 + next() % 8 {
                let at = next() % data.len();
                data[at] = next() as u8;
            }
            let at = next() % data.len().min(700);
            data[at] = next() as u8;
            let _ = builtin_encoding(&data);
        }
        for len in [0, 1, 4, 16, 300] {
            let _ = builtin_encoding(&vec![0xff; len]);
            let _ = builtin_encoding(&vec![0; len]);
        }
    }
}
