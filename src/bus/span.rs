//! Spans around producing to Kafka, named and attributed per OpenTelemetry's messaging
//! semantic conventions; the consumers' spans (`command`, `project event`) carry the same
//! attributes with `messaging.operation.type = "process"` and `otel.kind = "consumer"`.
//!
//! A publish span (`publish` in the logs, exported as `publish {topic}`) has
//! `otel.kind = "producer"`, `messaging.system = "kafka"`, `messaging.operation.type =
//! "publish"`, `messaging.destination.name`, and once the broker acknowledged the record
//! `messaging.kafka.destination.partition` and `messaging.kafka.message.offset`
//! ([`record_delivery`]); a failed delivery sets `otel.status_code = "ERROR"` and `error.type`
//! ([`record_failure`]). It lasts from the send to the delivery report. Debug level: it is
//! exported (`OTEL_TRACES_FILTER`), not logged.

use tracing::field::Empty;
use tracing::Span;

use crate::telemetry::trace_context::{set_parent, TraceParent, TRACEPARENT};

/// `messaging.system` of every span here.
pub const MESSAGING_SYSTEM: &str = "kafka";

/// A publish span for one record to `topic`. Its parent is the span that `parent` names (the
/// `traceparent` the record carries, read only when the span is recorded), else the current
/// span.
pub fn publish(topic: &str, parent: impl FnOnce() -> Option<TraceParent>) -> Span {
    let span = tracing::debug_span!(
        "publish",
        otel.name = %format_args!("publish {topic}"),
        otel.kind = "producer",
        messaging.system = MESSAGING_SYSTEM,
        messaging.operation.type = "publish",
        messaging.destination.name = topic,
        messaging.kafka.destination.partition = Empty,
        messaging.kafka.message.offset = Empty,
        otel.status_code = Empty,
        error.r#type = Empty,
    );
    if !span.is_disabled() {
        if let Some(tp) = parent() {
            set_parent(&span, &tp);
        }
    }
    span
}

/// Records where the broker stored the record.
pub fn record_delivery(span: &Span, partition: i32, offset: i64) {
    span.record("messaging.kafka.destination.partition", partition);
    span.record("messaging.kafka.message.offset", offset);
}

/// Marks the publish as failed; `error_type` is a short class (librdkafka's error code).
pub fn record_failure(span: &Span, error_type: &str) {
    span.record("otel.status_code", "ERROR");
    span.record("error.type", error_type);
}

/// Records the outcome of a send, `(partition, offset)` or the error, on its publish span;
/// returns the outcome without the position.
pub fn settle(
    span: &Span,
    delivery: Result<(i32, i64), rdkafka::error::KafkaError>,
) -> Result<(), rdkafka::error::KafkaError> {
    match delivery {
        Ok((partition, offset)) => {
            record_delivery(span, partition, offset);
            Ok(())
        }
        Err(e) => {
            record_failure(span, &error_type(&e));
            Err(e)
        }
    }
}

/// The `traceparent` in an outbox row's headers (a JSON object of strings).
pub fn traceparent_in_json(headers: &str) -> Option<TraceParent> {
    let map: serde_json::Map<String, serde_json::Value> = serde_json::from_str(headers).ok()?;
    map.get(TRACEPARENT)?.as_str().and_then(TraceParent::parse)
}

/// The class of a produce error for `error.type`: librdkafka's error code when it has one.
pub fn error_type(e: &rdkafka::error::KafkaError) -> String {
    e.rdkafka_error_code()
        .map_or_else(|| "kafka_error".to_owned(), |c| format!("{c:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::span_recorder::SpanRecorder;

    #[test]
    fn a_publish_span_carries_the_messaging_semantic_convention_attributes() {
        let recorded = SpanRecorder::default();
        let _guard = recorded.install();
        let span = publish("product.events", || None);
        record_delivery(&span, 3, 42);
        drop(span);
        let failed = publish("dlq.product.events", || None);
        record_failure(&failed, "MessageSizeTooLarge");
        drop(failed);
        let spans = recorded.named("publish");
        assert_eq!(spans.len(), 2);
        let s = &spans[0];
        assert_eq!(s["otel.name"], "publish product.events");
        assert_eq!(s["otel.kind"], "producer");
        assert_eq!(s["messaging.system"], "kafka");
        assert_eq!(s["messaging.operation.type"], "publish");
        assert_eq!(s["messaging.destination.name"], "product.events");
        assert_eq!(s["messaging.kafka.destination.partition"], "3");
        assert_eq!(s["messaging.kafka.message.offset"], "42");
        assert!(!s.contains_key("otel.status_code"));
        let f = &spans[1];
        assert_eq!(f["otel.status_code"], "ERROR");
        assert_eq!(f["error.type"], "MessageSizeTooLarge");
    }

    #[test]
    fn the_traceparent_of_an_outbox_row_is_read_from_its_headers() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let headers = format!(r#"{{"event_type":"ProductCreated","traceparent":"{tp}"}}"#);
        assert_eq!(
            traceparent_in_json(&headers).map(|p| p.to_string()).as_deref(),
            Some(tp)
        );
        assert!(traceparent_in_json(r#"{"event_type":"ProductCreated"}"#).is_none());
        assert!(traceparent_in_json("not json").is_none());
    }
}
