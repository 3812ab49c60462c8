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

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match obo_vault::cli::Cli::parse().run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            // Settings errors name the variable; nothing here carries a secret value.
            eprintln!("obo-vault: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
