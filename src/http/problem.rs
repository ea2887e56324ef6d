//! The problem+json body (RFC 9457) every error answers with, and [`ProblemCode`]: the
//! stable, machine-readable name of each distinct problem. Clients branch on `code`, never on
//! `detail`. A problem's `type` is `about:blank` when its status alone says what went wrong
//! (the code is the only one with that status), else `urn:aliexpress:problem:<code>`;
//! docs/API.md lists them all. `error::ApiError` chooses the code of each failure.

use actix_web::http::StatusCode;
use serde::Serialize;

/// A field-level problem detail.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct FieldError {
    /// Dotted field path.
    pub field: String,
    /// What is wrong with it.
    pub reason: String,
}

/// The stable, machine-readable name of each distinct problem (`code` in problem+json).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ProblemCode {
    /// 400: the body is not valid JSON.
    MalformedJson,
    /// 400: another part of the request cannot be read (path parameter, header, body stream).
    MalformedRequest,
    /// 401: missing, malformed or unknown bearer token.
    Unauthorized,
    /// 403: a known token without the right (a read token writing).
    Forbidden,
    /// 404: no such resource or route.
    NotFound,
    /// 405: the path exists, the method does not (see `Allow`).
    MethodNotAllowed,
    /// 408: the body did not arrive in time.
    RequestTimeout,
    /// 409: the product's current state refuses the command (archived, a forbidden
    /// transition, not enough stock, already created, ...).
    StateConflict,
    /// 409: another product has this sku.
    SkuTaken,
    /// 409: a request with this `Idempotency-Key` is still in progress; retry.
    IdempotencyKeyInFlight,
    /// 409: a command with this id was already processed.
    CommandAlreadyProcessed,
    /// 412: `If-Match` names another version than the product's (optimistic concurrency).
    VersionConflict,
    /// 413: the body is over the size limit.
    PayloadTooLarge,
    /// 415: the body is not `application/json`.
    UnsupportedMediaType,
    /// 422: the input breaks a rule (see `errors`).
    ValidationFailed,
    /// 422: this `Idempotency-Key` was used for a request with another body.
    IdempotencyKeyReused,
    /// 429: this client's rate limit is spent (see `Retry-After`).
    RateLimited,
    /// 500: an unexpected failure; the cause is in the server's log.
    Internal,
    /// 503: a dependency (database, search, command bus) is unavailable or did not answer
    /// within the request's deadline (see `Retry-After`).
    DependencyUnavailable,
    /// 503: the server is at its bound of requests in flight; shed at once (see `Retry-After`).
    Overloaded,
}

impl ProblemCode {
    /// Every code, in status order.
    pub const ALL: [Self; 20] = [
        Self::MalformedJson,
        Self::MalformedRequest,
        Self::Unauthorized,
        Self::Forbidden,
        Self::NotFound,
        Self::MethodNotAllowed,
        Self::RequestTimeout,
        Self::StateConflict,
        Self::SkuTaken,
        Self::IdempotencyKeyInFlight,
        Self::CommandAlreadyProcessed,
        Self::VersionConflict,
        Self::PayloadTooLarge,
        Self::UnsupportedMediaType,
        Self::ValidationFailed,
        Self::IdempotencyKeyReused,
        Self::RateLimited,
        Self::Internal,
        Self::DependencyUnavailable,
        Self::Overloaded,
    ];

    /// The code as sent (`snake_case`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MalformedJson => "malformed_json",
            Self::MalformedRequest => "malformed_request",
            Self::Unauthorized => "unauthorized",
            Self::Forbidden => "forbidden",
            Self::NotFound => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::RequestTimeout => "request_timeout",
            Self::StateConflict => "state_conflict",
            Self::SkuTaken => "sku_taken",
            Self::IdempotencyKeyInFlight => "idempotency_key_in_flight",
            Self::CommandAlreadyProcessed => "command_already_processed",
            Self::VersionConflict => "version_conflict",
            Self::PayloadTooLarge => "payload_too_large",
            Self::UnsupportedMediaType => "unsupported_media_type",
            Self::ValidationFailed => "validation_failed",
            Self::IdempotencyKeyReused => "idempotency_key_reused",
            Self::RateLimited => "rate_limited",
            Self::Internal => "internal",
            Self::DependencyUnavailable => "dependency_unavailable",
            Self::Overloaded => "overloaded",
        }
    }

    /// The HTTP status of this problem.
    pub fn status(self) -> StatusCode {
        match self {
            Self::MalformedJson | Self::MalformedRequest => StatusCode::BAD_REQUEST,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Forbidden => StatusCode::FORBIDDEN,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::StateConflict | Self::SkuTaken | Self::IdempotencyKeyInFlight | Self::CommandAlreadyProcessed => {
                StatusCode::CONFLICT
            }
            Self::VersionConflict => StatusCode::PRECONDITION_FAILED,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::ValidationFailed | Self::IdempotencyKeyReused => StatusCode::UNPROCESSABLE_ENTITY,
            Self::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            Self::DependencyUnavailable | Self::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// True when another problem has the same status: the status alone does not say which.
    fn shares_status(self) -> bool {
        Self::ALL.iter().any(|c| *c != self && c.status() == self.status())
    }

    /// The problem's `type`: `about:blank` when the status says it all, else
    /// `urn:aliexpress:problem:<code>`.
    pub fn type_uri(self) -> String {
        if self.shares_status() {
            format!("urn:aliexpress:problem:{}", self.as_str())
        } else {
            "about:blank".to_owned()
        }
    }

    /// The problem's `title`: the status's reason phrase for `about:blank` (as RFC 9457 asks),
    /// else a summary of the problem.
    pub fn title(self) -> &'static str {
        match self {
            Self::MalformedJson => "Malformed JSON",
            Self::MalformedRequest => "Malformed request",
            Self::StateConflict => "The product's state refuses this",
            Self::SkuTaken => "SKU already taken",
            Self::IdempotencyKeyInFlight => "Idempotency key in use",
            Self::CommandAlreadyProcessed => "Command already processed",
            Self::ValidationFailed => "Validation failed",
            Self::IdempotencyKeyReused => "Idempotency key reused",
            Self::DependencyUnavailable => "Dependency unavailable",
            Self::Overloaded => "Server at capacity",
            other => other.status().canonical_reason().unwrap_or("Error"),
        }
    }
}

impl std::fmt::Display for ProblemCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Problem+json body (RFC 9457).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// `about:blank` when the status says it all, else `urn:aliexpress:problem:<code>`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Short summary of the problem type.
    pub title: String,
    /// HTTP status.
    pub status: u16,
    /// Stable, machine-readable name of the problem.
    pub code: ProblemCode,
    /// Details for this occurrence.
    pub detail: String,
    /// Field-level errors.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
}
