//! Times classify + check over every case of a dataset, pass after pass, to tell the cost of
//! text the engine sees for the first time from the cost of text it has seen.
//!
//! `cargo run --release --example engine_time -- FILE [PASSES]`

use std::path::Path;
use std::time::Instant;

use careguard::engine::{Engine, Message};
use careguard::eval::read_conversations;

fn main() {
    let mut args = std::env::args().skip(1);
    let path = args.next().expect("a dataset");
    let passes: usize = args.next().map_or(2, |p| p.parse().expect("passes"));
    let engine = Engine::embedded().expect("embedded rules load");
    let cases = read_conversations(Path::new(&path)).expect("read dataset");
    let bytes: usize = cases
        .iter()
        .map(|(messages, response)| {
            messages.iter().map(|m| m.content.len()).sum::<usize>()
                + response.as_ref().map_or(0, String::len)
        })
        .sum();
    for pass in 0..passes {
        let started = Instant::now();
        let found = run_pass(&engine, &cases);
        let micros = started.elapsed().as_secs_f64() * 1e6;
        println!(
            "pass {pass}: {:.1} µs/case, {:.1} µs/KB ({found} findings)",
            micros / cases.len() as f64,
            micros / (bytes as f64 / 1024.0)
        );
    }
}

/// One pass over every case (a function of its own so `valgrind --toggle-collect=*run_pass*`
/// counts only this).
#[inline(never)]
fn run_pass(engine: &Engine, cases: &[(Vec<Message>, Option<String>)]) -> usize {
    let mut found = 0usize;
    for (messages, response) in cases {
        let a = engine.classify(std::hint::black_box(messages));
        found += a.conditions.len();
        if let Some(r) = response {
            found += engine.check(&a, std::hint::black_box(r)).len();
        }
    }
    found
}
