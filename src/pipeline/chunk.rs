//! The chunking stage: text-splitter's semantic-boundary splitter over
//! characters (size and overlap from config; 1000/200 by default, as the
//! seed plan), each chunk tagged with the page it starts on.

use text_splitter::{ChunkConfig, TextSplitter};

use super::extract::Extracted;

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Chunk {
    pub index: i32,
    pub text: String,
    pub page: Option<i32>,
}

/// Splits the extracted text. `overlap < size` is checked by config validation.
pub fn split(extracted: &Extracted, size: usize, overlap: usize) -> Vec<Chunk> {
    let config = ChunkConfig::new(size)
        .with_overlap(overlap)
        .expect("overlap < size is validated at start-up");
    let splitter = TextSplitter::new(config);
    splitter
        .chunk_indices(&extracted.text)
        .enumerate()
        .map(|(i, (offset, text))| Chunk {
            index: i as i32,
            text: text.to_string(),
            page: extracted.page_at(offset),
        })
        .collect()
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
}
