//! OAuth 2 / OIDC access tokens (JWT): RS256 and ES256 only, signed by a key of the issuer's
//! JWKS, with `iss`, `aud`, `exp` and `nbf` checked (skew bounded by `OIDC_LEEWAY_SECS`) and a
//! `sub`. The caller's roles and seller come from configurable claims (a dotted path, e.g.
//! `realm_access.roles`, reaches into nested objects).
//!
//! The keys are fetched at start-up and every `OIDC_JWKS_REFRESH_SECS` in the background; a
//! token whose `kid` is unknown makes the verifier fetch them again (at most every
//! `OIDC_JWKS_MIN_REFETCH_MS`, 10 s by default), so a
//! rotated key is picked up without a restart. No request waits on the network otherwise.
//! The cryptography is `jsonwebtoken`'s (aws-lc-rs).

use std::collections::HashMap;
use std::time::Duration;

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm};
use jsonwebtoken::{decode, decode_header, Algorithm, DecodingKey, Validation};
use serde_json::Value;

use super::refresh::Refreshed;
use crate::config::http::IdentityConfig;
use crate::domain::access::{Principal, Role, Roles};

/// The algorithms a token may be signed with.
pub const ALGORITHMS: [Algorithm; 2] = [Algorithm::RS256, Algorithm::ES256];

type Keys = HashMap<String, (DecodingKey, Algorithm)>;

/// Verifies access tokens of one issuer.
#[derive(Clone)]
pub struct OidcVerifier {
    issuer: String,
    audience: String,
    role_claim: String,
    seller_claim: String,
    leeway: u64,
    keys: Refreshed<Keys>,
}

/// The algorithm a JWK is for: the one it names, else the one its type implies; `None` for a
/// key this API does not accept.
fn algorithm_of(jwk: &Jwk) -> Option<Algorithm> {
    let implied = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Algorithm::RS256,
        AlgorithmParameters::EllipticCurve(ec) if ec.curve == EllipticCurve::P256 => Algorithm::ES256,
        _ => return None,
    };
    match jwk.common.key_algorithm {
        None => Some(implied),
        Some(KeyAlgorithm::RS256) if implied == Algorithm::RS256 => Some(implied),
        Some(KeyAlgorithm::ES256) if implied == Algorithm::ES256 => Some(implied),
        Some(_) => None,
    }
}

/// The usable signing keys of a JWKS document, by `kid` (keys without one are skipped).
pub fn keys_of(set: &JwkSet) -> HashMap<String, (DecodingKey, Algorithm)> {
    set.keys
        .iter()
        .filter_map(|jwk| {
            let kid = jwk.common.key_id.clone()?;
            let alg = algorithm_of(jwk)?;
            let key = DecodingKey::from_jwk(jwk).ok()?;
            Some((kid, (key, alg)))
        })
        .collect()
}

async fn fetch(http: &reqwest::Client, url: &str) -> anyhow::Result<Keys> {
    let set: JwkSet = http.get(url).send().await?.error_for_status()?.json().await?;
    let keys = keys_of(&set);
    tracing::info!(
        jwks.url = url,
        keys = keys.len(),
        "identity-provider signing keys loaded"
    );
    Ok(keys)
}

/// The value at a dotted `path` of the claims.
fn claim<'a>(claims: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(claims, |v, part| v.get(part))
}

/// Roles named by a claim: an array of names or one space-separated string; unknown names
/// are ignored.
fn roles_of(v: Option<&Value>) -> Vec<Role> {
    let names: Vec<&str> = match v {
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
        Some(Value::String(s)) => s.split_whitespace().collect(),
        _ => Vec::new(),
    };
    names.into_iter().filter_map(Role::parse).collect()
}

impl OidcVerifier {
    /// A verifier for the configured issuer (`None` without `OIDC_ISSUER`), its keys fetched
    /// once now (a failure is logged: tokens are refused until the keys arrive) and then kept
    /// fresh in the background.
    pub async fn start(c: &IdentityConfig) -> anyhow::Result<Option<Self>> {
        let (Some(issuer), Some(url)) = (c.oidc_issuer.clone(), c.jwks_url()) else {
            return Ok(None);
        };
        let http = reqwest::Client::builder().timeout(Duration::from_secs(5)).build()?;
        let initial = fetch(&http, &url).await.unwrap_or_else(|e| {
            tracing::warn!(jwks.url = %url, error = %e, "identity-provider keys not available yet; tokens are refused until they are");
            Keys::new()
        });
        let every = Duration::from_secs(c.oidc_jwks_refresh_secs.max(1));
        let min_gap = Duration::from_millis(c.oidc_jwks_min_refetch_ms.max(100));
        let keys = Refreshed::spawn("jwks", initial, every, min_gap, move || {
            let (http, url) = (http.clone(), url.clone());
            async move { fetch(&http, &url).await }
        });
        Ok(Some(Self {
            issuer,
            audience: c.oidc_audience.clone(),
            role_claim: c.oidc_role_claim.clone(),
            seller_claim: c.oidc_seller_claim.clone(),
            leeway: c.oidc_leeway_secs,
            keys,
        }))
    }

    /// The caller a token names, or why it is refused (a 401's detail).
    pub async fn verify(&self, token: &str) -> Result<Principal, String> {
        let header = decode_header(token).map_err(|e| format!("malformed token: {e}"))?;
        if !ALGORITHMS.contains(&header.alg) {
            return Err(format!(
                "tokens signed with {:?} are not accepted (RS256 or ES256)",
                header.alg
            ));
        }
        let kid = header.kid.ok_or("the token names no key (kid)")?;
        let known = self.keys.current();
        let (key, alg) = match known.get(&kid) {
            Some(k) => k.clone(),
            None => self
                .keys
                .fresher(Duration::from_secs(3))
                .await
                .get(&kid)
                .cloned()
                .ok_or_else(|| format!("unknown signing key {kid:?}"))?,
        };
        if alg != header.alg {
            return Err(format!("key {kid:?} is for {alg:?}, the token says {:?}", header.alg));
        }
        let mut v = Validation::new(alg);
        v.set_issuer(&[&self.issuer]);
        v.set_audience(&[&self.audience]);
        v.leeway = self.leeway;
        v.validate_nbf = true;
        v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        let claims = decode::<Value>(token, &key, &v)
            .map_err(|e| format!("invalid token: {e}"))?
            .claims;
        let sub = claims
            .get("sub")
            .and_then(Value::as_str)
            .ok_or("the token has no subject")?;
        let seller = claim(&claims, &self.seller_claim)
            .and_then(Value::as_str)
            .map(str::to_owned);
        let roles: Vec<Role> = roles_of(claim(&claims, &self.role_claim))
            .into_iter()
            .filter(|r| *r != Role::Seller || seller.is_some())
            .collect();
        Ok(Principal {
            subject: format!("jwt:{sub}"),
            roles: Roles::of(&roles),
            seller,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn roles_come_from_arrays_or_space_separated_strings_at_a_dotted_path() {
        let c = json!({"roles": ["seller", "nope"], "realm_access": {"roles": "operator reader"}});
        assert_eq!(roles_of(claim(&c, "roles")), vec![Role::Seller]);
        assert_eq!(
            roles_of(claim(&c, "realm_access.roles")),
            vec![Role::Operator, Role::Reader]
        );
        assert!(roles_of(claim(&c, "missing.path")).is_empty());
    }

    #[test]
    fn only_rsa_and_p256_keys_are_taken_and_a_named_algorithm_must_fit_the_key() {
        let set: JwkSet = serde_json::from_value(json!({"keys": [
            {"kty": "oct", "kid": "h", "k": "c2VjcmV0"},
            {"kty": "RSA", "kid": "r", "alg": "HS256", "n": "sXch", "e": "AQAB"},
            {"kty": "EC", "kid": "e", "crv": "P-256",
             "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU", "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}
        ]}))
        .expect("jwks");
        let keys = keys_of(&set);
        assert_eq!(keys.len(), 1, "the HMAC key and the RSA key marked HS256 are skipped");
        assert_eq!(keys["e"].1, Algorithm::ES256);
    }
}
