//! Is decoded text really text? A byte stream can always be decoded in some
//! legacy encoding (every byte is a character in windows-1256), so the
//! encoding guess alone proves nothing: 64 KiB of 0xFF bytes "decode" to
//! 65,536 Arabic letters yeh barree. These checks look at what came out and
//! refuse what no person writes, whatever the encoding was.

/// Figures about a decoded text, over its first [`SAMPLE_CHARS`] characters.
#[derive(Debug, Default)]
struct Census {
    /// Characters other than whitespace.
    visible: usize,
    whitespace: usize,
    letters: usize,
    /// Controls, U+FFFD (undecodable bytes), private-use and noncharacters.
    junk: usize,
    /// Han, kana and Thai: scripts written without spaces between words.
    unspaced: usize,
    /// The most frequent visible character's count.
    top: usize,
    distinct: usize,
}

const SAMPLE_CHARS: usize = 64 * 1024;

fn is_junk(c: char) -> bool {
    let u = c as u32;
    (c.is_control() && !matches!(c, '\t' | '\n' | '\r' | '\x0c'))
        || c == '\u{fffd}'
        || (0xE000..=0xF8FF).contains(&u)
        || u >= 0xF0000
        || (0xFDD0..=0xFDEF).contains(&u)
        || (u & 0xFFFE) == 0xFFFE
}

fn is_unspaced_script(c: char) -> bool {
    matches!(c as u32,
        0x0E00..=0x0E7F      // Thai
        | 0x3040..=0x30FF    // kana
        | 0x3400..=0x4DBF    // Han extension A
        | 0x4E00..=0x9FFF    // Han
        | 0xF900..=0xFAFF
        | 0x20000..=0x3134F)
}

fn census(text: &str) -> Census {
    let mut c = Census::default();
    let mut counts: std::collections::HashMap<char, usize> = std::collections::HashMap::new();
    for ch in text.chars().take(SAMPLE_CHARS) {
        if ch.is_whitespace() {
            c.whitespace += 1;
            continue;
        }
        c.visible += 1;
        if ch.is_alphabetic() {
            c.letters += 1;
        }
        if is_junk(ch) {
            c.junk += 1;
        }
        if is_unspaced_script(ch) {
            c.unspaced += 1;
        }
        *counts.entry(ch).or_insert(0) += 1;
    }
    c.top = counts.values().copied().max().unwrap_or(0);
    c.distinct = counts.len();
    c
}

/// Why `text` is not plausible text (in words for the user), or `None`.
/// `guessed` says the encoding was a detector's guess (no BOM, no declared
/// charset, not valid UTF-8): such text must also look like words.
pub fn implausible(text: &str, guessed: bool) -> Option<String> {
    let c = census(text);
    if c.visible < 16 {
        return None;
    }
    if c.junk * 10 >= c.visible {
        return Some(format!(
            "it is binary data ({}% of it decodes to control, private-use or undecodable characters)",
            c.junk * 100 / c.visible
        ));
    }
    // One character over and over: half of all, and (almost) nothing else.
    // A table of contents is half dot leaders but has the words too.
    if c.visible >= 64 && c.top * 2 >= c.visible && (c.distinct <= 4 || c.top * 10 >= c.visible * 9) {
        return Some("it is one character repeated".into());
    }
    if c.visible >= 64 && c.letters == 0 {
        return Some("it has no letters of any script".into());
    }
    if guessed && c.visible >= 512 {
        // Words: scripts written with spaces have them every few characters.
        let spaced = c.visible - c.unspaced;
        if spaced * 2 > c.visible && spaced > 40 * (c.whitespace + 1) {
            return Some("it decodes to letters without any words (no spaces between them)".into());
        }
        // People repeat characters; random bytes read as ideographs do not.
        if c.distinct * 10 > c.visible * 8 {
            return Some("it decodes to characters that hardly ever repeat, as random bytes do".into());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::implausible;
    use crate::pipeline::extract::text::{decode, read_text};

    fn guessed(bytes: &[u8]) -> Option<String> {
        let d = read_text(bytes, None);
        implausible(&d.text, d.guessed)
    }

    #[test]
    fn high_byte_garbage_is_refused_whatever_the_guess() {
        assert!(guessed(&vec![0xFF; 64 << 10])
            .unwrap()
            .contains("one character repeated"));
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for seed in 0..8u64 {
            let bytes: Vec<u8> = (0..65_536)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    0x80 | ((x.wrapping_add(seed) >> 32) as u8 & 0x7F)
                })
                .collect();
            let (text, enc) = decode(&bytes, None);
            assert!(
                implausible(&text, true).is_some(),
                "random high bytes read as {enc} were taken for text"
            );
        }
    }

    #[test]
    fn real_text_in_many_scripts_passes() {
        let samples = [
            "The quick brown fox jumps over the lazy dog. ".repeat(40),
            "Съешь же ещё этих мягких французских булок, да выпей чаю. ".repeat(30),
            "我们都是好朋友，今天天气很好。我们一起去公园散步，看看花草树木。\n".repeat(30),
            "ΞΕΣΚΕΠΑΖΩ ΤΗΝ ΨΥΧΟΦΘΟΡΑ ΒΔΕΛΥΓΜΙΑ, ξεσκεπάζω την ψυχοφθόρα. ".repeat(30),
            "Příliš žluťoučký kůň úpěl ďábelské ódy. ".repeat(40),
        ];
        for s in &samples {
            assert_eq!(implausible(s, true), None, "{}", &s[..40]);
        }
        // A text that begins with a long table of contents: half of its
        // first characters are dot leaders.
        let toc: String = (1..400)
            .map(|i| {
                format!(
                    "{i} Section {i} . . . . . . . . . . . . . . . . . . . . . . . . . . . . . {}\n",
                    i * 3
                )
            })
            .collect();
        assert_eq!(implausible(&toc, false), None);
        // A real windows-1251 text file decodes and passes.
        let (text, enc) = decode(&encoding_rs::WINDOWS_1251.encode(&samples[1]).0, None);
        assert_eq!(enc, "windows-1251");
        assert_eq!(implausible(&text, true), None);
    }

    #[test]
    fn controls_and_letterless_streams_are_refused() {
        let controls: String = (0..200).map(|i| char::from(1 + (i % 8) as u8)).collect();
        assert!(implausible(&controls, false).unwrap().contains("binary data"));
        let digits = "0123456789 ".repeat(20);
        assert!(implausible(&digits, false).unwrap().contains("no letters"));
        let pua: String = std::iter::repeat_n('\u{f041}', 10)
            .chain("words here and there".chars())
            .collect();
        assert!(implausible(&pua, false).unwrap().contains("private-use"));
        assert_eq!(implausible("short", false), None);
    }
}
