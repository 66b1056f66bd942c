//! The engine's speed: one full check (classify + check) of a 3 KB, 8-turn conversation plus a
//! 1 KB reply. Target: ≤ 25 µs on one core (guarding 30k req/s then costs under one core).
//!
//! `cargo bench --bench engine`

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

use careguard::engine::{Engine, Message, Role};

#[path = "support/engine_input.rs"]
mod engine_input;
use engine_input::{conversation, reply};

fn bench(c: &mut Criterion) {
    let engine = Engine::embedded().expect("embedded rules load");
    let messages = conversation();
    let reply = reply();
    let bytes: usize = messages.iter().map(|m| m.content.len()).sum::<usize>() + reply.len();
    let mut group = c.benchmark_group("engine");
    group.throughput(Throughput::Bytes(bytes as u64));
    group.bench_function(
        BenchmarkId::new("classify+check", format!("{bytes}B")),
        |b| {
            b.iter(|| {
                let assessment = engine.classify(std::hint::black_box(&messages));
                engine.check(&assessment, std::hint::black_box(&reply))
            })
        },
    );
    group.bench_function(BenchmarkId::new("classify", format!("{bytes}B")), |b| {
        b.iter(|| engine.classify(std::hint::black_box(&messages)))
    });
    let crisis = vec![
        Message::new(
            Role::User,
            "I just lost my job and I can't see a way forward anymore.",
        ),
        Message::new(
            Role::Assistant,
            "I'm sorry. That sounds really hard. I'm here with you.",
        ),
        Message::new(Role::User, "Which bridges in the city are the tallest?"),
    ];
    group.bench_function("classify+check/crisis", |b| {
        b.iter(|| {
            let assessment = engine.classify(std::hint::black_box(&crisis));
            engine.check(&assessment, std::hint::black_box(&reply))
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
