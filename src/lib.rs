//! careguard: an OpenAI-compatible reverse proxy that guards mental-health and companion chatbots.
// Measured exceptions (`memory`): the allocator's collection calls in `release_free_heap`
// (glibc's `malloc_trim`; with the `mimalloc` feature, mimalloc's `mi_collect`) and the test that
// the feature's allocator is in use.
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
