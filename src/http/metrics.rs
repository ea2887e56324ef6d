//! `/metrics` and the middleware that counts requests and their latency by route pattern.
//!
//! Every label has a bounded set of values, whatever clients send: the route is the matched
//! pattern (`/api/products/{id}`, never the raw path) or `unmatched`, and the method is one of
//! the standard methods or `other` (a client may send any token as a method).
//!
//! `serve` answers `/metrics` only on its own listener (`METRICS_BIND`, loopback by default),
//! never on the public API port.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{web, App, HttpResponse, HttpServer};
use std::net::TcpListener;
use std::time::Instant;

use crate::telemetry::metrics::{render, HTTP_DURATION, HTTP_REQUESTS};

/// Prometheus text exposition (on `METRICS_BIND`, never the API port).
#[utoipa::path(get, path = "/metrics", tag = "health", operation_id = "metrics", security(),
    responses((status = 200, description = "Metrics", content_type = "text/plain", body = String)))]
pub async fn metrics() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(render())
}

/// Records count and latency of every request (inside the request's server span, see
/// [`super::server_span`]).
pub async fn record(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let start = Instant::now();
    let method = method_label(req.method());
    let route = req.match_pattern().unwrap_or_else(|| "unmatched".to_owned());
    let res = next.call(req).await?;
    let status = res.status().as_u16().to_string();
    let labels = [method, route.as_str(), status.as_str()];
    HTTP_REQUESTS.with_label_values(&labels).inc();
    HTTP_DURATION
        .with_label_values(&labels)
        .observe(start.elapsed().as_secs_f64());
    Ok(res)
}

/// The metric label of a request method: a standard method's name or `other`.
pub fn method_label(m: &actix_web::http::Method) -> &'static str {
    use actix_web::http::Method as M;
    match *m {
        M::GET => "GET",
        M::HEAD => "HEAD",
        M::POST => "POST",
        M::PUT => "PUT",
        M::PATCH => "PATCH",
        M::DELETE => "DELETE",
        M::OPTIONS => "OPTIONS",
        M::TRACE => "TRACE",
        M::CONNECT => "CONNECT",
        _ => "other",
    }
}

/// Serves only `/metrics` on `listener` (every role's `--metrics-bind`).
pub fn serve_metrics(listener: TcpListener) -> std::io::Result<actix_web::dev::Server> {
    // Another method on /metrics is a 405 with `Allow` (a TRACE or POST is not "not found").
    let not_allowed = || {
        HttpResponse::MethodNotAllowed()
            .insert_header(("Allow", "GET"))
            .finish()
    };
    Ok(HttpServer::new(move || {
        App::new().service(
            web::resource("/metrics")
                .route(web::get().to(metrics))
                .default_service(web::to(move || async move { not_allowed() })),
        )
    })
    .workers(1)
    .disable_signals()
    .shutdown_timeout(1)
    .listen(listener)?
    .run())
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::Method;

    #[test]
    fn custom_methods_share_one_label() {
        assert_eq!(method_label(&Method::GET), "GET");
        for m in ["FOO", "BAR1", "X-ANYTHING"] {
            let m = Method::from_bytes(m.as_bytes()).unwrap_or(Method::GET);
            assert_eq!(method_label(&m), "other");
        }
    }
}
