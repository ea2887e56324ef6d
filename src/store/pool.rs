//! PostgreSQL connection pool (diesel-async + deadpool, no libpq) and embedded migrations.
//!
//! Every connection gets a statement timeout through the connection string's `options`, so a
//! stuck query fails instead of hanging a worker. Every connection (pooled, LISTEN, advisory
//! lock, migrations) is opened by [`pg_tls::establish`], which applies the URL's `sslmode`,
//! `sslrootcert`, `sslcert` and `sslkey` as libpq does.
//!
//! Checking a connection out costs no round trip unless it sat idle: diesel-async's manager
//! runs `SELECT 1` on every checkout (`RecyclingMethod::Verified`), one more round trip than
//! the query itself for a GET by id. [`PgManager`] checks a connection idle for longer than
//! [`IDLE_VERIFY_AFTER`] that way (a peer that went away silently), and any other only for
//! being broken (its transaction manager, or a client whose connection task has ended: a
//! server that closed it or an I/O error), which costs nothing. Measured on GET by id from
//! Postgres and API creates (docs/BENCHMARKS.md).

use deadpool::managed::{self, Metrics, RecycleResult};
use diesel_async::pooled_connection::{AsyncDieselConnectionManager, ManagerConfig, PoolError, RecyclingMethod};
use diesel_async::{AsyncMigrationHarness, AsyncPgConnection, SimpleAsyncConnection};
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};
use futures::FutureExt;
use std::time::Duration;

use super::{pg_tls, StoreError};
use crate::config::DatabaseSettings;

/// The migrations in migrations/, compiled into the binary.
pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations");

/// Pool of async Postgres connections.
pub type PgPool = managed::Pool<PgManager>;
/// A connection checked out of [`PgPool`].
pub type PgConn = managed::Object<PgManager>;

/// A pooled connection idle for longer than this is verified (`SELECT 1`) before reuse.
pub const IDLE_VERIFY_AFTER: Duration = Duration::from_secs(10);

/// Opens connections through diesel-async's manager and checks them as the module docs say.
pub struct PgManager {
    /// Checks for a broken connection only.
    fast: AsyncDieselConnectionManager<AsyncPgConnection>,
    /// Also runs `SELECT 1`.
    verified: AsyncDieselConnectionManager<AsyncPgConnection>,
}

impl PgManager {
    fn new(url: &str, plans: Plans) -> Self {
        let with = |method| {
            let mut config = ManagerConfig::default();
            config.custom_setup = Box::new(move |url| {
                async move {
                    let mut conn = pg_tls::establish(url).await?;
                    if plans == Plans::Generic {
                        conn.batch_execute("SET plan_cache_mode = force_generic_plan")
                            .await
                            .map_err(diesel::ConnectionError::CouldntSetupConfiguration)?;
                    }
                    Ok(conn)
                }
                .boxed()
            });
            config.recycling_method = method;
            AsyncDieselConnectionManager::<AsyncPgConnection>::new_with_config(url, config)
        };
        Self {
            fast: with(RecyclingMethod::Fast),
            verified: with(RecyclingMethod::Verified),
        }
    }
}

impl std::fmt::Debug for PgManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PgManager")
    }
}

impl managed::Manager for PgManager {
    type Type = AsyncPgConnection;
    type Error = PoolError;

    async fn create(&self) -> Result<AsyncPgConnection, PoolError> {
        managed::Manager::create(&self.fast).await
    }

    async fn recycle(&self, conn: &mut AsyncPgConnection, metrics: &Metrics) -> RecycleResult<PoolError> {
        let checker = if metrics.last_used() < IDLE_VERIFY_AFTER {
            &self.fast
        } else {
            &self.verified
        };
        managed::Manager::recycle(checker, conn, metrics).await
    }
}

/// `url` with `statement_timeout` added to its `options` parameter.
pub fn url_with_statement_timeout(url: &str, timeout: Duration) -> String {
    let ms = timeout.as_millis();
    let sep = if url.contains('?') { '&' } else { '?' };
    if url.contains("statement_timeout") {
        url.to_owned()
    } else {
        format!("{url}{sep}options=-c%20statement_timeout%3D{ms}")
    }
}

/// How a pool's connections plan the statements they keep prepared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Plans {
    /// Postgres's choice (`plan_cache_mode = auto`): a statement whose custom plans look
    /// cheaper than its generic one is planned again on every run.
    Auto,
    /// One generic plan per statement and connection (`plan_cache_mode =
    /// force_generic_plan`, set when the connection opens). For statements whose best plan
    /// does not depend on their parameters; see [`build_generic_pool`].
    Generic,
}

/// Builds a pool; connects lazily. A caller waits at most 10 s for a connection. The pool's
/// gauges (`aliexpress_pool_*{pool="postgres"}`) follow it while it lives.
pub fn build_pool(url: &str, size: usize, statement_timeout: Duration) -> Result<PgPool, StoreError> {
    build_pool_planning(url, size, statement_timeout, Plans::Auto)
}

/// A pool like [`build_pool`]'s whose connections keep one generic plan per statement, for the
/// batched reads of products by primary key (`id = ANY($1)`). Postgres estimates a custom plan
/// for the few ids of a batch as cheaper than the generic plan (which assumes ten), so under
/// `auto` it plans that statement again on every run: a third of Postgres's CPU for a read from
/// Postgres (`perf`, docs/BENCHMARKS.md), for the same index scan. Only statements whose plan
/// is the same whatever their parameters belong on it.
pub fn build_generic_pool(url: &str, size: usize, statement_timeout: Duration) -> Result<PgPool, StoreError> {
    build_pool_planning(url, size, statement_timeout, Plans::Generic)
}

fn build_pool_planning(
    url: &str,
    size: usize,
    statement_timeout: Duration,
    plans: Plans,
) -> Result<PgPool, StoreError> {
    pg_tls::PgTarget::parse(url).map_err(|e| StoreError::Pool(e.to_string()))?;
    let manager = PgManager::new(&url_with_statement_timeout(url, statement_timeout), plans);
    let pool = managed::Pool::builder(manager)
        .max_size(size)
        .wait_timeout(Some(Duration::from_secs(10)))
        .create_timeout(Some(Duration::from_secs(5)))
        .runtime(deadpool::Runtime::Tokio1)
        .build()
        .map_err(|e| StoreError::Pool(e.to_string()))?;
    crate::telemetry::pools::watch(crate::telemetry::pools::POSTGRES, &pool);
    Ok(pool)
}

/// The pool `settings` describe (`DATABASE_URL`, `DATABASE_POOL_SIZE`,
/// `DATABASE_STATEMENT_TIMEOUT_MS`); connects lazily.
pub fn from_settings(settings: &DatabaseSettings) -> Result<PgPool, StoreError> {
    build_pool(settings.url.expose(), settings.pool_size, settings.statement_timeout())
}

/// Opens a single connection outside the pool (LISTEN, advisory locks, migrations).
pub async fn connect(url: &str, statement_timeout: Duration) -> Result<AsyncPgConnection, StoreError> {
    let url = url_with_statement_timeout(url, statement_timeout);
    tokio::time::timeout(Duration::from_secs(5), pg_tls::establish(&url))
        .await
        .map_err(|_| StoreError::Pool("timed out connecting to PostgreSQL after 5s".into()))?
        .map_err(|e| StoreError::Pool(e.to_string()))
}

/// Applies pending migrations; returns the versions applied. Needs a multi-thread runtime.
pub async fn run_migrations(url: &str) -> Result<Vec<String>, StoreError> {
    let conn = connect(url, Duration::from_secs(300)).await?;
    let mut harness = AsyncMigrationHarness::new(conn);
    let applied = harness
        .run_pending_migrations(MIGRATIONS)
        .map_err(|e| StoreError::Migration(e.to_string()))?;
    Ok(applied.iter().map(ToString::to_string).collect())
}

/// Checks out a connection, mapping pool errors.
pub async fn get(pool: &PgPool) -> Result<PgConn, StoreError> {
    pool.get().await.map_err(|e| StoreError::Pool(e.to_string()))
}

/// Runs `SELECT 1`: the connection and the server answer.
pub async fn ping(conn: &mut AsyncPgConnection) -> Result<(), StoreError> {
    use diesel_async::RunQueryDsl;
    diesel::sql_query("SELECT 1").execute(conn).await?;
    Ok(())
}

#[derive(diesel::QueryableByName)]
struct Locked {
    #[diesel(sql_type = diesel::sql_types::Bool)]
    locked: bool,
}

/// Tries to take the session-level advisory lock `key` on this connection; false when another
/// session holds it. The lock lives as long as the connection (or until unlocked).
pub async fn try_advisory_lock(conn: &mut AsyncPgConnection, key: i64) -> Result<bool, StoreError> {
    use diesel_async::RunQueryDsl;
    let r: Locked = diesel::sql_query("SELECT pg_try_advisory_lock($1) AS locked")
        .bind::<diesel::sql_types::BigInt, _>(key)
        .get_result(conn)
        .await?;
    Ok(r.locked)
}

/// How many embedded migrations the database has not applied yet.
pub async fn pending_migrations(url: &str) -> Result<usize, StoreError> {
    let conn = connect(url, Duration::from_secs(30)).await?;
    let mut harness = AsyncMigrationHarness::new(conn);
    harness
        .pending_migrations(MIGRATIONS)
        .map(|v| v.len())
        .map_err(|e| StoreError::Migration(e.to_string()))
}
