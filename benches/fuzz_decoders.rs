//! Fuzzes the decoders that read what Redis holds: `from_pickle_bytes`,
//! `JobDef::decode` (pickle and JSON) and `JobResult::decode`, with random
//! bytes and structure-aware mutations of real arq job and result dicts
//! (pickles at protocols 2 and 4, JSON), each case under `catch_unwind`.
//!
//!     cargo bench --bench fuzz_decoders                           # 1,000,000 cases, seed 1
//!     cargo bench --bench fuzz_decoders -- --cases 10000000 --seed 7
//!
//! Prints cases run, cases/s, Ok/Err counts, the slowest case (time and size),
//! the commonest errors and every panic; exits non-zero if anything panicked.
//! Deterministic: the same seed gives the same cases (xorshift64*).

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use doculearn::arq::pickle::{find_globals, from_pickle_bytes, PyValue};
use doculearn::arq::{JobDef, JobResult};
use doculearn::config::Serializer;

/// arq job and result dicts as Python 3.11 pickles them, protocols 2 and 4.
const PICKLE_SEEDS: &[&[u8]] = &[
    b"\x80\x02}q\x00(X\x01\x00\x00\x00tq\x01NX\x01\x00\x00\x00fq\x02X\x10\x00\x00\x00process_documentq\x03X\x01\x00\x00\x00aq\x04X\x05\x00\x00\x00doc-1q\x05K*\x86q\x06X\x01\x00\x00\x00kq\x07}q\x08X\x02\x00\x00\x00etq\x09\x8a\x06{\xf7U\xcb\x9a\x01u.",
    b"\x80\x04\x95D\x00\x00\x00\x00\x00\x00\x00}\x94(\x8c\x01t\x94N\x8c\x01f\x94\x8c\x10process_document\x94\x8c\x01a\x94\x8c\x05doc-1\x94K*\x86\x94\x8c\x01k\x94}\x94\x8c\x02et\x94\x8a\x06{\xf7U\xcb\x9a\x01u.",
    b"\x80\x02}q\x00(X\x01\x00\x00\x00tq\x01K\x03X\x01\x00\x00\x00fq\x02X\x10\x00\x00\x00process_documentq\x03X\x01\x00\x00\x00aq\x04X$\x00\x00\x000f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0q\x05X\x06\x00\x00\x00user-7q\x06\x86q\x07X\x01\x00\x00\x00kq\x08}q\x09(X\x04\x00\x00\x00langq\x0aX\x02\x00\x00\x00enq\x0bX\x05\x00\x00\x00pagesq\x0c]q\x0d(K\x01K\x02K\x03eX\x04\x00\x00\x00blobq\x0ec_codecs\x0aencode\x0aq\x0fX\x04\x00\x00\x00\x00\x01\xc3\xbfq\x10X\x06\x00\x00\x00latin1q\x11\x86q\x12Rq\x13X\x05\x00\x00\x00ratioq\x14G?\xe0\x00\x00\x00\x00\x00\x00X\x03\x00\x00\x00bigq\x15\x8a\x0b\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01X\x04\x00\x00\x00noneq\x16NX\x04\x00\x00\x00flagq\x17\x88X\x04\x00\x00\x00tagsq\x18c__builtin__\x0afrozenset\x0aq\x19]q\x1a(K\x01K\x02e\x85q\x1bRq\x1cuX\x02\x00\x00\x00etq\x1d\x8a\x062\x01\x15#\xa2\x01u.",
    b"\x80\x04\x95\xda\x00\x00\x00\x00\x00\x00\x00}\x94(\x8c\x01t\x94K\x03\x8c\x01f\x94\x8c\x10process_document\x94\x8c\x01a\x94\x8c$0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0\x94\x8c\x06user-7\x94\x86\x94\x8c\x01k\x94}\x94(\x8c\x04lang\x94\x8c\x02en\x94\x8c\x05pages\x94]\x94(K\x01K\x02K\x03e\x8c\x04blob\x94C\x03\x00\x01\xff\x94\x8c\x05ratio\x94G?\xe0\x00\x00\x00\x00\x00\x00\x8c\x03big\x94\x8a\x0b\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01\x8c\x04none\x94N\x8c\x04flag\x94\x88\x8c\x04tags\x94(K\x01K\x02\x91\x94u\x8c\x02et\x94\x8a\x062\x01\x15#\xa2\x01u.",
    b"\x80\x02}q\x00(X\x01\x00\x00\x00tq\x01K\x01X\x01\x00\x00\x00fq\x02X\x10\x00\x00\x00process_documentq\x03X\x01\x00\x00\x00aq\x04X\x05\x00\x00\x00doc-1q\x05\x85q\x06X\x01\x00\x00\x00kq\x07}q\x08X\x02\x00\x00\x00etq\x09\x8a\x06{\xf7U\xcb\x9a\x01X\x01\x00\x00\x00sq\x0a\x88X\x01\x00\x00\x00rq\x0b]q\x0c(K\x01X\x06\x00\x00\x00chunksq\x0d}q\x0eX\x01\x00\x00\x00nq\x0fK\x03seX\x02\x00\x00\x00stq\x10\x8a\x06\xc8\xf7U\xcb\x9a\x01X\x02\x00\x00\x00ftq\x11\x8a\x06\x84\xfaU\xcb\x9a\x01X\x01\x00\x00\x00qq\x12X\x0f\x00\x00\x00doculearn:queueq\x13X\x02\x00\x00\x00idq\x14X\x06\x00\x00\x00abc123q\x15u.",
    b"\x80\x04\x95\xa2\x00\x00\x00\x00\x00\x00\x00}\x94(\x8c\x01t\x94K\x01\x8c\x01f\x94\x8c\x10process_document\x94\x8c\x01a\x94\x8c\x05doc-1\x94\x85\x94\x8c\x01k\x94}\x94\x8c\x02et\x94\x8a\x06{\xf7U\xcb\x9a\x01\x8c\x01s\x94\x88\x8c\x01r\x94]\x94(K\x01\x8c\x06chunks\x94}\x94\x8c\x01n\x94K\x03se\x8c\x02st\x94\x8a\x06\xc8\xf7U\xcb\x9a\x01\x8c\x02ft\x94\x8a\x06\x84\xfaU\xcb\x9a\x01\x8c\x01q\x94\x8c\x0fdoculearn:queue\x94\x8c\x02id\x94\x8c\x06abc123\x94u.",
    b"\x80\x02}q\x00(X\x01\x00\x00\x00tq\x01K\x02X\x01\x00\x00\x00fq\x02X\x10\x00\x00\x00process_documentq\x03X\x01\x00\x00\x00aq\x04X\x05\x00\x00\x00doc-2q\x05\x85q\x06X\x01\x00\x00\x00kq\x07}q\x08X\x02\x00\x00\x00etq\x09\x8a\x06{\xf7U\xcb\x9a\x01X\x01\x00\x00\x00sq\x0a\x89X\x01\x00\x00\x00rq\x0bcexceptions\x0aOSError\x0aq\x0c)Rq\x0dX\x02\x00\x00\x00stq\x0e\x8a\x06\xc8\xf7U\xcb\x9a\x01X\x02\x00\x00\x00ftq\x0f\x8a\x06\x84\xfaU\xcb\x9a\x01X\x01\x00\x00\x00qq\x10X\x0f\x00\x00\x00doculearn:queueq\x11X\x02\x00\x00\x00idq\x12X\x06\x00\x00\x00def456q\x13u.",
    b"\x80\x04\x95\xa9\x00\x00\x00\x00\x00\x00\x00}\x94(\x8c\x01t\x94K\x02\x8c\x01f\x94\x8c\x10process_document\x94\x8c\x01a\x94\x8c\x05doc-2\x94\x85\x94\x8c\x01k\x94}\x94\x8c\x02et\x94\x8a\x06{\xf7U\xcb\x9a\x01\x8c\x01s\x94\x89\x8c\x01r\x94\x8c\x08builtins\x94\x8c\x0cTimeoutError\x94\x93\x94)R\x94\x8c\x02st\x94\x8a\x06\xc8\xf7U\xcb\x9a\x01\x8c\x02ft\x94\x8a\x06\x84\xfaU\xcb\x9a\x01\x8c\x01q\x94\x8c\x0fdoculearn:queue\x94\x8c\x02id\x94\x8c\x06def456\x94u.",
];

/// arq job and result dicts in arq's JSON serializer mode.
const JSON_SEEDS: &[&str] = &[
    r#"{"t": null, "f": "process_document", "a": ["doc-1", 42], "k": {}, "et": 1795884908850}"#,
    r#"{"t": 3, "f": "process_document", "a": ["0f1e2d3c", "user-7"], "k": {"lang": "en", "pages": [1, 2, 3], "ratio": 0.5, "none": null, "flag": true, "nested": {"x": [{"y": "\u00e9\ud83d\ude00"}]}}, "et": 1795884908850}"#,
    r#"{"t": 1, "f": "process_document", "a": ["doc-1"], "k": {}, "et": 1, "s": true, "r": [1, "chunks", {"n": 3}], "st": 2, "ft": 3, "q": "doculearn:queue", "id": "abc123"}"#,
];

/// Tokens that break JSON documents in interesting ways.
const JSON_TOKENS: &[&str] = &[
    "[",
    "]",
    "{",
    "}",
    ",",
    ":",
    "\"",
    "null",
    "true",
    "1e999",
    "-0",
    "18446744073709551616",
    "\"\\ud800\"",
    "\"\\u0000\"",
    "{\"f\": 3}",
    "\"f\": \"x\",",
    "[[[[[[[[[[[[[[[[",
];

/// xorshift64*: small, fast, deterministic.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        // splitmix64 once, so that small seeds give unrelated streams (and never 0).
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        Rng((z ^ (z >> 31)) | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// Every pickle opcode (protocols 0 to 5) and a few unassigned bytes.
const OPCODES: &[u8] = b"(.0123FIJKLMNPQRSTUVX]abcdeghijlopqrstu}\x80\x81\x82\x83\x84\x85\x86\x87\x88\x89\x8a\x8b\x8c\x8d\x8e\x8f\x90\x91\x92\x93\x94\x95\x96\x97\x98)GBC\x99\xff";

/// Values that break length arithmetic.
const HUGE: &[u64] = &[
    u64::MAX,
    u64::MAX - 1,
    u64::MAX - 7,
    u64::MAX - 8,
    1 << 63,
    (1 << 63) - 1,
    u32::MAX as u64,
    (1 << 31) - 1,
    1 << 31,
    1 << 32,
    0,
    1,
    255,
];

/// Where a valid pickle keeps its numeric arguments (lengths, memo indexes):
/// (offset, width). Only needs to understand the seeds.
fn argument_fields(p: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut i = 0usize;
    while let Some(&op) = p.get(i) {
        i += 1;
        let (width, extra): (usize, usize) = match op {
            0x80 | b'K' | b'h' | b'q' => (1, 0),
            b'M' => (2, 0),
            b'J' | b'j' | b'r' => (4, 0),
            b'G' => (8, 0),
            0x95 => (8, 0),
            0x8a | 0x8c | b'C' | b'U' => (1, p.get(i).copied().unwrap_or(0) as usize),
            b'X' | b'B' | b'T' | 0x8b => {
                let n = p
                    .get(i..i + 4)
                    .map(|b| u32::from_le_bytes(b.try_into().unwrap()))
                    .unwrap_or(0);
                (4, n as usize)
            }
            0x8d | 0x8e | 0x96 => {
                let n = p
                    .get(i..i + 8)
                    .map(|b| u64::from_le_bytes(b.try_into().unwrap()))
                    .unwrap_or(0);
                (8, n as usize)
            }
            b'c' => {
                // two lines
                let mut n = 0;
                for _ in 0..2 {
                    match p.get(i + n..).and_then(|r| r.iter().position(|&c| c == b'\n')) {
                        Some(k) => n += k + 1,
                        None => return out,
                    }
                }
                (0, n)
            }
            b'.' => return out,
            _ => (0, 0),
        };
        if width > 0 {
            out.push((i, width));
        }
        i += width + extra;
    }
    out
}

/// One structure-aware change to a pickle.
fn mutate_pickle(rng: &mut Rng, p: &mut Vec<u8>, fields: &[(usize, usize)]) {
    let len = p.len().max(1);
    match rng.below(12) {
        0 => {
            let at = rng.below(len);
            if let Some(b) = p.get_mut(at) {
                *b ^= 1 << rng.below(8);
            }
        }
        1 => {
            let at = rng.below(len);
            if let Some(b) = p.get_mut(at) {
                *b = *rng.pick(&[0x00, 0x01, 0x7f, 0x80, 0xfe, 0xff, b'\n', b'.', b'(']);
            }
        }
        2 => p.truncate(rng.below(len)),
        3 => {
            let at = rng.below(p.len() + 1);
            let n = 1 + rng.below(8);
            let junk = rng.bytes(n);
            p.splice(at..at, junk);
        }
        4 => {
            // an opcode with a random argument
            let at = rng.below(p.len() + 1);
            let mut ins = vec![*rng.pick(OPCODES)];
            let n = rng.below(9);
            ins.extend(rng.bytes(n));
            p.splice(at..at, ins);
        }
        5 => {
            let at = rng.below(len);
            let end = (at + 1 + rng.below(16)).min(p.len());
            if at < end {
                p.drain(at..end);
            }
        }
        6 | 7 => {
            // a length or memo index replaced by a huge (or off-by-one) value
            if let Some(&(at, width)) = (!fields.is_empty()).then(|| rng.pick(fields)) {
                let v = if rng.chance(70) {
                    *rng.pick(HUGE)
                } else {
                    let old = p.get(at..at + width).map(|b| {
                        let mut a = [0u8; 8];
                        a[..width].copy_from_slice(b);
                        u64::from_le_bytes(a)
                    });
                    old.unwrap_or(0).wrapping_add(rng.below(5) as u64).wrapping_sub(2)
                };
                for (i, b) in v.to_le_bytes().iter().take(width).enumerate() {
                    if let Some(slot) = p.get_mut(at + i) {
                        *slot = *b;
                    }
                }
            }
        }
        8 => {
            // a chunk of the pickle copied elsewhere (shares memo references, repeats opcodes)
            let at = rng.below(len);
            let end = (at + 1 + rng.below(32)).min(p.len());
            if at < end {
                let chunk = p[at..end].to_vec();
                let to = rng.below(p.len() + 1);
                p.splice(to..to, chunk);
            }
        }
        9 => {
            // a chunk repeated many times: deep nesting, many values
            let at = rng.below(len);
            let end = (at + 1 + rng.below(4)).min(p.len());
            if at < end {
                let chunk = p[at..end].to_vec();
                let times = 1 + rng.below(2000);
                let to = rng.below(p.len() + 1);
                p.splice(to..to, chunk.iter().copied().cycle().take(chunk.len() * times));
            }
        }
        10 => {
            // nesting openers Python writes, many times
            let openers: [&[u8]; 7] = [b"]", b"](", b"]\x94(", b"(", b"}", b")\x85", b"\x8f("];
            let opener = *rng.pick(&openers);
            let times = 1 + rng.below(5000);
            let to = rng.below(p.len() + 1);
            p.splice(to..to, opener.iter().copied().cycle().take(opener.len() * times));
        }
        _ => {
            // a chunk of another seed spliced in
            let other = *rng.pick(PICKLE_SEEDS);
            let at = rng.below(other.len());
            let end = (at + 1 + rng.below(24)).min(other.len());
            let to = rng.below(p.len() + 1);
            p.splice(to..to, other[at..end].iter().copied());
        }
    }
}

/// One change to a JSON document, mostly on its text.
fn mutate_json(rng: &mut Rng, j: &mut Vec<u8>) {
    let len = j.len().max(1);
    match rng.below(8) {
        0 => {
            let at = rng.below(len);
            if let Some(b) = j.get_mut(at) {
                *b ^= 1 << rng.below(8);
            }
        }
        1 => j.truncate(rng.below(len)),
        2 => {
            let at = rng.below(len);
            let end = (at + 1 + rng.below(8)).min(j.len());
            if at < end {
                j.drain(at..end);
            }
        }
        3 | 4 => {
            let token = rng.pick(JSON_TOKENS);
            let at = rng.below(j.len() + 1);
            j.splice(at..at, token.bytes());
        }
        5 => {
            // deep nesting around a value
            let depth = 1 + rng.below(200);
            let at = rng.below(j.len() + 1);
            let (open, close) = if rng.chance(50) { ("[", "]") } else { ("{\"k\":", "}") };
            let mut ins = open.repeat(depth).into_bytes();
            ins.extend_from_slice(b"1");
            ins.extend(close.repeat(depth).into_bytes());
            j.splice(at..at, ins);
        }
        6 => {
            let at = rng.below(j.len() + 1);
            let n = 1 + rng.below(6);
            let junk = rng.bytes(n);
            j.splice(at..at, junk);
        }
        _ => {
            // a chunk repeated
            let at = rng.below(len);
            let end = (at + 1 + rng.below(16)).min(j.len());
            if at < end {
                let chunk = j[at..end].to_vec();
                let times = 1 + rng.below(200);
                let to = rng.below(j.len() + 1);
                j.splice(to..to, chunk.iter().copied().cycle().take(chunk.len() * times));
            }
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum Kind {
    RandomBytes,
    RandomAfterProto,
    PickleMutation,
    OurPickleMutation,
    JsonMutation,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::RandomBytes => "random bytes",
            Kind::RandomAfterProto => "random bytes after PROTO",
            Kind::PickleMutation => "mutated Python pickle (protocols 2, 4)",
            Kind::OurPickleMutation => "mutated pickle of our writer",
            Kind::JsonMutation => "mutated JSON",
        }
    }
}

/// A few pickles of our own writer: jobs with every value type.
fn our_pickles() -> Vec<Vec<u8>> {
    let job = JobDef {
        job_try: Some(2),
        function: "process_document".into(),
        args: vec![PyValue::str("doc"), PyValue::Int(-5), PyValue::Bytes(vec![0, 0xff])],
        kwargs: vec![
            ("f".into(), PyValue::Float(1.5)),
            ("big".into(), PyValue::BigInt("-123456789012345678901234567890".into())),
            (
                "nested".into(),
                PyValue::List(vec![
                    PyValue::Tuple(vec![PyValue::None, PyValue::Bool(true)]),
                    PyValue::Dict(vec![]),
                ]),
            ),
        ],
        enqueue_time_ms: 1_795_884_908_850,
    };
    vec![job.encode(Serializer::Pickle), PyValue::List(vec![]).to_pickle()]
}

fn generate(
    rng: &mut Rng,
    ours: &[Vec<u8>],
    fields: &[Vec<(usize, usize)>],
    ours_fields: &[Vec<(usize, usize)>],
) -> (Kind, Vec<u8>) {
    let roll = rng.below(100);
    if roll < 8 {
        let max = if rng.chance(90) { 64 } else { 1024 };
        let n = rng.below(max);
        (Kind::RandomBytes, rng.bytes(n))
    } else if roll < 16 {
        let mut b = vec![0x80, rng.below(7) as u8];
        let n = rng.below(128);
        b.extend(rng.bytes(n));
        (Kind::RandomAfterProto, b)
    } else if roll < 66 {
        let i = rng.below(PICKLE_SEEDS.len());
        let mut p = PICKLE_SEEDS[i].to_vec();
        for _ in 0..mutations(rng) {
            mutate_pickle(rng, &mut p, &fields[i]);
        }
        (Kind::PickleMutation, p)
    } else if roll < 76 {
        let i = rng.below(ours.len());
        let mut p = ours[i].clone();
        for _ in 0..mutations(rng) {
            mutate_pickle(rng, &mut p, &ours_fields[i]);
        }
        (Kind::OurPickleMutation, p)
    } else {
        let mut j = rng.pick(JSON_SEEDS).as_bytes().to_vec();
        for _ in 0..mutations(rng) {
            mutate_json(rng, &mut j);
        }
        (Kind::JsonMutation, j)
    }
}

/// How many changes one case makes: one half the time (so more cases get
/// deep into the decoders), else two to four.
fn mutations(rng: &mut Rng) -> usize {
    if rng.chance(50) {
        1
    } else {
        2 + rng.below(3)
    }
}

/// The error's kind: its text up to the first digit, quote or parenthesis.
fn error_kind(e: &str) -> String {
    let end = e
        .find(|c: char| c.is_ascii_digit() || c == '(' || c == '\'' || c == '`')
        .unwrap_or(e.len());
    e[..end].trim_end().to_string()
}

/// The incident's payloads and their relatives: how long each takes to be refused.
fn regressions() -> Vec<(&'static str, Serializer, Vec<u8>)> {
    const N: usize = 100_000;
    let mut out = Vec::new();
    let mut incident = b"\x80\x05\x96".to_vec();
    incident.extend_from_slice(&(u64::MAX - 7).to_le_bytes());
    incident.extend_from_slice(b"\x94.");
    out.push(("BYTEARRAY8 with a length near 2^64", Serializer::Pickle, incident));
    for (name, op) in [("BINUNICODE8", 0x8du8), ("BINBYTES8", 0x8e), ("FRAME", 0x95)] {
        let mut b = vec![0x80, 5, op];
        b.extend_from_slice(&u64::MAX.to_le_bytes());
        b.extend_from_slice(b"abc.");
        out.push((name, Serializer::Pickle, b));
    }
    for (name, op) in [("LONG4", 0x8bu8), ("BINUNICODE", b'X'), ("BINBYTES", b'B')] {
        let mut b = vec![0x80, 4, op];
        b.extend_from_slice(&u32::MAX.to_le_bytes());
        b.extend_from_slice(b"abc.");
        out.push((name, Serializer::Pickle, b));
    }
    let mut p2 = b"\x80\x02".to_vec();
    p2.extend(std::iter::repeat_n(b']', N));
    p2.extend(std::iter::repeat_n(b'a', N - 1));
    p2.push(b'.');
    out.push(("100,000-deep list, protocol 2 (APPEND)", Serializer::Pickle, p2));
    let mut p4 = b"\x80\x04".to_vec();
    for _ in 0..N {
        p4.extend_from_slice(b"]\x94(");
    }
    p4.extend(std::iter::repeat_n(b'e', N));
    p4.push(b'.');
    out.push(("100,000-deep list, protocol 4 (MARK/APPENDS)", Serializer::Pickle, p4));
    let mut laughs = b"\x80\x02Nq\x00".to_vec();
    for level in 1..=7u8 {
        laughs.extend_from_slice(b"](");
        for _ in 0..10 {
            laughs.extend_from_slice(&[b'h', level - 1]);
        }
        laughs.extend_from_slice(&[b'e', b'q', level]);
    }
    laughs.push(b'.');
    out.push((
        "billion laughs (10^7 values from 181 bytes)",
        Serializer::Pickle,
        laughs,
    ));
    let json = format!("{}{}", "[".repeat(N), "]".repeat(N)).into_bytes();
    out.push(("100,000-deep JSON list", Serializer::Json, json));
    out
}

static PANIC_MESSAGE: Mutex<Option<String>> = Mutex::new(None);

fn main() {
    let mut cases: u64 = 1_000_000;
    let mut seed: u64 = 1;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--cases" => {
                cases = args
                    .next()
                    .and_then(|v| v.replace('_', "").parse().ok())
                    .expect("--cases N")
            }
            "--seed" => seed = args.next().and_then(|v| v.parse().ok()).expect("--seed N"),
            _ => {} // cargo bench passes --bench
        }
    }
    std::panic::set_hook(Box::new(|info| {
        let location = info.location().map(|l| format!(" at {l}")).unwrap_or_default();
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        *PANIC_MESSAGE.lock().unwrap_or_else(|e| e.into_inner()) = Some(format!("{msg}{location}"));
    }));

    let ours = our_pickles();
    let fields: Vec<_> = PICKLE_SEEDS.iter().map(|p| argument_fields(p)).collect();
    let ours_fields: Vec<_> = ours.iter().map(|p| argument_fields(p)).collect();
    for (p, f) in PICKLE_SEEDS.iter().zip(&fields) {
        assert!(from_pickle_bytes(p).is_ok() || find_globals(p).iter().any(|g| g.contains("Error")));
        assert!(!f.is_empty());
    }

    println!("regression payloads (each refused; best of 5):");
    for (name, ser, bytes) in regressions() {
        let mut best = Duration::MAX;
        let mut err = String::new();
        for _ in 0..5 {
            let started = Instant::now();
            let r = match ser {
                Serializer::Pickle => from_pickle_bytes(&bytes).map(drop),
                Serializer::Json => JobDef::decode(&bytes, ser).map(drop),
            };
            best = best.min(started.elapsed());
            err = r.expect_err("refused");
        }
        println!(
            "  {:>10.1} µs  {name} ({} bytes): {err}",
            best.as_secs_f64() * 1e6,
            bytes.len()
        );
    }

    println!("fuzz_decoders: seed {seed}, {cases} cases");
    let mut rng = Rng::new(seed);
    let mut by_kind: HashMap<Kind, u64> = HashMap::new();
    let (mut oks, mut errs, mut panics) = (0u64, 0u64, 0u64);
    let mut errors: HashMap<String, u64> = HashMap::new();
    let mut slowest = (Duration::ZERO, 0usize, Kind::RandomBytes, 0u64);
    let mut bytes_total = 0u64;
    let started = Instant::now();
    for case in 0..cases {
        let (kind, input) = generate(&mut rng, &ours, &fields, &ours_fields);
        *by_kind.entry(kind).or_default() += 1;
        bytes_total += input.len() as u64;
        let case_started = Instant::now();
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            let mut results: Vec<Result<(), String>> = Vec::with_capacity(4);
            if kind == Kind::JsonMutation {
                results.push(JobDef::decode(&input, Serializer::Json).map(drop));
                results.push(JobResult::decode(&input, Serializer::Json).map(drop));
            } else {
                results.push(from_pickle_bytes(&input).map(drop));
                results.push(JobDef::decode(&input, Serializer::Pickle).map(drop));
                results.push(JobResult::decode(&input, Serializer::Pickle).map(drop));
                if kind == Kind::RandomBytes {
                    results.push(JobDef::decode(&input, Serializer::Json).map(drop));
                }
            }
            results
        }));
        let took = case_started.elapsed();
        if took > slowest.0 {
            slowest = (took, input.len(), kind, case);
        }
        match outcome {
            Ok(results) => {
                for r in results {
                    match r {
                        Ok(()) => oks += 1,
                        Err(e) => {
                            errs += 1;
                            *errors.entry(error_kind(&e)).or_default() += 1;
                        }
                    }
                }
            }
            Err(_) => {
                panics += 1;
                let msg = PANIC_MESSAGE
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .take()
                    .unwrap_or_default();
                let shown: Vec<String> = input.iter().take(200).map(|b| format!("{b:02x}")).collect();
                println!(
                    "PANIC in case {case} ({}, {} bytes): {msg}\n  input: {}",
                    kind.name(),
                    input.len(),
                    shown.join("")
                );
            }
        }
    }
    let elapsed = started.elapsed();
    let rate = cases as f64 / elapsed.as_secs_f64();
    println!(
        "  cases run:     {cases} in {:.2} s = {rate:.0} cases/s ({:.1} MB of input)",
        elapsed.as_secs_f64(),
        bytes_total as f64 / 1e6
    );
    let mut kinds: Vec<_> = by_kind.into_iter().collect();
    kinds.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
    for (kind, n) in kinds {
        println!("    {n:>9}  {}", kind.name());
    }
    println!("  decoder calls: {} Ok, {} Err", oks, errs);
    println!(
        "  slowest case:  {:.3} ms, {} bytes (case {}, {})",
        slowest.0.as_secs_f64() * 1e3,
        slowest.1,
        slowest.3,
        slowest.2.name()
    );
    println!("  commonest errors:");
    let mut errors: Vec<_> = errors.into_iter().collect();
    errors.sort_by_key(|(e, n)| (std::cmp::Reverse(*n), e.clone()));
    for (e, n) in errors.iter().take(12) {
        println!("    {n:>9}  {e}");
    }
    println!("  panics:        {panics}");
    if panics > 0 {
        std::process::exit(1);
    }
}
