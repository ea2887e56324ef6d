//! API keys for machines: `axk_` and 43 characters of base64url (32 random bytes). The key
//! ring holds the live keys' digests in memory, reread from Postgres every
//! `API_KEY_REFRESH_MS` (so a revoked key stops working within that bound) and at once when an
//! unknown key is presented (so a new key works right away); no request reads Postgres to
//! authenticate. When a key was last used is written back on the same schedule.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use super::refresh::Refreshed;
use crate::domain::access::{Principal, Role, Roles};
use crate::store::{api_key_repo, pool, PgPool};

/// How every key starts (tells keys from other bearer tokens).
pub const KEY_PREFIX: &str = "axk_";

/// A new key's secret: the prefix and 32 random bytes, base64url.
pub fn new_secret() -> anyhow::Result<String> {
    let mut bytes = [0u8; 32];
    aws_lc_rs::rand::fill(&mut bytes).map_err(|_| anyhow::anyhow!("no randomness available"))?;
    Ok(format!(
        "{KEY_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    ))
}

/// The digest stored for a secret.
pub fn digest(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// A live key, as the ring holds it.
#[derive(Debug, Clone)]
struct Entry {
    id: i64,
    principal: Principal,
}

type Ring = HashMap<[u8; 32], Entry>;

/// The live keys, by digest.
#[derive(Clone)]
pub struct KeyRing {
    keys: Refreshed<Ring>,
    used: Arc<Mutex<HashMap<i64, DateTime<Utc>>>>,
}

fn principal(k: &api_key_repo::LiveKey) -> Option<Principal> {
    let role = Role::parse(&k.role)?;
    Some(Principal {
        subject: format!("key:{}", k.name),
        roles: Roles::of(&[role]),
        seller: k.seller.clone(),
    })
}

async fn load(pool: &PgPool, used: &Mutex<HashMap<i64, DateTime<Utc>>>) -> anyhow::Result<Ring> {
    let mut conn = pool::get(pool).await?;
    let stamps: Vec<(i64, DateTime<Utc>)> = used.lock().map(|mut u| u.drain().collect()).unwrap_or_default();
    if let Some(at) = stamps.iter().map(|(_, t)| *t).max() {
        let ids: Vec<i64> = stamps.iter().map(|(id, _)| *id).collect();
        api_key_repo::touch(&mut conn, &ids, at).await?;
    }
    let live = api_key_repo::live(&mut conn).await?;
    Ok(live
        .iter()
        .filter_map(|k| {
            let digest: [u8; 32] = k.secret_sha256.as_slice().try_into().ok()?;
            Some((
                digest,
                Entry {
                    id: k.id,
                    principal: principal(k)?,
                },
            ))
        })
        .collect())
}

impl KeyRing {
    /// Loads the live keys from `pool` once (an error is the caller's), then keeps them fresh.
    pub async fn start(pool: PgPool, every: Duration) -> anyhow::Result<Self> {
        let used = Arc::new(Mutex::new(HashMap::new()));
        let initial = load(&pool, &used).await?;
        let u = used.clone();
        let keys = Refreshed::spawn("api keys", initial, every, Duration::from_millis(250), move || {
            let (pool, used) = (pool.clone(), u.clone());
            async move { load(&pool, &used).await }
        });
        Ok(Self { keys, used })
    }

    /// The caller a key names; an unknown key makes the ring reread the keys once (bounded)
    /// before it is refused.
    pub async fn principal(&self, secret: &str) -> Option<Principal> {
        let d = digest(secret);
        let found = match self.keys.current().get(&d) {
            Some(e) => Some(e.clone()),
            None => self.keys.fresher(Duration::from_secs(2)).await.get(&d).cloned(),
        }?;
        if let Ok(mut u) = self.used.lock() {
            u.insert(found.id, Utc::now());
        }
        Some(found.principal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_prefixed_random_and_digest_to_32_bytes() {
        let (a, b) = (new_secret().expect("a"), new_secret().expect("b"));
        assert!(a.starts_with(KEY_PREFIX) && a.len() == KEY_PREFIX.len() + 43, "{a}");
        assert_ne!(a, b);
        assert_ne!(digest(&a), digest(&b));
        assert_eq!(digest(&a), digest(&a.clone()));
    }
}
