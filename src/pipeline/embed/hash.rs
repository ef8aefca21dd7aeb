//! An instant, deterministic embedder: word unigrams and bigrams hashed into
//! a fixed number of buckets, L2-normalised. Texts sharing words are close,
//! which is enough for tests and for measuring everything but the model.
//! It understands nothing; never use it for real search.

use super::{EmbedError, Embedder};

pub struct HashEmbedder {
    model: String,
    dimension: usize,
    batch_size: usize,
}

impl HashEmbedder {
    pub fn new(model: impl Into<String>, dimension: usize, batch_size: usize) -> Self {
        HashEmbedder {
            model: model.into(),
            dimension: dimension.max(8),
            batch_size,
        }
    }

    pub fn embed_one(&self, text: &str) -> Vec<f32> {
        fn fnv(bytes: &[u8], seed: u64) -> u64 {
            let mut h = 0xcbf29ce484222325u64 ^ seed;
            for b in bytes {
                h ^= *b as u64;
                h = h.wrapping_mul(0x100000001b3);
            }
            h
        }
        let mut v = vec![0f32; self.dimension];
        let words: Vec<String> = text
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
            .map(|w| w.to_lowercase())
            .collect();
        let mut add = |key: &[u8], weight: f32| {
            let h = fnv(key, 7);
            let idx = (h % self.dimension as u64) as usize;
            let sign = if (h >> 63) == 0 { 1.0 } else { -1.0 };
            v[idx] += sign * weight;
        };
        for (i, w) in words.iter().enumerate() {
            add(w.as_bytes(), 1.0);
            if let Some(next) = words.get(i + 1) {
                add(format!("{w} {next}").as_bytes(), 0.5);
            }
        }
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        if norm > 0.0 {
            v.iter_mut().for_each(|x| *x /= norm);
        } else {
            v[0] = 1.0;
        }
        v
    }
}

#[async_trait::async_trait]
impl Embedder for HashEmbedder {
    fn model(&self) -> &str {
        &self.model
    }
    fn engine(&self) -> &str {
        "feature-hash"
    }
    fn dimension(&self) -> usize {
        self.dimension
    }
    fn batch_size(&self) -> usize {
        self.batch_size
    }
    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        Ok(texts.iter().map(|t| self.embed_one(t)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cos(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }

    #[test]
    fn shared_words_are_close() {
        let e = HashEmbedder::new("h", 384, 8);
        let a = e.embed_one("the quick brown fox jumps");
        let b = e.embed_one("a quick brown fox leaps");
        let c = e.embed_one("database index tuning");
        assert!((cos(&a, &a) - 1.0).abs() < 1e-5);
        assert!(cos(&a, &b) > cos(&a, &c));
        assert_eq!(e.embed_one("").len(), 384);
    }
}
