//! arq's job dict and result dict (`spec/arq-wire.md` §2, §3) in both wire
//! formats: pickle (arq's default) and JSON (`job_serializer=json.dumps`).
//! Decoding takes bytes anyone with access to Redis may have written: both
//! formats are held to the limits of [`super::pickle`] (16 MiB, 32 levels of
//! nesting) and every malformed field is an error saying which and why.

use super::pickle::{from_pickle_bytes, too_deep, PyValue, MAX_INPUT_BYTES};
use crate::config::Serializer;

/// `{'t','f','a','k','et'}`: what `ArqRedis.enqueue_job` stores at `arq:job:<id>`.
#[derive(Debug, Clone, PartialEq)]
pub struct JobDef {
    /// `_job_try` given to `enqueue_job`; usually `None`.
    pub job_try: Option<i64>,
    pub function: String,
    pub args: Vec<PyValue>,
    pub kwargs: Vec<(String, PyValue)>,
    pub enqueue_time_ms: i64,
}

/// `{'t','f','a','k','et','s','r','st','ft','q','id'}`: what a worker stores at
/// `arq:result:<id>` when a job ends.
#[derive(Debug, Clone, PartialEq)]
pub struct JobResult {
    pub job_try: i64,
    pub function: String,
    pub args: Vec<PyValue>,
    pub kwargs: Vec<(String, PyValue)>,
    pub enqueue_time_ms: i64,
    pub success: bool,
    pub result: PyValue,
    pub start_ms: i64,
    pub finish_ms: i64,
    pub queue: String,
    pub job_id: String,
}

fn kwargs_value(kwargs: &[(String, PyValue)]) -> PyValue {
    PyValue::Dict(
        kwargs
            .iter()
            .map(|(k, v)| (PyValue::Str(k.clone()), v.clone()))
            .collect(),
    )
}

fn encode(dict: PyValue, serializer: Serializer) -> Vec<u8> {
    match serializer {
        Serializer::Pickle => dict.to_pickle(),
        Serializer::Json => serde_json::to_vec(&dict.to_json()).expect("JSON of plain values"),
    }
}

fn decode(bytes: &[u8], serializer: Serializer) -> Result<PyValue, String> {
    match serializer {
        Serializer::Pickle => from_pickle_bytes(bytes),
        Serializer::Json => {
            if bytes.len() > MAX_INPUT_BYTES {
                return Err(format!("the JSON is larger than {} MiB", MAX_INPUT_BYTES >> 20));
            }
            // serde_json stops at 128 levels itself; `from_json` at 32.
            let v = serde_json::from_slice::<serde_json::Value>(bytes).map_err(|e| {
                let msg = e.to_string();
                if msg.starts_with("recursion limit exceeded") {
                    too_deep()
                } else {
                    msg
                }
            })?;
            PyValue::from_json(&v)
        }
    }
}

/// "an int", "a str", "None": a value's type for an error message.
fn a_type(v: &PyValue) -> String {
    match v {
        PyValue::None => "None".to_string(),
        PyValue::Int(_) | PyValue::BigInt(_) | PyValue::Exception { .. } => format!("an {}", v.type_name()),
        _ => format!("a {}", v.type_name()),
    }
}

impl JobDef {
    pub fn encode(&self, serializer: Serializer) -> Vec<u8> {
        let t = self.job_try.map(PyValue::Int).unwrap_or(PyValue::None);
        let dict = PyValue::Dict(vec![
            (PyValue::str("t"), t),
            (PyValue::str("f"), PyValue::Str(self.function.clone())),
            (PyValue::str("a"), PyValue::Tuple(self.args.clone())),
            (PyValue::str("k"), kwargs_value(&self.kwargs)),
            (PyValue::str("et"), PyValue::Int(self.enqueue_time_ms)),
        ]);
        encode(dict, serializer)
    }

    /// Decodes a job dict; the error says what is wrong in words.
    pub fn decode(bytes: &[u8], serializer: Serializer) -> Result<JobDef, String> {
        let v = decode(bytes, serializer)?;
        if !matches!(v, PyValue::Dict(_)) {
            return Err(format!("the job is {}, expected a dict", a_type(&v)));
        }
        let function = match v.get("f") {
            Some(PyValue::Str(f)) => f.clone(),
            Some(other) => return Err(format!("the function name 'f' is {}, expected a str", a_type(other))),
            None => return Err("the job has no function name 'f'".into()),
        };
        let args = match v.get("a") {
            Some(PyValue::Tuple(items)) | Some(PyValue::List(items)) => items.clone(),
            Some(other) => return Err(format!("the args 'a' are {}, expected a tuple", a_type(other))),
            None => return Err("the job has no args 'a'".into()),
        };
        let kwargs = match v.get("k") {
            Some(PyValue::Dict(items)) => items
                .iter()
                .map(|(k, v)| {
                    k.as_str()
                        .map(|k| (k.to_string(), v.clone()))
                        .ok_or_else(|| format!("a kwargs key is {}, expected a str", a_type(k)))
                })
                .collect::<Result<Vec<_>, _>>()?,
            Some(PyValue::None) | None => Vec::new(),
            Some(other) => return Err(format!("the kwargs 'k' are {}, expected a dict", a_type(other))),
        };
        let job_try = match v.get("t") {
            Some(PyValue::Int(t)) => Some(*t),
            _ => None,
        };
        let enqueue_time_ms = match v.get("et") {
            Some(PyValue::Int(et)) => *et,
            Some(PyValue::BigInt(_)) => return Err("the enqueue time 'et' is out of range".into()),
            Some(other) => return Err(format!("the enqueue time 'et' is {}, expected an int", a_type(other))),
            None => return Err("the job has no enqueue time 'et'".into()),
        };
        Ok(JobDef {
            job_try,
            function,
            args,
            kwargs,
            enqueue_time_ms,
        })
    }
}

impl JobResult {
    pub fn encode(&self, serializer: Serializer) -> Vec<u8> {
        let dict = PyValue::Dict(vec![
            (PyValue::str("t"), PyValue::Int(self.job_try)),
            (PyValue::str("f"), PyValue::Str(self.function.clone())),
            (PyValue::str("a"), PyValue::Tuple(self.args.clone())),
            (PyValue::str("k"), kwargs_value(&self.kwargs)),
            (PyValue::str("et"), PyValue::Int(self.enqueue_time_ms)),
            (PyValue::str("s"), PyValue::Bool(self.success)),
            (PyValue::str("r"), self.result.clone()),
            (PyValue::str("st"), PyValue::Int(self.start_ms)),
            (PyValue::str("ft"), PyValue::Int(self.finish_ms)),
            (PyValue::str("q"), PyValue::Str(self.queue.clone())),
            (PyValue::str("id"), PyValue::Str(self.job_id.clone())),
        ]);
        encode(dict, serializer)
    }

    /// Reads a result back (tests and the jobs API use it; exceptions written
    /// by Python workers cannot be resolved and give an error).
    pub fn decode(bytes: &[u8], serializer: Serializer) -> Result<PyValue, String> {
        decode(bytes, serializer)
    }
}

/// `arq.worker.JobExecutionFailed(msg)`: what arq's client raises for a failed job.
pub fn job_execution_failed(msg: impl Into<String>) -> PyValue {
    PyValue::Exception {
        module: "arq.worker",
        name: "JobExecutionFailed",
        args: vec![PyValue::Str(msg.into())],
    }
}

/// `TimeoutError()`: arq's result for a job that ran past its timeout.
pub fn timeout_error() -> PyValue {
    PyValue::Exception {
        module: "builtins",
        name: "TimeoutError",
        args: vec![],
    }
}

/// `asyncio.CancelledError()`: arq's result for an aborted job (`Job.abort()` returns True on it).
pub fn cancelled_error() -> PyValue {
    PyValue::Exception {
        module: "asyncio.exceptions",
        name: "CancelledError",
        args: vec![],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job() -> JobDef {
        JobDef {
            job_try: None,
            function: "process_document".into(),
            args: vec![PyValue::str("d"), PyValue::str("u")],
            kwargs: vec![],
            enqueue_time_ms: 1_795_884_908_850,
        }
    }

    #[test]
    fn job_round_trips_in_both_formats() {
        for ser in [Serializer::Pickle, Serializer::Json] {
            let bytes = job().encode(ser);
            assert_eq!(JobDef::decode(&bytes, ser).unwrap(), job());
        }
    }

    #[test]
    fn json_job_has_arqs_exact_shape() {
        let v: serde_json::Value = serde_json::from_slice(&job().encode(Serializer::Json)).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"t": null, "f": "process_document", "a": ["d", "u"], "k": {}, "et": 1795884908850i64})
        );
    }

    #[test]
    fn pickle_job_matches_python_pickle_structure() {
        // Python: pickle.loads(bytes) == {'t': None, 'f': ..., 'a': ('d','u'), 'k': {}, 'et': ...}
        let v = from_pickle_bytes(&job().encode(Serializer::Pickle)).unwrap();
        assert_eq!(
            v.get("a"),
            Some(&PyValue::Tuple(vec![PyValue::str("d"), PyValue::str("u")]))
        );
        assert_eq!(v.get("k"), Some(&PyValue::Dict(vec![])));
        assert_eq!(v.get("t"), Some(&PyValue::None));
    }

    #[test]
    fn broken_jobs_say_why() {
        let err = JobDef::decode(b"{\"f\": 3}", Serializer::Json).unwrap_err();
        assert!(err.contains("function"), "{err}");
        assert!(JobDef::decode(b"\x80\x04garbage", Serializer::Pickle).is_err());
    }

    /// The job dict with one field replaced (or removed, for `None`), pickled.
    fn job_with(field: &str, value: Option<PyValue>) -> PyValue {
        let PyValue::Dict(items) = from_pickle_bytes(&job().encode(Serializer::Pickle)).unwrap() else {
            unreachable!()
        };
        let mut items: Vec<_> = items.into_iter().filter(|(k, _)| k.as_str() != Some(field)).collect();
        if let Some(v) = value {
            items.push((PyValue::str(field), v));
        }
        PyValue::Dict(items)
    }

    /// Decodes a job both ways (pickle and JSON) and returns the pickle's error.
    fn refused(dict: &PyValue) -> String {
        let pickle_err = JobDef::decode(&dict.to_pickle(), Serializer::Pickle).unwrap_err();
        let json = serde_json::to_vec(&dict.to_json()).unwrap();
        let json_err = JobDef::decode(&json, Serializer::Json).unwrap_err();
        assert_eq!(pickle_err, json_err);
        pickle_err
    }

    fn nested_list(depth: usize) -> PyValue {
        let mut v = PyValue::Int(1);
        for _ in 0..depth {
            v = PyValue::List(vec![v]);
        }
        v
    }

    #[test]
    fn malformed_job_dicts_say_what_is_wrong() {
        let s = PyValue::str;
        for (field, value, want) in [
            (
                "f",
                Some(PyValue::Int(3)),
                "the function name 'f' is an int, expected a str",
            ),
            (
                "f",
                Some(PyValue::None),
                "the function name 'f' is None, expected a str",
            ),
            ("f", None, "the job has no function name 'f'"),
            ("a", Some(s("doc-1")), "the args 'a' are a str, expected a tuple"),
            (
                "a",
                Some(PyValue::Dict(vec![])),
                "the args 'a' are a dict, expected a tuple",
            ),
            ("a", None, "the job has no args 'a'"),
            (
                "k",
                Some(PyValue::List(vec![])),
                "the kwargs 'k' are a list, expected a dict",
            ),
            (
                "et",
                Some(s("1795884908850")),
                "the enqueue time 'et' is a str, expected an int",
            ),
            (
                "et",
                Some(PyValue::Float(1.5)),
                "the enqueue time 'et' is a float, expected an int",
            ),
            (
                "et",
                Some(PyValue::Bool(true)),
                "the enqueue time 'et' is a bool, expected an int",
            ),
            ("et", None, "the job has no enqueue time 'et'"),
        ] {
            assert_eq!(refused(&job_with(field, value)), want, "{field}");
        }
        // Pickle only: keys that are not str (JSON's keys are), ints beyond i64.
        let int_key = job_with("k", Some(PyValue::Dict(vec![(PyValue::Int(1), s("x"))])));
        assert_eq!(
            JobDef::decode(&int_key.to_pickle(), Serializer::Pickle).unwrap_err(),
            "a kwargs key is an int, expected a str"
        );
        let big = job_with("et", Some(PyValue::BigInt("99999999999999999999".into())));
        assert_eq!(
            JobDef::decode(&big.to_pickle(), Serializer::Pickle).unwrap_err(),
            "the enqueue time 'et' is out of range"
        );
        assert_eq!(refused(&PyValue::List(vec![])), "the job is a list, expected a dict");
        assert_eq!(refused(&PyValue::Int(7)), "the job is an int, expected a dict");
        assert_eq!(refused(&s("job")), "the job is a str, expected a dict");
    }

    #[test]
    fn deep_args_are_refused_in_both_formats() {
        // 'a' is one level and the job dict another: 30 more fit, 31 do not.
        let fits = job_with("a", Some(PyValue::Tuple(vec![nested_list(30)])));
        for ser in [Serializer::Pickle, Serializer::Json] {
            let bytes = match ser {
                Serializer::Pickle => fits.to_pickle(),
                Serializer::Json => serde_json::to_vec(&fits.to_json()).unwrap(),
            };
            assert!(JobDef::decode(&bytes, ser).is_ok());
        }
        let deep = job_with("a", Some(PyValue::Tuple(vec![nested_list(31)])));
        assert_eq!(refused(&deep), "it is nested deeper than 32 levels");
        // Far beyond serde_json's own limit of 128, and far beyond the stack.
        for depth in [200usize, 100_000] {
            let json = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
            let started = std::time::Instant::now();
            let err = JobDef::decode(json.as_bytes(), Serializer::Json).unwrap_err();
            eprintln!("{depth}-deep JSON job: refused in {:?}", started.elapsed());
            assert_eq!(err, "it is nested deeper than 32 levels");
            assert!(JobResult::decode(json.as_bytes(), Serializer::Json).is_err());
        }
    }

    #[test]
    fn junk_payloads_are_errors_in_both_formats() {
        for bytes in [
            &b""[..],
            b"null",
            b"{\"f\": \"x\", \"a\": [], \"et\": 1",
            b"\xff\xfe",
            b"\x80\x05\x96\xf8\xff\xff\xff\xff\xff\xff\xff.",
            b"\x80\x04}\x94(\x8c\x01f\x94",
        ] {
            for ser in [Serializer::Pickle, Serializer::Json] {
                assert!(JobDef::decode(bytes, ser).is_err(), "{bytes:?}");
            }
        }
        let huge = vec![b' '; MAX_INPUT_BYTES + 1];
        assert_eq!(
            JobDef::decode(&huge, Serializer::Json).unwrap_err(),
            "the JSON is larger than 16 MiB"
        );
    }

    #[test]
    fn results_decode_in_both_formats() {
        let result = JobResult {
            job_try: 1,
            function: "process_document".into(),
            args: vec![PyValue::str("d")],
            kwargs: vec![],
            enqueue_time_ms: 1,
            success: true,
            result: PyValue::List(vec![PyValue::Int(3)]),
            start_ms: 2,
            finish_ms: 3,
            queue: "q".into(),
            job_id: "id".into(),
        };
        for ser in [Serializer::Pickle, Serializer::Json] {
            let v = JobResult::decode(&result.encode(ser), ser).unwrap();
            assert_eq!(v.get("r"), Some(&PyValue::List(vec![PyValue::Int(3)])));
        }
        // A failed result holds an exception, which a Python reader can use and we cannot.
        let failed = JobResult {
            success: false,
            result: job_execution_failed("job expired"),
            ..result
        };
        let err = JobResult::decode(&failed.encode(Serializer::Pickle), Serializer::Pickle).unwrap_err();
        assert!(err.contains("arq.worker.JobExecutionFailed"), "{err}");
    }
}
