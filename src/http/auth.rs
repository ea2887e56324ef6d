//! Bearer-token checks (RFC 6750 over RFC 9110's `Authorization`).
//!
//! - The scheme name is case-insensitive (`Bearer`, `bearer`, `BEARER`), separated from the
//!   token by spaces.
//! - Tokens are compared in constant time: the SHA-256 digests of the presented token and of
//!   every configured token are compared with `subtle`, all of them, so neither the position of
//!   the first differing byte, the token's length nor which entry matched shows in the timing.
//! - No credentials: anonymous. Malformed or unknown credentials: 401 (with
//!   `WWW-Authenticate: Bearer`), counted against the client IP's failed-authentication
//!   budget; once that is spent, requests with credentials from that IP get 429 with
//!   `Retry-After` (`rate_limit`). A known read-only token on a write: 403.
//!
//! What each access may see: anonymous callers only published products (an unpublished one
//! by id is a 404, so its existence does not leak); read and write tokens everything; only
//! write tokens may write.

use actix_web::http::header;
use actix_web::HttpRequest;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{ApiError, AppState};

/// What a caller may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// No token: published products only.
    Anonymous,
    /// Read-only token: every read, unpublished products and commands included.
    Read,
    /// Write token: everything.
    Write,
}

impl Access {
    /// Whether this caller may see products that are not published.
    pub fn sees_unpublished(self) -> bool {
        self != Self::Anonymous
    }
}

/// Whether `token` is one of `set`, in time independent of the values.
fn matches(token: &[u8], set: &[String]) -> bool {
    let presented = Sha256::digest(token);
    set.iter()
        .fold(subtle::Choice::from(0), |acc, t| {
            acc | Sha256::digest(t.as_bytes()).ct_eq(&presented)
        })
        .into()
}

/// The token of an `Authorization: Bearer <token>` value; the scheme is case-insensitive.
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, rest) = value.trim_start().split_once([' ', '\t'])?;
    let token = rest.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty() && !token.contains([' ', '\t'])).then_some(token)
}

/// Names the caller for the change history and the events: `token:` and the first 12 hex
/// digits of the SHA-256 of its bearer token (enough to tell configured tokens apart, nothing
/// to authenticate with); `None` without a token.
pub fn actor(req: &HttpRequest) -> Option<String> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let token = bearer_token(value)?;
    let digest = hex::encode(Sha256::digest(token.as_bytes()));
    Some(format!("token:{}", &digest[..12]))
}

/// Classifies the request's credentials; malformed or unknown credentials are a 401, and a
/// client that failed too often lately gets a 429 before its credentials are even looked at.
pub fn access(req: &HttpRequest, state: &AppState) -> Result<Access, ApiError> {
    let Some(value) = req.headers().get(header::AUTHORIZATION) else {
        return Ok(Access::Anonymous);
    };
    let ip = req.peer_addr().map(|a| a.ip());
    state.access.rate_limits.check_auth(ip)?;
    let fail = |why: &str| {
        state.access.rate_limits.auth_failed(ip);
        ApiError::Unauthorized(why.to_owned())
    };
    let value = value.to_str().map_err(|_| fail("malformed Authorization header"))?;
    let token = bearer_token(value).ok_or_else(|| fail("Authorization must be 'Bearer <token>'"))?;
    let token = token.as_bytes();
    if matches(token, &state.access.write_tokens) {
        Ok(Access::Write)
    } else if matches(token, &state.access.read_tokens) {
        Ok(Access::Read)
    } else {
        Err(fail("unknown bearer token"))
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

/// Requires a read or write token.
pub fn require_token(req: &HttpRequest, state: &AppState) -> Result<Access, ApiError> {
    match access(req, state)? {
        Access::Anonymous => Err(ApiError::Unauthorized("a bearer token is required".into())),
        a => Ok(a),
    }
}

fn state(req: &HttpRequest) -> Result<&AppState, ApiError> {
    req.app_data::<actix_web::web::Data<AppState>>()
        .map(|d| d.get_ref())
        .ok_or_else(|| ApiError::Internal("application state missing".into()))
}

/// Extractor that admits only write tokens. Listed before the body extractor, it makes an
/// anonymous or read-only caller get 401/403 before its body is even parsed.
pub struct WriteAccess;

impl actix_web::FromRequest for WriteAccess {
    type Error = ApiError;
    type Future = std::future::Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        std::future::ready(state(req).and_then(|s| require_write(req, s)).map(|()| WriteAccess))
    }
}

/// Extractor of the caller's [`Access`]: anonymous, read or write (malformed or unknown
/// credentials are a 401).
pub struct Caller(pub Access);

impl actix_web::FromRequest for Caller {
    type Error = ApiError;
    type Future = std::future::Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        std::future::ready(state(req).and_then(|s| access(req, s)).map(Caller))
    }
}

/// Extractor that admits read and write tokens.
pub struct TokenAccess;

impl actix_web::FromRequest for TokenAccess {
    type Error = ApiError;
    type Future = std::future::Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        std::future::ready(state(req).and_then(|s| require_token(req, s)).map(|_| TokenAccess))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scheme_is_case_insensitive_and_the_token_follows_a_space() {
        for v in ["Bearer abc", "bearer abc", "BEARER abc", "BeArEr   abc ", "bearer\tabc"] {
            assert_eq!(bearer_token(v), Some("abc"), "{v:?}");
        }
        for v in ["Bearer", "Bearer ", "Basic abc", "Bearerabc", "Bearer a b", ""] {
            assert_eq!(bearer_token(v), None, "{v:?}");
        }
    }

    #[test]
    fn tokens_match_whatever_their_length_and_position() {
        let set = vec!["short".to_owned(), "a-much-longer-token".to_owned()];
        assert!(matches(b"short", &set));
        assert!(matches(b"a-much-longer-token", &set));
        assert!(!matches(b"shor", &set));
        assert!(!matches(b"shortt", &set));
        assert!(!matches(b"", &set));
        assert!(!matches(b"short", &[]));
    }
}
