//! Each engine's speed on this machine, without the daemon: 1000-character
//! chunks of a real manual (the corpus's gnuplot manual, 200-character
//! overlap, as the daemon cuts them) and short sentences, at several
//! sub-batch sizes; peak RSS. For the comparison with PyTorch, see
//! `cargo bench --bench embedding` in the workspace root.
//!
//!     cargo run --release -p minilm --example bench [MODEL_DIR] [candle|f32|bf16]

use std::time::Instant;

fn vm_hwm_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmHWM:")).map(str::to_string))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse::<f64>().ok()))
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

fn main() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let dir = std::env::args()
        .nth(1)
        .filter(|a| !a.is_empty())
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| root.join(".local/models/all-MiniLM-L6-v2"));
    let corpus = std::env::var("DOCULEARN_CORPUS")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| root.join("../shared/corpus"));
    let text = std::fs::read_to_string(corpus.join("gnuplot-manual.pdf.raw.txt")).expect("corpus");
    let chars: Vec<char> = text.chars().collect();
    let chunks: Vec<String> = (0..200)
        .map(|i| chars[i * 800..i * 800 + 1000].iter().collect())
        .collect();
    let sentences: Vec<String> = text
        .split(['.', '\n'])
        .map(str::trim)
        .filter(|s| s.len() > 20 && s.len() < 120)
        .take(400)
        .map(str::to_string)
        .collect();
    let options = match std::env::args().nth(2).as_deref() {
        Some("candle") => minilm::Options::candle(),
        other => minilm::Options {
            engine: minilm::EngineChoice::OpenVino,
            precision: if other == Some("f32") {
                minilm::Precision::F32
            } else {
                minilm::Precision::Bf16
            },
            ..minilm::Options::new(root.join(".local/openvino"))
        },
    };
    let t = Instant::now();
    let mut model = minilm::MiniLm::load(&dir, &options).expect("load");
    println!(
        "load: {:.2} s, engine {}, {} lanes",
        t.elapsed().as_secs_f64(),
        model.engine().label(),
        model.lanes()
    );
    println!(
        "threads: {}",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
    );
    for sub in [4, 8, 16, 32] {
        model.set_sub_batch(sub);
        let refs: Vec<&str> = chunks.iter().map(String::as_str).collect();
        let t = Instant::now();
        model.embed(&refs).unwrap();
        let secs = t.elapsed().as_secs_f64();
        println!(
            "1000-char chunks, sub-batch {sub:2}: {:6.1} chunks/s ({} chunks in {secs:.2} s)",
            refs.len() as f64 / secs,
            refs.len()
        );
    }
    model.set_sub_batch(16);
    let refs: Vec<&str> = sentences.iter().map(String::as_str).collect();
    let t = Instant::now();
    model.embed(&refs).unwrap();
    let secs = t.elapsed().as_secs_f64();
    println!(
        "short sentences, sub-batch 16: {:6.1} sentences/s ({} in {secs:.2} s)",
        refs.len() as f64 / secs,
        refs.len()
    );
    println!("peak RSS: {:.0} MB", vm_hwm_mb());
}
