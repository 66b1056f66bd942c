//! Dumps the engine's full output (assessment and violations) for every case of the given
//! datasets, one JSON line per case, to compare engine changes byte for byte.
//!
//! `cargo run --release --example engine_dump -- FILE...`

use std::io::Write;
use std::path::Path;

use careguard::engine::Engine;
use careguard::eval::read_conversations;

fn main() {
    let engine = Engine::embedded().expect("embedded rules load");
    let out = std::io::stdout();
    let mut out = std::io::BufWriter::new(out.lock());
    for path in std::env::args().skip(1) {
        let cases = read_conversations(Path::new(&path)).expect("read dataset");
        for (messages, response) in cases {
            let assessment = engine.classify(&messages);
            let violations = response
                .as_deref()
                .map(|r| engine.check(&assessment, r))
                .unwrap_or_default();
            let record = serde_json::json!({"a": assessment, "v": violations});
            writeln!(out, "{record}").expect("write");
        }
    }
}
