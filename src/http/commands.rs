//! `POST /api/commands` hands a command to the write side and answers 202: the command is
//! recorded as pending and queued in the outbox in one transaction, and the relay publishes it
//! to `product.commands` (keyed by product id). A Kafka outage therefore never fails or hangs
//! the request; it only delays the command. `GET /api/commands/{id}` tells pending, applied
//! (with version) or rejected (with reason) to token holders: a command names a product that may
//! not be published.

use crate::telemetry::trace_context::{TraceParent, TRACEPARENT};
use actix_web::{web, HttpResponse};
use uuid::Uuid;

use super::auth::{TokenAccess, WriteAccess};
use super::json_body::JsonBody;
use super::{ApiError, AppState};
use crate::bus::envelope::CommandEnvelope;
use crate::domain::product;
use crate::store::{command_repo, pool};

/// Accepted-command answer.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Accepted {
    /// Command id to poll.
    pub command_id: Uuid,
    /// Always `pending` here.
    pub status: &'static str,
    /// Where to poll.
    pub location: String,
}

/// `POST /api/commands`.
#[utoipa::path(post, path = "/api/commands", request_body = CommandEnvelope,
    responses((status = 202, body = Accepted), (status = 422, body = super::error::Problem)), security(("bearer" = [])))]
pub async fn submit(
    _auth: WriteAccess,
    req: actix_web::HttpRequest,
    state: web::Data<AppState>,
    body: JsonBody<CommandEnvelope>,
) -> Result<HttpResponse, ApiError> {
    let trace = TraceParent::continue_or_start(req.headers().get(TRACEPARENT).and_then(|v| v.to_str().ok()));
    let mut env = body.into_inner();
    let cmd = env.command().map_err(|e| {
        ApiError::field(
            if e.class == "unknown_command_type" {
                "command_type"
            } else {
                "payload"
            },
            e.message,
        )
    })?;
    // Refused whatever the product's state: answer now rather than queue a doomed command.
    product::validate(&cmd)?;
    let command_id = *env.command_id.get_or_insert_with(Uuid::now_v7);
    env.correlation_id.get_or_insert_with(Uuid::now_v7);
    let message = serde_json::to_value(&env).map_err(|e| ApiError::Internal(e.to_string()))?;
    let topic = state.names.commands_topic();
    let mut conn = pool::get(&state.pool).await?;
    command_repo::submit(
        &mut conn,
        &command_repo::Submission {
            command_id,
            product_id: env.product_id,
            command_type: &env.command_type,
            message,
            topic: &topic,
            notify: state.outbox_notify,
            traceparent: Some(trace.to_string()),
        },
    )
    .await?;
    let location = format!("/api/commands/{command_id}");
    Ok(HttpResponse::Accepted()
        .insert_header(("Location", location.clone()))
        .insert_header((TRACEPARENT, trace.to_string()))
        .json(Accepted {
            command_id,
            status: "pending",
            location,
        }))
}

/// `GET /api/commands/{id}`.
#[utoipa::path(get, path = "/api/commands/{id}", params(("id" = Uuid, Path)),
    responses((status = 200, body = command_repo::CommandRecord), (status = 404, body = super::error::Problem)))]
pub async fn status(
    _auth: TokenAccess,
    state: web::Data<AppState>,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let mut conn = pool::get(&state.pool).await?;
    let rec = command_repo::find(&mut conn, *id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("command {id} not found")))?;
    Ok(HttpResponse::Ok().json(rec))
}
