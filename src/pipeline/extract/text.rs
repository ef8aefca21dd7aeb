//! Text formats: decoding bytes in any encoding (BOM, declared charset,
//! valid UTF-8, or a detected legacy encoding; never a crash), and turning
//! HTML and Markdown into plain text without markup.

use encoding_rs::Encoding;

use super::{Extracted, Limits};

/// Text decoded from bytes, and how its encoding was found.
#[derive(Debug)]
pub struct Decoded {
    pub text: String,
    pub encoding: &'static str,
    /// The encoding is a detector's guess (no BOM, no declared charset, not
    /// valid UTF-8, no UTF-16 pattern): the text must also look like words.
    pub guessed: bool,
}

/// Bytes to text: BOM, then (for HTML) a declared charset, then UTF-16
/// without a BOM (its zero high bytes show), then UTF-8, then chardetng's
/// guess. Malformed sequences become U+FFFD.
pub fn read_text(bytes: &[u8], declared_charset: Option<&str>) -> Decoded {
    let known = |text: std::borrow::Cow<'_, str>, enc: &'static Encoding| Decoded {
        text: text.into_owned(),
        encoding: enc.name(),
        guessed: false,
    };
    if let Some((enc, bom_len)) = Encoding::for_bom(bytes) {
        return known(enc.decode_without_bom_handling(&bytes[bom_len..]).0, enc);
    }
    if let Some(enc) = declared_charset.and_then(|c| Encoding::for_label(c.trim().as_bytes())) {
        // A page that says UTF-16 in a meta tag but has no BOM is really ASCII-compatible.
        if enc != encoding_rs::UTF_16LE && enc != encoding_rs::UTF_16BE {
            return known(enc.decode(bytes).0, enc);
        }
    }
    if let Some(enc) = utf16_without_bom(bytes) {
        return known(enc.decode_without_bom_handling(bytes).0, enc);
    }
    if let Ok(s) = std::str::from_utf8(bytes) {
        return Decoded {
            text: s.to_string(),
            encoding: "UTF-8",
            guessed: false,
        };
    }
    let mut detector = chardetng::EncodingDetector::new(chardetng::Iso2022JpDetection::Allow);
    detector.feed(bytes, true);
    let enc = detector.guess(None, chardetng::Utf8Detection::Allow);
    Decoded {
        guessed: true,
        ..known(enc.decode(bytes).0, enc)
    }
}

/// [`read_text`] as (text, encoding name).
pub fn decode(bytes: &[u8], declared_charset: Option<&str>) -> (String, &'static str) {
    let d = read_text(bytes, declared_charset);
    (d.text, d.encoding)
}

/// UTF-16 written without a byte-order mark: characters of the ASCII range
/// (spaces, line breaks, digits, Latin letters) put a zero in their high
/// byte, so zeros gather at odd offsets (little-endian) or even ones (big),
/// and the bytes decode without a lone surrogate.
pub fn utf16_without_bom(bytes: &[u8]) -> Option<&'static Encoding> {
    let sample = &bytes[..bytes.len().min(8192) & !1];
    if sample.len() < 16 {
        return None;
    }
    let (mut even, mut odd) = (0usize, 0usize);
    for (i, &b) in sample.iter().enumerate() {
        if b == 0 {
            if i % 2 == 0 {
                even += 1;
            } else {
                odd += 1;
            }
        }
    }
    let (enc, zeros, stray) = if odd >= even {
        (encoding_rs::UTF_16LE, odd, even)
    } else {
        (encoding_rs::UTF_16BE, even, odd)
    };
    let units = sample.len() / 2;
    // At least one character in twenty from the ASCII range, and (nearly)
    // no zero in the other byte of a pair (U+0000 is not in text).
    if zeros * 20 < units || stray * 100 > zeros {
        return None;
    }
    let (text, _) = enc.decode_without_bom_handling(sample);
    // A sample cut inside a surrogate pair may end in one U+FFFD.
    let bad = text.chars().filter(|&c| c == '\u{fffd}').count();
    (bad <= 1).then_some(enc)
}

fn text_result(decoded: Decoded, text: String, kind: &str, limits: &Limits) -> Result<Extracted, String> {
    if text.len() > limits.max_chars.saturating_mul(4) {
        return Err(format!(
            "the document's text is longer than the limit of {} characters",
            limits.max_chars
        ));
    }
    if let Some(why) = super::plausible::implausible(&text, decoded.guessed) {
        return Err(format!(
            "the file is not text: {why} (read as {}); {}",
            decoded.encoding,
            super::SUPPORTED
        ));
    }
    Ok(Extracted {
        text: normalise_whitespace(&text),
        kind: kind.into(),
        pages: None,
        page_starts: Vec::new(),
        encoding: Some(decoded.encoding.into()),
        page_errors: Vec::new(),
        warnings: Vec::new(),
        ..Extracted::default()
    })
}

pub fn plain(bytes: &[u8], limits: &Limits) -> Result<Extracted, String> {
    let mut decoded = read_text(bytes, None);
    let text = std::mem::take(&mut decoded.text);
    text_result(decoded, text, "text", limits)
}

pub fn markdown(bytes: &[u8], limits: &Limits) -> Result<Extracted, String> {
    let mut decoded = read_text(bytes, None);
    let text = markdown_to_text(&std::mem::take(&mut decoded.text));
    text_result(decoded, text, "markdown", limits)
}

pub fn html(bytes: &[u8], limits: &Limits) -> Result<Extracted, String> {
    let charset = meta_charset(bytes);
    let mut decoded = read_text(bytes, charset.as_deref());
    let text = html_to_text(&std::mem::take(&mut decoded.text));
    text_result(decoded, text, "html", limits)
}

/// `<meta charset=…>` or `<meta http-equiv content="…; charset=…">` in the first 4 KiB.
fn meta_charset(bytes: &[u8]) -> Option<String> {
    let head = String::from_utf8_lossy(&bytes[..bytes.len().min(4096)]).to_ascii_lowercase();
    let at = head.find("charset=")?;
    let rest = &head[at + "charset=".len()..];
    let rest = rest.trim_start_matches(['"', '\'', ' ']);
    let end = rest
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == ':' || c == '.'))
        .unwrap_or(rest.len());
    let label = &rest[..end];
    (!label.is_empty()).then(|| label.to_string())
}

/// Collapses runs of spaces and tabs, trims line ends, keeps at most one
/// blank line between paragraphs, and drops control characters.
pub fn normalise_whitespace(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut blank_lines = 0;
    for line in s.split('\n') {
        let mut cleaned = String::with_capacity(line.len());
        let mut in_space = false;
        for c in line.chars() {
            if c == '\r' {
                continue;
            }
            if c.is_whitespace() {
                in_space = true;
                continue;
            }
            if c.is_control() {
                continue;
            }
            if in_space && !cleaned.is_empty() {
                cleaned.push(' ');
            }
            in_space = false;
            cleaned.push(c);
        }
        if cleaned.is_empty() {
            blank_lines += 1;
            continue;
        }
        if !out.is_empty() {
            out.push_str(if blank_lines > 0 { "\n\n" } else { "\n" });
        }
        blank_lines = 0;
        out.push_str(&cleaned);
    }
    out
}

const BLOCK_TAGS: &[&str] = &[
    "p",
    "div",
    "br",
    "li",
    "ul",
    "ol",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "tr",
    "table",
    "section",
    "article",
    "header",
    "footer",
    "nav",
    "aside",
    "main",
    "pre",
    "blockquote",
    "dt",
    "dd",
    "dl",
    "hr",
    "title",
    "figure",
    "figcaption",
    "form",
    "fieldset",
    "address",
    "caption",
    "thead",
    "tbody",
    "tfoot",
    "details",
    "summary",
    "option",
];
/// Elements whose content is not text a reader sees.
const SKIP_TAGS: &[&str] = &["script", "style", "noscript", "template", "svg", "math", "head-meta"];

/// HTML to text: text nodes with entities decoded, block elements as line
/// breaks, scripts/styles/comments dropped. Linear in the input, no DOM.
pub fn html_to_text(html: &str) -> String {
    let bytes = html.as_bytes();
    let mut out = String::with_capacity(html.len() / 2);
    let mut text_start = 0;
    let mut i = 0;
    let mut skip_until: Option<String> = None;
    while i < bytes.len() {
        if bytes[i] != b'<' {
            i += 1;
            continue;
        }
        // flush text before the tag
        if skip_until.is_none() && text_start < i {
            out.push_str(&html_escape::decode_html_entities(&html[text_start..i]));
        }
        if html[i..].starts_with("<!--") {
            let end = html[i + 4..].find("-->").map(|e| i + 4 + e + 3).unwrap_or(bytes.len());
            i = end;
            text_start = i;
            continue;
        }
        let end = match html[i..].find('>') {
            Some(e) => i + e + 1,
            None => bytes.len(),
        };
        let tag = &html[i + 1..end.saturating_sub(1).max(i + 1)];
        let closing = tag.starts_with('/');
        let name: String = tag
            .trim_start_matches('/')
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric())
            .collect::<String>()
            .to_ascii_lowercase();
        if let Some(ref waiting) = skip_until {
            if closing && &name == waiting {
                skip_until = None;
            }
        } else if !closing && SKIP_TAGS.contains(&name.as_str()) && !tag.ends_with('/') {
            skip_until = Some(name.clone());
        } else if BLOCK_TAGS.contains(&name.as_str()) {
            out.push('\n');
        } else if name == "td" || name == "th" {
            out.push(' ');
        }
        i = end;
        text_start = i;
    }
    if skip_until.is_none() && text_start < bytes.len() {
        out.push_str(&html_escape::decode_html_entities(&html[text_start..]));
    }
    out
}

/// Markdown to text: the words, without `#`, `*`, link targets or raw HTML.
pub fn markdown_to_text(md: &str) -> String {
    use pulldown_cmark::{Event, Options, Parser, Tag, TagEnd};
    let mut out = String::with_capacity(md.len());
    let parser = Parser::new_ext(md, Options::ENABLE_TABLES | Options::ENABLE_STRIKETHROUGH);
    for event in parser {
        match event {
            Event::Text(t) | Event::Code(t) => out.push_str(&t),
            Event::SoftBreak => out.push('\n'),
            Event::HardBreak => out.push('\n'),
            Event::Html(h) | Event::InlineHtml(h) => out.push_str(&html_to_text(&h)),
            Event::Start(Tag::Item) => out.push('\n'),
            Event::Start(Tag::TableCell) => out.push(' '),
            Event::End(TagEnd::Paragraph | TagEnd::Heading(_) | TagEnd::CodeBlock | TagEnd::BlockQuote(_)) => {
                out.push_str("\n\n")
            }
            Event::End(TagEnd::TableRow | TagEnd::TableHead | TagEnd::List(_)) => out.push('\n'),
            Event::Rule => out.push_str("\n\n"),
            Event::FootnoteReference(r) => out.push_str(&r),
            Event::TaskListMarker(_) | Event::Start(_) | Event::End(_) => {}
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_gives_text_not_tags() {
        let t = normalise_whitespace(&html_to_text(
            "<html><head><title>T</title><style>p{x:1}</style><script>var a='<p>';</script></head>\
             <body><!-- c --><h1>Hello &amp; welcome</h1><p>One<br>two</p><table><tr><td>a</td><td>b</td></tr></table></body></html>",
        ));
        assert_eq!(t, "T\n\nHello & welcome\n\nOne\ntwo\n\na b");
    }

    #[test]
    fn markdown_gives_text_not_syntax() {
        let t = normalise_whitespace(&markdown_to_text(
            "# Title\n\nSome *bold* [link](http://x) `code`.\n\n<!-- hidden -->\n\n- one\n- two\n",
        ));
        assert!(t.starts_with("Title\n\nSome bold link code."), "{t}");
        assert!(
            !t.contains("hidden") && !t.contains("http://x") && !t.contains('#'),
            "{t}"
        );
        assert!(t.contains("one\ntwo"), "{t}");
    }

    #[test]
    fn legacy_encodings_are_detected() {
        // "Привет, мир" in Windows-1251, repeated so the detector has material.
        let source = "Привет, мир. Это проверка кодировки. ".repeat(4);
        let (cp1251, _, _) = encoding_rs::WINDOWS_1251.encode(&source);
        let (text, enc) = decode(&cp1251, None);
        assert!(text.contains("Привет"), "{text}");
        assert_eq!(enc, "windows-1251");
        let (u16, enc) = decode(b"\xff\xfeh\x00i\x00", None);
        assert_eq!((u16.as_str(), enc), ("hi", "UTF-16LE"));
    }

    #[test]
    fn utf16_without_a_bom_is_recognised_in_either_byte_order() {
        let source = "Отчёт за 2024 год\r\nРаздел 1. Введение: the results are in.\r\n".repeat(3);
        let le: Vec<u8> = source.encode_utf16().flat_map(|u| u.to_le_bytes()).collect();
        let be: Vec<u8> = source.encode_utf16().flat_map(|u| u.to_be_bytes()).collect();
        assert_eq!(decode(&le, None), (source.clone(), "UTF-16LE"));
        assert_eq!(decode(&be, None), (source.clone(), "UTF-16BE"));
        // Binary data with zeros everywhere is not taken for UTF-16.
        let words: Vec<u8> = (0u32..4000)
            .flat_map(|i| i.wrapping_mul(2_654_435_761).to_le_bytes())
            .collect();
        assert_eq!(utf16_without_bom(&words), None);
        // Nor is ASCII text (no zeros at all).
        assert_eq!(utf16_without_bom(source.as_bytes()), None);
    }

    #[test]
    fn invalid_utf8_does_not_crash() {
        let (text, _) = decode(&[0x66, 0x6f, 0xff, 0xfe, 0xc3, 0x28, 0x6f], None);
        assert!(text.starts_with("fo"));
    }

    #[test]
    fn meta_charset_is_honoured() {
        assert_eq!(meta_charset(b"<meta charset=\"Big5\">").as_deref(), Some("big5"));
        assert_eq!(
            meta_charset(b"<meta http-equiv=Content-Type content='text/html; charset=euc-jp'>").as_deref(),
            Some("euc-jp")
        );
    }

    /// The corpus's real text files, made by others, in their own encodings.
    mod corpus {
        use super::super::super::{extract_bytes, Limits};

        fn read(name: &str) -> Vec<u8> {
            let dir = std::env::var("DOCULEARN_CORPUS")
                .map(std::path::PathBuf::from)
                .unwrap_or_else(|_| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus"));
            std::fs::read(dir.join(name)).unwrap_or_else(|e| panic!("corpus file {name}: {e}"))
        }

        fn limits() -> Limits {
            Limits {
                max_pages: 100,
                max_decompressed_bytes: 1 << 26,
                max_stream_bytes: 1 << 24,
                max_objects: 100_000,
                max_depth: 32,
                max_chars: 10_000_000,
                ocr: false,
            }
        }

        fn extract(name: &str, declared: &str) -> super::super::super::Extracted {
            extract_bytes(&read(name), name, declared, &limits()).unwrap_or_else(|e| panic!("{name}: {e}"))
        }

        #[test]
        fn windows_1251_markdown_without_a_charset() {
            let ex = extract("disser-README-ru-cp1251.md", "text/markdown");
            assert_eq!(ex.kind, "markdown");
            assert_eq!(ex.encoding.as_deref(), Some("windows-1251"));
            assert!(ex.text.starts_with("1. Введение"), "{}", &ex.text[..80]);
            assert!(ex.text.contains("Пакет disser предназначен для верстки дипломов"));
            assert!(!ex.text.contains("# "), "markdown headings are text, not syntax");
        }

        #[test]
        fn big5_html_with_a_meta_charset() {
            let ex = extract("cwtex-README-big5.html", "text/html");
            assert_eq!(ex.kind, "html");
            assert_eq!(ex.encoding.as_deref(), Some("Big5"));
            assert!(ex.text.contains("CLE 字型伺服器"), "{}", ex.text);
            assert!(!ex.text.contains("<meta") && !ex.text.contains("<title>"));
        }

        #[test]
        fn euc_jp_plain_text() {
            let ex = extract("debian-dedication-ja-eucjp.txt", "text/plain");
            assert_eq!(ex.kind, "text");
            assert_eq!(ex.encoding.as_deref(), Some("EUC-JP"));
            assert!(ex.text.starts_with("Joel 'Espy' Klecker に捧ぐ"), "{}", ex.text);
            assert!(ex.text.contains("デュシェンヌ筋ジストロフィー"));
        }

        #[test]
        fn utf8_markdown_with_html_comments_and_badges() {
            let ex = extract("ocrmypdf-README_ZH.md", "application/octet-stream");
            assert_eq!(ex.kind, "markdown");
            assert!(
                !ex.text.contains("SPDX-FileCopyrightText"),
                "HTML comments are not text"
            );
            assert!(
                !ex.text.contains("https://github.com/ocrmypdf/OCRmyPDF/actions"),
                "link targets are not text"
            );
            assert!(ex.text.contains("OCRmyPDF"));
        }

        #[test]
        fn a_large_sphinx_html_page() {
            let ex = extract("ghostscript-Use.html", "text/html");
            assert!(
                !ex.text.contains("<div") && !ex.text.contains("function("),
                "no tags or scripts"
            );
            assert!(ex.text.contains("Ghostscript"));
            assert!(ex.text.len() > 100_000, "{}", ex.text.len());
        }

        #[test]
        fn plain_ascii_text_keeps_its_paragraphs() {
            let ex = extract("debian-manifesto.txt", "text/plain");
            assert!(
                ex.text
                    .contains("Debian is being\ncarefully and conscientiously put\ntogether")
                    || ex.text.contains("carefully and conscientiously put")
            );
            assert!(ex.text.contains("\n\n"), "paragraph breaks survive");
        }
    }
}
