//! Test harness: isolated resources per test on the real services, `TestApp` with
//! `drain_outbox()` and `consume_until_idle()`, and polling with deadlines.

#![allow(dead_code)]

use aliexpress::bus::admin;
use aliexpress::bus::dlq::DlqWriter;
use aliexpress::bus::producer::{self, ProducerSettings};
use aliexpress::bus::KafkaConnection;
use aliexpress::cache::ProductCache;
use aliexpress::cache::RedisEndpoint;
use aliexpress::config::{DatabaseSettings, InfraConfig, KafkaSettings, Names, OpenSearchSettings, RedisSettings};
use aliexpress::http::{self, AppState, ServerSettings};
use aliexpress::search::index::IndexLayout;
use aliexpress::search::SearchAccess;
use aliexpress::search::{index, SearchClient};
use aliexpress::store::{pool, PgPool};
use aliexpress::worker::outbox_relay::{OutboxRelay, RelaySettings};
use aliexpress::worker::projection::{ProductEventConsumer, ProjectionOutcome, ProjectionSettings};
use aliexpress::worker::Shutdown;
use diesel_async::RunQueryDsl;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::OwnedMessage;
use rdkafka::Message;
use serde_json::Value;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::OnceCell;
use uuid::Uuid;

/// Write token the test API accepts.
pub const TOKEN: &str = "test-token";
/// Read-only token.
pub const READ_TOKEN: &str = "read-token";

fn env_or(key: &str, default: &str) -> String {
    std::env::var(key).unwrap_or_else(|_| default.to_owned())
}

/// The admin database URL (the stack's main database).
pub fn base_database_url() -> String {
    env_or(
        "DATABASE_URL",
        "postgres://aliexpress:aliexpress@127.0.0.1:5432/aliexpress",
    )
}

fn with_db(url: &str, db: &str) -> String {
    let mut u = url::Url::parse(url).expect("DATABASE_URL parses");
    u.set_path(&format!("/{db}"));
    u.to_string()
}

/// Connection settings for a test namespace and database.
pub fn infra(namespace: &str, database_url: &str) -> InfraConfig {
    InfraConfig {
        database: DatabaseSettings {
            url: database_url.into(),
            pool_size: 8,
            statement_timeout_ms: 10_000,
        },
        redis: RedisSettings {
            url: env_or("REDIS_URL", aliexpress::config::DEFAULT_REDIS_URL).into(),
            ca_file: None,
            cache_ttl_secs: 3600,
            ..Default::default()
        },
        kafka: KafkaSettings {
            bootstrap_servers: env_or("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"),
            // As the binary reads them: KAFKA_PROPERTY_<NAME> of this process.
            properties: aliexpress::config::kafka::properties_from_env(std::env::vars()),
            // Three partitions: enough for several pipelines, cheap for the broker across many runs.
            topic_partitions: 3,
            topic_replication_factor: 1,
            ..Default::default()
        },
        opensearch: OpenSearchSettings {
            url: env_or("OPENSEARCH_URL", "http://127.0.0.1:9200").into(),
            ..Default::default()
        },
        namespace: namespace.to_owned(),
    }
}

/// Where every Kafka client of a test connects, as the binary would (see
/// `bus::KafkaConnection::from_settings`).
pub fn kafka(infra: &InfraConfig) -> KafkaConnection {
    KafkaConnection::from_settings(&infra.kafka).expect("kafka settings")
}

static CLEANUP: OnceCell<()> = OnceCell::const_new();

/// How old another run's resources must be before this run removes them: test processes may
/// run side by side (several checkouts, CI and a developer), and one must not remove what
/// another is using.
const STALE_AFTER_SECS: u64 = 2 * 3600;

/// Seconds since the Unix epoch.
fn epoch_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A test namespace `test_<epoch seconds>_<pid>_<random>_`: its age and the test process
/// that owns it can be read back from its name.
pub fn new_namespace() -> String {
    format!(
        "test_{}_{}_{}_",
        epoch_secs(),
        std::process::id(),
        &Uuid::new_v4().simple().to_string()[..8]
    )
}

/// True for a test resource name (database without its `aliexpress_` prefix, topic or
/// index) whose test process is gone (a finished or killed run: nothing uses it any more), or
/// made more than [`STALE_AFTER_SECS`] ago (names without a pid, or a pid reused since).
fn is_stale(name: &str) -> bool {
    let mut parts = name.strip_prefix("test_").unwrap_or_default().split('_');
    let Some(made) = parts.next().and_then(|t| t.parse::<u64>().ok()) else {
        return false;
    };
    let owner_gone = parts
        .next()
        .and_then(|p| p.parse::<u32>().ok())
        .is_some_and(|pid| pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists());
    owner_gone || epoch_secs().saturating_sub(made) > STALE_AFTER_SECS
}

/// Removes what earlier test runs left behind (databases, topics, indices with the test
/// prefix), once their run is over or they are old (see [`is_stale`]): every run would
/// otherwise leave ~80 databases, and a cluster with hundreds of them recovers slowly.
async fn cleanup_previous_runs() {
    CLEANUP
        .get_or_init(|| async {
            let base = base_database_url();
            if let Ok(mut conn) = pool::connect(&base, Duration::from_secs(60)).await {
                #[derive(diesel::QueryableByName)]
                struct Db {
                    #[diesel(sql_type = diesel::sql_types::Text)]
                    datname: String,
                }
                let dbs: Vec<Db> = diesel::sql_query(
                    "SELECT datname FROM pg_database WHERE datname LIKE 'aliexpress\\_test\\_%' AND \
                     (SELECT count(*) FROM pg_stat_activity a WHERE a.datname = pg_database.datname) = 0",
                )
                .load(&mut conn)
                .await
                .unwrap_or_default();
                for d in dbs
                    .into_iter()
                    .filter(|d| is_stale(d.datname.trim_start_matches("aliexpress_")))
                {
                    let _ = diesel::sql_query(format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", d.datname))
                        .execute(&mut conn)
                        .await;
                }
            }
            let i = infra("", &base);
            if let Ok(c) = SearchClient::new(i.opensearch.url.expose(), Duration::from_secs(30)) {
                let listed = c
                    .call(|os| async move {
                        os.cat()
                            .indices(opensearch::cat::CatIndicesParts::Index(&["test_*"]))
                            .format("json")
                            .h(&["index"])
                            .send()
                            .await
                    })
                    .await;
                let listed = match listed {
                    Ok(resp) => aliexpress::search::client::decode::<Value>(resp).await.ok(),
                    Err(_) => None,
                };
                if let Some(Value::Array(indices)) = listed {
                    let stale: Vec<&str> = indices
                        .iter()
                        .filter_map(|i| i["index"].as_str())
                        .filter(|n| is_stale(n))
                        .collect();
                    for chunk in stale.chunks(50) {
                        let _ = c
                            .call(|os| async move {
                                os.indices()
                                    .delete(opensearch::indices::IndicesDeleteParts::Index(chunk))
                                    .send()
                                    .await
                            })
                            .await;
                    }
                }
            }
            let bootstrap = kafka(&i);
            let _ = tokio::task::spawn_blocking(move || {
                let admin: rdkafka::admin::AdminClient<rdkafka::client::DefaultClientContext> =
                    producer::base_config(&bootstrap).create().expect("admin client");
                let md = admin.inner().fetch_metadata(None, Duration::from_secs(10)).ok()?;
                let old: Vec<String> = md
                    .topics()
                    .iter()
                    .map(|t| t.name().to_owned())
                    .filter(|n| is_stale(n))
                    .collect();
                Some((admin, old))
            })
            .await
            .ok()
            .flatten()
            .map(|(admin, old)| async move {
                if !old.is_empty() {
                    let refs: Vec<&str> = old.iter().map(String::as_str).collect();
                    let _ = admin.delete_topics(&refs, &rdkafka::admin::AdminOptions::new()).await;
                }
            })
            .map(|f| tokio::spawn(f));
        })
        .await;
}

/// Isolated resources on the real services.
pub struct TestEnv {
    /// Settings pointing at this test's database and namespace.
    pub infra: InfraConfig,
    /// Names under the test namespace.
    pub names: Names,
    /// Pool on the test database.
    pub pool: PgPool,
    /// A producer for tests that write to topics directly.
    pub producer: rdkafka::producer::FutureProducer,
}

impl TestEnv {
    /// A fresh database (migrated), topics, and a namespace.
    pub async fn new() -> Self {
        Self::with_settings(base_database_url(), |_| {}).await
    }

    /// Like [`new`](Self::new) with the database made through `base` (an admin URL whose TLS
    /// parameters the test database's URL keeps) and the other settings changed by
    /// `customize` (the secured profile's listeners, for example).
    pub async fn with_settings(base: String, customize: impl FnOnce(&mut InfraConfig)) -> Self {
        cleanup_previous_runs().await;
        let ns = new_namespace();
        let db = format!("aliexpress_{}", ns.trim_end_matches('_'));
        let mut admin = pool::connect(&base, Duration::from_secs(60))
            .await
            .expect("connect to the stack's postgres (make up?)");
        diesel::sql_query(format!("CREATE DATABASE \"{db}\""))
            .execute(&mut admin)
            .await
            .expect("create test database");
        let url = with_db(&base, &db);
        pool::run_migrations(&url).await.expect("migrations apply");
        let mut infra = infra(&ns, &url);
        customize(&mut infra);
        let names = infra.names();
        admin::ensure_topics(
            &kafka(&infra),
            &names.all_topics(),
            infra.kafka.topic_partitions,
            infra.kafka.topic_replication_factor,
        )
        .await
        .expect("topics");
        let pool = pool::build_pool(&url, 8, Duration::from_secs(10)).expect("pool");
        let producer = producer::build(
            &kafka(&infra),
            &ProducerSettings {
                linger_ms: 0,
                ..Default::default()
            },
        )
        .expect("producer");
        Self {
            infra,
            names,
            pool,
            producer,
        }
    }

    /// An outbox relay on this environment.
    pub fn relay(&self, batch_size: i64) -> OutboxRelay {
        let p = producer::build(&kafka(&self.infra), &ProducerSettings::default()).expect("producer");
        OutboxRelay::new(
            self.infra.database.url.expose().to_owned(),
            p,
            RelaySettings {
                batch_size,
                ..Default::default()
            },
        )
    }

    /// Publishes every pending outbox row; returns how many were published.
    pub async fn drain_outbox(&self) -> usize {
        let mut relay = self.relay(500);
        assert!(
            relay.try_acquire().await.expect("join"),
            "no other relay owns the slices"
        );
        let mut n = 0;
        loop {
            let o = relay.process_once().await.expect("batch publishes");
            n += o.published;
            if o.claimed == 0 {
                // Slices taken from a relay that died holding them wait out its grace.
                match relay.fenced_for() {
                    Some(wait) => tokio::time::sleep(wait).await,
                    None => break,
                }
            }
        }
        relay.release().await;
        n
    }

    /// A search client.
    pub fn search(&self) -> SearchClient {
        SearchClient::with_access(
            self.infra.opensearch.url.expose(),
            &SearchAccess::from_settings(&self.infra.opensearch).expect("search settings"),
            Duration::from_secs(30),
        )
        .expect("search client")
    }

    /// The Redis cache under this namespace.
    pub fn cache(&self) -> ProductCache {
        ProductCache::new(
            RedisEndpoint::from_settings(&self.infra.redis).expect("redis settings"),
            self.names.clone(),
            Duration::from_secs(3600),
        )
        .expect("cache")
    }

    /// A projector in `group` (default: the namespaced projection group) on this environment.
    pub async fn projector(&self, group: Option<&str>, search_url: Option<&str>) -> ProductEventConsumer {
        let search = match search_url {
            Some(u) => SearchClient::new(u, Duration::from_secs(2)).expect("client"),
            None => self.search(),
        };
        let alias = self.names.index_alias();
        index::ensure_alias(
            &self.search(),
            &alias,
            IndexLayout::from_settings(&self.infra.opensearch),
        )
        .await
        .expect("index alias");
        let group = group
            .map(str::to_owned)
            .unwrap_or_else(|| self.names.projection_group());
        let c: StreamConsumer = aliexpress::bus::consumer::build(&kafka(&self.infra), &group).expect("consumer");
        c.subscribe(&[&self.names.events_topic()]).expect("subscribe");
        let p = producer::build(&kafka(&self.infra), &ProducerSettings::default()).expect("producer");
        ProductEventConsumer::new(
            Arc::new(c),
            search,
            alias,
            self.cache(),
            DlqWriter::new(p, self.names.events_dlq_topic(), group.clone()),
            group,
            ProjectionSettings {
                batch_size: 200,
                batch_wait: Duration::from_millis(50),
                ..Default::default()
            },
        )
    }

    /// Runs `p` until no message arrived for `idle` (after at least one, or for 15 s if none).
    pub async fn consume_until_idle(&self, p: &mut ProductEventConsumer) -> ProjectionOutcome {
        let shutdown = Shutdown::new();
        let mut total = ProjectionOutcome::default();
        let start = Instant::now();
        loop {
            let wait = if total.received == 0 {
                Duration::from_secs(2)
            } else {
                Duration::from_millis(1500)
            };
            let o = p.process_once(wait, &shutdown).await.expect("projection batch");
            total.received += o.received;
            total.applied += o.applied;
            total.already_applied += o.already_applied;
            total.dead_lettered += o.dead_lettered;
            total.gaps += o.gaps;
            if o.received == 0 && (total.received > 0 || start.elapsed() > Duration::from_secs(15)) {
                break;
            }
        }
        p.consumer
            .commit_consumer_state(rdkafka::consumer::CommitMode::Sync)
            .ok();
        index::refresh(&self.search(), &self.names.index_alias())
            .await
            .expect("refresh");
        total
    }

    /// A document from the index, by product id.
    pub async fn document(&self, id: &str) -> Option<Value> {
        let alias = self.names.index_alias();
        let alias = alias.as_str();
        let search = self.search();
        let resp = search
            .call(|os| async move { os.get(opensearch::GetParts::IndexId(alias, id)).send().await })
            .await
            .expect("get doc");
        if resp.status_code().as_u16() != 200 {
            return None;
        }
        Some(aliexpress::search::client::decode(resp).await.expect("get doc"))
    }

    /// Reads `topic` from the beginning with a fresh group until `min` messages arrived and
    /// then nothing for a while (or the deadline passes).
    pub async fn read_topic(&self, topic: &str, min: usize, deadline: Duration) -> Vec<OwnedMessage> {
        let group = format!("{}reader-{}", self.names.index_alias(), Uuid::new_v4().simple());
        let c: StreamConsumer = aliexpress::bus::consumer::build(&kafka(&self.infra), &group).expect("consumer");
        c.subscribe(&[topic]).expect("subscribe");
        let end = Instant::now() + deadline;
        let mut out = Vec::new();
        loop {
            let idle = if out.len() >= min {
                Duration::from_millis(1500)
            } else {
                Duration::from_secs(2)
            };
            match tokio::time::timeout(idle, c.recv()).await {
                Ok(Ok(m)) => out.push(m.detach()),
                Ok(Err(e)) => panic!("consumer error: {e}"),
                Err(_) if out.len() >= min || Instant::now() > end => break,
                Err(_) => {}
            }
            if Instant::now() > end {
                break;
            }
        }
        out
    }

    /// Produces raw bytes to a topic.
    pub async fn produce(&self, topic: &str, key: &str, value: &[u8]) {
        self.producer
            .send(
                rdkafka::producer::FutureRecord::to(topic).key(key).payload(value),
                Duration::from_secs(10),
            )
            .await
            .expect("produced");
    }

    /// Number of outbox rows matching a SQL condition.
    pub async fn count(&self, sql: &str) -> i64 {
        self.scalar(&format!("SELECT count(*) FROM {sql}")).await
    }

    /// The value of a scalar SQL expression, as a bigint.
    pub async fn scalar(&self, expr: &str) -> i64 {
        #[derive(diesel::QueryableByName)]
        struct N {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            n: i64,
        }
        let mut c = pool::get(&self.pool).await.expect("conn");
        let r: N = diesel::sql_query(format!("SELECT ({expr})::bigint AS n"))
            .get_result(&mut c)
            .await
            .expect("scalar");
        r.n
    }

    /// Environment variables that point the binary at this test's resources.
    pub fn bin_env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("DATABASE_URL", self.infra.database.url.expose().to_owned()),
            ("REDIS_URL", self.infra.redis.url.expose().to_owned()),
            ("KAFKA_BOOTSTRAP_SERVERS", self.infra.kafka.bootstrap_servers.clone()),
            ("OPENSEARCH_URL", self.infra.opensearch.url.expose().to_owned()),
            ("ALIEXPRESS_NAMESPACE", self.infra.namespace.clone()),
            ("RUST_LOG", "info".into()),
        ]
        .into_iter()
        .chain(security_env(&self.infra))
        .collect()
    }
}

/// The security settings of `infra` as the binary's environment variables (only those set).
pub fn security_env(infra: &InfraConfig) -> Vec<(&'static str, String)> {
    let k = &infra.kafka;
    let path = |p: &Option<std::path::PathBuf>| p.as_ref().map(|p| p.display().to_string());
    let pairs: [(&'static str, Option<String>); 13] = [
        ("KAFKA_SECURITY_PROTOCOL", k.security_protocol.clone()),
        ("KAFKA_SASL_MECHANISM", k.sasl_mechanism.clone()),
        ("KAFKA_SASL_USERNAME", k.sasl_username.clone()),
        (
            "KAFKA_SASL_PASSWORD",
            k.sasl_password.as_ref().map(|s| s.expose().to_owned()),
        ),
        ("KAFKA_SSL_CA_LOCATION", path(&k.ssl_ca_location)),
        ("KAFKA_SSL_CERTIFICATE_LOCATION", path(&k.ssl_certificate_location)),
        ("KAFKA_SSL_KEY_LOCATION", path(&k.ssl_key_location)),
        (
            "KAFKA_SSL_KEY_PASSWORD",
            k.ssl_key_password.as_ref().map(|s| s.expose().to_owned()),
        ),
        ("KAFKA_PROPERTIES_FILE", path(&k.properties_file)),
        ("REDIS_CA_FILE", path(&infra.redis.ca_file)),
        ("OPENSEARCH_USERNAME", infra.opensearch.username.clone()),
        (
            "OPENSEARCH_PASSWORD",
            infra.opensearch.password.as_ref().map(|s| s.expose().to_owned()),
        ),
        ("OPENSEARCH_CA_FILE", path(&infra.opensearch.ca_file)),
    ];
    pairs.into_iter().filter_map(|(k, v)| v.map(|v| (k, v))).collect()
}

/// A header value as a string.
pub fn header<'a>(m: &'a OwnedMessage, name: &str) -> Option<&'a str> {
    aliexpress::bus::consumer::header_str(m, name)
}

/// The running API on a random port, with its environment.
pub struct TestApp {
    /// The isolated resources.
    pub env: TestEnv,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// HTTP client.
    pub http: reqwest::Client,
    /// The API's state.
    pub state: AppState,
    /// `http://127.0.0.1:PORT/metrics` of the separate metrics listener.
    pub metrics_url: String,
}

impl TestApp {
    /// Starts the API on port 0 over a fresh environment.
    pub async fn spawn() -> Self {
        Self::spawn_with(|_| {}).await
    }

    /// Like [`spawn`](Self::spawn) with a chance to change the state first.
    pub async fn spawn_with(f: impl FnOnce(&mut AppState)) -> Self {
        Self::spawn_on(TestEnv::new().await, f).await
    }

    /// Starts the API on port 0 over `env`, with a chance to change the state first.
    pub async fn spawn_on(env: TestEnv, f: impl FnOnce(&mut AppState)) -> Self {
        // The state `serve` builds, from `serve`'s own defaults, with the test's tokens.
        #[derive(clap::Parser)]
        struct Serve {
            #[command(flatten)]
            args: aliexpress::cli::serve::Args,
        }
        let mut args = <Serve as clap::Parser>::parse_from(["serve"]).args;
        args.api.api_tokens = vec![TOKEN.into()];
        args.api.api_read_tokens = vec![READ_TOKEN.into()];
        let api = args.api.clone();
        let mut state = aliexpress::cli::serve::state(&env.infra, &args)
            .await
            .expect("serve's state over the test environment");
        f(&mut state);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let server = http::run(listener, vec![state.clone()], &ServerSettings::new(&api, 2)).expect("server");
        tokio::spawn(server);
        let metrics = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let metrics_port = metrics.local_addr().expect("addr").port();
        tokio::spawn(http::metrics::serve_metrics(metrics).expect("metrics server"));
        Self {
            env,
            base: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::new(),
            state,
            metrics_url: format!("http://127.0.0.1:{metrics_port}/metrics"),
        }
    }

    /// The Prometheus text of the metrics listener.
    pub async fn metrics(&self) -> String {
        self.http
            .get(&self.metrics_url)
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text")
    }

    /// GET with the read-only token (sees unpublished products and commands).
    pub async fn get_with_token(&self, path: &str) -> reqwest::Response {
        self.http
            .get(self.url(path))
            .bearer_auth(READ_TOKEN)
            .send()
            .await
            .expect("request")
    }

    /// URL of `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// POST JSON with the write token.
    pub async fn post(&self, path: &str, body: Value) -> reqwest::Response {
        self.http
            .post(self.url(path))
            .bearer_auth(TOKEN)
            .json(&body)
            .send()
            .await
            .expect("request")
    }

    /// GET without credentials.
    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http.get(self.url(path)).send().await.expect("request")
    }

    /// Creates a product and returns its JSON.
    pub async fn create_product(&self, sku: &str, title: &str) -> Value {
        let r = self
            .post(
                "/api/products",
                serde_json::json!({
                    "sku": sku, "title": title, "description": format!("{title} description"),
                    "category": "electronics", "brand": "Acme",
                    "price": {"amount_minor": 1999, "currency": "USD"}, "stock": 5
                }),
            )
            .await;
        assert_eq!(r.status(), 201, "create {sku}");
        r.json().await.expect("json")
    }
}

/// Polls `f` until it returns true or `deadline` passes.
pub async fn wait_until<F, Fut>(deadline: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let end = Instant::now() + deadline;
    loop {
        if f().await {
            return true;
        }
        if Instant::now() > end {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Product ids and versions of decoded event messages, in arrival order.
pub fn versions(msgs: &[OwnedMessage]) -> Vec<(String, i64)> {
    msgs.iter()
        .map(|m| {
            let v: Value = serde_json::from_slice(m.payload().expect("payload")).expect("json");
            (
                v["aggregate_id"].as_str().expect("id").to_owned(),
                v["aggregate_version"].as_i64().expect("version"),
            )
        })
        .collect()
}

/// The committed offset of `partition` of `topic` for `consumer`'s group, if any.
pub async fn committed_offset(consumer: &StreamConsumer, topic: &str, partition: i32) -> Option<i64> {
    let lag = aliexpress::bus::consumer::lag_blocking(consumer, topic, Duration::from_secs(5)).expect("lag");
    lag.into_iter()
        .find(|p| p.partition == partition)
        .and_then(|p| p.committed)
}

/// Commits what `consumer` stored and waits (with a deadline) until its group's lag on
/// `topic` is 0. A commit with nothing new to commit (auto-commit got there first) is fine.
pub async fn wait_committed(consumer: &StreamConsumer, topic: &str) {
    if let Err(e) = consumer.commit_consumer_state(rdkafka::consumer::CommitMode::Sync) {
        assert!(
            matches!(e.rdkafka_error_code(), Some(rdkafka::types::RDKafkaErrorCode::NoOffset)),
            "commit: {e}"
        );
    }
    let mut last = Vec::new();
    let ok = wait_until(Duration::from_secs(15), || {
        let l = aliexpress::bus::consumer::lag_blocking(consumer, topic, Duration::from_secs(5)).expect("lag");
        let done = l.iter().all(|p| p.lag == 0);
        last = l;
        async move { done }
    })
    .await;
    assert!(ok, "group lag back to 0: {last:?}");
}

#[test]
fn test_resources_are_stale_once_their_run_is_over_or_old() {
    let now = epoch_secs();
    let mine = new_namespace();
    assert!(!is_stale(&mine), "this run's own names are kept: {mine}");
    // pid 1 always exists: a live owner keeps a recent name.
    assert!(!is_stale(&format!("test_{now}_1_abcdef12_products")));
    // A pid beyond pid_max never exists: its run is over.
    assert!(is_stale(&format!("test_{now}_4294967295_abcdef12_products")));
    // Names from before pids were recorded go by age only.
    assert!(!is_stale(&format!("test_{now}_abcdef12_products")));
    assert!(is_stale(&format!(
        "test_{}_abcdef12_products",
        now - STALE_AFTER_SECS - 1
    )));
    assert!(!is_stale("products"), "not a test name");
}

/// `n` consecutive free ports for processes a test stops and starts again on the same ports,
/// as their base, below the kernel's ephemeral range: a port in that range can become the local
/// port of any outgoing connection on the box while its process is down (seen: a restarted
/// role's metrics port taken, "Address already in use").
pub fn restartable_ports(n: u16) -> u16 {
    let ephemeral_low: u16 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse().ok())
        .unwrap_or(32768);
    let span = u128::from(ephemeral_low.saturating_sub(10_000 + n).max(1));
    loop {
        let base = 10_000 + (uuid::Uuid::new_v4().as_u128() % span) as u16;
        if (0..n).all(|i| std::net::TcpListener::bind(("127.0.0.1", base + i)).is_ok()) {
            return base;
        }
    }
}
