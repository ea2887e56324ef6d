//! Who is calling: a bearer token becomes a [`Principal`] (`domain::access`), from an
//! identity provider's JWT ([`oidc`]), a named API key ([`keys`]) or a development token
//! (`API_TOKENS`, `API_READ_TOKENS`). Adapters only: what a principal may do is the domain's.

pub mod keys;
pub mod oidc;
pub mod refresh;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::domain::access::{Principal, Role, Roles};

pub use keys::KeyRing;
pub use oidc::OidcVerifier;

/// Every way a bearer token is recognised.
#[derive(Clone)]
pub struct Identity {
    /// Development tokens' SHA-256 digests with their principals (compared in constant time).
    pub dev_tokens: Vec<(TokenDigest, Principal)>,
    /// Named API keys.
    pub keys: KeyRing,
    /// Identity-provider tokens, when an issuer is configured.
    pub oidc: Option<OidcVerifier>,
}

/// A development token's SHA-256 digest, computed once when the tokens are read.
pub type TokenDigest = [u8; 32];

/// Names a development token for the history and the logs: `token:` and the first 12 hex
/// digits of its SHA-256 (enough to tell tokens apart, nothing to authenticate with).
pub fn fingerprint(token: &str) -> String {
    let digest = hex::encode(Sha256::digest(token.as_bytes()));
    format!("token:{}", &digest[..12])
}

/// The principals of the development tokens: write tokens are catalog admins and operators,
/// read tokens readers.
pub fn dev_tokens(write: &[String], read: &[String]) -> Vec<(TokenDigest, Principal)> {
    let with = |t: &String, roles: &[Role]| {
        (
            Sha256::digest(t.as_bytes()).into(),
            Principal {
                subject: fingerprint(t),
                roles: Roles::of(roles),
                seller: None,
            },
        )
    };
    write
        .iter()
        .map(|t| with(t, &[Role::CatalogAdmin, Role::Operator]))
        .chain(read.iter().map(|t| with(t, &[Role::Reader])))
        .collect()
}

/// Whether a token has a JWT's shape (three base64url parts).
fn looks_like_jwt(token: &str) -> bool {
    token.split('.').count() == 3
}

impl Identity {
    /// The caller `token` names, or why it names none (a 401's detail).
    pub async fn principal(&self, token: &str) -> Result<Principal, String> {
        if looks_like_jwt(token) {
            return match &self.oidc {
                Some(v) => v.verify(token).await,
                None => Err("no identity provider is configured (OIDC_ISSUER)".into()),
            };
        }
        if token.starts_with(keys::KEY_PREFIX) {
            return self
                .keys
                .principal(token)
                .await
                .ok_or_else(|| "unknown or revoked API key".into());
        }
        dev_principal(&self.dev_tokens, token).ok_or_else(|| "unknown bearer token".into())
    }
}

/// The development token's principal: every token is compared (their SHA-256 digests, with
/// `subtle`), so neither the first differing byte, the length nor which entry matched shows
/// in the timing.
fn dev_principal(tokens: &[(TokenDigest, Principal)], token: &str) -> Option<Principal> {
    let presented: TokenDigest = Sha256::digest(token.as_bytes()).into();
    let mut found = None;
    for (t, p) in tokens {
        if bool::from(t.ct_eq(&presented)) {
            found = Some(p.clone());
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn development_tokens_match_whatever_their_length_and_position() {
        let set = dev_tokens(
            &["short".to_owned(), "a-much-longer-token".to_owned()],
            &["r".to_owned()],
        );
        let admin = dev_principal(&set, "a-much-longer-token").expect("matches");
        assert!(admin.roles.has(Role::CatalogAdmin) && admin.roles.has(Role::Operator));
        assert_eq!(admin.subject, fingerprint("a-much-longer-token"));
        assert_eq!(
            dev_principal(&set, "r").map(|p| p.roles),
            Some(Roles::of(&[Role::Reader]))
        );
        for miss in ["shor", "shortt", "", "R"] {
            assert_eq!(dev_principal(&set, miss), None, "{miss:?}");
        }
        assert!(looks_like_jwt("a.b.c") && !looks_like_jwt("axk_abc"));
    }
}
