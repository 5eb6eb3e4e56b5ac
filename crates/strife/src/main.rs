//! `strife`: one binary, one subcommand per process (docs/SPEC.md §1). The subcommands live
//! in the library (`lib.rs`); here only what belongs to the process: its allocator and malloc
//! tuning.

/// mimalloc instead of glibc's allocator: the servers allocate and free many small buffers
/// per request across threads (TLS records, HTTP/2 frames, protobuf messages), and glibc's
/// malloc/free/consolidation showed as ≈ 8 % of the gateway's CPU.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// SQLite allocates through glibc's malloc, not the global allocator above. Each statement
/// that needs a scratch table (`UPDATE … RETURNING`, a sort) creates and destroys a small
/// pager, and glibc then gives the freed top of the writer thread's arena back to the kernel
/// (`madvise`, a TLB shootdown across cores) only to fault it in again on the next statement:
/// ≈ 12 % of the gateway's CPU under load. A fixed trim threshold keeps up to 64 MiB of free
/// memory per arena (bounded by the peak SQLite ever used) instead.
fn keep_sqlite_memory() {
    const TRIM_THRESHOLD_BYTES: libc::c_int = 64 << 20;
    const MMAP_THRESHOLD_BYTES: libc::c_int = 4 << 20;
    #[allow(unsafe_code)] // process-level malloc tuning, no memory is touched
    // SAFETY: mallopt only changes malloc's tuning parameters; it is called before any other
    // thread exists and its failure (returning 0) just leaves the defaults in place.
    unsafe {
        libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES);
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES);
    }
}

fn main() -> std::process::ExitCode {
    keep_sqlite_memory();
    strife::run()
}
