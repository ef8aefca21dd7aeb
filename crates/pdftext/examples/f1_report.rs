//! Agreement with pdftotext over the corpus: one line per PDF with pages,
//! token F1 against `X.pdf.raw.txt`, characters and time; then pages/s.
//!
//!     cargo run --release -p pdftext --example f1_report [CORPUS_DIR]

use std::time::Instant;

fn main() {
    let dir = std::env::args()
        .nth(1)
        .or_else(|| std::env::var("DOCULEARN_CORPUS").ok())
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/corpus"));
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("corpus dir")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "pdf"))
        .collect();
    files.sort();
    let (mut pages, mut secs) = (0usize, 0f64);
    println!("{:<45} {:>5} {:>7} {:>9} {:>8}", "file", "pages", "F1", "chars", "ms");
    for path in files {
        let bytes = std::fs::read(&path).unwrap();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let t = Instant::now();
        let result = pdftext::extract(&bytes, &pdftext::Limits::default());
        let ms = t.elapsed().as_secs_f64() * 1000.0;
        secs += ms / 1000.0;
        match result {
            Ok(ex) => {
                let text = ex.pages.join("\n");
                pages += ex.pages.len();
                let reference = std::fs::read_to_string(path.with_extension("pdf.raw.txt")).ok();
                let f1 = reference
                    .map(|r| format!("{:.4}", pdftext::token_f1(&text, &r)))
                    .unwrap_or_else(|| "-".into());
                let errs = if ex.page_errors.is_empty() {
                    String::new()
                } else {
                    format!(" ({} page errors)", ex.page_errors.len())
                };
                println!(
                    "{name:<45} {:>5} {f1:>7} {:>9} {ms:>8.0}{errs}",
                    ex.pages.len(),
                    text.chars().count()
                );
            }
            Err(e) => println!("{name:<45} {:>5} {:>7} {:>9} {ms:>8.0}  {e}", "-", "-", "-"),
        }
    }
    println!(
        "total: {pages} pages in {secs:.2} s = {:.0} pages/s",
        pages as f64 / secs
    );
}
