//! Prints the text of a PDF (pages separated by form feeds), then what could
//! not be decoded, on stderr: a tool for looking at one file.
//!
//!     cargo run --release -p pdftext --example text FILE.pdf

fn main() {
    let path = std::env::args().nth(1).expect("FILE.pdf");
    match pdftext::extract(
        &std::fs::read(&path).expect("readable file"),
        &pdftext::Limits::default(),
    ) {
        Ok(ex) => {
            println!("{}", ex.pages.join("\n\u{c}"));
            let lost = ex.stats.iter().filter(|s| s.lost_text()).count();
            let (glyphs, undecoded) = ex
                .stats
                .iter()
                .fold((0, 0), |(g, u), s| (g + s.glyphs, u + s.undecoded));
            eprintln!(
                "{} pages, {glyphs} glyphs, {undecoded} undecoded, {lost} pages with lost text, {} page errors",
                ex.pages.len(),
                ex.page_errors.len()
            );
        }
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}
