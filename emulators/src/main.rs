//! `obo-emulators`: runs the Entra, Key Vault and downstream emulators for the local stack.
//!
//! Writes the test CA to `DIR/ca.pem` and the service settings to an env file, prints the
//! URLs, then serves until Ctrl-C or SIGTERM.

use std::{fmt::Write as _, path::PathBuf, time::Duration};

use anyhow::{bail, Context as _};
use emulators::{Stack, StackOptions};

const USAGE: &str = "\
Usage: obo-emulators [OPTIONS]

Options:
  --dir DIR                 where ca.pem (and by default service.env) go [default: .local-stack]
  --env-file FILE           where the service settings go as KEY=VALUE lines [default: DIR/service.env]
  --entra-latency-ms N      latency added to every token-endpoint call [default: 0]
  --base-port N             Entra on N, Key Vault on N+1, downstream on N+2; 0 = any free ports
                            [default: 8441]
  -h, --help                print this help";

/// Default first port: fixed ports let a committed `local.settings.json` point at the stack.
const DEFAULT_BASE_PORT: u16 = 8441;

#[derive(Debug)]
struct Args {
    dir: PathBuf,
    env_file: Option<PathBuf>,
    entra_latency_ms: u64,
    base_port: u16,
}

fn parse_args(mut args: impl Iterator<Item = String>) -> anyhow::Result<Option<Args>> {
    let mut parsed = Args {
        dir: PathBuf::from(".local-stack"),
        env_file: None,
        entra_latency_ms: 0,
        base_port: DEFAULT_BASE_PORT,
    };
    while let Some(arg) = args.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((name, value)) if name.starts_with("--") => {
                (name.to_owned(), Some(value.to_owned()))
            }
            _ => (arg.clone(), None),
        };
        let mut value = || -> anyhow::Result<String> {
            match inline.clone().or_else(|| args.next()) {
                Some(value) => Ok(value),
                None => bail!("{name} needs a value\n\n{USAGE}"),
            }
        };
        match name.as_str() {
            "-h" | "--help" => return Ok(None),
            "--dir" => parsed.dir = PathBuf::from(value()?),
            "--env-file" => parsed.env_file = Some(PathBuf::from(value()?)),
            "--entra-latency-ms" => {
                parsed.entra_latency_ms = value()?
                    .parse()
                    .context("--entra-latency-ms must be a number of milliseconds")?;
            }
            "--base-port" => {
                let port: u16 = value()?
                    .parse()
                    .context("--base-port must be a port number")?;
                if port > u16::MAX - 2 {
                    bail!("--base-port must leave room for two more ports");
                }
                parsed.base_port = port;
            }
            other => bail!("unknown argument {other:?}\n\n{USAGE}"),
        }
    }
    Ok(Some(parsed))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let Some(args) = parse_args(std::env::args().skip(1))? else {
        println!("{USAGE}");
        return Ok(());
    };

    let port = |offset: u16| {
        if args.base_port == 0 {
            0
        } else {
            args.base_port + offset
        }
    };
    // An absolute CA path in the env file works from any working directory.
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("creating {}", args.dir.display()))?;
    let dir = args
        .dir
        .canonicalize()
        .with_context(|| format!("resolving {}", args.dir.display()))?;
    let options = StackOptions {
        ca_dir: Some(dir.clone()),
        entra_port: port(0),
        key_vault_port: port(1),
        downstream_port: port(2),
        ..StackOptions::default()
    };
    let stack = Stack::start(options).await?;
    stack
        .entra
        .set_latency(Duration::from_millis(args.entra_latency_ms));

    let env_file = args
        .env_file
        .clone()
        .unwrap_or_else(|| dir.join("service.env"));
    let mut env = String::new();
    for (name, value) in stack.service_env() {
        writeln!(env, "{name}={value}")?;
    }
    std::fs::write(&env_file, env).with_context(|| format!("writing {}", env_file.display()))?;

    let entra = stack.entra.authority_host();
    println!(
        "Entra ID     {entra}  (tenant {})",
        stack.options().tenant_id
    );
    println!("Key Vault    {}", stack.key_vault.vault_url());
    println!("Downstream   {}", stack.downstream.base_url());
    println!("CA           {}", stack.ca_pem_path().display());
    println!("Settings     {}", env_file.display());
    println!(
        "Tokens: curl --cacert {ca} '{entra}/_dev/user-token?oid=<user-guid>&scp=access_as_user' \
         (setup) and '{entra}/_dev/app-token?roles=OboVault.Act' (do-work)",
        ca = stack.ca_pem_path().display()
    );

    shutdown_signal().await;
    tracing::info!("stopping the emulators");
    drop(stack);
    Ok(())
}

/// Resolves on Ctrl-C or (on Unix) SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::warn!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> anyhow::Result<Option<Args>> {
        parse_args(args.iter().map(|s| (*s).to_owned()))
    }

    #[test]
    fn arguments() {
        let args = parse(&[
            "--dir",
            "x",
            "--env-file=y.env",
            "--entra-latency-ms",
            "20",
            "--base-port",
            "0",
        ])
        .expect("valid")
        .expect("not help");
        assert_eq!(args.dir, PathBuf::from("x"));
        assert_eq!(args.env_file, Some(PathBuf::from("y.env")));
        assert_eq!(args.entra_latency_ms, 20);
        assert_eq!(args.base_port, 0);
        assert!(parse(&["--help"]).expect("help").is_none());
        assert!(parse(&["--dir"]).is_err());
        assert!(parse(&["--entra-latency-ms", "x"]).is_err());
        assert!(parse(&["--base-port", "65535"]).is_err());
        assert!(parse(&["--bogus"]).is_err());
    }
}
