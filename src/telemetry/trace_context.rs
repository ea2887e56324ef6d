//! W3C Trace Context (`traceparent`): carried from an API write through the outbox, Kafka and
//! the consumers, so one request can be followed end to end (in logs as `trace_id`, and by
//! any tracing tool that reads the header).
//!
//! The header is read and written by OpenTelemetry's `TraceContextPropagator` (the one the
//! exporter speaks) and held as its `SpanContext`; new ids come from the SDK's
//! `RandomIdGenerator`. One check is ours, before the propagator: the value must have the
//! version-00 layout, because the propagator reads ids as hexadecimal numbers (a shorter id or a
//! leading `+` would pass) and also reads later versions. Anything refused (another layout,
//! upper-case hex, all-zero ids, flags version 00 does not define) starts a new trace. Only
//! the sampled flag is passed on.

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use opentelemetry::Context;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator};
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
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    // What the propagator's `extract` makes of the header: the current context with a remote parent.
    let cx = Context::current().with_remote_span_context(tp.context.clone());
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
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let cx = tracing::Span::current().context();
    let span = cx.span();
    let sc = span.span_context();
    sc.is_valid()
        .then(|| TraceParent::remote(sc.trace_id(), sc.span_id(), sc.trace_flags()))
}

/// The header's name, on HTTP requests and responses and on Kafka messages.
pub const TRACEPARENT: &str = "traceparent";

/// A `traceparent` value: version 00, trace id, parent (span) id, flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceParent {
    /// As a receiver of the header reads it: remote, no `tracestate`.
    context: SpanContext,
    /// `context` as the propagator writes it: `00-<32 hex trace id>-<16 hex parent id>-<flags>`.
    header: String,
}

/// Whether `value` has the version-00 layout, the part of the format the propagator does not
/// enforce (hex digits, case, zero ids and flags it checks itself).
fn is_version_00_layout(value: &str) -> bool {
    let fields: Vec<&str> = value.split('-').collect();
    matches!(fields[..], ["00", trace, parent, flags] if trace.len() == 32 && parent.len() == 16 && flags.len() == 2)
        && !value.contains('+')
}

impl TraceParent {
    fn remote(trace_id: TraceId, span_id: SpanId, flags: TraceFlags) -> Self {
        let context = SpanContext::new(trace_id, span_id, flags, true, TraceState::NONE);
        let mut carrier = HashMap::new();
        TraceContextPropagator::new()
            .inject_context(&Context::new().with_remote_span_context(context.clone()), &mut carrier);
        let header = carrier.remove(TRACEPARENT).unwrap_or_default();
        Self { context, header }
    }

    /// Parses a header value; `None` for anything the specification says to ignore (another
    /// version layout, upper-case hex, all-zero ids).
    pub fn parse(value: &str) -> Option<Self> {
        let value = value.trim();
        if !is_version_00_layout(value) {
            return None;
        }
        let carrier: HashMap<String, String> = [(TRACEPARENT.to_owned(), value.to_owned())].into();
        let cx = TraceContextPropagator::new().extract_with_context(&Context::new(), &carrier);
        let span = cx.span();
        let sc = span.span_context();
        sc.is_valid()
            .then(|| Self::remote(sc.trace_id(), sc.span_id(), sc.trace_flags()))
    }

    /// A new trace (sampled), for a request that came without one.
    pub fn start() -> Self {
        let ids = RandomIdGenerator::default();
        Self::remote(ids.new_trace_id(), ids.new_span_id(), TraceFlags::SAMPLED)
    }

    /// The same trace with a new span of ours as the parent of what comes next.
    pub fn child(&self) -> Self {
        let span_id = RandomIdGenerator::default().new_span_id();
        Self::remote(self.context.trace_id(), span_id, self.context.trace_flags())
    }

    /// The parent for what comes next: the current span when spans are exported (it was made
    /// a child of `incoming` by the request's or message's span), else a child of `incoming`
    /// (a header value), or a new trace when that is absent or invalid.
    pub fn continue_or_start(incoming: Option<&str>) -> Self {
        current().unwrap_or_else(|| incoming.and_then(Self::parse).map_or_else(Self::start, |p| p.child()))
    }

    /// The trace id (32 hex digits), as logged.
    pub fn trace_id(&self) -> &str {
        // `header` is `00-` and then the trace id.
        self.header.get(3..35).unwrap_or_default()
    }
}

impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.header)
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
