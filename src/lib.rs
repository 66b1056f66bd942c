//! careguard: an OpenAI-compatible reverse proxy that guards mental-health and companion chatbots.
// Measured exceptions (`memory`): the allocator's control calls in `release_free_heap` (glibc's
// `malloc_trim`; with the `jemalloc` feature, jemalloc's `mallctl` flush and purge), jemalloc's
// start-up options (`_rjem_malloc_conf`, a `no_mangle` static) and the tests that the feature's
// allocator is in use, read those options and knows those commands.
#![deny(unsafe_code)]

pub mod audit;
pub mod config;
pub mod demo;
pub mod engine;
pub mod eval;
pub mod guard;
pub mod hooks;
pub mod memory;
pub mod metrics;
pub mod proxy;
pub mod runtime;
pub mod server;
pub mod wire;
