//! Health: `/health/` answers the operations guide's shape with OpenSearch added. Every check
//! reuses the process's pooled clients, is bounded by the configured timeout (1 s) and runs
//! concurrently, so health never hangs. 200 when all are ok, 503 and `degraded` otherwise.

use actix_web::{get, web, HttpResponse};
use serde::Serialize;
use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use super::AppState;
use crate::bus::admin;

/// The `/health/` body.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct HealthReport {
    /// `ok` or `degraded`.
    pub status: &'static str,
    /// `ok` or a short error per dependency.
    pub checks: BTreeMap<&'static str, String>,
}

async fn bounded<F, E>(timeout: Duration, f: F) -> String
where
    F: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    match tokio::time::timeout(timeout, f).await {
        Ok(Ok(())) => "ok".to_owned(),
        Ok(Err(e)) => short(&e.to_string()),
        Err(_) => format!("timeout after {}ms", timeout.as_millis()),
    }
}

fn short(s: &str) -> String {
    let s: String = s.chars().take(200).collect();
    format!("error: {s}")
}

/// Runs all checks concurrently.
pub async fn check_all(state: &AppState) -> HealthReport {
    let t = state.limits.health_timeout;
    let db = bounded(t, async {
        let mut conn = crate::store::pool::get(state.pool()).await?;
        crate::store::pool::ping(&mut conn).await
    });
    let redis = bounded(t, state.cache().ping(t));
    let kafka = bounded(t, async { admin::probe(&state.kafka.producer, t).await.map(|_| ()) });
    let search = bounded(t, async {
        let s = state.search.health(t).await?;
        if s == "red" {
            return Err(crate::search::SearchError::Decode("cluster status red".into()));
        }
        Ok(())
    });
    let (db, redis, kafka, search) = tokio::join!(db, redis, kafka, search);
    let checks = BTreeMap::from([
        ("database", db),
        ("redis", redis),
        ("kafka", kafka),
        ("opensearch", search),
    ]);
    let ok = checks.values().all(|v| v == "ok");
    HealthReport {
        status: if ok { "ok" } else { "degraded" },
        checks,
    }
}

/// 200 or 503 with the report, never cached.
fn answer(report: &HealthReport, ok: bool) -> HttpResponse {
    let mut resp = if ok {
        HttpResponse::Ok()
    } else {
        HttpResponse::ServiceUnavailable()
    };
    resp.insert_header(("Cache-Control", "no-store")).json(report)
}

/// Health: database, Redis, Kafka and OpenSearch, each bounded by 1 s (the operations
/// guide's shape, with OpenSearch added). `/health` answers the same.
#[utoipa::path(tag = "health", operation_id = "health", security(),
    responses((status = 200, description = "Every dependency answers", body = HealthReport),
        (status = 503, description = "A dependency does not answer; `checks` says which", body = HealthReport)))]
#[get("/health/")]
pub async fn health(state: web::Data<AppState>) -> HttpResponse {
    report(&state).await
}

/// `/health`: the same as `/health/` (undocumented: the guide's path has the slash).
pub async fn health_unslashed(state: web::Data<AppState>) -> HttpResponse {
    report(&state).await
}

async fn report(state: &AppState) -> HttpResponse {
    let report = check_all(state).await;
    answer(&report, report.status == "ok")
}

/// Live: the process is up.
#[utoipa::path(tag = "health", operation_id = "live", security(),
    responses((status = 200, description = "Up", body = Live)))]
#[get("/health/live")]
pub async fn live() -> HttpResponse {
    HttpResponse::Ok().json(Live { status: "ok" })
}

/// `/health/live`'s body.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Live {
    /// Always `ok`.
    #[schema(value_type = String, pattern = "^ok$")]
    pub status: &'static str,
}

/// Ready: the API can do its job, which needs PostgreSQL only: without Redis it
/// reads Postgres, without Kafka commands wait in the outbox, without OpenSearch search
/// answers 503 by itself (all measured by the chaos suite). So an outage of a shared cache,
/// broker or search cluster does not take every API instance out of its load balancer at
/// once. The body still reports every check.
#[utoipa::path(tag = "health", operation_id = "ready", security(),
    responses((status = 200, description = "PostgreSQL answers (other checks may fail: the API rides them out)", body = HealthReport),
        (status = 503, description = "PostgreSQL does not answer", body = HealthReport)))]
#[get("/health/ready")]
pub async fn ready(state: web::Data<AppState>) -> HttpResponse {
    let mut report = check_all(&state).await;
    let ready = report.checks.get("database").is_some_and(|v| v == "ok");
    report.status = if ready { "ok" } else { "unavailable" };
    answer(&report, ready)
}

/// Registers health, liveness and readiness (`/health` answers like `/health/`, undocumented).
pub fn routes(cfg: &mut utoipa_actix_web::service_config::ServiceConfig) {
    cfg.service(health)
        .route("/health", web::get().to(health_unslashed))
        .service(live)
        .service(ready);
}
