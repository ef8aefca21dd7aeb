//! arq's job dict and result dict (`spec/arq-wire.md` §2, §3) in both wire
//! formats: pickle (arq's default) and JSON (`job_serializer=json.dumps`).

use super::pickle::{from_pickle_bytes, PyValue};
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
        Serializer::Json => serde_json::from_slice::<serde_json::Value>(bytes)
            .map(|v| PyValue::from_json(&v))
            .map_err(|e| e.to_string()),
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
        let function = v
            .get("f")
            .and_then(PyValue::as_str)
            .ok_or("the job has no function name 'f'")?
            .to_string();
        let args = match v.get("a") {
            Some(PyValue::Tuple(items)) | Some(PyValue::List(items)) => items.clone(),
            Some(other) => return Err(format!("'a' is a {}, expected a tuple", other.type_name())),
            None => return Err("the job has no args 'a'".into()),
        };
        let kwargs = match v.get("k") {
            Some(PyValue::Dict(items)) => items
                .iter()
                .map(|(k, v)| {
                    k.as_str()
                        .map(|k| (k.to_string(), v.clone()))
                        .ok_or_else(|| "a kwargs key is not a string".to_string())
                })
                .collect::<Result<Vec<_>, _>>()?,
            Some(PyValue::None) | None => Vec::new(),
            Some(other) => return Err(format!("'k' is a {}, expected a dict", other.type_name())),
        };
        let job_try = match v.get("t") {
            Some(PyValue::Int(t)) => Some(*t),
            _ => None,
        };
        let enqueue_time_ms = v
            .get("et")
            .and_then(PyValue::as_i64)
            .ok_or("the job has no enqueue time 'et'")?;
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
}
