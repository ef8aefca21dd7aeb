//! Our vectors against an independent numpy implementation of the same
//! model (tests/fixtures/reference.py), on both engines, and a semantic
//! sanity check.

use std::path::{Path, PathBuf};

use minilm::{EngineChoice, MiniLm, Options, Precision};

fn model_dir() -> PathBuf {
    let dir = std::env::var("DOCULEARN_MODEL_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.local/models/all-MiniLM-L6-v2"));
    assert!(
        dir.join("model.safetensors").exists(),
        "the model is missing at {} (run scripts/install-model.sh)",
        dir.display()
    );
    dir
}

fn openvino_dir() -> PathBuf {
    std::env::var("DOCULEARN_OPENVINO_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.local/openvino"))
}

/// OpenVINO at `precision`, required (the setup installs it).
fn openvino(precision: Precision) -> MiniLm {
    let options = Options {
        engine: EngineChoice::OpenVino,
        precision,
        cache_dir: Some(PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("minilm-ir")),
        ..Options::new(openvino_dir())
    };
    MiniLm::load(&model_dir(), &options).expect("OpenVINO loads (scripts/install-openvino.sh)")
}

fn cos(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[derive(serde::Deserialize)]
struct Reference {
    text: String,
    vector: Vec<f32>,
}

/// Every reference vector within `min_cos` of ours; batching and padding
/// do not change a text's vector.
fn check_against_numpy(model: &MiniLm, min_cos: f32) {
    assert_eq!(model.dimension(), 384);
    let refs: Vec<Reference> = serde_json::from_str(include_str!("fixtures/reference.json")).expect("fixture parses");
    let texts: Vec<&str> = refs.iter().map(|r| r.text.as_str()).collect();
    let ours = model.embed(&texts).expect("embeds");
    for (r, v) in refs.iter().zip(&ours) {
        assert_eq!(v.len(), 384);
        let norm: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-3, "normalised: {norm}");
        let c = cos(v, &r.vector);
        assert!(
            c >= min_cos,
            "{}: cosine {c} for {:?}",
            model.engine().label(),
            &r.text[..r.text.len().min(40)]
        );
    }
    let alone = model.embed(&[texts[0]]).unwrap();
    assert!(cos(&alone[0], &ours[0]) > min_cos.min(0.99999));
    let one_lane = model.embed_on(0, &texts).unwrap();
    for (a, b) in one_lane.iter().zip(&ours) {
        assert!(cos(a, b) > 0.9999, "lanes agree");
    }
}

#[test]
fn candle_matches_an_independent_numpy_forward_pass() {
    let model = MiniLm::load(&model_dir(), &Options::candle()).expect("model loads");
    assert_eq!(model.engine().name, "candle");
    assert!(model.fallback_reason().is_none());
    check_against_numpy(&model, 0.9999);
}

#[test]
fn openvino_f32_matches_an_independent_numpy_forward_pass() {
    let model = openvino(Precision::F32);
    assert_eq!(model.engine().name, "openvino");
    assert_eq!(model.engine().precision, Precision::F32);
    check_against_numpy(&model, 0.9999);
}

/// Whether this CPU has bf16 arithmetic, from /proc/cpuinfo (independent of
/// OpenVINO's own report, which the engine goes by).
fn cpu_has_bf16() -> bool {
    std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("flags"))
        .any(|l| l.split_whitespace().any(|f| f == "avx512_bf16" || f == "amx_bf16"))
}

/// bf16 where the CPU has it, within the fidelity bound; on a CPU without
/// it, asking for bf16 runs f32 and says why (the plugin would emulate bf16
/// slowly), at f32's accuracy.
#[test]
fn openvino_bf16_stays_within_the_fidelity_bound_or_runs_f32_where_the_cpu_lacks_it() {
    let model = openvino(Precision::Bf16);
    assert!(model.lanes() >= 1);
    if cpu_has_bf16() {
        assert_eq!(model.engine().label(), "openvino-2026.4.1/bf16");
        assert!(model.fallback_reason().is_none());
        check_against_numpy(&model, 0.995);
    } else {
        assert_eq!(model.engine().label(), "openvino-2026.4.1/f32");
        let why = model.fallback_reason().expect("the f32 fallback says why");
        assert!(why.contains("no bf16 arithmetic"), "{why}");
        check_against_numpy(&model, 0.9999);
    }
}

#[test]
fn auto_falls_back_to_candle_and_says_why() {
    let options = Options {
        cache_dir: Some(PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("minilm-ir")),
        ..Options::new("/nonexistent/openvino")
    };
    let model = MiniLm::load(&model_dir(), &options).expect("falls back");
    assert_eq!(model.engine().name, "candle");
    let reason = model.fallback_reason().expect("a reason");
    assert!(reason.contains("OpenVINO is not available"), "{reason}");
    assert!(reason.contains("/nonexistent/openvino"), "{reason}");
    check_against_numpy(&model, 0.9999);
    // Asked for OpenVINO explicitly: an error instead.
    let strict = Options {
        engine: EngineChoice::OpenVino,
        ..options
    };
    let err = MiniLm::load(&model_dir(), &strict).err().expect("fails");
    assert!(err.to_string().contains("install-openvino.sh"), "{err}");
}

#[test]
fn similar_sentences_are_closer() {
    let model = openvino(Precision::Bf16);
    let v = model
        .embed(&[
            "A man is eating food.",
            "A man is eating a piece of bread.",
            "The girl is carrying a baby.",
        ])
        .unwrap();
    assert!(
        cos(&v[0], &v[1]) > cos(&v[0], &v[2]) + 0.2,
        "{} vs {}",
        cos(&v[0], &v[1]),
        cos(&v[0], &v[2])
    );
}

#[test]
fn a_missing_model_says_how_to_install_it() {
    let err = MiniLm::load(Path::new("/nonexistent/model"), &Options::candle())
        .err()
        .expect("fails");
    assert!(err.to_string().contains("scripts/install-model.sh"), "{err}");
}
