//! The allocator, and giving the heap that compiling the rule packs used back to the operating
//! system.
//!
//! # The allocator
//! With the `mimalloc` feature (on by default) every careguard binary allocates with mimalloc
//! instead of the system's malloc. A guarded request makes ~56 allocations and as many frees
//! (hyper's buffers and header maps, the engine's texts, the exchange's state); glibc spent
//! ~12K instructions a request on them, ~13% of the request, where mimalloc spends ~5K: 97.5K ->
//! 89.7K instructions per guarded request and 57.4K -> 54.3K per pass-through one (callgrind,
//! `scripts/instructions.sh`), ~7% less CPU a request under load. The price is memory: idle RSS
//! 37 -> 43 MB with the embedded packs (`scripts/rss.sh`), and after a burst of load 44 -> 46 MB.
//! Built with `--no-default-features`, careguard uses the system allocator (the numbers before
//! the arrows). mimalloc is built without transparent huge pages for its arenas (`no_thp`): with
//! them, idle RSS was 76 MB.
//!
//! # Freeing after a rule build
//! Compiling ~950 regexes (parse trees, NFA builders, literal sets, the validation compiles of
//! every pattern) allocates and frees many small blocks around the ones the engine keeps. An
//! allocator keeps freed pages for reuse, so without a collection they stay in the resident set
//! of an idle proxy: about 1.4 MB after start-up with the embedded packs under glibc (measured
//! by calling `malloc_trim` in a running `careguard serve` from gdb), and a whole old rule set's
//! worth after a reload. One collection after each build returns the free pages: mimalloc's
//! `mi_collect(true)` and glibc's `malloc_trim(0)` (for what was allocated before mimalloc or
//! outside Rust). Elsewhere (musl, macOS) only mimalloc's part applies.

/// mimalloc as the global allocator (see the module documentation).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Returns free heap pages to the operating system (mimalloc's `mi_collect`, glibc's
/// `malloc_trim`). Cheap enough to call after each rule build, not meant for the request path.
pub fn release_free_heap() {
    #[cfg(feature = "mimalloc")]
    // SAFETY: `mi_collect` takes no pointer; it only frees and purges mimalloc's empty pages.
    #[allow(unsafe_code)]
    unsafe {
        libmimalloc_sys::mi_collect(true);
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `malloc_trim` only reorganises glibc's own free lists and takes no pointer.
    #[allow(unsafe_code)]
    unsafe {
        libc::malloc_trim(0);
    }
}
