//! The process's use of glibc's allocator. glibc gives threads that allocate at once arenas of
//! their own and keeps what is freed in each: large messages passing through many threads
//! would stay resident. The binary caps the arenas at start (`cap_arenas`), and code that has
//! just freed a large transient (a page of big rows) gives the free memory back (`give_back`).

/// Caps glibc at two arenas, unless the operator chose a number with glibc's own
/// `MALLOC_ARENA_MAX`. Call it while the process has one thread.
pub fn cap_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: called before any other thread exists; this only changes the allocator's
        // settings.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
}

/// Returns the free memory of every arena to the system (a few milliseconds at most).
pub fn give_back() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory; it is thread-safe.
    unsafe {
        libc::malloc_trim(0);
    }
}
