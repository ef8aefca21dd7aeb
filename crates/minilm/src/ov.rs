//! The fast engine: the encoder as an OpenVINO IR (written by `ir.rs`,
//! cached on disk) on OpenVINO's CPU plugin, which runs the matrix products
//! in bf16 on CPUs that have bf16 dot products (AVX-512 BF16, AMX) and
//! keeps softmax, layer norm and pooling in f32. The runtime library is
//! loaded at run time from a folder (`scripts/install-openvino.sh` fills it
//! from the PyPI wheel): nothing OpenVINO is needed to build.
//!
//! One *lane* per infer request the plugin asks for (its streams: one per
//! core here); each lane runs one batch at a time, so callers on different
//! threads keep every core busy without oversubscribing them.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use openvino::{CompiledModel, Core, DeviceType, ElementType, InferRequest, PropertyKey, RwPropertyKey, Shape, Tensor};
use sha2::{Digest, Sha256};

use crate::bert::Config;
use crate::{Error, Precision};

pub struct OvEngine {
    lanes: Vec<Mutex<InferRequest>>,
    /// Keeps the compiled model (and the plugin) alive for the requests;
    /// behind a mutex only so the engine is `Sync` (they are never used again).
    _compiled: Mutex<CompiledModel>,
    _core: Mutex<Core>,
    pub precision: Precision,
    pub version: String,
}

/// Finds `libopenvino_c.so[.N]` in `dir`.
fn find_library(dir: &Path) -> Result<PathBuf, String> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| format!("cannot read {}: {e} (run scripts/install-openvino.sh)", dir.display()))?;
    let mut found: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libopenvino_c.so"))
        })
        .collect();
    found.sort();
    found.pop().ok_or_else(|| {
        format!(
            "no libopenvino_c.so in {} (run scripts/install-openvino.sh)",
            dir.display()
        )
    })
}

fn ov_err(what: &str) -> impl Fn(openvino::InferenceError) -> String + '_ {
    move |e| format!("{what}: {e}")
}

/// Which precision to run at, given what was asked for and the CPU's
/// capabilities as the plugin reports them (`OPTIMIZATION_CAPABILITIES`,
/// e.g. "FP32 BF16 INT8"). A CPU without bf16 arithmetic runs f32 (the
/// plugin would otherwise emulate bf16 slowly), with a note saying so.
pub fn pick_precision(requested: Precision, capabilities: &str) -> (Precision, Option<String>) {
    let has_bf16 = capabilities
        .split(|c: char| c.is_whitespace() || c == ',')
        .any(|c| c.eq_ignore_ascii_case("BF16"));
    match requested {
        Precision::Bf16 if !has_bf16 => (
            Precision::F32,
            Some(
                "this CPU has no bf16 arithmetic (OpenVINO reports: ".to_string()
                    + capabilities.trim()
                    + "); running OpenVINO in f32",
            ),
        ),
        p => (p, None),
    }
}

/// The IR files for these weights in `cache_dir`, written once.
fn cached_ir(cache_dir: &Path, weights: &[u8], config: &Config) -> Result<(PathBuf, PathBuf), Error> {
    let digest = hex(&Sha256::digest(weights)[..8]);
    let stem = format!("minilm-ir{}-{digest}", crate::ir::GRAPH_VERSION);
    let xml = cache_dir.join(format!("{stem}.xml"));
    let bin = cache_dir.join(format!("{stem}.bin"));
    if xml.exists() && bin.exists() {
        return Ok((xml, bin));
    }
    let io = |path: &Path, e: std::io::Error| Error::BadFile {
        path: path.display().to_string(),
        reason: e.to_string(),
    };
    std::fs::create_dir_all(cache_dir).map_err(|e| io(cache_dir, e))?;
    let (graph, blob) = crate::ir::build(weights, config)?;
    // Written under temporary names and renamed, bin first: a reader that
    // sees the XML also sees its complete weights.
    static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let writer = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    for (path, bytes) in [(&bin, blob.as_slice()), (&xml, graph.as_bytes())] {
        let part = path.with_extension(format!("part-{}-{writer}", std::process::id()));
        std::fs::write(&part, bytes).map_err(|e| io(&part, e))?;
        std::fs::rename(&part, path).map_err(|e| io(path, e))?;
    }
    Ok((xml, bin))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl OvEngine {
    /// Loads the runtime from `library_dir`, the IR from (or into)
    /// `cache_dir`, and compiles it for the CPU. The error is a sentence
    /// for the start-up log.
    pub fn load(
        library_dir: &Path,
        cache_dir: &Path,
        weights: &[u8],
        config: &Config,
        requested: Precision,
        threads: usize,
    ) -> Result<(OvEngine, Option<String>), String> {
        let library = find_library(library_dir)?;
        openvino_sys::library::load_from(&library).map_err(|e| format!("cannot load {}: {e}", library.display()))?;
        let version = openvino::version().build_number.clone();
        let mut core = Core::new().map_err(|e| format!("cannot start OpenVINO: {e}"))?;
        let capabilities = core
            .get_property(&DeviceType::CPU, &PropertyKey::DeviceCapabilities)
            .map_err(ov_err("cannot query the CPU plugin"))?;
        let (precision, note) = pick_precision(requested, &capabilities);
        let hint = match precision {
            Precision::Bf16 => "bf16",
            Precision::F32 => "f32",
        };
        let mut props = vec![
            (RwPropertyKey::HintInferencePrecision, hint.to_string()),
            (RwPropertyKey::HintPerformanceMode, "THROUGHPUT".to_string()),
        ];
        if threads > 0 {
            props.push((RwPropertyKey::InferenceNumThreads, threads.to_string()));
        }
        for (key, value) in props {
            core.set_property(&DeviceType::CPU, &key, &value)
                .map_err(ov_err("cannot configure the CPU plugin"))?;
        }
        let (xml, bin) = cached_ir(cache_dir, weights, config).map_err(|e| e.to_string())?;
        let model = core
            .read_model_from_file(&xml.to_string_lossy(), &bin.to_string_lossy())
            .map_err(ov_err("cannot read the OpenVINO model"))?;
        let mut compiled = core
            .compile_model(&model, DeviceType::CPU)
            .map_err(ov_err("cannot compile the model for the CPU"))?;
        let requests: usize = compiled
            .get_property(&PropertyKey::OptimalNumberOfInferRequests)
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(1)
            .clamp(1, 64);
        let lanes = (0..requests)
            .map(|_| compiled.create_infer_request().map(Mutex::new))
            .collect::<Result<Vec<_>, _>>()
            .map_err(ov_err("cannot create an infer request"))?;
        Ok((
            OvEngine {
                lanes,
                _compiled: Mutex::new(compiled),
                _core: Mutex::new(core),
                precision,
                version,
            },
            note,
        ))
    }

    pub fn lanes(&self) -> usize {
        self.lanes.len()
    }

    /// One padded batch on one lane: `ids` and `mask` are `[b, len]`
    /// row-major. Returns `b` unit vectors.
    pub fn run(&self, lane: usize, b: usize, len: usize, ids: &[i64], mask: &[i64]) -> Result<Vec<Vec<f32>>, String> {
        let shape = Shape::new(&[b as i64, len as i64]).map_err(ov_err("shape"))?;
        let tensor = |values: &[i64]| -> Result<Tensor, String> {
            let mut t = Tensor::new(ElementType::I64, &shape).map_err(ov_err("tensor"))?;
            t.get_data_mut::<i64>()
                .map_err(ov_err("tensor"))?
                .copy_from_slice(values);
            Ok(t)
        };
        let (ids, mask) = (tensor(ids)?, tensor(mask)?);
        let mut request = self.lanes[lane % self.lanes.len()]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        request.set_tensor("input_ids", &ids).map_err(ov_err("input"))?;
        request.set_tensor("attention_mask", &mask).map_err(ov_err("input"))?;
        request.infer().map_err(ov_err("inference"))?;
        let out = request.get_output_tensor_by_index(0).map_err(ov_err("output"))?;
        let data = out.get_data::<f32>().map_err(ov_err("output"))?;
        if b == 0 || data.len() % b != 0 {
            return Err(format!("unexpected output of {} values for {b} inputs", data.len()));
        }
        Ok(data.chunks(data.len() / b).map(<[f32]>::to_vec).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bf16_only_where_the_cpu_has_it() {
        let (p, note) = pick_precision(Precision::Bf16, "BF16 WINOGRAD FP32 FP16 INT8 BIN EXPORT_IMPORT");
        assert_eq!(p, Precision::Bf16);
        assert!(note.is_none());
        let (p, note) = pick_precision(Precision::Bf16, "WINOGRAD FP32 INT8 BIN EXPORT_IMPORT");
        assert_eq!(p, Precision::F32);
        assert!(note.unwrap().contains("no bf16"));
        let (p, note) = pick_precision(Precision::F32, "BF16 FP32");
        assert_eq!(p, Precision::F32);
        assert!(note.is_none());
    }
}
