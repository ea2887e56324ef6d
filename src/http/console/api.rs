//! The console's JSON endpoints. Each one calls what the CLI calls: `ops::status` (health,
//! backlog, dead-letter depth), `ops::lag_history` over `ops::groups::describe` (lag per
//! partition, verdict, chart), `ops::dlq` (`dlq list`, `dlq redrive`), `ops::outbox`
//! (`outbox retry`) and the audit table (`replay`'s records). Reads and dry runs need the
//! operator or reader role; executing needs the operator role. Kafka's blocking calls run off the runtime.

use actix_web::{get, post, web, HttpResponse};
use rdkafka::message::{Message, OwnedMessage};
use serde::{Deserialize, Serialize};
use utoipa::openapi::schema::{AdditionalProperties, AllOfBuilder, ArrayBuilder, OneOfBuilder};
use utoipa::openapi::{KnownFormat, ObjectBuilder, RefOr, Schema, SchemaFormat, Type};
use utoipa::PartialSchema;
use uuid::Uuid;

use super::super::auth::{Needs, OpsReader, Principal, Role};
use super::super::contract::problems;
use super::super::json_body::JsonBody;
use super::super::{ApiError, AppState};
use crate::ops::dlq::{self, DlqRecord, Redrive};
use crate::ops::status::{self, Check, DlqDepth, OutboxStatus, StatusDeps};
use crate::ops::{lag_history, outbox, OpsError};
use crate::store::audit_repo::{self, RecordedMove};
use crate::store::outbox_repo::{self, OutboxRowInfo};
use crate::store::pool;
use crate::store::reconcile_run_repo::ReconcileRun;

/// Replays listed on the console.
pub const REPLAYS_SHOWN: i64 = 20;
/// Dead letters listed (the newest).
pub const DEAD_LETTERS_SHOWN: usize = 100;
/// Parked rows listed (the oldest).
pub const PARKED_SHOWN: i64 = 100;
/// Characters of a dead letter's payload shown.
pub const PAYLOAD_SHOWN_CHARS: usize = 4096;

impl From<OpsError> for ApiError {
    fn from(e: OpsError) -> Self {
        match e {
            OpsError::Refused(m) => Self::NotFound(m),
            OpsError::Kafka(e) => Self::DependencyDown {
                dependency: "kafka",
                cause: e.to_string(),
            },
            OpsError::Store(e) => e.into(),
            OpsError::Other(m) => Self::Internal(m),
        }
    }
}

fn status_deps(state: &AppState) -> StatusDeps {
    let n = &state.names;
    StatusDeps {
        pool: state.pool().clone(),
        cache: state.cache().clone(),
        producer: state.kafka.producer.clone(),
        search: state.search.clone(),
        kafka: state.kafka.connection.clone(),
        groups: groups(state),
        dlq_topics: vec![n.events_dlq_topic(), n.commands_dlq_topic()],
    }
}

/// The (group, topic) pairs the console and `aliexpress status` report.
fn groups(state: &AppState) -> Vec<(String, String)> {
    let n = &state.names;
    vec![
        (n.projection_group(), n.events_topic()),
        (n.command_group(), n.commands_topic()),
    ]
}

/// `GET /console/api/overview`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Overview {
    /// Each dependency: answered in time, latency, short error.
    #[schema(value_type = Vec<Object>)]
    pub health: Vec<Check>,
    /// Pending and parked rows, oldest pending age, relays and their slices.
    #[schema(value_type = Option<Object>)]
    pub outbox: Option<OutboxStatus>,
    /// Records per dead-letter topic.
    #[schema(value_type = Vec<Object>)]
    pub dead_letters: Vec<DlqDepth>,
    /// The last partition moves of `replay --execute`, newest first.
    #[schema(value_type = Vec<Object>)]
    pub replays: Vec<RecordedMove>,
    /// The projection's last scheduled drift check: products compared, drift by store/kind.
    #[schema(value_type = Option<Object>)]
    pub last_reconcile: Option<ReconcileRun>,
}

/// Health of each dependency, outbox backlog, dead-letter depth, last replays.
#[utoipa::path(tag = "console", operation_id = "console_overview",
    responses((status = 200, description = "The overview", body = Overview), problems::Limits, problems::Token),
    security(("bearer" = ["operator", "reader"])))]
#[get("/console/api/overview")]
pub async fn overview(_auth: Needs<OpsReader>, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let d = status_deps(&state);
    let replays = async {
        let mut conn = pool::get(state.pool()).await?;
        audit_repo::recent_offset_moves(&mut conn, REPLAYS_SHOWN).await
    };
    let (health, (outbox, _), depths, replays, last_reconcile) = tokio::join!(
        status::health(&d),
        status::backlog(&d),
        status::dead_letters(&d),
        replays,
        status::last_reconcile(state.pool())
    );
    Ok(HttpResponse::Ok().json(Overview {
        health,
        outbox,
        dead_letters: depths,
        // The health panel already says when Postgres is down.
        replays: replays.unwrap_or_default(),
        last_reconcile,
    }))
}

/// The answer of `GET /console/api/lag` (`ops::lag_history::LagView`).
#[derive(utoipa::ToSchema)]
#[expect(dead_code, reason = "the schema of `LagView`'s JSON; the handler answers a LagView")]
pub struct LagAnswer {
    /// When the lag was sampled.
    sampled_at: chrono::DateTime<chrono::Utc>,
    /// Each group: partitions, lag, verdict.
    groups: Vec<serde_json::Value>,
    /// The last minutes as chart columns.
    #[schema(value_type = Object)]
    history: serde_json::Value,
}

/// Each consumer group's lag per partition with its verdict, and the last minutes as chart
/// columns.
#[utoipa::path(tag = "console", operation_id = "console_lag",
    responses((status = 200, description = "Lag per group and partition", body = LagAnswer), problems::Limits, problems::Token),
    security(("bearer" = ["operator", "reader"])))]
#[get("/console/api/lag")]
pub async fn lag(_auth: Needs<OpsReader>, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let view = lag_history::refresh(&state.lag_history, &state.kafka.connection, &groups(&state)).await;
    Ok(HttpResponse::Ok().json(view))
}

/// Which dead-letter topic: never a topic name from the caller.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DlqTopic {
    /// `dlq.product.events` (the projection's).
    #[default]
    Events,
    /// `dlq.product.commands` (the command consumer's).
    Commands,
}

impl DlqTopic {
    fn name(self, state: &AppState) -> String {
        match self {
            Self::Events => state.names.events_dlq_topic(),
            Self::Commands => state.names.commands_dlq_topic(),
        }
    }
}

/// Query of the dead-letter list.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DlqQuery {
    /// `events` (default) or `commands`.
    #[serde(default)]
    #[param(inline)]
    pub topic: DlqTopic,
}

/// A dead letter with its payload and whether it was redriven.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DeadLetter {
    /// Position, reason and origin.
    #[serde(flatten)]
    #[schema(value_type = Object)]
    pub record: DlqRecord,
    /// Republished already (a redrive skips it).
    pub redriven: bool,
    /// The payload as text (lossy UTF-8), cut at [`PAYLOAD_SHOWN_CHARS`].
    pub payload: String,
    /// For an event: how this binary reads it (any supported schema version, upcast to the
    /// current one): `reads as version N`, or why it cannot (the reason it would be
    /// dead-lettered again if redriven now).
    pub reads: Option<String>,
}

/// `GET /console/api/dead-letters` answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DeadLetters {
    /// The topic read.
    pub topic: String,
    /// Records in it.
    pub total: usize,
    /// The newest [`DEAD_LETTERS_SHOWN`], oldest first.
    pub records: Vec<DeadLetter>,
    /// Every record grouped by cause (`aliexpress dlq triage`), largest group first.
    #[schema(value_type = Vec<Object>)]
    pub triage: Vec<crate::ops::triage::Group>,
}

async fn read_dlq(state: &AppState, topic: &str) -> Result<Vec<OwnedMessage>, ApiError> {
    let (k, t) = (state.kafka.connection.clone(), topic.to_owned());
    tokio::task::spawn_blocking(move || dlq::read_all(&k, &t))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .map_err(ApiError::from)
}

/// The newest dead letters of a DLQ topic with reasons and payloads (`aliexpress dlq
/// list`/`show`).
#[utoipa::path(tag = "console", operation_id = "console_dead_letters", params(DlqQuery),
    responses((status = 200, description = "Dead letters", body = DeadLetters),
        problems::Limits, problems::Token, problems::Invalid, problems::NoTopic),
    security(("bearer" = ["operator", "reader"])))]
#[get("/console/api/dead-letters")]
pub async fn dead_letters(
    _auth: Needs<OpsReader>,
    state: web::Data<AppState>,
    q: web::Query<DlqQuery>,
) -> Result<HttpResponse, ApiError> {
    let topic = q.topic.name(&state);
    let msgs = read_dlq(&state, &topic).await?;
    let mut conn = pool::get(state.pool()).await?;
    let done = audit_repo::redriven(&mut conn, &topic).await?;
    drop(conn);
    let skip = msgs.len().saturating_sub(DEAD_LETTERS_SHOWN);
    let records = msgs
        .iter()
        .skip(skip)
        .map(|m| DeadLetter {
            record: DlqRecord::from_message(m),
            redriven: done.contains(&(m.partition(), m.offset())),
            payload: m
                .payload()
                .map(|p| String::from_utf8_lossy(p).chars().take(PAYLOAD_SHOWN_CHARS).collect())
                .unwrap_or_default(),
            reads: (q.topic == DlqTopic::Events).then(|| match crate::bus::envelope::decode_event(m.payload()) {
                Ok(e) => format!(
                    "reads as version {} ({} v{})",
                    e.schema_version, e.event_type, e.aggregate_version
                ),
                Err(e) => format!("{}: {}", e.class, e.message),
            }),
        })
        .collect();
    Ok(HttpResponse::Ok().json(DeadLetters {
        topic,
        total: msgs.len(),
        records,
        triage: crate::ops::triage::triage(&msgs),
    }))
}

/// Body of `POST /console/api/dead-letters/redrive`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedriveRequest {
    /// `events` (default) or `commands`.
    #[serde(default)]
    pub topic: DlqTopic,
    /// `PARTITION:OFFSET` of the records to redrive.
    #[serde(default)]
    pub offsets: Vec<String>,
    /// Every record not redriven yet (instead of `offsets`).
    #[serde(default)]
    pub all: bool,
    /// Republish (a write token); otherwise a dry run.
    #[serde(default)]
    pub execute: bool,
}

/// One record of a redrive.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RedriveItem {
    /// DLQ partition.
    pub partition: i32,
    /// DLQ offset.
    pub offset: i64,
    /// Where it goes (None: no original topic header, skipped).
    pub to: Option<String>,
    /// Its key.
    pub key: Option<String>,
    /// Its error class.
    pub error_class: Option<String>,
}

/// What a redrive did (or would do).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RedriveOutcome {
    /// Whether records were republished.
    pub executed: bool,
    /// Records republished (dry run: that would be).
    pub count: usize,
    /// Each record selected and not redriven before.
    pub records: Vec<RedriveItem>,
}

/// Executing needs the operator role; a dry run any console reader.
fn require_for(caller: &Principal, execute: bool) -> Result<(), ApiError> {
    if execute && !caller.roles.has(Role::Operator) {
        return Err(ApiError::Forbidden("executing needs the operator role".into()));
    }
    Ok(())
}

fn parse_at(s: &str) -> Result<(i32, i64), ApiError> {
    let bad = || ApiError::field("offsets", format!("{s:?} is not PARTITION:OFFSET"));
    let (p, o) = s.split_once(':').ok_or_else(bad)?;
    Ok((p.parse().map_err(|_| bad())?, o.parse().map_err(|_| bad())?))
}

/// Redrive dead letters to their original topic (`aliexpress dlq redrive`): a dry run unless
/// `execute`; each record republished once, ever.
#[utoipa::path(tag = "console", operation_id = "console_redrive", request_body = RedriveRequest,
    responses((status = 200, description = "The dry run, or what was done", body = RedriveOutcome),
        problems::Limits, problems::DryRunOnly, problems::Body, problems::NoTopic),
    security(("bearer" = ["operator", "reader"])))]
#[post("/console/api/dead-letters/redrive")]
pub async fn redrive(
    auth: Needs<OpsReader>,
    state: web::Data<AppState>,
    body: JsonBody<RedriveRequest>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    require_for(&auth.0, body.execute)?;
    let selection = match (body.all, body.offsets.is_empty()) {
        (true, true) => dlq::Selection::All,
        (false, false) => dlq::Selection::Only(body.offsets.iter().map(|s| parse_at(s)).collect::<Result<_, _>>()?),
        _ => return Err(ApiError::field("offsets", "give either offsets or all: true")),
    };
    let topic = body.topic.name(&state);
    let msgs = read_dlq(&state, &topic).await?;
    let mut conn = pool::get(state.pool()).await?;
    let producer = body.execute.then_some(&state.kafka.producer);
    let done = dlq::redrive(&mut conn, producer, &topic, &msgs, &selection, &auth.0.subject).await?;
    let records: Vec<RedriveItem> = done
        .into_iter()
        .map(|r| match r {
            Redrive::To {
                partition,
                offset,
                topic,
                key,
                error_class,
                ..
            } => RedriveItem {
                partition,
                offset,
                to: Some(topic),
                key: Some(key),
                error_class: Some(error_class),
            },
            Redrive::NoOriginalTopic { partition, offset } => RedriveItem {
                partition,
                offset,
                to: None,
                key: None,
                error_class: None,
            },
        })
        .collect();
    Ok(HttpResponse::Ok().json(RedriveOutcome {
        executed: body.execute,
        count: records.iter().filter(|r| r.to.is_some()).count(),
        records,
    }))
}

/// `GET /console/api/outbox/parked` answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Parked {
    /// Parked rows in all.
    pub total: i64,
    /// The oldest [`PARKED_SHOWN`], with attempts and last error.
    #[schema(value_type = Vec<Object>)]
    pub rows: Vec<OutboxRowInfo>,
}

/// Parked outbox rows with attempts and last error (`aliexpress outbox list --parked`).
#[utoipa::path(tag = "console", operation_id = "console_parked",
    responses((status = 200, description = "Parked rows", body = Parked), problems::Limits, problems::Token),
    security(("bearer" = ["operator", "reader"])))]
#[get("/console/api/outbox/parked")]
pub async fn parked(_auth: Needs<OpsReader>, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let mut conn = pool::get(state.pool()).await?;
    let total = outbox_repo::stats(&mut conn).await?.parked;
    let rows = outbox_repo::list(&mut conn, true, PARKED_SHOWN).await?;
    Ok(HttpResponse::Ok().json(Parked { total, rows }))
}

/// One product's way through the pipeline and its verdict (`aliexpress trace --json`: hops,
/// verdict, facts). A second longer while the projection has not passed the product's record
/// (its rate is sampled for the ETA).
#[utoipa::path(tag = "console", operation_id = "console_trace",
    params(("id" = Uuid, Path, description = "Product id")),
    responses((status = 200, description = "Hops, verdict (`ok`, `waiting`, `stuck`, `dead-lettered`, `missing`) and facts", body = Object),
        problems::Limits, problems::Token, problems::ById),
    security(("bearer" = ["operator", "reader"])))]
#[get("/console/api/trace/{id}")]
pub async fn trace(
    _auth: Needs<OpsReader>,
    state: web::Data<AppState>,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let deps = crate::ops::trace::TraceDeps {
        pool: state.pool().clone(),
        cache: state.cache().clone(),
        search: state.search.clone(),
        kafka: state.kafka.connection.clone(),
        names: state.names.clone(),
    };
    let t = crate::ops::trace::trace(&deps, *id).await.map_err(|e| match e {
        crate::ops::OpsError::Store(s) => ApiError::from(s),
        other => ApiError::DependencyDown {
            dependency: "kafka",
            cause: other.to_string(),
        },
    })?;
    Ok(HttpResponse::Ok().json(t))
}

/// Body of `POST /console/api/outbox/retry`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryRequest {
    /// Outbox ids.
    #[serde(default)]
    pub ids: Vec<i64>,
    /// Every parked row (instead of `ids`).
    #[serde(default)]
    pub all_parked: bool,
    /// Un-park (a write token); otherwise a dry run.
    #[serde(default)]
    pub execute: bool,
}

/// The answer of `POST /console/api/outbox/retry` (`ops::outbox`'s outcome).
#[derive(utoipa::ToSchema)]
#[expect(dead_code, reason = "the schema of the retry outcome's JSON")]
pub struct RetryAnswer {
    /// Whether rows were put back in line.
    executed: bool,
    /// Rows put back (dry run: that would be).
    count: i64,
    /// The rows selected.
    rows: Vec<serde_json::Value>,
}

/// Put parked outbox rows back in line for the relays (`aliexpress outbox retry`): a dry run
/// unless `execute`.
#[utoipa::path(tag = "console", operation_id = "console_retry_parked", request_body = RetryRequest,
    responses((status = 200, description = "The dry run, or what was done", body = RetryAnswer),
        problems::Limits, problems::DryRunOnly, problems::Body),
    security(("bearer" = ["operator", "reader"])))]
#[post("/console/api/outbox/retry")]
pub async fn retry(
    auth: Needs<OpsReader>,
    state: web::Data<AppState>,
    body: JsonBody<RetryRequest>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    require_for(&auth.0, body.execute)?;
    let selection = match (body.all_parked, body.ids.is_empty()) {
        (true, true) => outbox::Selection::AllParked,
        (false, false) => outbox::Selection::Ids(body.ids),
        _ => return Err(ApiError::field("ids", "give either ids or all_parked: true")),
    };
    let mut conn = pool::get(state.pool()).await?;
    let done = outbox::retry_parked(&mut conn, &selection, body.execute).await?;
    Ok(HttpResponse::Ok().json(done))
}

/// `{"execute": bool}` of the console's actions.
fn execute() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::Boolean)
        .default(Some(false.into()))
        .description(Some("Act (the operator role); otherwise a dry run"))
}

/// A body of the console's actions: `either` items or `every: true`, never both, with
/// `extra` properties beside them.
fn selection_body(items: (&str, RefOr<Schema>), every: &str, extra: Vec<(&str, RefOr<Schema>)>) -> RefOr<Schema> {
    let (list, item) = items;
    let mut base = ObjectBuilder::new()
        .schema_type(Type::Object)
        .additional_properties(Some(AdditionalProperties::FreeForm(false)))
        .property(list, ArrayBuilder::new().items(item))
        .property(
            every,
            ObjectBuilder::new()
                .schema_type(Type::Boolean)
                .default(Some(false.into())),
        )
        .property("execute", execute());
    for (name, schema) in extra {
        base = base.property(name, schema);
    }
    let branch = |required: &str, list_bound: ArrayBuilder, every_is: bool| -> Schema {
        ObjectBuilder::new()
            .required(required)
            .property(list, list_bound)
            .property(
                every,
                ObjectBuilder::new()
                    .schema_type(Type::Boolean)
                    .enum_values(Some([every_is])),
            )
            .into()
    };
    let any =
        || ArrayBuilder::new().items(ObjectBuilder::new().schema_type(utoipa::openapi::schema::SchemaType::AnyValue));
    AllOfBuilder::new()
        .item(base)
        .item(
            OneOfBuilder::new()
                .item(branch(every, any().max_items(Some(0)), true))
                .item(branch(list, any().min_items(Some(1)), false)),
        )
        .into()
}

impl utoipa::PartialSchema for RedriveRequest {
    fn schema() -> RefOr<Schema> {
        let at = ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some("^[0-9]{1,9}:[0-9]{1,18}$"))
            .description(Some("PARTITION:OFFSET"));
        selection_body(("offsets", at.into()), "all", vec![("topic", DlqTopic::schema())])
    }
}

impl utoipa::ToSchema for RedriveRequest {
    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        schemas.push(("DlqTopic".into(), DlqTopic::schema()));
    }
}

impl utoipa::PartialSchema for RetryRequest {
    fn schema() -> RefOr<Schema> {
        let id = ObjectBuilder::new()
            .schema_type(Type::Integer)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)));
        selection_body(("ids", id.into()), "all_parked", vec![])
    }
}

impl utoipa::ToSchema for RetryRequest {}

/// Registers the console's endpoints.
pub fn routes(cfg: &mut utoipa_actix_web::service_config::ServiceConfig) {
    cfg.service(overview)
        .service(lag)
        .service(dead_letters)
        .service(redrive)
        .service(parked)
        .service(retry)
        .service(trace);
}
