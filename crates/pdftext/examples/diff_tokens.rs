//! Shows which tokens differ between our extraction of one PDF and
//! pdftotext's (`X.pdf.raw.txt`): a tool for tuning the extractor.
//!
//!     cargo run --release -p pdftext --example diff_tokens FILE.pdf [N]

use std::collections::HashMap;

fn main() {
    let path = std::path::PathBuf::from(std::env::args().nth(1).expect("FILE.pdf"));
    let n: usize = std::env::args().nth(2).and_then(|s| s.parse().ok()).unwrap_or(30);
    let ex = pdftext::extract(&std::fs::read(&path).unwrap(), &pdftext::Limits::default()).unwrap();
    let ours = ex.pages.join("\n");
    let reference = std::fs::read_to_string(path.with_extension("pdf.raw.txt")).unwrap();
    let count = |t: &str| {
        let mut m: HashMap<String, i64> = HashMap::new();
        for tok in pdftext::f1::tokens(t) {
            *m.entry(tok).or_default() += 1;
        }
        m
    };
    let (a, b) = (count(&ours), count(&reference));
    let mut extra: Vec<(i64, &String)> = a
        .iter()
        .map(|(k, v)| (v - b.get(k).copied().unwrap_or(0), k))
        .filter(|(d, _)| *d > 0)
        .collect();
    let mut missing: Vec<(i64, &String)> = b
        .iter()
        .map(|(k, v)| (v - a.get(k).copied().unwrap_or(0), k))
        .filter(|(d, _)| *d > 0)
        .collect();
    extra.sort_by(|x, y| y.cmp(x));
    missing.sort_by(|x, y| y.cmp(x));
    println!("F1 {:.4}", pdftext::token_f1(&ours, &reference));
    println!("only ours ({}): {:?}", extra.len(), &extra[..extra.len().min(n)]);
    println!(
        "only pdftotext ({}): {:?}",
        missing.len(),
        &missing[..missing.len().min(n)]
    );
    if std::env::args().any(|a| a == "--text") {
        println!("----\n{ours}");
    }
}
