//! `POST /api/commands` hands a command to the write side and answers 202: the command is
//! recorded as pending and queued in the outbox in one transaction, and the relay publishes it
//! to `product.commands` (keyed by product id). A Kafka outage therefore never fails or hangs
//! the request; it only delays the command. `GET /api/commands/{id}` tells pending, applied
//! (with version) or rejected (with reason) to token holders: a command names a product that may
//! not be published.

use actix_web::{get, post, web, HttpResponse};
use utoipa::openapi::schema::{AllOfBuilder, OneOfBuilder};
use utoipa::openapi::{ObjectBuilder, RefOr, Schema, Type};
use uuid::Uuid;

use super::auth::{AnyRole, Needs, ProductWriter};
use super::contract::{fields, problems, reference};
use super::json_body::JsonBody;
use super::{ApiError, AppState};
use crate::bus::envelope::CommandCaller;
use crate::bus::envelope::{CommandEnvelope, COMMAND_TYPES};
use crate::domain::access;
use crate::domain::product::{self, MAX_QUANTITY};
use crate::store::{command_repo, pool};
use crate::telemetry::trace_context::{TraceParent, TRACEPARENT};

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

/// The body of `POST /api/commands`: the command envelope of `product.commands`, whose
/// `payload` depends on its `command_type`.
#[derive(Debug, serde::Deserialize)]
#[serde(transparent)]
pub struct CommandBody(pub CommandEnvelope);

/// The envelope's own fields (what every command has).
fn envelope_schema() -> ObjectBuilder {
    let uuid_or_null = || {
        ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::SchemaType::from_iter([
                Type::String,
                Type::Null,
            ]))
            .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
                utoipa::openapi::KnownFormat::Uuid,
            )))
    };
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .property(
            "command_id",
            uuid_or_null().description(Some("Idempotency key; generated when absent")),
        )
        .property(
            "product_id",
            ObjectBuilder::new()
                .schema_type(Type::String)
                .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
                    utoipa::openapi::KnownFormat::Uuid,
                )))
                .description(Some("Target product (also the Kafka key)")),
        )
        .property(
            "command_type",
            ObjectBuilder::new()
                .schema_type(Type::String)
                .enum_values(Some(COMMAND_TYPES.iter().copied())),
        )
        .property(
            "payload",
            ObjectBuilder::new().schema_type(utoipa::openapi::schema::SchemaType::AnyValue),
        )
        .property(
            "correlation_id",
            uuid_or_null().description(Some("Carried onto the events")),
        )
        .property(
            "expected_version",
            fields::int64(i64::MIN, i64::MAX)
                .schema_type(utoipa::openapi::schema::SchemaType::from_iter([
                    Type::Integer,
                    Type::Null,
                ]))
                .description(Some("Apply only at this product version")),
        )
        .required("product_id")
        .required("command_type")
        .additional_properties(Some(utoipa::openapi::schema::AdditionalProperties::FreeForm(false)))
}

/// Per command type, the payload it needs (the status changes take none).
fn payload_schemas() -> OneOfBuilder {
    let with = |command: &str, payload: RefOr<Schema>| -> Schema {
        ObjectBuilder::new()
            .property(
                "command_type",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .enum_values(Some([command])),
            )
            .property("payload", payload)
            .required("payload")
            .into()
    };
    let object = |name: &str, schema: RefOr<Schema>| -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::Object)
            .property(name, schema)
            .required(name)
            .additional_properties(Some(utoipa::openapi::schema::AdditionalProperties::FreeForm(false)))
            .into()
    };
    let no_payload: Schema = ObjectBuilder::new()
        .property(
            "command_type",
            ObjectBuilder::new().schema_type(Type::String).enum_values(Some([
                "PublishProduct",
                "UnpublishProduct",
                "ArchiveProduct",
            ])),
        )
        .property("payload", ObjectBuilder::new().schema_type(Type::Null))
        .into();
    OneOfBuilder::new()
        .item(with("CreateProduct", reference("CreateProduct")))
        .item(with("UpdateProductDetails", reference("UpdateProductDetails")))
        .item(with("ChangePrice", object("price", reference("Money"))))
        .item(with("AdjustStock", object("delta", fields::stock_delta().into())))
        .item(with(
            "SetStock",
            object("stock", fields::int64(0, MAX_QUANTITY).build().into()),
        ))
        .item(no_payload)
}

impl utoipa::PartialSchema for CommandBody {
    fn schema() -> RefOr<Schema> {
        AllOfBuilder::new()
            .item(envelope_schema())
            .item(payload_schemas())
            .description(Some(
                "A command for the write side (also the message on `product.commands`). `payload` depends on `command_type`; the status changes take none.",
            ))
            .into()
    }
}

impl utoipa::ToSchema for CommandBody {
    fn name() -> std::borrow::Cow<'static, str> {
        "CommandEnvelope".into()
    }

    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        use utoipa::PartialSchema;
        schemas.extend([
            ("CreateProduct".into(), super::bodies::CreateProductBody::schema()),
            (
                "UpdateProductDetails".into(),
                super::bodies::UpdateDetailsBody::schema(),
            ),
            ("Money".into(), super::bodies::MoneyBody::schema()),
        ]);
    }
}

/// Hand a command to the write side: recorded as pending and queued for `product.commands`
/// in one transaction; poll `Location` for its outcome.
#[utoipa::path(tag = "commands", operation_id = "submit_command", request_body = CommandBody,
    responses(
        (status = 202, description = "Accepted; poll Location", body = Accepted,
            headers(("Location" = String, description = "Where to poll"))),
        problems::Limits, problems::Writer, problems::Body),
    security(("bearer" = ["seller", "catalog-admin"])))]
#[post("/api/commands")]
pub async fn submit(
    auth: Needs<ProductWriter>,
    req: actix_web::HttpRequest,
    state: web::Data<AppState>,
    body: JsonBody<CommandBody>,
) -> Result<HttpResponse, ApiError> {
    let trace = TraceParent::continue_or_start(req.headers().get(TRACEPARENT).and_then(|v| v.to_str().ok()));
    let mut env = body.into_inner().0;
    let mut cmd = env.command().map_err(|e| {
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
    // What the command consumer will check on the row, checked now where it needs no row
    // (a seller's creation is theirs: the consumer stamps the owner the same way).
    let scope = auth.0.scope();
    scope.stamp_owner(&mut cmd);
    access::check_command(&scope, None, &cmd)?;
    // The command carries its caller, as authenticated here (whatever the body said): the
    // command consumer enforces what that caller may change.
    env.caller = Some(CommandCaller::from(&auth.0));
    let command_id = *env.command_id.get_or_insert_with(Uuid::now_v7);
    env.correlation_id.get_or_insert_with(Uuid::now_v7);
    let message = serde_json::to_value(&env).map_err(|e| ApiError::Internal(e.to_string()))?;
    let topic = state.names.commands_topic();
    let mut conn = pool::get(state.pool()).await?;
    command_repo::submit(
        &mut conn,
        &command_repo::Submission {
            command_id,
            product_id: env.product_id,
            command_type: &env.command_type,
            message,
            topic: &topic,
            notify: state.catalog.settings.outbox_notify,
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

/// A command's status: pending, applied (with the version) or rejected (with the reason).
#[utoipa::path(tag = "commands", operation_id = "command_status", params(("id" = Uuid, Path, description = "Command id")),
    responses((status = 200, description = "The command's status", body = command_repo::CommandRecord),
        problems::Limits, problems::Token, problems::ById),
    security(("bearer" = ["seller", "catalog-admin", "operator", "reader"])))]
#[get("/api/commands/{id}")]
pub async fn status(
    auth: Needs<AnyRole>,
    state: web::Data<AppState>,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let missing = || ApiError::NotFound(format!("command {id} not found"));
    let rec = {
        let mut conn = pool::get(state.pool()).await?;
        command_repo::find(&mut conn, *id).await?.ok_or_else(missing)?
    };
    // A seller sees the commands of their own products (and of products not created yet).
    let who = &auth.0;
    if !who.reads_everything() {
        if let Some(found) = state.catalog.read(rec.product_id).await? {
            if !who.owns(found.owner()) {
                return Err(missing());
            }
        }
    }
    Ok(HttpResponse::Ok().json(rec))
}

/// Registers the command endpoints.
pub fn routes(cfg: &mut utoipa_actix_web::service_config::ServiceConfig) {
    cfg.service(submit).service(status);
}
