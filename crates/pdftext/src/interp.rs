//! The content-stream interpreter: graphics state (q/Q, cm), text state
//! (BT/ET, Tf, Tc, Tw, Tz, TL, Ts, Td, TD, Tm, T*), text showing (Tj, TJ, ',
//! ") and Form XObjects (Do, recursively, with their own resources and
//! matrix, guarded against depth and cycles). It places every glyph in
//! device space; [`layout`] then turns the placed glyphs into text.

use std::collections::HashMap;
use std::rc::Rc;

use lopdf::content::Content;
use lopdf::{Dictionary, Document, Object, ObjectId};

use crate::font::Font;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Matrix {
    a: f64,
    b: f64,
    c: f64,
    d: f64,
    e: f64,
    f: f64,
}

impl Matrix {
    pub const IDENTITY: Matrix = Matrix {
        a: 1.0,
        b: 0.0,
        c: 0.0,
        d: 1.0,
        e: 0.0,
        f: 0.0,
    };

    fn new(v: [f64; 6]) -> Matrix {
        Matrix {
            a: v[0],
            b: v[1],
            c: v[2],
            d: v[3],
            e: v[4],
            f: v[5],
        }
    }

    fn translate(x: f64, y: f64) -> Matrix {
        Matrix::new([1.0, 0.0, 0.0, 1.0, x, y])
    }

    /// self × other (apply self first).
    fn mul(&self, o: &Matrix) -> Matrix {
        Matrix {
            a: self.a * o.a + self.b * o.c,
            b: self.a * o.b + self.b * o.d,
            c: self.c * o.a + self.d * o.c,
            d: self.c * o.b + self.d * o.d,
            e: self.e * o.a + self.f * o.c + o.e,
            f: self.e * o.b + self.f * o.d + o.f,
        }
    }

    fn apply(&self, x: f64, y: f64) -> (f64, f64) {
        (x * self.a + y * self.c + self.e, x * self.b + y * self.d + self.f)
    }

    fn is_finite(&self) -> bool {
        [self.a, self.b, self.c, self.d, self.e, self.f]
            .iter()
            .all(|v| v.is_finite())
    }
}

/// One glyph placed on the page.
#[derive(Debug, Clone)]
pub struct Placed {
    pub text: String,
    pub start: (f64, f64),
    pub end: (f64, f64),
    /// Unit vector along the baseline.
    pub dir: (f64, f64),
    /// Font size in device space.
    pub size: f64,
}

#[derive(Clone)]
struct GState {
    ctm: Matrix,
    font: Option<Rc<Font>>,
    size: f64,
    char_spacing: f64,
    word_spacing: f64,
    h_scale: f64,
    leading: f64,
    rise: f64,
}

impl Default for GState {
    fn default() -> Self {
        GState {
            ctm: Matrix::IDENTITY,
            font: None,
            size: 1.0,
            char_spacing: 0.0,
            word_spacing: 0.0,
            h_scale: 1.0,
            leading: 0.0,
            rise: 0.0,
        }
    }
}

/// Why a page could not be (fully) read.
#[derive(Debug)]
pub enum PageError {
    Budget,
    Glyphs,
    Other(String),
}

/// Per-page bounds on work and memory. A real page stays far below each;
/// past one, the page keeps the text read so far and gets a page error.
/// (Document-wide bounds come from [`crate::Limits`].)
pub const PAGE_MAX_GLYPHS: usize = 1_000_000;
/// Bytes of text the glyphs of one page may map to (ToUnicode entries can
/// expand one code into long strings).
pub const PAGE_MAX_TEXT_BYTES: usize = 16 << 20;
/// Form XObjects drawn on one page (forms drawing forms multiply).
pub const PAGE_MAX_FORMS: usize = 100_000;
/// Operators run for one page.
pub const PAGE_MAX_OPS: usize = 20_000_000;
/// Operands one operation may have (arrays and dictionaries counted
/// element by element). lopdf materialises them all, at ~120 bytes each.
pub const MAX_OPERANDS: usize = 1_000_000;

pub struct Interpreter<'a> {
    doc: &'a Document,
    fonts: HashMap<ObjectId, Rc<Font>>,
    /// Fonts given as direct dictionaries, by the dictionary's address
    /// (the document is not modified while we read it).
    inline_fonts: HashMap<usize, Rc<Font>>,
    page_glyphs: usize,
    /// Glyphs of this page whose font gives them no text (no mapping).
    pub page_undecoded: usize,
    /// Images this page draws (image XObjects and inline images).
    pub page_images: usize,
    page_text_bytes: usize,
    page_forms: usize,
    page_ops: usize,
    /// Decompression bytes left for the whole document.
    pub budget: u64,
    /// The most one stream may inflate to.
    max_stream_bytes: u64,
    max_depth: usize,
    /// Glyphs left for the whole document (bounds output size).
    pub glyphs_left: usize,
    pub placed: Vec<Placed>,
    /// Operators seen whose stream had a syntax error (the rest of that
    /// stream is skipped).
    pub stream_errors: usize,
    /// Strings shown without a usable font (a missing or broken font
    /// object): their text cannot be known.
    pub fontless_strings: usize,
}

fn num(o: &Object) -> f64 {
    match o {
        Object::Integer(i) => *i as f64,
        Object::Real(r) => *r as f64,
        _ => 0.0,
    }
}

impl<'a> Interpreter<'a> {
    pub fn new(doc: &'a Document, budget: u64, max_stream_bytes: u64, max_depth: usize, max_glyphs: usize) -> Self {
        Interpreter {
            doc,
            fonts: HashMap::new(),
            inline_fonts: HashMap::new(),
            page_glyphs: 0,
            page_undecoded: 0,
            page_images: 0,
            max_stream_bytes,
            page_text_bytes: 0,
            page_forms: 0,
            page_ops: 0,
            budget,
            max_depth,
            glyphs_left: max_glyphs,
            placed: Vec::new(),
            stream_errors: 0,
            fontless_strings: 0,
        }
    }

    fn deref(&self, o: &'a Object) -> (Option<ObjectId>, &'a Object) {
        self.doc.dereference(o).unwrap_or((None, o))
    }

    fn resource(
        &self,
        resources: Option<&'a Dictionary>,
        kind: &[u8],
        name: &[u8],
    ) -> Option<(Option<ObjectId>, &'a Object)> {
        let res = resources?;
        let (_, group) = self.deref(res.get(kind).ok()?);
        let group = group.as_dict().ok()?;
        Some(self.deref(group.get(name).ok()?))
    }

    fn font(&mut self, resources: Option<&'a Dictionary>, name: &[u8]) -> Option<Rc<Font>> {
        let (id, obj) = self.resource(resources, b"Font", name)?;
        let dict = obj.as_dict().ok()?;
        let address = std::ptr::from_ref(dict) as usize;
        let cached = match id {
            Some(id) => self.fonts.get(&id),
            None => self.inline_fonts.get(&address),
        };
        if let Some(f) = cached {
            return Some(f.clone());
        }
        let font = Rc::new(Font::load(self.doc, dict, &mut self.budget));
        match id {
            Some(id) => self.fonts.insert(id, font.clone()),
            None => self.inline_fonts.insert(address, font.clone()),
        };
        Some(font)
    }

    /// Starts a page: clears the placed glyphs and the per-page counters.
    /// Glyphs shown on the current page so far.
    pub fn page_glyphs(&self) -> usize {
        self.page_glyphs
    }

    pub fn start_page(&mut self) {
        self.placed.clear();
        self.page_glyphs = 0;
        self.page_undecoded = 0;
        self.page_images = 0;
        self.page_text_bytes = 0;
        self.page_forms = 0;
        self.page_ops = 0;
    }

    /// Decodes a stream's content within the budget (and the per-stream cap).
    pub fn stream_content(&mut self, stream: &lopdf::Stream) -> Result<Vec<u8>, PageError> {
        let limit = self.budget.min(self.max_stream_bytes).min(usize::MAX as u64) as usize;
        match stream.get_plain_content_with_limit(limit) {
            Ok(data) => {
                self.budget = self.budget.saturating_sub(data.len() as u64);
                Ok(data)
            }
            Err(lopdf::Error::Decompress(lopdf::DecompressError::MemoryLimitExceeded { .. })) => Err(PageError::Budget),
            Err(e) => Err(PageError::Other(e.to_string())),
        }
    }

    /// Runs a content stream.
    pub fn run(
        &mut self,
        content: &[u8],
        resources: Option<&'a Dictionary>,
        ctm: Matrix,
        depth: usize,
        visiting: &mut Vec<ObjectId>,
    ) -> Result<(), PageError> {
        let gs = GState {
            ctm,
            ..GState::default()
        };
        self.run_in(content, resources, gs, depth, visiting)
    }

    /// Runs a content stream starting from graphics state `gs` (a form
    /// inherits the state in force where it is drawn, text state included).
    fn run_in(
        &mut self,
        content: &[u8],
        resources: Option<&'a Dictionary>,
        mut gs: GState,
        depth: usize,
        visiting: &mut Vec<ObjectId>,
    ) -> Result<(), PageError> {
        let mut stack: Vec<GState> = Vec::new();
        let mut tm = Matrix::IDENTITY;
        let mut tlm = Matrix::IDENTITY;
        if max_operands(content) > MAX_OPERANDS {
            return Err(PageError::Other(format!(
                "a content stream has an operation with more than {MAX_OPERANDS} operands; it was skipped"
            )));
        }
        for op in Content::decode_iter(content) {
            let op = match op {
                Ok(op) => op,
                Err(_) => {
                    // Keep what was read before the damage.
                    self.stream_errors += 1;
                    break;
                }
            };
            self.page_ops += 1;
            if self.page_ops > PAGE_MAX_OPS {
                return Err(PageError::Other(format!(
                    "the page has more than {PAGE_MAX_OPS} drawing operations; the rest was skipped"
                )));
            }
            let args = &op.operands;
            let n = |i: usize| args.get(i).map(num).unwrap_or(0.0);
            match op.operator.as_str() {
                "q" if stack.len() < 256 => stack.push(gs.clone()),
                "q" => {}
                "Q" => {
                    if let Some(s) = stack.pop() {
                        gs = s;
                    }
                }
                "cm" => {
                    let m = Matrix::new([n(0), n(1), n(2), n(3), n(4), n(5)]);
                    let next = m.mul(&gs.ctm);
                    if next.is_finite() {
                        gs.ctm = next;
                    }
                }
                "BT" => {
                    tm = Matrix::IDENTITY;
                    tlm = Matrix::IDENTITY;
                }
                "ET" => {}
                "Tf" => {
                    if let Some(Object::Name(name)) = args.first() {
                        gs.font = self.font(resources, name);
                    }
                    gs.size = n(1);
                }
                "Tc" => gs.char_spacing = n(0),
                "Tw" => gs.word_spacing = n(0),
                "Tz" => gs.h_scale = n(0) / 100.0,
                "TL" => gs.leading = n(0),
                "Ts" => gs.rise = n(0),
                "Td" => {
                    tlm = Matrix::translate(n(0), n(1)).mul(&tlm);
                    tm = tlm;
                }
                "TD" => {
                    gs.leading = -n(1);
                    tlm = Matrix::translate(n(0), n(1)).mul(&tlm);
                    tm = tlm;
                }
                "Tm" => {
                    let m = Matrix::new([n(0), n(1), n(2), n(3), n(4), n(5)]);
                    if m.is_finite() {
                        tlm = m;
                        tm = m;
                    }
                }
                "T*" => {
                    tlm = Matrix::translate(0.0, -gs.leading).mul(&tlm);
                    tm = tlm;
                }
                "Tj" => {
                    if let Some(Object::String(s, _)) = args.first() {
                        self.show(&gs, &mut tm, s)?;
                    }
                }
                "'" => {
                    tlm = Matrix::translate(0.0, -gs.leading).mul(&tlm);
                    tm = tlm;
                    if let Some(Object::String(s, _)) = args.first() {
                        self.show(&gs, &mut tm, s)?;
                    }
                }
                "\"" => {
                    gs.word_spacing = n(0);
                    gs.char_spacing = n(1);
                    tlm = Matrix::translate(0.0, -gs.leading).mul(&tlm);
                    tm = tlm;
                    if let Some(Object::String(s, _)) = args.get(2) {
                        self.show(&gs, &mut tm, s)?;
                    }
                }
                "TJ" => {
                    if let Some(Object::Array(items)) = args.first() {
                        for item in items {
                            match item {
                                Object::String(s, _) => self.show(&gs, &mut tm, s)?,
                                Object::Integer(_) | Object::Real(_) => {
                                    let adj = -num(item) / 1000.0 * gs.size * gs.h_scale;
                                    let vertical = gs.font.as_ref().is_some_and(|f| f.vertical);
                                    tm = if vertical {
                                        Matrix::translate(0.0, -num(item) / 1000.0 * gs.size).mul(&tm)
                                    } else {
                                        Matrix::translate(adj, 0.0).mul(&tm)
                                    };
                                }
                                _ => {}
                            }
                        }
                    }
                }
                "BI" | "EI" => self.page_images += 1,
                "Do" => {
                    if let Some(Object::Name(name)) = args.first() {
                        self.form(resources, name, &gs, depth, visiting)?;
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn form(
        &mut self,
        resources: Option<&'a Dictionary>,
        name: &[u8],
        gs: &GState,
        depth: usize,
        visiting: &mut Vec<ObjectId>,
    ) -> Result<(), PageError> {
        if depth >= self.max_depth {
            return Ok(());
        }
        self.page_forms += 1;
        if self.page_forms > PAGE_MAX_FORMS {
            return Err(PageError::Other(format!(
                "the page draws more than {PAGE_MAX_FORMS} forms; the rest was skipped"
            )));
        }
        let Some((id, obj)) = self.resource(resources, b"XObject", name) else {
            return Ok(());
        };
        let Ok(stream) = obj.as_stream() else { return Ok(()) };
        let subtype = stream.dict.get(b"Subtype").and_then(Object::as_name).ok();
        if subtype == Some(b"Image".as_slice()) {
            self.page_images += 1;
        }
        if subtype != Some(b"Form".as_slice()) {
            return Ok(());
        }
        if let Some(id) = id {
            if visiting.contains(&id) {
                return Ok(()); // a form that draws itself
            }
            visiting.push(id);
        }
        let matrix = stream
            .dict
            .get(b"Matrix")
            .ok()
            .map(|o| self.deref(o).1)
            .and_then(|o| o.as_array().ok())
            .filter(|a| a.len() == 6)
            .map(|a| Matrix::new([num(&a[0]), num(&a[1]), num(&a[2]), num(&a[3]), num(&a[4]), num(&a[5])]))
            .unwrap_or(Matrix::IDENTITY);
        let form_resources = stream
            .dict
            .get(b"Resources")
            .ok()
            .map(|o| self.deref(o).1)
            .and_then(|o| o.as_dict().ok())
            .or(resources);
        let result = match self.stream_content(stream) {
            Ok(content) => {
                let inherited = GState {
                    ctm: matrix.mul(&gs.ctm),
                    ..gs.clone()
                };
                self.run_in(&content, form_resources, inherited, depth + 1, visiting)
            }
            Err(PageError::Other(_)) => Ok(()),
            Err(e) => Err(e),
        };
        if id.is_some() {
            visiting.pop();
        }
        result
    }

    /// Draws the normal appearance of each visible annotation (form fields,
    /// stamps, free text), placed on its /Rect, as viewers and pdftotext do.
    pub fn annotations(&mut self, page: &'a Dictionary, visiting: &mut Vec<ObjectId>) -> Result<(), PageError> {
        let Some((_, annots)) = page.get(b"Annots").ok().map(|o| self.deref(o)) else {
            return Ok(());
        };
        let Ok(annots) = annots.as_array() else { return Ok(()) };
        for annot in annots.iter().take(10_000) {
            let (_, annot) = self.deref(annot);
            let Ok(annot) = annot.as_dict() else { continue };
            let flags = annot.get(b"F").ok().map(num).unwrap_or(0.0) as u32;
            let subtype = annot.get(b"Subtype").and_then(Object::as_name).unwrap_or(b"");
            // Hidden (bit 2) and NoView (bit 6) annotations are not shown on
            // screen, and pdftotext renders as a viewer does (not printing).
            if flags & 0b10 != 0 || flags & 0b10_0000 != 0 || subtype == b"Popup" || subtype == b"Link" {
                continue;
            }
            let Some((_, ap)) = annot.get(b"AP").ok().map(|o| self.deref(o)) else {
                continue;
            };
            let Ok(ap) = ap.as_dict() else { continue };
            let Some((mut id, mut normal)) = ap.get(b"N").ok().map(|o| self.deref(o)) else {
                continue;
            };
            if let Ok(states) = normal.as_dict() {
                // Appearance states: pick the one /AS names.
                let Some(state) = annot.get(b"AS").and_then(Object::as_name).ok() else {
                    continue;
                };
                let Some(chosen) = states.get(state).ok().map(|o| self.deref(o)) else {
                    continue;
                };
                (id, normal) = chosen;
            }
            let Ok(stream) = normal.as_stream() else { continue };
            let rect: Vec<f64> = annot
                .get(b"Rect")
                .ok()
                .map(|o| self.deref(o).1)
                .and_then(|o| o.as_array().ok())
                .map(|a| a.iter().map(num).collect())
                .unwrap_or_default();
            let bbox: Vec<f64> = stream
                .dict
                .get(b"BBox")
                .ok()
                .map(|o| self.deref(o).1)
                .and_then(|o| o.as_array().ok())
                .map(|a| a.iter().map(num).collect())
                .unwrap_or_default();
            if rect.len() != 4 || bbox.len() != 4 {
                continue;
            }
            // Map the form's box onto the annotation's rectangle (translation only).
            let place = Matrix::translate(
                rect[0].min(rect[2]) - bbox[0].min(bbox[2]),
                rect[1].min(rect[3]) - bbox[1].min(bbox[3]),
            );
            if let Some(id) = id {
                if visiting.contains(&id) {
                    continue;
                }
                visiting.push(id);
            }
            let resources = stream
                .dict
                .get(b"Resources")
                .ok()
                .map(|o| self.deref(o).1)
                .and_then(|o| o.as_dict().ok());
            let matrix = stream
                .dict
                .get(b"Matrix")
                .ok()
                .map(|o| self.deref(o).1)
                .and_then(|o| o.as_array().ok())
                .filter(|a| a.len() == 6)
                .map(|a| Matrix::new([num(&a[0]), num(&a[1]), num(&a[2]), num(&a[3]), num(&a[4]), num(&a[5])]))
                .unwrap_or(Matrix::IDENTITY);
            let result = match self.stream_content(stream) {
                Ok(content) => self.run(&content, resources, matrix.mul(&place), 1, visiting),
                Err(PageError::Other(_)) => Ok(()),
                Err(e) => Err(e),
            };
            if id.is_some() {
                visiting.pop();
            }
            result?;
        }
        Ok(())
    }

    fn show(&mut self, gs: &GState, tm: &mut Matrix, bytes: &[u8]) -> Result<(), PageError> {
        let Some(font) = gs.font.clone() else {
            if !bytes.is_empty() {
                self.fontless_strings += 1;
            }
            return Ok(());
        };
        // Decode no more codes than the page may still place (4 bytes is
        // the longest code), so one huge string cannot allocate unbounded.
        let room = PAGE_MAX_GLYPHS.saturating_sub(self.page_glyphs).saturating_add(1);
        let bytes = &bytes[..bytes.len().min(room.saturating_mul(4))];
        let text_room = PAGE_MAX_TEXT_BYTES.saturating_sub(self.page_text_bytes);
        for glyph in font.decode(bytes, text_room) {
            if self.glyphs_left == 0 {
                return Err(PageError::Glyphs);
            }
            self.glyphs_left -= 1;
            self.page_glyphs += 1;
            if glyph.text.is_empty() {
                self.page_undecoded += 1;
            }
            self.page_text_bytes += glyph.text.len();
            if self.page_glyphs > PAGE_MAX_GLYPHS || self.page_text_bytes > PAGE_MAX_TEXT_BYTES {
                return Err(PageError::Other(format!(
                    "the page holds more than {PAGE_MAX_GLYPHS} glyphs or {} MiB of text; the rest was skipped",
                    PAGE_MAX_TEXT_BYTES >> 20
                )));
            }
            let m = tm.mul(&gs.ctm);
            let (adv_x, adv_y) = if font.vertical {
                (0.0, -(glyph.width * gs.size + gs.char_spacing))
            } else {
                let w =
                    glyph.width * gs.size + gs.char_spacing + if glyph.is_space_code { gs.word_spacing } else { 0.0 };
                (w * gs.h_scale, 0.0)
            };
            let start = m.apply(0.0, gs.rise);
            let end = m.apply(adv_x, adv_y + gs.rise);
            let (ux, uy) = if font.vertical {
                m.apply(0.0, -1.0)
            } else {
                m.apply(1.0, 0.0)
            };
            let (ox, oy) = m.apply(0.0, 0.0);
            let (dx, dy) = (ux - ox, uy - oy);
            let len = (dx * dx + dy * dy).sqrt();
            let dir = if len > 1e-9 { (dx / len, dy / len) } else { (1.0, 0.0) };
            let (sx, sy) = m.apply(0.0, gs.size * font.em);
            let size = ((sx - ox).powi(2) + (sy - oy).powi(2)).sqrt();
            if !glyph.text.is_empty() && start.0.is_finite() && start.1.is_finite() && size.is_finite() {
                self.placed.push(Placed {
                    text: glyph.text,
                    start,
                    end,
                    dir,
                    size: if size > 0.0 { size } else { 1.0 },
                });
            }
            *tm = Matrix::translate(adv_x, adv_y).mul(tm);
        }
        Ok(())
    }
}

/// The largest number of operands (counting every element of arrays and
/// dictionaries) that one operation of `content` has, by a linear scan that
/// skips strings, comments and inline image data. Used to refuse streams
/// that would make the parser materialise millions of objects.
pub fn max_operands(content: &[u8]) -> usize {
    let is_delim = |b: u8| b.is_ascii_whitespace() || b"()<>[]{}/%".contains(&b);
    let (mut i, mut count, mut max) = (0usize, 0usize, 0usize);
    let mut depth = 0usize;
    while i < content.len() {
        let c = content[i];
        match c {
            b'%' => {
                while i < content.len() && content[i] != b'\n' && content[i] != b'\r' {
                    i += 1;
                }
                continue;
            }
            b'(' => {
                let mut nest = 0usize;
                while i < content.len() {
                    match content[i] {
                        b'\\' => i += 1,
                        b'(' => nest += 1,
                        b')' => {
                            nest -= 1;
                            if nest == 0 {
                                break;
                            }
                        }
                        _ => {}
                    }
                    i += 1;
                }
                count += 1;
            }
            b'<' if content.get(i + 1) == Some(&b'<') => {
                depth += 1;
                i += 1;
            }
            b'>' if content.get(i + 1) == Some(&b'>') => {
                depth = depth.saturating_sub(1);
                i += 1;
            }
            b'<' => {
                while i < content.len() && content[i] != b'>' {
                    i += 1;
                }
                count += 1;
            }
            b'[' => depth += 1,
            b']' => depth = depth.saturating_sub(1),
            c if c.is_ascii_whitespace() => {}
            _ => {
                let start = i;
                while i < content.len() && (i == start || !is_delim(content[i])) {
                    i += 1;
                }
                let word = &content[start..i];
                let keyword = c.is_ascii_alphabetic() || c == b'\'' || c == b'"';
                if keyword && depth == 0 && !matches!(word, b"true" | b"false" | b"null") {
                    if word == b"ID" {
                        // Inline image data runs to the next whitespace-delimited EI.
                        while i + 2 < content.len()
                            && !(content[i].is_ascii_whitespace()
                                && &content[i + 1..i + 3] == b"EI"
                                && content.get(i + 3).is_none_or(|b| b.is_ascii_whitespace()))
                        {
                            i += 1;
                        }
                    }
                    max = max.max(count);
                    count = 0;
                } else {
                    count += 1;
                }
                continue;
            }
        }
        i += 1;
    }
    max.max(count)
}

/// Fraction of the font size above which a gap between glyphs is a word break.
pub const WORD_GAP: f64 = 0.15;

/// Turns placed glyphs (in drawing order) into lines and words.
pub fn layout(glyphs: &[Placed]) -> String {
    let mut out = String::new();
    let mut prev: Option<&Placed> = None;
    let mut recent: Vec<&Placed> = Vec::with_capacity(8);
    for g in glyphs {
        // Text drawn twice in the same place (fake bold, shadows) counts once.
        // "Same place" is well under the glyph's own advance, so "ll" stays two letters.
        let advance = ((g.end.0 - g.start.0).powi(2) + (g.end.1 - g.start.1).powi(2)).sqrt();
        let near = (0.15 * g.size).min(0.5 * advance);
        if recent
            .iter()
            .any(|r| r.text == g.text && (r.start.0 - g.start.0).abs() < near && (r.start.1 - g.start.1).abs() < near)
        {
            continue;
        }
        if recent.len() == 8 {
            recent.remove(0);
        }
        recent.push(g);
        if let Some(p) = prev {
            let (dx, dy) = p.dir;
            let delta = (g.start.0 - p.end.0, g.start.1 - p.end.1);
            let along = delta.0 * dx + delta.1 * dy;
            let perp = -delta.0 * dy + delta.1 * dx;
            let size = p.size.max(g.size).max(0.01);
            let same_dir = p.dir.0 * g.dir.0 + p.dir.1 * g.dir.1 > 0.9;
            let ends_blank = out.ends_with([' ', '\n']);
            if !same_dir || perp.abs() > 0.7 * size || along < -3.0 * size {
                if !out.ends_with('\n') {
                    // Drop a trailing space before the break.
                    while out.ends_with(' ') {
                        out.pop();
                    }
                    out.push('\n');
                }
            } else if (along > WORD_GAP * size || along < -0.5 * size)
                && !ends_blank
                && !g.text.starts_with(char::is_whitespace)
            {
                out.push(' ');
            }
        }
        out.push_str(&g.text);
        prev = Some(g);
    }
    // Collapse runs of spaces, trim line ends, and join words hyphenated
    // across a line break ("docu-" + "ment" → "document"), as pdftotext does.
    let mut clean = String::with_capacity(out.len());
    let mut pending_hyphen = false;
    for line in out.lines() {
        let mut last_space = false;
        let mut l = String::with_capacity(line.len());
        for c in line.trim().chars() {
            let space = c.is_whitespace();
            if space {
                if !last_space {
                    l.push(' ');
                }
            } else {
                l.push(c);
            }
            last_space = space;
        }
        if l.is_empty() {
            continue;
        }
        if pending_hyphen && l.starts_with(char::is_alphabetic) {
            clean.pop(); // the '\n'
            clean.pop(); // the '-'
        }
        let mut tail = l.chars().rev();
        pending_hyphen = tail.next() == Some('-') && tail.next().is_some_and(char::is_alphabetic);
        clean.push_str(&l);
        clean.push('\n');
    }
    clean
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(text: &str, x: f64, y: f64, w: f64) -> Placed {
        Placed {
            text: text.into(),
            start: (x, y),
            end: (x + w, y),
            dir: (1.0, 0.0),
            size: 10.0,
        }
    }

    #[test]
    fn gaps_become_spaces_and_baselines_lines() {
        let glyphs = vec![
            g("H", 0.0, 100.0, 6.0),
            g("i", 6.2, 100.0, 3.0),
            g("y", 12.5, 100.0, 5.0), // 3.3 gap > 1.5 → space
            g("o", 17.5, 100.0, 5.0),
            g("u", 0.0, 88.0, 5.0), // next line
        ];
        assert_eq!(layout(&glyphs), "Hi yo\nu\n");
    }

    #[test]
    fn words_hyphenated_across_lines_are_joined() {
        let glyphs = vec![
            g("docu-", 0.0, 100.0, 25.0),
            g("ment", 0.0, 88.0, 20.0),
            g("x-", 0.0, 76.0, 10.0),
            g("1", 0.0, 64.0, 5.0),
        ];
        assert_eq!(layout(&glyphs), "document\nx-\n1\n");
    }

    #[test]
    fn overprinted_text_counts_once() {
        let glyphs = vec![g("A", 0.0, 0.0, 6.0), g("A", 0.3, 0.0, 6.0), g("B", 6.1, 0.0, 6.0)];
        assert_eq!(layout(&glyphs), "AB\n");
        // Narrow repeated letters are not overprints.
        let glyphs = vec![g("l", 0.0, 0.0, 2.2), g("l", 2.2, 0.0, 2.2), g("o", 4.4, 0.0, 5.0)];
        assert_eq!(layout(&glyphs), "llo\n");
    }

    #[test]
    fn operands_are_counted_per_operation() {
        assert_eq!(max_operands(b"1 0 0 1 5 5 cm BT /F1 12 Tf ET"), 6);
        // Array and dictionary elements count one by one; strings once.
        assert_eq!(max_operands(b"[(a b c) -250 (d)] TJ"), 3);
        assert_eq!(max_operands(b"/P << /MCID 3 /Alt (x [ y) >> BDC"), 5);
        // Inline image data, comments and hex strings are skipped.
        assert_eq!(
            max_operands(b"BI /W 1 /H 1 ID [[[ 1 2 3 ] EI Q % 1 2 3 4 5 6 7 8\n<41 42> Tj"),
            4
        );
        let wide = "1 ".repeat(5000) + "Td";
        assert_eq!(max_operands(wide.as_bytes()), 5000);
    }

    #[test]
    fn rotated_text_uses_its_own_baseline() {
        // Text running up the page (rotated 90°).
        let up = |t: &str, y: f64| Placed {
            text: t.into(),
            start: (50.0, y),
            end: (50.0, y + 5.0),
            dir: (0.0, 1.0),
            size: 10.0,
        };
        assert_eq!(layout(&[up("a", 0.0), up("b", 5.0), up("c", 13.0)]), "ab c\n");
    }
}
