//! Token F1 between an extraction and a reference text (e.g. `pdftotext`),
//! the agreement measure the corpus tests and benchmarks use.
//!
//! Both texts are NFKC-normalised (so "ﬁ" equals "fi") and stripped of bidi
//! control marks (U+061C, U+200E/F, U+202A–U+202E, U+2066–U+2069, and the
//! BOM U+FEFF). Tokens are maximal
//! runs of non-whitespace, except that every character of a script written
//! without spaces (Han, Hiragana, Katakana, Hangul, Thai, Lao, Khmer,
//! Myanmar) is its own token, since where pdftotext breaks lines and puts
//! spaces inside such text is arbitrary. Precision and recall are over the
//! two multisets of tokens; F1 is their harmonic mean (1.0 when both are empty).

use std::collections::HashMap;

use unicode_normalization::UnicodeNormalization;

fn is_unspaced_script(c: char) -> bool {
    matches!(c as u32,
        0x0E00..=0x0EFF      // Thai, Lao
        | 0x1100..=0x11FF    // Hangul Jamo
        | 0x1000..=0x109F    // Myanmar
        | 0x1780..=0x17FF    // Khmer
        | 0x19E0..=0x19FF    // Khmer symbols
        | 0x2E80..=0x2FDF    // CJK radicals
        | 0x3000..=0x30FF    // CJK symbols, Hiragana, Katakana
        | 0x3100..=0x31FF    // Bopomofo, Hangul compat., Katakana ext.
        | 0x3200..=0x4DBF    // enclosed CJK, CJK ext. A
        | 0x4E00..=0x9FFF    // CJK unified
        | 0xA960..=0xA97F
        | 0xAC00..=0xD7FF    // Hangul syllables
        | 0xF900..=0xFAFF    // CJK compatibility
        | 0xFF00..=0xFFEF    // half/full width forms
        | 0x20000..=0x3134F) // CJK ext. B–G
}

fn is_bidi_control(c: char) -> bool {
    matches!(c as u32, 0x061C | 0x200E | 0x200F | 0x202A..=0x202E | 0x2066..=0x2069 | 0xFEFF)
}

/// The tokens of a text, as described in the module doc.
pub fn tokens(text: &str) -> Vec<String> {
    let normalised: String = text.nfkc().filter(|c| !is_bidi_control(*c)).collect();
    let mut out = Vec::new();
    let mut current = String::new();
    for c in normalised.chars() {
        if c.is_whitespace() {
            if !current.is_empty() {
                out.push(std::mem::take(&mut current));
            }
        } else if is_unspaced_script(c) {
            if !current.is_empty() {
                out.push(std::mem::take(&mut current));
            }
            out.push(c.to_string());
        } else {
            current.push(c);
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// Bag-of-tokens F1 of `candidate` against `reference`.
pub fn token_f1(candidate: &str, reference: &str) -> f64 {
    let mut bag: HashMap<String, i64> = HashMap::new();
    let cand = tokens(candidate);
    let refs = tokens(reference);
    if cand.is_empty() && refs.is_empty() {
        return 1.0;
    }
    for t in &refs {
        *bag.entry(t.clone()).or_default() += 1;
    }
    let mut matched = 0i64;
    for t in &cand {
        if let Some(n) = bag.get_mut(t) {
            if *n > 0 {
                *n -= 1;
                matched += 1;
            }
        }
    }
    if matched == 0 {
        return 0.0;
    }
    let p = matched as f64 / cand.len() as f64;
    let r = matched as f64 / refs.len() as f64;
    2.0 * p * r / (p + r)
}

/// Share of `reference`'s tokens (counted with repeats) that `candidate`
/// also has: how much of a reference text an extraction recovers.
pub fn token_recall(candidate: &str, reference: &str) -> f64 {
    let mut bag: HashMap<String, i64> = HashMap::new();
    for t in tokens(candidate) {
        *bag.entry(t).or_default() += 1;
    }
    let refs = tokens(reference);
    if refs.is_empty() {
        return 1.0;
    }
    let found = refs
        .iter()
        .filter(|t| match bag.get_mut(*t) {
            Some(n) if *n > 0 => {
                *n -= 1;
                true
            }
            _ => false,
        })
        .count();
    found as f64 / refs.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f1_basics() {
        assert_eq!(token_f1("a b c", "a b c"), 1.0);
        assert_eq!(token_f1("", ""), 1.0);
        assert_eq!(token_f1("x", "y"), 0.0);
        assert!((token_f1("a b", "a b c d") - 2.0 * 1.0 * 0.5 / 1.5).abs() < 1e-9);
        // Ligatures and bidi marks do not count against.
        assert_eq!(token_f1("ﬁnd", "find"), 1.0);
        assert_eq!(token_f1("\u{202b}abc\u{202c}", "abc"), 1.0);
        // CJK: per character, whatever the spacing.
        assert_eq!(token_f1("日本 語", "日本語"), 1.0);
    }

    #[test]
    fn recall_counts_the_reference_found() {
        assert_eq!(token_recall("a b c extra", "a b c"), 1.0);
        assert_eq!(token_recall("a", "a a b c"), 0.25);
        assert_eq!(token_recall("", ""), 1.0);
    }
}
