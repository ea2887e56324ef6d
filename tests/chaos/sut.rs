//! The system under test for one scenario: a database of its own (created and migrated with
//! `aliexpress migrate`), a namespace of its own (topics, groups, index, Redis keys), and the
//! four roles of the binary as child processes with their logs in the scenario's folder. Roles
//! are killed and restarted by their own pid only.

use aliexpress::config::Names;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use uuid::Uuid;

use crate::stack::Stack;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_aliexpress");
/// Write token the suite's API accepts.
pub const TOKEN: &str = "chaos-token";
/// Partitions of every namespaced topic.
pub const PARTITIONS: i32 = 3;

/// A long-running role of the binary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// `serve`.
    Api,
    /// `process-outbox --follow`.
    Relay,
    /// `run-product-consumer`.
    CommandConsumer,
    /// `run-product-event-consumer`.
    Projection,
}

impl Role {
    /// Every role.
    pub const ALL: [Role; 4] = [Role::Api, Role::Relay, Role::CommandConsumer, Role::Projection];

    fn name(self) -> &'static str {
        match self {
            Self::Api => "api",
            Self::Relay => "relay",
            Self::CommandConsumer => "command-consumer",
            Self::Projection => "projection",
        }
    }
}

/// Password-free form of a URL, for messages.
pub fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            if u.password().is_some() {
                let _ = u.set_password(Some("***"));
            }
            u.to_string()
        }
        Err(_) => "<url>".into(),
    }
}

/// Connects to Postgres (tokio-postgres, no TLS); the connection task runs in the background.
pub async fn pg(url: &str) -> Result<tokio_postgres::Client, String> {
    let (client, conn) = tokio::time::timeout(
        Duration::from_secs(10),
        tokio_postgres::connect(url, tokio_postgres::NoTls),
    )
    .await
    .map_err(|_| format!("connect {}: timed out", redact(url)))?
    .map_err(|e| format!("connect {}: {e}", redact(url)))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

/// A Postgres error with the server's message (tokio-postgres's Display says only "db error").
pub fn pg_error(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(d) => format!("postgres: {} ({})", d.message(), d.code().code()),
        None => e.to_string(),
    }
}

/// A Kafka producer for injected messages.
pub fn producer(bootstrap: &str) -> Result<FutureProducer, String> {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("message.timeout.ms", "30000")
        .set("linger.ms", "0")
        .create()
        .map_err(|e| e.to_string())
}

/// One scenario's isolated system.
pub struct Sut {
    /// Stack addresses.
    pub stack: Stack,
    /// Namespace prefix, `c_<id>_`.
    pub ns: String,
    /// Names under the namespace.
    pub names: Names,
    /// Database name.
    pub db: String,
    /// URL of the scenario's database.
    pub db_url: String,
    /// `http://127.0.0.1:PORT` of the API.
    pub base: String,
    /// Logs folder.
    pub dir: PathBuf,
    /// Producer for injected messages.
    pub producer: FutureProducer,
    http_bind: String,
    /// The API's separate /metrics listener.
    metrics_bind: String,
    children: Mutex<HashMap<Role, Vec<Child>>>,
    extra_seq: Mutex<u32>,
}

fn free_port() -> Result<u16, String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    l.local_addr().map(|a| a.port()).map_err(|e| e.to_string())
}

/// The run id inside a namespaced name `c_<id>_...`.
fn run_id(name: &str) -> Option<&str> {
    name.strip_prefix("c_")?.split('_').next()
}

/// Drops what earlier runs left behind: databases `aliexpress_chaos_*` without sessions, then
/// topics, indices and Redis keys `c_<id>_*` whose database is gone (so a run going on beside
/// this one keeps its own).
pub async fn cleanup_previous_runs(stack: &Stack) {
    let Ok(c) = pg(&stack.database_url).await else {
        return;
    };
    if let Ok(rows) = c
        .query(
            "SELECT datname FROM pg_database WHERE datname LIKE 'aliexpress\\_chaos\\_%' AND \
             (SELECT count(*) FROM pg_stat_activity a WHERE a.datname = pg_database.datname) = 0",
            &[],
        )
        .await
    {
        for r in rows {
            let name: String = r.get(0);
            let _ = c
                .batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                .await;
        }
    }
    let live: std::collections::HashSet<String> = match c
        .query(
            "SELECT datname FROM pg_database WHERE datname LIKE 'aliexpress\\_chaos\\_%'",
            &[],
        )
        .await
    {
        Ok(rows) => rows
            .iter()
            .map(|r| r.get::<_, String>(0).trim_start_matches("aliexpress_chaos_").to_owned())
            .collect(),
        Err(_) => return,
    };
    let stale = |name: &str| run_id(name).is_some_and(|id| !live.contains(id));
    let http = reqwest::Client::new();
    if let Ok(r) = http
        .get(format!("{}/_cat/indices/c_*?h=index&format=json", stack.opensearch_url))
        .timeout(Duration::from_secs(10))
        .send()
        .await
    {
        let list: Vec<serde_json::Value> = r.json().await.unwrap_or_default();
        for i in list {
            if let Some(name) = i["index"].as_str().filter(|n| stale(n)) {
                let _ = http
                    .delete(format!("{}/{name}", stack.opensearch_url))
                    .timeout(Duration::from_secs(30))
                    .send()
                    .await;
            }
        }
    }
    if let Ok(admin) = ClientConfig::new()
        .set("bootstrap.servers", &stack.kafka)
        .create::<AdminClient<DefaultClientContext>>()
    {
        let md = tokio::task::block_in_place(|| admin.inner().fetch_metadata(None, Duration::from_secs(10))).ok();
        if let Some(md) = md {
            let old: Vec<String> = md
                .topics()
                .iter()
                .map(|t| t.name().to_owned())
                .filter(|n| stale(n))
                .collect();
            if !old.is_empty() {
                let refs: Vec<&str> = old.iter().map(String::as_str).collect();
                let _ = admin.delete_topics(&refs, &AdminOptions::new()).await;
            }
        }
    }
    if let Ok(client) = redis::Client::open(stack.redis_url.as_str()) {
        if let Ok(Ok(mut conn)) =
            tokio::time::timeout(Duration::from_secs(5), client.get_multiplexed_async_connection()).await
        {
            let keys: Vec<String> = redis::cmd("KEYS")
                .arg("c_*")
                .query_async(&mut conn)
                .await
                .unwrap_or_default();
            let keys: Vec<String> = keys.into_iter().filter(|k| stale(k)).collect();
            for chunk in keys.chunks(500) {
                let _: Result<i64, _> = redis::cmd("DEL").arg(chunk).query_async(&mut conn).await;
            }
        }
    }
}

impl Sut {
    /// Creates and migrates the database, creates the topics, starts every role and waits for
    /// the API to answer.
    pub async fn start(stack: &Stack, scenario: &str, run_dir: &std::path::Path) -> Result<Self, String> {
        let id = Uuid::new_v4().simple().to_string()[..10].to_owned();
        let ns = format!("c_{id}_");
        let db = format!("aliexpress_chaos_{id}");
        let admin = pg(&stack.database_url).await?;
        admin
            .batch_execute(&format!("CREATE DATABASE \"{db}\""))
            .await
            .map_err(|e| format!("create database {db}: {e}"))?;
        let mut u = url::Url::parse(&stack.database_url).map_err(|e| e.to_string())?;
        u.set_path(&format!("/{db}"));
        let db_url = u.to_string();
        let dir = run_dir.join(scenario);
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let port = free_port()?;
        let names = Names::new(&ns);
        let sut = Self {
            stack: stack.clone(),
            names,
            db,
            db_url,
            base: format!("http://127.0.0.1:{port}"),
            dir,
            producer: producer(&stack.kafka)?,
            http_bind: format!("127.0.0.1:{port}"),
            // Nothing here scrapes it: port 0 lets the OS give each start a free port, where a
            // port picked beforehand could be taken by another process before the API binds it.
            metrics_bind: "127.0.0.1:0".into(),
            children: Mutex::new(HashMap::new()),
            extra_seq: Mutex::new(0),
            ns,
        };
        let out = sut.command(&["migrate"]).await?;
        if !out.0 {
            return Err(format!("aliexpress migrate failed: {}", out.1));
        }
        sut.create_topics().await?;
        for r in Role::ALL {
            sut.spawn(r)?;
        }
        sut.wait_api(Duration::from_secs(60)).await?;
        Ok(sut)
    }

    async fn create_topics(&self) -> Result<(), String> {
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", &self.stack.kafka)
            .create()
            .map_err(|e| e.to_string())?;
        let topics = self.names.all_topics();
        // Replicated as the roles would create them (KAFKA_TOPIC_REPLICATION_FACTOR, 3 on the
        // cluster profile).
        let replication = std::env::var("KAFKA_TOPIC_REPLICATION_FACTOR")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1);
        let new: Vec<NewTopic> = topics
            .iter()
            .map(|t| NewTopic::new(t, PARTITIONS, TopicReplication::Fixed(replication)))
            .collect();
        let res = admin
            .create_topics(
                &new,
                &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
            )
            .await
            .map_err(|e| format!("create topics: {e}"))?;
        for r in res {
            if let Err((t, e)) = r {
                if e != rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists {
                    return Err(format!("create topic {t}: {e}"));
                }
            }
        }
        Ok(())
    }

    /// Environment of every child process.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        // The cluster profile runs five JVMs (3 brokers, 2 OpenSearch nodes) beside the roles on
        // the same 2 cores: there a search took over 2 s before any fault (a 503 the scenario,
        // where nothing may fail, counted against the broker it had not killed yet). Its API
        // gets bounds that still answer within the suite's 5 s, so what fails is the fault's.
        let (deadline, search) = if self.stack.cluster {
            ("4500", "4000")
        } else {
            ("3000", "2000")
        };
        vec![
            ("DATABASE_URL", self.db_url.clone()),
            ("DATABASE_POOL_SIZE", "8".into()),
            ("REDIS_URL", self.stack.redis_url.clone()),
            ("KAFKA_BOOTSTRAP_SERVERS", self.stack.kafka.clone()),
            ("OPENSEARCH_URL", self.stack.opensearch_url.clone()),
            ("ALIEXPRESS_NAMESPACE", self.ns.clone()),
            ("API_TOKENS", TOKEN.into()),
            // Under the suite's request bound (workload::REQUEST_BOUND, 5 s): a request the API
            // cuts at its deadline is a 503 with Retry-After, not a hang.
            ("HTTP_REQUEST_DEADLINE_MS", deadline.into()),
            ("SEARCH_REQUEST_TIMEOUT_MS", search.into()),
            ("HTTP_BIND", self.http_bind.clone()),
            ("METRICS_BIND", self.metrics_bind.clone()),
            ("LOG_FORMAT", "pretty".into()),
            (
                "RUST_LOG",
                std::env::var("CHAOS_RUST_LOG").unwrap_or_else(|_| "info".into()),
            ),
        ]
    }

    fn args(role: Role) -> &'static [&'static str] {
        match role {
            Role::Api => &["serve"],
            Role::Relay => &["process-outbox", "--follow"],
            Role::CommandConsumer => &["run-product-consumer"],
            Role::Projection => &["run-product-event-consumer", "--quiet-events"],
        }
    }

    fn spawn_child(&self, role: Role, log_name: &str) -> Result<Child, String> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("{log_name}.log")))
            .map_err(|e| e.to_string())?;
        let err = log.try_clone().map_err(|e| e.to_string())?;
        let mut cmd = Command::new(BIN);
        cmd.args(Self::args(role))
            .env_remove("METRICS_ADDR")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err);
        for (k, v) in self.env() {
            cmd.env(k, v);
        }
        if role != Role::Api {
            // METRICS_BIND is the API's address; every role reads that variable.
            cmd.env_remove("METRICS_BIND");
        }
        // The main consumer of each group is a static member (KIP-345), as a StatefulSet pod
        // would be: restarted after a crash, it takes its partitions back at once instead of
        // waiting for the dead session to time out. Extra members (rebalance) stay dynamic.
        if log_name == role.name() && matches!(role, Role::CommandConsumer | Role::Projection) {
            cmd.env(
                "KAFKA_PROPERTY_GROUP_INSTANCE_ID",
                format!("{}{}", self.ns, role.name()),
            );
        }
        cmd.spawn().map_err(|e| format!("spawn {}: {e}", role.name()))
    }

    /// Starts one more process of `role`.
    pub fn spawn(&self, role: Role) -> Result<u32, String> {
        let child = self.spawn_child(role, role.name())?;
        let pid = child.id();
        self.children
            .lock()
            .map_err(|e| e.to_string())?
            .entry(role)
            .or_default()
            .push(child);
        Ok(pid)
    }

    /// Starts a second process of `role` with a log of its own; returns its pid.
    pub fn spawn_extra(&self, role: Role) -> Result<u32, String> {
        let n = {
            let mut s = self.extra_seq.lock().map_err(|e| e.to_string())?;
            *s += 1;
            *s
        };
        let child = self.spawn_child(role, &format!("{}-{n}", role.name()))?;
        let pid = child.id();
        self.children
            .lock()
            .map_err(|e| e.to_string())?
            .entry(role)
            .or_default()
            .push(child);
        Ok(pid)
    }

    fn take(&self, role: Role, pid: Option<u32>) -> Vec<Child> {
        let mut map = match self.children.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        let list = map.entry(role).or_default();
        match pid {
            None => std::mem::take(list),
            Some(pid) => {
                let (take, keep): (Vec<Child>, Vec<Child>) =
                    std::mem::take(list).into_iter().partition(|c| c.id() == pid);
                *list = keep;
                take
            }
        }
    }

    /// kill -9 every process of `role` (or only `pid`) and reaps them.
    pub fn kill9(&self, role: Role, pid: Option<u32>) {
        for mut c in self.take(role, pid) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM every process of `role` (or only `pid`) and waits up to `grace` for each to
    /// exit, then SIGKILL. Returns false when one had to be killed.
    pub async fn stop(&self, role: Role, pid: Option<u32>, grace: Duration) -> bool {
        let mut clean = true;
        for mut c in self.take(role, pid) {
            let _ = Command::new("kill").args(["-TERM", &c.id().to_string()]).status();
            let end = Instant::now() + grace;
            loop {
                match c.try_wait() {
                    Ok(Some(_)) => break,
                    Ok(None) if Instant::now() < end => tokio::time::sleep(Duration::from_millis(100)).await,
                    _ => {
                        clean = false;
                        let _ = c.kill();
                        let _ = c.wait();
                        break;
                    }
                }
            }
        }
        clean
    }

    /// Roles whose process exited on its own (crashed), with their exit status; they are
    /// restarted so the scenario can go on.
    pub fn restart_exited(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut dead = Vec::new();
        if let Ok(mut map) = self.children.lock() {
            for (role, list) in map.iter_mut() {
                list.retain_mut(|c| match c.try_wait() {
                    Ok(Some(st)) => {
                        out.push(format!("{} exited ({st})", role.name()));
                        dead.push(*role);
                        false
                    }
                    _ => true,
                });
            }
        }
        for r in dead {
            let _ = self.spawn(r);
        }
        out
    }

    /// Waits until `GET /health/live` answers 200.
    pub async fn wait_api(&self, deadline: Duration) -> Result<(), String> {
        let http = reqwest::Client::new();
        let end = Instant::now() + deadline;
        loop {
            let r = http
                .get(format!("{}/health/live", self.base))
                .timeout(Duration::from_secs(1))
                .send()
                .await;
            if matches!(r, Ok(ref r) if r.status().is_success()) {
                return Ok(());
            }
            if Instant::now() > end {
                return Err(format!(
                    "API did not answer /health/live within {deadline:?} (see {}/api.log)",
                    self.dir.display()
                ));
            }
            self.restart_exited();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Runs a one-shot subcommand of the binary with this environment: (success, output).
    pub async fn command(&self, args: &[&str]) -> Result<(bool, String), String> {
        let mut cmd = tokio::process::Command::new(BIN);
        cmd.args(args).env_remove("METRICS_ADDR").stdin(Stdio::null());
        for (k, v) in self.env() {
            cmd.env(k, v);
        }
        cmd.env_remove("METRICS_BIND");
        let out = tokio::time::timeout(Duration::from_secs(180), cmd.output())
            .await
            .map_err(|_| format!("aliexpress {args:?} did not finish in 180 s"))?
            .map_err(|e| e.to_string())?;
        Ok((
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        ))
    }

    /// Produces raw bytes to `topic`.
    pub async fn produce(
        &self,
        topic: &str,
        key: &str,
        value: &[u8],
        headers: Option<rdkafka::message::OwnedHeaders>,
    ) -> Result<(), String> {
        let mut rec = FutureRecord::to(topic).key(key).payload(value);
        if let Some(h) = headers {
            rec = rec.headers(h);
        }
        self.producer
            .send(rec, Duration::from_secs(30))
            .await
            .map(|_| ())
            .map_err(|(e, _)| format!("produce to {topic}: {e}"))
    }

    /// Stops every role and, unless `keep`, drops the database, topics, index and keys.
    pub async fn teardown(&self, keep: bool) {
        for r in Role::ALL {
            self.stop(r, None, Duration::from_secs(15)).await;
        }
        if keep {
            return;
        }
        if let Ok(c) = pg(&self.stack.database_url).await {
            let _ = c
                .batch_execute(&format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.db))
                .await;
        }
        let _ = reqwest::Client::new()
            .delete(format!("{}/{}*", self.stack.opensearch_url, self.ns))
            .timeout(Duration::from_secs(30))
            .send()
            .await;
        if let Ok(admin) = ClientConfig::new()
            .set("bootstrap.servers", &self.stack.kafka)
            .create::<AdminClient<DefaultClientContext>>()
        {
            let topics = self.names.all_topics();
            let refs: Vec<&str> = topics.iter().map(String::as_str).collect();
            let _ = tokio::time::timeout(
                Duration::from_secs(30),
                admin.delete_topics(&refs, &AdminOptions::new()),
            )
            .await;
        }
        if let Ok(client) = redis::Client::open(self.stack.redis_url.as_str()) {
            if let Ok(Ok(mut conn)) =
                tokio::time::timeout(Duration::from_secs(5), client.get_multiplexed_async_connection()).await
            {
                let keys: Vec<String> = redis::cmd("KEYS")
                    .arg(format!("{}*", self.ns))
                    .query_async(&mut conn)
                    .await
                    .unwrap_or_default();
                for chunk in keys.chunks(500) {
                    let _: Result<i64, _> = redis::cmd("DEL").arg(chunk).query_async(&mut conn).await;
                }
            }
        }
    }
}

impl Drop for Sut {
    fn drop(&mut self) {
        // Never leave the suite's own children running (a panic or an early return).
        let map = match self.children.get_mut() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        for list in map.values_mut() {
            for c in list.iter_mut() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}
