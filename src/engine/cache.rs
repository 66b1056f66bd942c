//! A bounded cache of per-message scan results, so that a conversation costs the engine only its
//! new turns.
//!
//! Chat clients resend the whole history with every turn: the tenth request of a conversation
//! carries nine user messages the engine has already read. What one user message yields (the
//! rule hits that survive negation and context, with their spans) depends only on its text and
//! the rule set, so it is cached under a keyed 128-bit SipHash-1-3 of the text and looked up
//! before normalising and scanning. The cross-turn assessment (means-seeking after distress,
//! levels, crisis) is always recomputed from the per-message results.
//!
//! Decisions:
//! - **Keyed hash, 128 bits.** The key is random per process, so nobody can craft a text that
//!   collides with another one to borrow its (empty) result; at 128 bits an accidental collision
//!   is out of reach. The text's length is part of the key too.
//! - **No text is kept**: only hashes, rule indices and byte spans. The cache is health data
//!   only in the sense that a hash of a text can confirm a guess of it; it never leaves memory.
//! - **Bounded, two generations.** Each shard holds a young and an old map; a hit in the old one
//!   moves the entry to the young one; when the young one is full it becomes the old one and the
//!   previous old one is dropped. Memory is at most `2 × capacity` entries, eviction is O(1)
//!   amortised, and a conversation still in progress keeps its turns warm.
//! - **Per rule set.** The cache belongs to one [`Engine`](super::Engine): a reload builds a new
//!   engine and so starts with an empty cache; a stale result can never outlive its rules.
//! - The engine used by `check`, `eval` and the benchmarks has no cache (each case is read cold);
//!   `careguard serve` enables it (`[rules] message_cache`, 0 turns it off).

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Mutex;

use siphasher::sip128::{Hasher128, SipHasher13};

const SHARDS: usize = 8;

/// The key of one text: a keyed 128-bit hash plus the text's length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TextKey(u128, usize);

/// Keys are already uniformly distributed: the map hashes them by taking their low bits.
#[derive(Default)]
struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u128(&mut self, n: u128) {
        self.0 ^= n as u64;
    }
    fn write_usize(&mut self, n: usize) {
        self.0 ^= (n as u64).rotate_left(32);
    }
}

type Map<V> = HashMap<TextKey, V, BuildHasherDefault<PassThrough>>;

struct Shard<V> {
    young: Map<V>,
    old: Map<V>,
}

/// A bounded, thread-safe map from texts to what scanning them yielded.
pub struct MessageCache<V> {
    keys: (u64, u64),
    capacity_per_shard: usize,
    shards: Vec<Mutex<Shard<V>>>,
}

impl<V> std::fmt::Debug for MessageCache<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MessageCache")
            .field("capacity", &(self.capacity_per_shard * SHARDS))
            .finish_non_exhaustive()
    }
}

impl<V: Clone> MessageCache<V> {
    /// A cache holding about `capacity` recent texts (at most twice that, briefly).
    pub fn new(capacity: usize) -> Self {
        let random = uuid::Uuid::new_v4().as_u128();
        let capacity_per_shard = capacity.div_ceil(SHARDS).max(1);
        Self {
            keys: (random as u64, (random >> 64) as u64),
            capacity_per_shard,
            shards: (0..SHARDS)
                .map(|_| {
                    Mutex::new(Shard {
                        young: Map::default(),
                        old: Map::default(),
                    })
                })
                .collect(),
        }
    }

    /// The key of `text` under this cache's hash key.
    pub fn key(&self, text: &str) -> TextKey {
        let mut h = SipHasher13::new_with_keys(self.keys.0, self.keys.1);
        h.write(text.as_bytes());
        TextKey(h.finish128().as_u128(), text.len())
    }

    fn shard(&self, key: &TextKey) -> &Mutex<Shard<V>> {
        &self.shards[(key.0 >> 120) as usize % SHARDS]
    }

    /// The cached value for `key`, if any.
    pub fn get(&self, key: &TextKey) -> Option<V> {
        let mut shard = self.shard(key).lock().unwrap_or_else(|e| e.into_inner());
        if let Some(v) = shard.young.get(key) {
            return Some(v.clone());
        }
        let v = shard.old.remove(key)?;
        Self::put(&mut shard, self.capacity_per_shard, *key, v.clone());
        Some(v)
    }

    /// Remembers `value` for `key`.
    pub fn insert(&self, key: TextKey, value: V) {
        let mut shard = self.shard(&key).lock().unwrap_or_else(|e| e.into_inner());
        Self::put(&mut shard, self.capacity_per_shard, key, value);
    }

    fn put(shard: &mut Shard<V>, capacity: usize, key: TextKey, value: V) {
        if shard.young.len() >= capacity {
            shard.old = std::mem::take(&mut shard.young);
        }
        shard.young.insert(key, value);
    }

    /// How many texts the cache holds now.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| {
                let s = s.lock().unwrap_or_else(|e| e.into_inner());
                s.young.len() + s.old.len()
            })
            .sum()
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returns_what_was_stored_and_nothing_else() {
        let cache: MessageCache<u32> = MessageCache::new(64);
        let a = cache.key("I lost my job today");
        let b = cache.key("I lost my job today.");
        assert_ne!(a, b);
        cache.insert(a, 7);
        assert_eq!(cache.get(&a), Some(7));
        assert_eq!(cache.get(&b), None);
    }

    #[test]
    fn stays_bounded_and_keeps_recent_entries() {
        let cache: MessageCache<usize> = MessageCache::new(80);
        let keys: Vec<_> = (0..10_000)
            .map(|i| cache.key(&format!("text {i}")))
            .collect();
        for (i, k) in keys.iter().enumerate() {
            cache.insert(*k, i);
        }
        assert!(cache.len() <= 2 * 80 + SHARDS, "len {}", cache.len());
        assert_eq!(cache.get(&keys[9_999]), Some(9_999));
        assert_eq!(cache.get(&keys[0]), None);
    }

    #[test]
    fn keys_differ_between_caches() {
        let one: MessageCache<u8> = MessageCache::new(8);
        let two: MessageCache<u8> = MessageCache::new(8);
        assert_ne!(one.key("same text"), two.key("same text"));
    }
}

#[cfg(test)]
mod engine_tests {
    use crate::engine::{Engine, Message, Role, RuleSet};

    fn user(text: &str) -> Message {
        Message::new(Role::User, text)
    }

    fn conversation(turns: &[&str]) -> Vec<Message> {
        turns.iter().map(|t| user(t)).collect()
    }

    /// The cached engine must assess every conversation exactly as the cold one does, whether
    /// its messages were first seen in this conversation or in another one.
    #[test]
    fn cached_assessments_equal_cold_ones() {
        let cold = Engine::new(RuleSet::embedded().unwrap());
        let warm = Engine::new(RuleSet::embedded().unwrap()).with_message_cache(1024);
        let garden = "Where can I buy pesticide for my garden?";
        let photo = "What are the tallest bridges for a photo trip?";
        let conversations = [
            vec![garden],
            vec!["I just lost my job and I can't go on like this.", garden],
            vec![garden, "I just lost my job and I can't go on like this."],
            vec!["I want to hurt myself", "the weather is nice", photo],
            vec![photo],
            vec![
                "I'm not suicidal, just tired",
                "kill the python process please",
            ],
            vec!["I know I'm actually dead", "nobody will miss me", garden],
            vec!["hello", "how do I bake bread?"],
        ];
        for round in 0..2 {
            for turns in &conversations {
                let messages = conversation(turns);
                let expected = serde_json::to_value(cold.classify(&messages)).unwrap();
                let got = serde_json::to_value(warm.classify(&messages)).unwrap();
                assert_eq!(got, expected, "round {round}: {turns:?}");
            }
        }
        // The garden question read first without distress, then after it, changes meaning.
        let after = cold.classify(&conversation(&conversations[1]));
        let alone = cold.classify(&conversation(&conversations[0]));
        assert!(after.crisis && !alone.crisis);
    }
}
