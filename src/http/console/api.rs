//! The console's JSON endpoints. Each one calls what the CLI calls: `ops::status` (health,
//! backlog, dead-letter depth), `ops::lag_history` over `ops::groups::describe` (lag per
//! partition, verdict, chart), `ops::dlq` (`dlq list`, `dlq redrive`), `ops::outbox`
//! (`outbox retry`) and the audit table (`replay`'s records). Reads need a token; a dry run
//! needs a token; executing needs a write token. Kafka's blocking calls run off the runtime.

use actix_web::{web, HttpRequest, HttpResponse};
use rdkafka::message::{Message, OwnedMessage};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::super::auth::{self, Access, TokenAccess};
use super::super::json_body::JsonBody;
use super::super::{ApiError, AppState};
use crate::ops::dlq::{self, DlqRecord, Redrive};
use crate::ops::status::{self, Check, DlqDepth, OutboxStatus, StatusDeps};
use crate::ops::{lag_history, outbox, OpsError};
use crate::store::audit_repo::{self, RecordedMove};
use crate::store::outbox_repo::{self, OutboxRowInfo};
use crate::store::pool;

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
        pool: state.pool.clone(),
        cache: state.cache.clone(),
        producer: state.producer.clone(),
        search: state.search.clone(),
        kafka: state.kafka.clone(),
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
#[derive(Debug, Serialize)]
pub struct Overview {
    /// Each dependency: answered in time, latency, short error.
    pub health: Vec<Check>,
    /// Pending and parked rows, oldest pending age, relays and their slices.
    pub outbox: Option<OutboxStatus>,
    /// Records per dead-letter topic.
    pub dead_letters: Vec<DlqDepth>,
    /// The last partition moves of `replay --execute`, newest first.
    pub replays: Vec<RecordedMove>,
}

/// Health, outbox backlog, dead-letter depth and the last replays.
pub async fn overview(_auth: TokenAccess, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let d = status_deps(&state);
    let replays = async {
        let mut conn = pool::get(&state.pool).await?;
        audit_repo::recent_offset_moves(&mut conn, REPLAYS_SHOWN).await
    };
    let (health, (outbox, _), dead_letters, replays) = tokio::join!(
        status::health(&d),
        status::backlog(&d),
        status::dead_letters(&d),
        replays
    );
    Ok(HttpResponse::Ok().json(Overview {
        health,
        outbox,
        dead_letters,
        // The health panel already says when Postgres is down.
        replays: replays.unwrap_or_default(),
    }))
}

/// `GET /console/api/lag`: every group's partitions, verdict and the chart's history.
pub async fn lag(_auth: TokenAccess, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let view = lag_history::refresh(&state.lag_history, &state.kafka, &groups(&state)).await;
    Ok(HttpResponse::Ok().json(view))
}

/// Which dead-letter topic: never a topic name from the caller.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize)]
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
#[derive(Debug, Deserialize)]
pub struct DlqQuery {
    /// `events` (default) or `commands`.
    #[serde(default)]
    pub topic: DlqTopic,
}

/// A dead letter with its payload and whether it was redriven.
#[derive(Debug, Serialize)]
pub struct DeadLetter {
    /// Position, reason and origin.
    #[serde(flatten)]
    pub record: DlqRecord,
    /// Republished already (a redrive skips it).
    pub redriven: bool,
    /// The payload as text (lossy UTF-8), cut at [`PAYLOAD_SHOWN_CHARS`].
    pub payload: String,
}

/// `GET /console/api/dead-letters` answer.
#[derive(Debug, Serialize)]
pub struct DeadLetters {
    /// The topic read.
    pub topic: String,
    /// Records in it.
    pub total: usize,
    /// The newest [`DEAD_LETTERS_SHOWN`], oldest first.
    pub records: Vec<DeadLetter>,
}

async fn read_dlq(state: &AppState, topic: &str) -> Result<Vec<OwnedMessage>, ApiError> {
    let (k, t) = (state.kafka.clone(), topic.to_owned());
    tokio::task::spawn_blocking(move || dlq::read_all(&k, &t))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .map_err(ApiError::from)
}

/// Dead letters of one topic with their reasons and payloads (`aliexpress dlq list`/`show`).
pub async fn dead_letters(
    _auth: TokenAccess,
    state: web::Data<AppState>,
    q: web::Query<DlqQuery>,
) -> Result<HttpResponse, ApiError> {
    let topic = q.topic.name(&state);
    let msgs = read_dlq(&state, &topic).await?;
    let mut conn = pool::get(&state.pool).await?;
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
        })
        .collect();
    Ok(HttpResponse::Ok().json(DeadLetters {
        topic,
        total: msgs.len(),
        records,
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
#[derive(Debug, Serialize)]
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
#[derive(Debug, Serialize)]
pub struct RedriveOutcome {
    /// Whether records were republished.
    pub executed: bool,
    /// Records republished (dry run: that would be).
    pub count: usize,
    /// Each record selected and not redriven before.
    pub records: Vec<RedriveItem>,
}

/// Executing needs a write token; a dry run any token.
fn require_for(req: &HttpRequest, state: &AppState, execute: bool) -> Result<(), ApiError> {
    match auth::access(req, state)? {
        Access::Anonymous => Err(ApiError::Unauthorized("a bearer token is required".into())),
        Access::Read if execute => Err(ApiError::Forbidden("this token may see a dry run, not execute".into())),
        _ => Ok(()),
    }
}

fn parse_at(s: &str) -> Result<(i32, i64), ApiError> {
    let bad = || ApiError::field("offsets", format!("{s:?} is not PARTITION:OFFSET"));
    let (p, o) = s.split_once(':').ok_or_else(bad)?;
    Ok((p.parse().map_err(|_| bad())?, o.parse().map_err(|_| bad())?))
}

/// Redrives dead letters to their original topic (`aliexpress dlq redrive`): a dry run unless
/// `execute`; each record republished once, ever.
pub async fn redrive(
    _auth: TokenAccess,
    req: HttpRequest,
    state: web::Data<AppState>,
    body: JsonBody<RedriveRequest>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    require_for(&req, &state, body.execute)?;
    let selection = match (body.all, body.offsets.is_empty()) {
        (true, true) => dlq::Selection::All,
        (false, false) => dlq::Selection::Only(body.offsets.iter().map(|s| parse_at(s)).collect::<Result<_, _>>()?),
        _ => return Err(ApiError::field("offsets", "give either offsets or all: true")),
    };
    let topic = body.topic.name(&state);
    let msgs = read_dlq(&state, &topic).await?;
    let mut conn = pool::get(&state.pool).await?;
    let producer = body.execute.then_some(&state.producer);
    let done = dlq::redrive(&mut conn, producer, &topic, &msgs, &selection).await?;
    let records: Vec<RedriveItem> = done
        .into_iter()
        .map(|r| match r {
            Redrive::To {
                partition,
                offset,
                topic,
                key,
                error_class,
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
#[derive(Debug, Serialize)]
pub struct Parked {
    /// Parked rows in all.
    pub total: i64,
    /// The oldest [`PARKED_SHOWN`], with attempts and last error.
    pub rows: Vec<OutboxRowInfo>,
}

/// Parked outbox rows (`aliexpress outbox list --parked`).
pub async fn parked(_auth: TokenAccess, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let mut conn = pool::get(&state.pool).await?;
    let total = outbox_repo::stats(&mut conn).await?.parked;
    let rows = outbox_repo::list(&mut conn, true, PARKED_SHOWN).await?;
    Ok(HttpResponse::Ok().json(Parked { total, rows }))
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

/// Puts parked rows back in line for the relays (`aliexpress outbox retry`): a dry run
/// unless `execute`.
pub async fn retry(
    _auth: TokenAccess,
    req: HttpRequest,
    state: web::Data<AppState>,
    body: JsonBody<RetryRequest>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    require_for(&req, &state, body.execute)?;
    let selection = match (body.all_parked, body.ids.is_empty()) {
        (true, true) => outbox::Selection::AllParked,
        (false, false) => outbox::Selection::Ids(body.ids),
        _ => return Err(ApiError::field("ids", "give either ids or all_parked: true")),
    };
    let mut conn = pool::get(&state.pool).await?;
    let done = outbox::retry_parked(&mut conn, &selection, body.execute).await?;
    Ok(HttpResponse::Ok().json(done))
}

/// The console's operations for the OpenAPI document: (path, path item). Reads need a token;
/// the actions' bodies say in their schema what the handlers check (either a selection or
/// everything).
pub fn openapi_paths() -> Vec<(&'static str, Value)> {
    let errors = |statuses: &[(u16, &str)]| -> Map<String, Value> {
        statuses
            .iter()
            .map(|(s, d)| (s.to_string(), super::super::openapi::problem_response(*s, d)))
            .collect()
    };
    let common = [
        (401, "Missing, malformed or unknown bearer token"),
        (429, "Rate limit of this client address spent; see Retry-After"),
        (503, "A dependency is unavailable; see Retry-After"),
    ];
    let body_errors = [
        (400, "Malformed JSON or an unreadable body"),
        (403, "The token may see a dry run, not execute"),
        (408, "The body did not arrive within HTTP_BODY_READ_TIMEOUT_MS"),
        (413, "Body over HTTP_BODY_LIMIT_BYTES"),
        (415, "Content-Type is not application/json"),
        (422, "The body breaks a rule; `errors` names it"),
    ];
    let object = |required: &[&str]| json!({"type": "object", "required": required});
    let get = |id: &str, summary: &str, ok: Value, extra: &[(u16, &str)], params: Value| {
        let mut responses = errors(&common);
        responses.extend(errors(extra));
        responses.insert(
            "200".into(),
            json!({"description": "Success", "content": {"application/json": {"schema": ok}}}),
        );
        json!({"get": {
            "tags": ["console"], "operationId": id, "summary": summary, "security": [{"bearer": []}],
            "parameters": params, "responses": responses,
        }})
    };
    let post = |id: &str, summary: &str, body: Value, ok: Value, extra: &[(u16, &str)]| {
        let mut responses = errors(&common);
        responses.extend(errors(&body_errors));
        responses.extend(errors(extra));
        responses.insert(
            "200".into(),
            json!({"description": "The dry run, or what was done", "content": {"application/json": {"schema": ok}}}),
        );
        json!({"post": {
            "tags": ["console"], "operationId": id, "summary": summary, "security": [{"bearer": []}],
            "requestBody": {"required": true, "content": {"application/json": {"schema": body}}},
            "responses": responses,
        }})
    };
    let topic = json!({"type": "string", "enum": ["events", "commands"], "default": "events"});
    let execute =
        json!({"type": "boolean", "default": false, "description": "Act (a write token); otherwise a dry run"});
    let no_topic = [(404, "The dead-letter topic does not exist yet")];
    vec![
        (
            "/console/api/overview",
            get(
                "console_overview",
                "Health of each dependency, outbox backlog, dead-letter depth, last replays",
                object(&["health", "outbox", "dead_letters", "replays"]),
                &[],
                json!([]),
            ),
        ),
        (
            "/console/api/lag",
            get(
                "console_lag",
                "Each consumer group's lag per partition with its verdict, and the last minutes as chart columns",
                object(&["sampled_at", "groups", "history"]),
                &[],
                json!([]),
            ),
        ),
        (
            "/console/api/dead-letters",
            get(
                "console_dead_letters",
                "The newest dead letters of a DLQ topic with reasons and payloads",
                object(&["topic", "total", "records"]),
                &[(422, "An unknown topic"), no_topic[0]],
                json!([{"name": "topic", "in": "query", "required": false, "schema": topic}]),
            ),
        ),
        (
            "/console/api/dead-letters/redrive",
            post(
                "console_redrive",
                "Redrive dead letters to their original topic (dry run unless execute)",
                json!({
                    "type": "object", "additionalProperties": false,
                    "properties": {
                        "topic": topic,
                        "offsets": {"type": "array", "items": {"type": "string", "pattern": "^[0-9]{1,9}:[0-9]{1,18}$"}},
                        "all": {"type": "boolean", "default": false},
                        "execute": execute,
                    },
                    "oneOf": [
                        {"required": ["all"], "properties": {"all": {"const": true}, "offsets": {"maxItems": 0}}},
                        {"required": ["offsets"], "properties": {"offsets": {"minItems": 1}, "all": {"const": false}}},
                    ],
                }),
                object(&["executed", "count", "records"]),
                &no_topic,
            ),
        ),
        (
            "/console/api/outbox/parked",
            get(
                "console_parked",
                "Parked outbox rows with attempts and last error",
                object(&["total", "rows"]),
                &[],
                json!([]),
            ),
        ),
        (
            "/console/api/outbox/retry",
            post(
                "console_retry_parked",
                "Put parked outbox rows back in line (dry run unless execute)",
                json!({
                    "type": "object", "additionalProperties": false,
                    "properties": {
                        "ids": {"type": "array", "items": {"type": "integer", "format": "int64"}},
                        "all_parked": {"type": "boolean", "default": false},
                        "execute": execute,
                    },
                    "oneOf": [
                        {"required": ["all_parked"], "properties": {"all_parked": {"const": true}, "ids": {"maxItems": 0}}},
                        {"required": ["ids"], "properties": {"ids": {"minItems": 1}, "all_parked": {"const": false}}},
                    ],
                }),
                object(&["executed", "count", "rows"]),
                &[],
            ),
        ),
    ]
}
