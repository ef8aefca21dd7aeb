//! The Python values arq's job and result dicts carry, and a small pickle
//! writer for them. Reading uses `serde-pickle` (it understands every protocol
//! and memo form Python emits); writing is ours because results must carry
//! exception instances (`GLOBAL module name` + args + `REDUCE`), which
//! `serde-pickle` cannot emit.

use serde_pickle::{HashableValue, Value};

/// A Python value as far as arq's dicts need one.
#[derive(Debug, Clone, PartialEq)]
pub enum PyValue {
    None,
    Bool(bool),
    Int(i64),
    /// An int beyond i64, kept as its decimal digits.
    BigInt(String),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    List(Vec<PyValue>),
    Tuple(Vec<PyValue>),
    Dict(Vec<(PyValue, PyValue)>),
    /// An exception instance, e.g. `arq.worker.JobExecutionFailed('job expired')`.
    Exception {
        module: &'static str,
        name: &'static str,
        args: Vec<PyValue>,
    },
}

impl PyValue {
    pub fn str(s: impl Into<String>) -> PyValue {
        PyValue::Str(s.into())
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            PyValue::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_i64(&self) -> Option<i64> {
        match self {
            PyValue::Int(i) => Some(*i),
            _ => None,
        }
    }

    /// Looks a string key up in a dict.
    pub fn get(&self, key: &str) -> Option<&PyValue> {
        match self {
            PyValue::Dict(items) => items.iter().find(|(k, _)| k.as_str() == Some(key)).map(|(_, v)| v),
            _ => None,
        }
    }

    /// Python's name of the value's type, for error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            PyValue::None => "None",
            PyValue::Bool(_) => "bool",
            PyValue::Int(_) | PyValue::BigInt(_) => "int",
            PyValue::Float(_) => "float",
            PyValue::Str(_) => "str",
            PyValue::Bytes(_) => "bytes",
            PyValue::List(_) => "list",
            PyValue::Tuple(_) => "tuple",
            PyValue::Dict(_) => "dict",
            PyValue::Exception { .. } => "exception",
        }
    }

    pub fn from_pickle(v: Value) -> PyValue {
        match v {
            Value::None => PyValue::None,
            Value::Bool(b) => PyValue::Bool(b),
            Value::I64(i) => PyValue::Int(i),
            Value::Int(big) => PyValue::BigInt(big.to_string()),
            Value::F64(f) => PyValue::Float(f),
            Value::Bytes(b) => PyValue::Bytes(b),
            Value::String(s) => PyValue::Str(s),
            Value::List(items) => PyValue::List(items.into_iter().map(PyValue::from_pickle).collect()),
            Value::Tuple(items) => PyValue::Tuple(items.into_iter().map(PyValue::from_pickle).collect()),
            // Sets have no JSON or arq meaning here; keep their items as a list.
            Value::Set(items) | Value::FrozenSet(items) => PyValue::List(
                items
                    .into_iter()
                    .map(|h| PyValue::from_pickle(h.into_value()))
                    .collect(),
            ),
            Value::Dict(map) => PyValue::Dict(
                map.into_iter()
                    .map(|(k, v)| (PyValue::from_pickle(hashable(k)), PyValue::from_pickle(v)))
                    .collect(),
            ),
        }
    }

    pub fn from_json(v: &serde_json::Value) -> PyValue {
        match v {
            serde_json::Value::Null => PyValue::None,
            serde_json::Value::Bool(b) => PyValue::Bool(*b),
            serde_json::Value::Number(n) => match n.as_i64() {
                Some(i) => PyValue::Int(i),
                None => match n.as_f64() {
                    Some(f) if n.is_f64() => PyValue::Float(f),
                    _ => PyValue::BigInt(n.to_string()),
                },
            },
            serde_json::Value::String(s) => PyValue::Str(s.clone()),
            serde_json::Value::Array(items) => PyValue::List(items.iter().map(PyValue::from_json).collect()),
            serde_json::Value::Object(map) => PyValue::Dict(
                map.iter()
                    .map(|(k, v)| (PyValue::Str(k.clone()), PyValue::from_json(v)))
                    .collect(),
            ),
        }
    }

    /// JSON form (arq's JSON serializer mode). Exceptions become
    /// `"Name: message"` strings: JSON cannot carry an exception instance.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match self {
            PyValue::None => J::Null,
            PyValue::Bool(b) => J::Bool(*b),
            PyValue::Int(i) => J::from(*i),
            PyValue::BigInt(s) => s
                .parse::<serde_json::Number>()
                .map(J::Number)
                .unwrap_or(J::String(s.clone())),
            PyValue::Float(f) => serde_json::Number::from_f64(*f).map(J::Number).unwrap_or(J::Null),
            PyValue::Str(s) => J::String(s.clone()),
            PyValue::Bytes(b) => J::String(String::from_utf8_lossy(b).into_owned()),
            PyValue::List(items) | PyValue::Tuple(items) => J::Array(items.iter().map(PyValue::to_json).collect()),
            PyValue::Dict(items) => J::Object(
                items
                    .iter()
                    .map(|(k, v)| {
                        let key = match k {
                            PyValue::Str(s) => s.clone(),
                            other => other.to_json().to_string(),
                        };
                        (key, v.to_json())
                    })
                    .collect(),
            ),
            PyValue::Exception { name, args, .. } => {
                let msg: Vec<String> = args
                    .iter()
                    .map(|a| {
                        a.as_str()
                            .map(str::to_string)
                            .unwrap_or_else(|| a.to_json().to_string())
                    })
                    .collect();
                if msg.is_empty() {
                    J::String((*name).to_string())
                } else {
                    J::String(format!("{name}: {}", msg.join(", ")))
                }
            }
        }
    }

    /// Pickles the value (protocol 2, readable by every Python 3).
    pub fn to_pickle(&self) -> Vec<u8> {
        let mut out = vec![0x80, 2];
        write(self, &mut out);
        out.push(b'.');
        out
    }
}

fn hashable(h: HashableValue) -> Value {
    h.into_value()
}

fn write_str(s: &str, out: &mut Vec<u8>) {
    out.push(b'X'); // BINUNICODE
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn write_long(i: i128, out: &mut Vec<u8>) {
    // LONG1: little-endian two's complement, minimal length.
    let bytes = i.to_le_bytes();
    let mut n = bytes.len();
    while n > 1 {
        let last = bytes[n - 1];
        let prev_sign = bytes[n - 2] & 0x80;
        if (last == 0x00 && prev_sign == 0) || (last == 0xff && prev_sign != 0) {
            n -= 1;
        } else {
            break;
        }
    }
    out.push(0x8a);
    out.push(n as u8);
    out.extend_from_slice(&bytes[..n]);
}

fn write(v: &PyValue, out: &mut Vec<u8>) {
    match v {
        PyValue::None => out.push(b'N'),
        PyValue::Bool(true) => out.push(0x88),
        PyValue::Bool(false) => out.push(0x89),
        PyValue::Int(i) => {
            if let Ok(small) = i32::try_from(*i) {
                out.push(b'J'); // BININT
                out.extend_from_slice(&small.to_le_bytes());
            } else {
                write_long(*i as i128, out);
            }
        }
        PyValue::BigInt(digits) => match digits.parse::<i128>() {
            Ok(i) => write_long(i, out),
            // Beyond i128: fall back to the digits as text rather than lose it silently.
            Err(_) => write_str(digits, out),
        },
        PyValue::Float(f) => {
            out.push(b'G'); // BINFLOAT, big-endian
            out.extend_from_slice(&f.to_be_bytes());
        }
        PyValue::Str(s) => write_str(s, out),
        PyValue::Bytes(b) => {
            // Protocol 2 has no BINBYTES; Python reads `_codecs.encode(str, 'latin1')`.
            out.extend_from_slice(b"c_codecs\nencode\n");
            let latin1: String = b.iter().map(|&c| c as char).collect();
            write_str(&latin1, out);
            write_str("latin1", out);
            out.push(0x86); // TUPLE2
            out.push(b'R');
        }
        PyValue::List(items) => {
            out.push(b']');
            if !items.is_empty() {
                out.push(b'(');
                for item in items {
                    write(item, out);
                }
                out.push(b'e'); // APPENDS
            }
        }
        PyValue::Tuple(items) => write_tuple(items, out),
        PyValue::Dict(items) => {
            out.push(b'}');
            if !items.is_empty() {
                out.push(b'(');
                for (k, v) in items {
                    write(k, out);
                    write(v, out);
                }
                out.push(b'u'); // SETITEMS
            }
        }
        PyValue::Exception { module, name, args } => {
            out.push(b'c'); // GLOBAL
            out.extend_from_slice(module.as_bytes());
            out.push(b'\n');
            out.extend_from_slice(name.as_bytes());
            out.push(b'\n');
            write_tuple(args, out);
            out.push(b'R'); // REDUCE
        }
    }
}

fn write_tuple(items: &[PyValue], out: &mut Vec<u8>) {
    match items.len() {
        0 => out.push(b')'),
        1 => {
            write(&items[0], out);
            out.push(0x85);
        }
        2 => {
            write(&items[0], out);
            write(&items[1], out);
            out.push(0x86);
        }
        3 => {
            for i in items {
                write(i, out);
            }
            out.push(0x87);
        }
        _ => {
            out.push(b'(');
            for i in items {
                write(i, out);
            }
            out.push(b't');
        }
    }
}

/// Reads any pickle into a [`PyValue`]. Globals we cannot resolve (datetime,
/// Decimal, custom classes) are an error naming them.
pub fn from_pickle_bytes(bytes: &[u8]) -> Result<PyValue, String> {
    serde_pickle::value_from_slice(bytes, serde_pickle::DeOptions::new())
        .map(PyValue::from_pickle)
        .map_err(|e| {
            // Globals serde-pickle resolves itself are not the problem.
            const HANDLED: [&str; 7] = [
                "_codecs.encode",
                "builtins.bytearray",
                "__builtin__.bytearray",
                "builtins.set",
                "builtins.frozenset",
                "__builtin__.set",
                "__builtin__.frozenset",
            ];
            let globals: Vec<String> = find_globals(bytes)
                .into_iter()
                .filter(|g| !HANDLED.contains(&g.as_str()))
                .collect();
            if globals.is_empty() {
                e.to_string()
            } else {
                format!(
                    "it holds Python objects doculearn cannot use ({}); send strings, numbers, lists or dicts",
                    globals.join(", ")
                )
            }
        })
}

/// Names (`module.name`) of the classes a pickle refers to, found by walking
/// its opcodes (protocols 0–5) without executing anything.
pub fn find_globals(bytes: &[u8]) -> Vec<String> {
    let mut found: Vec<String> = Vec::new();
    // Recent string values, for STACK_GLOBAL (module and name are the two
    // strings pushed before it, possibly through the memo).
    let mut strings: Vec<String> = Vec::new();
    let mut memo: std::collections::HashMap<u32, String> = std::collections::HashMap::new();
    let mut memo_next: u32 = 0;
    let mut last_string: Option<String> = None;
    let mut i = 0usize;
    let read_le = |b: &[u8], at: usize, n: usize| -> Option<u64> {
        let s = b.get(at..at + n)?;
        Some(s.iter().rev().fold(0u64, |acc, &x| (acc << 8) | x as u64))
    };
    let line = |b: &[u8], at: usize| -> Option<(String, usize)> {
        let end = b[at..].iter().position(|&c| c == b'\n')? + at;
        Some((String::from_utf8_lossy(&b[at..end]).into_owned(), end + 1))
    };
    let push = |found: &mut Vec<String>, name: String| {
        if !found.contains(&name) {
            found.push(name);
        }
    };
    while i < bytes.len() {
        let op = bytes[i];
        i += 1;
        let mut pushed_string: Option<String> = None;
        let step: Option<usize> = (|| {
            Some(match op {
                b'.' => return Some(usize::MAX),
                0x80 => 1,                                  // PROTO
                0x95 => 8,                                  // FRAME
                b'J' => 4,                                  // BININT
                b'K' => 1,                                  // BININT1
                b'M' => 2,                                  // BININT2
                b'G' => 8,                                  // BINFLOAT
                0x8a => 1 + *bytes.get(i)? as usize,        // LONG1
                0x8b => 4 + read_le(bytes, i, 4)? as usize, // LONG4
                0x8c | b'U' | b'C' => {
                    // SHORT_BINUNICODE / SHORT_BINSTRING / SHORT_BINBYTES
                    let n = *bytes.get(i)? as usize;
                    if op == 0x8c {
                        pushed_string = Some(String::from_utf8_lossy(bytes.get(i + 1..i + 1 + n)?).into_owned());
                    }
                    1 + n
                }
                b'X' | b'T' | b'B' => {
                    let n = read_le(bytes, i, 4)? as usize;
                    if op == b'X' {
                        pushed_string = Some(String::from_utf8_lossy(bytes.get(i + 4..i + 4 + n)?).into_owned());
                    }
                    4 + n
                }
                0x8d | 0x8e | 0x96 => 8 + read_le(bytes, i, 8)? as usize, // *8 variants
                b'h' | b'q' => {
                    // BINGET / BINPUT
                    let idx = *bytes.get(i)? as u32;
                    if op == b'h' {
                        pushed_string = memo.get(&idx).cloned();
                    } else if let Some(s) = &last_string {
                        memo.insert(idx, s.clone());
                    }
                    1
                }
                b'j' | b'r' => {
                    let idx = read_le(bytes, i, 4)? as u32;
                    if op == b'j' {
                        pushed_string = memo.get(&idx).cloned();
                    } else if let Some(s) = &last_string {
                        memo.insert(idx, s.clone());
                    }
                    4
                }
                0x94 => {
                    // MEMOIZE
                    if let Some(s) = &last_string {
                        memo.insert(memo_next, s.clone());
                    }
                    memo_next += 1;
                    0
                }
                0x82 => 1, // EXT1
                0x83 => 2, // EXT2
                0x84 => 4, // EXT4
                b'c' | b'i' => {
                    // GLOBAL / INST: two newline-terminated lines
                    let (module, after) = line(bytes, i)?;
                    let (name, after) = line(bytes, after)?;
                    push(&mut found, format!("{module}.{name}"));
                    after - i
                }
                b'I' | b'L' | b'F' | b'S' | b'V' | b'g' | b'p' | b'P' => {
                    let (text, after) = line(bytes, i)?;
                    if op == b'p' {
                        if let (Ok(idx), Some(s)) = (text.parse::<u32>(), &last_string) {
                            memo.insert(idx, s.clone());
                        }
                    }
                    if op == b'g' {
                        pushed_string = text.parse::<u32>().ok().and_then(|idx| memo.get(&idx).cloned());
                    }
                    after - i
                }
                0x93 => {
                    // STACK_GLOBAL
                    if strings.len() >= 2 {
                        let name = strings.pop().unwrap_or_default();
                        let module = strings.pop().unwrap_or_default();
                        push(&mut found, format!("{module}.{name}"));
                    }
                    0
                }
                _ => 0,
            })
        })();
        match step {
            Some(usize::MAX) => break,
            Some(n) => i += n,
            None => break,
        }
        if op != 0x94 && op != b'q' && op != b'r' && op != b'p' {
            last_string = pushed_string.clone();
        }
        if let Some(s) = pushed_string {
            strings.push(s);
            if strings.len() > 8 {
                strings.remove(0);
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Appendix A of spec/arq-wire.md: the 79 bytes arq 0.28 writes for
    /// `serialize_job('process_document', ('doc-1', 42), {}, None, 1764348000123)`.
    const ARQ_JOB: &[u8] = b"\x80\x04\x95D\x00\x00\x00\x00\x00\x00\x00}\x94(\x8c\x01t\x94N\x8c\x01f\x94\x8c\x10process_document\x94\x8c\x01a\x94\x8c\x05doc-1\x94K*\x86\x94\x8c\x01k\x94}\x94\x8c\x02et\x94\x8a\x06{\xf7U\xcb\x9a\x01u.";

    #[test]
    fn reads_arqs_own_job_bytes() {
        let v = from_pickle_bytes(ARQ_JOB).expect("decodes");
        assert_eq!(v.get("t"), Some(&PyValue::None));
        assert_eq!(v.get("f"), Some(&PyValue::str("process_document")));
        assert_eq!(
            v.get("a"),
            Some(&PyValue::Tuple(vec![PyValue::str("doc-1"), PyValue::Int(42)]))
        );
        assert_eq!(v.get("et").and_then(PyValue::as_i64), Some(1764348000123));
    }

    #[test]
    fn round_trips_through_serde_pickle() {
        let v = PyValue::Dict(vec![
            (PyValue::str("t"), PyValue::Int(1)),
            (
                PyValue::str("a"),
                PyValue::Tuple(vec![PyValue::str("x"), PyValue::Int(-5)]),
            ),
            (PyValue::str("et"), PyValue::Int(1764348000123)),
            (PyValue::str("neg"), PyValue::Int(-1764348000123)),
            (PyValue::str("f"), PyValue::Float(0.25)),
            (PyValue::str("s"), PyValue::Bool(true)),
            (PyValue::str("l"), PyValue::List(vec![PyValue::None, PyValue::str("é")])),
        ]);
        let back = from_pickle_bytes(&v.to_pickle()).unwrap();
        for key in ["t", "a", "et", "neg", "f", "s", "l"] {
            assert_eq!(back.get(key), v.get(key), "{key}");
        }
    }

    #[test]
    fn exceptions_are_global_reduce() {
        let e = PyValue::Exception {
            module: "arq.worker",
            name: "JobExecutionFailed",
            args: vec![PyValue::str("job expired")],
        };
        let bytes = e.to_pickle();
        assert!(bytes.starts_with(b"\x80\x02carq.worker\nJobExecutionFailed\nX"));
        assert!(bytes.ends_with(b"\x85R."));
        assert_eq!(e.to_json(), serde_json::json!("JobExecutionFailed: job expired"));
    }

    #[test]
    fn unusable_python_objects_are_named() {
        // Python 3.11: pickle.dumps({'a': (datetime(2026,1,2,3,4,5), Decimal('1.5'))})
        let bytes = b"\x80\x04\x95S\x00\x00\x00\x00\x00\x00\x00}\x94\x8c\x01a\x94\x8c\x08datetime\x94\x8c\x08datetime\x94\x93\x94C\n\x07\xea\x01\x02\x03\x04\x05\x00\x00\x00\x94\x85\x94R\x94\x8c\x07decimal\x94\x8c\x07Decimal\x94\x93\x94\x8c\x031.5\x94\x85\x94R\x94\x86\x94s.";
        let err = from_pickle_bytes(bytes).unwrap_err();
        assert!(err.contains("datetime.datetime"), "{err}");
        assert!(err.contains("decimal.Decimal"), "{err}");
        // Protocol 2 uses GLOBAL with text lines.
        let p2 = b"\x80\x02cdatetime\ndate\nq\x00c_codecs\nencode\nq\x01X\x05\x00\x00\x00\x07\xc3\xaa\x01\x02q\x02X\x06\x00\x00\x00latin1q\x03\x86q\x04Rq\x05\x85q\x06Rq\x07.";
        assert_eq!(
            find_globals(p2),
            vec!["datetime.date".to_string(), "_codecs.encode".to_string()]
        );
    }

    #[test]
    fn long1_is_minimal_twos_complement() {
        let mut out = Vec::new();
        write_long(255, &mut out);
        assert_eq!(out, vec![0x8a, 2, 0xff, 0x00]);
        out.clear();
        write_long(-1, &mut out);
        assert_eq!(out, vec![0x8a, 1, 0xff]);
    }
}
