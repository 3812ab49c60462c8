//! `obo-emulators`: runs the Entra, Key Vault, downstream and managed-identity emulators and
//! the grant-event receiver for the local stack.
//!
//! Writes the test CA to `DIR/ca.pem` and the service settings to an env file, prints the
//! URLs, then serves until Ctrl-C or SIGTERM.

use std::{fmt::Write as _, path::PathBuf, time::Duration};

use anyhow::Context as _;
use clap::{Parser, ValueEnum};
use emulators::{ServiceCredential, Stack, StackOptions};

/// How the service authenticates to the Entra emulator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Credential {
    /// A client secret.
    Secret,
    /// A certificate registered on the app (a signed client assertion).
    Certificate,
    /// A user-assigned managed identity trusted by a federated credential on the app.
    ManagedIdentity,
}

/// The local receiver's signing secret, fixed so a committed `local.settings.json` can carry
/// it (a stand-in value, like the emulated client secret: it protects nothing).
const LOCAL_EVENTS_SECRET: &str = "whsec_bG9jYWwtc3RhY2stZXZlbnRzLXNlY3JldC0zMmJ5dGVz";

/// Runs the Entra ID, Key Vault and downstream emulators for the local stack.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Where ca.pem (and by default service.env) go.
    #[arg(long, default_value = ".local-stack")]
    dir: PathBuf,
    /// Where the service settings go as KEY=VALUE lines [default: DIR/service.env].
    #[arg(long)]
    env_file: Option<PathBuf>,
    /// Latency of every token-endpoint call (its signing done within it), in milliseconds.
    #[arg(long, default_value_t = 0)]
    entra_latency_ms: u64,
    /// Entra on N, Key Vault on N+1, downstream on N+2, the managed-identity endpoint on N+3,
    /// the grant-event receiver on N+4, further downstream APIs from N+5; 0 = any free ports. Fixed ports let a committed
    /// `local.settings.json` point at the stack.
    #[arg(long, default_value_t = 8441, value_parser = clap::value_parser!(u16).range(0..=65531))]
    base_port: u16,
    /// The credential the service settings use.
    #[arg(long, value_enum, default_value_t = Credential::Secret)]
    credential: Credential,
    /// Names of the downstream APIs (`OBOVAULT_DOWNSTREAMS`): the first is the downstream
    /// emulator, each further one another API with the audience `https://<name>.obo-vault.test`
    /// on port N+5, N+6, …. Without it the settings use the one unnamed downstream.
    #[arg(long, value_delimiter = ',')]
    downstreams: Vec<String>,
    /// Act as the host's timer: fire the `timerTrigger` of this function.json on its schedule…
    #[arg(long, requires = "handler_url")]
    timer_function: Option<PathBuf>,
    /// …at this URL of the custom handler (e.g. http://127.0.0.1:3000/refresh-tokens).
    #[arg(long, requires = "timer_function")]
    handler_url: Option<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();

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
        managed_identity_port: port(3),
        extra_downstreams: args
            .downstreams
            .iter()
            .skip(1)
            .map(|name| format!("https://{name}.obo-vault.test"))
            .collect(),
        extra_downstreams_port: port(5),
        credential: match args.credential {
            Credential::Secret => ServiceCredential::Secret,
            Credential::Certificate => ServiceCredential::Certificate,
            Credential::ManagedIdentity => ServiceCredential::ManagedIdentity,
        },
        events_port: port(4),
        events_secret: Some(LOCAL_EVENTS_SECRET.to_owned()),
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
    let mut settings = stack.service_env();
    if !args.downstreams.is_empty() {
        // Named downstreams replace the unnamed settings (the service refuses both at once).
        settings.retain(|(name, _)| !name.starts_with("OBOVAULT_DOWNSTREAM_"));
        let names: Vec<&str> = args.downstreams.iter().map(String::as_str).collect();
        settings.extend(stack.named_downstreams_env(&names, "/me,/echo,/status"));
    }
    let mut env = String::new();
    // The receiver prints every grant event it gets, so a newcomer sees them arrive.
    stack.events.set_print(true);
    for (name, value) in settings.into_iter().chain(stack.events_env()) {
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
    for (name, api) in args
        .downstreams
        .iter()
        .skip(1)
        .zip(&stack.extra_downstreams)
    {
        println!(
            "  {name:<10} {}  (audience {})",
            api.base_url(),
            api.resource()
        );
    }
    println!(
        "Identity     {}  (managed-identity endpoint)",
        stack.managed_identity.endpoint()
    );
    println!("Credential   {:?}", args.credential);
    println!(
        "Events       {}  (prints what it receives)",
        stack.events.url()
    );
    println!("CA           {}", stack.ca_pem_path().display());
    println!("Settings     {}", env_file.display());
    println!(
        "Tokens: curl --cacert {ca} '{entra}/_dev/user-token?oid=<user-guid>&scp=access_as_user' \
         (setup) and '{entra}/_dev/app-token?roles=OboVault.Act' (do-work)",
        ca = stack.ca_pem_path().display()
    );

    if let (Some(function), Some(url)) = (&args.timer_function, &args.handler_url) {
        let schedule = emulators::host_timer::schedule_of(function)?;
        println!("Timer        {} on \"{schedule}\"", url);
        tokio::spawn(emulators::host_timer::fire_on_schedule(
            schedule,
            url.clone(),
        ));
    }

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

    #[test]
    fn arguments() {
        let args = Args::try_parse_from([
            "obo-emulators",
            "--dir",
            "x",
            "--env-file=y.env",
            "--entra-latency-ms",
            "20",
            "--base-port",
            "0",
            "--credential",
            "managed-identity",
        ])
        .expect("valid");
        assert_eq!(args.credential, Credential::ManagedIdentity);
        assert_eq!(args.dir, PathBuf::from("x"));
        assert_eq!(args.env_file, Some(PathBuf::from("y.env")));
        assert_eq!(args.entra_latency_ms, 20);
        assert_eq!(args.base_port, 0);
        assert_eq!(
            Args::try_parse_from(["obo-emulators"])
                .expect("defaults")
                .base_port,
            8441
        );
        assert!(Args::try_parse_from(["obo-emulators", "--base-port", "65533"]).is_err());
        assert!(Args::try_parse_from(["obo-emulators", "--credential", "password"]).is_err());
        assert!(Args::try_parse_from(["obo-emulators", "--nope"]).is_err());
    }
}
