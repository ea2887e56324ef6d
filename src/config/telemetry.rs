//! Logging and tracing settings of every subcommand; `telemetry::init` starts both from them.
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | LOG_FORMAT | pretty | `pretty` for people, `json` (one object per line) for collectors |
//! | RUST_LOG | info,rdkafka=warn,actix_server=warn,opensearch=warn | which log lines are written (tracing's `EnvFilter` syntax) |
//! | OTEL_EXPORTER_OTLP_ENDPOINT | (none) | export spans over OTLP/HTTP to this collector (`/v1/traces` is appended); unset: nothing is exported |
//! | OTEL_EXPORTER_OTLP_TRACES_ENDPOINT | (none) | the traces URL as is (wins over the one above) |
//! | OTEL_EXPORTER_OTLP_PROTOCOL | http/protobuf | or http/json |
//! | OTEL_SERVICE_NAME | aliexpress-<subcommand> | the `service.name` of exported spans (aliexpress-serve, aliexpress-run-product-event-consumer, ...) |
//! | OTEL_TRACES_FILTER | info,aliexpress=debug | which spans are exported (RUST_LOG syntax) |
//!
//! `OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_EXPORTER_OTLP_TIMEOUT` and `OTEL_BSP_*` are read by the
//! OpenTelemetry SDK itself, as its specification defines them. An empty value counts as unset
//! for the endpoints and the service name, so a sourced env file may leave them empty.

use clap::Args;

/// `RUST_LOG` when unset: info, with the chattiest libraries at warn.
pub const DEFAULT_LOG_FILTER: &str = "info,rdkafka=warn,actix_server=warn,opensearch=warn";
/// `OTEL_TRACES_FILTER` when unset: the platform's own spans down to debug (handlers,
/// repositories, worker stages, one per projected event).
pub const DEFAULT_TRACES_FILTER: &str = "info,aliexpress=debug";

/// How logs are written and where spans go.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Logs and traces")]
pub struct TelemetrySettings {
    /// Log format: pretty or json.
    #[arg(long, env = "LOG_FORMAT", global = true, default_value = "pretty", value_parser = ["pretty", "json"])]
    pub log_format: String,
    /// Which log lines are written (tracing EnvFilter syntax, e.g. info,aliexpress=debug).
    #[arg(long, env = "RUST_LOG", global = true, default_value = DEFAULT_LOG_FILTER)]
    pub log_filter: String,
    /// OTLP/HTTP collector to export spans to (`/v1/traces` is appended); unset: no export.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT", global = true)]
    pub otlp_endpoint: Option<String>,
    /// OTLP/HTTP traces URL, used as is (wins over --otlp-endpoint).
    #[arg(long, env = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", global = true)]
    pub otlp_traces_endpoint: Option<String>,
    /// OTLP encoding: http/protobuf or http/json.
    #[arg(
        long,
        env = "OTEL_EXPORTER_OTLP_PROTOCOL",
        global = true,
        default_value = "http/protobuf",
        value_parser = ["http/protobuf", "http/json"]
    )]
    pub otlp_protocol: String,
    /// service.name of exported spans [default: aliexpress-<subcommand>].
    #[arg(long, env = "OTEL_SERVICE_NAME", global = true)]
    pub service_name: Option<String>,
    /// Which spans are exported (RUST_LOG syntax).
    #[arg(long, env = "OTEL_TRACES_FILTER", global = true, default_value = DEFAULT_TRACES_FILTER)]
    pub traces_filter: String,
}

impl Default for TelemetrySettings {
    /// The values a command line without these flags and variables gets.
    fn default() -> Self {
        Self {
            log_format: "pretty".into(),
            log_filter: DEFAULT_LOG_FILTER.into(),
            otlp_endpoint: None,
            otlp_traces_endpoint: None,
            otlp_protocol: "http/protobuf".into(),
            service_name: None,
            traces_filter: DEFAULT_TRACES_FILTER.into(),
        }
    }
}

impl TelemetrySettings {
    /// The URL spans are sent to, when export is on: the traces endpoint as is, else the
    /// endpoint with `/v1/traces` appended (the OTLP specification's rule).
    pub fn traces_url(&self) -> Option<String> {
        let set = |v: &Option<String>| v.as_deref().map(str::trim).filter(|v| !v.is_empty()).map(str::to_owned);
        set(&self.otlp_traces_endpoint)
            .or_else(|| set(&self.otlp_endpoint).map(|e| format!("{}/v1/traces", e.trim_end_matches('/'))))
    }

    /// The service name of exported spans: `OTEL_SERVICE_NAME`, else `default`.
    pub fn service_name_or(&self, default: &str) -> String {
        self.service_name
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .unwrap_or(default)
            .to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_traces_url_follows_the_otlp_rules() {
        let mut t = TelemetrySettings::default();
        assert_eq!(t.traces_url(), None);
        t.otlp_endpoint = Some("http://c:4318/".into());
        assert_eq!(t.traces_url().as_deref(), Some("http://c:4318/v1/traces"));
        t.otlp_traces_endpoint = Some("http://t:4318/x".into());
        assert_eq!(t.traces_url().as_deref(), Some("http://t:4318/x"));
        t.otlp_traces_endpoint = Some(String::new());
        assert_eq!(t.traces_url().as_deref(), Some("http://c:4318/v1/traces"));
    }
}
