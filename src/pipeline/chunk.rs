//! The chunking stage: text-splitter's semantic-boundary splitter over
//! characters (size and overlap from config; 1000/200 by default, as the
//! seed plan), each chunk tagged with the page it starts on and where it is
//! in the document's text, in characters (Unicode scalar values).

use text_splitter::{ChunkConfig, TextSplitter};

use super::extract::Extracted;

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Chunk {
    pub index: i32,
    pub text: String,
    pub page: Option<i32>,
    /// Character offset of the chunk's first character in the document's
    /// extracted text (`chunks.char_start`; None only for rows stored before
    /// offsets were recorded).
    pub char_start: Option<i32>,
    /// Character offset just past its last character (`chunks.char_end`).
    pub char_end: Option<i32>,
}

/// Splits the extracted text. `overlap < size` is checked by config validation.
pub fn split(extracted: &Extracted, size: usize, overlap: usize) -> Vec<Chunk> {
    let config = ChunkConfig::new(size)
        .with_overlap(overlap)
        .expect("overlap < size is validated at start-up");
    let splitter = TextSplitter::new(config);
    let mut chars = CharOffsets::new(&extracted.text);
    splitter
        .chunk_indices(&extracted.text)
        .enumerate()
        .map(|(i, (offset, text))| {
            let start = chars.at(offset);
            Chunk {
                index: i as i32,
                text: text.to_string(),
                page: extracted.page_at(offset),
                char_start: Some(start as i32),
                char_end: Some((start + text.chars().count()) as i32),
            }
        })
        .collect()
}

/// Byte offsets to character offsets, counting forward from the last
/// offset asked (offsets asked in increasing order cost one pass in all).
pub struct CharOffsets<'a> {
    text: &'a str,
    byte: usize,
    char: usize,
}

impl<'a> CharOffsets<'a> {
    pub fn new(text: &'a str) -> Self {
        CharOffsets { text, byte: 0, char: 0 }
    }

    /// Characters before byte `offset` (a char boundary, clamped to the text).
    pub fn at(&mut self, offset: usize) -> usize {
        let offset = offset.min(self.text.len());
        if offset < self.byte {
            self.byte = 0;
            self.char = 0;
        }
        self.char += self.text[self.byte..offset].chars().count();
        self.byte = offset;
        self.char
    }
}

/// The character offset where each page starts (`Extracted::page_starts` is in bytes).
pub fn page_char_starts(extracted: &Extracted) -> Vec<i32> {
    let mut chars = CharOffsets::new(&extracted.text);
    extracted.page_starts.iter().map(|&b| chars.at(b) as i32).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(text: &str, page_starts: Vec<usize>) -> Extracted {
        Extracted {
            text: text.into(),
            kind: "text".into(),
            pages: None,
            page_starts,
            encoding: None,
            page_errors: vec![],
            warnings: vec![],
            ..Extracted::default()
        }
    }

    #[test]
    fn chunks_respect_size_and_overlap() {
        let text = "word ".repeat(1000);
        let chunks = split(&doc(&text, vec![]), 100, 20);
        assert!(chunks.len() > 40, "{}", chunks.len());
        for c in &chunks {
            assert!(c.text.chars().count() <= 100);
            assert_eq!(c.page, None);
        }
        // Neighbours overlap: the start of each chunk appears at the end of the previous one.
        let head: String = chunks[1].text.chars().take(10).collect();
        assert!(chunks[0].text.contains(head.trim()));
        assert_eq!(
            chunks.iter().map(|c| c.index).collect::<Vec<_>>(),
            (0..chunks.len() as i32).collect::<Vec<_>>()
        );
    }

    #[test]
    fn chunks_know_their_page() {
        let page1 = "First page text. ".repeat(20);
        let page2 = "Second page text. ".repeat(20);
        let text = format!("{page1}\n\n{page2}");
        let chunks = split(&doc(&text, vec![0, page1.len() + 2]), 120, 0);
        assert_eq!(chunks.first().unwrap().page, Some(1));
        assert_eq!(chunks.last().unwrap().page, Some(2));
    }

    #[test]
    fn chunks_know_their_character_range() {
        // Multi-byte text: byte and character offsets differ.
        let page1 = "Größe über Straße. Привет, мир. ".repeat(10);
        let page2 = "日本語のテキスト。第二頁。".repeat(10);
        let text = format!("{page1}\n\n{page2}");
        let ex = doc(&text, vec![0, page1.len() + 2]);
        let chars: Vec<char> = text.chars().collect();
        let chunks = split(&ex, 60, 10);
        assert!(chunks.len() > 5);
        for c in &chunks {
            let (s, e) = (c.char_start.unwrap() as usize, c.char_end.unwrap() as usize);
            assert_eq!(chars[s..e].iter().collect::<String>(), c.text);
        }
        assert_eq!(page_char_starts(&ex), vec![0, page1.chars().count() as i32 + 2]);
    }
}
