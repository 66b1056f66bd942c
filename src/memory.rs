//! The allocator, and giving the heap that compiling the rule packs used back to the operating
//! system.
//!
//! # The allocator
//! careguard allocates with jemalloc (5.3.1, as `tikv-jemalloc-sys` builds it; the `jemalloc`
//! feature, on by default). `cargo build --no-default-features` builds it on the system's malloc.
//! A guarded request makes ~44 allocations and ~47 frees (hyper's read buffers and header maps,
//! the engine's texts, the exchange's state), and glibc's malloc spends ~10K instructions a
//! request on them, two of them hyper's 8 KB read buffers, which glibc's per-thread cache does not
//! hold (it stops at 1 KB), so each one goes to the arena and may first consolidate its fast
//! bins. jemalloc's thread cache holds blocks up to 32 KB: 93.3K -> 88.6K instructions per guarded
//! request, 55.9K -> 54.2K per pass-through one (callgrind, `scripts/instructions.sh`).
//!
//! Decision: jemalloc over mimalloc, which saved as many instructions (88.0K) but whose resident
//! set grew by ~1 MB with every rule reload (49 MB after the first, 66 MB after sixteen and still
//! rising; purging at once and building each set on a fresh thread did not change it). jemalloc
//! costs ~2-3 MB of idle RSS over glibc and stays level over reloads once its free pages are
//! purged after each build (below): 39.6 MB after start-up, 41.1 after 40 requests, 45.5 after
//! sixteen reloads (46.1 after twenty-four, +0.5 over the last eight; +0.3-0.7 MB throughout
//! with `tcache_gc_incr_bytes` below), against glibc's 37.2, 38.6 and 42.4 (`RSS_RELOADS=16 scripts/rss.sh`; `CARGO_FLAGS=--no-default-features` for glibc).
//!
//! Transparent huge pages: jemalloc's default (`opt.thp` = `default`) neither asks for nor
//! refuses them, so the host's mode applies; on an `always` host `_RJEM_MALLOC_CONF=thp:never`
//! turns them off for jemalloc's heap (the variable's name carries the crate's symbol prefix).
//!
//! Its licence (BSD-2-Clause) travels with the binary: `licenses/jemalloc-COPYING.txt`, copied
//! into the container image.
//!
//! It is declared here, in the library: the tests, examples and benchmarks run on the allocator
//! the binary runs.
//!
//! # Freeing after a rule build
//! Compiling ~950 regexes (parse trees, NFA builders, literal sets, the validation compiles of
//! every pattern) allocates and frees many small blocks around the ones the engine keeps, and a
//! reload frees a whole rule set (~21 MB of heap) once the new one is in force. An allocator keeps freed
//! pages for reuse: jemalloc returns them only as they age (its dirty-page decay, 10 s, checked
//! on later allocations), so without a purge an idle proxy kept 96 MB after two reloads. After
//! each build [`release_free_heap`] flushes the calling thread's cache (the blocks it freed,
//! among them the old set's when no request still held it) and purges every arena
//! (`arena.<all>.purge`; request threads never wait on it, they only try its lock), and calls glibc's `malloc_trim(0)`, which under glibc's malloc (the
//! `--no-default-features` build) returns ~1.4 MB after start-up and under jemalloc reaches only
//! what C code allocates (the resolver). Elsewhere, without either, it does nothing.

/// jemalloc as the global allocator (see the module documentation).
#[cfg(all(feature = "jemalloc", not(target_env = "msvc")))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's start-up options, read before `main` (jemalloc's weak `malloc_conf` symbol, named
/// with the crate's `_rjem_` prefix on Linux, where the prefix applies; `_RJEM_MALLOC_CONF` in
/// the environment still overrides it). `tcache_gc_incr_bytes`: the thread cache runs its
/// incremental garbage collection every 4 MB allocated instead of every 64 KB, i.e. every ~100
/// requests instead of a few times a request: 88.6K -> 87.3K instructions per guarded request
/// (callgrind), 54.2K -> 53.3K pass-through. The cache stays bounded per size class either way;
/// only how often unused cached blocks are handed back changes (idle RSS +0.3-0.7 MB).
#[cfg(all(feature = "jemalloc", target_os = "linux"))]
#[allow(unsafe_code, non_upper_case_globals)]
#[no_mangle]
static _rjem_malloc_conf: Option<&'static std::ffi::c_char> =
    // SAFETY: a NUL-terminated 'static string; jemalloc only reads it.
    Some(unsafe { &*c"tcache_gc_incr_bytes:4194304".as_ptr() });

/// Returns free heap pages to the operating system (jemalloc's thread cache flush and purge of
/// every arena, glibc's `malloc_trim`; a no-op elsewhere). Cheap enough to call after each rule
/// build, not meant for the request path.
pub fn release_free_heap() {
    #[cfg(all(feature = "jemalloc", not(target_env = "msvc")))]
    {
        flush_thread_cache();
        jemalloc_command(PURGE_ALL_ARENAS);
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `malloc_trim` only reorganises glibc's own free lists and takes no pointer.
    #[allow(unsafe_code)]
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Gives the blocks the calling thread freed into its allocator cache back to their arenas, so
/// that the purge can return their pages.
#[cfg(all(feature = "jemalloc", not(target_env = "msvc")))]
fn flush_thread_cache() {
    jemalloc_command(FLUSH_THREAD_CACHE);
}

/// jemalloc's command that empties the calling thread's cache.
#[cfg(all(feature = "jemalloc", not(target_env = "msvc")))]
const FLUSH_THREAD_CACHE: &std::ffi::CStr = c"thread.tcache.flush";

/// jemalloc's command that purges every arena (`MALLCTL_ARENAS_ALL`, 4096 in jemalloc 5).
#[cfg(all(feature = "jemalloc", not(target_env = "msvc")))]
const PURGE_ALL_ARENAS: &std::ffi::CStr = c"arena.4096.purge";

/// Runs a jemalloc control command that neither reads nor writes a value. A failure (a name
/// this jemalloc does not know) is logged at debug level: freeing memory is best effort.
#[cfg(all(feature = "jemalloc", not(target_env = "msvc")))]
fn jemalloc_command(name: &std::ffi::CStr) {
    let rc = jemalloc_command_status(name);
    if rc != 0 {
        tracing::debug!(command = ?name, rc, "jemalloc control command failed");
    }
}

/// [`jemalloc_command`]'s call, returning `mallctl`'s status (0 on success).
#[cfg(all(feature = "jemalloc", not(target_env = "msvc")))]
fn jemalloc_command_status(name: &std::ffi::CStr) -> std::ffi::c_int {
    // SAFETY: `name` is NUL-terminated; with every pointer null and length 0 `mallctl` reads and
    // writes nothing of ours, which is what commands without a value (flush, purge) expect.
    #[allow(unsafe_code)]
    unsafe {
        tikv_jemalloc_sys::mallctl(
            name.as_ptr(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            0,
        )
    }
}

#[cfg(all(test, feature = "jemalloc", not(target_env = "msvc")))]
mod tests {
    /// With the feature on, Rust's heap is jemalloc's: jemalloc knows the arena of a boxed
    /// block. (Without the declaration above, every number in the module documentation is
    /// glibc's.)
    #[test]
    #[allow(unsafe_code)]
    fn heap_blocks_come_from_jemalloc() {
        let block = Box::new([7u8; 100]);
        let mut arena: u32 = u32::MAX;
        let mut len = std::mem::size_of::<u32>();
        let mut ptr = block.as_ptr().cast::<std::ffi::c_void>();
        // SAFETY: `arenas.lookup` reads a pointer (`newp`, `newlen`) and writes the arena index
        // into `arena` (`oldp`, `oldlenp`; an `unsigned` in jemalloc 5); all four outlive the
        // call.
        let rc = unsafe {
            tikv_jemalloc_sys::mallctl(
                c"arenas.lookup".as_ptr(),
                (&raw mut arena).cast(),
                &mut len,
                (&raw mut ptr).cast(),
                std::mem::size_of::<*const std::ffi::c_void>(),
            )
        };
        assert_eq!(
            rc, 0,
            "jemalloc does not know the block: the global allocator is not jemalloc"
        );
        assert_ne!(arena, u32::MAX);
    }

    /// jemalloc read the options above (the symbol's name matches the prefixed build).
    #[test]
    #[cfg(target_os = "linux")]
    #[allow(unsafe_code)]
    fn the_start_up_options_are_read() {
        if std::env::var_os("_RJEM_MALLOC_CONF").is_some() {
            return; // the environment overrides the built-in options on purpose
        }
        let mut value: usize = 0;
        let mut len = std::mem::size_of::<usize>();
        // SAFETY: `opt.tcache_gc_incr_bytes` is a read-only `size_t` written into `value`
        // (`oldp`, `oldlenp`); nothing is written to jemalloc.
        let rc = unsafe {
            tikv_jemalloc_sys::mallctl(
                c"opt.tcache_gc_incr_bytes".as_ptr(),
                (&raw mut value).cast(),
                &mut len,
                std::ptr::null_mut(),
                0,
            )
        };
        assert_eq!(rc, 0);
        assert_eq!(
            value,
            4 << 20,
            "jemalloc did not read careguard's malloc_conf"
        );
    }

    /// The control commands `release_free_heap` runs are ones this jemalloc knows (a failure
    /// there is only logged at debug level).
    #[test]
    fn the_purge_commands_exist() {
        for name in [super::FLUSH_THREAD_CACHE, super::PURGE_ALL_ARENAS] {
            assert_eq!(super::jemalloc_command_status(name), 0, "{name:?}");
        }
    }
}
