//! What a file really is, judged from its bytes first and its name or
//! declared type only where the bytes cannot tell (HTML vs Markdown vs text).

/// The kind of content, as far as extraction cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Pdf,
    Html,
    Markdown,
    Text,
    /// Word, OpenDocument text, PowerPoint or EPUB (a ZIP archive of XML).
    Office(super::office::Format),
    /// A PNG, JPEG, TIFF or WebP image: read by OCR.
    Image(&'static str),
    /// A format we do not read, described for the user ("a PNG image").
    Unsupported(&'static str),
    /// Named or declared a PDF, but without a PDF header: what it looks like.
    NotPdf(&'static str),
}

impl Kind {
    pub fn mime(self) -> &'static str {
        match self {
            Kind::Pdf => "application/pdf",
            Kind::Html => "text/html",
            Kind::Markdown => "text/markdown",
            Kind::Text => "text/plain",
            Kind::Office(format) => format.mime(),
            Kind::Image("a PNG image") => "image/png",
            Kind::Image("a JPEG image") => "image/jpeg",
            Kind::Image("a TIFF image") => "image/tiff",
            Kind::Image(_) => "image/webp",
            Kind::Unsupported(_) | Kind::NotPdf(_) => "application/octet-stream",
        }
    }
}

fn has_ext(name: &str, exts: &[&str]) -> bool {
    let lower = name.to_ascii_lowercase();
    exts.iter().any(|e| lower.ends_with(e))
}

/// What the uploader said the file is, in words, when that says anything.
pub fn claimed_kind(name: &str, declared_type: &str) -> Option<&'static str> {
    let declared = declared_type.to_ascii_lowercase();
    if has_ext(name, &[".pdf"]) || declared.contains("pdf") {
        Some("a PDF")
    } else if has_ext(name, &[".docx"]) || declared.contains("wordprocessingml") {
        Some("a Word document")
    } else if has_ext(name, &[".odt"]) || declared.contains("opendocument.text") {
        Some("an OpenDocument text")
    } else if has_ext(name, &[".pptx"]) || declared.contains("presentationml") {
        Some("a PowerPoint presentation")
    } else if has_ext(name, &[".epub"]) || declared.contains("epub") {
        Some("an EPUB e-book")
    } else if has_ext(name, &[".html", ".htm"]) || declared.contains("html") {
        Some("an HTML page")
    } else if has_ext(name, &[".md", ".markdown"]) || declared.contains("markdown") {
        Some("a Markdown file")
    } else if has_ext(name, &[".txt"]) || declared.starts_with("text/") {
        Some("a text file")
    } else {
        None
    }
}

/// Binary signatures we recognise, with the words we use for them.
fn binary_signature(b: &[u8]) -> Option<&'static str> {
    let sigs: &[(&[u8], &str)] = &[
        (b"\x89PNG\r\n\x1a\n", "a PNG image"),
        (b"\xff\xd8\xff", "a JPEG image"),
        (b"GIF87a", "a GIF image"),
        (b"GIF89a", "a GIF image"),
        (b"II*\x00", "a TIFF image"),
        (b"MM\x00*", "a TIFF image"),
        (b"BM", "a BMP image"),
        (
            b"PK\x03\x04",
            "a ZIP archive that is not a Word, OpenDocument text, PowerPoint or EPUB file",
        ),
        (
            b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1",
            "an old Microsoft Office document (.doc, .xls, .ppt: save it as .docx or .pptx)",
        ),
        (b"\x1f\x8b", "a gzip-compressed file"),
        (b"Rar!\x1a\x07", "a RAR archive"),
        (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive"),
        (b"\x7fELF", "a program (ELF executable)"),
        (b"MZ", "a Windows program"),
        (b"ID3", "an MP3 audio file"),
        (b"OggS", "an Ogg media file"),
        (b"fLaC", "a FLAC audio file"),
        (b"%!PS", "a PostScript file"),
        (b"{\\rtf", "an RTF document"),
        (b"SQLite format 3\x00", "an SQLite database"),
    ];
    for (sig, what) in sigs {
        if b.starts_with(sig) {
            return Some(what);
        }
    }
    if b.len() >= 12 && &b[0..4] == b"RIFF" {
        return Some(match &b[8..12] {
            b"WEBP" => "a WebP image",
            b"WAVE" => "a WAV audio file",
            b"AVI " => "an AVI video",
            _ => "a RIFF media file",
        });
    }
    if b.len() >= 12 && &b[4..8] == b"ftyp" {
        return Some("an MP4/HEIC media file");
    }
    None
}

fn looks_like_html(b: &[u8]) -> bool {
    let head: Vec<u8> = b.iter().take(2048).map(|c| c.to_ascii_lowercase()).collect();
    let head = String::from_utf8_lossy(&head);
    let trimmed = head.trim_start_matches('\u{feff}').trim_start();
    trimmed.starts_with("<!doctype html")
        || trimmed.starts_with("<html")
        || (trimmed.starts_with('<') && (head.contains("<body") || head.contains("<head")))
}

/// Heuristic: text files have no NUL bytes outside UTF-16.
fn looks_binary(b: &[u8]) -> bool {
    let sample = &b[..b.len().min(8192)];
    if sample.starts_with(b"\xff\xfe") || sample.starts_with(b"\xfe\xff") {
        return false;
    }
    if super::text::utf16_without_bom(b).is_some() {
        return false;
    }
    let nuls = sample.iter().filter(|&&c| c == 0).count();
    let controls = sample
        .iter()
        .filter(|&&c| c < 0x09 || (0x0e..0x20).contains(&c) && c != 0x1b)
        .count();
    nuls > 0 || controls * 10 > sample.len()
}

/// Decides what the bytes are. `name` and `declared_type` only break ties
/// between text formats.
pub fn sniff(bytes: &[u8], name: &str, declared_type: &str) -> Kind {
    // Readers accept "%PDF-" within the first KiB (some files carry junk first).
    let head = &bytes[..bytes.len().min(1024)];
    if head.windows(5).any(|w| w == b"%PDF-") {
        return Kind::Pdf;
    }
    if let Some(format) = super::office::detect(bytes) {
        return Kind::Office(format);
    }
    if let Some(what) = binary_signature(bytes) {
        if matches!(what, "a PNG image" | "a JPEG image" | "a TIFF image" | "a WebP image") {
            return Kind::Image(what);
        }
        return Kind::Unsupported(what);
    }
    // Whatever else it is, a file said to be a PDF that is not one is not
    // read as text (64 KiB of 0xFF bytes named scan.pdf is no document).
    if claimed_kind(name, declared_type) == Some("a PDF") {
        let head = &bytes[..bytes.len().min(64 << 10)];
        let text = super::text::read_text(head, None);
        return Kind::NotPdf(
            if looks_binary(bytes) || super::plausible::implausible(&text.text, text.guessed).is_some() {
                "binary data of an unknown kind"
            } else {
                "text"
            },
        );
    }
    if looks_binary(bytes) {
        return Kind::Unsupported("a binary file of an unknown kind");
    }
    let declared = declared_type.to_ascii_lowercase();
    if has_ext(name, &[".html", ".htm", ".xhtml"]) || declared.contains("html") || looks_like_html(bytes) {
        return Kind::Html;
    }
    if has_ext(name, &[".md", ".markdown", ".mdown"]) || declared.contains("markdown") {
        return Kind::Markdown;
    }
    Kind::Text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_win_over_names() {
        assert_eq!(
            sniff(b"\x89PNG\r\n\x1a\nrest", "scan.pdf", "application/pdf"),
            Kind::Image("a PNG image")
        );
        assert_eq!(sniff(b"GIF89a...", "x.gif", ""), Kind::Unsupported("a GIF image"));
        assert_eq!(sniff(b"%PDF-1.4\n...", "x.txt", "text/plain"), Kind::Pdf);
        assert_eq!(sniff(b"junk\n%PDF-1.7", "x", ""), Kind::Pdf);
        assert_eq!(sniff(b"<!DOCTYPE html><p>x", "page", ""), Kind::Html);
        assert_eq!(sniff(b"# Title\n\ntext", "a.md", ""), Kind::Markdown);
        assert_eq!(sniff(b"plain words", "notes", ""), Kind::Text);
        assert_eq!(
            sniff(&[0u8, 1, 2, 3, 0, 0], "x.txt", ""),
            Kind::Unsupported("a binary file of an unknown kind")
        );
        assert_eq!(sniff(b"\xff\xfeh\x00i\x00", "u16.txt", ""), Kind::Text);
        let utf16: Vec<u8> = "UTF-16 without a byte-order mark, as Windows tools write it.\r\n"
            .encode_utf16()
            .flat_map(|u| u.to_le_bytes())
            .collect();
        assert_eq!(sniff(&utf16, "notes.txt", ""), Kind::Text);
    }

    #[test]
    fn a_file_called_pdf_must_be_one() {
        assert_eq!(
            sniff(&vec![0xFF; 65_536], "scan.pdf", "application/octet-stream"),
            Kind::NotPdf("binary data of an unknown kind")
        );
        assert_eq!(
            sniff(b"just some words", "notes", "application/pdf"),
            Kind::NotPdf("text")
        );
        assert_eq!(sniff(b"%PDF-1.7\n", "notes", "application/pdf"), Kind::Pdf);
    }

    #[test]
    fn claims_are_described() {
        assert_eq!(claimed_kind("scan.pdf", ""), Some("a PDF"));
        assert_eq!(claimed_kind("blob", "application/octet-stream"), None);
    }
}
