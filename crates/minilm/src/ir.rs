//! Writes the model as an OpenVINO IR (an XML graph plus a binary weights
//! file) straight from `model.safetensors`: the same encoder as `bert.rs`
//! (embeddings, six post-norm transformer layers, erf GELU) followed by
//! attention-masked mean pooling and L2 normalisation, so one inference
//! returns finished sentence vectors. No Python, no ONNX, no torch: the
//! graph is a few dozen standard opset nodes written out here, and the
//! weights stay fp32 on disk (OpenVINO lowers them to bf16 at compile time
//! when asked to).
//!
//! Inputs: `input_ids` and `attention_mask`, both i64 `[batch, len]` with
//! dynamic dimensions. Output: f32 `[batch, hidden]`, unit length.

use std::fmt::Write as _;

use safetensors::SafeTensors;

use crate::bert::Config;
use crate::Error;

/// Bumped whenever the graph written here changes, so a cached IR of an
/// older graph is not reused.
pub const GRAPH_VERSION: u32 = 1;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Ty {
    F32,
    I64,
}

impl Ty {
    fn precision(self) -> &'static str {
        match self {
            Ty::F32 => "FP32",
            Ty::I64 => "I64",
        }
    }
    fn element_type(self) -> &'static str {
        match self {
            Ty::F32 => "f32",
            Ty::I64 => "i64",
        }
    }
}

/// One output port of a node.
#[derive(Clone, Copy)]
struct Out {
    layer: usize,
    port: usize,
    ty: Ty,
}

/// An IR being written: layers as XML, edges, and the weights blob.
struct Graph {
    layers: String,
    edges: Vec<(Out, usize, usize)>,
    weights: Vec<u8>,
    next: usize,
}

fn dims_xml(dims: &[i64]) -> String {
    dims.iter().map(|d| format!("<dim>{d}</dim>")).collect()
}

impl Graph {
    fn new() -> Self {
        Graph {
            layers: String::new(),
            edges: Vec::new(),
            weights: Vec::new(),
            next: 0,
        }
    }

    fn id(&mut self) -> usize {
        self.next += 1;
        self.next - 1
    }

    fn parameter(&mut self, name: &str, ty: Ty) -> Out {
        let id = self.id();
        let _ = writeln!(
            self.layers,
            r#"<layer id="{id}" name="{name}" type="Parameter" version="opset1"><data shape="?,?" element_type="{}"/><output><port id="0" precision="{}" names="{name}">{}</port></output></layer>"#,
            ty.element_type(),
            ty.precision(),
            dims_xml(&[-1, -1]),
        );
        Out { layer: id, port: 0, ty }
    }

    fn constant_bytes(&mut self, ty: Ty, shape: &[usize], bytes: &[u8]) -> Out {
        // 64-byte aligned, so the runtime can use the weights in place.
        while !self.weights.len().is_multiple_of(64) {
            self.weights.push(0);
        }
        let offset = self.weights.len();
        self.weights.extend_from_slice(bytes);
        let id = self.id();
        let shape_attr = shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(",");
        let dims: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
        let _ = writeln!(
            self.layers,
            r#"<layer id="{id}" name="const_{id}" type="Const" version="opset1"><data element_type="{}" shape="{shape_attr}" offset="{offset}" size="{}"/><output><port id="0" precision="{}">{}</port></output></layer>"#,
            ty.element_type(),
            bytes.len(),
            ty.precision(),
            dims_xml(&dims),
        );
        Out { layer: id, port: 0, ty }
    }

    fn f32s(&mut self, shape: &[usize], values: &[f32]) -> Out {
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.constant_bytes(Ty::F32, shape, &bytes)
    }

    fn scalar(&mut self, v: f32) -> Out {
        self.f32s(&[1], &[v])
    }

    fn i64s(&mut self, values: &[i64]) -> Out {
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.constant_bytes(Ty::I64, &[values.len()], &bytes)
    }

    /// A node with `inputs` on ports 0..n and one output on port n.
    fn op(&mut self, kind: &str, version: &str, data: &str, inputs: &[Out], ty: Ty) -> Out {
        let id = self.id();
        let data = if data.is_empty() {
            String::new()
        } else {
            format!("<data {data}/>")
        };
        let ins: String = inputs
            .iter()
            .enumerate()
            .map(|(i, o)| format!(r#"<port id="{i}" precision="{}"/>"#, o.ty.precision()))
            .collect();
        let out_port = inputs.len();
        let _ = writeln!(
            self.layers,
            r#"<layer id="{id}" name="{kind}_{id}" type="{kind}" version="{version}">{data}<input>{ins}</input><output><port id="{out_port}" precision="{}"/></output></layer>"#,
            ty.precision(),
        );
        for (i, o) in inputs.iter().enumerate() {
            self.edges.push((*o, id, i));
        }
        Out {
            layer: id,
            port: out_port,
            ty,
        }
    }

    fn result(&mut self, x: Out) {
        let id = self.id();
        let _ = writeln!(
            self.layers,
            r#"<layer id="{id}" name="sentence_embedding" type="Result" version="opset1"><input><port id="0" precision="{}"/></input></layer>"#,
            x.ty.precision()
        );
        self.edges.push((x, id, 0));
    }

    fn binary(&mut self, kind: &str, a: Out, b: Out) -> Out {
        self.op(kind, "opset1", r#"auto_broadcast="numpy""#, &[a, b], a.ty)
    }
    fn add(&mut self, a: Out, b: Out) -> Out {
        self.binary("Add", a, b)
    }
    fn mul(&mut self, a: Out, b: Out) -> Out {
        self.binary("Multiply", a, b)
    }
    fn matmul(&mut self, a: Out, b: Out, transpose_b: bool) -> Out {
        self.op(
            "MatMul",
            "opset1",
            &format!(r#"transpose_a="false" transpose_b="{transpose_b}""#),
            &[a, b],
            Ty::F32,
        )
    }
    fn reshape(&mut self, x: Out, shape: &[i64]) -> Out {
        let s = self.i64s(shape);
        self.op("Reshape", "opset1", r#"special_zero="true""#, &[x, s], x.ty)
    }
    fn transpose(&mut self, x: Out, order: &[i64]) -> Out {
        let o = self.i64s(order);
        self.op("Transpose", "opset1", "", &[x, o], x.ty)
    }
    fn reduce_sum(&mut self, x: Out, axis: i64, keep_dims: bool) -> Out {
        let a = self.i64s(&[axis]);
        self.op(
            "ReduceSum",
            "opset1",
            &format!(r#"keep_dims="{keep_dims}""#),
            &[x, a],
            x.ty,
        )
    }
    fn unsqueeze(&mut self, x: Out, axes: &[i64]) -> Out {
        let a = self.i64s(axes);
        self.op("Unsqueeze", "opset1", "", &[x, a], x.ty)
    }

    fn xml(&self, name: &str) -> String {
        let mut s = String::with_capacity(self.layers.len() + self.edges.len() * 64 + 256);
        let _ = writeln!(s, r#"<?xml version="1.0"?>"#);
        let _ = writeln!(s, r#"<net name="{name}" version="11">"#);
        s.push_str("<layers>\n");
        s.push_str(&self.layers);
        s.push_str("</layers>\n<edges>\n");
        for (from, to, port) in &self.edges {
            let _ = writeln!(
                s,
                r#"<edge from-layer="{}" from-port="{}" to-layer="{to}" to-port="{port}"/>"#,
                from.layer, from.port
            );
        }
        s.push_str("</edges>\n</net>\n");
        s
    }
}

/// The weights the graph needs, read from the safetensors file.
struct Weights<'a> {
    st: SafeTensors<'a>,
}

impl Weights<'_> {
    /// Little-endian f32 bytes of `name` and its shape.
    fn get(&self, name: &str) -> Result<(Vec<usize>, &[u8]), Error> {
        let t = self.st.tensor(name).map_err(|e| Error::BadFile {
            path: "model.safetensors".into(),
            reason: format!("tensor {name}: {e}"),
        })?;
        if t.dtype() != safetensors::Dtype::F32 {
            return Err(Error::BadFile {
                path: "model.safetensors".into(),
                reason: format!("tensor {name} is {:?}, expected F32", t.dtype()),
            });
        }
        Ok((t.shape().to_vec(), t.data()))
    }

    fn constant(&self, g: &mut Graph, name: &str) -> Result<Out, Error> {
        let (shape, bytes) = self.get(name)?;
        Ok(g.constant_bytes(Ty::F32, &shape, bytes))
    }
}

/// The IR of the sentence encoder: (XML text, weights blob).
pub fn build(safetensors_bytes: &[u8], c: &Config) -> Result<(String, Vec<u8>), Error> {
    let st = SafeTensors::deserialize(safetensors_bytes).map_err(|e| Error::BadFile {
        path: "model.safetensors".into(),
        reason: e.to_string(),
    })?;
    let w = Weights { st };
    let h = c.hidden_size as i64;
    let heads = c.num_attention_heads as i64;
    let head_dim = h / heads;
    let eps = c.layer_norm_eps;
    let mut g = Graph::new();

    let ids = g.parameter("input_ids", Ty::I64);
    let mask = g.parameter("attention_mask", Ty::I64);

    let layer_norm = |g: &mut Graph, x: Out, prefix: &str| -> Result<Out, Error> {
        let axes = g.i64s(&[-1]);
        let n = g.op(
            "MVN",
            "opset6",
            &format!(r#"eps="{eps:e}" normalize_variance="true" eps_mode="INSIDE_SQRT""#),
            &[x, axes],
            Ty::F32,
        );
        let gamma = w.constant(g, &format!("{prefix}.weight"))?;
        let beta = w.constant(g, &format!("{prefix}.bias"))?;
        let scaled = g.mul(n, gamma);
        Ok(g.add(scaled, beta))
    };
    // nn.Linear: x · Wᵀ + b (the weight is stored [out, in]).
    let linear = |g: &mut Graph, x: Out, prefix: &str| -> Result<Out, Error> {
        let weight = w.constant(g, &format!("{prefix}.weight"))?;
        let bias = w.constant(g, &format!("{prefix}.bias"))?;
        let y = g.matmul(x, weight, true);
        Ok(g.add(y, bias))
    };

    // Embeddings: word + position (0..len) + token type 0, then LayerNorm.
    let word_table = w.constant(&mut g, "embeddings.word_embeddings.weight")?;
    let axis0 = g.i64s(&[0]);
    let word = g.op(
        "Gather",
        "opset8",
        r#"batch_dims="0""#,
        &[word_table, ids, axis0],
        Ty::F32,
    );
    let shape = g.op("ShapeOf", "opset3", r#"output_type="i64""#, &[ids], Ty::I64);
    let one = g.i64s(&[1]);
    let axis0b = g.i64s(&[0]);
    let seq_len = g.op("Gather", "opset8", r#"batch_dims="0""#, &[shape, one, axis0b], Ty::I64);
    let pos_table = w.constant(&mut g, "embeddings.position_embeddings.weight")?;
    let (start, step, axis) = (g.i64s(&[0]), g.i64s(&[1]), g.i64s(&[0]));
    let positions = g.op("Slice", "opset8", "", &[pos_table, start, seq_len, step, axis], Ty::F32);
    let (type_shape, type_bytes) = w.get("embeddings.token_type_embeddings.weight")?;
    let row = type_shape.get(1).copied().unwrap_or(0) * 4;
    let token_type = g.constant_bytes(Ty::F32, &[c.hidden_size], &type_bytes[..row]);
    let x = g.add(word, positions);
    let x = g.add(x, token_type);
    let mut x = layer_norm(&mut g, x, "embeddings.LayerNorm")?;

    // Additive attention bias [b, 1, 1, len]: 0 on tokens, -1e9 on padding.
    let mask_f = g.op("Convert", "opset1", r#"destination_type="f32""#, &[mask], Ty::F32);
    let one_f = g.scalar(1.0);
    let big = g.scalar(1e9);
    let off = g.binary("Subtract", mask_f, one_f);
    let bias = g.mul(off, big);
    let bias = g.unsqueeze(bias, &[1, 2]);

    let scale = g.scalar(1.0 / (head_dim as f32).sqrt());
    for i in 0..c.num_hidden_layers {
        let p = format!("encoder.layer.{i}");
        let split = |g: &mut Graph, t: Out| {
            let t = g.reshape(t, &[0, 0, heads, head_dim]);
            g.transpose(t, &[0, 2, 1, 3])
        };
        let q = linear(&mut g, x, &format!("{p}.attention.self.query"))?;
        let k = linear(&mut g, x, &format!("{p}.attention.self.key"))?;
        let v = linear(&mut g, x, &format!("{p}.attention.self.value"))?;
        let (q, k, v) = (split(&mut g, q), split(&mut g, k), split(&mut g, v));
        let scores = g.matmul(q, k, true);
        let scores = g.mul(scores, scale);
        let scores = g.add(scores, bias);
        let probs = g.op("SoftMax", "opset8", r#"axis="-1""#, &[scores], Ty::F32);
        let ctx = g.matmul(probs, v, false);
        let ctx = g.transpose(ctx, &[0, 2, 1, 3]);
        let ctx = g.reshape(ctx, &[0, 0, h]);
        let attn = linear(&mut g, ctx, &format!("{p}.attention.output.dense"))?;
        let attn = g.add(attn, x);
        x = layer_norm(&mut g, attn, &format!("{p}.attention.output.LayerNorm"))?;
        let inner = linear(&mut g, x, &format!("{p}.intermediate.dense"))?;
        let inner = g.op("Gelu", "opset7", r#"approximation_mode="ERF""#, &[inner], Ty::F32);
        let out = linear(&mut g, inner, &format!("{p}.output.dense"))?;
        let out = g.add(out, x);
        x = layer_norm(&mut g, out, &format!("{p}.output.LayerNorm"))?;
    }

    // Mean over real tokens, then L2 normalisation.
    let m = g.unsqueeze(mask_f, &[2]);
    let masked = g.mul(x, m);
    let summed = g.reduce_sum(masked, 1, false);
    let counts = g.reduce_sum(m, 1, false);
    let tiny = g.scalar(1e-9);
    let counts = g.binary("Maximum", counts, tiny);
    let mean = g.binary("Divide", summed, counts);
    let squares = g.mul(mean, mean);
    let sum_sq = g.reduce_sum(squares, 1, true);
    let norm = g.op("Sqrt", "opset1", "", &[sum_sq], Ty::F32);
    let floor = g.scalar(1e-12);
    let norm = g.binary("Maximum", norm, floor);
    let unit = g.binary("Divide", mean, norm);
    g.result(unit);
    Ok((g.xml("all-MiniLM-L6-v2"), g.weights))
}
