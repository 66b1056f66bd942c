//! Dumps the engine's full output (assessment and violations) for every case of the given
//! datasets, one JSON line per case, to compare engine changes byte for byte.
//!
//! `cargo run --release --example engine_dump -- FILE...`

use std::io::{BufRead, Write};

use careguard::engine::{Engine, Message};

fn main() {
    let engine = Engine::embedded().expect("embedded rules load");
    let out = std::io::stdout();
    let mut out = std::io::BufWriter::new(out.lock());
    for path in std::env::args().skip(1) {
        let file = std::fs::File::open(&path).expect("open dataset");
        for line in std::io::BufReader::new(file).lines() {
            let line = line.expect("read line");
            if line.trim().is_empty() {
                continue;
            }
            let case: serde_json::Value = serde_json::from_str(&line).expect("json");
            let messages: Vec<Message> = case["messages"]
                .as_array()
                .map(|a| a.iter().filter_map(Message::from_json).collect())
                .unwrap_or_default();
            let assessment = engine.classify(&messages);
            let violations = case["response"]
                .as_str()
                .map(|r| engine.check(&assessment, r))
                .unwrap_or_default();
            let record = serde_json::json!({"a": assessment, "v": violations});
            writeln!(out, "{record}").expect("write");
        }
    }
}
