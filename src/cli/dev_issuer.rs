//! `aliexpress dev-issuer`: a token issuer for local use only, so `make up` can hand out a
//! seller's or an operator's token without a real identity provider. It owns one ES256 key
//! (made once into `--key-file`, mode 600), serves its JWKS and discovery document, and signs
//! tokens on request. It listens on loopback only and refuses any other address.
//!
//! Usage: aliexpress dev-issuer [--bind 127.0.0.1:9400] --key-file PATH [--audience aliexpress-api]
//!
//!   GET  /.well-known/jwks.json               the signing key (`kid` local-1)
//!   GET  /.well-known/openid-configuration    issuer and jwks_uri
//!   POST /token {"roles": ["seller"], "seller": "acme", "sub": "alice", "ttl_secs": 3600}
//!
//! `serve` takes it as any issuer: `OIDC_ISSUER=http://127.0.0.1:9400`.

use std::path::{Path, PathBuf};

use actix_web::{get, post, web, App, HttpResponse, HttpServer};
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde::Deserialize;

/// The key id of the issuer's one key.
pub const KID: &str = "local-1";

/// Flags of `dev-issuer`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Loopback address to listen on.
    #[arg(long, default_value = "127.0.0.1:9400")]
    pub bind: String,
    /// The signing key (PKCS#8 DER), made on first start.
    #[arg(long)]
    pub key_file: PathBuf,
    /// The audience of the tokens.
    #[arg(long, default_value = "aliexpress-api")]
    pub audience: String,
}

/// Reads the ES256 key of `path`, making it first if the file does not exist.
pub fn load_or_create_key(path: &Path) -> anyhow::Result<Vec<u8>> {
    if let Ok(der) = std::fs::read(path) {
        return Ok(der);
    }
    use aws_lc_rs::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
    let doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &aws_lc_rs::rand::SystemRandom::new())
        .map_err(|_| anyhow::anyhow!("could not make a key"))?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)?;
        f.write_all(doc.as_ref())?;
    }
    Ok(doc.as_ref().to_vec())
}

/// The public half of a key as a JWKS.
pub fn jwks_of(der: &[u8], kid: &str) -> anyhow::Result<JwkSet> {
    let mut jwk = Jwk::from_encoding_key(&EncodingKey::from_ec_der(der), Algorithm::ES256)?;
    jwk.common.key_id = Some(kid.to_owned());
    Ok(JwkSet { keys: vec![jwk] })
}

struct Issuer {
    url: String,
    audience: String,
    der: Vec<u8>,
    jwks: serde_json::Value,
}

/// What a token is asked for.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenRequest {
    roles: Vec<String>,
    #[serde(default)]
    seller: Option<String>,
    #[serde(default)]
    sub: Option<String>,
    #[serde(default)]
    ttl_secs: Option<u64>,
}

#[get("/.well-known/jwks.json")]
async fn jwks(i: web::Data<Issuer>) -> HttpResponse {
    HttpResponse::Ok().json(&i.jwks)
}

#[get("/.well-known/openid-configuration")]
async fn discovery(i: web::Data<Issuer>) -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({
        "issuer": i.url,
        "jwks_uri": format!("{}/.well-known/jwks.json", i.url),
        "id_token_signing_alg_values_supported": ["ES256"],
    }))
}

#[post("/token")]
async fn token(i: web::Data<Issuer>, r: web::Json<TokenRequest>) -> HttpResponse {
    let now = jsonwebtoken::get_current_timestamp();
    let ttl = r.ttl_secs.unwrap_or(3600).min(86_400);
    let sub = r
        .sub
        .clone()
        .or_else(|| r.seller.clone())
        .unwrap_or_else(|| "local-user".into());
    let mut claims = serde_json::json!({
        "iss": i.url, "aud": i.audience, "sub": sub, "iat": now, "nbf": now, "exp": now + ttl, "roles": r.roles,
    });
    if let Some(s) = &r.seller {
        claims["seller_id"] = s.clone().into();
    }
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some(KID.into());
    match encode(&header, &claims, &EncodingKey::from_ec_der(&i.der)) {
        Ok(t) => {
            HttpResponse::Ok().json(serde_json::json!({"access_token": t, "token_type": "Bearer", "expires_in": ttl}))
        }
        Err(e) => HttpResponse::InternalServerError().body(e.to_string()),
    }
}

/// Serves the issuer until SIGINT/SIGTERM.
pub async fn run(a: Args) -> anyhow::Result<()> {
    let addr: std::net::SocketAddr = a
        .bind
        .parse()
        .map_err(|_| super::usage("--bind", format!("{:?} is not an IP:port", a.bind)))?;
    if !addr.ip().is_loopback() {
        return Err(super::usage(
            "--bind",
            "the development issuer listens on loopback only",
        ));
    }
    let der = load_or_create_key(&a.key_file)?;
    let issuer = web::Data::new(Issuer {
        url: format!("http://{addr}"),
        audience: a.audience,
        jwks: serde_json::to_value(jwks_of(&der, KID)?)?,
        der,
    });
    tracing::info!(issuer = %issuer.url, "development token issuer listening");
    HttpServer::new(move || {
        App::new()
            .app_data(issuer.clone())
            .service(jwks)
            .service(discovery)
            .service(token)
    })
    .workers(1)
    .bind(addr)?
    .run()
    .await?;
    Ok(())
}
