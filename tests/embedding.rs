//! The local embedder as users and operators meet it: the engine it runs on
//! and says it runs on, the record kept with every vector, the fallback
//! when OpenVINO cannot load, the shared embedding pool (batches filled
//! from several documents, a bounded queue), and how close its vectors stay
//! to fp32 on every corpus document.

mod common;

use std::time::Duration;

use common::*;
use doculearn::config::Settings;
use doculearn::pipeline::embed;
use doculearn::pipeline::{chunk, extract};
use serde_json::{json, Value};
use uuid::Uuid;

/// The daemon's settings with the local provider and `extra` TOML on top.
fn settings(extra: &str) -> Settings {
    let file = std::env::temp_dir().join(format!("embedding-test-{}.toml", Uuid::new_v4()));
    std::fs::write(
        &file,
        format!(
            "[auth]\njwt_secret = \"{SECRET}\"\n[embedding]\nprovider = \"local\"\nmodel_dir = {:?}\nopenvino_dir = {:?}\n{extra}\n",
            model_dir().display().to_string(),
            openvino_dir().display().to_string(),
        ),
    )
    .unwrap();
    let s = Settings::load(Some(&file)).expect("settings");
    let _ = std::fs::remove_file(file);
    s
}

fn cos(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum()
}

async fn label_of_stored_vectors(pool: &sqlx::PgPool, document_id: &str) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT DISTINCT e.label FROM chunks c JOIN embedding_engines e ON e.id = c.engine_id \
         WHERE c.document_id = $1::uuid",
    )
    .bind(document_id)
    .fetch_all(pool)
    .await
    .unwrap()
}

/// By default the model runs on OpenVINO in bf16 (in f32 on a CPU without
/// bf16 arithmetic, which the start-up log explains); the start-up log names
/// the engine, the completed event and the arq result name it, and every
/// stored vector records it.
#[tokio::test(flavor = "multi_thread")]
async fn openvino_is_the_default_in_bf16_where_the_cpu_has_it_and_every_vector_records_it() {
    let d = Daemon::start(Opts::local()).await;
    let log = d.log_text();
    let engine = default_engine();
    assert!(
        log.contains("local model ready") && log.contains(engine),
        "start-up log names the engine:\n{log}"
    );
    assert!(!log.contains("OpenVINO is not available"), "{log}");
    assert_eq!(
        log.contains("this CPU has no bf16 arithmetic"),
        !cpu_has_bf16(),
        "the f32 fallback is explained exactly when the CPU lacks bf16:\n{log}"
    );
    let token = d.token(Uuid::new_v4());
    let (document_id, job_id, job) = d
        .process_corpus_file(&token, "debian-manifesto.txt", Duration::from_secs(60))
        .await;
    assert_eq!(job["stage"], "completed", "{job}");
    let (_, h) = d.get_json(&token, &format!("/api/v1/jobs/{job_id}/history")).await;
    let last = h["events"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["details"]["engine"], engine, "{last}");
    assert_eq!(last["details"]["model"], "sentence-transformers/all-MiniLM-L6-v2");
    let pool = d.db().await;
    assert_eq!(label_of_stored_vectors(&pool, &document_id).await, [engine]);
    // The metrics show the pool's forward passes.
    let metrics = d.metrics_text().await;
    assert!(metrics.contains("embedding_forward_batch_size_count"), "{metrics}");
}

/// Without the OpenVINO runtime the daemon says so in one line at start-up,
/// embeds with the built-in encoder, and the vectors say which.
#[tokio::test(flavor = "multi_thread")]
async fn without_openvino_the_daemon_says_so_in_one_line_and_embeds_with_candle() {
    let missing = std::env::temp_dir().join(format!("no-openvino-{}", Uuid::new_v4()));
    let d = Daemon::start(Opts::local().with("DOCULEARN_EMBEDDING__OPENVINO_DIR", missing.display())).await;
    let log = d.log_text();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("OpenVINO is not available"))
        .collect();
    assert_eq!(lines.len(), 1, "one line says why:\n{log}");
    assert!(lines[0].contains("WARN"), "{}", lines[0]);
    assert!(lines[0].contains(&missing.display().to_string()), "{}", lines[0]);
    assert!(lines[0].contains("install-openvino.sh"), "{}", lines[0]);
    assert!(lines[0].contains("candle-0.11/f32"), "{}", lines[0]);

    let token = d.token(Uuid::new_v4());
    let (document_id, _, job) = d
        .process_corpus_file(&token, "debian-manifesto.txt", Duration::from_secs(120))
        .await;
    assert_eq!(job["stage"], "completed", "{job}");
    let pool = d.db().await;
    assert_eq!(label_of_stored_vectors(&pool, &document_id).await, ["candle-0.11/f32"]);
    let (status, r) = d
        .post_json(
            &token,
            "/api/v1/search",
            &json!({ "query": "a distribution that lives up to the Linux name", "k": 1 }),
        )
        .await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["results"][0]["document_id"], Value::String(document_id));
}

/// Asked for OpenVINO explicitly, a daemon that cannot load it does not
/// start, and says why in words naming the setting.
#[test]
fn engine_openvino_without_the_runtime_stops_start_up() {
    let db = format!("dl_test_{}", &Uuid::new_v4().simple().to_string()[..12]);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_doculearn"))
        .arg("serve")
        .env("DOCULEARN_AUTH__JWT_SECRET", SECRET)
        .env(
            "DOCULEARN_DATABASE_URL",
            format!("postgres://postgres@127.0.0.1:5432/{db}"),
        )
        .env("DOCULEARN_HTTP__LISTEN", "127.0.0.1:0")
        .env("DOCULEARN_EMBEDDING__MODEL_DIR", model_dir())
        .env("DOCULEARN_EMBEDDING__ENGINE", "openvino")
        .env("DOCULEARN_EMBEDDING__OPENVINO_DIR", "/nonexistent/openvino")
        .output()
        .unwrap();
    let _ = std::process::Command::new("psql")
        .args(["-h", "127.0.0.1", "-U", "postgres", "-qc"])
        .arg(format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
        .output();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let last = err.trim().lines().last().unwrap_or_default();
    assert!(last.contains("`embedding.engine`"), "{err}");
    assert!(last.contains("scripts/install-openvino.sh"), "{err}");
}

/// One forward pass carries chunks of several documents: while the lanes
/// are busy with a big document, ten one-chunk documents queue up and are
/// embedded together, and each gets the vector it would have had alone.
#[test]
fn batches_are_filled_from_several_documents() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let metrics = doculearn::metrics::install();
    let embedder = rt.block_on(async { embed::build(&settings("")) }).unwrap();
    let text = std::fs::read_to_string(corpus_file("gnuplot-manual.pdf.raw.txt")).unwrap();
    let chars: Vec<char> = text.chars().collect();
    let big: Vec<String> = (0..20)
        .map(|i| chars[i * 800..i * 800 + 1000].iter().collect())
        .collect();
    let small: Vec<String> = (0..10)
        .map(|i| format!("Document {i} is short: one chunk about topic {i}."))
        .collect();
    let passes = |m: &str| -> f64 {
        m.lines()
            .find(|l| l.starts_with("embedding_forward_batch_size_count"))
            .and_then(|l| l.split_whitespace().last())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    let before = passes(&metrics.render());
    let (big_vectors, small_vectors) = rt.block_on(async {
        let big_job = embedder.clone().submit(big.clone());
        let small_jobs: Vec<_> = small.iter().map(|t| embedder.clone().submit(vec![t.clone()])).collect();
        let big_vectors = big_job.await.unwrap();
        let mut small_vectors = Vec::new();
        for j in small_jobs {
            small_vectors.push(j.await.unwrap().remove(0));
        }
        (big_vectors, small_vectors)
    });
    let used = passes(&metrics.render()) - before;
    // 30 texts in passes of 8: 4 passes when the documents share them; one
    // pass per small document would have taken 13.
    assert_eq!(used, 4.0, "forward passes for 20 + 10×1 texts");
    assert_eq!(big_vectors.len(), 20);
    let alone = rt.block_on(async {
        let mut v = Vec::new();
        for t in &small {
            v.push(embedder.embed(std::slice::from_ref(t)).await.unwrap().remove(0));
        }
        v
    });
    for (i, (shared, own)) in small_vectors.iter().zip(&alone).enumerate() {
        assert!(cos(shared, own) > 0.9999, "document {i}: cosine {}", cos(shared, own));
    }
}

/// The document queue is bounded, but a batch larger than all of it is
/// still embedded (it waits for the whole queue instead of forever).
#[test]
fn a_batch_larger_than_the_queue_still_completes() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let embedder = rt
        .block_on(async { embed::build(&settings("batch_size = 8\nqueue_capacity = 8")) })
        .unwrap();
    let texts: Vec<String> = (0..40)
        .map(|i| format!("Sentence number {i} of a long batch."))
        .collect();
    let vectors = rt.block_on(async {
        let first = embedder.clone().submit(texts.clone());
        let second = embedder.clone().submit(texts[..5].to_vec());
        let (a, b) = futures::join!(first, second);
        (a.unwrap(), b.unwrap())
    });
    assert_eq!(vectors.0.len(), 40);
    assert_eq!(vectors.1.len(), 5);
    assert!(cos(&vectors.0[3], &vectors.1[3]) > 0.9999);
}

/// The default engine against an f32 reference on every corpus document as
/// the daemon extracts and chunks it: up to 24 chunks of each, spread over
/// the whole document. With bf16 (a CPU that has it) the reference is
/// OpenVINO f32, itself checked against an independent numpy forward pass in
/// crates/minilm; on a CPU without bf16 the default is OpenVINO f32 and the
/// reference is the other implementation, candle. `cargo bench --bench
/// embedding` does every chunk of every document against PyTorch.
#[test]
fn vectors_stay_within_the_fidelity_bound_on_every_corpus_document() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let bf16 = rt.block_on(async { embed::build(&settings("")) }).unwrap();
    let reference = if cpu_has_bf16() {
        "precision = \"f32\""
    } else {
        "engine = \"candle\""
    };
    let f32 = rt.block_on(async { embed::build(&settings(reference)) }).unwrap();
    assert_eq!(bf16.engine(), default_engine());
    let want = if cpu_has_bf16() {
        "openvino-2026.4.1/f32"
    } else {
        "candle-0.11/f32"
    };
    assert_eq!(f32.engine(), want);
    let s = settings("");
    let limits = extract::Limits::from_settings(&s.pipeline);
    let files = corpus_documents();
    let (mut all, mut documents) = (Vec::new(), 0);
    for f in &files {
        let name = f.file_name().unwrap().to_string_lossy().to_string();
        let Ok(ex) = extract::extract_bytes(&std::fs::read(f).unwrap(), &name, "", &limits) else {
            continue; // the password-protected and the image-only PDF
        };
        let chunks = chunk::split(&ex, s.pipeline.chunk_size, s.pipeline.chunk_overlap);
        let step = chunks.len().div_ceil(24).max(1);
        let texts: Vec<String> = chunks.into_iter().step_by(step).map(|c| c.text).collect();
        let (a, b) = rt.block_on(async { (bf16.embed(&texts).await.unwrap(), f32.embed(&texts).await.unwrap()) });
        let c: Vec<f64> = a.iter().zip(&b).map(|(x, y)| cos(x, y)).collect();
        let min = c.iter().cloned().fold(1.0, f64::min);
        assert!(min >= 0.995, "{name}: minimum cosine {min}");
        all.extend(c);
        documents += 1;
    }
    assert!(documents >= 30, "every readable corpus document: {documents}");
    let mean = all.iter().sum::<f64>() / all.len() as f64;
    assert!(mean >= 0.999, "mean cosine {mean} over {} chunks", all.len());
}
