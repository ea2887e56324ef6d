//! Bearer-token checks. Tokens come from configuration and are compared in constant time.
//! Missing or unknown token: 401. Known read-only token on a write: 403.

use actix_web::http::header;
use actix_web::HttpRequest;
use subtle::ConstantTimeEq;

use super::{ApiError, AppState};

/// What a caller may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// No token.
    Anonymous,
    /// Read-only token: admin reads.
    Read,
    /// Write token: everything.
    Write,
}

fn matches(token: &[u8], set: &[String]) -> bool {
    // Check every entry so timing does not reveal which one matched.
    set.iter()
        .fold(false, |acc, t| acc | bool::from(t.as_bytes().ct_eq(token)))
}

/// Classifies the request's credentials; a malformed or unknown token is a 401.
pub fn access(req: &HttpRequest, state: &AppState) -> Result<Access, ApiError> {
    let Some(value) = req.headers().get(header::AUTHORIZATION) else {
        return Ok(Access::Anonymous);
    };
    let value = value
        .to_str()
        .map_err(|_| ApiError::Unauthorized("malformed Authorization header".into()))?;
    let token = value
        .strip_prefix("Bearer ")
        .ok_or_else(|| ApiError::Unauthorized("Authorization must be 'Bearer <token>'".into()))?
        .trim()
        .as_bytes();
    if matches(token, &state.write_tokens) {
        Ok(Access::Write)
    } else if matches(token, &state.read_tokens) {
        Ok(Access::Read)
    } else {
        Err(ApiError::Unauthorized("unknown bearer token".into()))
    }
}

/// Requires a write token.
pub fn require_write(req: &HttpRequest, state: &AppState) -> Result<(), ApiError> {
    match access(req, state)? {
        Access::Write => Ok(()),
        Access::Read => Err(ApiError::Forbidden("this token may not write".into())),
        Access::Anonymous => Err(ApiError::Unauthorized("a bearer token is required to write".into())),
    }
}

/// Extractor that admits only write tokens. Listed before the body extractor, it makes an
/// anonymous or read-only caller get 401/403 before its body is even parsed.
pub struct WriteAccess;

impl actix_web::FromRequest for WriteAccess {
    type Error = ApiError;
    type Future = std::future::Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        let result = match req.app_data::<actix_web::web::Data<AppState>>() {
            Some(state) => require_write(req, state).map(|()| WriteAccess),
            None => Err(ApiError::Internal("application state missing".into())),
        };
        std::future::ready(result)
    }
}
