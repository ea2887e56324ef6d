//! `POST /api/commands` hands a command to the write side through `product.commands`
//! (keyed by product id) and answers 202; `GET /api/commands/{id}` tells pending, applied
//! (with version) or rejected (with reason).

use actix_web::{web, HttpResponse};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::FutureRecord;
use std::time::Duration;
use uuid::Uuid;

use super::auth::WriteAccess;
use super::{ApiError, AppState};
use crate::bus::envelope::CommandEnvelope;
use crate::domain::product::{self, ProductCommand};
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

/// Checks what can be checked without the product's state.
fn prevalidate(cmd: &ProductCommand) -> Result<(), ApiError> {
    match cmd {
        ProductCommand::CreateProduct(_) => product::decide(None, cmd).map(|_| ()).map_err(Into::into),
        ProductCommand::ChangePrice { price } => product::Money::price(price.amount_minor, &price.currency)
            .map(|_| ())
            .map_err(Into::into),
        ProductCommand::SetStock { stock } if *stock < 0 => Err(ApiError::field("stock", "must be >= 0")),
        ProductCommand::AdjustStock { delta: 0 } => Err(ApiError::field("delta", "must not be 0")),
        _ => Ok(()),
    }
}

/// `POST /api/commands`.
#[utoipa::path(post, path = "/api/commands", request_body = CommandEnvelope,
    responses((status = 202, body = Accepted), (status = 422, body = super::error::Problem)), security(("bearer" = [])))]
pub async fn submit(
    _auth: WriteAccess,
    state: web::Data<AppState>,
    body: web::Json<CommandEnvelope>,
) -> Result<HttpResponse, ApiError> {
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
    prevalidate(&cmd)?;
    let command_id = *env.command_id.get_or_insert_with(Uuid::now_v7);
    env.correlation_id.get_or_insert_with(Uuid::now_v7);
    let value = serde_json::to_vec(&env).map_err(|e| ApiError::Internal(e.to_string()))?;
    let key = env.product_id.to_string();
    let cid = command_id.to_string();
    let topic = state.names.commands_topic();
    let headers = OwnedHeaders::new()
        .insert(Header {
            key: "command_id",
            value: Some(cid.as_bytes()),
        })
        .insert(Header {
            key: "command_type",
            value: Some(env.command_type.as_bytes()),
        });
    state
        .producer
        .send(
            FutureRecord::to(&topic).key(&key).payload(&value).headers(headers),
            Duration::from_secs(5),
        )
        .await
        .map_err(|(e, _)| ApiError::Unavailable(format!("could not hand the command to Kafka: {e}")))?;
    let mut conn = pool::get(&state.pool).await?;
    command_repo::insert_pending(&mut conn, command_id, env.product_id, &env.command_type).await?;
    let location = format!("/api/commands/{command_id}");
    Ok(HttpResponse::Accepted()
        .insert_header(("Location", location.clone()))
        .json(Accepted {
            command_id,
            status: "pending",
            location,
        }))
}

/// `GET /api/commands/{id}`.
#[utoipa::path(get, path = "/api/commands/{id}", params(("id" = Uuid, Path)),
    responses((status = 200, body = command_repo::CommandRecord), (status = 404, body = super::error::Problem)))]
pub async fn status(state: web::Data<AppState>, id: web::Path<Uuid>) -> Result<HttpResponse, ApiError> {
    let mut conn = pool::get(&state.pool).await?;
    let rec = command_repo::find(&mut conn, *id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("command {id} not found")))?;
    Ok(HttpResponse::Ok().json(rec))
}
