// Temporary profiling helper (si engineer); deleted after use.
use std::time::Instant;
fn main() {
    let rules = careguard::engine::RuleSet::from_dir(std::path::Path::new("rules")).unwrap();
    let text = std::fs::read_to_string("/tmp/cg/bench.txt")
        .unwrap()
        .to_lowercase();
    let mut pats = vec![];
    for r in rules.rules() {
        if matches!(r.kind, careguard::engine::pack::RuleKind::Reply(_)) {
            continue;
        }
        for p in &r.patterns {
            pats.push((r.id.to_string(), p.clone()));
        }
    }
    let mut res = vec![];
    for (id, p) in &pats {
        let re = regex::bytes::RegexBuilder::new(p)
            .unicode(false)
            .size_limit(32 << 20)
            .dfa_size_limit(32 << 20)
            .build()
            .unwrap();
        let _ = re.is_match(text.as_bytes());
        let t = Instant::now();
        for _ in 0..200 {
            std::hint::black_box(re.find_iter(text.as_bytes()).count());
        }
        res.push((
            t.elapsed().as_nanos() as f64 / 200.0 / 1000.0,
            id.clone(),
            p.chars().take(90).collect::<String>(),
        ));
    }
    res.sort_by(|a, b| b.0.partial_cmp(&a.0).unwrap());
    let total: f64 = res.iter().map(|r| r.0).sum();
    println!("patterns {} total(single) {:.1}us", res.len(), total);
    for r in res.iter().take(25) {
        println!("{:8.2}us {} {}", r.0, r.1, r.2);
    }
    let set = regex::bytes::RegexSetBuilder::new(pats.iter().map(|p| p.1.as_str()))
        .unicode(false)
        .size_limit(64 << 20)
        .dfa_size_limit(64 << 20)
        .build()
        .unwrap();
    let _ = set.matches(text.as_bytes());
    let t = Instant::now();
    for _ in 0..200 {
        std::hint::black_box(set.matches(text.as_bytes()));
    }
    println!(
        "set: {:.1}us",
        t.elapsed().as_nanos() as f64 / 200.0 / 1000.0
    );
    for i in set.matches(text.as_bytes()).iter() {
        println!(
            "MATCH {} {}",
            pats[i].0,
            &pats[i].1.chars().take(80).collect::<String>()
        );
    }
    let t = Instant::now();
    for _ in 0..200 {
        std::hint::black_box(careguard::engine::normalize::normalize(
            &text,
            rules.slang(),
        ));
    }
    println!(
        "normalize: {:.1}us",
        t.elapsed().as_nanos() as f64 / 200.0 / 1000.0
    );
    let plain = careguard::engine::normalize::Slang::new(&[]);
    let t = Instant::now();
    for _ in 0..200 {
        std::hint::black_box(careguard::engine::normalize::normalize(&text, &plain));
    }
    println!(
        "normalize no slang: {:.1}us",
        t.elapsed().as_nanos() as f64 / 200.0 / 1000.0
    );
    let t = Instant::now();
    for _ in 0..200 {
        std::hint::black_box(careguard::engine::classify::scan_text(&rules, &text));
    }
    println!(
        "scan_text: {:.1}us",
        t.elapsed().as_nanos() as f64 / 200.0 / 1000.0
    );
    let engine = careguard::engine::Engine::new(rules);
    let msgs: Vec<_> = text
        .split(". ")
        .map(|s| careguard::engine::Message::new(careguard::engine::Role::User, s.to_string()))
        .collect();
    let one = vec![careguard::engine::Message::new(
        careguard::engine::Role::User,
        text.clone(),
    )];
    let t = Instant::now();
    for _ in 0..200 {
        std::hint::black_box(engine.classify(&one));
    }
    println!(
        "classify one msg: {:.1}us",
        t.elapsed().as_nanos() as f64 / 200.0 / 1000.0
    );
    let t = Instant::now();
    for _ in 0..200 {
        std::hint::black_box(engine.classify(&msgs));
    }
    println!(
        "classify {} msgs: {:.1}us",
        msgs.len(),
        t.elapsed().as_nanos() as f64 / 200.0 / 1000.0
    );
}
