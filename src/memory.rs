//! The allocator, and giving the heap that compiling the rule packs used back to the operating
//! system.
//!
//! # The allocator
//! With the `mimalloc` feature (off by default: `cargo build --release --features mimalloc`)
//! careguard allocates with mimalloc (v3, as the `mimalloc` crate builds it) instead of the
//! system's malloc. A guarded request made ~56 allocations and ~57 frees (hyper's read buffers
//! and header maps, the engine's texts, the exchange's state; ~44 and ~47 since a few were
//! removed), and glibc spent ~12K instructions a request on them, ~12% of the request, where
//! mimalloc spends ~5K: 97.5K -> 89.7K instructions per guarded request and 57.4K -> 54.3K per
//! pass-through one (callgrind, `scripts/instructions.sh`), ~7% less CPU a request under load.
//!
//! It is not the default because of memory. Idle RSS is ~5 MB higher (37 -> 42 MB after
//! start-up, 38.5 -> 43 MB after 40 requests, `scripts/rss.sh`), and it grows with every rule
//! reload: 49 MB after the first, 66 MB after sixteen and still rising by ~1 MB a reload,
//! where glibc's stays at ~42 MB (`RSS_RELOADS=16 scripts/rss.sh`). Purging at once
//! (`MIMALLOC_PURGE_DELAY=0`) and building each set on a fresh thread did not change it; pages
//! that keep a few live blocks of a new set among the freed blocks of the old one are the
//! likely cause, not yet shown. A deployment that never reloads can take the CPU; one that
//! reloads on every rules update should not, until that is understood.
//!
//! Transparent huge pages: built with `no_thp`, mimalloc does not ask for them itself (with
//! that request, idle RSS was 76 MB on a host in `madvise` mode). On a host whose THP mode is
//! `always` the kernel gives them anyway unless `MIMALLOC_ALLOW_THP=0` is set, which makes
//! mimalloc turn THP off for the process.
//!
//! It is declared here, in the library: with the feature, the tests, examples and benchmarks
//! run on the allocator the binary runs.
//!
//! # Freeing after a rule build
//! Compiling ~950 regexes (parse trees, NFA builders, literal sets, the validation compiles of
//! every pattern) allocates and frees many small blocks around the ones the engine keeps. An
//! allocator keeps freed pages for reuse, so without a collection they stay in the resident set
//! of an idle proxy: about 1.4 MB after start-up with the embedded packs under glibc (measured
//! by calling `malloc_trim` in a running `careguard serve` from gdb), ~3 MB under mimalloc, and
//! a whole old rule set's worth after a reload. glibc's `malloc_trim(0)` returns the free pages
//! of every arena; mimalloc's `mi_collect(true)` collects the calling thread's heap (and purges
//! what is already free process-wide), so it is called on the thread that built the rules and
//! again on the control thread, which built the start-up set. Under mimalloc glibc's heap holds
//! only what C code allocates (the resolver); on systems without glibc only mimalloc's part
//! applies, and without the feature there it does nothing.

/// mimalloc as the global allocator (see the module documentation).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Returns free heap pages to the operating system (mimalloc's `mi_collect` for this thread's
/// heap, glibc's `malloc_trim`; a no-op elsewhere). Cheap enough to call after each rule build,
/// not meant for the request path.
pub fn release_free_heap() {
    collect_thread_heap();
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `malloc_trim` only reorganises glibc's own free lists and takes no pointer.
    #[allow(unsafe_code)]
    unsafe {
        libc::malloc_trim(0);
    }
}

/// mimalloc's part of [`release_free_heap`] alone: the calling thread's heap (glibc's trim
/// reaches every arena from any thread, so it is not repeated). A no-op without the feature.
pub fn collect_thread_heap() {
    #[cfg(feature = "mimalloc")]
    // SAFETY: `mi_collect` takes no pointer and is thread-safe; it frees and purges the empty
    // pages of this thread's heap (nothing on a thread mimalloc has not set up).
    #[allow(unsafe_code)]
    unsafe {
        libmimalloc_sys::mi_collect(true);
    }
}

#[cfg(all(test, feature = "mimalloc"))]
mod tests {
    /// With the feature on, Rust's heap is mimalloc's: a block from `Vec` lies in its heap.
    /// (Without the declaration above, every number in the module documentation is glibc's.)
    #[test]
    #[allow(unsafe_code)]
    fn heap_blocks_come_from_mimalloc() {
        let block = vec![7u8; 100];
        // SAFETY: only asks whether the address lies in mimalloc's heap; reads nothing.
        let ours = unsafe { libmimalloc_sys::mi_is_in_heap_region(block.as_ptr().cast()) };
        assert!(ours, "the global allocator is not mimalloc");
    }
}
