//! HTTP settings of `serve` that decide who may call the API and how much: bearer tokens,
//! per-client rate limits and the bounds of a request body. (Where it listens, `HTTP_BIND`,
//! `HTTP_WORKERS` and `METRICS_BIND`, are flags of `serve` itself, see `cli::serve`.)
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | API_TOKENS | none in release builds; `dev-token` in debug builds | development tokens with the catalog-admin and operator roles, comma separated (production callers use API keys or identity-provider tokens) |
//! | API_READ_TOKENS | (empty) | development tokens with the reader role |
//! | OIDC_ISSUER | (unset: no identity-provider tokens) | the issuer (`iss`) of accepted access tokens |
//! | OIDC_AUDIENCE | `aliexpress-api` | the audience (`aud`) they must carry |
//! | OIDC_JWKS_URL | `<issuer>/.well-known/jwks.json` | where the issuer's signing keys are |
//! | OIDC_ROLE_CLAIM | `roles` | claim with the caller's roles (array, or space-separated string) |
//! | OIDC_SELLER_CLAIM | `seller_id` | claim with the seller a seller acts for |
//! | OIDC_LEEWAY_SECS | 60 | clock skew allowed on `exp` and `nbf` |
//! | OIDC_JWKS_REFRESH_SECS | 300 | the keys are fetched again this often |
//! | OIDC_JWKS_MIN_REFETCH_MS | 10000 | a token with an unknown `kid` makes the keys be fetched again, at most this often |
//! | API_KEY_REFRESH_MS | 5000 | API keys are read from Postgres this often: a new key works at once, a revoked one stops within this bound |
//! | RATE_LIMIT_PER_SECOND | 500 | steady requests per second per client IP (then 429 + Retry-After); 0 turns the limit off |
//! | RATE_LIMIT_BURST | 1000 | requests a client IP may send at once above the steady rate |
//! | AUTH_FAILURES_PER_MINUTE | 30 | unknown or malformed credentials per client IP per minute before its requests with credentials get 429; 0 turns it off |
//! | HTTP_BODY_LIMIT_BYTES | 65536 | largest request body (then 413 problem+json) |
//! | HTTP_CLIENT_REQUEST_TIMEOUT_MS | 5000 | time a client has to send the request head (then 408) |
//! | HTTP_BODY_READ_TIMEOUT_MS | 10000 | time a client has to send the request body (then 408 problem+json) |
//! | HTTP_REQUEST_DEADLINE_MS | 5000 | time a request's work may take once admitted (a stalled database): then 503 `dependency_unavailable` with `Retry-After`; 0 turns it off |
//! | HTTP_MAX_IN_FLIGHT | 256 | requests in progress in the whole process; past it, 503 `overloaded` with `Retry-After` at once (health, metrics, the console and docs are never shed) |
//! | HTTP_MAX_IN_FLIGHT_PER_WORKER | 64 | the same bound for each HTTP worker |
//!
//! The client IP is the TCP peer address: behind a proxy or load balancer every client shares
//! the proxy's address, so size the limits for it (or turn them off and limit at the proxy).

use clap::Args;
use std::time::Duration;

use super::ConfigError;
use crate::secret::Secret;

/// `API_TOKENS` when unset: a development token in debug builds, nothing in release builds
/// (so a release binary never accepts a well-known token).
pub const DEFAULT_WRITE_TOKENS: &str = if cfg!(debug_assertions) { "dev-token" } else { "" };

/// Who may call the API and how much (`serve`).
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Access (tokens, rate limits, request bodies)")]
pub struct ApiConfig {
    /// Bearer tokens allowed to write (and to read unpublished products), comma separated.
    /// Required in release builds; debug builds default to `dev-token`.
    #[arg(
        long,
        env = "API_TOKENS",
        default_value = DEFAULT_WRITE_TOKENS,
        hide_default_value = true,
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub api_tokens: Vec<Secret>,
    /// Bearer tokens allowed to read unpublished products and commands, not to write; comma
    /// separated.
    #[arg(
        long,
        env = "API_READ_TOKENS",
        default_value = "",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub api_read_tokens: Vec<Secret>,
    /// Steady requests per second allowed per client IP; past it, 429 with Retry-After. 0
    /// turns the limit off.
    #[arg(long, env = "RATE_LIMIT_PER_SECOND", default_value_t = 500)]
    pub rate_limit_per_second: u32,
    /// Requests a client IP may send at once above the steady rate.
    #[arg(long, env = "RATE_LIMIT_BURST", default_value_t = 1000)]
    pub rate_limit_burst: u32,
    /// Failed authentications (unknown or malformed credentials) allowed per client IP per
    /// minute; past it, requests with credentials from that IP get 429. 0 turns it off.
    #[arg(long, env = "AUTH_FAILURES_PER_MINUTE", default_value_t = 30)]
    pub auth_failures_per_minute: u32,
    /// Largest request body accepted, in bytes; larger bodies get 413.
    #[arg(long, env = "HTTP_BODY_LIMIT_BYTES", default_value_t = 64 * 1024)]
    pub http_body_limit_bytes: usize,
    /// Time a client has to send the request head, in milliseconds; then 408.
    #[arg(long, env = "HTTP_CLIENT_REQUEST_TIMEOUT_MS", default_value_t = 5000)]
    pub http_client_request_timeout_ms: u64,
    /// Time a client has to send the request body, in milliseconds; then 408.
    #[arg(long, env = "HTTP_BODY_READ_TIMEOUT_MS", default_value_t = 10_000)]
    pub http_body_read_timeout_ms: u64,
    /// Time a request's work may take once admitted, in milliseconds; then 503 with
    /// Retry-After (a write says it may have been committed). 0: no deadline.
    #[arg(long, env = "HTTP_REQUEST_DEADLINE_MS", default_value_t = 5000)]
    pub http_request_deadline_ms: u64,
    /// Requests in progress in the whole process; past it, 503 at once.
    #[arg(long, env = "HTTP_MAX_IN_FLIGHT", default_value_t = 256)]
    pub http_max_in_flight: usize,
    /// Requests in progress in each HTTP worker; past it, 503 at once.
    #[arg(long, env = "HTTP_MAX_IN_FLIGHT_PER_WORKER", default_value_t = 64)]
    pub http_max_in_flight_per_worker: usize,
    /// Identity-provider tokens and API keys.
    #[command(flatten)]
    pub identity: IdentityConfig,
}

/// Identity-provider (OAuth 2 / OIDC) access tokens and API keys.
#[derive(Debug, Clone, Default, Args)]
#[command(next_help_heading = "Identity (OIDC tokens, API keys)")]
pub struct IdentityConfig {
    /// Issuer (`iss`) of accepted JWT access tokens; unset: none accepted.
    #[arg(long, env = "OIDC_ISSUER")]
    pub oidc_issuer: Option<String>,
    /// Audience (`aud`) accepted tokens must carry.
    #[arg(long, env = "OIDC_AUDIENCE", default_value = "aliexpress-api")]
    pub oidc_audience: String,
    /// The issuer's JWKS; default `<issuer>/.well-known/jwks.json`.
    #[arg(long, env = "OIDC_JWKS_URL")]
    pub oidc_jwks_url: Option<String>,
    /// Claim holding the caller's roles (an array, or a space-separated string).
    #[arg(long, env = "OIDC_ROLE_CLAIM", default_value = "roles")]
    pub oidc_role_claim: String,
    /// Claim holding the seller a seller acts for.
    #[arg(long, env = "OIDC_SELLER_CLAIM", default_value = "seller_id")]
    pub oidc_seller_claim: String,
    /// Clock skew allowed on `exp` and `nbf`, in seconds.
    #[arg(long, env = "OIDC_LEEWAY_SECS", default_value_t = 60)]
    pub oidc_leeway_secs: u64,
    /// The signing keys are fetched again this often, in seconds.
    #[arg(long, env = "OIDC_JWKS_REFRESH_SECS", default_value_t = 300)]
    pub oidc_jwks_refresh_secs: u64,
    /// Least time between two fetches of the keys asked for by tokens with an unknown `kid`,
    /// in milliseconds.
    #[arg(long, env = "OIDC_JWKS_MIN_REFETCH_MS", default_value_t = 10_000)]
    pub oidc_jwks_min_refetch_ms: u64,
    /// API keys are read from Postgres this often, in milliseconds (the bound on a revocation).
    #[arg(long, env = "API_KEY_REFRESH_MS", default_value_t = 5000)]
    pub api_key_refresh_ms: u64,
}

impl IdentityConfig {
    /// The issuer's JWKS address.
    pub fn jwks_url(&self) -> Option<String> {
        let issuer = self.oidc_issuer.as_deref()?.trim_end_matches('/');
        Some(
            self.oidc_jwks_url
                .clone()
                .unwrap_or_else(|| format!("{issuer}/.well-known/jwks.json")),
        )
    }

    /// How often API keys are reread.
    pub fn api_key_refresh(&self) -> Duration {
        Duration::from_millis(self.api_key_refresh_ms.max(100))
    }
}

impl Default for ApiConfig {
    /// The values a command line without these flags and variables gets.
    fn default() -> Self {
        Self {
            api_tokens: split(DEFAULT_WRITE_TOKENS),
            api_read_tokens: Vec::new(),
            rate_limit_per_second: 500,
            rate_limit_burst: 1000,
            auth_failures_per_minute: 30,
            http_body_limit_bytes: 64 * 1024,
            http_client_request_timeout_ms: 5000,
            http_body_read_timeout_ms: 10_000,
            http_request_deadline_ms: 5000,
            http_max_in_flight: 256,
            http_max_in_flight_per_worker: 64,
            identity: IdentityConfig {
                oidc_audience: "aliexpress-api".into(),
                oidc_role_claim: "roles".into(),
                oidc_seller_claim: "seller_id".into(),
                oidc_leeway_secs: 60,
                oidc_jwks_refresh_secs: 300,
                oidc_jwks_min_refetch_ms: 10_000,
                api_key_refresh_ms: 5000,
                ..IdentityConfig::default()
            },
        }
    }
}

fn split(s: &str) -> Vec<Secret> {
    s.split(',').map(Secret::new).collect()
}

fn clean(v: &[Secret]) -> Vec<String> {
    v.iter()
        .map(|t| t.expose().trim().to_owned())
        .filter(|t| !t.is_empty())
        .collect()
}

impl ApiConfig {
    /// Refuses a token that is both a write and a read token, a burst below the steady rate,
    /// or a zero bound. (No development token is fine: callers then use API keys or
    /// identity-provider tokens.)
    pub fn validate(&self) -> Result<(), ConfigError> {
        let (writes, reads) = (self.write_tokens(), self.read_tokens());
        // The message never names the token.
        if reads.iter().any(|t| writes.contains(t)) {
            return Err(ConfigError::new(
                "API_READ_TOKENS",
                "a token is both a write token and a read token",
            ));
        }
        if self.rate_limit_per_second > 0 && self.rate_limit_burst == 0 {
            return Err(ConfigError::new("RATE_LIMIT_BURST", "must be at least 1"));
        }
        let positive: [(&'static str, u64); 5] = [
            ("HTTP_BODY_LIMIT_BYTES", self.http_body_limit_bytes as u64),
            ("HTTP_CLIENT_REQUEST_TIMEOUT_MS", self.http_client_request_timeout_ms),
            ("HTTP_BODY_READ_TIMEOUT_MS", self.http_body_read_timeout_ms),
            ("HTTP_MAX_IN_FLIGHT", self.http_max_in_flight as u64),
            (
                "HTTP_MAX_IN_FLIGHT_PER_WORKER",
                self.http_max_in_flight_per_worker as u64,
            ),
        ];
        match positive.iter().find(|(_, v)| *v == 0) {
            Some((setting, _)) => Err(ConfigError::new(setting, "must be at least 1")),
            None => Ok(()),
        }
    }

    /// Write tokens, trimmed, without empty entries.
    pub fn write_tokens(&self) -> Vec<String> {
        clean(&self.api_tokens)
    }

    /// Read-only tokens, trimmed, without empty entries.
    pub fn read_tokens(&self) -> Vec<String> {
        clean(&self.api_read_tokens)
    }

    /// Time to receive a request head.
    pub fn client_request_timeout(&self) -> Duration {
        Duration::from_millis(self.http_client_request_timeout_ms)
    }

    /// Time to receive a request body.
    pub fn body_read_timeout(&self) -> Duration {
        Duration::from_millis(self.http_body_read_timeout_ms)
    }

    /// `HTTP_REQUEST_DEADLINE_MS` (`None` when 0).
    pub fn request_deadline(&self) -> Option<Duration> {
        (self.http_request_deadline_ms > 0).then(|| Duration::from_millis(self.http_request_deadline_ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        a: ApiConfig,
    }

    fn parse(args: &[&str]) -> ApiConfig {
        let mut v = vec!["t"];
        v.extend_from_slice(args);
        T::parse_from(v).a
    }

    #[test]
    fn the_default_matches_an_empty_command_line() {
        let (a, b) = (parse(&[]), ApiConfig::default());
        assert_eq!(a.write_tokens(), b.write_tokens());
        assert_eq!(a.rate_limit_per_second, b.rate_limit_per_second);
        assert_eq!(a.rate_limit_burst, b.rate_limit_burst);
        assert_eq!(a.auth_failures_per_minute, b.auth_failures_per_minute);
        assert_eq!(a.http_body_limit_bytes, b.http_body_limit_bytes);
        assert_eq!(a.body_read_timeout(), b.body_read_timeout());
        assert_eq!(a.client_request_timeout(), b.client_request_timeout());
    }

    #[test]
    fn only_debug_builds_have_a_default_write_token() {
        assert_eq!(DEFAULT_WRITE_TOKENS.is_empty(), !cfg!(debug_assertions));
    }

    #[test]
    fn no_development_token_is_fine_and_the_jwks_defaults_under_the_issuer() {
        assert!(parse(&["--api-tokens", " , "]).validate().is_ok());
        assert_eq!(parse(&[]).identity.jwks_url(), None);
        let a = parse(&["--oidc-issuer", "https://id.example.com/"]);
        assert_eq!(
            a.identity.jwks_url().as_deref(),
            Some("https://id.example.com/.well-known/jwks.json")
        );
        assert_eq!(a.identity.oidc_audience, ApiConfig::default().identity.oidc_audience);
        assert_eq!(
            a.identity.api_key_refresh(),
            ApiConfig::default().identity.api_key_refresh()
        );
    }

    #[test]
    fn a_token_in_both_lists_is_refused_without_echoing_it() {
        let e = parse(&["--api-tokens", "s3cret", "--api-read-tokens", "s3cret"])
            .validate()
            .unwrap_err();
        assert_eq!(e.setting, "API_READ_TOKENS");
        assert!(!e.to_string().contains("s3cret"));
    }

    #[test]
    fn a_zero_bound_names_its_setting() {
        let e = parse(&["--api-tokens", "t", "--http-body-read-timeout-ms", "0"])
            .validate()
            .unwrap_err();
        assert_eq!(e.setting, "HTTP_BODY_READ_TIMEOUT_MS");
    }
}
