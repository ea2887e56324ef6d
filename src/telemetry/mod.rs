//! Structured logging (tracing; `LOG_FORMAT=json|pretty`, filter from `RUST_LOG`) and the
//! Prometheus metrics every role exposes. Logs go to stderr so command output on stdout stays
//! clean for scripts.

pub mod metrics;
pub mod trace_context;

use tracing_subscriber::{fmt, EnvFilter};

/// Installs the global subscriber. `format` is `json` or anything else for human text.
pub fn init(format: &str) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,rdkafka=warn,actix_server=warn,opensearch=warn"));
    // Colours only on a terminal: log files and collectors get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(ansi);
    // A second init (tests) keeps the first subscriber.
    let _ = if format == "json" {
        builder.json().flatten_event(true).with_current_span(false).try_init()
    } else {
        builder.compact().try_init()
    };
}
