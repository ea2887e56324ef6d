//! The whole flow against the secured profile of the local stack (`deploy/local/stack up
//! --secure`, which `make test` runs): Postgres with sslmode=verify-full against the stack's
//! CA, Kafka over SASL_SSL with SCRAM-SHA-512 (and mTLS), Redis over TLS with an ACL user.
//! Settings come from the profile's env file: `$ALIEXPRESS_SECURE_ENV`, else
//! `$ALIEXPRESS_STATE_DIR/secure.env`, else /var/tmp/aliexpress-stack/secure.env. Without
//! that file every test here says so and passes without running.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use aliexpress::bus::{admin, KafkaConnection};
use aliexpress::cache::{ProductCache, RedisEndpoint};
use aliexpress::config::{InfraConfig, Secret};
use aliexpress::store::pool;
use diesel_async::RunQueryDsl;
use serde_json::{json, Value};

use crate::helpers::{TestApp, TestEnv};

/// The secured profile's settings, as written by the stack.
struct Secure {
    vars: HashMap<String, String>,
    file: PathBuf,
}

fn env_file() -> PathBuf {
    if let Ok(p) = std::env::var("ALIEXPRESS_SECURE_ENV") {
        return PathBuf::from(p);
    }
    let dir = std::env::var("ALIEXPRESS_STATE_DIR").unwrap_or_else(|_| "/var/tmp/aliexpress-stack".into());
    Path::new(&dir).join("secure.env")
}

/// The profile, or `None` (with a line saying why the test is skipped).
fn secure() -> Option<Secure> {
    let file = env_file();
    let Ok(text) = std::fs::read_to_string(&file) else {
        eprintln!(
            "SKIPPED: no secured profile at {} (run `deploy/local/stack up --secure`, as `make test` does)",
            file.display()
        );
        return None;
    };
    let vars = text
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().trim_matches('\'').to_owned()))
        .collect();
    Some(Secure { vars, file })
}

impl Secure {
    fn var(&self, k: &str) -> String {
        self.vars
            .get(k)
            .cloned()
            .unwrap_or_else(|| panic!("{k} missing from {}", self.file.display()))
    }

    fn ca(&self) -> PathBuf {
        PathBuf::from(self.var("KAFKA_SSL_CA_LOCATION"))
    }

    /// The stack's state folder (the env file sits in it).
    fn state_dir(&self) -> PathBuf {
        self.file.parent().map(Path::to_path_buf).unwrap_or_default()
    }

    /// Points `i` at the secured listeners (the database URL is set by `TestEnv`).
    fn apply(&self, i: &mut InfraConfig) {
        i.redis.url = self.var("REDIS_URL").into();
        i.redis.ca_file = Some(PathBuf::from(self.var("REDIS_CA_FILE")));
        i.kafka.bootstrap_servers = self.var("KAFKA_BOOTSTRAP_SERVERS");
        i.kafka.security_protocol = Some(self.var("KAFKA_SECURITY_PROTOCOL"));
        i.kafka.sasl_mechanism = Some(self.var("KAFKA_SASL_MECHANISM"));
        i.kafka.sasl_username = Some(self.var("KAFKA_SASL_USERNAME"));
        i.kafka.sasl_password = Some(Secret::new(self.var("KAFKA_SASL_PASSWORD")));
        i.kafka.ssl_ca_location = Some(self.ca());
        i.opensearch.url = self.var("OPENSEARCH_URL").into();
    }

    /// A fresh environment (database, topics, namespace) reached only through the secured
    /// listeners.
    async fn test_env(&self) -> TestEnv {
        TestEnv::with_settings(self.var("DATABASE_URL"), |i| self.apply(i)).await
    }

    /// The values that must never be printed.
    fn secrets(&self) -> Vec<String> {
        let redis = url::Url::parse(&self.var("REDIS_URL")).expect("REDIS_URL parses");
        vec![
            self.var("KAFKA_SASL_PASSWORD"),
            redis.password().expect("REDIS_URL has a password").to_owned(),
        ]
    }
}

/// `url` with its query parameter `key` set to `value`.
fn with_param(url: &str, key: &str, value: &str) -> String {
    let mut u = url::Url::parse(url).expect("url");
    let pairs: Vec<(String, String)> = u
        .query_pairs()
        .filter(|(k, _)| k != key)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    u.query_pairs_mut().clear().extend_pairs(pairs).append_pair(key, value);
    u.to_string()
}

/// A CA the stack never signed anything with: made once per test run, in cargo's
/// per-target temporary folder (rewritten by the next run, so none pile up).
fn unrelated_ca() -> PathBuf {
    static CA: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    CA.get_or_init(make_unrelated_ca).clone()
}

fn make_unrelated_ca() -> PathBuf {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("aliexpress-other-ca");
    std::fs::create_dir_all(&dir).expect("temp dir");
    let st = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=other CA",
        ])
        .arg("-keyout")
        .arg(dir.join("ca.key"))
        .arg("-out")
        .arg(dir.join("ca.pem"))
        .stderr(Stdio::null())
        .status()
        .expect("openssl runs");
    assert!(st.success());
    dir.join("ca.pem")
}

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_aliexpress"))
}

/// The child and a thread reading its stdout and stderr as they come: a role logging at debug
/// fills a pipe nobody reads in moments, and then blocks on its next log line.
fn drain(mut child: std::process::Child) -> (std::process::Child, std::thread::JoinHandle<String>) {
    use std::io::Read;
    let (mut out, mut err) = (child.stdout.take(), child.stderr.take());
    let errs = std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(e) = err.as_mut() {
            let _ = e.read_to_string(&mut s);
        }
        s
    });
    let all = std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(o) = out.as_mut() {
            let _ = o.read_to_string(&mut s);
        }
        s + &errs.join().unwrap_or_default()
    });
    (child, all)
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_write_goes_through_sasl_ssl_kafka_into_search_and_tls_redis() {
    let Some(s) = secure() else { return };
    let app = TestApp::spawn_on(s.test_env().await, |_| {}).await;
    let p = app.create_product("SEC-1", "Armoured kettle").await;
    let id = p["id"].as_str().expect("id").to_owned();
    assert_eq!(
        app.env.drain_outbox().await,
        1,
        "the create event, published over SASL_SSL"
    );

    let mut projector = app.env.projector(None, None).await;
    let o = app.env.consume_until_idle(&mut projector).await;
    assert_eq!(o.applied, 1, "{o:?}");
    let doc = app.env.document(&id).await.expect("indexed");
    assert_eq!(doc["_source"]["title"], "Armoured kettle");

    let cached = app
        .env
        .cache()
        .get(uuid::Uuid::parse_str(&id).expect("uuid"))
        .await
        .expect("redis over TLS answers");
    assert!(cached.is_some(), "the projection wrote the product to Redis over TLS");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_command_through_sasl_ssl_kafka_is_applied() {
    let Some(s) = secure() else { return };
    let app = TestApp::spawn_on(s.test_env().await, |_| {}).await;
    let p = app.create_product("SEC-2", "Secure toaster").await;
    let id = p["id"].as_str().expect("id").to_owned();
    let r = app
        .post(
            "/api/commands",
            json!({"product_id": id, "command_type": "ChangePrice", "payload": {"price": {"amount_minor": 4200, "currency": "USD"}}}),
        )
        .await;
    assert_eq!(r.status(), 202);
    let cid = r.json::<Value>().await.expect("json")["command_id"]
        .as_str()
        .expect("command id")
        .to_owned();
    assert_eq!(app.env.drain_outbox().await, 2);

    // The command consumer as the binary runs it, on the secured listeners only.
    let mut child = bin()
        .envs(app.env.bin_env())
        .arg("run-product-consumer")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starts");
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut status = Value::Null;
    while Instant::now() < deadline {
        status = app
            .get_with_token(&format!("/api/commands/{cid}"))
            .await
            .json()
            .await
            .expect("json");
        if status["status"] == "applied" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let _ = child.kill();
    let out = child.wait_with_output().expect("waits");
    assert_eq!(
        status["status"],
        "applied",
        "{status} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The write side applied it (reads may still be served from the cache until the
    // projection runs).
    assert_eq!(status["result_version"], 2, "{status}");
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_verify_full_against_the_stack_ca_is_encrypted_and_a_wrong_ca_is_refused() {
    #[derive(diesel::QueryableByName)]
    struct Ssl {
        #[diesel(sql_type = diesel::sql_types::Bool)]
        ssl: bool,
    }
    let Some(s) = secure() else { return };
    let url = s.var("DATABASE_URL");
    assert!(url.contains("sslmode=verify-full"), "{url}");
    let mut c = pool::connect(&url, Duration::from_secs(10))
        .await
        .expect("verify-full connects");
    let r: Ssl = diesel::sql_query("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .get_result(&mut c)
        .await
        .expect("query");
    assert!(r.ssl, "the connection is encrypted");

    // Pooled connections too.
    let p = pool::build_pool(&url, 2, Duration::from_secs(10)).expect("pool");
    let mut pc = pool::get(&p).await.expect("pooled verify-full connects");
    let r: Ssl = diesel::sql_query("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .get_result(&mut *pc)
        .await
        .expect("query");
    assert!(r.ssl);

    let other = unrelated_ca();
    let wrong = with_param(&url, "sslrootcert", &other.display().to_string());
    let e = pool::connect(&wrong, Duration::from_secs(10))
        .await
        .err()
        .expect("a server certificate from another CA is refused");
    assert!(e.to_string().to_lowercase().contains("certificate"), "{e}");

    // verify-ca checks the chain only: the right CA passes with a name the certificate lacks
    // (the address below is not in the certificate), while verify-full refuses it.
    let by_other_name = url.replace("127.0.0.1", "127.0.0.2");
    if pool::connect(
        &with_param(&by_other_name, "sslmode", "verify-ca"),
        Duration::from_secs(10),
    )
    .await
    .is_ok()
    {
        let e = pool::connect(&by_other_name, Duration::from_secs(10))
            .await
            .err()
            .expect("verify-full refuses a certificate without the host's name");
        assert!(e.to_string().to_lowercase().contains("certificate"), "{e}");
    } else {
        eprintln!("postgres listens on 127.0.0.1 only: verify-ca by another name not checked");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_kafka_password_exits_2_naming_the_setting_and_never_prints_it() {
    let Some(s) = secure() else { return };
    let env = s.test_env().await;
    let wrong = format!("wrong-{}", uuid::Uuid::new_v4().simple());
    let out = bin()
        .envs(env.bin_env())
        .env("KAFKA_SASL_PASSWORD", &wrong)
        .env("RUST_LOG", "debug")
        .arg("process-outbox")
        .output()
        .expect("runs");
    let all = text(&out);
    assert_eq!(out.status.code(), Some(2), "{all}");
    let last = String::from_utf8_lossy(&out.stderr)
        .lines()
        .last()
        .unwrap_or_default()
        .to_owned();
    assert!(last.contains("KAFKA_SASL_PASSWORD"), "{last}");
    assert!(last.to_lowercase().contains("authentication"), "{last}");
    assert!(!all.contains(&wrong), "the wrong password was printed");
    for secret in s.secrets() {
        assert!(!all.contains(&secret), "a secret was printed");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn kafka_mtls_accepts_the_client_certificate_and_refuses_a_client_without_one() {
    let Some(s) = secure() else { return };
    let base = KafkaConnection::new(s.var("SECURE_KAFKA_MTLS_BOOTSTRAP_SERVERS"))
        .with_property("security.protocol", "ssl")
        .with_property("ssl.ca.location", s.ca().display().to_string());
    let with_cert = base
        .clone()
        .with_property(
            "ssl.certificate.location",
            s.var("SECURE_KAFKA_SSL_CERTIFICATE_LOCATION"),
        )
        .with_property("ssl.key.location", s.var("SECURE_KAFKA_SSL_KEY_LOCATION"));
    let n = admin::probe_connection(&with_cert, Duration::from_secs(10))
        .await
        .expect("the client certificate is accepted");
    assert_eq!(n, 1);
    let refused = admin::probe_connection(&base, Duration::from_secs(5)).await;
    assert!(refused.is_err(), "a client without a certificate gets no metadata");
}

#[tokio::test(flavor = "multi_thread")]
async fn kafka_refuses_a_broker_certificate_from_another_ca() {
    let Some(s) = secure() else { return };
    let other = unrelated_ca();
    let c = KafkaConnection::new(s.var("KAFKA_BOOTSTRAP_SERVERS"))
        .with_property("security.protocol", "sasl_ssl")
        .with_property("sasl.mechanism", s.var("KAFKA_SASL_MECHANISM"))
        .with_property("sasl.username", s.var("KAFKA_SASL_USERNAME"))
        .with_property("sasl.password", s.var("KAFKA_SASL_PASSWORD"))
        .with_property("ssl.ca.location", other.display().to_string());
    match admin::probe_connection(&c, Duration::from_secs(5)).await {
        Err(admin::ConnectFailure::Tls(_)) => {}
        other => panic!("expected a TLS failure, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_without_the_password_is_refused() {
    let Some(s) = secure() else { return };
    let mut u = url::Url::parse(&s.var("REDIS_URL")).expect("url");
    let _ = u.set_username("");
    let _ = u.set_password(None);
    let endpoint = RedisEndpoint::new(u.as_str()).with_ca_pem(Some(std::fs::read(s.ca()).expect("ca")));
    let cache =
        ProductCache::new(endpoint, aliexpress::config::Names::new("t_"), Duration::from_secs(60)).expect("cache");
    let e = cache
        .ping(Duration::from_secs(5))
        .await
        .expect_err("TLS without AUTH is refused");
    assert!(e.to_string().to_uppercase().contains("NOAUTH"), "{e}");

    // The plain port asks for the password too.
    let plain = crate::helpers::infra("", &crate::helpers::base_database_url())
        .redis
        .url
        .expose()
        .to_owned();
    let mut u = url::Url::parse(&plain).expect("url");
    let _ = u.set_password(None);
    let cache = ProductCache::new(
        u.as_str(),
        aliexpress::config::Names::new("t_"),
        Duration::from_secs(60),
    )
    .expect("cache");
    let e = cache
        .ping(Duration::from_secs(5))
        .await
        .expect_err("no password, no answer");
    assert!(e.to_string().to_uppercase().contains("NOAUTH"), "{e}");

    // And TLS with the password but an unrelated CA fails the handshake.
    let other = unrelated_ca();
    let endpoint = RedisEndpoint::new(&s.var("REDIS_URL")).with_ca_pem(Some(std::fs::read(other).expect("ca")));
    let cache =
        ProductCache::new(endpoint, aliexpress::config::Names::new("t_"), Duration::from_secs(60)).expect("cache");
    assert!(cache.ping(Duration::from_secs(5)).await.is_err());
}

#[test]
fn the_kafka_tool_wrappers_use_the_profile_client_config() {
    let Some(s) = secure() else { return };
    let wrapper = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/local/bin/kafka-topics");
    let out = Command::new(wrapper)
        .env("ALIEXPRESS_STATE_DIR", s.state_dir())
        .env("KAFKA_COMMAND_CONFIG", s.var("KAFKA_COMMAND_CONFIG"))
        .args(["--bootstrap-server", &s.var("KAFKA_BOOTSTRAP_SERVERS"), "--list"])
        .output()
        .expect("runs");
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("product.events"),
        "{}",
        text(&out)
    );
}

/// Runs the binary's roles and tools on the secured profile with RUST_LOG=debug and checks
/// that no secret appears in anything they print (logs, errors, `status`, `--help`).
#[tokio::test(flavor = "multi_thread")]
async fn no_secret_appears_in_the_logs_of_a_secured_run() {
    let Some(s) = secure() else { return };
    let env = s.test_env().await;
    let mut vars = env.bin_env();
    vars.retain(|(k, _)| *k != "RUST_LOG");
    vars.push(("RUST_LOG", "debug".into()));
    vars.push(("LOG_FORMAT", "json".into()));
    let mut logs = String::new();
    let run = |args: &[&str]| {
        let out = bin().envs(vars.clone()).args(args).output().expect("runs");
        (out.status.code(), text(&out))
    };
    for args in [
        &["migrate"][..],
        &["status"],
        &["process-outbox"],
        &["consumer-groups", "list"],
        &["dlq", "list"],
        &["outbox", "list"],
        &["--help"],
        &["serve", "--help"],
    ] {
        let (code, out) = run(args);
        logs.push_str(&format!("== {args:?} exit {code:?}\n{out}"));
    }
    // Long-running roles: the API (with a write and an error body) and the projection.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let serve = bin()
        .envs(vars.clone())
        .env("API_TOKENS", crate::helpers::TOKEN)
        .args([
            "serve",
            "--bind",
            &format!("127.0.0.1:{port}"),
            "--metrics-bind",
            "127.0.0.1:0",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map(drain)
        .expect("serve starts");
    let projection = bin()
        .envs(vars.clone())
        .arg("run-product-event-consumer")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map(drain)
        .expect("projection starts");
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let answers = crate::helpers::wait_until(Duration::from_secs(60), || {
        let (http, url) = (http.clone(), format!("{base}/health/"));
        async move { http.get(url).send().await.is_ok() }
    })
    .await;
    assert!(answers, "the secured serve answers /health/ within 60 s");
    let health = http.get(format!("{base}/health/")).send().await.expect("health");
    logs.push_str(&health.text().await.unwrap_or_default());
    let created = http
        .post(format!("{base}/api/products"))
        .bearer_auth(crate::helpers::TOKEN)
        .json(
            &json!({"sku": "SEC-LOG", "title": "Log kettle", "description": "d", "category": "electronics",
                      "brand": "Acme", "price": {"amount_minor": 100, "currency": "USD"}, "stock": 1}),
        )
        .send()
        .await
        .expect("create");
    assert_eq!(created.status(), 201, "the write the logs should show succeeds");
    let created: serde_json::Value = created.json().await.expect("json");
    logs.push_str(&created.to_string());
    let id = created["id"].as_str().expect("id").to_owned();
    let missing = http
        .get(format!("{base}/api/products/{}", uuid::Uuid::new_v4()))
        .send()
        .await
        .expect("get");
    logs.push_str(&missing.text().await.unwrap_or_default());
    let (_, out) = run(&["process-outbox"]);
    logs.push_str(&out);
    // The projection has logged its work once the document is in the index.
    let indexed =
        crate::helpers::wait_until(Duration::from_secs(60), || async { env.document(&id).await.is_some() }).await;
    for (mut child, drained) in [serve, projection] {
        let _ = child.kill();
        let _ = child.wait();
        logs.push_str(&drained.join().unwrap_or_default());
    }
    assert!(indexed, "the secured projection indexed the write: {logs}");
    // The roles really ran (and logged at debug).
    assert!(
        logs.contains("DEBUG") || logs.contains("\"level\":\"DEBUG\""),
        "no debug logs"
    );
    assert!(logs.contains("== [\"status\"] exit Some(0)"), "{logs}");
    for secret in s.secrets() {
        assert!(!logs.contains(&secret), "a secret appears in the logs");
    }
    // The local Postgres password is the well-known `aliexpress` (also the name of everything),
    // so instead: no URL with a password in clear.
    assert!(
        !logs.contains("aliexpress:aliexpress@"),
        "a database URL with its password was printed"
    );
    let _ = std::fs::write(std::env::temp_dir().join("aliexpress-secure-run.log"), &logs);
}

/// A one-request-at-a-time HTTPS server with the stack's server certificate that answers
/// cluster health only to `user:password` (OpenSearch with the security plugin, in miniature).
async fn https_server(s: &Secure, user: &str, password: &str) -> u16 {
    use base64::Engine as _;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    aliexpress::tls::ensure_crypto_provider();
    let dir = s.ca().parent().map(Path::to_path_buf).expect("tls dir");
    let certs = aliexpress::tls::load_certs(&dir.join("server.pem")).expect("server cert");
    let key = aliexpress::tls::load_key(&dir.join("server.key")).expect("server key");
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let expected = format!(
        "authorization: basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
    .to_lowercase();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, expected) = (acceptor.clone(), expected.clone());
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut buf = vec![0u8; 8192];
                let n = tls.read(&mut buf).await.unwrap_or(0);
                let req = String::from_utf8_lossy(&buf[..n]).to_lowercase();
                let (status, body) = if req.contains(&expected) {
                    ("200 OK", r#"{"status":"green"}"#)
                } else {
                    ("401 Unauthorized", r#"{"error":"unauthorized"}"#)
                };
                let resp = format!(
                    "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = tls.write_all(resp.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread")]
async fn opensearch_basic_auth_and_a_custom_ca_are_used_and_verification_is_on_by_default() {
    use aliexpress::search::{SearchAccess, SearchClient};
    let Some(s) = secure() else { return };
    let password = format!("os-{}", uuid::Uuid::new_v4().simple());
    let port = https_server(&s, "searcher", &password).await;
    let url = format!("https://127.0.0.1:{port}");
    let ca = std::fs::read(s.ca()).expect("ca");
    let t = Duration::from_secs(5);

    let access = SearchAccess {
        username: Some("searcher".into()),
        password: Some(Secret::new(password.clone())),
        ca_pem: Some(ca.clone()),
        danger_accept_invalid_certs: false,
    };
    let c = SearchClient::with_access(&url, &access, t).expect("client");
    assert_eq!(c.health(t).await.expect("authorised over verified TLS"), "green");

    // Credentials in the URL work too, and never show in an error.
    let in_url = format!("https://searcher:{password}@127.0.0.1:{port}");
    let c = SearchClient::with_access(
        &in_url,
        &SearchAccess {
            ca_pem: Some(ca.clone()),
            ..Default::default()
        },
        t,
    )
    .expect("client");
    assert_eq!(c.health(t).await.expect("URL credentials"), "green");

    // Wrong password: a 401, named as such.
    let wrong = SearchAccess {
        password: Some(Secret::new("nope")),
        ..access.clone()
    };
    let e = SearchClient::with_access(&url, &wrong, t)
        .expect("client")
        .health(t)
        .await
        .expect_err("401");
    assert!(e.to_string().contains("401"), "{e}");

    // No CA: the system's roots do not know the stack's CA, so the handshake fails; the
    // error quotes the URL without the password.
    let e = SearchClient::with_access(&in_url, &SearchAccess::default(), t)
        .expect("client")
        .health(t)
        .await
        .expect_err("untrusted certificate");
    assert!(!e.to_string().contains(&password), "{e}");

    // The loudly named opt-out accepts it.
    let danger = SearchAccess {
        danger_accept_invalid_certs: true,
        ..access
    };
    let c = SearchClient::with_access(&url, &danger, t).expect("client");
    assert_eq!(c.health(t).await.expect("no verification"), "green");
}
