//! Logging setup: JSON lines in Azure, readable text on a terminal, `RUST_LOG` filtering.
//! What may and may not be logged is in docs/LOGGING.md.

use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the global subscriber writing to `sink`. Safe to call twice (the second call is
/// ignored), so tests can call it freely.
pub fn init<W>(format: LogFormat, sink: W)
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new("info,sqlx=warn,hyper=warn,reqwest=warn,azure_core=warn")
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(sink)
        .with_target(true);
    let result = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init(),
        LogFormat::Text => builder.try_init(),
    };
    // Already installed (tests, or the CLI calling twice): keep the first.
    drop(result);
}
