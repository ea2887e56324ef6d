//! Redis connections: a deadpool pool of multiplexed connections to a [`RedisEndpoint`],
//! opened by deadpool-redis's manager.
//!
//! `redis://` is plain TCP, `rediss://` is TLS (rustls) checked against the system's roots or,
//! when given, the CA of `REDIS_CA_FILE`. A password (`redis://:pass@host`) or an ACL user
//! (`redis://user:pass@host`) in the URL is sent with AUTH on every new connection. The
//! endpoint's `redis::Client` is built with `Client::build_with_tls`, and deadpool-redis's
//! `Manager::new` takes that client's `ConnectionInfo`, which carries the TLS parameters, so a
//! custom CA survives (deadpool-redis's `Config` would drop it).
//!
//! Checking a connection out costs no round trip. deadpool-redis's own recycle sends
//! `UNWATCH` + `PING` on every checkout, which doubles the round trips of a cache read. A/B of
//! GET by id, Redis hit (`BENCH_ONLY=redis-checkout make bench`, `bench/redis_checkout_ab.sh`;
//! `REDIS_CHECKOUT_CHECK=always` is B, debug builds, 16 connections, 10 s,
//! 6 interleaved rounds each, 6 December 2026, docs/BENCHMARKS.md): this pool 2 912 req/s
//! median [2 458–3 496], p50 4.2 ms; with deadpool-redis's check on every checkout 2 302 req/s
//! [1 951–3 525], p50 5.6 ms. About 20 % fewer reads is well above the 5 % that would make the
//! PING free, so [`RedisManager`] wraps deadpool-redis's manager (which creates the
//! connections and checks an idle one) and decides when to check. A [`PooledConnection`]
//! remembers whether a command on it failed at the transport level (I/O error, dropped
//! connection, a command abandoned by a timeout before its answer) and is then discarded
//! instead of handed out again; a connection idle longer than [`IDLE_PING_AFTER`] gets
//! deadpool-redis's check before reuse, which finds a peer that went away silently.
//!
//! Cache reads have since moved to a [`SharedConnection`] per worker, which checks nothing out,
//! and so have the request path's writes (the write-throughs and read-through puts: a write
//! and a read each saved, and on `serve` under reads from Postgres a fifth of Redis's writes,
//! docs/BENCHMARKS.md); the pool serves the projection's writes and the tools.
//! On the request path that connection is **tracked** (RESP3, `CLIENT TRACKING ON NOLOOP`):
//! Redis pushes an invalidation for every key it read that another connection changes, and
//! the near cache (`cache::near`) drops it; the connection's own writes drop their keys
//! themselves once answered (`ProductCache::put_many`), so Redis need not echo them. A server
//! that refuses RESP3 or tracking gets a plain connection and no near cache (logged once).

use deadpool::managed::{self, Metrics, RecycleResult};
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::{
    AsyncConnectionConfig, Client, Cmd, ConnectionInfo, Pipeline, ProtocolVersion, PushInfo, PushKind, RedisError,
    RedisFuture, RedisResult, TlsCertificates, Value,
};
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::near::{Invalidations, NearSettings};
use crate::config::RedisSettings;
use crate::telemetry::metrics;
use crate::tls::TlsError;

/// A pooled connection unused for longer than this is PINGed before it is handed out again.
pub const IDLE_PING_AFTER: Duration = Duration::from_secs(10);

/// Pool of Redis connections.
pub type RedisPool = managed::Pool<RedisManager>;
/// A connection checked out of [`RedisPool`].
pub type RedisConn = managed::Object<RedisManager>;

/// A Redis URL and the CA trusted for `rediss://`.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisEndpoint {
    url: String,
    ca_pem: Option<Vec<u8>>,
    /// Check every connection on checkout, not only an idle one.
    check_always: bool,
    /// The request path's near cache (`None`: off).
    near: Option<NearSettings>,
}

impl RedisEndpoint {
    /// `url` (`redis://` or `rediss://`), trusting the system's roots for TLS.
    pub fn new(url: &str) -> Self {
        Self {
            url: url.to_owned(),
            ca_pem: None,
            check_always: false,
            near: None,
        }
    }

    /// The endpoint of `settings`: `REDIS_URL`, trusting the CA of `REDIS_CA_FILE` (read now)
    /// or the system's roots.
    pub fn from_settings(settings: &RedisSettings) -> Result<Self, TlsError> {
        let ca = settings.ca_file.as_deref().map(crate::tls::read_ca_pem).transpose()?;
        Ok(Self::new(settings.url.expose())
            .with_ca_pem(ca)
            .with_check_on_every_checkout(settings.checkout_check == "always")
            .with_near_cache(settings.near_cache()))
    }

    /// Gives the request path a near cache of `near` (`None`: off); see `cache::near`.
    #[must_use]
    pub fn with_near_cache(mut self, near: Option<NearSettings>) -> Self {
        self.near = near;
        self
    }

    /// The near cache the request path gets, if any.
    pub fn near_cache(&self) -> Option<NearSettings> {
        self.near
    }

    /// Checks every connection (UNWATCH + PING) before it is handed out, not only one idle for
    /// [`IDLE_PING_AFTER`] (`REDIS_CHECKOUT_CHECK=always`).
    #[must_use]
    pub fn with_check_on_every_checkout(mut self, always: bool) -> Self {
        self.check_always = always;
        self
    }

    /// Trusts the CA certificates of `pem` (instead of the system's roots) for `rediss://`.
    #[must_use]
    pub fn with_ca_pem(mut self, pem: Option<Vec<u8>>) -> Self {
        self.ca_pem = pem;
        self
    }

    /// The URL, password redacted, for messages.
    pub fn redacted(&self) -> String {
        crate::secret::redact(&self.url)
    }

    /// A client for this endpoint (connects lazily).
    pub fn client(&self) -> RedisResult<Client> {
        // rediss:// builds a rustls config, which needs the process's crypto provider.
        crate::tls::ensure_crypto_provider();
        match &self.ca_pem {
            Some(pem) => Client::build_with_tls(
                self.url.as_str(),
                TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem.clone()),
                },
            ),
            None => Client::open(self.url.as_str()),
        }
    }
}

impl From<&str> for RedisEndpoint {
    fn from(url: &str) -> Self {
        Self::new(url)
    }
}

impl From<&String> for RedisEndpoint {
    fn from(url: &String) -> Self {
        Self::new(url)
    }
}

impl From<&RedisEndpoint> for RedisEndpoint {
    fn from(e: &RedisEndpoint) -> Self {
        e.clone()
    }
}

impl fmt::Debug for RedisEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisEndpoint")
            .field("url", &self.redacted())
            .field("custom_ca", &self.ca_pem.is_some())
            .field("check_always", &self.check_always)
            .field("near", &self.near)
            .finish()
    }
}

/// Creates multiplexed connections through deadpool-redis's manager; see the module docs for
/// how they are checked.
#[derive(Clone)]
pub struct RedisManager {
    /// deadpool-redis's manager over the endpoint's `ConnectionInfo` (TLS parameters and a
    /// custom CA included): it opens the connections and PINGs an idle one.
    inner: Arc<deadpool_redis::Manager>,
    /// The endpoint's connection parameters, for tracked connections.
    info: Arc<ConnectionInfo>,
    /// Check on every checkout (`REDIS_CHECKOUT_CHECK=always`), not only after
    /// [`IDLE_PING_AFTER`].
    check_always: bool,
}

impl RedisManager {
    /// A manager for `endpoint`.
    pub fn new(endpoint: &RedisEndpoint) -> RedisResult<Self> {
        let info = endpoint.client()?.get_connection_info().clone();
        Ok(Self {
            inner: Arc::new(deadpool_redis::Manager::new(info.clone())?),
            info: Arc::new(info),
            check_always: endpoint.check_always,
        })
    }

    /// A RESP3 connection with `CLIENT TRACKING ON NOLOOP` whose invalidations go to `to` (and
    /// a closed connection empties it); its own writes are not echoed.
    async fn open_tracked(&self, to: Arc<dyn Invalidations>) -> RedisResult<MultiplexedConnection> {
        let info = (*self.info).clone();
        let resp3 = info.redis_settings().clone().set_protocol(ProtocolVersion::RESP3);
        let client = Client::open(info.set_redis_settings(resp3))?;
        let config = AsyncConnectionConfig::new().set_push_sender(move |push: PushInfo| {
            deliver(&*to, push);
            Ok::<(), std::convert::Infallible>(())
        });
        let mut conn = client.get_multiplexed_async_connection_with_config(&config).await?;
        redis::cmd("CLIENT")
            .arg("TRACKING")
            .arg("ON")
            .arg("NOLOOP")
            .query_async::<()>(&mut conn)
            .await?;
        Ok(conn)
    }
}

/// Hands a tracked connection's push to `to`: the keys of an invalidation; everything after a
/// flush (an invalidation without keys) or when the connection closed.
fn deliver(to: &dyn Invalidations, push: PushInfo) {
    match push.kind {
        PushKind::Invalidate => match push.data.first() {
            Some(Value::Array(keys)) => {
                for key in keys {
                    match key {
                        Value::BulkString(k) => to.invalidate(k),
                        _ => to.invalidate_all(),
                    }
                }
                metrics::CACHE_NEAR_INVALIDATIONS.inc_by(keys.len() as u64);
            }
            _ => to.invalidate_all(),
        },
        PushKind::Disconnection => to.invalidate_all(),
        _ => {}
    }
}

impl fmt::Debug for RedisManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RedisManager")
    }
}

impl managed::Manager for RedisManager {
    type Type = PooledConnection;
    type Error = RedisError;

    async fn create(&self) -> Result<PooledConnection, RedisError> {
        Ok(PooledConnection {
            inner: self.inner.create().await?,
            failed: false,
        })
    }

    async fn recycle(&self, conn: &mut PooledConnection, metrics: &Metrics) -> RecycleResult<RedisError> {
        if conn.failed {
            return Err(managed::RecycleError::message(
                "a command on it failed at the transport level",
            ));
        }
        if !self.check_always && metrics.last_used() < IDLE_PING_AFTER {
            return Ok(());
        }
        // deadpool-redis's check: UNWATCH and PING <n> in one pipeline, the echo compared.
        self.inner.recycle(&mut conn.inner, metrics).await
    }
}

/// A multiplexed connection that remembers a transport failure (see the module docs).
pub struct PooledConnection {
    inner: MultiplexedConnection,
    failed: bool,
}

impl PooledConnection {
    /// True once a command on it failed at the transport level or was abandoned unanswered.
    pub fn failed(&self) -> bool {
        self.failed
    }
}

/// One multiplexed connection that concurrent commands share: a worker's cache reads travel
/// on it pipelined (commands queued while one is being written go out in the same write, and
/// Redis answers them in one), instead of one pooled connection, write and read each (under
/// load about 0.7 writes to Redis per read: docs/BENCHMARKS.md). Opened on first use; a command
/// that fails at the transport level or is abandoned unanswered (a timeout) drops it, and the
/// next command opens a new one.
pub struct SharedConnection {
    manager: RedisManager,
    slot: std::sync::Mutex<Slot>,
    /// Where a tracked connection's invalidations go (`None`: a plain connection).
    tracking: Option<Arc<dyn Invalidations>>,
    /// The server refused RESP3 or tracking: plain connections from then on.
    refused_tracking: AtomicBool,
}

#[derive(Default)]
struct Slot {
    /// Bumped whenever a connection is dropped, so a late failure does not drop its successor.
    generation: u64,
    conn: Option<MultiplexedConnection>,
}

impl SharedConnection {
    /// A connection to `manager`'s endpoint, opened on first use.
    pub fn new(manager: RedisManager) -> Self {
        Self {
            manager,
            slot: std::sync::Mutex::default(),
            tracking: None,
            refused_tracking: AtomicBool::new(false),
        }
    }

    /// A tracked connection to `manager`'s endpoint, opened on first use, whose invalidations
    /// go to `to`; `to` is emptied whenever a connection is opened or dropped.
    pub fn tracked(manager: RedisManager, to: Arc<dyn Invalidations>) -> Self {
        Self {
            tracking: Some(to),
            ..Self::new(manager)
        }
    }

    /// True while reads travel on a tracked connection (or will, once one is opened).
    pub fn is_tracked(&self) -> bool {
        self.tracking.is_some() && !self.refused_tracking.load(Ordering::Relaxed)
    }

    fn slot(&self) -> std::sync::MutexGuard<'_, Slot> {
        // The slot is a plain value swapped whole; a panic elsewhere cannot corrupt it.
        self.slot.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    async fn checkout(&self) -> RedisResult<(u64, MultiplexedConnection)> {
        {
            let s = self.slot();
            if let Some(c) = &s.conn {
                return Ok((s.generation, c.clone()));
            }
        }
        let opened = self.open().await?;
        let mut s = self.slot();
        // Another command may have opened one meanwhile: keep the first.
        let c = s.conn.get_or_insert(opened).clone();
        Ok((s.generation, c))
    }

    async fn open(&self) -> RedisResult<MultiplexedConnection> {
        let Some(to) = self.tracking.as_ref().filter(|_| self.is_tracked()) else {
            return managed::Manager::create(&*self.manager.inner).await;
        };
        match self.manager.open_tracked(to.clone()).await {
            Ok(conn) => {
                // Entries read on a connection before this one have lost their invalidations.
                to.invalidate_all();
                Ok(conn)
            }
            // The server answered, and said no (no RESP3, no CLIENT TRACKING for this user).
            Err(e) if !is_transport(&e) => {
                self.refused_tracking.store(true, Ordering::Relaxed);
                tracing::warn!(error = %e, "redis refused client tracking (RESP3, CLIENT TRACKING ON): the near cache is off");
                managed::Manager::create(&*self.manager.inner).await
            }
            Err(e) => Err(e),
        }
    }

    /// Opens the connection unless open: a near-cache read takes its ticket after this, as
    /// opening a tracked connection empties the near cache.
    pub async fn ready(&self) -> RedisResult<()> {
        self.checkout().await.map(drop)
    }

    /// Sends `cmd` and reads its answer as `T`.
    pub async fn query<T: redis::FromRedisValue>(&self, cmd: &Cmd) -> RedisResult<T> {
        self.on_connection(|mut conn| async move { conn.send_packed_command(cmd).await })
            .await
            .and_then(|v| Ok(redis::from_redis_value(v)?))
    }

    /// Sends `pipe` in one write and reads its answers as `T`.
    pub async fn query_pipeline<T: redis::FromRedisValue>(&self, pipe: &Pipeline) -> RedisResult<T> {
        self.on_connection(|mut conn| async move { pipe.query_async(&mut conn).await })
            .await
    }

    /// Runs `call` on the connection; a call that does not end with the server's answer drops
    /// it (and empties the near cache it fed).
    async fn on_connection<T, F, Fut>(&self, call: F) -> RedisResult<T>
    where
        F: FnOnce(MultiplexedConnection) -> Fut,
        Fut: std::future::Future<Output = RedisResult<T>>,
    {
        let (generation, conn) = self.checkout().await?;
        let mut guard = DiscardUnlessAnswered {
            shared: self,
            generation,
            armed: true,
        };
        let result = call(conn).await;
        guard.armed = !answered(&result);
        drop(guard);
        result
    }

    fn discard(&self, generation: u64) {
        let mut s = self.slot();
        if s.generation == generation {
            s.conn = None;
            s.generation += 1;
            if let Some(to) = &self.tracking {
                to.invalidate_all();
            }
        }
    }
}

/// Drops the shared connection of `generation` unless disarmed: a command abandoned mid-way
/// (its future dropped by a timeout) leaves a connection whose state is unknown.
struct DiscardUnlessAnswered<'a> {
    shared: &'a SharedConnection,
    generation: u64,
    armed: bool,
}

impl Drop for DiscardUnlessAnswered<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.shared.discard(self.generation);
        }
    }
}

/// Marks the connection failed unless the command it guards ends with an answer (an error
/// reply from the server is an answer; I/O errors and a future dropped mid-way are not).
struct Settle<'a> {
    failed: &'a mut bool,
    answered: bool,
}

impl Settle<'_> {
    fn record<T>(mut self, result: &RedisResult<T>) {
        self.answered = answered(result);
    }
}

/// True when `result` is the server's answer (an error reply is one; I/O errors, a dropped
/// connection and a timeout are not).
fn answered<T>(result: &RedisResult<T>) -> bool {
    result.as_ref().err().is_none_or(|e| !is_transport(e))
}

/// An I/O error, a dropped connection or a timeout: no answer came from the server.
fn is_transport(e: &RedisError) -> bool {
    e.is_io_error() || e.is_connection_dropped() || e.is_timeout() || e.is_unrecoverable_error()
}

impl Drop for Settle<'_> {
    fn drop(&mut self) {
        if !self.answered {
            *self.failed = true;
        }
    }
}

impl ConnectionLike for PooledConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        let Self { inner, failed } = self;
        Box::pin(async move {
            let settle = Settle {
                failed,
                answered: false,
            };
            let result = inner.req_packed_command(cmd).await;
            settle.record(&result);
            result
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        let Self { inner, failed } = self;
        Box::pin(async move {
            let settle = Settle {
                failed,
                answered: false,
            };
            let result = inner.req_packed_commands(pipeline, offset, count).await;
            settle.record(&result);
            result
        })
    }

    fn get_db(&self) -> i64 {
        self.inner.get_db()
    }
}
