//! [`Catalog`]: product writes and reads for any edge.
//!
//! A write ([`Catalog::write`]) checks the command against the rules that hold whatever the
//! product's state (so bad input is refused before any precondition is looked at), runs it
//! through the aggregate and commits the new state, its event, the command's outcome and the
//! outbox row in one transaction (`app::execute`), at most once per idempotency key
//! when the caller gives one (`store::idempotency_repo`: the key's record commits with the
//! write). Once the Postgres connection is back in the pool, the new state is written through
//! to Redis so a read right after sees that version or a later one; Redis never fails a write
//! (bounded, behind a breaker, and a missed write-through is remembered so this process does
//! not serve the stale entry).
//!
//! A read ([`Catalog::read`]) tries the cache, then Postgres, retrying a read that lost its
//! connection within `read_retry_budget`; when the cache only ran out of its short bound and
//! the database is unavailable too, the cache gets a second look before the caller sees an
//! error. A product read from the database is written back to the cache without the reader
//! waiting: the put rides on the worker's next cache read (`cache::read_through`).
//!
//! Reads from Postgres and write-throughs to Redis are batched per worker
//! ([`super::batcher`]): the callers waiting while one is in flight go together in the next,
//! one query or one round trip for all of them.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

use super::batcher::{BatchError, Batcher};
use super::execute::{self, ExecuteOptions, ExecuteOutcome};
use super::recent::Recent;
use crate::cache::product_cache::PutOutcome;
use crate::cache::{CacheError, CachedDocument, ProductCache};
use crate::domain::access::Scope;
use crate::domain::product::{self, DomainError, Product, ProductCommand, ProductStatus};
use crate::store::history_repo::{self, HistoryEntry};
use crate::store::idempotency_repo::{self, Guarded, IdempotencyScope, StoredResponse, Work};
use crate::store::pool::{self, PgPool};
use crate::store::product_repo;
use crate::store::StoreError;
use crate::telemetry::metrics;

/// Settings of the application's writes and reads.
#[derive(Debug, Clone)]
pub struct CatalogSettings {
    /// Topic recorded on each outbox row (`product.events`, namespaced).
    pub events_topic: String,
    /// NOTIFY the relay on each outbox insert.
    pub outbox_notify: bool,
    /// Lifetime of an idempotency record (`IDEMPOTENCY_KEY_TTL_SECS`).
    pub idempotency_ttl: Duration,
    /// How long a product read retries a lost database connection (`DATABASE_READ_RETRY_MS`).
    pub read_retry_budget: Duration,
}

/// Batched reads of products from Postgres, by id.
pub type Lookups = Batcher<Uuid, Option<Product>, Arc<StoreError>>;
/// Batched writes of products to Redis.
pub type Fills = Batcher<Arc<Product>, Result<PutOutcome, Arc<CacheError>>, Infallible>;

/// Most products one batched read or Redis write takes.
pub const MAX_BATCH: usize = 64;
/// Batched reads (or Redis writes) one worker runs at a time.
pub const BATCHES_IN_FLIGHT: usize = 2;

/// The catalog's stores and settings; cheap to clone (pools are handles). Build it with
/// [`Catalog::new`], once per worker (its batches use the worker's pools).
#[derive(Clone)]
pub struct Catalog {
    /// Postgres: products, outbox, command outcomes, idempotency records ([`Catalog::pool`];
    /// another one through [`Catalog::with_pool`], which batches on it).
    pub(crate) pool: PgPool,
    /// Redis read model, bounded, behind a breaker ([`Catalog::cache`]; another one through
    /// [`Catalog::with_cache`]).
    pub(crate) cache: ProductCache,
    /// Settings.
    pub settings: CatalogSettings,
    /// What decorates a search, kept briefly; shared by every worker of the process.
    pub decorations: Arc<Decorations>,
    /// Reads from Postgres of [`Catalog::read`], batched (on [`Catalog::pool`] unless
    /// [`Catalog::reading_from`] named another).
    lookups: Arc<Lookups>,
    /// Write-throughs to Redis, batched.
    fills: Arc<Fills>,
}

/// The product types and the category tree, as a search reads them (see [`Recent`]).
pub struct Decorations {
    /// Every product type, by key.
    pub types: Recent<Vec<crate::domain::product_type::ProductType>>,
    /// Every category.
    pub categories: Recent<Vec<crate::domain::category::Category>>,
}

impl Default for Decorations {
    fn default() -> Self {
        Self {
            types: Recent::new(super::recent::DECORATION_TTL),
            categories: Recent::new(super::recent::DECORATION_TTL),
        }
    }
}

/// A command for one product, with what the caller knows of it.
#[derive(Debug, Clone)]
pub struct Write {
    /// The product.
    pub id: Uuid,
    /// What to do.
    pub command: ProductCommand,
    /// Apply only at this version (optimistic concurrency).
    pub expected_version: Option<i64>,
    /// Stamped on the event.
    pub correlation_id: Option<Uuid>,
    /// W3C `traceparent` of the caller's span, stored with the event.
    pub traceparent: Option<String>,
    /// Who asks (a name or fingerprint, never a secret): on the event and in the history.
    pub actor: Option<String>,
    /// How far the caller reaches (`domain::access`): a seller's creation is theirs, and
    /// another seller's product is not found.
    pub scope: Scope,
}

/// Builds the answer kept for replays of a write from what it produced (a product, a type).
pub type Remember<T = Product> = Box<dyn FnOnce(&T) -> Option<StoredResponse> + Send>;

/// Run a write at most once for a key: who and where (`scope`), what (`fingerprint`), and
/// what to keep as the answer of a successful first run (`remember`, the edge's own shape).
pub struct Once<T = Product> {
    /// Caller, route and key.
    pub scope: IdempotencyScope,
    /// Digest of the request; another request with the same key is refused.
    pub fingerprint: String,
    /// The answer to keep for replays, built from the new state.
    pub remember: Remember<T>,
}

/// What a write did.
#[derive(Debug)]
pub enum Written {
    /// Applied now: the new state.
    Applied(Box<Product>),
    /// The key was used before with the same request: its first answer.
    Replayed(StoredResponse),
}

/// What a read found.
#[derive(Debug)]
pub enum Found {
    /// The cache's entry, as the writer stored it.
    Cached(CachedDocument),
    /// The database's row, as the document the cache stores (written back without waiting).
    Stored(CachedDocument),
}

impl Found {
    /// The product's status (who may see it).
    pub fn status(&self) -> ProductStatus {
        match self {
            Self::Cached(d) | Self::Stored(d) => d.status,
        }
    }

    /// The product's owning seller (who may see it when it is not published).
    pub fn owner(&self) -> &str {
        match self {
            Self::Cached(d) | Self::Stored(d) => &d.owner,
        }
    }
}

/// Why a write or read failed.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// A rule refused the command (field rules, or the product's state).
    #[error(transparent)]
    Rejected(#[from] DomainError),
    /// No such product.
    #[error("product {0} not found")]
    NotFound(Uuid),
    /// The idempotency key was used for another request.
    #[error("the idempotency key was already used for a request with another body")]
    KeyReused,
    /// A request with the same idempotency key is still in its transaction.
    #[error("a request with this idempotency key is still in progress")]
    KeyInFlight,
    /// The command id was processed before.
    #[error("command already processed")]
    AlreadyProcessed,
    /// The database failed (transient or not: `StoreError::is_transient`).
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Catalog {
    /// The catalog on `pool` and `cache`, with batches of its own.
    pub fn new(pool: PgPool, cache: ProductCache, settings: CatalogSettings, decorations: Arc<Decorations>) -> Self {
        let lookups = lookups(pool.clone(), settings.read_retry_budget);
        let fills = fills(cache.clone());
        Self {
            pool,
            cache,
            settings,
            decorations,
            lookups,
            fills,
        }
    }

    /// The Postgres pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The Redis read model.
    pub fn cache(&self) -> &ProductCache {
        &self.cache
    }

    /// The same catalog on `pool` (its batched reads too).
    pub fn with_pool(&self, pool: PgPool) -> Self {
        Self::new(
            pool,
            self.cache.clone(),
            self.settings.clone(),
            self.decorations.clone(),
        )
    }

    /// The same catalog reading products by id ([`Catalog::read`]'s batches, at most
    /// [`BATCHES_IN_FLIGHT`] at a time, a connection each) from `pool`, whose connections
    /// should plan generically (`pool::build_generic_pool`; `serve` gives each worker one).
    #[must_use]
    pub fn reading_from(mut self, pool: PgPool) -> Self {
        self.lookups = lookups(pool, self.settings.read_retry_budget);
        self
    }

    /// The same catalog on `cache` (its batched writes too).
    pub fn with_cache(&self, cache: ProductCache) -> Self {
        Self::new(
            self.pool.clone(),
            cache,
            self.settings.clone(),
            self.decorations.clone(),
        )
    }

    /// Writes `product` through to the cache, batched with other callers' (see
    /// [`ProductCache::put_all`]), and gives it back.
    async fn fill(&self, product: Product) -> (Product, Result<PutOutcome, Arc<CacheError>>) {
        let product = Arc::new(product);
        let outcome = match self.fills.call(product.clone()).await {
            Ok(outcome) => outcome,
            Err(BatchError::Failed(never)) => match never {},
            Err(BatchError::Abandoned) => {
                // Written or not: remembered like any failed write-through.
                self.cache.note_missed(&product);
                Err(Arc::new(CacheError::Corrupt("the cache write was abandoned".into())))
            }
        };
        // The batch has let go of its copy by now.
        (Arc::unwrap_or_clone(product), outcome)
    }

    /// Runs `w` (at most once per key with `once`), then writes the new state through to the
    /// cache once the database connection is released.
    #[tracing::instrument(level = "debug", skip_all, fields(product.id = %w.id, command = w.command.command_type()))]
    pub async fn write(&self, mut w: Write, once: Option<Once>) -> Result<Written, AppError> {
        w.scope.stamp_owner(&mut w.command);
        // Input that breaks a rule whatever the product's state is refused before any
        // precondition (expected version, existence) is looked at.
        product::validate(&w.command)?;
        let opts = ExecuteOptions {
            command_id: None,
            correlation_id: w.correlation_id,
            traceparent: w.traceparent.clone(),
            actor: w.actor.clone(),
            expected_version: w.expected_version,
            events_topic: self.settings.events_topic.clone(),
            notify: self.settings.outbox_notify,
            // A create runs on an id its caller has just made.
            fresh_id: matches!(w.command, ProductCommand::CreateProduct(_)),
            scope: w.scope.clone(),
        };
        let outcome = {
            let mut conn = pool::get(&self.pool).await?;
            match once {
                None => execute::run_command(&mut conn, w.id, &w.command, &opts).await?,
                Some(once) => match self.once(&mut conn, &w, &opts, once).await? {
                    Ok(outcome) => {
                        execute::wake_relays_after(&mut conn, &opts, &outcome).await;
                        outcome
                    }
                    Err(replayed) => return Ok(Written::Replayed(replayed)),
                },
            }
            // The connection goes back to the pool here, before any Redis call.
        };
        match outcome {
            ExecuteOutcome::Applied(applied) => {
                let (product, _event) = *applied;
                let (product, outcome) = self.fill(product).await;
                if let Err(e) = outcome {
                    // Bounded and behind the breaker; the entry is marked stale in this
                    // process and the projection rewrites it. The breaker logs state changes.
                    tracing::debug!(product.id = %w.id, error = %e, "cache write-through skipped");
                }
                Ok(Written::Applied(Box::new(product)))
            }
            ExecuteOutcome::Rejected(DomainError::NotCreated | DomainError::NotFoundForSeller(_)) => {
                Err(AppError::NotFound(w.id))
            }
            ExecuteOutcome::Rejected(rule) => Err(rule.into()),
            ExecuteOutcome::Duplicate { .. } => Err(AppError::AlreadyProcessed),
        }
    }

    /// The guarded run: `Ok(outcome)` when it ran now, `Err(answer)` for a replay.
    async fn once(
        &self,
        conn: &mut pool::PgConn,
        w: &Write,
        opts: &ExecuteOptions,
        once: Once,
    ) -> Result<Result<ExecuteOutcome, StoredResponse>, AppError> {
        let remember = once.remember;
        let (id, command, run_opts) = (w.id, w.command.clone(), opts.clone());
        // Inside the guard's transaction (no savepoint: a failure rolls back both).
        let work: Work<ExecuteOutcome> =
            Box::new(move |c| Box::pin(async move { execute::decide_and_save(c, id, &command, &run_opts).await }));
        let guarded = idempotency_repo::execute_once(
            conn,
            &once.scope,
            &once.fingerprint,
            self.settings.idempotency_ttl,
            work,
            move |o: &ExecuteOutcome| match o {
                ExecuteOutcome::Applied(applied) => remember(&applied.0),
                _ => None,
            },
        )
        .await?;
        let count = |result: &str| metrics::IDEMPOTENCY_KEYS.with_label_values(&[result]).inc();
        match guarded {
            Guarded::Executed(o) => {
                count("executed");
                Ok(Ok(o))
            }
            Guarded::Replayed(r) => {
                count("replayed");
                tracing::debug!(product.id = %w.id, route = %once.scope.route, "replayed an idempotent write");
                Ok(Err(r))
            }
            Guarded::KeyReused => {
                count("mismatch");
                Err(AppError::KeyReused)
            }
            Guarded::InFlight => {
                count("in_flight");
                Err(AppError::KeyInFlight)
            }
        }
    }

    /// The product `id` from the cache, else the database (see the module docs); `None`
    /// when it does not exist. Who may see it is the caller's business.
    #[tracing::instrument(level = "debug", skip(self))]
    pub async fn read(&self, id: Uuid) -> Result<Option<Found>, AppError> {
        let cache_failed = match self.cache.get_document(id).await {
            Ok(Some(d)) => return Ok(Some(Found::Cached(d))),
            Ok(None) => false,
            Err(e) => {
                // Bounded and behind the breaker; the breaker logs state changes.
                tracing::debug!(product.id = %id, error = %e, "cache read skipped; reading the database");
                true
            }
        };
        // The connection goes back to the pool before the read-through below.
        let found = match self.find(id).await {
            Ok(found) => found,
            // Neither answered in time: when the cache only ran out of its short bound (a
            // busy moment, not a miss) and the database is unavailable, the cache gets a
            // second try before the caller sees an error.
            Err(e) if cache_failed && e.is_transient() => match self.cache.get_document(id).await {
                Ok(Some(d)) => return Ok(Some(Found::Cached(d))),
                _ => return Err(e.into()),
            },
            Err(e) => return Err(e.into()),
        };
        let Some(p) = found else { return Ok(None) };
        // Serialized once: Redis keeps these bytes and the caller is served them. Written back
        // without waiting (`cache::read_through`).
        let doc = CachedDocument::of(&p)
            .map_err(|e| StoreError::Query(diesel::result::Error::SerializationError(Box::new(e))))?;
        self.cache.put_later(p.id, doc.clone());
        Ok(Some(Found::Stored(doc)))
    }

    /// Reads a product from Postgres, in a batch with the reads waiting beside it.
    async fn find(&self, id: Uuid) -> Result<Option<Product>, StoreError> {
        self.lookups.call(id).await.map_err(|e| match e {
            BatchError::Failed(e) => StoreError::Shared(e),
            BatchError::Abandoned => StoreError::Pool("the batched read was abandoned".into()),
        })
    }

    /// How the category fan-out writes products: through the outbox like any write, as the
    /// actor `category-fanout`.
    pub fn fanout_options(&self) -> ExecuteOptions {
        ExecuteOptions {
            command_id: None,
            correlation_id: None,
            traceparent: None,
            actor: Some("category-fanout".into()),
            expected_version: None,
            events_topic: self.settings.events_topic.clone(),
            notify: self.settings.outbox_notify,
            fresh_id: false,
            scope: Scope::Any,
        }
    }

    /// Up to `limit` versions of product `id` after version `after`, oldest first.
    pub async fn history(&self, id: Uuid, after: i64, limit: i64) -> Result<Vec<HistoryEntry>, AppError> {
        let mut conn = pool::get(&self.pool).await?;
        Ok(history_repo::page(&mut conn, id, after, limit).await?)
    }

    /// A page of products in id order after `cursor`.
    pub async fn list(
        &self,
        status: Option<ProductStatus>,
        category: Option<&str>,
        owner: Option<&str>,
        cursor: Option<Uuid>,
        limit: i64,
    ) -> Result<Vec<Product>, AppError> {
        let mut conn = pool::get(&self.pool).await?;
        Ok(product_repo::list(&mut conn, status, category, owner, cursor, limit).await?)
    }
}

/// Reads of products from `pool`, batched. A batch that lost its connection (session
/// terminated under it, or a new connection closed while being set up) runs again, a few
/// times with a short jittered pause, while it is younger than `budget`: a read has no effect
/// to repeat, and the pool verifies the connection it hands out next. A failure that took its
/// time (a pool or statement timeout) is not repeated: it has already waited its bound.
fn lookups(pool: PgPool, budget: Duration) -> Arc<Lookups> {
    Batcher::new(
        MAX_BATCH,
        BATCHES_IN_FLIGHT,
        Box::new(move |ids: Vec<Uuid>| {
            metrics::CATALOG_BATCH_SIZE
                .with_label_values(&["postgres_read"])
                .observe(ids.len() as f64);
            let pool = pool.clone();
            Box::pin(async move { find_many(&pool, &ids, budget).await.map_err(Arc::new) })
        }),
    )
}

async fn find_many(pool: &PgPool, ids: &[Uuid], budget: Duration) -> Result<Vec<Option<Product>>, StoreError> {
    use backon::Retryable;
    let started = std::time::Instant::now();
    let read = || async {
        let mut conn = pool::get(pool).await?;
        product_repo::find_many(&mut conn, ids).await
    };
    read.retry(
        backon::ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(40))
            .with_max_times(8)
            .with_jitter(),
    )
    .when(|e: &StoreError| e.is_transient() && started.elapsed() < budget)
    .notify(|e, pause| {
        tracing::debug!(products = ids.len(), error = %e, retry_in_ms = pause.as_millis() as u64,
            "database read lost its connection; reading again");
    })
    .await
}

/// Writes of products to `cache`, batched: one round trip for the batch, an outcome each.
fn fills(cache: ProductCache) -> Arc<Fills> {
    Batcher::new(
        MAX_BATCH,
        BATCHES_IN_FLIGHT,
        Box::new(move |products: Vec<Arc<Product>>| {
            metrics::CATALOG_BATCH_SIZE
                .with_label_values(&["redis_write"])
                .observe(products.len() as f64);
            let cache = cache.clone();
            Box::pin(async move {
                let refs: Vec<&Product> = products.iter().map(|p| &**p).collect();
                Ok(match cache.put_all(&refs).await {
                    Ok(outcomes) => outcomes.into_iter().map(Ok).collect(),
                    Err(e) => vec![Err(Arc::new(e)); products.len()],
                })
            })
        }),
    )
}
