//! Bearer credentials (RFC 6750 over RFC 9110's `Authorization`) and the role each endpoint
//! needs.
//!
//! - The scheme name is case-insensitive (`Bearer`, `bearer`, `BEARER`), separated from the
//!   token by spaces. The token is an identity provider's JWT, a named API key (`axk_...`) or
//!   a development token (`identity::Identity`).
//! - No credentials: anonymous. Malformed or unknown credentials: 401 (with
//!   `WWW-Authenticate: Bearer`), counted against the client IP's failed-authentication
//!   budget; once that is spent, requests with credentials from that IP get 429 with
//!   `Retry-After` (`rate_limit`). A known caller without the role an endpoint needs: 403.
//! - Every endpoint declares its roles with an extractor listed first, so a caller without
//!   them is refused before the body is even parsed: [`Needs<R>`] with one of the
//!   [`Requirement`]s below, or [`Caller`] where anonymous callers are served too. The OpenAPI
//!   document lists the same roles as the operation's security scopes.
//! - Object level: what a principal may see and change is `domain::access`'s; another
//!   seller's product is a 404 (its existence does not leak).

use std::marker::PhantomData;

use actix_web::http::header;
use actix_web::{web, HttpRequest};
use futures::future::LocalBoxFuture;

use super::{ApiError, AppState};
pub use crate::domain::access::{Principal, Role};

/// The token of an `Authorization: Bearer <token>` value; the scheme is case-insensitive.
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, rest) = value.trim_start().split_once([' ', '\t'])?;
    let token = rest.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty() && !token.contains([' ', '\t'])).then_some(token)
}

/// The request's caller (`None`: anonymous); malformed or unknown credentials are a 401, and
/// a client that failed too often lately gets a 429 before its credentials are looked at.
pub async fn principal(req: &HttpRequest, state: &AppState) -> Result<Option<Principal>, ApiError> {
    let Some(value) = req.headers().get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let ip = req.peer_addr().map(|a| a.ip());
    state.access.rate_limits.check_auth(ip)?;
    let fail = |why: String| {
        state.access.rate_limits.auth_failed(ip);
        ApiError::Unauthorized(why)
    };
    let value = value
        .to_str()
        .map_err(|_| fail("malformed Authorization header".into()))?;
    let token = bearer_token(value).ok_or_else(|| fail("Authorization must be 'Bearer <token>'".into()))?;
    state.access.identity.principal(token).await.map(Some).map_err(fail)
}

/// The roles an endpoint needs (any one of them).
pub trait Requirement {
    /// Any of these.
    const ROLES: &'static [Role];
}

/// Product writes: a seller (their own products) or a catalog admin.
pub struct ProductWriter;
impl Requirement for ProductWriter {
    const ROLES: &'static [Role] = &[Role::Seller, Role::CatalogAdmin];
}

/// The catalog's structure (product types, the category tree) and transfers.
pub struct CatalogAdmin;
impl Requirement for CatalogAdmin {
    const ROLES: &'static [Role] = &[Role::CatalogAdmin];
}

/// The ops actions (redrive, retry, ...).
pub struct Operator;
impl Requirement for Operator {
    const ROLES: &'static [Role] = &[Role::Operator];
}

/// The console's views and dry runs.
pub struct OpsReader;
impl Requirement for OpsReader {
    const ROLES: &'static [Role] = &[Role::Operator, Role::Reader];
}

/// Any authenticated role (what each sees is decided per object).
pub struct AnyRole;
impl Requirement for AnyRole {
    const ROLES: &'static [Role] = &[Role::Seller, Role::CatalogAdmin, Role::Operator, Role::Reader];
}

/// Refuses `p` unless it holds one of `roles`.
pub fn require(p: Option<Principal>, roles: &[Role]) -> Result<Principal, ApiError> {
    let p = p.ok_or_else(|| ApiError::Unauthorized("a bearer token is required".into()))?;
    if p.roles.any(roles) {
        Ok(p)
    } else {
        let names: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
        Err(ApiError::Forbidden(format!(
            "this needs the role {}",
            names.join(" or ")
        )))
    }
}

fn app_state(req: &HttpRequest) -> Result<web::Data<AppState>, ApiError> {
    req.app_data::<web::Data<AppState>>()
        .cloned()
        .ok_or_else(|| ApiError::Internal("application state missing".into()))
}

/// Extractor of a caller holding one of `R`'s roles (401 without credentials, 403 without
/// the role).
pub struct Needs<R>(pub Principal, PhantomData<R>);

impl<R: Requirement> actix_web::FromRequest for Needs<R> {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move {
            let state = app_state(&req)?;
            let p = principal(&req, &state).await?;
            require(p, R::ROLES).map(|p| Needs(p, PhantomData))
        })
    }
}

/// Extractor of the caller, anonymous included (malformed or unknown credentials are a 401).
pub struct Caller(pub Option<Principal>);

impl Caller {
    /// Whether the caller may see a product of `owner` in `status`.
    pub fn may_see(&self, owner: &str, status: crate::domain::product::ProductStatus) -> bool {
        match &self.0 {
            Some(p) => p.may_see(owner, status),
            None => status == crate::domain::product::ProductStatus::Published,
        }
    }
}

impl actix_web::FromRequest for Caller {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move {
            let state = app_state(&req)?;
            principal(&req, &state).await.map(Caller)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::access::Roles;

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
    fn a_missing_role_is_403_and_no_caller_401() {
        let reader = Principal {
            subject: "key:r".into(),
            roles: Roles::of(&[Role::Reader]),
            seller: None,
        };
        assert!(matches!(
            require(Some(reader.clone()), ProductWriter::ROLES),
            Err(ApiError::Forbidden(_))
        ));
        assert!(matches!(require(None, AnyRole::ROLES), Err(ApiError::Unauthorized(_))));
        assert_eq!(require(Some(reader.clone()), OpsReader::ROLES).ok(), Some(reader));
    }
}
