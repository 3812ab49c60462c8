//! The service binary: the Functions custom handler by default, operator commands otherwise.

#![deny(clippy::unwrap_used, clippy::expect_used, clippy::allow_attributes)]
// Functions stay under 60 lines (clippy.toml); test scenarios may read longer.
#![cfg_attr(not(test), deny(clippy::too_many_lines))]

use clap::Parser as _;

/// mimalloc rather than glibc's allocator: a request allocates and frees many small,
/// short-lived buffers (headers, JSON, futures) across the runtime's threads, which glibc's
/// per-thread arenas and free-list consolidation serve slowly (malloc/free/memmove were 14-16 %
/// of the service's CPU per warm do-work call, docs/PERFORMANCE.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    without_transparent_huge_pages();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("obo-vault: cannot start the async runtime: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(obo_vault::cli::Cli::parse().run()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            // Settings errors name the variable; nothing here carries a secret value.
            eprintln!("obo-vault: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Turns transparent huge pages off for this process, before the runtime's threads allocate.
/// mimalloc maps its arenas in large aligned regions, and where the kernel backs anonymous
/// memory with huge pages whenever it can (`/sys/kernel/mm/transparent_hugepage/enabled` set
/// to `always`, as on many distributions), touching a few small blocks brought in whole 2 MiB
/// pages: the service's resident memory doubled (about 24 to 45-50 MiB in setup and cold
/// do-work runs, 36 to 70 MiB in warm ones) for no measured gain in CPU
/// (docs/PERFORMANCE.md, "2026-12-07 (morning)"). Best effort: a kernel without the switch
/// leaves the process as it was.
fn without_transparent_huge_pages() {
    #[cfg(target_os = "linux")]
    let _ = rustix::thread::disable_transparent_huge_pages(true);
}
