//! Our vectors against an independent numpy implementation of the same
//! model (tests/fixtures/reference.py), and a semantic sanity check.

use std::path::PathBuf;

use minilm::MiniLm;

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

fn cos(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[derive(serde::Deserialize)]
struct Reference {
    text: String,
    vector: Vec<f32>,
}

#[test]
fn vectors_match_an_independent_numpy_forward_pass() {
    let model = MiniLm::load(&model_dir(), 256).expect("model loads");
    assert_eq!(model.dimension(), 384);
    let refs: Vec<Reference> = serde_json::from_str(include_str!("fixtures/reference.json")).expect("fixture parses");
    let texts: Vec<&str> = refs.iter().map(|r| r.text.as_str()).collect();
    let ours = model.embed(&texts).expect("embeds");
    for (r, v) in refs.iter().zip(&ours) {
        assert_eq!(v.len(), 384);
        let norm: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "normalised: {norm}");
        let c = cos(v, &r.vector);
        assert!(c >= 0.9999, "cosine {c} for {:?}", &r.text[..r.text.len().min(40)]);
    }
    // Batching and padding do not change a text's vector.
    let alone = model.embed(&[texts[0]]).unwrap();
    assert!(cos(&alone[0], &ours[0]) > 0.99999);
}

#[test]
fn similar_sentences_are_closer() {
    let model = MiniLm::load(&model_dir(), 256).unwrap();
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
    let err = MiniLm::load(std::path::Path::new("/nonexistent/model"), 256)
        .err()
        .expect("fails");
    assert!(err.to_string().contains("scripts/install-model.sh"), "{err}");
}
