//! The service binary: the Functions custom handler by default, operator commands otherwise.

use clap::Parser as _;

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
