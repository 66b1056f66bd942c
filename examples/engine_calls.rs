//! Runs the engine bench's case (`benches/engine.rs`: a 3 KB, 8-turn conversation plus a 1 KB
//! reply) a given number of times, for noise-free instruction counts under callgrind:
//!
//! `valgrind --tool=callgrind --toggle-collect='*run_bench*' target/release/examples/engine_calls 200`

use careguard::engine::{Engine, Message};

#[path = "../benches/support/engine_input.rs"]
mod engine_input;

fn main() {
    let mut args = std::env::args().skip(1);
    let rounds: usize = args.next().map_or(100, |n| n.parse().expect("rounds"));
    let which = args.next().unwrap_or_else(|| "both".into());
    let engine = Engine::embedded().expect("embedded rules load");
    let messages = engine_input::conversation();
    let reply = engine_input::reply();
    // One warm-up round: the bench measures warm lazy DFAs.
    warm_up(&engine, &messages, &reply, &which);
    let found = run_bench(&engine, &messages, &reply, rounds, &which);
    println!("{rounds} rounds of {which}, {found} findings");
}

/// One round, not counted.
#[inline(never)]
fn warm_up(engine: &Engine, messages: &[Message], reply: &str, which: &str) -> usize {
    rounds_of(engine, messages, reply, 1, which)
}

/// The measured rounds: a function of its own so `--toggle-collect` counts only this.
#[inline(never)]
fn run_bench(
    engine: &Engine,
    messages: &[Message],
    reply: &str,
    rounds: usize,
    which: &str,
) -> usize {
    rounds_of(engine, messages, reply, rounds, which)
}

/// `rounds` classify+check calls (or only `classify`, or only `check` of the assessment made
/// once up front).
#[inline(never)]
fn rounds_of(
    engine: &Engine,
    messages: &[Message],
    reply: &str,
    rounds: usize,
    which: &str,
) -> usize {
    let assessment = engine.classify(messages);
    let mut found = 0;
    for _ in 0..rounds {
        match which {
            "classify" => {
                found += engine
                    .classify(std::hint::black_box(messages))
                    .conditions
                    .len()
            }
            "check" => found += engine.check(&assessment, std::hint::black_box(reply)).len(),
            _ => {
                let a = engine.classify(std::hint::black_box(messages));
                found += engine.check(&a, std::hint::black_box(reply)).len();
            }
        }
    }
    found
}
