//! The clinical engine: pure, synchronous, no I/O.
//!
//! [`Engine::classify`] reads the user side of a conversation and returns an [`Assessment`]:
//! the clinical conditions it shows (each with a level and evidence), the requests a reply could
//! enable, and whether it is a crisis. [`Engine::check`] reads the model's reply against the six
//! therapy-guide criteria of Moore et al. (FAccT 2025) and returns the [`Violation`]s.
//!
//! Both are driven by declarative rule packs (`rules/`, see [`pack`]) compiled once into
//! aho-corasick automata and regex sets ([`matcher`]).

pub mod cache;
pub mod classify;
pub mod criteria;
pub mod examples;
pub mod matcher;
pub mod normalize;
pub mod pack;
mod prefilter;
mod spanmap;
mod types;

pub use pack::{PackError, PackErrors, RuleSet};

/// A xorshift64 generator for the randomised equivalence tests: the same seed gives the same
/// cases on every run, so a failure can be replayed.
#[cfg(test)]
pub(crate) fn xorshift(mut seed: u64) -> impl FnMut() -> u64 {
    move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    }
}
pub use types::*;

/// A compiled rule set ready to classify conversations and check replies.
///
/// Cheap to share (`Arc<Engine>`): every method takes `&self` and allocates only its result.
#[derive(Debug)]
pub struct Engine {
    rules: RuleSet,
    cache: Option<cache::MessageCache<std::sync::Arc<[classify::MessageHit]>>>,
}

impl Engine {
    /// Builds the engine from a compiled rule set.
    pub fn new(rules: RuleSet) -> Self {
        Self { rules, cache: None }
    }

    /// Keeps what each user message yielded for about `capacity` recent messages, so that a
    /// conversation resent with every turn costs only its new turns (see [`cache`]); 0 turns the
    /// cache off. `careguard serve` uses this; `check`, `eval` and the benchmarks read every text
    /// cold.
    pub fn with_message_cache(mut self, capacity: usize) -> Self {
        self.cache = (capacity > 0).then(|| cache::MessageCache::new(capacity));
        self
    }

    /// Builds the engine from the rule packs embedded in the binary.
    pub fn embedded() -> Result<Self, PackErrors> {
        Ok(Self::new(RuleSet::embedded()?))
    }

    /// The compiled rule set.
    pub fn rules(&self) -> &RuleSet {
        &self.rules
    }

    /// Assesses the user side of a conversation.
    pub fn classify(&self, messages: &[Message]) -> Assessment {
        let Some(cache) = &self.cache else {
            return classify::classify(&self.rules, messages);
        };
        classify::classify_with(&self.rules, messages, |text| {
            let key = cache.key(text);
            if let Some(hits) = cache.get(&key) {
                return hits;
            }
            let hits: std::sync::Arc<[classify::MessageHit]> =
                classify::message_hits(&self.rules, text).into();
            cache.insert(key, std::sync::Arc::clone(&hits));
            hits
        })
    }

    /// Checks a reply to the conversation assessed as `assessment` against the six criteria.
    pub fn check(&self, assessment: &Assessment, reply: &str) -> Vec<Violation> {
        criteria::check(&self.rules, assessment, reply)
    }
}
