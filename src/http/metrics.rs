//! `/metrics` and the middleware that counts requests and their latency by route pattern
//! (never the raw path, which would explode label cardinality).

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{web, App, HttpResponse, HttpServer};
use std::net::TcpListener;
use std::time::Instant;

use crate::telemetry::metrics::{render, HTTP_DURATION, HTTP_REQUESTS};

/// Prometheus text exposition of the default registry.
pub async fn metrics() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(render())
}

/// Records count and latency of every request.
pub async fn record(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let start = Instant::now();
    let method = req.method().to_string();
    let route = req.match_pattern().unwrap_or_else(|| "unmatched".to_owned());
    let res = next.call(req).await?;
    let status = res.status().as_u16().to_string();
    let labels = [method.as_str(), route.as_str(), status.as_str()];
    HTTP_REQUESTS.with_label_values(&labels).inc();
    HTTP_DURATION
        .with_label_values(&labels)
        .observe(start.elapsed().as_secs_f64());
    Ok(res)
}

/// Serves only `/metrics` on `listener` (for the worker roles' `--metrics-addr`).
pub fn serve_metrics(listener: TcpListener) -> std::io::Result<actix_web::dev::Server> {
    Ok(HttpServer::new(|| App::new().route("/metrics", web::get().to(metrics)))
        .workers(1)
        .disable_signals()
        .shutdown_timeout(1)
        .listen(listener)?
        .run())
}
