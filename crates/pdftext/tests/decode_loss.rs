//! Text a font cannot give is never lost in silence: pages whose glyphs map
//! to nothing are counted, and a document that is (nearly) all such glyphs
//! fails with that reason instead of yielding junk.

mod support;

use pdftext::{extract, Limits, PdfError};
use support::{document, text_page, undecodable_font, HELVETICA};

const WORDS: &str = "Readable words on a page in a standard font";

#[test]
fn a_page_of_undecodable_glyphs_is_counted_and_the_rest_is_read() {
    let pdf = document(
        &[
            text_page("F1", WORDS, 20),
            text_page("F2", "ABCDEFGHIJKLMNOPQRSTUVWXYZ", 20),
            text_page("F1", WORDS, 20),
        ],
        &[HELVETICA.to_vec(), undecodable_font()],
    );
    let ex = extract(&pdf, &Limits::default()).expect("two pages of three are readable");
    assert_eq!(ex.pages.len(), 3);
    assert!(ex.pages[0].contains(WORDS) && ex.pages[2].contains(WORDS));
    assert!(ex.pages[1].trim().is_empty(), "{:?}", ex.pages[1]);
    let lost: Vec<bool> = ex.stats.iter().map(|s| s.lost_text()).collect();
    assert_eq!(lost, [false, true, false]);
    assert_eq!(ex.stats[1].glyphs, 520);
    assert_eq!(ex.stats[1].undecoded, 520);
    assert_eq!(ex.stats[0].undecoded, 0);
}

#[test]
fn a_document_of_undecodable_glyphs_fails_with_that_reason() {
    let pdf = document(
        &[
            text_page("F2", "ABCDEFGHIJKLMNOPQRSTUVWXYZ", 30),
            text_page("F2", "ZYXWVUTSRQPONMLKJIHGFEDCBA", 30),
            // A page number in a real font is not enough to make it readable.
            text_page("F1", "2", 1),
        ],
        &[HELVETICA.to_vec(), undecodable_font()],
    );
    match extract(&pdf, &Limits::default()) {
        Err(e @ PdfError::Undecodable { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains("cannot be decoded"), "{msg}");
            assert!(msg.contains("2 of 3 pages"), "{msg}");
        }
        other => panic!("expected Undecodable, got {other:?}"),
    }
}
