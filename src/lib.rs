//! careguard: an OpenAI-compatible reverse proxy that guards mental-health and companion chatbots.
// Measured exceptions (`memory`): the allocator's collection calls in `release_free_heap`
// (mimalloc's `mi_collect`, glibc's `malloc_trim`).
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
