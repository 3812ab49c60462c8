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
    let result = match format {
        // json-subscriber writes the lines tracing-subscriber's `json()` writes (the same
        // keys), at less cost: it serialises a span's fields once, when they are recorded, and
        // copies that text into each line, where `json()` parses it back and serialises it
        // again for every line (docs/PERFORMANCE.md, "Logging").
        LogFormat::Json => json_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(sink)
            .with_target(true)
            .flatten_event(true)
            // `spans` lists every span around the event, the innermost last; `span` would
            // repeat that last one on every line.
            .with_current_span(false)
            .with_span_list(true)
            .try_init(),
        LogFormat::Text => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(sink)
            .with_target(true)
            .try_init(),
    };
    // Already installed (tests, or the CLI calling twice): keep the first.
    drop(result);
}
