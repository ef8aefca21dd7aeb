//! Search over the caller's chunks: semantic (vectors), keyword (Postgres
//! full text) or both fused by reciprocal rank fusion, and the citation
//! each hit carries (page, character range, a snippet with the query's
//! words highlighted). The SQL is in [`crate::db::search`] and
//! [`crate::db::keyword_search`].

use std::collections::{HashMap, HashSet};

use serde::Serialize;
use uuid::Uuid;

use crate::db::ChunkHit;

/// How hits are found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Keyword and semantic, fused by reciprocal rank (the default).
    Hybrid,
    /// Cosine similarity of the model's vectors only.
    Semantic,
    /// Postgres full text only (no embedder involved).
    Keyword,
}

impl Mode {
    /// The names the API, the UI and the CLI accept.
    pub const NAMES: [&'static str; 3] = ["hybrid", "semantic", "keyword"];

    pub fn parse(s: &str) -> Option<Mode> {
        match s {
            "hybrid" => Some(Mode::Hybrid),
            "semantic" => Some(Mode::Semantic),
            "keyword" => Some(Mode::Keyword),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Hybrid => "hybrid",
            Mode::Semantic => "semantic",
            Mode::Keyword => "keyword",
        }
    }
}

/// Reciprocal rank fusion's constant (Cormack et al.: 60).
pub const RRF_K: f64 = 60.0;

/// How many hits of each side hybrid search fuses for `k` results.
pub fn fusion_depth(k: i64) -> i64 {
    (4 * k).max(40)
}

/// A char range `[start, end)` inside a snippet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct HighlightRange {
    pub start: usize,
    pub end: usize,
}

/// One search result as the API returns it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SearchHit {
    pub document_id: Uuid,
    pub document_name: String,
    pub chunk_index: i32,
    /// 1-based page the chunk starts on (paged formats), else null.
    pub page: Option<i32>,
    /// Character (Unicode scalar) offset of the chunk in the document's
    /// text (`GET /api/v1/documents/{id}/text`); null for chunks stored
    /// before offsets were recorded.
    pub char_start: Option<i32>,
    /// Character offset just past the chunk.
    pub char_end: Option<i32>,
    pub content: String,
    /// Semantic: cosine similarity. Keyword: sum of the matched words'
    /// inverse document frequencies (doubled for a phrase match). Hybrid:
    /// reciprocal rank fusion, the sum of 1/(60 + rank) over both sides.
    pub score: f64,
    /// 1-based rank on the semantic side (hybrid and semantic), if there.
    pub semantic_rank: Option<usize>,
    /// 1-based rank on the keyword side (hybrid and keyword), if there.
    pub keyword_rank: Option<usize>,
    /// About 240 characters of the chunk around its best match (its start
    /// when no query word is in it).
    pub snippet: String,
    /// Character offset of the snippet in `content`.
    pub snippet_start: usize,
    /// Character ranges in `snippet` of the query's words, case-insensitive.
    pub highlights: Vec<HighlightRange>,
    /// The query's words found in the chunk, lower-cased.
    pub matched_terms: Vec<String>,
}

/// Hits of one side as API hits, ranked in their order.
pub fn single(hits: Vec<ChunkHit>, mode: Mode, terms: &[String]) -> Vec<SearchHit> {
    hits.into_iter()
        .enumerate()
        .map(|(i, h)| {
            let (sem, key) = match mode {
                Mode::Keyword => (None, Some(i + 1)),
                _ => (Some(i + 1), None),
            };
            let score = h.score;
            to_hit(h, score, sem, key, terms)
        })
        .collect()
}

/// Reciprocal rank fusion of both sides' hits, best first, `k` of them.
/// Ties go to the better keyword rank (a keyword hit holds the query's
/// words, while the semantic side always fills its list, relevant or not),
/// then the better semantic rank, document id and chunk index.
pub fn fuse(semantic: Vec<ChunkHit>, keyword: Vec<ChunkHit>, k: usize, terms: &[String]) -> Vec<SearchHit> {
    struct Entry {
        hit: ChunkHit,
        score: f64,
        sem: Option<usize>,
        key: Option<usize>,
    }
    let mut by_chunk: HashMap<(Uuid, i32), Entry> = HashMap::new();
    for (i, h) in semantic.into_iter().enumerate() {
        let e = by_chunk.entry((h.document_id, h.chunk_index)).or_insert(Entry {
            hit: h,
            score: 0.0,
            sem: None,
            key: None,
        });
        if e.sem.is_none() {
            e.sem = Some(i + 1);
            e.score += 1.0 / (RRF_K + (i + 1) as f64);
        }
    }
    for (i, h) in keyword.into_iter().enumerate() {
        let e = by_chunk.entry((h.document_id, h.chunk_index)).or_insert(Entry {
            hit: h,
            score: 0.0,
            sem: None,
            key: None,
        });
        if e.key.is_none() {
            e.key = Some(i + 1);
            e.score += 1.0 / (RRF_K + (i + 1) as f64);
        }
    }
    let mut entries: Vec<Entry> = by_chunk.into_values().collect();
    entries.sort_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then(a.key.unwrap_or(usize::MAX).cmp(&b.key.unwrap_or(usize::MAX)))
            .then(a.sem.unwrap_or(usize::MAX).cmp(&b.sem.unwrap_or(usize::MAX)))
            .then(a.hit.document_id.cmp(&b.hit.document_id))
            .then(a.hit.chunk_index.cmp(&b.hit.chunk_index))
    });
    entries
        .into_iter()
        .take(k)
        .map(|e| to_hit(e.hit, e.score, e.sem, e.key, terms))
        .collect()
}

fn to_hit(h: ChunkHit, score: f64, sem: Option<usize>, key: Option<usize>, terms: &[String]) -> SearchHit {
    let snip = snippet(&h.content, terms, SNIPPET_CHARS);
    SearchHit {
        document_id: h.document_id,
        document_name: h.document_name,
        chunk_index: h.chunk_index,
        page: h.page,
        char_start: h.char_start,
        char_end: h.char_end,
        content: h.content,
        score,
        semantic_rank: sem,
        keyword_rank: key,
        snippet: snip.text,
        snippet_start: snip.start,
        highlights: snip.highlights,
        matched_terms: snip.matched_terms,
    }
}

/// The query's words, lower-cased and distinct, in order: runs of letters
/// and digits (as Postgres' parser splits them, near enough for
/// highlighting).
pub fn query_terms(query: &str) -> Vec<String> {
    let mut seen = HashSet::new();
    words(query)
        .into_iter()
        .map(|(s, e)| lower(&query.chars().skip(s).take(e - s).collect::<String>()))
        .filter(|w| seen.insert(w.clone()))
        .collect()
}

fn lower(s: &str) -> String {
    s.chars().flat_map(char::to_lowercase).collect()
}

/// Character ranges of the words (runs of alphanumeric characters) of `text`.
fn words(text: &str) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut start = None;
    let mut n = 0;
    for (i, c) in text.chars().enumerate() {
        n = i + 1;
        match (c.is_alphanumeric(), start) {
            (true, None) => start = Some(i),
            (false, Some(s)) => {
                out.push((s, i));
                start = None;
            }
            _ => {}
        }
    }
    if let Some(s) = start {
        out.push((s, n));
    }
    out
}

/// Scripts written without spaces between words: there a query word may be
/// part of a longer run, so it is matched as a substring.
fn unspaced(c: char) -> bool {
    matches!(c as u32,
        0x0E00..=0x0EFF      // Thai, Lao
        | 0x1780..=0x17FF    // Khmer
        | 0x3040..=0x30FF    // Hiragana, Katakana
        | 0x3400..=0x4DBF    // CJK extension A
        | 0x4E00..=0x9FFF    // CJK unified ideographs
        | 0xF900..=0xFAFF) // CJK compatibility ideographs
}

/// Character ranges in `text` where the query's `terms` occur: whole words,
/// case-insensitively, and inside longer runs for scripts without spaces.
/// Sorted, not overlapping.
pub fn matches(text: &str, terms: &[String]) -> Vec<(usize, usize, usize)> {
    let chars: Vec<char> = text.chars().collect();
    let mut found: Vec<(usize, usize, usize)> = Vec::new();
    let exact: HashMap<&str, usize> = terms.iter().enumerate().map(|(i, t)| (t.as_str(), i)).collect();
    for (s, e) in words(text) {
        let w = lower(&chars[s..e].iter().collect::<String>());
        if let Some(&i) = exact.get(w.as_str()) {
            found.push((s, e, i));
        }
    }
    let lowered: Vec<char> = chars
        .iter()
        .map(|c| {
            c.to_lowercase()
                .next()
                .filter(|_| c.to_lowercase().count() == 1)
                .unwrap_or(*c)
        })
        .collect();
    for (i, t) in terms.iter().enumerate() {
        if !t.chars().any(unspaced) {
            continue;
        }
        let t: Vec<char> = t.chars().collect();
        if t.len() > lowered.len() {
            continue;
        }
        for s in 0..=lowered.len() - t.len() {
            if lowered[s..s + t.len()] == t[..] {
                found.push((s, s + t.len(), i));
            }
        }
    }
    found.sort_unstable();
    let mut out: Vec<(usize, usize, usize)> = Vec::with_capacity(found.len());
    for m in found {
        match out.last() {
            Some(last) if m.0 < last.1 => {}
            _ => out.push(m),
        }
    }
    out
}

/// Characters in a snippet.
pub const SNIPPET_CHARS: usize = 240;

/// A window of a chunk and what is highlighted in it.
#[derive(Debug, Clone, PartialEq)]
pub struct Snippet {
    pub text: String,
    /// Character offset of `text` in the chunk.
    pub start: usize,
    pub highlights: Vec<HighlightRange>,
    pub matched_terms: Vec<String>,
}

/// About `width` characters of `content` around its best match: the
/// window (starting a little before a match) with the most distinct query
/// words, then the most matches; the first such. No match: the start.
pub fn snippet(content: &str, terms: &[String], width: usize) -> Snippet {
    let chars: Vec<char> = content.chars().collect();
    let found = matches(content, terms);
    let mut matched: Vec<usize> = found.iter().map(|m| m.2).collect();
    matched.sort_unstable();
    matched.dedup();
    let lead = width / 5;
    let mut best = (0usize, 0usize, 0usize); // (distinct, count, window start)
    for (i, m) in found.iter().enumerate() {
        let from = m.0.saturating_sub(lead);
        let inside: Vec<&(usize, usize, usize)> = found[i..].iter().take_while(|n| n.1 <= from + width).collect();
        let distinct = inside.iter().map(|n| n.2).collect::<HashSet<_>>().len();
        if (distinct, inside.len()) > (best.0, best.1) {
            best = (distinct, inside.len(), from);
        }
    }
    let mut start = best.2.min(chars.len());
    // Start at a word boundary when one is near.
    if start > 0 {
        if let Some(p) = (start..(start + 20).min(chars.len())).find(|&p| chars[p - 1].is_whitespace()) {
            if found.iter().all(|m| m.0 >= p || m.0 < start) {
                start = p;
            }
        }
    }
    // A window that would run past the end starts earlier instead.
    if chars.len() > width && start + width > chars.len() {
        start = chars.len() - width;
    }
    let end = (start + width).min(chars.len());
    let highlights = found
        .iter()
        .filter(|m| m.0 >= start && m.1 <= end)
        .map(|m| HighlightRange {
            start: m.0 - start,
            end: m.1 - start,
        })
        .collect();
    Snippet {
        text: chars[start..end].iter().collect(),
        start,
        highlights,
        matched_terms: matched.into_iter().map(|i| terms[i].clone()).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hit(doc: u128, index: i32) -> ChunkHit {
        ChunkHit {
            document_id: Uuid::from_u128(doc),
            document_name: "d".into(),
            chunk_index: index,
            page: None,
            char_start: None,
            char_end: None,
            content: format!("chunk {index}"),
            score: 0.0,
        }
    }

    #[test]
    fn modes_parse() {
        for name in Mode::NAMES {
            assert_eq!(Mode::parse(name).unwrap().as_str(), name);
        }
        assert_eq!(Mode::parse("Hybrid"), None);
    }

    #[test]
    fn fusion_rewards_both_sides_and_breaks_ties_deterministically() {
        // Chunk 2 is second on both sides: it beats chunk 1 and chunk 3, each first on one side only.
        let sem = vec![hit(1, 1), hit(1, 2)];
        let key = vec![hit(1, 3), hit(1, 2)];
        let fused = fuse(sem, key, 10, &[]);
        let order: Vec<i32> = fused.iter().map(|h| h.chunk_index).collect();
        assert_eq!(order, vec![2, 3, 1]);
        assert_eq!(fused[0].semantic_rank, Some(2));
        assert_eq!(fused[0].keyword_rank, Some(2));
        assert!((fused[0].score - 2.0 / 62.0).abs() < 1e-12);
        // 1 and 3 tie on score; the keyword side's hit goes first.
        assert_eq!(fused[1].semantic_rank, None);
        assert_eq!(fused[2].keyword_rank, None);
        assert_eq!(fuse(vec![hit(1, 1)], vec![hit(1, 3)], 1, &[]).len(), 1);
    }

    #[test]
    fn terms_are_lowercased_words() {
        assert_eq!(
            query_terms("Where is XA_WM_COMMAND? Größe, ГРОЗА where"),
            vec!["where", "is", "xa", "wm", "command", "größe", "гроза"]
        );
    }

    fn at(s: &Snippet, r: &HighlightRange) -> String {
        s.text.chars().skip(r.start).take(r.end - r.start).collect()
    }

    #[test]
    fn highlights_are_the_query_words_in_the_snippet() {
        let content = format!(
            "{} The Gnuplot PLOT command draws; plotting is not plot. {}",
            "x ".repeat(200),
            "y ".repeat(200)
        );
        let s = snippet(&content, &query_terms("plot command"), 80);
        assert_eq!(s.text.chars().count(), 80);
        let got: Vec<String> = s.highlights.iter().map(|r| at(&s, r)).collect();
        assert_eq!(got, vec!["PLOT", "command", "plot"]);
        assert_eq!(s.matched_terms, vec!["plot", "command"]);
        let offset: String = content.chars().skip(s.start).take(80).collect();
        assert_eq!(offset, s.text);
    }

    #[test]
    fn unicode_and_unspaced_scripts() {
        let s = snippet("Привет, МИР! Это мир.", &query_terms("мир"), 240);
        assert_eq!(
            s.highlights.iter().map(|r| at(&s, r)).collect::<Vec<_>>(),
            vec!["МИР", "мир"]
        );
        let s = snippet("これは日本語のテキストです", &query_terms("日本語"), 240);
        assert_eq!(s.highlights, vec![HighlightRange { start: 3, end: 6 }]);
    }

    #[test]
    fn no_match_is_the_start_without_highlights() {
        let content = "alpha beta ".repeat(50);
        let s = snippet(&content, &query_terms("gamma"), 100);
        assert_eq!(s.start, 0);
        assert!(s.highlights.is_empty() && s.matched_terms.is_empty());
        assert_eq!(s.text.chars().count(), 100);
    }
}
