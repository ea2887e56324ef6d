//! Structured logging (tracing; `LOG_FORMAT=json|pretty`, filter from `RUST_LOG`), span export
//! over OTLP, and the Prometheus metrics every role exposes. Logs go to stderr so command output
//! on stdout stays clean for scripts. The settings are `config::TelemetrySettings`.

pub mod metrics;
pub mod pools;
#[cfg(test)]
pub(crate) mod span_recorder;
pub mod trace_context;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, EnvFilter, Layer};

use crate::config::telemetry::DEFAULT_LOG_FILTER;
use crate::config::TelemetrySettings;

/// What [`init`] started that must be flushed before the process exits.
#[must_use = "call shutdown() before exiting so the last spans are exported"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// True when spans are exported over OTLP.
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }

    /// Exports what is still buffered and stops the exporter (bounded by the SDK's timeout).
    pub fn shutdown(self) {
        if let Some(p) = self.provider {
            if let Err(e) = p.shutdown() {
                eprintln!("warning: OTLP exporter shutdown: {e}");
            }
        }
    }
}

/// An OTLP span exporter when `settings` name an endpoint (`OTEL_EXPORTER_OTLP_ENDPOINT` or
/// the traces-only `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`): HTTP, protobuf unless
/// `OTEL_EXPORTER_OTLP_PROTOCOL=http/json`; headers and timeout come from the SDK's standard
/// `OTEL_EXPORTER_OTLP_*` variables. Spans are batched on a thread of their own.
fn otlp_provider(settings: &TelemetrySettings, service: &str) -> Option<SdkTracerProvider> {
    let url = settings.traces_url()?;
    use opentelemetry_otlp::{Protocol, WithExportConfig};
    let protocol = match settings.otlp_protocol.as_str() {
        "http/json" => Protocol::HttpJson,
        _ => Protocol::HttpBinary,
    };
    let exporter = match opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(protocol)
        .with_endpoint(url)
        .build()
    {
        Ok(e) => e,
        Err(e) => {
            eprintln!("warning: OTLP export disabled: {e}");
            return None;
        }
    };
    Some(
        SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(
                opentelemetry_sdk::Resource::builder()
                    .with_service_name(settings.service_name_or(service))
                    .build(),
            )
            .build(),
    )
}

/// Installs the global subscriber: logs to stderr (`LOG_FORMAT` json, or human text, filtered
/// by `RUST_LOG`), and, when an OTLP endpoint is configured, spans exported as `service` (or
/// `OTEL_SERVICE_NAME`). Without an endpoint nothing is exported and no span is created for
/// the exporter. A second call (tests) keeps the first setup.
pub fn init(settings: &TelemetrySettings, service: &str) -> Telemetry {
    let filter = match settings.log_filter.trim() {
        "" => None,
        f => EnvFilter::try_new(f).ok(),
    }
    .unwrap_or_else(|| EnvFilter::new(DEFAULT_LOG_FILTER));
    // Colours only on a terminal: log files and collectors get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let logs = fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(ansi);
    let logs = if settings.log_format == "json" {
        logs.json()
            .flatten_event(true)
            .with_current_span(false)
            .with_filter(filter)
            .boxed()
    } else {
        logs.compact().with_filter(filter).boxed()
    };
    let provider = otlp_provider(settings, service);
    let spans = provider.as_ref().map(|p| {
        let traces_filter = EnvFilter::new(&settings.traces_filter);
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("aliexpress"))
            .with_filter(traces_filter)
    });
    let installed = tracing_subscriber::registry().with(logs).with(spans).try_init().is_ok();
    if installed {
        if let Some(p) = &provider {
            opentelemetry::global::set_tracer_provider(p.clone());
            trace_context::set_exporting();
        }
    }
    Telemetry {
        provider: provider.filter(|_| installed),
    }
}
