//! `ApiError`: every failure of a handler, mapped to RFC 9457 problem+json. 422 for domain
//! rules, 404, 405 with `Allow`, 409/412 for conflicts, 400/408/413/415 for bad requests, 429
//! with `Retry-After` past a rate limit, 503 with `Retry-After`
//! when a dependency is down or a store error is transient (`StoreError::is_transient`), and an
//! opaque 500. The cause of a 500 or 503 is logged once, here, and never shown.

use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

use super::idempotency::IDEMPOTENCY_KEY_HEADER;
use crate::app::AppError;
use crate::bus::BusError;
use crate::domain::product::DomainError;
use crate::store::StoreError;
use crate::telemetry::metrics;

/// `Retry-After` of every 503, in seconds: long enough for a breaker's trial or a pool to
/// recover, short enough that a client retries promptly.
pub const RETRY_AFTER_SECS: u64 = 2;

/// A field-level problem detail.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct FieldError {
    /// Dotted field path.
    pub field: String,
    /// What is wrong with it.
    pub reason: String,
}

/// Problem+json body.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// Problem type URI.
    #[serde(rename = "type")]
    pub kind: String,
    /// Short summary.
    pub title: String,
    /// HTTP status.
    pub status: u16,
    /// Details for this occurrence.
    pub detail: String,
    /// Field-level errors.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
}

/// Errors returned by handlers.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Body is not valid JSON.
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
    /// Conflicting state (duplicate sku, concurrent change).
    #[error("{0}")]
    Conflict(String),
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
    /// Anything else; the cause is logged, not shown.
    #[error("internal error")]
    Internal(String),
}

impl ApiError {
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
            DomainError::NotCreated => return Self::NotFound("product not found".into()),
            DomainError::AlreadyCreated
            | DomainError::Archived
            | DomainError::InvalidTransition { .. }
            | DomainError::InsufficientStock { .. }
            | DomainError::Incomplete { .. } => return Self::Conflict(detail),
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
            StoreError::VersionConflict { expected, actual } => {
                Self::PreconditionFailed(format!("product is at version {actual}, not {expected}"))
            }
            StoreError::SkuTaken(s) => Self::Conflict(format!("sku {s:?} is already used by another product")),
            other => Self::Internal(other.to_string()),
        }
    }
}

impl From<AppError> for ApiError {
    fn from(e: AppError) -> Self {
        match e {
            AppError::Rejected(rule) => rule.into(),
            AppError::NotFound(id) => Self::NotFound(format!("product {id} not found")),
            AppError::KeyReused => Self::field(
                IDEMPOTENCY_KEY_HEADER,
                "was already used for a request with another body",
            ),
            AppError::KeyInFlight => Self::Conflict(format!(
                "a request with this {IDEMPOTENCY_KEY_HEADER} is still in progress"
            )),
            AppError::AlreadyProcessed => Self::Conflict("command already processed".into()),
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
        match self {
            Self::Malformed(_) => StatusCode::BAD_REQUEST,
            Self::Validation { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::PreconditionFailed(_) => StatusCode::PRECONDITION_FAILED,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            Self::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Self::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::Unavailable(_) | Self::DependencyDown { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        let (detail, errors) = match self {
            Self::Validation { detail, errors } => (detail.clone(), errors.clone()),
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
        let title = status.canonical_reason().unwrap_or("Error").to_owned();
        let slug = title.to_lowercase().replace(' ', "-");
        let body = Problem {
            kind: format!("https://aliexpress.dev/problems/{slug}"),
            title,
            status: status.as_u16(),
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
        J::Deserialize(e) => ApiError::Malformed(format!("malformed JSON: {e}")),
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
}
