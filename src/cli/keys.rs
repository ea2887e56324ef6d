//! `aliexpress keys`: named, scoped API keys for machines.
//!
//! Usage: aliexpress keys create NAME --role ROLE [--seller SELLER] [--json]
//!        aliexpress keys list [--all] [--json]
//!        aliexpress keys revoke NAME
//!
//! The secret is printed once, at creation; Postgres keeps its SHA-256 only. A running `serve`
//! accepts a new key at once and refuses a revoked one within `API_KEY_REFRESH_MS` (5 s by
//! default), without a restart.

use crate::config::InfraConfig;
use crate::domain::access::Role;
use crate::identity::keys::{digest, new_secret};
use crate::store::{api_key_repo, audit_repo, pool, StoreError};

/// Flags of `keys`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// What to do.
    #[command(subcommand)]
    pub action: Action,
}

/// Key actions.
#[derive(Debug, clap::Subcommand)]
pub enum Action {
    /// Make a key and print its secret (shown this once).
    Create {
        /// A name unique among live keys, recorded with every write the key makes.
        name: String,
        /// seller, catalog-admin, operator or reader.
        #[arg(long)]
        role: String,
        /// The seller it acts for (required with --role seller).
        #[arg(long)]
        seller: Option<String>,
        /// Print JSON (with the secret).
        #[arg(long)]
        json: bool,
    },
    /// List live keys (revoked ones too with --all), never their secrets.
    List {
        /// Include revoked keys.
        #[arg(long)]
        all: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a live key by name.
    Revoke {
        /// The key's name.
        name: String,
    },
}

/// Checks a key's name, role and seller (exit code 2 on a bad one).
fn check(name: &str, role: &str, seller: Option<&str>) -> anyhow::Result<Role> {
    let fine = |s: &str| {
        !s.is_empty() && s.len() <= 100 && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_.:@".contains(c))
    };
    if !fine(name) {
        return Err(super::usage(
            "NAME",
            "1 to 100 characters of letters, digits and - _ . : @",
        ));
    }
    let r = Role::parse(role).ok_or_else(|| {
        super::usage(
            "--role",
            format!("{role:?} is not seller, catalog-admin, operator or reader"),
        )
    })?;
    match (r, seller) {
        (Role::Seller, None) => Err(super::usage("--seller", "a seller key needs --seller")),
        (Role::Seller, Some(s)) if !fine(s) => Err(super::usage(
            "--seller",
            "1 to 100 characters of letters, digits and - _ . : @",
        )),
        (Role::Seller, Some(_)) => Ok(r),
        (_, Some(_)) => Err(super::usage("--seller", "only a seller key acts for a seller")),
        (_, None) => Ok(r),
    }
}

/// Runs a key action.
pub async fn run(infra: &InfraConfig, a: Args) -> anyhow::Result<()> {
    if let Action::Create { name, role, seller, .. } = &a.action {
        check(name, role, seller.as_deref())?;
    }
    let p = super::connect::database(infra).await?;
    let mut conn = pool::get(&p).await?;
    match a.action {
        Action::Create {
            name,
            role,
            seller,
            json,
        } => {
            let secret = new_secret()?;
            let made = api_key_repo::create(
                &mut conn,
                &api_key_repo::NewKey {
                    name: &name,
                    role: &role,
                    seller: seller.as_deref(),
                    secret_sha256: &digest(&secret),
                    created_by: &audit_repo::cli_actor(),
                },
            )
            .await
            .map_err(|e| match e {
                StoreError::Conflict(m) => super::usage("NAME", m),
                other => other.into(),
            })?;
            if json {
                println!("{}", serde_json::json!({ "key": made, "secret": secret }));
            } else {
                println!(
                    "key {} ({}{}) created; its secret, shown this once:",
                    made.name,
                    made.role,
                    made.seller
                        .as_deref()
                        .map(|s| format!(" of seller {s}"))
                        .unwrap_or_default()
                );
                println!("{secret}");
            }
        }
        Action::List { all, json } => {
            let keys = api_key_repo::list(&mut conn, all).await?;
            if json {
                println!("{}", serde_json::to_string(&keys)?);
                return Ok(());
            }
            println!(
                "{:<24} {:<14} {:<16} {:<20} {:<20} {:<20} CREATED-BY",
                "NAME", "ROLE", "SELLER", "CREATED", "LAST-USED", "REVOKED"
            );
            let t = |d: Option<chrono::DateTime<chrono::Utc>>| {
                d.map(|d| d.format("%Y-%m-%dT%H:%M:%SZ").to_string())
                    .unwrap_or_else(|| "-".into())
            };
            for k in keys {
                println!(
                    "{:<24} {:<14} {:<16} {:<20} {:<20} {:<20} {}",
                    k.name,
                    k.role,
                    k.seller.as_deref().unwrap_or("-"),
                    t(Some(k.created_at)),
                    t(k.last_used_at),
                    t(k.revoked_at),
                    k.created_by
                );
            }
        }
        Action::Revoke { name } => {
            if !api_key_repo::revoke(&mut conn, &name).await? {
                return Err(super::usage("NAME", format!("no live key named {name:?}")));
            }
            println!("key {name} revoked (a running serve refuses it within API_KEY_REFRESH_MS)");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_roles_and_sellers_are_checked_before_connecting() {
        assert_eq!(check("ci-bot", "operator", None).ok(), Some(Role::Operator));
        assert_eq!(check("acme-feed", "seller", Some("acme")).ok(), Some(Role::Seller));
        for (n, r, s) in [
            ("", "reader", None),
            ("a b", "reader", None),
            ("x", "admin", None),
            ("x", "seller", None),
            ("x", "reader", Some("acme")),
        ] {
            assert!(check(n, r, s).is_err(), "{n:?} {r:?} {s:?}");
        }
    }
}
