//! Word (DOCX), OpenDocument text (ODT), PowerPoint (PPTX) and EPUB files:
//! ZIP archives of XML. Each is read in its reading order (paragraphs,
//! headings, list items and table cells as lines; slides with their speaker
//! notes; chapters in spine order) as pages of text, one per slide or
//! chapter.
//!
//! Everything is bounded before it is trusted: the number of entries, the
//! size each entry and all of them together inflate to (measured while
//! inflating, not taken from the headers), the inflation ratio, the depth of
//! XML nesting; and no XML entity is ever expanded (a document that declares
//! entities is refused).

use std::borrow::Cow;
use std::io::{Cursor, Read};

use quick_xml::events::{BytesStart, Event};

use super::{Extracted, Limits};
use crate::units::human_bytes;

/// The office and e-book formats we read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Docx,
    Odt,
    Pptx,
    Epub,
}

impl Format {
    pub fn kind(self) -> &'static str {
        match self {
            Format::Docx => "docx",
            Format::Odt => "odt",
            Format::Pptx => "pptx",
            Format::Epub => "epub",
        }
    }

    pub fn mime(self) -> &'static str {
        match self {
            Format::Docx => "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
            Format::Odt => "application/vnd.oasis.opendocument.text",
            Format::Pptx => "application/vnd.openxmlformats-officedocument.presentationml.presentation",
            Format::Epub => "application/epub+zip",
        }
    }

    /// How the user would name it ("a Word document").
    pub fn words(self) -> &'static str {
        match self {
            Format::Docx => "a Word document",
            Format::Odt => "an OpenDocument text",
            Format::Pptx => "a PowerPoint presentation",
            Format::Epub => "an EPUB e-book",
        }
    }
}

/// Entries an archive may list.
pub const MAX_ENTRIES: usize = 10_000;
/// The ratio of inflated to stored size above which an entry (of more than
/// a mebibyte inflated) is taken for a zip bomb.
pub const MAX_RATIO: u64 = 100;
/// Depth of XML nesting we follow.
pub const MAX_XML_DEPTH: usize = 256;

/// Which format a ZIP archive holds, from its entry names (and the
/// OpenDocument/EPUB `mimetype` entry); `None` for any other archive.
pub fn detect(bytes: &[u8]) -> Option<Format> {
    if !bytes.starts_with(b"PK\x03\x04") {
        return None;
    }
    let mut zip = zip::ZipArchive::new(Cursor::new(bytes)).ok()?;
    let has = |zip: &zip::ZipArchive<Cursor<&[u8]>>, name: &str| zip.index_for_name(name).is_some();
    if has(&zip, "word/document.xml") {
        return Some(Format::Docx);
    }
    if has(&zip, "ppt/presentation.xml") {
        return Some(Format::Pptx);
    }
    let mut mimetype = String::new();
    zip.by_name("mimetype")
        .ok()?
        .take(100)
        .read_to_string(&mut mimetype)
        .ok()?;
    match mimetype.trim() {
        "application/vnd.oasis.opendocument.text" => Some(Format::Odt),
        "application/epub+zip" => Some(Format::Epub),
        _ => None,
    }
}

/// Reads the entries of an archive within the limits.
struct Archive<'a> {
    zip: zip::ZipArchive<Cursor<&'a [u8]>>,
    /// Bytes inflated so far, over all entries.
    inflated: u64,
    max_entry: u64,
    max_total: u64,
}

impl<'a> Archive<'a> {
    fn open(bytes: &'a [u8], limits: &Limits) -> Result<Self, String> {
        let zip = zip::ZipArchive::new(Cursor::new(bytes))
            .map_err(|e| format!("the file is damaged: its ZIP structure cannot be read ({e})"))?;
        if zip.len() > MAX_ENTRIES {
            return Err(format!(
                "the file holds {} ZIP entries, more than the limit of {MAX_ENTRIES}",
                zip.len()
            ));
        }
        Ok(Archive {
            zip,
            inflated: 0,
            max_entry: limits.max_stream_bytes.max(1 << 20),
            max_total: limits.max_decompressed_bytes,
        })
    }

    /// The inflated bytes of entry `name`, or `None` when there is none.
    fn read(&mut self, name: &str) -> Result<Option<Vec<u8>>, String> {
        let name = name.trim_start_matches('/');
        let mut entry = match self.zip.by_name(name) {
            Ok(entry) => entry,
            Err(zip::result::ZipError::FileNotFound) => return Ok(None),
            Err(e) => return Err(format!("the file is damaged: its entry “{name}” cannot be read ({e})")),
        };
        let stored = entry.compressed_size().max(1);
        let room = self.max_entry.min(self.max_total.saturating_sub(self.inflated));
        let mut out = Vec::new();
        (&mut entry)
            .take(room + 1)
            .read_to_end(&mut out)
            .map_err(|e| format!("the file is damaged: its entry “{name}” cannot be inflated ({e})"))?;
        let len = out.len() as u64;
        if len > room {
            return Err(if room == self.max_entry {
                format!(
                    "its entry “{name}” inflates to more than {}, the limit for one part of a document",
                    human_bytes(self.max_entry)
                )
            } else {
                format!(
                    "its entries inflate to more than {} together, the limit for one document",
                    human_bytes(self.max_total)
                )
            });
        }
        if len > 1 << 20 && len / stored > MAX_RATIO {
            return Err(format!(
                "its entry “{name}” is compressed more than {MAX_RATIO}:1 ({} to {}), which is how a zip bomb looks",
                human_bytes(stored),
                human_bytes(len)
            ));
        }
        self.inflated += len;
        Ok(Some(out))
    }

    fn require(&mut self, name: &str, what: &str) -> Result<Vec<u8>, String> {
        self.read(name)?
            .ok_or_else(|| format!("the file is damaged: {what} has no “{name}”"))
    }
}

/// One step of an XML document, with the element's local name (no prefix).
enum Step<'x> {
    Open(&'x [u8], &'x BytesStart<'x>),
    /// An empty element (`<w:tab/>`): opened and closed at once.
    Empty(&'x [u8], &'x BytesStart<'x>),
    Close(&'x [u8]),
    Text(Cow<'x, str>),
}

/// Walks an XML document within the depth limit, refusing entity
/// declarations and unknown entities (nothing is ever expanded).
fn walk(xml: &[u8], part: &str, mut on: impl FnMut(Step<'_>)) -> Result<(), String> {
    let mut reader = quick_xml::Reader::from_reader(xml);
    reader.config_mut().trim_text(false);
    let mut depth = 0usize;
    let damaged =
        |e: &dyn std::fmt::Display| format!("the file is damaged: its part “{part}” is not well-formed XML ({e})");
    loop {
        match reader.read_event().map_err(|e| damaged(&e))? {
            Event::Start(e) => {
                depth += 1;
                if depth > MAX_XML_DEPTH {
                    return Err(format!(
                        "its part “{part}” nests XML more than {MAX_XML_DEPTH} levels deep"
                    ));
                }
                let name = e.local_name();
                on(Step::Open(name.as_ref(), &e));
            }
            Event::Empty(e) => {
                let name = e.local_name();
                on(Step::Empty(name.as_ref(), &e));
            }
            Event::End(e) => {
                depth = depth.saturating_sub(1);
                let name = e.local_name();
                on(Step::Close(name.as_ref()));
            }
            Event::Text(t) => {
                let text = t
                    .unescape()
                    .map_err(|e| format!("its part “{part}” uses an XML entity we do not expand ({e})"))?;
                on(Step::Text(text));
            }
            Event::CData(t) => {
                on(Step::Text(String::from_utf8_lossy(&t.into_inner()).into_owned().into()));
            }
            Event::DocType(d) if declares_entities(&d) => return Err(entity_refusal(part)),
            Event::Eof => return Ok(()),
            _ => {}
        }
    }
}

fn declares_entities(xml: &[u8]) -> bool {
    xml.windows(8).any(|w| w.eq_ignore_ascii_case(b"<!ENTITY"))
}

fn entity_refusal(part: &str) -> String {
    format!("its part “{part}” declares XML entities, which we never expand (that is how an entity bomb works)")
}

fn attr(e: &BytesStart<'_>, local: &[u8]) -> Option<String> {
    e.attributes()
        .flatten()
        .find(|a| a.key.local_name().as_ref() == local)
        .and_then(|a| a.unescape_value().ok().map(|v| v.into_owned()))
}

/// Builds lines of text: paragraphs end lines, cells are separated by tabs.
#[derive(Default)]
struct Lines {
    out: String,
    /// Depth of table cells we are in: a paragraph inside a cell does not
    /// end the row's line.
    cells: usize,
}

impl Lines {
    fn open_cell(&mut self) {
        self.cells += 1;
    }
    fn close_cell(&mut self) {
        self.cells = self.cells.saturating_sub(1);
        let trimmed = self.out.trim_end_matches([' ', '\t']).len();
        self.out.truncate(trimmed);
        self.cell();
    }
    /// The end of a paragraph: a new line, or a space inside a cell.
    fn end_paragraph(&mut self) {
        if self.cells > 0 {
            if !self.out.ends_with([' ', '\t', '\n']) && !self.out.is_empty() {
                self.out.push(' ');
            }
        } else {
            self.end_line();
        }
    }
    fn push(&mut self, s: &str) {
        self.out.push_str(s);
    }
    fn end_line(&mut self) {
        let trimmed = self.out.trim_end_matches([' ', '\t']).len();
        self.out.truncate(trimmed);
        if !self.out.is_empty() && !self.out.ends_with('\n') {
            self.out.push('\n');
        }
    }
    fn cell(&mut self) {
        if !self.out.is_empty() && !self.out.ends_with(['\n', '\t']) {
            self.out.push('\t');
        }
    }
    fn finish(mut self) -> String {
        self.end_line();
        self.out
    }
}

/// Office Open XML text, of WordprocessingML (`word`: `w:t` runs, tabs,
/// breaks, list items) or DrawingML (slides and notes: `a:t` runs and
/// breaks; its `a:tab` elements are tab stops, not tabs): paragraphs and
/// table rows as lines, table cells separated by tabs.
fn ooxml_text(xml: &[u8], part: &str, word: bool) -> Result<String, String> {
    let mut lines = Lines::default();
    let mut in_text = false;
    walk(xml, part, |step| match step {
        Step::Open(b"t", _) => in_text = true,
        Step::Close(b"t") => in_text = false,
        Step::Text(t) if in_text => lines.push(&t),
        Step::Empty(b"tab", _) | Step::Open(b"tab", _) if word => lines.push("\t"),
        // DrawingML breaks carry run properties: <a:br><a:rPr/></a:br>.
        Step::Empty(b"br" | b"cr", _) | Step::Open(b"br" | b"cr", _) => lines.push("\n"),
        Step::Empty(b"numPr", _) | Step::Open(b"numPr", _) if word => lines.push("• "),
        Step::Close(b"p") => lines.end_paragraph(),
        Step::Open(b"tc", _) => lines.open_cell(),
        Step::Close(b"tc") => lines.close_cell(),
        Step::Close(b"tr") => lines.end_line(),
        _ => {}
    })?;
    Ok(lines.finish())
}

/// OpenDocument text: paragraphs and headings as lines, `text:s` spaces,
/// tabs, line breaks, list items, table cells by tabs.
fn opendocument_text(xml: &[u8], part: &str) -> Result<String, String> {
    let mut lines = Lines::default();
    let mut in_paragraph = 0usize;
    let mut in_body = false;
    walk(xml, part, |step| match step {
        Step::Open(b"text", _) => in_body = true,
        Step::Close(b"text") => in_body = false,
        Step::Open(b"p" | b"h", _) if in_body => in_paragraph += 1,
        Step::Close(b"p" | b"h") if in_body => {
            in_paragraph = in_paragraph.saturating_sub(1);
            lines.end_paragraph();
        }
        Step::Text(t) if in_paragraph > 0 => lines.push(&t),
        Step::Empty(b"s", e) if in_paragraph > 0 => {
            let n: usize = attr(e, b"c").and_then(|c| c.parse().ok()).unwrap_or(1);
            lines.push(&" ".repeat(n.min(100)));
        }
        Step::Empty(b"tab", _) if in_paragraph > 0 => lines.push("\t"),
        Step::Empty(b"line-break", _) if in_paragraph > 0 => lines.push("\n"),
        Step::Open(b"list-item", _) if in_body => lines.push("• "),
        Step::Open(b"table-cell", _) if in_body => lines.open_cell(),
        Step::Close(b"table-cell") if in_body => lines.close_cell(),
        Step::Close(b"table-row") if in_body => lines.end_line(),
        _ => {}
    })?;
    Ok(lines.finish())
}

/// The targets of an OPC relationships part, by id, with their types.
fn relationships(xml: &[u8], part: &str) -> Result<Vec<(String, String, String)>, String> {
    let mut rels = Vec::new();
    walk(xml, part, |step| {
        if let Step::Empty(b"Relationship", e) | Step::Open(b"Relationship", e) = step {
            if let (Some(id), Some(target)) = (attr(e, b"Id"), attr(e, b"Target")) {
                rels.push((id, target, attr(e, b"Type").unwrap_or_default()));
            }
        }
    })?;
    Ok(rels)
}

/// `target` relative to the folder of `base` ("ppt/slides/slide1.xml" +
/// "../notesSlides/notesSlide1.xml" → "ppt/notesSlides/notesSlide1.xml").
fn resolve(base: &str, target: &str) -> String {
    if let Some(absolute) = target.strip_prefix('/') {
        return absolute.to_string();
    }
    let mut parts: Vec<&str> = base.split('/').collect();
    parts.pop();
    for piece in target.split('/') {
        match piece {
            ".." => {
                parts.pop();
            }
            "." | "" => {}
            p => parts.push(p),
        }
    }
    parts.join("/")
}

/// The relationships part of `part` ("ppt/slides/slide1.xml" →
/// "ppt/slides/_rels/slide1.xml.rels").
fn rels_of(part: &str) -> String {
    match part.rsplit_once('/') {
        Some((dir, file)) => format!("{dir}/_rels/{file}.rels"),
        None => format!("_rels/{part}.rels"),
    }
}

fn docx(archive: &mut Archive<'_>) -> Result<Vec<String>, String> {
    let body = archive.require("word/document.xml", "the Word document")?;
    let mut text = ooxml_text(&body, "word/document.xml", true)?;
    // Footnotes and endnotes follow the body, as a reader meets them.
    for part in ["word/footnotes.xml", "word/endnotes.xml"] {
        if let Some(xml) = archive.read(part)? {
            let notes = ooxml_text(&xml, part, true)?;
            if !notes.trim().is_empty() {
                text.push('\n');
                text.push_str(&notes);
            }
        }
    }
    Ok(vec![text])
}

fn odt(archive: &mut Archive<'_>) -> Result<Vec<String>, String> {
    let content = archive.require("content.xml", "the OpenDocument text")?;
    Ok(vec![opendocument_text(&content, "content.xml")?])
}

/// Slides in presentation order, each with its speaker notes after it.
fn pptx(archive: &mut Archive<'_>) -> Result<Vec<String>, String> {
    let presentation = archive.require("ppt/presentation.xml", "the presentation")?;
    let mut order = Vec::new();
    walk(&presentation, "ppt/presentation.xml", |step| {
        if let Step::Empty(b"sldId", e) | Step::Open(b"sldId", e) = step {
            if let Some(id) = attr_with_prefix(e, b"r", b"id") {
                order.push(id);
            }
        }
    })?;
    let rels_part = rels_of("ppt/presentation.xml");
    let rels = relationships(&archive.require(&rels_part, "the presentation")?, &rels_part)?;
    let mut slides = Vec::new();
    for id in order {
        let Some((_, target, _)) = rels.iter().find(|(rid, _, _)| *rid == id) else {
            continue;
        };
        let part = resolve("ppt/presentation.xml", target);
        let Some(xml) = archive.read(&part)? else {
            continue;
        };
        let mut text = ooxml_text(&xml, &part, false)?;
        let slide_rels = rels_of(&part);
        if let Some(rels_xml) = archive.read(&slide_rels)? {
            for (_, target, kind) in relationships(&rels_xml, &slide_rels)? {
                if kind.ends_with("/notesSlide") {
                    let notes_part = resolve(&part, &target);
                    if let Some(notes) = archive.read(&notes_part)? {
                        let notes = ooxml_text(&notes, &notes_part, false)?;
                        // The notes page repeats the slide number; keep its prose.
                        let notes: Vec<&str> = notes.lines().filter(|l| l.trim().parse::<u32>().is_err()).collect();
                        if !notes.is_empty() {
                            text.push_str("\nNotes:\n");
                            text.push_str(&notes.join("\n"));
                            text.push('\n');
                        }
                    }
                }
            }
        }
        slides.push(text);
    }
    Ok(slides)
}

/// The value of attribute `prefix:local` (`r:id`: the relationship id,
/// where a bare `id` is the slide's number).
fn attr_with_prefix(e: &BytesStart<'_>, prefix: &[u8], local: &[u8]) -> Option<String> {
    e.attributes()
        .flatten()
        .find(|a| {
            let key = a.key.as_ref();
            key.len() == prefix.len() + 1 + local.len()
                && key.starts_with(prefix)
                && key[prefix.len()] == b':'
                && key.ends_with(local)
        })
        .and_then(|a| a.unescape_value().ok().map(|v| v.into_owned()))
}

/// Chapters in spine order, as the package document (OPF) lists them.
fn epub(archive: &mut Archive<'_>) -> Result<Vec<String>, String> {
    let container = archive.require("META-INF/container.xml", "the EPUB")?;
    let mut opf_path = None;
    walk(&container, "META-INF/container.xml", |step| {
        if let Step::Empty(b"rootfile", e) | Step::Open(b"rootfile", e) = step {
            opf_path = opf_path.take().or_else(|| attr(e, b"full-path"));
        }
    })?;
    let opf_path = opf_path.ok_or("the file is damaged: the EPUB names no package document")?;
    let opf = archive.require(&opf_path, "the EPUB")?;
    let mut manifest: Vec<(String, String, String)> = Vec::new();
    let mut spine: Vec<String> = Vec::new();
    walk(&opf, &opf_path, |step| match step {
        Step::Empty(b"item", e) | Step::Open(b"item", e) => {
            if let (Some(id), Some(href)) = (attr(e, b"id"), attr(e, b"href")) {
                manifest.push((id, href, attr(e, b"media-type").unwrap_or_default()));
            }
        }
        Step::Empty(b"itemref", e) | Step::Open(b"itemref", e) => {
            if let Some(id) = attr(e, b"idref") {
                spine.push(id);
            }
        }
        _ => {}
    })?;
    let mut chapters = Vec::new();
    for id in spine {
        let Some((_, href, media)) = manifest.iter().find(|(mid, _, _)| *mid == id) else {
            continue;
        };
        if !media.contains("html") {
            continue;
        }
        let href = percent_decode(href.split('#').next().unwrap_or(href));
        let part = resolve(&opf_path, &href);
        let Some(xhtml) = archive.read(&part)? else {
            continue;
        };
        // Chapters are read as HTML, which tolerates what real books have
        // (tags that do not close); entity declarations are still refused.
        if declares_entities(&xhtml) {
            return Err(entity_refusal(&part));
        }
        let text = super::text::html_to_text(&String::from_utf8_lossy(&xhtml));
        if !text.trim().is_empty() {
            chapters.push(text);
        }
    }
    Ok(chapters)
}

/// `%20` and friends in an EPUB manifest's hrefs.
fn percent_decode(s: &str) -> String {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The text of an office document or e-book: one page per slide or chapter
/// (one page for a Word or OpenDocument text).
pub fn extract(bytes: &[u8], format: Format, limits: &Limits) -> Result<Extracted, String> {
    let mut archive = Archive::open(bytes, limits)?;
    let pages = match format {
        Format::Docx => docx(&mut archive)?,
        Format::Odt => odt(&mut archive)?,
        Format::Pptx => pptx(&mut archive)?,
        Format::Epub => epub(&mut archive)?,
    };
    let mut text = String::new();
    let mut page_starts = Vec::with_capacity(pages.len());
    let mut chars = 0usize;
    for page in &pages {
        page_starts.push(text.len());
        let page = page.trim_end();
        chars += page.chars().count() + 1;
        text.push_str(page);
        text.push('\n');
        if chars > limits.max_chars {
            return Err(format!(
                "the document's text is longer than the limit of {} characters",
                limits.max_chars
            ));
        }
    }
    let paged = matches!(format, Format::Pptx | Format::Epub);
    Ok(Extracted {
        text,
        kind: format.kind().into(),
        pages: paged.then_some(pages.len() as u32),
        page_starts: if paged { page_starts } else { Vec::new() },
        encoding: None,
        page_errors: Vec::new(),
        warnings: Vec::new(),
        ..Extracted::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn limits() -> Limits {
        Limits {
            max_pages: 10_000,
            max_decompressed_bytes: 512 << 20,
            max_stream_bytes: 32 << 20,
            max_objects: 1_000_000,
            max_depth: 64,
            max_chars: 10_000_000,
            ocr: false,
        }
    }

    fn data(name: &str) -> Vec<u8> {
        std::fs::read(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/data/office")
                .join(name),
        )
        .unwrap()
    }

    /// Recall of the reference converter's words (tokens with a letter or
    /// digit: pandoc's list dashes and table rules are not words).
    fn recall(name: &str) -> (f64, Extracted) {
        let bytes = data(name);
        let format = detect(&bytes).unwrap_or_else(|| panic!("{name} not recognised"));
        let ex = extract(&bytes, format, &limits()).unwrap_or_else(|e| panic!("{name}: {e}"));
        let reference = String::from_utf8(data(&format!("{name}.reference.txt"))).unwrap();
        let words: Vec<&str> = reference
            .split_whitespace()
            .filter(|w| w.chars().any(char::is_alphanumeric))
            .collect();
        (pdftext::token_recall(&ex.text, &words.join(" ")), ex)
    }

    #[test]
    fn real_documents_read_as_their_reference_converter_reads_them() {
        for name in [
            "blk-paras-and-tables.docx",
            "tbl-cell-access.docx",
            "par-hlink-frags.docx",
            "api-for-odfpy.odt",
            "simpletable.odt",
            "twolevellist.odt",
            "two-texts.epub",
            "ph-inherit-props.pptx",
            "txt-text.pptx",
        ] {
            let (r, _) = recall(name);
            eprintln!("FIGURE {name}: word recall {r:.3}");
            assert!(r >= 0.95, "{name}: recall {r}");
        }
    }

    #[test]
    fn slides_and_chapters_are_pages_in_order_with_notes() {
        let (_, ex) = recall("ph-inherit-props.pptx");
        assert_eq!(ex.kind, "pptx");
        assert_eq!(ex.pages, Some(2));
        let first = &ex.text[ex.page_starts[0]..ex.page_starts[1]];
        assert!(
            first.contains("Title Text") && first.contains("Notes in inherited position and size."),
            "{first}"
        );
        assert!(ex.text[ex.page_starts[1]..].contains("Notes in modified position and size."));
        let (_, ex) = recall("two-texts.epub");
        let manifesto = ex.text.find("The Debian Manifesto").unwrap();
        let russian = ex.text.find("Диссертация").unwrap();
        assert!(manifesto < russian, "spine order");
        assert!(ex.page_at(russian).unwrap() > ex.page_at(manifesto).unwrap());
    }

    #[test]
    fn table_cells_and_list_items_keep_their_reading_order() {
        let (_, ex) = recall("simpletable.odt");
        assert!(
            ex.text.lines().any(|l| l.contains('\t')),
            "cells of a row on one line: {}",
            ex.text
        );
        let (_, ex) = recall("twolevellist.odt");
        assert!(
            ex.text.lines().filter(|l| l.starts_with("• ")).count() >= 3,
            "{}",
            ex.text
        );
    }

    fn zip_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut out = Cursor::new(Vec::new());
        let mut zip = zip::ZipWriter::new(&mut out);
        let options = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
        for (name, data) in entries {
            zip.start_file(*name, options).unwrap();
            zip.write_all(data).unwrap();
        }
        zip.finish().unwrap();
        out.into_inner()
    }

    fn docx_with(document: &[u8]) -> Vec<u8> {
        zip_of(&[("[Content_Types].xml", b"<Types/>"), ("word/document.xml", document)])
    }

    #[test]
    fn a_zip_bomb_is_refused_in_words() {
        // 64 MiB of zeros deflate to about 64 KiB.
        let bomb = docx_with(&vec![0u8; 64 << 20]);
        assert!(bomb.len() < 200_000);
        let e = extract(&bomb, Format::Docx, &limits()).unwrap_err();
        assert!(e.contains("“word/document.xml” inflates to more than 32 MiB"), "{e}");
        // Smaller than the limit but inflating 1000:1.
        let ratio = docx_with(&vec![b' '; 8 << 20]);
        let e = extract(&ratio, Format::Docx, &limits()).unwrap_err();
        assert!(
            e.contains("compressed more than 100:1") && e.contains("zip bomb"),
            "{e}"
        );
    }

    #[test]
    fn xml_entities_are_never_expanded() {
        let laughs = br#"<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]><w:document xmlns:w="x"><w:body><w:p><w:r><w:t>&lol2;</w:t></w:r></w:p></w:body></w:document>"#;
        let e = extract(&docx_with(laughs), Format::Docx, &limits()).unwrap_err();
        assert!(e.contains("declares XML entities"), "{e}");
        // An entity that is not XML's own is not expanded either.
        let external =
            br#"<w:document xmlns:w="x"><w:body><w:p><w:r><w:t>&secret;</w:t></w:r></w:p></w:body></w:document>"#;
        let e = extract(&docx_with(external), Format::Docx, &limits()).unwrap_err();
        assert!(e.contains("entity we do not expand"), "{e}");
        // XML's own entities are text.
        let plain = br#"<w:document xmlns:w="x"><w:body><w:p><w:r><w:t>A &amp; B &lt;C&gt; &#x44;</w:t></w:r></w:p></w:body></w:document>"#;
        assert_eq!(
            extract(&docx_with(plain), Format::Docx, &limits()).unwrap().text,
            "A & B <C> D\n"
        );
    }

    #[test]
    fn deep_nesting_and_too_many_entries_are_refused() {
        let mut deep = b"<w:document xmlns:w=\"x\">".to_vec();
        deep.extend(b"<w:p>".repeat(10_000));
        let e = extract(&docx_with(&deep), Format::Docx, &limits()).unwrap_err();
        assert!(e.contains("nests XML more than 256 levels deep"), "{e}");
        let names: Vec<String> = (0..=MAX_ENTRIES).map(|i| format!("f{i}")).collect();
        let mut entries: Vec<(&str, &[u8])> = names.iter().map(|n| (n.as_str(), &b""[..])).collect();
        entries.push(("word/document.xml", b"<w:document/>"));
        let e = extract(&zip_of(&entries), Format::Docx, &limits()).unwrap_err();
        assert!(e.contains("more than the limit of 10000"), "{e}");
    }

    #[test]
    fn formats_are_told_from_the_archive_not_the_name() {
        assert_eq!(detect(&docx_with(b"<w:document/>")), Some(Format::Docx));
        let odt = zip_of(&[
            ("mimetype", b"application/vnd.oasis.opendocument.text"),
            ("content.xml", b"<x/>"),
        ]);
        assert_eq!(detect(&odt), Some(Format::Odt));
        let epub = zip_of(&[("mimetype", b"application/epub+zip")]);
        assert_eq!(detect(&epub), Some(Format::Epub));
        assert_eq!(detect(&zip_of(&[("notes.txt", b"hello")])), None);
        assert_eq!(detect(b"PK\x03\x04 not really a zip"), None);
    }
}
