//! The HTTP server span of every request, named and attributed per OpenTelemetry's HTTP
//! semantic conventions, as `tracing-actix-web`'s root span ([`ServerSpan`], installed by
//! [`tracing_logger`]).
//!
//! The span (`HTTP request` in the logs, exported as `{method} {route}`, or `{method}` when no
//! route matched) carries `http.request.method` (`_OTHER` for a non-standard method),
//! `http.route` (the matched pattern, never the raw path), `url.path`, `otel.kind = "server"`
//! and, once answered, `http.response.status_code`; a 5xx sets `otel.status_code = "ERROR"`
//! and `error.type` (the status code), a 4xx leaves the status unset as the conventions say
//! for a server. Every log line of the request is inside it.
//!
//! An incoming W3C `traceparent` is the span's parent when spans are exported
//! ([`trace_context::set_parent`](crate::telemetry::trace_context::set_parent)). No event is
//! emitted here: an error is logged once, by [`ApiError`](super::ApiError).

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use tracing::field::Empty;
use tracing::Span;
use tracing_actix_web::{RootSpanBuilder, TracingLogger};

use crate::telemetry::trace_context::{set_parent, TraceParent, TRACEPARENT};

/// The root span builder: see the module docs.
pub struct ServerSpan;

/// The middleware that opens a [`ServerSpan`] around every request.
pub fn tracing_logger() -> TracingLogger<ServerSpan> {
    TracingLogger::new()
}

/// `http.request.method`: a standard method's name, or `_OTHER` (the conventions' value for a
/// method the server does not know; a client may send any token).
pub fn request_method(m: &actix_web::http::Method) -> &'static str {
    match super::metrics::method_label(m) {
        "other" => "_OTHER",
        known => known,
    }
}

impl RootSpanBuilder for ServerSpan {
    fn on_request_start(req: &ServiceRequest) -> Span {
        let method = request_method(req.method());
        let route = req.match_pattern();
        // The conventions' span name: "{method} {route}", "HTTP" for an unknown method.
        let name_method = if method == "_OTHER" { "HTTP" } else { method };
        let name = match &route {
            Some(r) => format!("{name_method} {r}"),
            None => name_method.to_owned(),
        };
        let span = tracing::info_span!(
            "HTTP request",
            otel.name = %name,
            otel.kind = "server",
            http.request.method = method,
            http.route = Empty,
            url.path = %req.path(),
            http.response.status_code = Empty,
            otel.status_code = Empty,
            error.r#type = Empty,
        );
        if let Some(r) = &route {
            span.record("http.route", r.as_str());
        }
        if let Some(tp) = req
            .headers()
            .get(TRACEPARENT)
            .and_then(|v| v.to_str().ok())
            .and_then(TraceParent::parse)
        {
            set_parent(&span, &tp);
        }
        span
    }

    fn on_request_end<B: MessageBody>(span: Span, outcome: &Result<ServiceResponse<B>, actix_web::Error>) {
        let status = match outcome {
            Ok(res) => res.status(),
            Err(e) => e.as_response_error().status_code(),
        };
        span.record("http.response.status_code", status.as_u16());
        if status.is_server_error() {
            span.record("otel.status_code", "ERROR");
            span.record("error.type", status.as_str());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::span_recorder::{Fields, SpanRecorder};
    use actix_web::{test, web, App, HttpResponse};

    async fn one_request(method: actix_web::http::Method, path: &str) -> Fields {
        let recorded = SpanRecorder::default();
        let _guard = recorded.install();
        let app = test::init_service(
            App::new()
                .wrap(tracing_logger())
                .route(
                    "/api/products/{id}",
                    web::get().to(|| async { HttpResponse::Ok().finish() }),
                )
                .route(
                    "/boom",
                    web::get().to(|| async { HttpResponse::ServiceUnavailable().finish() }),
                ),
        )
        .await;
        let req = test::TestRequest::default().method(method).uri(path).to_request();
        let _ = test::call_service(&app, req).await;
        let spans = recorded.named("HTTP request");
        assert_eq!(spans.len(), 1, "one server span per request: {spans:?}");
        spans.into_iter().next().unwrap_or_default()
    }

    #[actix_web::test]
    async fn the_server_span_carries_the_http_semantic_convention_attributes() {
        let s = one_request(actix_web::http::Method::GET, "/api/products/42").await;
        assert_eq!(s["otel.name"], "GET /api/products/{id}");
        assert_eq!(s["otel.kind"], "server");
        assert_eq!(s["http.request.method"], "GET");
        assert_eq!(s["http.route"], "/api/products/{id}");
        assert_eq!(s["url.path"], "/api/products/42");
        assert_eq!(s["http.response.status_code"], "200");
        assert!(
            !s.contains_key("otel.status_code"),
            "a success leaves the status unset: {s:?}"
        );
    }

    #[actix_web::test]
    async fn a_5xx_marks_the_server_span_as_an_error() {
        let s = one_request(actix_web::http::Method::GET, "/boom").await;
        assert_eq!(s["http.response.status_code"], "503");
        assert_eq!(s["otel.status_code"], "ERROR");
        assert_eq!(s["error.type"], "503");
    }

    #[actix_web::test]
    async fn an_unknown_path_has_no_route_and_an_unknown_method_is_other() {
        let m = actix_web::http::Method::from_bytes(b"BREW").unwrap_or(actix_web::http::Method::GET);
        let s = one_request(m, "/nowhere").await;
        assert_eq!(s["http.request.method"], "_OTHER");
        assert_eq!(s["otel.name"], "HTTP");
        assert!(!s.contains_key("http.route"), "{s:?}");
        assert_eq!(s["http.response.status_code"], "404");
        assert!(
            !s.contains_key("otel.status_code"),
            "a 4xx is not a server error: {s:?}"
        );
    }
}
