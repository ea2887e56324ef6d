//! W3C Trace Context (`traceparent`): carried from an API write through the outbox, Kafka and
//! the consumers, so one request can be followed end to end (in logs as `trace_id`, and by
//! any tracing tool that reads the header).

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};

/// Set once spans are exported over OTLP ([`super::init`]): only then are OpenTelemetry
/// parents set and read, so without an exporter nothing here costs anything.
static EXPORTING: AtomicBool = AtomicBool::new(false);

pub(super) fn set_exporting() {
    EXPORTING.store(true, Ordering::Relaxed);
}

/// Makes `tp` the parent of `span` in the exported trace (call before the span is entered):
/// the span continues the caller's trace. Nothing happens when spans are not exported.
pub fn set_parent(span: &tracing::Span, tp: &TraceParent) {
    if !EXPORTING.load(Ordering::Relaxed) {
        return;
    }
    use opentelemetry::propagation::TextMapPropagator;
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let carrier: HashMap<String, String> = [(TRACEPARENT.to_owned(), tp.to_string())].into();
    let cx = opentelemetry_sdk::propagation::TraceContextPropagator::new().extract(&carrier);
    if let Err(e) = span.set_parent(cx) {
        tracing::debug!(error = %e, "span parent not set");
    }
}

/// The current span as the parent of what comes next, when spans are exported (so the
/// stored or sent `traceparent` names a span the tracing tool has).
fn current() -> Option<TraceParent> {
    if !EXPORTING.load(Ordering::Relaxed) {
        return None;
    }
    use opentelemetry::trace::TraceContextExt;
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let cx = tracing::Span::current().context();
    let sc = cx.span().span_context().clone();
    sc.is_valid().then(|| TraceParent {
        trace_id: format!("{:032x}", sc.trace_id()),
        parent_id: format!("{:016x}", sc.span_id()),
        flags: if sc.is_sampled() { "01" } else { "00" }.into(),
    })
}

/// The header's name, on HTTP requests and responses and on Kafka messages.
pub const TRACEPARENT: &str = "traceparent";

/// A `traceparent` value: version 00, trace id, parent (span) id, flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceParent {
    trace_id: String,
    parent_id: String,
    flags: String,
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn random_hex(bytes: usize) -> String {
    let mut out = String::with_capacity(bytes * 2);
    while out.len() < bytes * 2 {
        out.push_str(&uuid::Uuid::new_v4().simple().to_string());
    }
    out.truncate(bytes * 2);
    out
}

impl TraceParent {
    /// Parses a header value; `None` for anything the specification says to ignore (another
    /// version layout, upper-case hex, all-zero ids).
    pub fn parse(value: &str) -> Option<Self> {
        let mut parts = value.trim().split('-');
        let (version, trace_id, parent_id, flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() || version != "00" {
            return None;
        }
        let valid = is_hex(trace_id, 32)
            && is_hex(parent_id, 16)
            && is_hex(flags, 2)
            && trace_id.bytes().any(|b| b != b'0')
            && parent_id.bytes().any(|b| b != b'0');
        valid.then(|| Self {
            trace_id: trace_id.to_owned(),
            parent_id: parent_id.to_owned(),
            flags: flags.to_owned(),
        })
    }

    /// A new trace (sampled), for a request that came without one.
    pub fn start() -> Self {
        Self {
            trace_id: random_hex(16),
            parent_id: random_hex(8),
            flags: "01".into(),
        }
    }

    /// The same trace with a new span of ours as the parent of what comes next.
    pub fn child(&self) -> Self {
        Self {
            trace_id: self.trace_id.clone(),
            parent_id: random_hex(8),
            flags: self.flags.clone(),
        }
    }

    /// The parent for what comes next: the current span when spans are exported (it was made
    /// a child of `incoming` by the request's or message's span), else a child of `incoming`
    /// (a header value), or a new trace when that is absent or invalid.
    pub fn continue_or_start(incoming: Option<&str>) -> Self {
        current().unwrap_or_else(|| incoming.and_then(Self::parse).map_or_else(Self::start, |p| p.child()))
    }

    /// The trace id (32 hex digits), as logged.
    pub fn trace_id(&self) -> &str {
        &self.trace_id
    }
}

impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "00-{}-{}-{}", self.trace_id, self.parent_id, self.flags)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_valid_header_round_trips_and_a_child_keeps_the_trace() {
        let p = TraceParent::parse(VALID).expect("valid");
        assert_eq!(p.to_string(), VALID);
        let c = p.child();
        assert_eq!(c.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_ne!(c.to_string(), VALID, "a new parent id");
        assert!(TraceParent::parse(&c.to_string()).is_some());
    }

    #[test]
    fn invalid_headers_are_ignored_and_a_new_trace_starts() {
        for bad in [
            "",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
        ] {
            assert!(TraceParent::parse(bad).is_none(), "{bad:?}");
        }
        let fresh = TraceParent::continue_or_start(Some("garbage"));
        assert!(TraceParent::parse(&fresh.to_string()).is_some());
        assert_ne!(fresh.trace_id(), TraceParent::start().trace_id());
    }
}
