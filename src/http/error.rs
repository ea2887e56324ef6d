//! `ApiError`: every failure of a handler, mapped to RFC 9457 problem+json. 422 for domain
//! rules, 404, 405 with `Allow`, 409/412 for conflicts, 400/408/413/415 for bad requests, 429
//! with `Retry-After` past a rate limit, 503 with `Retry-After`
//! when a dependency is down or a store error is transient (`StoreError::is_transient`), and an
//! opaque 500. The cause of a 500 or 503 is logged once, here, and never shown.
//!
//! Every problem carries a stable, machine-readable `code` ([`ProblemCode`]; clients branch on
//! it, never on `detail`). Its `type` is `about:blank` when the status alone says what went
//! wrong (the code is the only one with that status), and the URN
//! `urn:aliexpress:problem:<code>` when several problems share the status (400, 409, 422);
//! docs/API.md lists them all.

use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};

use super::idempotency::IDEMPOTENCY_KEY_HEADER;
use crate::app::AppError;
use crate::bus::BusError;
use crate::domain::product::DomainError;
use crate::store::StoreError;
use crate::telemetry::metrics;

pub use super::problem::{FieldError, Problem, ProblemCode};

/// `Retry-After` of every 503, in seconds: long enough for a breaker's trial or a pool to
/// recover, short enough that a client retries promptly.
pub const RETRY_AFTER_SECS: u64 = 2;

/// Errors returned by handlers.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Body is not valid JSON.
    #[error("{0}")]
    MalformedJson(String),
    /// Another part of the request cannot be read (path, header, body stream).
    #[error("{0}")]
    Malformed(String),
    /// Input breaks a rule.
    #[error("{detail}")]
    Validation {
        /// Summary.
        detail: String,
        /// Field errors.
        errors: Vec<FieldError>,
    },
    /// No such resource.
    #[error("{0}")]
    NotFound(String),
    /// Write based on an outdated version (If-Match).
    #[error("{0}")]
    PreconditionFailed(String),
    /// The product's current state refuses the command.
    #[error("{0}")]
    StateConflict(String),
    /// Another product has this sku.
    #[error("{0}")]
    SkuTaken(String),
    /// The same `Idempotency-Key` was used with another body.
    #[error("{IDEMPOTENCY_KEY_HEADER} was already used for a request with another body")]
    IdempotencyKeyReused,
    /// A request with the same `Idempotency-Key` is still in progress.
    #[error("a request with this {IDEMPOTENCY_KEY_HEADER} is still in progress")]
    IdempotencyKeyInFlight,
    /// The command id was already processed.
    #[error("command already processed")]
    CommandAlreadyProcessed,
    /// Body over the limit.
    #[error("{0}")]
    PayloadTooLarge(String),
    /// Not JSON.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// The body did not arrive within its bound (`HTTP_BODY_READ_TIMEOUT_MS`).
    #[error("{0}")]
    RequestTimeout(String),
    /// The path exists, the method does not.
    #[error("method not allowed here; allowed: {allow}")]
    MethodNotAllowed {
        /// The `Allow` header: the path's methods.
        allow: &'static str,
    },
    /// A rate limit is spent; retry after the given time.
    #[error("{detail}")]
    TooManyRequests {
        /// What was limited.
        detail: String,
        /// Until the next token.
        retry_after: std::time::Duration,
    },
    /// Missing or unknown credentials.
    #[error("{0}")]
    Unauthorized(String),
    /// Known credentials without the right.
    #[error("{0}")]
    Forbidden(String),
    /// A dependency is down; try again. The message is shown as the detail.
    #[error("{0}")]
    Unavailable(String),
    /// A dependency failed in a way that may pass (connection lost, timeout); try again. The
    /// cause is logged, the client sees a short message naming the dependency.
    #[error("{dependency} is temporarily unavailable")]
    DependencyDown {
        /// `database`, `search`, ...
        dependency: &'static str,
        /// What failed, for the log.
        cause: String,
    },
    /// The request's deadline (`HTTP_REQUEST_DEADLINE_MS`) passed before its work was done
    /// (a stalled database, typically); a write may have been committed.
    #[error("no answer within the request's deadline of {deadline_ms} ms{}", if *.write {
        "; the write may have been committed: repeat it with the same Idempotency-Key to learn its outcome"
    } else { "" })]
    DeadlineExceeded {
        /// The deadline.
        deadline_ms: u128,
        /// Whether the request could change something.
        write: bool,
    },
    /// The server is at its bound of requests in flight (`HTTP_MAX_IN_FLIGHT`, per worker
    /// `HTTP_MAX_IN_FLIGHT_PER_WORKER`): refused at once.
    #[error("the server is at its bound of {0} requests in flight; retry after Retry-After")]
    Overloaded(usize),
    /// Anything else; the cause is logged, not shown.
    #[error("internal error")]
    Internal(String),
}

impl ApiError {
    /// The problem's stable code.
    pub fn code(&self) -> ProblemCode {
        match self {
            Self::MalformedJson(_) => ProblemCode::MalformedJson,
            Self::Malformed(_) => ProblemCode::MalformedRequest,
            Self::Validation { .. } => ProblemCode::ValidationFailed,
            Self::NotFound(_) => ProblemCode::NotFound,
            Self::PreconditionFailed(_) => ProblemCode::VersionConflict,
            Self::StateConflict(_) => ProblemCode::StateConflict,
            Self::SkuTaken(_) => ProblemCode::SkuTaken,
            Self::IdempotencyKeyReused => ProblemCode::IdempotencyKeyReused,
            Self::IdempotencyKeyInFlight => ProblemCode::IdempotencyKeyInFlight,
            Self::CommandAlreadyProcessed => ProblemCode::CommandAlreadyProcessed,
            Self::PayloadTooLarge(_) => ProblemCode::PayloadTooLarge,
            Self::UnsupportedMediaType(_) => ProblemCode::UnsupportedMediaType,
            Self::RequestTimeout(_) => ProblemCode::RequestTimeout,
            Self::MethodNotAllowed { .. } => ProblemCode::MethodNotAllowed,
            Self::TooManyRequests { .. } => ProblemCode::RateLimited,
            Self::Unauthorized(_) => ProblemCode::Unauthorized,
            Self::Forbidden(_) => ProblemCode::Forbidden,
            Self::Unavailable(_) | Self::DependencyDown { .. } | Self::DeadlineExceeded { .. } => {
                ProblemCode::DependencyUnavailable
            }
            Self::Overloaded(_) => ProblemCode::Overloaded,
            Self::Internal(_) => ProblemCode::Internal,
        }
    }

    /// A 422 for one field.
    pub fn field(field: &str, reason: impl Into<String>) -> Self {
        let reason = reason.into();
        Self::Validation {
            detail: format!("invalid {field}: {reason}"),
            errors: vec![FieldError {
                field: field.to_owned(),
                reason,
            }],
        }
    }
}

impl From<DomainError> for ApiError {
    /// A field that breaks a rule is a 422; a command the product's current state refuses
    /// (archived, a forbidden transition, not enough stock, no price to publish with, already
    /// created) is a 409: the
    /// same request may succeed against another state.
    fn from(e: DomainError) -> Self {
        let detail = e.to_string();
        match &e {
            DomainError::Invalid { .. } => {}
            DomainError::NotCreated | DomainError::NotFoundForSeller(_) => {
                return Self::NotFound("product not found".into())
            }
            DomainError::NotAllowed(why) => return Self::Forbidden(why.clone()),
            DomainError::VariantNotFound { .. } => return Self::NotFound(detail),
            DomainError::DuplicateSku(_) => return Self::SkuTaken(detail),
            DomainError::VariantConflict(_) => return Self::StateConflict(detail),
            DomainError::AlreadyCreated
            | DomainError::Archived
            | DomainError::InvalidTransition { .. }
            | DomainError::InsufficientStock { .. }
            | DomainError::Incomplete { .. } => return Self::StateConflict(detail),
        }
        let errors = match &e {
            DomainError::Invalid { field, reason } => vec![FieldError {
                field: (*field).to_owned(),
                reason: reason.clone(),
            }],
            other => other
                .field()
                .map(|f| {
                    vec![FieldError {
                        field: f.to_owned(),
                        reason: detail.clone(),
                    }]
                })
                .unwrap_or_default(),
        };
        Self::Validation { detail, errors }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        if e.is_transient() || matches!(e, StoreError::Pool(_)) {
            return Self::DependencyDown {
                dependency: "database",
                cause: e.to_string(),
            };
        }
        match e {
            StoreError::Domain(d) => d.into(),
            StoreError::NotFound => Self::NotFound("product not found".into()),
            StoreError::Missing(what) => Self::NotFound(what),
            StoreError::Conflict(why) => Self::StateConflict(why),
            StoreError::VersionConflict { expected, actual } => {
                Self::PreconditionFailed(format!("product is at version {actual}, not {expected}"))
            }
            StoreError::SkuTaken(s) => Self::SkuTaken(format!("sku {s:?} is already used by another product")),
            other => Self::Internal(other.to_string()),
        }
    }
}

impl From<AppError> for ApiError {
    fn from(e: AppError) -> Self {
        match e {
            AppError::Rejected(rule) => rule.into(),
            AppError::NotFound(id) => Self::NotFound(format!("product {id} not found")),
            AppError::KeyReused => Self::IdempotencyKeyReused,
            AppError::KeyInFlight => Self::IdempotencyKeyInFlight,
            AppError::AlreadyProcessed => Self::CommandAlreadyProcessed,
            AppError::Store(e) => e.into(),
        }
    }
}

impl From<BusError> for ApiError {
    fn from(e: BusError) -> Self {
        Self::Unavailable(format!("command bus unavailable: {e}"))
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.code().status()
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        let (detail, errors) = match self {
            Self::Validation { detail, errors } => (detail.clone(), errors.clone()),
            Self::IdempotencyKeyReused => (
                self.to_string(),
                vec![FieldError {
                    field: IDEMPOTENCY_KEY_HEADER.to_owned(),
                    reason: "was already used for a request with another body".to_owned(),
                }],
            ),
            Self::Internal(cause) => {
                tracing::error!(error = %cause, "request failed");
                ("internal error".to_owned(), Vec::new())
            }
            Self::Unavailable(cause) => {
                metrics::HTTP_UNAVAILABLE.with_label_values(&["other"]).inc();
                tracing::warn!(error = %cause, "dependency unavailable");
                (cause.clone(), Vec::new())
            }
            Self::DependencyDown { dependency, cause } => {
                metrics::HTTP_UNAVAILABLE.with_label_values(&[dependency]).inc();
                tracing::warn!(dependency = *dependency, error = %cause, "{dependency} unavailable; answered 503");
                (
                    format!("{dependency} is temporarily unavailable; retry later"),
                    Vec::new(),
                )
            }
            other => (other.to_string(), Vec::new()),
        };
        let code = self.code();
        let body = Problem {
            kind: code.type_uri(),
            title: code.title().to_owned(),
            status: status.as_u16(),
            code,
            detail,
            errors,
        };
        let mut resp = HttpResponse::build(status);
        resp.insert_header((header::CONTENT_TYPE, "application/problem+json"));
        if matches!(self, Self::Unauthorized(_)) {
            resp.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
        }
        if status == StatusCode::SERVICE_UNAVAILABLE {
            resp.insert_header((header::RETRY_AFTER, RETRY_AFTER_SECS.to_string()));
        }
        if let Self::TooManyRequests { retry_after, .. } = self {
            // Whole seconds, rounded up, at least 1: a client that waits that long gets a token.
            let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
            resp.insert_header((header::RETRY_AFTER, secs.max(1).to_string()));
        }
        if let Self::MethodNotAllowed { allow } = self {
            resp.insert_header((header::ALLOW, *allow));
        }
        if status == StatusCode::REQUEST_TIMEOUT {
            resp.insert_header((header::CONNECTION, "close"));
        }
        resp.json(body)
    }
}

/// Maps JSON extractor failures: syntax → 400, shape → 422, size → 413, type → 415.
pub fn json_error(err: actix_web::error::JsonPayloadError, _req: &actix_web::HttpRequest) -> actix_web::Error {
    use actix_web::error::JsonPayloadError as J;
    let api = match &err {
        J::OverflowKnownLength { length, limit } => {
            ApiError::PayloadTooLarge(format!("body of {length} bytes is over the {limit} byte limit"))
        }
        J::Overflow { limit } => ApiError::PayloadTooLarge(format!("body is over the {limit} byte limit")),
        J::ContentType => ApiError::UnsupportedMediaType("Content-Type must be application/json".into()),
        J::Deserialize(e) if e.is_data() => ApiError::Validation {
            detail: format!("invalid body: {e}"),
            errors: vec![FieldError {
                field: "body".into(),
                reason: e.to_string(),
            }],
        },
        J::Deserialize(e) => ApiError::MalformedJson(format!("malformed JSON: {e}")),
        J::Payload(p) => payload_error(p),
        other => ApiError::Malformed(format!("unreadable body: {other}")),
    };
    api.into()
}

/// A body that could not be read: too slow (408), too large (413) or broken (400).
pub fn payload_error(e: &actix_web::error::PayloadError) -> ApiError {
    use actix_web::error::PayloadError as P;
    match e {
        P::Io(io) if io.kind() == std::io::ErrorKind::TimedOut => ApiError::RequestTimeout(io.to_string()),
        P::Overflow => ApiError::PayloadTooLarge("body is over the size limit".into()),
        other => ApiError::Malformed(format!("unreadable body: {other}")),
    }
}

/// Maps query-string extractor failures to 422.
pub fn query_error(err: actix_web::error::QueryPayloadError, _req: &actix_web::HttpRequest) -> actix_web::Error {
    ApiError::Validation {
        detail: format!("invalid query parameters: {err}"),
        errors: vec![FieldError {
            field: "query".into(),
            reason: err.to_string(),
        }],
    }
    .into()
}

/// Maps path extractor failures (for example an id that is not a UUID) to 400.
pub fn path_error(err: actix_web::error::PathError, _req: &actix_web::HttpRequest) -> actix_web::Error {
    ApiError::Malformed(format!("invalid path: {err}")).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::body::MessageBody;
    use diesel::result::{DatabaseErrorKind, Error as DieselError};

    fn answer(e: ApiError) -> (StatusCode, Option<String>, serde_json::Value) {
        let r = e.error_response();
        let retry = r
            .headers()
            .get(header::RETRY_AFTER)
            .map(|v| v.to_str().unwrap_or_default().to_owned());
        let status = r.status();
        let bytes = r.into_body().try_into_bytes().unwrap_or_default();
        (status, retry, serde_json::from_slice(&bytes).unwrap_or_default())
    }

    #[test]
    fn every_unavailable_answer_carries_retry_after() {
        let (status, retry, body) = answer(ApiError::Unavailable("command bus unavailable".into()));
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(retry.as_deref(), Some("2"));
        assert_eq!(body["status"], 503);
    }

    #[test]
    fn a_pool_failure_is_a_503_whose_cause_stays_in_the_log() {
        let e: ApiError = StoreError::Pool("connection refused to 10.0.0.7:5432".into()).into();
        let (status, retry, body) = answer(e);
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(retry.is_some());
        let detail = body["detail"].as_str().unwrap_or_default();
        assert!(detail.starts_with("database is temporarily unavailable"), "{detail}");
        assert!(!detail.contains("10.0.0.7"));
    }

    #[test]
    fn a_transient_query_failure_is_a_503_not_a_500() {
        let e = StoreError::Query(DieselError::DatabaseError(
            DatabaseErrorKind::SerializationFailure,
            Box::new("could not serialize access".to_owned()),
        ));
        assert!(e.is_transient());
        let (status, retry, _) = answer(e.into());
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(retry.is_some());
    }

    #[test]
    fn a_permanent_store_failure_stays_an_opaque_500() {
        let (status, retry, body) = answer(StoreError::Corrupt("bad status".into()).into());
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(retry.is_none());
        assert_eq!(body["detail"], "internal error");
    }

    /// One error of each variant, with the code and status it must answer with.
    fn every_variant() -> Vec<(ApiError, &'static str, u16)> {
        use std::time::Duration;
        vec![
            (
                ApiError::MalformedJson("malformed JSON: eof".into()),
                "malformed_json",
                400,
            ),
            (ApiError::Malformed("invalid path".into()), "malformed_request", 400),
            (ApiError::field("title", "must not be empty"), "validation_failed", 422),
            (ApiError::NotFound("product not found".into()), "not_found", 404),
            (
                ApiError::PreconditionFailed("at version 3".into()),
                "version_conflict",
                412,
            ),
            (ApiError::StateConflict("archived".into()), "state_conflict", 409),
            (ApiError::SkuTaken("sku taken".into()), "sku_taken", 409),
            (ApiError::IdempotencyKeyReused, "idempotency_key_reused", 422),
            (ApiError::IdempotencyKeyInFlight, "idempotency_key_in_flight", 409),
            (ApiError::CommandAlreadyProcessed, "command_already_processed", 409),
            (ApiError::PayloadTooLarge("too big".into()), "payload_too_large", 413),
            (
                ApiError::UnsupportedMediaType("not JSON".into()),
                "unsupported_media_type",
                415,
            ),
            (ApiError::RequestTimeout("slow".into()), "request_timeout", 408),
            (ApiError::MethodNotAllowed { allow: "GET" }, "method_not_allowed", 405),
            (
                ApiError::TooManyRequests {
                    detail: "slow down".into(),
                    retry_after: Duration::from_millis(1500),
                },
                "rate_limited",
                429,
            ),
            (ApiError::Unauthorized("no token".into()), "unauthorized", 401),
            (ApiError::Forbidden("read token".into()), "forbidden", 403),
            (
                ApiError::Unavailable("command bus unavailable".into()),
                "dependency_unavailable",
                503,
            ),
            (
                ApiError::DeadlineExceeded {
                    deadline_ms: 5000,
                    write: true,
                },
                "dependency_unavailable",
                503,
            ),
            (ApiError::Overloaded(512), "overloaded", 503),
            (
                ApiError::DependencyDown {
                    dependency: "search",
                    cause: "timeout".into(),
                },
                "dependency_unavailable",
                503,
            ),
            (ApiError::Internal("boom".into()), "internal", 500),
        ]
    }

    #[test]
    fn each_variant_answers_with_its_code_status_and_type() {
        for (e, code, status) in every_variant() {
            let name = format!("{e:?}");
            assert_eq!(e.code().as_str(), code, "{name}");
            let (s, _, body) = answer(e);
            assert_eq!(s.as_u16(), status, "{name}");
            assert_eq!(body["code"], code, "{name}");
            assert_eq!(body["status"], status, "{name}");
            let kind = body["type"].as_str().unwrap_or_default();
            assert!(
                kind == "about:blank" || kind == format!("urn:aliexpress:problem:{code}"),
                "{name}: {kind}"
            );
            assert!(!body["title"].as_str().unwrap_or_default().is_empty(), "{name}");
        }
    }

    #[test]
    fn the_type_is_about_blank_exactly_when_the_status_says_it_all() {
        for code in ProblemCode::ALL {
            let alone = ProblemCode::ALL.iter().filter(|c| c.status() == code.status()).count() == 1;
            assert_eq!(code.type_uri() == "about:blank", alone, "{code}");
            if alone {
                assert_eq!(Some(code.title()), code.status().canonical_reason(), "{code}");
            }
            // The serialised name is the documented one.
            assert_eq!(serde_json::to_value(code).unwrap_or_default(), code.as_str());
        }
        assert_eq!(ProblemCode::NotFound.type_uri(), "about:blank");
        assert_eq!(ProblemCode::SkuTaken.type_uri(), "urn:aliexpress:problem:sku_taken");
    }

    #[test]
    fn application_and_domain_errors_keep_their_distinct_codes() {
        let cases: Vec<(ApiError, &str)> = vec![
            (AppError::KeyReused.into(), "idempotency_key_reused"),
            (AppError::KeyInFlight.into(), "idempotency_key_in_flight"),
            (AppError::AlreadyProcessed.into(), "command_already_processed"),
            (AppError::Rejected(DomainError::Archived).into(), "state_conflict"),
            (AppError::Rejected(DomainError::NotCreated).into(), "not_found"),
            (StoreError::SkuTaken("A-1".into()).into(), "sku_taken"),
            (
                StoreError::VersionConflict { expected: 1, actual: 2 }.into(),
                "version_conflict",
            ),
            (StoreError::NotFound.into(), "not_found"),
        ];
        for (e, code) in cases {
            assert_eq!(e.code().as_str(), code, "{e:?}");
        }
        let (_, _, body) = answer(AppError::KeyReused.into());
        assert_eq!(body["errors"][0]["field"], IDEMPOTENCY_KEY_HEADER);
    }

    #[test]
    fn every_code_is_listed_in_the_docs_and_the_schema() {
        let docs = include_str!("../../docs/API.md");
        let schema = serde_json::to_string(&<ProblemCode as utoipa::PartialSchema>::schema()).unwrap_or_default();
        for code in ProblemCode::ALL {
            assert!(docs.contains(&format!("`{code}`")), "docs/API.md lists {code}");
            assert!(
                schema.contains(&format!("\"{code}\"")),
                "the Problem schema's code enum lists {code}: {schema}"
            );
        }
    }
}
