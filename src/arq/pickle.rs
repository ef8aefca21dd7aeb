//! The Python values arq's job and result dicts carry, a bounded pickle
//! reader for them and a small pickle writer.
//!
//! Reading is ours because the bytes come from Redis, where anyone who can
//! write to it (or a buggy backend) can put anything: the reader understands
//! everything Python 3's `pickle.dumps` emits at protocols 0 to 5 for `None`,
//! bools, ints, floats, str, bytes, bytearray, lists, tuples, dicts and sets,
//! with the memo, and refuses the rest (other classes are named in the error).
//! It executes nothing and is bounded by the limits below: it stops, with a
//! short readable error, after time and memory proportional to the input and
//! to [`MAX_VALUES`], never recurses deeper than [`MAX_DEPTH`], and every
//! length in the input is checked before use.
//!
//! Writing is ours because results must carry exception instances
//! (`GLOBAL module name` + args + `REDUCE`).

use std::collections::HashMap;

/// Largest pickle (or JSON job payload) accepted: 16 MiB.
pub const MAX_INPUT_BYTES: usize = 16 << 20;

/// Deepest nesting of containers (list, tuple, dict, set) accepted: `[[1]]`
/// is 2 deep. The same limit holds for JSON. Converting, comparing and
/// dropping a [`PyValue`] recurse once per level, so this bounds the stack.
pub const MAX_DEPTH: usize = 32;

/// Most values one decode builds: the reader pushes at most this many
/// values (every memo GET counts, and so does every item a `set(list)` call
/// copies), and the decoded tree holds at most this many values, a value the
/// memo shares counting each time it appears (so memo references cannot
/// blow up memory: "billion laughs").
pub const MAX_VALUES: usize = 1_000_000;

/// Most str, bytes and int-digit bytes one decode builds: 64 MiB, counted like
/// [`MAX_VALUES`] (a memo-shared str counts each time it appears).
pub const MAX_TEXT_BYTES: usize = 64 << 20;

/// Longest int accepted, in decimal digits (Python itself refuses `str()` of
/// ints beyond 4300 digits).
pub const MAX_INT_DIGITS: usize = 1000;

/// Longest binary int (`LONG1`/`LONG4`) accepted: 2^(8*415) < 10^1000, so its
/// digits stay within [`MAX_INT_DIGITS`] (and converting it stays cheap).
const MAX_LONG_BYTES: usize = 415;

/// Most MARKs open at once. A value [`MAX_DEPTH`] deep needs at most two per
/// level (protocols 0 and 1 write `set(list)` as a call with a tuple of a
/// list) and a few for a leaf's `bytearray(_codecs.encode(..))`.
const MAX_MARKS: usize = 2 * MAX_DEPTH + 4;

/// Distinct class names kept for an error message (and [`find_globals`]).
const MAX_NAMED_GLOBALS: usize = 16;

/// Longest class name shown in an error message, in bytes.
const MAX_GLOBAL_NAME: usize = 120;

/// The error for values nested deeper than [`MAX_DEPTH`].
pub fn too_deep() -> String {
    format!("it is nested deeper than {MAX_DEPTH} levels")
}

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

    /// Converts a JSON value (arq's JSON serializer mode), refusing nesting
    /// deeper than [`MAX_DEPTH`].
    pub fn from_json(v: &serde_json::Value) -> Result<PyValue, String> {
        json_value(v, 0)
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

/// `from_json` one level down; `level` counts the containers around `v`.
fn json_value(v: &serde_json::Value, level: usize) -> Result<PyValue, String> {
    use serde_json::Value as J;
    Ok(match v {
        J::Null => PyValue::None,
        J::Bool(b) => PyValue::Bool(*b),
        J::Number(n) => match n.as_i64() {
            Some(i) => PyValue::Int(i),
            None => match n.as_f64() {
                Some(f) if n.is_f64() => PyValue::Float(f),
                _ => PyValue::BigInt(n.to_string()),
            },
        },
        J::String(s) => PyValue::Str(s.clone()),
        J::Array(items) => {
            let level = nested(level)?;
            PyValue::List(items.iter().map(|x| json_value(x, level)).collect::<Result<_, _>>()?)
        }
        J::Object(map) => {
            let level = nested(level)?;
            PyValue::Dict(
                map.iter()
                    .map(|(k, v)| Ok((PyValue::Str(k.clone()), json_value(v, level)?)))
                    .collect::<Result<_, String>>()?,
            )
        }
    })
}

/// The level of a container inside `level` containers, if allowed.
fn nested(level: usize) -> Result<usize, String> {
    if level >= MAX_DEPTH {
        Err(too_deep())
    } else {
        Ok(level + 1)
    }
}

/// Reads a pickle (any protocol, 0 to 5) into a [`PyValue`]. Sets become
/// lists, bytearrays bytes, ints beyond i64 [`PyValue::BigInt`]. Classes
/// doculearn cannot use (datetime, Decimal, custom classes) are an error
/// naming them; so is anything beyond the limits at the top of this file.
pub fn from_pickle_bytes(bytes: &[u8]) -> Result<PyValue, String> {
    let mut reader = Reader::new(bytes);
    let root = reader.run();
    if let Some(msg) = reader.unusable_message() {
        return Err(msg);
    }
    let root = root?;
    Builder {
        nodes: &reader.nodes,
        values: 0,
        text: 0,
    }
    .build(root, 0)
}

/// Names (`module.name`) of the classes a pickle refers to, in order of first
/// appearance, up to the first error, found by reading it without executing
/// anything (the same reader as [`from_pickle_bytes`]).
pub fn find_globals(bytes: &[u8]) -> Vec<String> {
    let mut reader = Reader::new(bytes);
    let _ = reader.run();
    reader.globals
}

fn truncated() -> String {
    "the pickle is truncated".to_string()
}

fn too_many_values() -> String {
    format!("it holds more than {MAX_VALUES} values")
}

fn too_much_text() -> String {
    format!("it holds more than {} MiB of text", MAX_TEXT_BYTES >> 20)
}

fn too_long_int() -> String {
    format!("it holds an int of more than {MAX_INT_DIGITS} digits")
}

fn malformed(what: &str) -> String {
    format!("malformed pickle: {what}")
}

fn unusable(names: &[String], more: bool) -> String {
    let mut list = names.join(", ");
    if more {
        list.push_str(", and more");
    }
    format!("it holds Python objects doculearn cannot use ({list}); send strings, numbers, lists or dicts")
}

/// An index into [`Reader::nodes`].
type Ref = u32;

/// A value while the pickle is read. Containers hold references, not
/// values, so the memo can share them and later opcodes can fill them (the
/// pickler memoizes a list before appending its items); the tree is built
/// once the pickle has been read. The arena is flat: dropping it never
/// recurses.
enum Node {
    None,
    Bool(bool),
    Int(i64),
    /// Decimal digits of an int beyond i64.
    Big(String),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    List(Vec<Ref>),
    Tuple(Vec<Ref>),
    Dict(Vec<(Ref, Ref)>),
    Set(Vec<Ref>),
    /// A class or function named by GLOBAL, STACK_GLOBAL or INST.
    Global {
        name: Box<str>,
        call: Callable,
    },
    /// An instance of a class doculearn cannot use; its name is recorded in
    /// [`Reader::unusable`], so the pickle is refused.
    Opaque,
}

impl Node {
    fn kind(&self) -> &'static str {
        match self {
            Node::None => "None",
            Node::Bool(_) => "bool",
            Node::Int(_) | Node::Big(_) => "int",
            Node::Float(_) => "float",
            Node::Str(_) => "str",
            Node::Bytes(_) => "bytes",
            Node::List(_) => "list",
            Node::Tuple(_) => "tuple",
            Node::Dict(_) => "dict",
            Node::Set(_) => "set",
            Node::Global { .. } => "class",
            Node::Opaque => "object",
        }
    }
}

/// The globals Python's pickler uses for the plain values we read.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Callable {
    /// `_codecs.encode(str, 'latin1')`: bytes at protocols 0 to 2.
    Encode,
    /// `builtins.bytes()`: empty bytes at protocols 0 to 2.
    Bytes,
    /// `builtins.bytearray(bytes)` below protocol 5.
    ByteArray,
    /// `builtins.set(list)` below protocol 4.
    Set,
    /// `builtins.frozenset(list)` below protocol 4.
    FrozenSet,
    /// Anything else: instances become [`Node::Opaque`].
    Unknown,
}

fn callable(module: &str, name: &str) -> Callable {
    let builtin = module == "builtins" || module == "__builtin__";
    match (module, name) {
        ("_codecs" | "codecs", "encode") => Callable::Encode,
        (_, "bytes") if builtin => Callable::Bytes,
        (_, "bytearray") if builtin => Callable::ByteArray,
        (_, "set") if builtin => Callable::Set,
        (_, "frozenset") if builtin => Callable::FrozenSet,
        _ => Callable::Unknown,
    }
}

/// Globals Python's pickler uses to rebuild instances of other classes;
/// they are only named when nothing better is.
fn is_plumbing(module: &str, name: &str) -> bool {
    matches!(
        (module, name),
        (
            "copyreg" | "copy_reg",
            "_reconstructor" | "__newobj__" | "__newobj_ex__"
        ) | ("builtins" | "__builtin__", "object" | "getattr")
    )
}

/// Appends `name` to a list of at most [`MAX_NAMED_GLOBALS`] distinct names;
/// returns false when it was full.
fn note_name(list: &mut Vec<String>, name: &str) -> bool {
    if list.iter().any(|n| n == name) {
        return true;
    }
    if list.len() >= MAX_NAMED_GLOBALS {
        return false;
    }
    list.push(name.to_string());
    true
}

/// At most [`MAX_GLOBAL_NAME`] bytes of a name, cut at a char boundary.
fn short_name(s: &str) -> String {
    if s.len() <= MAX_GLOBAL_NAME {
        return s.to_string();
    }
    let mut end = MAX_GLOBAL_NAME;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", s.get(..end).unwrap_or_default())
}

/// The opcode interpreter: a stack machine over [`Node`]s.
struct Reader<'a> {
    input: &'a [u8],
    pos: usize,
    nodes: Vec<Node>,
    stack: Vec<Ref>,
    /// Stack lengths at each open MARK.
    marks: Vec<usize>,
    memo: HashMap<u64, Ref>,
    /// Values pushed so far (see [`MAX_VALUES`]).
    pushed: usize,
    /// Text bytes built so far (see [`MAX_TEXT_BYTES`]).
    text: usize,
    /// Every global referred to (for [`find_globals`]).
    globals: Vec<String>,
    /// Globals doculearn cannot use, and whether there were more than we keep.
    unusable: Vec<String>,
    more_unusable: bool,
    /// `copyreg._reconstructor` and the like.
    plumbing: Vec<String>,
}

impl<'a> Reader<'a> {
    fn new(input: &'a [u8]) -> Reader<'a> {
        Reader {
            input,
            pos: 0,
            nodes: Vec::new(),
            stack: Vec::new(),
            marks: Vec::new(),
            memo: HashMap::new(),
            pushed: 0,
            text: 0,
            globals: Vec::new(),
            unusable: Vec::new(),
            more_unusable: false,
            plumbing: Vec::new(),
        }
    }

    fn unusable_message(&self) -> Option<String> {
        if !self.unusable.is_empty() {
            Some(unusable(&self.unusable, self.more_unusable))
        } else if !self.plumbing.is_empty() {
            Some(unusable(&self.plumbing, false))
        } else {
            None
        }
    }

    // ---- input -------------------------------------------------------

    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let input: &'a [u8] = self.input;
        let end = self.pos.checked_add(n).ok_or_else(truncated)?;
        let s = input.get(self.pos..end).ok_or_else(truncated)?;
        self.pos = end;
        Ok(s)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        self.take(N)?.try_into().map_err(|_| truncated())
    }

    fn byte(&mut self) -> Result<u8, String> {
        Ok(self.array::<1>()?[0])
    }

    fn len_u32(&mut self) -> Result<usize, String> {
        usize::try_from(u32::from_le_bytes(self.array()?)).map_err(|_| truncated())
    }

    fn len_i32(&mut self) -> Result<usize, String> {
        usize::try_from(i32::from_le_bytes(self.array()?)).map_err(|_| malformed("a negative length"))
    }

    fn len_u64(&mut self) -> Result<usize, String> {
        // A length beyond the address space cannot fit in the input either.
        usize::try_from(u64::from_le_bytes(self.array()?)).map_err(|_| truncated())
    }

    /// A text argument up to (not including) the next newline.
    fn line(&mut self) -> Result<&'a [u8], String> {
        let input: &'a [u8] = self.input;
        let rest = input.get(self.pos..).ok_or_else(truncated)?;
        let n = rest.iter().position(|&c| c == b'\n').ok_or_else(truncated)?;
        let line = rest.get(..n).ok_or_else(truncated)?;
        self.pos = self.pos.checked_add(n + 1).ok_or_else(truncated)?;
        Ok(line)
    }

    fn line_index(&mut self) -> Result<u64, String> {
        let line = self.line()?;
        std::str::from_utf8(line)
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .ok_or_else(|| malformed("a memo index is not a number"))
    }

    // ---- budget and stack --------------------------------------------

    fn count(&mut self, n: usize) -> Result<(), String> {
        self.pushed = self.pushed.saturating_add(n);
        if self.pushed > MAX_VALUES {
            Err(too_many_values())
        } else {
            Ok(())
        }
    }

    fn spend_text(&mut self, n: usize) -> Result<(), String> {
        self.text = self.text.saturating_add(n);
        if self.text > MAX_TEXT_BYTES {
            Err(too_much_text())
        } else {
            Ok(())
        }
    }

    fn node(&self, r: Ref) -> Result<&Node, String> {
        self.nodes
            .get(r as usize)
            .ok_or_else(|| malformed("a dangling reference"))
    }

    fn node_mut(&mut self, r: Ref) -> Result<&mut Node, String> {
        self.nodes
            .get_mut(r as usize)
            .ok_or_else(|| malformed("a dangling reference"))
    }

    /// Stores a new value and pushes it.
    fn push(&mut self, node: Node) -> Result<(), String> {
        let r = Ref::try_from(self.nodes.len()).map_err(|_| too_many_values())?;
        self.count(1)?;
        self.nodes.push(node);
        self.stack.push(r);
        Ok(())
    }

    /// Pushes a value again (memo GET, DUP).
    fn push_ref(&mut self, r: Ref) -> Result<(), String> {
        self.count(1)?;
        self.stack.push(r);
        Ok(())
    }

    fn frame_start(&self) -> usize {
        self.marks.last().copied().unwrap_or(0)
    }

    /// Pops the top value; values below the last MARK are out of reach, as in Python.
    fn pop(&mut self) -> Result<Ref, String> {
        if self.stack.len() <= self.frame_start() {
            return Err(malformed("a value is missing"));
        }
        self.stack.pop().ok_or_else(|| malformed("a value is missing"))
    }

    fn top(&self) -> Result<Ref, String> {
        if self.stack.len() <= self.frame_start() {
            return Err(malformed("a value is missing"));
        }
        self.stack
            .last()
            .copied()
            .ok_or_else(|| malformed("a value is missing"))
    }

    /// The values pushed since the last MARK, which is closed.
    fn pop_mark(&mut self) -> Result<Vec<Ref>, String> {
        let mark = self.marks.pop().ok_or_else(|| malformed("a mark is missing"))?;
        if mark > self.stack.len() {
            return Err(malformed("a mark is missing"));
        }
        Ok(self.stack.split_off(mark))
    }

    fn pairs(items: Vec<Ref>) -> Result<Vec<(Ref, Ref)>, String> {
        if items.len() % 2 != 0 {
            return Err(malformed("a dict key has no value"));
        }
        let mut it = items.into_iter();
        let mut out = Vec::with_capacity(it.len() / 2);
        while let (Some(k), Some(v)) = (it.next(), it.next()) {
            out.push((k, v));
        }
        Ok(out)
    }

    fn str_node(&mut self, raw: &[u8]) -> Result<Node, String> {
        self.spend_text(raw.len())?;
        let s = std::str::from_utf8(raw).map_err(|_| "it holds a str that is not valid utf-8".to_string())?;
        Ok(Node::Str(s.to_string()))
    }

    fn bytes_node(&mut self, raw: &[u8]) -> Result<Node, String> {
        self.spend_text(raw.len())?;
        Ok(Node::Bytes(raw.to_vec()))
    }

    fn int_node(&mut self, node: Node) -> Result<Node, String> {
        if let Node::Big(digits) = &node {
            let n = digits.len();
            self.spend_text(n)?;
        }
        Ok(node)
    }

    // ---- globals and calls -------------------------------------------

    fn push_global(&mut self, module: &str, name: &str) -> Result<(), String> {
        let call = callable(module, name);
        let full = short_name(&format!("{module}.{name}"));
        self.spend_text(full.len())?;
        note_name(&mut self.globals, &full);
        if call == Callable::Unknown {
            if is_plumbing(module, name) {
                note_name(&mut self.plumbing, &full);
            } else if !note_name(&mut self.unusable, &full) {
                self.more_unusable = true;
            }
        }
        self.push(Node::Global {
            name: full.into_boxed_str(),
            call,
        })
    }

    fn text_of(&self, r: Ref) -> Result<&str, String> {
        match self.node(r)? {
            Node::Str(s) => Ok(s),
            other => Err(malformed(&format!("a class name is a {}", other.kind()))),
        }
    }

    /// What calling `f(*args)` gives, for the few calls Python's pickler
    /// writes for plain values (REDUCE, INST, OBJ).
    fn call(&mut self, f: Ref, args: &[Ref]) -> Result<Node, String> {
        let (call, name) = match self.node(f)? {
            Node::Global { call, name } => (*call, name.to_string()),
            Node::Opaque => return Ok(Node::Opaque),
            other => return Err(malformed(&format!("a {} is called like a function", other.kind()))),
        };
        let bad = || malformed(&format!("unexpected arguments for {name}"));
        let arg = |i: usize| args.get(i).and_then(|&r| self.nodes.get(r as usize));
        let node = match call {
            Callable::Unknown => Node::Opaque,
            Callable::Encode | Callable::Bytes | Callable::ByteArray => {
                let bytes = match (args.len(), arg(0), arg(1)) {
                    (0, _, _) if call != Callable::Encode => Vec::new(),
                    (1, Some(Node::Bytes(b)), _) if call != Callable::Encode => b.clone(),
                    (1, Some(Node::Str(s)), _) if call == Callable::Encode => s.as_bytes().to_vec(),
                    (2 | 3, Some(Node::Str(s)), Some(Node::Str(encoding))) => {
                        encode(s, encoding).ok_or_else(|| malformed(&format!("{name} of an unsupported str")))?
                    }
                    _ => return Err(bad()),
                };
                self.spend_text(bytes.len())?;
                Node::Bytes(bytes)
            }
            Callable::Set | Callable::FrozenSet => {
                let items = match (args.len(), arg(0)) {
                    (0, _) => Vec::new(),
                    (1, Some(Node::List(items) | Node::Tuple(items) | Node::Set(items))) => items.clone(),
                    _ => return Err(bad()),
                };
                self.count(items.len())?;
                Node::Set(items)
            }
        };
        Ok(node)
    }

    /// NEWOBJ / NEWOBJ_EX: `cls.__new__(cls, *args)`. Python's pickler only
    /// writes it for classes we cannot use.
    fn new_object(&mut self, cls: Ref) -> Result<Node, String> {
        match self.node(cls)? {
            Node::Opaque
            | Node::Global {
                call: Callable::Unknown,
                ..
            } => Ok(Node::Opaque),
            Node::Global { name, .. } => Err(malformed(&format!("unexpected NEWOBJ of {name}"))),
            other => Err(malformed(&format!("a {} is used as a class", other.kind()))),
        }
    }

    /// Whether a BUILD state sets nothing: `None`, or `(None, None)` /
    /// `(None, {})` (no `__dict__` state, no slot state).
    fn is_no_state(&self, state: Ref) -> Result<bool, String> {
        Ok(match self.node(state)? {
            Node::None => true,
            Node::Tuple(items) => match items.as_slice() {
                [dict, slots] => {
                    matches!(self.node(*dict)?, Node::None)
                        && match self.node(*slots)? {
                            Node::None => true,
                            Node::Dict(d) => d.is_empty(),
                            _ => false,
                        }
                }
                _ => false,
            },
            _ => false,
        })
    }

    // ---- filling containers ------------------------------------------

    fn append(&mut self, items: Vec<Ref>) -> Result<(), String> {
        let target = self.top()?;
        match self.node_mut(target)? {
            Node::List(list) => list.extend(items),
            Node::Opaque => {}
            other => return Err(malformed(&format!("appending to a {}", other.kind()))),
        }
        Ok(())
    }

    fn set_items(&mut self, pairs: Vec<(Ref, Ref)>) -> Result<(), String> {
        let target = self.top()?;
        match self.node_mut(target)? {
            Node::Dict(dict) => dict.extend(pairs),
            Node::Opaque => {}
            other => return Err(malformed(&format!("setting an item of a {}", other.kind()))),
        }
        Ok(())
    }

    fn add_items(&mut self, items: Vec<Ref>) -> Result<(), String> {
        let target = self.top()?;
        match self.node_mut(target)? {
            Node::Set(set) => set.extend(items),
            Node::Opaque => {}
            other => return Err(malformed(&format!("adding to a {}", other.kind()))),
        }
        Ok(())
    }

    fn memo_put(&mut self, index: u64) -> Result<(), String> {
        let top = self.top()?;
        if self.memo.len() >= MAX_VALUES && !self.memo.contains_key(&index) {
            return Err(too_many_values());
        }
        self.memo.insert(index, top);
        Ok(())
    }

    fn memo_get(&mut self, index: u64) -> Result<(), String> {
        let r = *self
            .memo
            .get(&index)
            .ok_or_else(|| malformed(&format!("memo entry {index} is missing")))?;
        self.push_ref(r)
    }

    // ---- the opcode loop ---------------------------------------------

    /// Runs the opcodes up to STOP and returns the value it pops. Every turn
    /// consumes at least one byte, and every opcode's work is proportional to
    /// the bytes it consumes or the values it pops (each value is popped at
    /// most once per push), so this is linear in input and [`MAX_VALUES`].
    fn run(&mut self) -> Result<Ref, String> {
        if self.input.len() > MAX_INPUT_BYTES {
            return Err(format!("the pickle is larger than {} MiB", MAX_INPUT_BYTES >> 20));
        }
        loop {
            let at = self.pos;
            let op = self.byte()?;
            match op {
                b'.' => return self.pop().map_err(|_| malformed("there is no value to return")),
                0x80 => {
                    let protocol = self.byte()?;
                    if protocol > 5 {
                        return Err(format!("unsupported pickle protocol {protocol}"));
                    }
                }
                0x95 => {
                    // FRAME: only a read-ahead hint; its length must fit in what is left.
                    let n = self.len_u64()?;
                    if n > self.input.len().saturating_sub(self.pos) {
                        return Err(truncated());
                    }
                }
                b'N' => self.push(Node::None)?,
                0x88 => self.push(Node::Bool(true))?,
                0x89 => self.push(Node::Bool(false))?,
                b'K' => {
                    let v = self.byte()?;
                    self.push(Node::Int(i64::from(v)))?
                }
                b'M' => {
                    let v = u16::from_le_bytes(self.array()?);
                    self.push(Node::Int(i64::from(v)))?
                }
                b'J' => {
                    let v = i32::from_le_bytes(self.array()?);
                    self.push(Node::Int(i64::from(v)))?
                }
                0x8a | 0x8b => {
                    let n = if op == 0x8a {
                        usize::from(self.byte()?)
                    } else {
                        self.len_i32()?
                    };
                    let raw = self.take(n)?;
                    let node = long_from_le(raw)?;
                    let node = self.int_node(node)?;
                    self.push(node)?
                }
                b'I' => {
                    let line = self.line()?;
                    let node = match line {
                        b"01" => Node::Bool(true),
                        b"00" => Node::Bool(false),
                        digits => parse_decimal(digits)?,
                    };
                    let node = self.int_node(node)?;
                    self.push(node)?
                }
                b'L' => {
                    let line = self.line()?;
                    let digits = line.strip_suffix(b"L").unwrap_or(line);
                    let node = parse_decimal(digits)?;
                    let node = self.int_node(node)?;
                    self.push(node)?
                }
                b'G' => {
                    let v = f64::from_be_bytes(self.array()?);
                    self.push(Node::Float(v))?
                }
                b'F' => {
                    let line = self.line()?;
                    let v = parse_float(line)?;
                    self.push(Node::Float(v))?
                }
                0x8c | b'X' | 0x8d => {
                    let n = match op {
                        0x8c => usize::from(self.byte()?),
                        b'X' => self.len_u32()?,
                        _ => self.len_u64()?,
                    };
                    let raw = self.take(n)?;
                    let node = self.str_node(raw)?;
                    self.push(node)?
                }
                b'V' => {
                    let line = self.line()?;
                    self.spend_text(line.len())?;
                    let s = raw_unicode_escape(line)?;
                    self.push(Node::Str(s))?
                }
                b'C' | b'B' | 0x8e | 0x96 => {
                    // SHORT_BINBYTES, BINBYTES, BINBYTES8, BYTEARRAY8
                    let n = match op {
                        b'C' => usize::from(self.byte()?),
                        b'B' => self.len_u32()?,
                        _ => self.len_u64()?,
                    };
                    let raw = self.take(n)?;
                    let node = self.bytes_node(raw)?;
                    self.push(node)?
                }
                b'U' | b'T' | b'S' => {
                    // Python 2's str (SHORT_BINSTRING, BINSTRING, STRING), which
                    // Python 3 reads as an ASCII str by default.
                    let raw = match op {
                        b'U' => {
                            let n = usize::from(self.byte()?);
                            self.take(n)?.to_vec()
                        }
                        b'T' => {
                            let n = self.len_i32()?;
                            self.take(n)?.to_vec()
                        }
                        _ => {
                            let line = self.line()?;
                            match line {
                                [q, inner @ .., end] if q == end && (*q == b'\'' || *q == b'"') => {
                                    escape_decode(inner)?
                                }
                                _ => return Err(malformed("a STRING is not quoted")),
                            }
                        }
                    };
                    if !raw.is_ascii() {
                        return Err("it holds a Python 2 str that is not ascii".to_string());
                    }
                    let node = self.str_node(&raw)?;
                    self.push(node)?
                }
                b')' => self.push(Node::Tuple(Vec::new()))?,
                0x85..=0x87 => {
                    let n = usize::from(op - 0x84);
                    let mut items = Vec::with_capacity(n);
                    for _ in 0..n {
                        items.push(self.pop()?);
                    }
                    items.reverse();
                    self.push(Node::Tuple(items))?
                }
                b't' => {
                    let items = self.pop_mark()?;
                    self.push(Node::Tuple(items))?
                }
                b']' => self.push(Node::List(Vec::new()))?,
                b'l' => {
                    let items = self.pop_mark()?;
                    self.push(Node::List(items))?
                }
                b'}' => self.push(Node::Dict(Vec::new()))?,
                b'd' => {
                    let items = self.pop_mark()?;
                    let pairs = Self::pairs(items)?;
                    self.push(Node::Dict(pairs))?
                }
                0x8f => self.push(Node::Set(Vec::new()))?,
                0x91 => {
                    let items = self.pop_mark()?;
                    self.push(Node::Set(items))?
                }
                b'a' => {
                    let v = self.pop()?;
                    self.append(vec![v])?
                }
                b'e' => {
                    let items = self.pop_mark()?;
                    self.append(items)?
                }
                b's' => {
                    let v = self.pop()?;
                    let k = self.pop()?;
                    self.set_items(vec![(k, v)])?
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    let pairs = Self::pairs(items)?;
                    self.set_items(pairs)?
                }
                0x90 => {
                    let items = self.pop_mark()?;
                    self.add_items(items)?
                }
                b'(' => {
                    if self.marks.len() >= MAX_MARKS {
                        return Err(too_deep());
                    }
                    self.marks.push(self.stack.len())
                }
                b'0' => {
                    // POP: the top value, or the last MARK when none is above it.
                    if self.stack.len() > self.frame_start() {
                        self.stack.pop();
                    } else {
                        self.pop_mark()?;
                    }
                }
                b'1' => {
                    self.pop_mark()?;
                }
                b'2' => {
                    let top = self.top()?;
                    self.push_ref(top)?
                }
                b'p' => {
                    let index = self.line_index()?;
                    self.memo_put(index)?
                }
                b'q' => {
                    let index = self.byte()?;
                    self.memo_put(u64::from(index))?
                }
                b'r' => {
                    let index = u32::from_le_bytes(self.array()?);
                    self.memo_put(u64::from(index))?
                }
                0x94 => {
                    let index = self.memo.len() as u64;
                    self.memo_put(index)?
                }
                b'g' => {
                    let index = self.line_index()?;
                    self.memo_get(index)?
                }
                b'h' => {
                    let index = self.byte()?;
                    self.memo_get(u64::from(index))?
                }
                b'j' => {
                    let index = u32::from_le_bytes(self.array()?);
                    self.memo_get(u64::from(index))?
                }
                b'c' | b'i' => {
                    let module = String::from_utf8_lossy(self.line()?);
                    let name = String::from_utf8_lossy(self.line()?);
                    self.push_global(&module, &name)?;
                    if op == b'i' {
                        // INST: the class applied to the values since the last MARK.
                        let class = self.pop()?;
                        let args = self.pop_mark()?;
                        let node = self.call(class, &args)?;
                        self.push(node)?
                    }
                }
                0x93 => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    let (module, name) = (self.text_of(module)?.to_string(), self.text_of(name)?.to_string());
                    self.push_global(&module, &name)?
                }
                b'o' => {
                    // OBJ: MARK class args... OBJ
                    let items = self.pop_mark()?;
                    let (&class, args) = items.split_first().ok_or_else(|| malformed("OBJ without a class"))?;
                    let node = self.call(class, args)?;
                    self.push(node)?
                }
                b'R' => {
                    let args = self.pop()?;
                    let f = self.pop()?;
                    let args = match self.node(args)? {
                        Node::Tuple(items) => items.clone(),
                        other => return Err(malformed(&format!("call arguments are a {}", other.kind()))),
                    };
                    let node = self.call(f, &args)?;
                    self.push(node)?
                }
                0x81 | 0x92 => {
                    if op == 0x92 {
                        self.pop()?; // kwargs
                    }
                    self.pop()?; // args
                    let class = self.pop()?;
                    let node = self.new_object(class)?;
                    self.push(node)?
                }
                b'b' => {
                    // BUILD: only instances of classes we cannot use have state
                    // (a None state changes nothing, as in Python).
                    let state = self.pop()?;
                    let target = self.top()?;
                    let no_state = self.is_no_state(state)?;
                    match self.node(target)? {
                        Node::Opaque => {}
                        _ if no_state => {}
                        other => return Err(malformed(&format!("BUILD on a {}", other.kind()))),
                    }
                }
                b'P' | b'Q' => return Err("it holds persistent ids doculearn cannot resolve".to_string()),
                0x82..=0x84 => return Err("it refers to Python's pickle extension registry".to_string()),
                0x97 | 0x98 => return Err("it refers to out-of-band buffers".to_string()),
                other => return Err(malformed(&format!("unknown opcode 0x{other:02x} at byte {at}"))),
            }
        }
    }
}

/// `str.encode(encoding)` for the encodings Python's pickler uses.
fn encode(s: &str, encoding: &str) -> Option<Vec<u8>> {
    match encoding.to_ascii_lowercase().as_str() {
        "latin1" | "latin-1" | "iso-8859-1" | "iso8859-1" => {
            s.chars().map(|c| u8::try_from(u32::from(c)).ok()).collect()
        }
        "utf-8" | "utf8" => Some(s.as_bytes().to_vec()),
        _ => None,
    }
}

/// `LONG1`/`LONG4`: little-endian two's complement.
fn long_from_le(raw: &[u8]) -> Result<Node, String> {
    let negative = raw.last().is_some_and(|&b| b & 0x80 != 0);
    let fill = if negative { 0xff } else { 0x00 };
    let (low, high) = raw.split_at(raw.len().min(8));
    let low_sign = low.last().is_some_and(|&b| b & 0x80 != 0);
    if high.is_empty() || (high.iter().all(|&b| b == fill) && low_sign == negative) {
        let mut buf = [fill; 8];
        for (slot, &b) in buf.iter_mut().zip(low) {
            *slot = b;
        }
        return Ok(Node::Int(i64::from_le_bytes(buf)));
    }
    if raw.len() > MAX_LONG_BYTES {
        return Err(too_long_int());
    }
    // Magnitude, as 32-bit limbs, least significant first.
    let mut magnitude = raw.to_vec();
    if negative {
        let mut carry = true;
        for b in magnitude.iter_mut() {
            let (v, c) = (!*b).overflowing_add(u8::from(carry));
            *b = v;
            carry = c;
        }
    }
    let mut limbs: Vec<u32> = magnitude
        .chunks(4)
        .map(|c| {
            let mut a = [0u8; 4];
            for (slot, &b) in a.iter_mut().zip(c) {
                *slot = b;
            }
            u32::from_le_bytes(a)
        })
        .collect();
    const BASE: u64 = 1_000_000_000;
    let mut groups: Vec<u32> = Vec::new(); // base 10^9, least significant first
    while limbs.last() == Some(&0) {
        limbs.pop();
    }
    while !limbs.is_empty() {
        let mut rem = 0u64;
        for limb in limbs.iter_mut().rev() {
            let cur = (rem << 32) | u64::from(*limb);
            *limb = (cur / BASE) as u32;
            rem = cur % BASE;
        }
        groups.push(rem as u32);
        while limbs.last() == Some(&0) {
            limbs.pop();
        }
    }
    let mut digits = String::with_capacity(groups.len() * 9 + 1);
    if negative {
        digits.push('-');
    }
    let mut groups = groups.iter().rev();
    if let Some(first) = groups.next() {
        digits.push_str(&first.to_string());
    }
    for g in groups {
        digits.push_str(&format!("{g:09}"));
    }
    Ok(Node::Big(digits))
}

/// `FLOAT` text, as Python's `repr` writes it (`1.5`, `1e+300`, `inf`, `nan`).
fn parse_float(text: &[u8]) -> Result<f64, String> {
    let text = std::str::from_utf8(text).map_err(|_| malformed("a float is not a number"))?;
    let v = text.parse::<f64>().map_err(|_| malformed("a float is not a number"))?;
    // Like Python, refuse a finite literal too large for a float.
    if v.is_infinite() && !text.to_ascii_lowercase().contains("inf") {
        return Err(malformed("a float is out of range"));
    }
    Ok(v)
}

/// `INT`/`LONG` text: an optionally signed decimal, as `int(text, 0)` reads
/// it (no leading zeros, except for zero itself).
fn parse_decimal(text: &[u8]) -> Result<Node, String> {
    let (negative, digits) = match text.split_first() {
        Some((b'-', rest)) => (true, rest),
        Some((b'+', rest)) => (false, rest),
        _ => (false, text),
    };
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return Err(malformed("an int is not a number"));
    }
    let zero = digits.iter().all(|&d| d == b'0');
    if digits.first() == Some(&b'0') && !zero {
        return Err(malformed("an int has leading zeros"));
    }
    let first = digits.iter().position(|&d| d != b'0').unwrap_or(digits.len() - 1);
    let digits = digits.get(first..).unwrap_or(b"0");
    if digits.len() > MAX_INT_DIGITS {
        return Err(too_long_int());
    }
    let mut s = String::with_capacity(digits.len() + 1);
    if negative && digits != b"0" {
        s.push('-');
    }
    s.extend(digits.iter().map(|&d| d as char));
    Ok(match s.parse::<i64>() {
        Ok(i) => Node::Int(i),
        Err(_) => Node::Big(s),
    })
}

/// Python's `raw-unicode-escape` codec (protocol 0's `UNICODE`): bytes are
/// Latin-1 characters, `\uXXXX` and `\UXXXXXXXX` are escapes when preceded
/// by an odd number of backslashes.
fn raw_unicode_escape(line: &[u8]) -> Result<String, String> {
    let mut out = String::with_capacity(line.len());
    let mut i = 0usize;
    while let Some(&c) = line.get(i) {
        if c != b'\\' {
            out.push(char::from(c));
            i += 1;
            continue;
        }
        let start = i;
        while line.get(i) == Some(&b'\\') {
            i += 1;
        }
        let run = i - start;
        let digits = match line.get(i) {
            Some(b'u') if run % 2 == 1 => 4,
            Some(b'U') if run % 2 == 1 => 8,
            _ => {
                out.extend(std::iter::repeat_n('\\', run));
                continue;
            }
        };
        out.extend(std::iter::repeat_n('\\', run - 1));
        let hex = line
            .get(i + 1..i + 1 + digits)
            .ok_or_else(|| malformed("a truncated \\u escape"))?;
        let code = hex_value(hex).ok_or_else(|| malformed("a malformed \\u escape"))?;
        let ch = char::from_u32(code).ok_or_else(|| "it holds a str that is not valid unicode".to_string())?;
        out.push(ch);
        i += 1 + digits;
    }
    Ok(out)
}

fn hex_value(hex: &[u8]) -> Option<u32> {
    hex.iter().try_fold(0u32, |acc, &h| {
        let d = char::from(h).to_digit(16)?;
        acc.checked_mul(16)?.checked_add(d)
    })
}

/// Python's `codecs.escape_decode` (Python 2's `STRING` argument).
fn escape_decode(s: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(s.len());
    let mut it = s.iter().copied().peekable();
    while let Some(c) = it.next() {
        if c != b'\\' {
            out.push(c);
            continue;
        }
        let Some(e) = it.next() else {
            return Err(malformed("a STRING ends in a backslash"));
        };
        match e {
            b'\n' => {}
            b'\\' | b'\'' | b'"' => out.push(e),
            b'a' => out.push(7),
            b'b' => out.push(8),
            b'f' => out.push(12),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'v' => out.push(11),
            b'0'..=b'7' => {
                let mut v = u32::from(e - b'0');
                for _ in 0..2 {
                    match it.peek() {
                        Some(&d @ b'0'..=b'7') => {
                            v = v * 8 + u32::from(d - b'0');
                            it.next();
                        }
                        _ => break,
                    }
                }
                out.push((v & 0xff) as u8);
            }
            b'x' => {
                let hex = [it.next(), it.next()];
                let v = match hex {
                    [Some(a), Some(b)] => hex_value(&[a, b]),
                    _ => None,
                };
                out.push(
                    v.and_then(|v| u8::try_from(v).ok())
                        .ok_or_else(|| malformed("a malformed \\x escape"))?,
                );
            }
            other => {
                out.push(b'\\');
                out.push(other);
            }
        }
    }
    Ok(out)
}

/// Turns the reader's nodes into the [`PyValue`] tree, within
/// [`MAX_DEPTH`], [`MAX_VALUES`] and [`MAX_TEXT_BYTES`].
struct Builder<'n> {
    nodes: &'n [Node],
    values: usize,
    text: usize,
}

impl Builder<'_> {
    /// The value of `r`, which sits inside `level` containers. Recursion
    /// depth is at most [`MAX_DEPTH`] + 1 (a memo cycle, which Python can
    /// pickle, ends there too).
    fn build(&mut self, r: Ref, level: usize) -> Result<PyValue, String> {
        self.values += 1;
        if self.values > MAX_VALUES {
            return Err(too_many_values());
        }
        let node = self
            .nodes
            .get(r as usize)
            .ok_or_else(|| malformed("a dangling reference"))?;
        Ok(match node {
            Node::None => PyValue::None,
            Node::Bool(b) => PyValue::Bool(*b),
            Node::Int(i) => PyValue::Int(*i),
            Node::Float(f) => PyValue::Float(*f),
            Node::Big(s) => PyValue::BigInt(self.text(s.as_bytes(), s)?.clone()),
            Node::Str(s) => PyValue::Str(self.text(s.as_bytes(), s)?.clone()),
            Node::Bytes(b) => PyValue::Bytes(self.text(b, b)?.clone()),
            Node::List(items) => PyValue::List(self.items(items, nested(level)?)?),
            Node::Tuple(items) => PyValue::Tuple(self.items(items, nested(level)?)?),
            Node::Set(items) => PyValue::List(unique_items(self.items(items, nested(level)?)?)?),
            Node::Dict(pairs) => {
                let level = nested(level)?;
                let mut out = Vec::with_capacity(pairs.len());
                for &(k, v) in pairs {
                    out.push((self.build(k, level)?, self.build(v, level)?));
                }
                PyValue::Dict(unique_pairs(out)?)
            }
            Node::Global { name, .. } => return Err(unusable(&[name.to_string()], false)),
            Node::Opaque => return Err(unusable(&["an instance".to_string()], false)),
        })
    }

    fn text<'t, T>(&mut self, bytes: &[u8], value: &'t T) -> Result<&'t T, String> {
        self.text = self.text.saturating_add(bytes.len());
        if self.text > MAX_TEXT_BYTES {
            Err(too_much_text())
        } else {
            Ok(value)
        }
    }

    fn items(&mut self, refs: &[Ref], level: usize) -> Result<Vec<PyValue>, String> {
        refs.iter().map(|&r| self.build(r, level)).collect()
    }
}

/// A dict key or set item under Python's equality (`1 == 1.0 == True`).
#[derive(PartialEq, Eq, Hash)]
enum Key<'v> {
    None,
    Int(i64),
    Big(&'v str),
    Float(u64),
    Str(&'v str),
    Bytes(&'v [u8]),
    Tuple(Vec<Key<'v>>),
    /// NaN: equal to nothing else.
    Distinct(usize),
}

/// The key of `v` (the `slot`-th item), or the name of its unhashable type.
fn key(v: &PyValue, slot: usize) -> Result<Key<'_>, &'static str> {
    Ok(match v {
        PyValue::None => Key::None,
        PyValue::Bool(b) => Key::Int(i64::from(*b)),
        PyValue::Int(i) => Key::Int(*i),
        PyValue::BigInt(s) => Key::Big(s),
        PyValue::Float(f) if f.is_nan() => Key::Distinct(slot),
        // Integral floats equal the int (2**63 and beyond stay floats).
        PyValue::Float(f) if f.fract() == 0.0 && f.abs() < 9.2e18 => Key::Int(*f as i64),
        PyValue::Float(f) => Key::Float(f.to_bits()),
        PyValue::Str(s) => Key::Str(s),
        PyValue::Bytes(b) => Key::Bytes(b),
        PyValue::Tuple(items) => Key::Tuple(items.iter().map(|i| key(i, slot)).collect::<Result<_, _>>()?),
        other => return Err(other.type_name()),
    })
}

fn unhashable(kind: &str) -> String {
    malformed(&format!("a dict key or set item is a {kind}, which Python cannot hash"))
}

/// For each item, the index of the first item equal to it.
fn first_equal<'v>(keys: impl Iterator<Item = &'v PyValue>) -> Result<Vec<usize>, String> {
    let mut seen: HashMap<Key<'v>, usize> = HashMap::new();
    let mut first = Vec::new();
    for (i, k) in keys.enumerate() {
        let k = key(k, i).map_err(unhashable)?;
        first.push(*seen.entry(k).or_insert(i));
    }
    Ok(first)
}

/// A dict's items as Python's `d[k] = v` leaves them: a repeated key keeps
/// its first place and takes the last value.
fn unique_pairs(pairs: Vec<(PyValue, PyValue)>) -> Result<Vec<(PyValue, PyValue)>, String> {
    let first = first_equal(pairs.iter().map(|(k, _)| k))?;
    if first.iter().enumerate().all(|(i, &f)| i == f) {
        return Ok(pairs);
    }
    let mut out: Vec<(PyValue, PyValue)> = Vec::new();
    let mut place = vec![0usize; pairs.len()];
    for (i, ((k, v), f)) in pairs.into_iter().zip(first).enumerate() {
        if f == i {
            if let Some(p) = place.get_mut(i) {
                *p = out.len();
            }
            out.push((k, v));
        } else if let Some(slot) = place.get(f).and_then(|&p| out.get_mut(p)) {
            slot.1 = v;
        }
    }
    Ok(out)
}

/// A set's items without repeats (the first of equal items stays).
fn unique_items(items: Vec<PyValue>) -> Result<Vec<PyValue>, String> {
    let first = first_equal(items.iter())?;
    Ok(items
        .into_iter()
        .zip(first)
        .enumerate()
        .filter(|(i, (_, f))| i == f)
        .map(|(_, (v, _))| v)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::time::{Duration, Instant};

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
    fn round_trips_through_our_reader() {
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

    // ---- what Python writes ------------------------------------------

    /// `pickle.dumps(value, protocol=p)` by Python 3.11.7 (`PYTHONHASHSEED=0`) for
    /// p in 0..=5 and these values (`expected_fixture` has them as `PyValue`s):
    ///
    /// ```python
    /// shared = [1, 2]; s = 'shared-string'
    /// fixtures = {
    ///  'ints': [0, 1, -1, 255, 256, 65535, 65536, -2**31, 2**31-1, 2**31, 2**63-1, -2**63, 2**63,
    ///           -2**63-1, 2**100, -2**100, 10**30],
    ///  'floats': [0.0, -0.0, 1.5, -2.25e-300, 1e308, float('inf'), float('-inf')],
    ///  'nan': float('nan'),
    ///  'strs': ['', 'a', 'é', '日本語', '\U0001f600', 'line\nbreak\\ back\x00nul\r\x1a', 'x'*300],
    ///  'bytes': [b'', b'\x00\xff\\\n', b'y'*300, bytearray(b''), bytearray(b'ab\x80')],
    ///  'nested': {'l': [1, [2, [3, ()]]], 't': (1,), 't2': (1, 2), 't3': (1, 2, 3), 't4': (1, 2, 3, 4),
    ///             'd': {1: 'one', (1, 'a'): None, 'n': {}}, 's': {3, 1, 2}, 'es': set(),
    ///             'fs': frozenset({5}), 'efs': frozenset(), 'b': True, 'f': False, 'none': None},
    ///  'shared': [shared, shared, s, s, (shared, s)],
    ///  'job': {'t': None, 'f': 'process_document', 'a': ('doc-1', 42), 'k': {}, 'et': 1764348000123},
    ///  'batch': [None] * 1001,
    /// }
    /// ```
    const PY_FIXTURES: &[(&str, u8, &[u8])] = &[
        ("ints", 0, b"(lp0\x0aI0\x0aaI1\x0aaI-1\x0aaI255\x0aaI256\x0aaI65535\x0aaI65536\x0aaI-2147483648\x0aaI2147483647\x0aaL2147483648L\x0aaL9223372036854775807L\x0aaL-9223372036854775808L\x0aaL9223372036854775808L\x0aaL-9223372036854775809L\x0aaL1267650600228229401496703205376L\x0aaL-1267650600228229401496703205376L\x0aaL1000000000000000000000000000000L\x0aa."),
        ("ints", 1, b"]q\x00(K\x00K\x01J\xff\xff\xff\xffK\xffM\x00\x01M\xff\xffJ\x00\x00\x01\x00J\x00\x00\x00\x80J\xff\xff\xff\x7fL2147483648L\x0aL9223372036854775807L\x0aL-9223372036854775808L\x0aL9223372036854775808L\x0aL-9223372036854775809L\x0aL1267650600228229401496703205376L\x0aL-1267650600228229401496703205376L\x0aL1000000000000000000000000000000L\x0ae."),
        ("ints", 2, b"\x80\x02]q\x00(K\x00K\x01J\xff\xff\xff\xffK\xffM\x00\x01M\xff\xffJ\x00\x00\x01\x00J\x00\x00\x00\x80J\xff\xff\xff\x7f\x8a\x05\x00\x00\x00\x80\x00\x8a\x08\xff\xff\xff\xff\xff\xff\xff\x7f\x8a\x08\x00\x00\x00\x00\x00\x00\x00\x80\x8a\x09\x00\x00\x00\x00\x00\x00\x00\x80\x00\x8a\x09\xff\xff\xff\xff\xff\xff\xff\x7f\xff\x8a\x0d\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x10\x8a\x0d\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\xf0\x8a\x0d\x00\x00\x00@\xea\xedtF\xd0\x9c,\x9f\x0ce."),
        ("ints", 3, b"\x80\x03]q\x00(K\x00K\x01J\xff\xff\xff\xffK\xffM\x00\x01M\xff\xffJ\x00\x00\x01\x00J\x00\x00\x00\x80J\xff\xff\xff\x7f\x8a\x05\x00\x00\x00\x80\x00\x8a\x08\xff\xff\xff\xff\xff\xff\xff\x7f\x8a\x08\x00\x00\x00\x00\x00\x00\x00\x80\x8a\x09\x00\x00\x00\x00\x00\x00\x00\x80\x00\x8a\x09\xff\xff\xff\xff\xff\xff\xff\x7f\xff\x8a\x0d\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x10\x8a\x0d\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\xf0\x8a\x0d\x00\x00\x00@\xea\xedtF\xd0\x9c,\x9f\x0ce."),
        ("ints", 4, b"\x80\x04\x95\x83\x00\x00\x00\x00\x00\x00\x00]\x94(K\x00K\x01J\xff\xff\xff\xffK\xffM\x00\x01M\xff\xffJ\x00\x00\x01\x00J\x00\x00\x00\x80J\xff\xff\xff\x7f\x8a\x05\x00\x00\x00\x80\x00\x8a\x08\xff\xff\xff\xff\xff\xff\xff\x7f\x8a\x08\x00\x00\x00\x00\x00\x00\x00\x80\x8a\x09\x00\x00\x00\x00\x00\x00\x00\x80\x00\x8a\x09\xff\xff\xff\xff\xff\xff\xff\x7f\xff\x8a\x0d\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x10\x8a\x0d\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\xf0\x8a\x0d\x00\x00\x00@\xea\xedtF\xd0\x9c,\x9f\x0ce."),
        ("ints", 5, b"\x80\x05\x95\x83\x00\x00\x00\x00\x00\x00\x00]\x94(K\x00K\x01J\xff\xff\xff\xffK\xffM\x00\x01M\xff\xffJ\x00\x00\x01\x00J\x00\x00\x00\x80J\xff\xff\xff\x7f\x8a\x05\x00\x00\x00\x80\x00\x8a\x08\xff\xff\xff\xff\xff\xff\xff\x7f\x8a\x08\x00\x00\x00\x00\x00\x00\x00\x80\x8a\x09\x00\x00\x00\x00\x00\x00\x00\x80\x00\x8a\x09\xff\xff\xff\xff\xff\xff\xff\x7f\xff\x8a\x0d\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x10\x8a\x0d\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\xf0\x8a\x0d\x00\x00\x00@\xea\xedtF\xd0\x9c,\x9f\x0ce."),
        ("floats", 0, b"(lp0\x0aF0.0\x0aaF-0.0\x0aaF1.5\x0aaF-2.25e-300\x0aaF1e+308\x0aaFinf\x0aaF-inf\x0aa."),
        ("floats", 1, b"]q\x00(G\x00\x00\x00\x00\x00\x00\x00\x00G\x80\x00\x00\x00\x00\x00\x00\x00G?\xf8\x00\x00\x00\x00\x00\x00G\x81\xb8\x1b\xe3\xbbX\x11\xc4G\x7f\xe1\xcc\xf3\x85\xeb\xc8\xa0G\x7f\xf0\x00\x00\x00\x00\x00\x00G\xff\xf0\x00\x00\x00\x00\x00\x00e."),
        ("floats", 2, b"\x80\x02]q\x00(G\x00\x00\x00\x00\x00\x00\x00\x00G\x80\x00\x00\x00\x00\x00\x00\x00G?\xf8\x00\x00\x00\x00\x00\x00G\x81\xb8\x1b\xe3\xbbX\x11\xc4G\x7f\xe1\xcc\xf3\x85\xeb\xc8\xa0G\x7f\xf0\x00\x00\x00\x00\x00\x00G\xff\xf0\x00\x00\x00\x00\x00\x00e."),
        ("floats", 3, b"\x80\x03]q\x00(G\x00\x00\x00\x00\x00\x00\x00\x00G\x80\x00\x00\x00\x00\x00\x00\x00G?\xf8\x00\x00\x00\x00\x00\x00G\x81\xb8\x1b\xe3\xbbX\x11\xc4G\x7f\xe1\xcc\xf3\x85\xeb\xc8\xa0G\x7f\xf0\x00\x00\x00\x00\x00\x00G\xff\xf0\x00\x00\x00\x00\x00\x00e."),
        ("floats", 4, b"\x80\x04\x95D\x00\x00\x00\x00\x00\x00\x00]\x94(G\x00\x00\x00\x00\x00\x00\x00\x00G\x80\x00\x00\x00\x00\x00\x00\x00G?\xf8\x00\x00\x00\x00\x00\x00G\x81\xb8\x1b\xe3\xbbX\x11\xc4G\x7f\xe1\xcc\xf3\x85\xeb\xc8\xa0G\x7f\xf0\x00\x00\x00\x00\x00\x00G\xff\xf0\x00\x00\x00\x00\x00\x00e."),
        ("floats", 5, b"\x80\x05\x95D\x00\x00\x00\x00\x00\x00\x00]\x94(G\x00\x00\x00\x00\x00\x00\x00\x00G\x80\x00\x00\x00\x00\x00\x00\x00G?\xf8\x00\x00\x00\x00\x00\x00G\x81\xb8\x1b\xe3\xbbX\x11\xc4G\x7f\xe1\xcc\xf3\x85\xeb\xc8\xa0G\x7f\xf0\x00\x00\x00\x00\x00\x00G\xff\xf0\x00\x00\x00\x00\x00\x00e."),
        ("nan", 0, b"Fnan\x0a."),
        ("nan", 1, b"G\x7f\xf8\x00\x00\x00\x00\x00\x00."),
        ("nan", 2, b"\x80\x02G\x7f\xf8\x00\x00\x00\x00\x00\x00."),
        ("nan", 3, b"\x80\x03G\x7f\xf8\x00\x00\x00\x00\x00\x00."),
        ("nan", 4, b"\x80\x04\x95\x0a\x00\x00\x00\x00\x00\x00\x00G\x7f\xf8\x00\x00\x00\x00\x00\x00."),
        ("nan", 5, b"\x80\x05\x95\x0a\x00\x00\x00\x00\x00\x00\x00G\x7f\xf8\x00\x00\x00\x00\x00\x00."),
        ("strs", 0, b"(lp0\x0aV\x0ap1\x0aaVa\x0ap2\x0aaV\xe9\x0ap3\x0aaV\\u65e5\\u672c\\u8a9e\x0ap4\x0aaV\\U0001f600\x0ap5\x0aaVline\\u000abreak\\u005c back\\u0000nul\\u000d\\u001a\x0ap6\x0aaVxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\x0ap7\x0aa."),
        ("strs", 1, b"]q\x00(X\x00\x00\x00\x00q\x01X\x01\x00\x00\x00aq\x02X\x02\x00\x00\x00\xc3\xa9q\x03X\x09\x00\x00\x00\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9eq\x04X\x04\x00\x00\x00\xf0\x9f\x98\x80q\x05X\x16\x00\x00\x00line\x0abreak\\ back\x00nul\x0d\x1aq\x06X,\x01\x00\x00xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxq\x07e."),
        ("strs", 2, b"\x80\x02]q\x00(X\x00\x00\x00\x00q\x01X\x01\x00\x00\x00aq\x02X\x02\x00\x00\x00\xc3\xa9q\x03X\x09\x00\x00\x00\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9eq\x04X\x04\x00\x00\x00\xf0\x9f\x98\x80q\x05X\x16\x00\x00\x00line\x0abreak\\ back\x00nul\x0d\x1aq\x06X,\x01\x00\x00xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxq\x07e."),
        ("strs", 3, b"\x80\x03]q\x00(X\x00\x00\x00\x00q\x01X\x01\x00\x00\x00aq\x02X\x02\x00\x00\x00\xc3\xa9q\x03X\x09\x00\x00\x00\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9eq\x04X\x04\x00\x00\x00\xf0\x9f\x98\x80q\x05X\x16\x00\x00\x00line\x0abreak\\ back\x00nul\x0d\x1aq\x06X,\x01\x00\x00xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxq\x07e."),
        ("strs", 4, b"\x80\x04\x95o\x01\x00\x00\x00\x00\x00\x00]\x94(\x8c\x00\x94\x8c\x01a\x94\x8c\x02\xc3\xa9\x94\x8c\x09\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e\x94\x8c\x04\xf0\x9f\x98\x80\x94\x8c\x16line\x0abreak\\ back\x00nul\x0d\x1a\x94X,\x01\x00\x00xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\x94e."),
        ("strs", 5, b"\x80\x05\x95o\x01\x00\x00\x00\x00\x00\x00]\x94(\x8c\x00\x94\x8c\x01a\x94\x8c\x02\xc3\xa9\x94\x8c\x09\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e\x94\x8c\x04\xf0\x9f\x98\x80\x94\x8c\x16line\x0abreak\\ back\x00nul\x0d\x1a\x94X,\x01\x00\x00xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\x94e."),
        ("bytes", 0, b"(lp0\x0ac__builtin__\x0abytes\x0ap1\x0a(tRp2\x0aac_codecs\x0aencode\x0ap3\x0a(V\\u0000\xff\\u005c\\u000a\x0ap4\x0aVlatin1\x0ap5\x0atp6\x0aRp7\x0aag3\x0a(Vyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy\x0ap8\x0ag5\x0atp9\x0aRp10\x0aac__builtin__\x0abytearray\x0ap11\x0a(tRp12\x0aag11\x0a(g3\x0a(Vab\x80\x0ap13\x0ag5\x0atp14\x0aRp15\x0atp16\x0aRp17\x0aa."),
        ("bytes", 1, b"]q\x00(c__builtin__\x0abytes\x0aq\x01)Rq\x02c_codecs\x0aencode\x0aq\x03(X\x05\x00\x00\x00\x00\xc3\xbf\\\x0aq\x04X\x06\x00\x00\x00latin1q\x05tq\x06Rq\x07h\x03(X,\x01\x00\x00yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyq\x08h\x05tq\x09Rq\x0ac__builtin__\x0abytearray\x0aq\x0b)Rq\x0ch\x0b(h\x03(X\x04\x00\x00\x00ab\xc2\x80q\x0dh\x05tq\x0eRq\x0ftq\x10Rq\x11e."),
        ("bytes", 2, b"\x80\x02]q\x00(c__builtin__\x0abytes\x0aq\x01)Rq\x02c_codecs\x0aencode\x0aq\x03X\x05\x00\x00\x00\x00\xc3\xbf\\\x0aq\x04X\x06\x00\x00\x00latin1q\x05\x86q\x06Rq\x07h\x03X,\x01\x00\x00yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyq\x08h\x05\x86q\x09Rq\x0ac__builtin__\x0abytearray\x0aq\x0b)Rq\x0ch\x0bh\x03X\x04\x00\x00\x00ab\xc2\x80q\x0dh\x05\x86q\x0eRq\x0f\x85q\x10Rq\x11e."),
        ("bytes", 3, b"\x80\x03]q\x00(C\x00q\x01C\x04\x00\xff\\\x0aq\x02B,\x01\x00\x00yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyq\x03cbuiltins\x0abytearray\x0aq\x04)Rq\x05h\x04C\x03ab\x80q\x06\x85q\x07Rq\x08e."),
        ("bytes", 4, b"\x80\x04\x95i\x01\x00\x00\x00\x00\x00\x00]\x94(C\x00\x94C\x04\x00\xff\\\x0a\x94B,\x01\x00\x00yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy\x94\x8c\x08builtins\x94\x8c\x09bytearray\x94\x93\x94)R\x94h\x06C\x03ab\x80\x94\x85\x94R\x94e."),
        ("bytes", 5, b"\x80\x05\x95X\x01\x00\x00\x00\x00\x00\x00]\x94(C\x00\x94C\x04\x00\xff\\\x0a\x94B,\x01\x00\x00yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy\x94\x96\x00\x00\x00\x00\x00\x00\x00\x00\x94\x96\x03\x00\x00\x00\x00\x00\x00\x00ab\x80\x94e."),
        ("nested", 0, b"(dp0\x0aVl\x0ap1\x0a(lp2\x0aI1\x0aa(lp3\x0aI2\x0aa(lp4\x0aI3\x0aa(taaasVt\x0ap5\x0a(I1\x0atp6\x0asVt2\x0ap7\x0a(I1\x0aI2\x0atp8\x0asVt3\x0ap9\x0a(I1\x0aI2\x0aI3\x0atp10\x0asVt4\x0ap11\x0a(I1\x0aI2\x0aI3\x0aI4\x0atp12\x0asVd\x0ap13\x0a(dp14\x0aI1\x0aVone\x0ap15\x0as(I1\x0aVa\x0ap16\x0atp17\x0aNsVn\x0ap18\x0a(dp19\x0assVs\x0ap20\x0ac__builtin__\x0aset\x0ap21\x0a((lp22\x0aI1\x0aaI2\x0aaI3\x0aatp23\x0aRp24\x0asVes\x0ap25\x0ag21\x0a((lp26\x0atp27\x0aRp28\x0asVfs\x0ap29\x0ac__builtin__\x0afrozenset\x0ap30\x0a((lp31\x0aI5\x0aatp32\x0aRp33\x0asVefs\x0ap34\x0ag30\x0a((lp35\x0atp36\x0aRp37\x0asVb\x0ap38\x0aI01\x0asVf\x0ap39\x0aI00\x0asVnone\x0ap40\x0aNs."),
        ("nested", 1, b"}q\x00(X\x01\x00\x00\x00lq\x01]q\x02(K\x01]q\x03(K\x02]q\x04(K\x03)eeeX\x01\x00\x00\x00tq\x05(K\x01tq\x06X\x02\x00\x00\x00t2q\x07(K\x01K\x02tq\x08X\x02\x00\x00\x00t3q\x09(K\x01K\x02K\x03tq\x0aX\x02\x00\x00\x00t4q\x0b(K\x01K\x02K\x03K\x04tq\x0cX\x01\x00\x00\x00dq\x0d}q\x0e(K\x01X\x03\x00\x00\x00oneq\x0f(K\x01X\x01\x00\x00\x00aq\x10tq\x11NX\x01\x00\x00\x00nq\x12}q\x13uX\x01\x00\x00\x00sq\x14c__builtin__\x0aset\x0aq\x15(]q\x16(K\x01K\x02K\x03etq\x17Rq\x18X\x02\x00\x00\x00esq\x19h\x15(]q\x1atq\x1bRq\x1cX\x02\x00\x00\x00fsq\x1dc__builtin__\x0afrozenset\x0aq\x1e(]q\x1fK\x05atq Rq!X\x03\x00\x00\x00efsq\"h\x1e(]q#tq$Rq%X\x01\x00\x00\x00bq&I01\x0aX\x01\x00\x00\x00fq'I00\x0aX\x04\x00\x00\x00noneq(Nu."),
        ("nested", 2, b"\x80\x02}q\x00(X\x01\x00\x00\x00lq\x01]q\x02(K\x01]q\x03(K\x02]q\x04(K\x03)eeeX\x01\x00\x00\x00tq\x05K\x01\x85q\x06X\x02\x00\x00\x00t2q\x07K\x01K\x02\x86q\x08X\x02\x00\x00\x00t3q\x09K\x01K\x02K\x03\x87q\x0aX\x02\x00\x00\x00t4q\x0b(K\x01K\x02K\x03K\x04tq\x0cX\x01\x00\x00\x00dq\x0d}q\x0e(K\x01X\x03\x00\x00\x00oneq\x0fK\x01X\x01\x00\x00\x00aq\x10\x86q\x11NX\x01\x00\x00\x00nq\x12}q\x13uX\x01\x00\x00\x00sq\x14c__builtin__\x0aset\x0aq\x15]q\x16(K\x01K\x02K\x03e\x85q\x17Rq\x18X\x02\x00\x00\x00esq\x19h\x15]q\x1a\x85q\x1bRq\x1cX\x02\x00\x00\x00fsq\x1dc__builtin__\x0afrozenset\x0aq\x1e]q\x1fK\x05a\x85q Rq!X\x03\x00\x00\x00efsq\"h\x1e]q#\x85q$Rq%X\x01\x00\x00\x00bq&\x88X\x01\x00\x00\x00fq'\x89X\x04\x00\x00\x00noneq(Nu."),
        ("nested", 3, b"\x80\x03}q\x00(X\x01\x00\x00\x00lq\x01]q\x02(K\x01]q\x03(K\x02]q\x04(K\x03)eeeX\x01\x00\x00\x00tq\x05K\x01\x85q\x06X\x02\x00\x00\x00t2q\x07K\x01K\x02\x86q\x08X\x02\x00\x00\x00t3q\x09K\x01K\x02K\x03\x87q\x0aX\x02\x00\x00\x00t4q\x0b(K\x01K\x02K\x03K\x04tq\x0cX\x01\x00\x00\x00dq\x0d}q\x0e(K\x01X\x03\x00\x00\x00oneq\x0fK\x01X\x01\x00\x00\x00aq\x10\x86q\x11NX\x01\x00\x00\x00nq\x12}q\x13uX\x01\x00\x00\x00sq\x14cbuiltins\x0aset\x0aq\x15]q\x16(K\x01K\x02K\x03e\x85q\x17Rq\x18X\x02\x00\x00\x00esq\x19h\x15]q\x1a\x85q\x1bRq\x1cX\x02\x00\x00\x00fsq\x1dcbuiltins\x0afrozenset\x0aq\x1e]q\x1fK\x05a\x85q Rq!X\x03\x00\x00\x00efsq\"h\x1e]q#\x85q$Rq%X\x01\x00\x00\x00bq&\x88X\x01\x00\x00\x00fq'\x89X\x04\x00\x00\x00noneq(Nu."),
        ("nested", 4, b"\x80\x04\x95\xa5\x00\x00\x00\x00\x00\x00\x00}\x94(\x8c\x01l\x94]\x94(K\x01]\x94(K\x02]\x94(K\x03)eee\x8c\x01t\x94K\x01\x85\x94\x8c\x02t2\x94K\x01K\x02\x86\x94\x8c\x02t3\x94K\x01K\x02K\x03\x87\x94\x8c\x02t4\x94(K\x01K\x02K\x03K\x04t\x94\x8c\x01d\x94}\x94(K\x01\x8c\x03one\x94K\x01\x8c\x01a\x94\x86\x94N\x8c\x01n\x94}\x94u\x8c\x01s\x94\x8f\x94(K\x01K\x02K\x03\x90\x8c\x02es\x94\x8f\x94\x8c\x02fs\x94(K\x05\x91\x94\x8c\x03efs\x94(\x91\x94\x8c\x01b\x94\x88\x8c\x01f\x94\x89\x8c\x04none\x94Nu."),
        ("nested", 5, b"\x80\x05\x95\xa5\x00\x00\x00\x00\x00\x00\x00}\x94(\x8c\x01l\x94]\x94(K\x01]\x94(K\x02]\x94(K\x03)eee\x8c\x01t\x94K\x01\x85\x94\x8c\x02t2\x94K\x01K\x02\x86\x94\x8c\x02t3\x94K\x01K\x02K\x03\x87\x94\x8c\x02t4\x94(K\x01K\x02K\x03K\x04t\x94\x8c\x01d\x94}\x94(K\x01\x8c\x03one\x94K\x01\x8c\x01a\x94\x86\x94N\x8c\x01n\x94}\x94u\x8c\x01s\x94\x8f\x94(K\x01K\x02K\x03\x90\x8c\x02es\x94\x8f\x94\x8c\x02fs\x94(K\x05\x91\x94\x8c\x03efs\x94(\x91\x94\x8c\x01b\x94\x88\x8c\x01f\x94\x89\x8c\x04none\x94Nu."),
        ("shared", 0, b"(lp0\x0a(lp1\x0aI1\x0aaI2\x0aaag1\x0aaVshared-string\x0ap2\x0aag2\x0aa(g1\x0ag2\x0atp3\x0aa."),
        ("shared", 1, b"]q\x00(]q\x01(K\x01K\x02eh\x01X\x0d\x00\x00\x00shared-stringq\x02h\x02(h\x01h\x02tq\x03e."),
        ("shared", 2, b"\x80\x02]q\x00(]q\x01(K\x01K\x02eh\x01X\x0d\x00\x00\x00shared-stringq\x02h\x02h\x01h\x02\x86q\x03e."),
        ("shared", 3, b"\x80\x03]q\x00(]q\x01(K\x01K\x02eh\x01X\x0d\x00\x00\x00shared-stringq\x02h\x02h\x01h\x02\x86q\x03e."),
        ("shared", 4, b"\x80\x04\x95'\x00\x00\x00\x00\x00\x00\x00]\x94(]\x94(K\x01K\x02eh\x01\x8c\x0dshared-string\x94h\x02h\x01h\x02\x86\x94e."),
        ("shared", 5, b"\x80\x05\x95'\x00\x00\x00\x00\x00\x00\x00]\x94(]\x94(K\x01K\x02eh\x01\x8c\x0dshared-string\x94h\x02h\x01h\x02\x86\x94e."),
        ("job", 0, b"(dp0\x0aVt\x0ap1\x0aNsVf\x0ap2\x0aVprocess_document\x0ap3\x0asVa\x0ap4\x0a(Vdoc-1\x0ap5\x0aI42\x0atp6\x0asVk\x0ap7\x0a(dp8\x0asVet\x0ap9\x0aL1764348000123L\x0as."),
        ("job", 1, b"}q\x00(X\x01\x00\x00\x00tq\x01NX\x01\x00\x00\x00fq\x02X\x10\x00\x00\x00process_documentq\x03X\x01\x00\x00\x00aq\x04(X\x05\x00\x00\x00doc-1q\x05K*tq\x06X\x01\x00\x00\x00kq\x07}q\x08X\x02\x00\x00\x00etq\x09L1764348000123L\x0au."),
        ("job", 2, b"\x80\x02}q\x00(X\x01\x00\x00\x00tq\x01NX\x01\x00\x00\x00fq\x02X\x10\x00\x00\x00process_documentq\x03X\x01\x00\x00\x00aq\x04X\x05\x00\x00\x00doc-1q\x05K*\x86q\x06X\x01\x00\x00\x00kq\x07}q\x08X\x02\x00\x00\x00etq\x09\x8a\x06{\xf7U\xcb\x9a\x01u."),
        ("job", 3, b"\x80\x03}q\x00(X\x01\x00\x00\x00tq\x01NX\x01\x00\x00\x00fq\x02X\x10\x00\x00\x00process_documentq\x03X\x01\x00\x00\x00aq\x04X\x05\x00\x00\x00doc-1q\x05K*\x86q\x06X\x01\x00\x00\x00kq\x07}q\x08X\x02\x00\x00\x00etq\x09\x8a\x06{\xf7U\xcb\x9a\x01u."),
        ("job", 4, b"\x80\x04\x95D\x00\x00\x00\x00\x00\x00\x00}\x94(\x8c\x01t\x94N\x8c\x01f\x94\x8c\x10process_document\x94\x8c\x01a\x94\x8c\x05doc-1\x94K*\x86\x94\x8c\x01k\x94}\x94\x8c\x02et\x94\x8a\x06{\xf7U\xcb\x9a\x01u."),
        ("job", 5, b"\x80\x05\x95D\x00\x00\x00\x00\x00\x00\x00}\x94(\x8c\x01t\x94N\x8c\x01f\x94\x8c\x10process_document\x94\x8c\x01a\x94\x8c\x05doc-1\x94K*\x86\x94\x8c\x01k\x94}\x94\x8c\x02et\x94\x8a\x06{\xf7U\xcb\x9a\x01u."),
        ("batch", 0, b"(lp0\x0aNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNaNa."),
        ("batch", 1, b"]q\x00(NNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNe(Ne."),
        ("batch", 2, b"\x80\x02]q\x00(NNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNe(Ne."),
        ("batch", 3, b"\x80\x03]q\x00(NNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNe(Ne."),
        ("batch", 4, b"\x80\x04\x95\xf0\x03\x00\x00\x00\x00\x00\x00]\x94(NNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNe(Ne."),
        ("batch", 5, b"\x80\x05\x95\xf0\x03\x00\x00\x00\x00\x00\x00]\x94(NNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNe(Ne."),
    ];

    fn s(v: &str) -> PyValue {
        PyValue::str(v)
    }

    fn big(digits: &str) -> PyValue {
        PyValue::BigInt(digits.to_string())
    }

    fn ints(items: &[i64]) -> Vec<PyValue> {
        items.iter().map(|&i| PyValue::Int(i)).collect()
    }

    /// What `pickle.loads` of each `PY_FIXTURES` value gives, as a `PyValue`.
    fn expected_fixture(name: &str) -> PyValue {
        let shared = PyValue::List(ints(&[1, 2]));
        match name {
            "ints" => {
                let mut v = ints(&[0, 1, -1, 255, 256, 65535, 65536, -(1 << 31), (1 << 31) - 1, 1 << 31]);
                v.extend([
                    PyValue::Int(i64::MAX),
                    PyValue::Int(i64::MIN),
                    big("9223372036854775808"),
                    big("-9223372036854775809"),
                    big("1267650600228229401496703205376"),
                    big("-1267650600228229401496703205376"),
                    big("1000000000000000000000000000000"),
                ]);
                PyValue::List(v)
            }
            "floats" => PyValue::List(
                [0.0, -0.0, 1.5, -2.25e-300, 1e308, f64::INFINITY, f64::NEG_INFINITY]
                    .into_iter()
                    .map(PyValue::Float)
                    .collect(),
            ),
            "nan" => PyValue::Float(f64::NAN),
            "strs" => PyValue::List(vec![
                s(""),
                s("a"),
                s("é"),
                s("日本語"),
                s("\u{1f600}"),
                s("line\nbreak\\ back\0nul\r\x1a"),
                s(&"x".repeat(300)),
            ]),
            "bytes" => PyValue::List(vec![
                PyValue::Bytes(vec![]),
                PyValue::Bytes(b"\x00\xff\\\n".to_vec()),
                PyValue::Bytes(vec![b'y'; 300]),
                PyValue::Bytes(vec![]),
                PyValue::Bytes(b"ab\x80".to_vec()),
            ]),
            "nested" => PyValue::Dict(vec![
                (
                    s("l"),
                    PyValue::List(vec![
                        PyValue::Int(1),
                        PyValue::List(vec![
                            PyValue::Int(2),
                            PyValue::List(vec![PyValue::Int(3), PyValue::Tuple(vec![])]),
                        ]),
                    ]),
                ),
                (s("t"), PyValue::Tuple(ints(&[1]))),
                (s("t2"), PyValue::Tuple(ints(&[1, 2]))),
                (s("t3"), PyValue::Tuple(ints(&[1, 2, 3]))),
                (s("t4"), PyValue::Tuple(ints(&[1, 2, 3, 4]))),
                (
                    s("d"),
                    PyValue::Dict(vec![
                        (PyValue::Int(1), s("one")),
                        (PyValue::Tuple(vec![PyValue::Int(1), s("a")]), PyValue::None),
                        (s("n"), PyValue::Dict(vec![])),
                    ]),
                ),
                (s("s"), PyValue::List(ints(&[1, 2, 3]))),
                (s("es"), PyValue::List(vec![])),
                (s("fs"), PyValue::List(ints(&[5]))),
                (s("efs"), PyValue::List(vec![])),
                (s("b"), PyValue::Bool(true)),
                (s("f"), PyValue::Bool(false)),
                (s("none"), PyValue::None),
            ]),
            "shared" => PyValue::List(vec![
                shared.clone(),
                shared.clone(),
                s("shared-string"),
                s("shared-string"),
                PyValue::Tuple(vec![shared, s("shared-string")]),
            ]),
            "job" => PyValue::Dict(vec![
                (s("t"), PyValue::None),
                (s("f"), s("process_document")),
                (s("a"), PyValue::Tuple(vec![s("doc-1"), PyValue::Int(42)])),
                (s("k"), PyValue::Dict(vec![])),
                (s("et"), PyValue::Int(1764348000123)),
            ]),
            "batch" => PyValue::List(vec![PyValue::None; 1001]),
            other => panic!("no expected value for {other}"),
        }
    }

    /// Equality with floats compared bit for bit (NaN equals NaN, -0.0 is not 0.0).
    fn same(a: &PyValue, b: &PyValue) -> bool {
        match (a, b) {
            (PyValue::Float(x), PyValue::Float(y)) => x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan()),
            (PyValue::List(x), PyValue::List(y)) | (PyValue::Tuple(x), PyValue::Tuple(y)) => {
                x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b))
            }
            (PyValue::Dict(x), PyValue::Dict(y)) => {
                x.len() == y.len() && x.iter().zip(y).all(|((ka, va), (kb, vb))| same(ka, kb) && same(va, vb))
            }
            _ => a == b,
        }
    }

    #[test]
    fn reads_what_python_writes_at_every_protocol() {
        let mut seen = std::collections::BTreeSet::new();
        for &(name, protocol, bytes) in PY_FIXTURES {
            let got = from_pickle_bytes(bytes).unwrap_or_else(|e| panic!("{name} protocol {protocol}: {e}"));
            let want = expected_fixture(name);
            assert!(
                same(&got, &want),
                "{name} protocol {protocol}:\n got {got:?}\nwant {want:?}"
            );
            seen.insert(protocol);
        }
        assert_eq!(seen.len(), 6, "protocols 0 to 5");
        // The arq job of Appendix A, at every protocol, is the job of the spec.
        let job = from_pickle_bytes(ARQ_JOB).unwrap();
        assert!(same(&job, &expected_fixture("job")));
    }

    #[test]
    fn custom_classes_are_named_without_pickling_plumbing() {
        // class Point: def __init__(s): s.x = 1   (in __main__), at protocols 0, 2, 4
        let fixtures: [&[u8]; 3] = [
            b"ccopy_reg\x0a_reconstructor\x0ap0\x0a(c__main__\x0aPoint\x0ap1\x0ac__builtin__\x0aobject\x0ap2\x0aNtp3\x0aRp4\x0a(dp5\x0aVx\x0ap6\x0aI1\x0asb.",
            b"\x80\x02c__main__\x0aPoint\x0aq\x00)\x81q\x01}q\x02X\x01\x00\x00\x00xq\x03K\x01sb.",
            b"\x80\x04\x95#\x00\x00\x00\x00\x00\x00\x00\x8c\x08__main__\x94\x8c\x05Point\x94\x93\x94)\x81\x94}\x94\x8c\x01x\x94K\x01sb.",
        ];
        for bytes in fixtures {
            let err = from_pickle_bytes(bytes).unwrap_err();
            assert_eq!(
                err,
                "it holds Python objects doculearn cannot use (__main__.Point); send strings, numbers, lists or dicts"
            );
        }
        // pickle.dumps({'when': datetime.date(2026, 1, 2)}, protocol=0)
        let p0 = b"(dp0\x0aVwhen\x0ap1\x0acdatetime\x0adate\x0ap2\x0a(c_codecs\x0aencode\x0ap3\x0a(V\x07\xea\x01\x02\x0ap4\x0aVlatin1\x0ap5\x0atp6\x0aRp7\x0atp8\x0aRp9\x0as.";
        let err = from_pickle_bytes(p0).unwrap_err();
        assert!(err.contains("(datetime.date)"), "{err}");
        // A class itself: pickle.dumps(set, protocol=4)
        let class = b"\x80\x04\x95\x14\x00\x00\x00\x00\x00\x00\x00\x8c\x08builtins\x94\x8c\x03set\x94\x93\x94.";
        assert!(from_pickle_bytes(class).unwrap_err().contains("(builtins.set)"));
    }

    #[test]
    fn cycles_are_refused_as_too_deep() {
        // a = []; a.append(a) and t = ([],); t[0].append(t), at protocols 0, 2 and 4
        let fixtures: [&[u8]; 6] = [
            b"(lp0\x0ag0\x0aa.",
            b"((lp0\x0a(g0\x0atp1\x0aa00g1\x0a.",
            b"\x80\x02]q\x00h\x00a.",
            b"\x80\x02]q\x00h\x00\x85q\x01a0h\x01.",
            b"\x80\x04\x95\x06\x00\x00\x00\x00\x00\x00\x00]\x94h\x00a.",
            b"\x80\x04\x95\x0b\x00\x00\x00\x00\x00\x00\x00]\x94h\x00\x85\x94a0h\x01.",
        ];
        for bytes in fixtures {
            assert_eq!(from_pickle_bytes(bytes).unwrap_err(), too_deep());
        }
    }

    // ---- hostile input -----------------------------------------------

    /// Decodes and returns the error and how long it took.
    fn refused(bytes: &[u8]) -> (String, Duration) {
        let started = Instant::now();
        let err = from_pickle_bytes(bytes).expect_err("refused");
        let globals = find_globals(bytes);
        assert!(globals.len() <= MAX_NAMED_GLOBALS);
        (err, started.elapsed())
    }

    #[test]
    fn overflowing_lengths_are_refused_promptly() {
        let huge8 = [u64::MAX, u64::MAX - 7, u64::MAX - 8, 1 << 63, (1 << 63) - 1, 1 << 40];
        let mut cases: Vec<Vec<u8>> = Vec::new();
        for op in [0x96u8, 0x8d, 0x8e, 0x95] {
            for len in huge8 {
                for protocol in [4u8, 5] {
                    let mut b = vec![0x80, protocol, op];
                    b.extend_from_slice(&len.to_le_bytes());
                    b.extend_from_slice(b"abc.");
                    cases.push(b);
                }
            }
        }
        for op in [0x8bu8, b'X', b'B', b'T'] {
            for len in [u32::MAX, u32::MAX - 3, 1 << 31, (1 << 31) - 1] {
                let mut b = vec![0x80, 4, op];
                b.extend_from_slice(&len.to_le_bytes());
                b.extend_from_slice(b"abc.");
                cases.push(b);
            }
        }
        // The incident's payload: a FRAME, then BYTEARRAY8 with a length near 2^64.
        let mut incident = b"\x80\x05\x95\x0b\x00\x00\x00\x00\x00\x00\x00\x96".to_vec();
        incident.extend_from_slice(&(u64::MAX - 7).to_le_bytes());
        incident.extend_from_slice(b"\x94.");
        cases.push(incident);
        let mut slowest = Duration::ZERO;
        for case in &cases {
            let (err, took) = refused(case);
            assert!(
                err == "the pickle is truncated" || err.starts_with("malformed pickle"),
                "{case:?}: {err}"
            );
            slowest = slowest.max(took);
        }
        eprintln!("{} overflowing lengths refused, slowest in {slowest:?}", cases.len());
        assert!(slowest < Duration::from_millis(50), "{slowest:?}");
    }

    /// `[[[...]]]` `n` deep, as Python's pickler writes a one-item list
    /// (`APPEND`) at protocol 2, and with MARK/APPENDS (as for longer lists)
    /// at protocol 4, and as nested one-item tuples (`TUPLE1`, no MARK).
    fn deep_pickles(n: usize) -> Vec<(&'static str, Vec<u8>)> {
        let mut append = b"\x80\x02".to_vec();
        append.extend(std::iter::repeat_n(b']', n));
        append.extend(std::iter::repeat_n(b'a', n - 1));
        append.push(b'.');
        let mut appends = b"\x80\x04".to_vec();
        for _ in 0..n {
            appends.extend_from_slice(b"]\x94(");
        }
        appends.extend(std::iter::repeat_n(b'e', n));
        appends.push(b'.');
        let mut tuples = b"\x80\x02N".to_vec();
        tuples.extend(std::iter::repeat_n(0x85, n));
        tuples.push(b'.');
        let mut dicts = b"\x80\x02".to_vec();
        for _ in 0..n {
            dicts.extend_from_slice(b"}K\x01");
        }
        dicts.push(b'N');
        dicts.extend(std::iter::repeat_n(b's', n));
        dicts.push(b'.');
        vec![
            ("protocol 2 APPEND", append),
            ("protocol 4 MARK/APPENDS", appends),
            ("TUPLE1", tuples),
            ("SETITEM", dicts),
        ]
    }

    #[test]
    fn deep_nesting_is_refused_promptly() {
        for (what, bytes) in deep_pickles(100_000) {
            let (err, took) = refused(&bytes);
            eprintln!("100,000-deep {what}: refused in {took:?}");
            assert_eq!(err, too_deep(), "{what}");
            assert!(took < Duration::from_secs(1), "{what}: {took:?}");
        }
        // Exactly the limit is fine, one more is not.
        for (what, bytes) in deep_pickles(MAX_DEPTH) {
            assert!(from_pickle_bytes(&bytes).is_ok(), "{what}");
        }
        for (what, bytes) in deep_pickles(MAX_DEPTH + 1) {
            assert_eq!(from_pickle_bytes(&bytes).unwrap_err(), too_deep(), "{what}");
        }
        let deep_json = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        let started = Instant::now();
        assert!(serde_json::from_str::<serde_json::Value>(&deep_json).is_err());
        eprintln!("100,000-deep JSON: refused by serde_json in {:?}", started.elapsed());
    }

    #[test]
    fn memo_references_cannot_blow_up() {
        // Seven levels, each a list of ten references to the level below:
        // 10^7 values from about 200 bytes.
        let mut laughs = b"\x80\x02Nq\x00".to_vec();
        for level in 1..=7u8 {
            laughs.extend_from_slice(b"](");
            for _ in 0..10 {
                laughs.extend_from_slice(&[b'h', level - 1]);
            }
            laughs.extend_from_slice(&[b'e', b'q', level]);
        }
        laughs.push(b'.');
        let (err, took) = refused(&laughs);
        eprintln!("billion laughs ({} bytes): refused in {took:?}", laughs.len());
        assert_eq!(err, too_many_values());
        // One 1 MiB str referenced 100 times: 100 MiB of text from 1 MiB.
        let mut text = b"\x80\x02X\x00\x00\x10\x00".to_vec();
        text.extend(std::iter::repeat_n(b'x', 1 << 20));
        text.extend_from_slice(b"q\x00](");
        for _ in 0..100 {
            text.extend_from_slice(b"h\x00");
        }
        text.extend_from_slice(b"e.");
        let (err, took) = refused(&text);
        eprintln!("shared 1 MiB str x100: refused in {took:?}");
        assert_eq!(err, too_much_text());
        // GET pushes count even when nothing is built from them.
        let mut gets = b"\x80\x02Nq\x00".to_vec();
        gets.extend(std::iter::repeat_n(*b"h\x00", MAX_VALUES).flatten());
        assert_eq!(refused(&gets).0, too_many_values());
    }

    #[test]
    fn other_limits_and_malformed_input_give_readable_errors() {
        let too_big = vec![b'N'; MAX_INPUT_BYTES + 1];
        assert_eq!(refused(&too_big).0, "the pickle is larger than 16 MiB");
        // Ints: 1000 digits are fine, 1001 are not; neither are 416 binary bytes.
        let digits = "7".repeat(MAX_INT_DIGITS);
        let ok = from_pickle_bytes(format!("L{digits}L\n.").as_bytes()).unwrap();
        assert_eq!(ok, PyValue::BigInt(digits.clone()));
        assert_eq!(refused(format!("L{digits}7L\n.").as_bytes()).0, too_long_int());
        let mut long4 = b"\x80\x02\x8b\xa0\x01\x00\x00".to_vec();
        long4.extend(std::iter::repeat_n(0x11, 0x1a0));
        long4.push(b'.');
        assert_eq!(refused(&long4).0, too_long_int());
        for (bytes, want) in [
            (&b""[..], "the pickle is truncated"),
            (b"\x80\x04N", "the pickle is truncated"),
            (b"\x80\x09N.", "unsupported pickle protocol 9"),
            (b"\x80\x02.", "malformed pickle: there is no value to return"),
            (b"\x80\x02a.", "malformed pickle: a value is missing"),
            (b"\x80\x02Ne.", "malformed pickle: a mark is missing"),
            (b"\x80\x02h\x05.", "malformed pickle: memo entry 5 is missing"),
            (b"\x80\x02NNa.", "malformed pickle: appending to a None"),
            (b"\x80\x02(N(Nu.", "malformed pickle: a dict key has no value"),
            (b"\x80\x02\xff.", "malformed pickle: unknown opcode 0xff at byte 2"),
            (
                b"\x80\x02X\x02\x00\x00\x00\xc3(.",
                "it holds a str that is not valid utf-8",
            ),
            (b"\x80\x02Q.", "it holds persistent ids doculearn cannot resolve"),
            (b"\x80\x02\x82\x01.", "it refers to Python's pickle extension registry"),
            (b"\x80\x05\x97.", "it refers to out-of-band buffers"),
            (
                b"\x80\x02}]Ns.",
                "malformed pickle: a dict key or set item is a list, which Python cannot hash",
            ),
            (b"\x80\x02]K\x01b.", "malformed pickle: BUILD on a list"),
        ] {
            assert_eq!(refused(bytes).0, want, "{bytes:?}");
        }
    }

    #[test]
    fn repeated_keys_and_set_items_behave_as_in_python() {
        // {'a': 1, 'b': 2, 'a': 3} written by hand; Python keeps 'a' first with 3.
        let dict = b"\x80\x02}(X\x01\x00\x00\x00aK\x01X\x01\x00\x00\x00bK\x02X\x01\x00\x00\x00aK\x03u.";
        assert_eq!(
            from_pickle_bytes(dict).unwrap(),
            PyValue::Dict(vec![(s("a"), PyValue::Int(3)), (s("b"), PyValue::Int(2))])
        );
        // {1, True, 1.0, 2} is {1, 2}
        let set = b"\x80\x04\x8f(K\x01\x88G?\xf0\x00\x00\x00\x00\x00\x00K\x02\x90.";
        assert_eq!(from_pickle_bytes(set).unwrap(), PyValue::List(ints(&[1, 2])));
    }

    #[test]
    fn rarer_opcodes_read_as_python_reads_them() {
        // BUILD with a None state changes nothing.
        assert_eq!(from_pickle_bytes(b"\x80\x02]Nb.").unwrap(), PyValue::List(vec![]));
        // POP, POP_MARK and DUP; a memo index far from the others.
        assert_eq!(
            from_pickle_bytes(b"\x80\x02(K\x01K\x021K\x032r\xff\xff\xff\xff0j\xff\xff\xff\xff\x86.").unwrap(),
            PyValue::Tuple(ints(&[3, 3]))
        );
        // Python 3 reads Python 2's str as an ASCII str.
        assert_eq!(from_pickle_bytes(b"S'a\\x41\\n\\'\\101'\n.").unwrap(), s("aA\n'A"));
        assert_eq!(from_pickle_bytes(b"U\x02hi.").unwrap(), s("hi"));
        assert_eq!(from_pickle_bytes(b"T\x02\x00\x00\x00hi.").unwrap(), s("hi"));
        assert_eq!(refused(b"U\x02h\xe9.").0, "it holds a Python 2 str that is not ascii");
        // Text ints and floats as Python's int(x, 0) and float parsing read them.
        assert_eq!(from_pickle_bytes(b"I-0\n.").unwrap(), PyValue::Int(0));
        assert_eq!(from_pickle_bytes(b"L000L\n.").unwrap(), PyValue::Int(0));
        assert!(from_pickle_bytes(b"I010\n.").is_err());
        assert!(from_pickle_bytes(b"I 1\n.").is_err());
        assert_eq!(from_pickle_bytes(b"Finf\n.").unwrap(), PyValue::Float(f64::INFINITY));
        assert_eq!(refused(b"F1e999\n.").0, "malformed pickle: a float is out of range");
        // Raw-unicode-escape: an even run of backslashes is no escape.
        assert_eq!(from_pickle_bytes(b"V\\\\u0041\\u0041\n.").unwrap(), s("\\\\u0041A"));
        assert!(from_pickle_bytes(b"V\\ud800\n.").is_err());
        assert!(from_pickle_bytes(b"V\\u00\n.").is_err());
    }

    // ---- properties --------------------------------------------------

    fn leaf() -> impl Strategy<Value = PyValue> {
        prop_oneof![
            Just(PyValue::None),
            any::<bool>().prop_map(PyValue::Bool),
            any::<i64>().prop_map(PyValue::Int),
            any::<i128>()
                .prop_filter("beyond i64", |i| i64::try_from(*i).is_err())
                .prop_map(|i| PyValue::BigInt(i.to_string())),
            any::<u64>()
                .prop_map(f64::from_bits)
                .prop_filter("not NaN", |f| !f.is_nan())
                .prop_map(PyValue::Float),
            prop::collection::vec(any::<char>(), 0..12).prop_map(|c| PyValue::Str(c.into_iter().collect())),
            prop::collection::vec(any::<u8>(), 0..12).prop_map(PyValue::Bytes),
        ]
    }

    fn tree() -> impl Strategy<Value = PyValue> {
        leaf().prop_recursive(8, 200, 5, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..5).prop_map(PyValue::List),
                prop::collection::vec(inner.clone(), 0..5).prop_map(PyValue::Tuple),
                prop::collection::btree_map("[a-z]{0,6}", inner.clone(), 0..5)
                    .prop_map(|m| PyValue::Dict(m.into_iter().map(|(k, v)| (PyValue::Str(k), v)).collect())),
                prop::collection::btree_map(any::<i64>(), inner, 0..5)
                    .prop_map(|m| PyValue::Dict(m.into_iter().map(|(k, v)| (PyValue::Int(k), v)).collect())),
            ]
        })
    }

    /// Valid pickles to mutate: every Python fixture and our own job bytes.
    fn seeds() -> Vec<Vec<u8>> {
        let mut seeds: Vec<Vec<u8>> = PY_FIXTURES.iter().map(|&(_, _, b)| b.to_vec()).collect();
        seeds.push(ARQ_JOB.to_vec());
        seeds.push(expected_fixture("nested").to_pickle());
        seeds
    }

    #[derive(Debug, Clone)]
    enum Mutation {
        Flip(usize, u8),
        Set(usize, u8),
        Truncate(usize),
        Insert(usize, Vec<u8>),
        Delete(usize, usize),
        /// A length-sized window replaced by a huge value.
        Huge(usize, usize, u64),
    }

    fn mutation() -> impl Strategy<Value = Mutation> {
        let huge = prop_oneof![
            Just(u64::MAX),
            Just(u64::MAX - 7),
            Just(1u64 << 63),
            Just(u64::from(u32::MAX)),
            Just(1u64 << 31),
            any::<u64>()
        ];
        prop_oneof![
            (any::<usize>(), 0..8u8).prop_map(|(p, b)| Mutation::Flip(p, b)),
            (any::<usize>(), any::<u8>()).prop_map(|(p, b)| Mutation::Set(p, b)),
            any::<usize>().prop_map(Mutation::Truncate),
            (any::<usize>(), prop::collection::vec(any::<u8>(), 1..6)).prop_map(|(p, b)| Mutation::Insert(p, b)),
            (any::<usize>(), 1..8usize).prop_map(|(p, n)| Mutation::Delete(p, n)),
            (
                any::<usize>(),
                prop_oneof![Just(1usize), Just(2), Just(4), Just(8)],
                huge
            )
                .prop_map(|(p, w, v)| Mutation::Huge(p, w, v)),
        ]
    }

    fn mutate(bytes: &mut Vec<u8>, m: &Mutation) {
        let len = bytes.len().max(1);
        match m {
            Mutation::Flip(p, bit) => {
                if let Some(b) = bytes.get_mut(p % len) {
                    *b ^= 1 << bit;
                }
            }
            Mutation::Set(p, v) => {
                if let Some(b) = bytes.get_mut(p % len) {
                    *b = *v;
                }
            }
            Mutation::Truncate(p) => bytes.truncate(p % len),
            Mutation::Insert(p, new) => {
                let at = p % (bytes.len() + 1);
                bytes.splice(at..at, new.iter().copied());
            }
            Mutation::Delete(p, n) => {
                let at = p % len;
                let end = (at + n).min(bytes.len());
                if at < end {
                    bytes.drain(at..end);
                }
            }
            Mutation::Huge(p, width, v) => {
                let at = p % len;
                for (i, b) in v.to_le_bytes().iter().take(*width).enumerate() {
                    if let Some(slot) = bytes.get_mut(at + i) {
                        *slot = *b;
                    }
                }
            }
        }
    }

    /// Decodes with a stopwatch: hostile input must be answered fast.
    fn decode_quickly(bytes: &[u8]) {
        let started = Instant::now();
        let _ = from_pickle_bytes(bytes);
        let _ = find_globals(bytes);
        let took = started.elapsed();
        assert!(took < Duration::from_secs(2), "{} bytes took {took:?}", bytes.len());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn any_value_round_trips(v in tree()) {
            let back = from_pickle_bytes(&v.to_pickle()).map_err(TestCaseError::fail)?;
            prop_assert!(same(&back, &v), "{:?}\n-> {:?}", v, back);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        #[test]
        fn random_bytes_never_panic(mut bytes in prop::collection::vec(any::<u8>(), 0..256), protocol in 0..7u8) {
            decode_quickly(&bytes);
            bytes.splice(0..0, [0x80, protocol]);
            decode_quickly(&bytes);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn mutated_pickles_never_panic(seed in any::<usize>(), mutations in prop::collection::vec(mutation(), 1..5)) {
            let seeds = seeds();
            let mut bytes = seeds[seed % seeds.len()].clone();
            for m in &mutations {
                mutate(&mut bytes, m);
            }
            decode_quickly(&bytes);
        }
    }
}
