//! Sellers own their products: identity-provider tokens (a JWKS this test serves and keys it
//! makes), roles on every endpoint, object-level authorization on reads, writes, history and
//! commands (HTTP and `product.commands`), API keys made and revoked with the CLI.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use aliexpress::cli::dev_issuer::jwks_of;
use aliexpress::config::http::IdentityConfig;
use aliexpress::identity::{KeyRing, OidcVerifier};
use aliexpress::worker::commands::CommandOutcome;
use base64::Engine;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{encode, get_current_timestamp, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use uuid::Uuid;

use crate::commands::{command_consumer, handle, produce_to_partition0};
use crate::helpers::{wait_until, TestApp, TestEnv, TOKEN};

const AUDIENCE: &str = "aliexpress-api";

/// A signing key this test owns.
struct SigningKey {
    kid: String,
    alg: Algorithm,
    key: EncodingKey,
    jwk: Jwk,
}

fn es256(kid: &str) -> SigningKey {
    let doc = aws_lc_rs::signature::EcdsaKeyPair::generate_pkcs8(
        &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        &aws_lc_rs::rand::SystemRandom::new(),
    )
    .expect("ec key");
    let jwk = jwks_of(doc.as_ref(), kid).expect("jwk").keys.remove(0);
    SigningKey {
        kid: kid.into(),
        alg: Algorithm::ES256,
        key: EncodingKey::from_ec_der(doc.as_ref()),
        jwk,
    }
}

fn rs256(kid: &str) -> SigningKey {
    use aws_lc_rs::encoding::AsDer;
    let pair = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).expect("rsa key");
    let der = pair.as_der().expect("pkcs8");
    let pem = format!(
        "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
        base64::engine::general_purpose::STANDARD.encode(der.as_ref())
    );
    let key = EncodingKey::from_rsa_pem(pem.as_bytes()).expect("rsa pem");
    let mut jwk = Jwk::from_encoding_key(&key, Algorithm::RS256).expect("jwk");
    jwk.common.key_id = Some(kid.into());
    SigningKey {
        kid: kid.into(),
        alg: Algorithm::RS256,
        key,
        jwk,
    }
}

/// A JWKS endpoint on a port this test binds; what it serves can be swapped (a rotation).
struct Jwks {
    url: String,
    served: Arc<Mutex<JwkSet>>,
}

impl Jwks {
    async fn serve(keys: &[&SigningKey]) -> Self {
        let served = Arc::new(Mutex::new(JwkSet {
            keys: keys.iter().map(|k| k.jwk.clone()).collect(),
        }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}/jwks.json", listener.local_addr().expect("addr"));
        let s = served.clone();
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                let body = serde_json::to_string(&*s.lock().expect("jwks")).expect("json");
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    let _ = sock.read(&mut buf).await;
                    let head = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = sock.write_all(head.as_bytes()).await;
                    let _ = sock.write_all(body.as_bytes()).await;
                });
            }
        });
        Self { url, served }
    }

    fn rotate(&self, keys: &[&SigningKey]) {
        self.served.lock().expect("jwks").keys = keys.iter().map(|k| k.jwk.clone()).collect();
    }

    fn issuer(&self) -> String {
        self.url.trim_end_matches("/jwks.json").to_owned()
    }
}

/// The claims of a token for `roles` (and `seller`), valid for an hour.
fn claims(jwks: &Jwks, sub: &str, roles: &[&str], seller: Option<&str>) -> Value {
    let now = get_current_timestamp();
    let mut c = json!({"iss": jwks.issuer(), "aud": AUDIENCE, "sub": sub, "iat": now, "nbf": now, "exp": now + 3600, "roles": roles});
    if let Some(s) = seller {
        c["seller_id"] = json!(s);
    }
    c
}

fn sign(key: &SigningKey, claims: &Value) -> String {
    let mut h = Header::new(key.alg);
    h.kid = Some(key.kid.clone());
    encode(&h, claims, &key.key).expect("signed")
}

/// The API over a fresh environment, trusting `jwks` (keys refetched at most every 200 ms on
/// an unknown kid) and rereading API keys every 300 ms.
async fn app_trusting(jwks: &Jwks) -> TestApp {
    let env = TestEnv::new().await;
    let config = IdentityConfig {
        oidc_issuer: Some(jwks.issuer()),
        oidc_audience: AUDIENCE.into(),
        oidc_jwks_url: Some(jwks.url.clone()),
        oidc_role_claim: "roles".into(),
        oidc_seller_claim: "seller_id".into(),
        oidc_leeway_secs: 5,
        oidc_jwks_refresh_secs: 300,
        oidc_jwks_min_refetch_ms: 200,
        api_key_refresh_ms: 300,
    };
    let oidc = OidcVerifier::start(&config).await.expect("verifier");
    let keys = KeyRing::start(env.pool.clone(), Duration::from_millis(300))
        .await
        .expect("key ring");
    TestApp::spawn_on(env, move |s| {
        s.access.identity.oidc = oidc;
        s.access.identity.keys = keys;
        // Many deliberate 401s below: the failed-authentication budget is another test's.
        s.access.rate_limits = Arc::new(aliexpress::http::RateLimits::new(&aliexpress::config::ApiConfig {
            auth_failures_per_minute: 0,
            ..Default::default()
        }));
    })
    .await
}

async fn call(app: &TestApp, method: &str, path: &str, token: Option<&str>, body: Option<Value>) -> reqwest::Response {
    let mut r = app
        .http
        .request(method.to_uppercase().parse().expect("method"), app.url(path));
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    if let Some(b) = body {
        r = r.json(&b);
    }
    r.send().await.expect("request")
}

fn new_product(sku: &str) -> Value {
    json!({"sku": sku, "title": format!("Lamp {sku}"), "price": {"amount_minor": 1999, "currency": "EUR"}, "stock": 3})
}

#[tokio::test(flavor = "multi_thread")]
async fn every_endpoint_refuses_callers_without_its_roles_and_admits_those_with_them() {
    let key = es256("k1");
    let jwks = Jwks::serve(&[&key]).await;
    let app = app_trusting(&jwks).await;
    let doc: Value = app.get("/openapi.json").await.json().await.expect("document");
    let mut checked = 0;
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("item") {
            let Some(security) = op["security"].as_array() else {
                continue;
            };
            // Operations open to anonymous callers decide per object (tested below).
            if security.is_empty() || security.iter().any(|r| r.as_object().is_some_and(|o| o.is_empty())) {
                continue;
            }
            let roles: Vec<String> = serde_json::from_value(security[0]["bearer"].clone()).expect("bearer roles");
            assert!(!roles.is_empty(), "{method} {path} names no role");
            assert_eq!(
                security[1]["jwt"], security[0]["bearer"],
                "{method} {path}: the jwt alternative has other roles"
            );
            let others: Vec<&str> = ["seller", "catalog-admin", "operator", "reader"]
                .into_iter()
                .filter(|r| !roles.iter().any(|x| x == r))
                .collect();
            let target = path
                .replace("{id}", &Uuid::now_v7().to_string())
                .replace("{variant_id}", "1")
                .replace("{key}", "no-such-type")
                .replace("{slug}", "no-such-category");
            let body = (method != "get").then(|| json!({}));
            let without = sign(&key, &claims(&jwks, "someone", &others, Some("nobody")));
            let r = call(&app, method, &target, Some(&without), body.clone()).await;
            assert_eq!(r.status(), 403, "{method} {path} with roles {others:?}");
            let r = call(&app, method, &target, None, body.clone()).await;
            assert_eq!(r.status(), 401, "{method} {path} anonymous");
            for role in &roles {
                let with = sign(&key, &claims(&jwks, "someone", &[role], Some("nobody")));
                let r = call(&app, method, &target, Some(&with), body.clone()).await;
                assert!(
                    ![401, 403].contains(&r.status().as_u16()),
                    "{method} {path} as {role}: {}",
                    r.status()
                );
            }
            checked += 1;
        }
    }
    assert!(checked >= 25, "only {checked} operations checked");
}

#[tokio::test(flavor = "multi_thread")]
async fn sellers_see_and_change_only_their_own_products_until_an_admin_transfers_one() {
    let key = es256("k1");
    let jwks = Jwks::serve(&[&key]).await;
    let app = app_trusting(&jwks).await;
    let acme = sign(&key, &claims(&jwks, "alice", &["seller"], Some("acme")));
    let globex = sign(&key, &claims(&jwks, "bob", &["seller"], Some("globex")));
    let admin = sign(&key, &claims(&jwks, "carol", &["catalog-admin"], None));

    let r = call(&app, "POST", "/api/products", Some(&acme), Some(new_product("ACME-1"))).await;
    assert_eq!(r.status(), 201);
    let p: Value = r.json().await.expect("json");
    assert_eq!(p["owner"], "acme", "the creator's seller owns it");
    let id = p["id"].as_str().expect("id").to_owned();

    // Another seller: the draft does not exist, for reads, writes, history and commands.
    let other = [
        ("GET", format!("/api/products/{id}"), None),
        ("GET", format!("/api/products/{id}/history"), None),
        (
            "PATCH",
            format!("/api/products/{id}"),
            Some(json!({"title": "Mine now"})),
        ),
        (
            "POST",
            format!("/api/products/{id}/price"),
            Some(json!({"amount_minor": 1, "currency": "EUR"})),
        ),
        ("POST", format!("/api/products/{id}/stock"), Some(json!({"set": 0}))),
        ("POST", format!("/api/products/{id}/publish"), None),
        ("POST", format!("/api/products/{id}/archive"), None),
        (
            "POST",
            format!("/api/products/{id}/variants"),
            Some(json!({"sku": "GLOBEX-X", "options": {"size": "M"}})),
        ),
        (
            "PUT",
            format!("/api/products/{id}/variants/1/prices"),
            Some(json!({"prices": [{"amount_minor": 5, "currency": "EUR"}]})),
        ),
    ];
    for (m, path, body) in &other {
        let r = call(&app, m, path, Some(&globex), body.clone()).await;
        assert_eq!(r.status(), 404, "{m} {path} by another seller");
    }
    let r = call(
        &app,
        "POST",
        "/api/products/{id}/transfer".replace("{id}", &id).as_str(),
        Some(&globex),
        Some(json!({"owner": "globex"})),
    )
    .await;
    assert_eq!(r.status(), 403, "a seller may not transfer");
    let r = call(&app, "GET", "/api/products?status=draft", Some(&globex), None).await;
    let listed: Value = r.json().await.expect("json");
    assert!(
        listed["items"].as_array().expect("items").is_empty(),
        "another seller's drafts are not listed"
    );
    let r = call(
        &app,
        "GET",
        "/api/products?status=draft&owner=acme",
        Some(&globex),
        None,
    )
    .await;
    assert_eq!(r.status(), 403);
    let r = call(&app, "GET", "/api/products?status=draft", Some(&acme), None).await;
    let listed: Value = r.json().await.expect("json");
    assert_eq!(
        listed["items"].as_array().expect("items").len(),
        1,
        "the seller lists their own draft"
    );

    // The owner changes it; once published everyone reads it, still nobody else writes it.
    for (m, path) in [
        ("PATCH", format!("/api/products/{id}")),
        ("POST", format!("/api/products/{id}/publish")),
    ] {
        let body = (m == "PATCH").then(|| json!({"title": "Acme lamp"}));
        let r = call(&app, m, &path, Some(&acme), body).await;
        assert_eq!(r.status(), 200, "{m} {path} by its seller");
    }
    assert_eq!(
        call(&app, "GET", &format!("/api/products/{id}"), Some(&globex), None)
            .await
            .status(),
        200
    );
    assert_eq!(
        call(&app, "GET", &format!("/api/products/{id}"), None, None)
            .await
            .status(),
        200
    );
    let r = call(
        &app,
        "POST",
        &format!("/api/products/{id}/unpublish"),
        Some(&globex),
        None,
    )
    .await;
    assert_eq!(r.status(), 404);

    // A catalog admin transfers it: now globex's, and acme's writes are refused.
    let r = call(
        &app,
        "POST",
        &format!("/api/products/{id}/transfer"),
        Some(&admin),
        Some(json!({"owner": "globex"})),
    )
    .await;
    assert_eq!(r.status(), 200);
    let r = call(
        &app,
        "POST",
        &format!("/api/products/{id}/unpublish"),
        Some(&acme),
        None,
    )
    .await;
    assert_eq!(r.status(), 404);
    let r = call(
        &app,
        "POST",
        &format!("/api/products/{id}/unpublish"),
        Some(&globex),
        None,
    )
    .await;
    assert_eq!(r.status(), 200);
    let r = call(&app, "GET", &format!("/api/products/{id}/history"), Some(&globex), None).await;
    assert_eq!(r.status(), 200);
    let h: Value = r.json().await.expect("history");
    let items = h["items"].as_array().expect("items");
    let actors: Vec<&str> = items.iter().filter_map(|e| e["actor"].as_str()).collect();
    assert_eq!(
        actors,
        ["jwt:alice", "jwt:alice", "jwt:alice", "jwt:carol", "jwt:bob"],
        "every write names its caller"
    );
    let transfer = items
        .iter()
        .find(|e| e["event_type"] == "ProductTransferred")
        .expect("the transfer");
    let owner = transfer["changes"]
        .as_array()
        .expect("changes")
        .iter()
        .find(|c| c["field"] == "owner")
        .expect("owner change");
    assert_eq!((&owner["before"], &owner["after"]), (&json!("acme"), &json!("globex")));
    assert_eq!(
        call(&app, "GET", &format!("/api/products/{id}/history"), Some(&acme), None)
            .await
            .status(),
        404
    );
    // Operators read everything and change no product.
    let operator = sign(&key, &claims(&jwks, "olga", &["operator"], None));
    assert_eq!(
        call(&app, "GET", &format!("/api/products/{id}"), Some(&operator), None)
            .await
            .status(),
        200
    );
    let r = call(
        &app,
        "POST",
        &format!("/api/products/{id}/publish"),
        Some(&operator),
        None,
    )
    .await;
    assert_eq!(r.status(), 403);
}

#[tokio::test(flavor = "multi_thread")]
async fn commands_carry_their_caller_and_another_sellers_product_is_rejected_with_a_reason() {
    let key = es256("k1");
    let jwks = Jwks::serve(&[&key]).await;
    let app = app_trusting(&jwks).await;
    let acme = sign(&key, &claims(&jwks, "alice", &["seller"], Some("acme")));
    let r = call(&app, "POST", "/api/products", Some(&acme), Some(new_product("CMD-1"))).await;
    let id: Uuid = r.json::<Value>().await.expect("json")["id"]
        .as_str()
        .expect("id")
        .parse()
        .expect("uuid");

    // Straight onto product.commands, naming another seller: rejected, nothing changes.
    let caller = json!({"subject": "key:globex-feed", "roles": ["seller"], "seller": "globex"});
    let refused = produce_to_partition0(
        &app.env,
        id,
        json!({"command_type": "SetStock", "payload": {"stock": 0}, "caller": caller}),
    )
    .await;
    let consumer = command_consumer(&app.env);
    let outcomes = handle(&consumer, 1).await;
    assert!(
        matches!(&outcomes[0], CommandOutcome::Rejected(r) if r.contains("does not exist for seller \"globex\"")),
        "{outcomes:?}"
    );
    let r = call(&app, "GET", &format!("/api/commands/{refused}"), Some(TOKEN), None).await;
    let rec: Value = r.json().await.expect("record");
    assert_eq!(rec["status"], "rejected");
    assert!(rec["reason"].as_str().expect("reason").contains("globex"), "{rec}");
    let p: Value = call(&app, "GET", &format!("/api/products/{id}"), Some(&acme), None)
        .await
        .json()
        .await
        .expect("p");
    assert_eq!(
        (p["version"].as_i64(), p["variants"][0]["stock"].as_i64()),
        (Some(1), Some(3))
    );

    // Through the API, the caller is stamped whatever the body claims: the owner's applies.
    let r = call(
        &app,
        "POST",
        "/api/commands",
        Some(&acme),
        Some(
            json!({"product_id": id, "command_type": "SetStock", "payload": {"stock": 7},
                    "caller": {"subject": "forged", "roles": ["catalog-admin"]}}),
        ),
    )
    .await;
    assert_eq!(r.status(), 202);
    // The API hands commands to the topic through the outbox.
    assert_eq!(app.env.drain_outbox().await, 2, "the creation's event and the command");
    let outcomes = handle(&consumer, 1).await;
    assert!(matches!(outcomes[0], CommandOutcome::Applied(2)), "{outcomes:?}");
    let r = call(&app, "GET", &format!("/api/products/{id}/history"), Some(&acme), None).await;
    let h: Value = r.json().await.expect("history");
    assert_eq!(h["items"][1]["actor"], "jwt:alice", "the API's caller, not the body's");
    // A seller's creation through the command topic is theirs.
    let fresh = Uuid::now_v7();
    let r = call(
        &app,
        "POST",
        "/api/commands",
        Some(&acme),
        Some(json!({"product_id": fresh, "command_type": "CreateProduct", "payload": {"sku": "CMD-2", "title": "Queued lamp"}})),
    )
    .await;
    assert_eq!(r.status(), 202);
    assert_eq!(
        app.env.drain_outbox().await,
        2,
        "the command and the stock change's event"
    );
    let outcomes = handle(&consumer, 1).await;
    assert!(matches!(outcomes[0], CommandOutcome::Applied(1)), "{outcomes:?}");
    let created: Value = call(&app, "GET", &format!("/api/products/{fresh}"), Some(&acme), None)
        .await
        .json()
        .await
        .expect("p");
    assert_eq!(created["owner"], "acme");
    // A seller may not queue a transfer; an operator no command at all.
    let t = json!({"product_id": id, "command_type": "TransferOwnership", "payload": {"owner": "acme2"}});
    assert_eq!(
        call(&app, "POST", "/api/commands", Some(&acme), Some(t.clone()))
            .await
            .status(),
        403
    );
    let operator = sign(&key, &claims(&jwks, "olga", &["operator"], None));
    assert_eq!(
        call(&app, "POST", "/api/commands", Some(&operator), Some(t))
            .await
            .status(),
        403
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn tokens_are_checked_for_issuer_audience_time_algorithm_key_and_signature() {
    let (es, rs, stranger) = (es256("ec-1"), rs256("rsa-1"), es256("not-served"));
    let jwks = Jwks::serve(&[&es, &rs]).await;
    let app = app_trusting(&jwks).await;
    let probe = format!("/api/commands/{}", Uuid::now_v7());
    let status = |t: String| {
        let (app, probe) = (&app, probe.clone());
        async move { call(app, "GET", &probe, Some(&t), None).await.status().as_u16() }
    };
    let good = claims(&jwks, "r", &["reader"], None);
    assert_eq!(status(sign(&es, &good)).await, 404, "ES256 accepted");
    assert_eq!(status(sign(&rs, &good)).await, 404, "RS256 accepted");

    let now = get_current_timestamp();
    let with = |k: &str, v: Value| {
        let mut c = good.clone();
        c[k] = v;
        c
    };
    let refused: Vec<(&str, String)> = vec![
        ("expired", sign(&es, &with("exp", json!(now - 600)))),
        ("not yet valid", sign(&es, &with("nbf", json!(now + 600)))),
        (
            "wrong issuer",
            sign(&es, &with("iss", json!("https://evil.example.com"))),
        ),
        ("wrong audience", sign(&es, &with("aud", json!("another-api")))),
        ("unknown kid", sign(&stranger, &good)),
        (
            "no subject",
            sign(&es, &{
                let mut c = good.clone();
                c.as_object_mut().expect("object").remove("sub");
                c
            }),
        ),
        ("alg none", {
            let b64 = |v: Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
            format!("{}.{}.", b64(json!({"alg": "none", "kid": "ec-1"})), b64(good.clone()))
        }),
        ("HS256 with the public key", {
            let n = match &rs.jwk.algorithm {
                jsonwebtoken::jwk::AlgorithmParameters::RSA(p) => p.n.clone(),
                _ => unreachable!("an RSA key"),
            };
            let mut h = Header::new(Algorithm::HS256);
            h.kid = Some("rsa-1".into());
            encode(&h, &good, &EncodingKey::from_secret(n.as_bytes()).expect("hmac key")).expect("hs256")
        }),
        ("tampered", {
            let t = sign(&es, &good);
            let mut parts: Vec<String> = t.split('.').map(str::to_owned).collect();
            parts[1] = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(with("roles", json!(["catalog-admin"])).to_string());
            parts.join(".")
        }),
    ];
    for (why, token) in refused {
        assert_eq!(status(token).await, 401, "{why}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rotated_signing_key_is_picked_up_without_a_restart() {
    let (old, new) = (es256("2026-old"), rs256("2026-new"));
    let jwks = Jwks::serve(&[&old]).await;
    let app = app_trusting(&jwks).await;
    let probe = format!("/api/commands/{}", Uuid::now_v7());
    let c = claims(&jwks, "r", &["reader"], None);
    let token = sign(&new, &c);
    assert_eq!(
        call(&app, "GET", &probe, Some(&token), None).await.status(),
        401,
        "not served yet"
    );
    jwks.rotate(&[&new]);
    let picked_up = wait_until(Duration::from_secs(10), || async {
        call(&app, "GET", &probe, Some(&token), None).await.status() == 404
    })
    .await;
    assert!(picked_up, "the new key was not fetched on its unknown kid");
    assert_eq!(
        call(&app, "GET", &probe, Some(&sign(&old, &c)), None).await.status(),
        401,
        "the retired key is gone"
    );
}

fn cli(env: &TestEnv, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_aliexpress"))
        .envs(env.bin_env())
        .args(args)
        .output()
        .expect("runs")
}

#[tokio::test(flavor = "multi_thread")]
async fn api_keys_work_at_once_are_named_in_the_history_and_stop_soon_after_revocation() {
    let jwks = Jwks::serve(&[]).await;
    let app = app_trusting(&jwks).await;
    let out = cli(
        &app.env,
        &[
            "keys",
            "create",
            "acme-feed",
            "--role",
            "seller",
            "--seller",
            "acme",
            "--json",
        ],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let made: Value = serde_json::from_slice(&out.stdout).expect("json");
    let secret = made["secret"].as_str().expect("secret").to_owned();
    assert!(secret.starts_with("axk_"));
    let again = cli(&app.env, &["keys", "create", "acme-feed", "--role", "reader"]);
    assert_eq!(again.status.code(), Some(2), "a live name is taken");
    let bad = cli(&app.env, &["keys", "create", "x", "--role", "seller"]);
    assert_eq!(bad.status.code(), Some(2), "a seller key needs --seller");

    // Works at once, as its seller, and is named in the history.
    let r = call(&app, "POST", "/api/products", Some(&secret), Some(new_product("KEY-1"))).await;
    assert_eq!(r.status(), 201);
    let p: Value = r.json().await.expect("json");
    assert_eq!(p["owner"], "acme");
    let id = p["id"].as_str().expect("id");
    let h: Value = call(&app, "GET", &format!("/api/products/{id}/history"), Some(&secret), None)
        .await
        .json()
        .await
        .expect("h");
    assert_eq!(h["items"][0]["actor"], "key:acme-feed");
    let listed = cli(&app.env, &["keys", "list", "--json"]);
    let stdout = String::from_utf8_lossy(&listed.stdout);
    assert!(!stdout.contains(&secret), "list never shows a secret");
    let used = wait_until(Duration::from_secs(5), || async {
        let l: Value = serde_json::from_slice(&cli(&app.env, &["keys", "list", "--json"]).stdout).expect("json");
        l[0]["last_used_at"].is_string()
    })
    .await;
    assert!(used, "the last use is recorded");

    let out = cli(&app.env, &["keys", "revoke", "acme-feed"]);
    assert!(out.status.success());
    let started = std::time::Instant::now();
    let refused = wait_until(Duration::from_secs(5), || async {
        call(&app, "GET", &format!("/api/products/{id}/history"), Some(&secret), None)
            .await
            .status()
            == 401
    })
    .await;
    assert!(refused, "a revoked key still works");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "refused after {:?}, over the 300 ms refresh",
        started.elapsed()
    );
    assert_eq!(
        cli(&app.env, &["keys", "revoke", "acme-feed"]).status.code(),
        Some(2),
        "nothing live to revoke"
    );
}
