//! One product command, load–decide–save, in one transaction: the write path every edge shares
//! (the API through [`crate::app::Catalog`], the command consumer, the category fan-out).
//!
//! [`run_command`] opens the transaction and [`decide_and_save`] runs inside it:
//! 1. a command id seen before is answered from the `commands` table (`product_repo::
//!    already_processed`, locked, so a concurrent delivery of the same id waits);
//! 2. the product row is read `FOR UPDATE` (`product_repo::lock`; not for an id the API's
//!    create has just made) and the expected version checked;
//! 3. the domain decides: who may ([`access::check_command`]), what follows
//!    ([`product::execute`]); the store only supplies facts for it (the category's path,
//!    the product type's rules, [`product_type::check`]);
//! 4. a refusal is recorded for the command id; an accepted change becomes an event
//!    ([`EventEnvelope::new`]) and `product_repo::save` writes state, SKUs, history, outbox
//!    row and outcome together;
//! 5. once committed, the relays are woken ([`wake_relays_after`]: a NOTIFY of its own, outside
//!    the write's commit).
//!
//! Either everything is written or nothing: no event without state, no state without event.
//! The repository runs no rule; the domain touches no SQL.

use chrono::Utc;
use diesel_async::{AsyncConnection, AsyncPgConnection};
use uuid::Uuid;

use crate::domain::access::{self, Scope};
use crate::domain::product::{self, EventEnvelope, EventMeta, Product, ProductCommand};
use crate::domain::product_type;
use crate::store::product_repo::{self, NewVersion, Processed};
use crate::store::{category_repo, outbox_repo, type_repo, StoreError};

/// How a command is to be executed.
#[derive(Debug, Clone)]
pub struct ExecuteOptions {
    /// Idempotency key; recorded with the outcome.
    pub command_id: Option<Uuid>,
    /// Correlation id stamped on the event.
    pub correlation_id: Option<Uuid>,
    /// W3C `traceparent` stored as the event's header, as the caller made it (the caller's
    /// span is the event's parent).
    pub traceparent: Option<String>,
    /// Optimistic concurrency: fail with a conflict unless the product is at this version.
    pub expected_version: Option<i64>,
    /// Topic recorded on the outbox row.
    pub events_topic: String,
    /// Wake the relays once an event is committed ([`wake_relays_after`]).
    pub notify: bool,
    /// Who asks (a token's or key's name, a subject, or the channel; never a secret): stamped
    /// on the event and the product's history.
    pub actor: Option<String>,
    /// The product id was made for this command (the API's create, a fresh UUIDv7): no row
    /// can hold it, so the row is not read and locked first. Were it taken after all, the
    /// INSERT fails on the primary key and nothing is written.
    pub fresh_id: bool,
    /// How far the caller reaches: another seller's product is refused as missing, and
    /// operators and readers change none (`domain::access`).
    pub scope: Scope,
}

/// What happened to a command.
#[derive(Debug, Clone, PartialEq)]
pub enum ExecuteOutcome {
    /// Applied now; the new state and its event.
    Applied(Box<(Product, EventEnvelope)>),
    /// Refused by the aggregate (recorded when a command id was given).
    Rejected(product::DomainError),
    /// The command id was already processed; nothing ran.
    Duplicate {
        /// `applied` or `rejected`.
        status: String,
        /// Version it produced, when applied.
        version: Option<i64>,
    },
}

/// Runs `command` against product `id` in one transaction (see the module docs).
#[tracing::instrument(level = "debug", skip_all, fields(product.id = %id, command.r#type = command.command_type(), command.id = ?opts.command_id))]
pub async fn run_command(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    command: &ProductCommand,
    opts: &ExecuteOptions,
) -> Result<ExecuteOutcome, StoreError> {
    let command = command.clone();
    let run_opts = opts.clone();
    let outcome = conn
        .transaction::<_, StoreError, _>(async move |conn| decide_and_save(conn, id, &command, &run_opts).await)
        .await?;
    wake_relays_after(conn, opts, &outcome).await;
    Ok(outcome)
}

/// Once `outcome` is committed: wakes the relays when it put an event in the outbox and
/// `opts` asks for it (`outbox_repo::wake_relays`).
pub async fn wake_relays_after(conn: &mut AsyncPgConnection, opts: &ExecuteOptions, outcome: &ExecuteOutcome) {
    if opts.notify && matches!(outcome, ExecuteOutcome::Applied(_)) {
        outbox_repo::wake_relays(conn).await;
    }
}

/// Inside the caller's transaction: steps 1–4 of the module docs.
pub async fn decide_and_save(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    command: &ProductCommand,
    opts: &ExecuteOptions,
) -> Result<ExecuteOutcome, StoreError> {
    if let Some(command_id) = opts.command_id {
        if let Some(Processed { status, version }) = product_repo::already_processed(conn, command_id).await? {
            return Ok(ExecuteOutcome::Duplicate { status, version });
        }
    }
    let current = if opts.fresh_id {
        None
    } else {
        product_repo::lock(conn, id).await?
    };
    if let Some(expected) = opts.expected_version {
        let actual = current.as_ref().map_or(0, |p| p.version);
        if actual != expected {
            return Err(StoreError::VersionConflict { expected, actual });
        }
    }
    let now = Utc::now();
    let (next, change) = match decide(conn, current.as_ref(), id, command, &opts.scope, now).await? {
        Ok(decided) => decided,
        Err(rule) => {
            if let Some(command_id) = opts.command_id {
                let reason = rule.to_string();
                product_repo::record_rejection(conn, command_id, id, command.command_type(), &reason).await?;
            }
            return Ok(ExecuteOutcome::Rejected(rule));
        }
    };
    let meta = EventMeta {
        event_id: Uuid::now_v7(),
        causation_id: opts.command_id,
        correlation_id: opts.correlation_id,
        occurred_at: now,
        actor: opts.actor.clone(),
    };
    let envelope = EventEnvelope::new(&change, &next, meta);
    product_repo::save(
        conn,
        &NewVersion {
            current: current.as_ref(),
            next: &next,
            event: &envelope,
            command: opts.command_id.map(|c| (c, command.command_type())),
            topic: &opts.events_topic,
            traceparent: opts.traceparent.as_deref(),
        },
    )
    .await?;
    Ok(ExecuteOutcome::Applied(Box::new((next, envelope))))
}

/// The domain's decision on `current`, with the facts it needs read from the store: the new
/// state and its change, or the rule that refuses it.
async fn decide(
    conn: &mut AsyncPgConnection,
    current: Option<&Product>,
    id: Uuid,
    command: &ProductCommand,
    scope: &Scope,
    now: chrono::DateTime<Utc>,
) -> Result<Result<(Product, product::ProductChange), product::DomainError>, StoreError> {
    let decided =
        access::check_command(scope, current, command).and_then(|()| product::execute(current, id, command, now));
    let (mut next, change) = match decided {
        Ok(d) => d,
        Err(rule) => return Ok(Err(rule)),
    };
    if names_category(command) {
        next.category_path = category_repo::path_of_slug(conn, &next.category).await?;
    }
    Ok(fits_its_type(conn, &next).await?.map(|()| (next, change)))
}

/// A creation or a category change names the category by slug: the state gets its path in
/// the category tree (empty when the slug is not in the tree).
fn names_category(command: &ProductCommand) -> bool {
    match command {
        ProductCommand::CreateProduct(_) => true,
        ProductCommand::UpdateProductDetails(u) => u.category.is_some(),
        _ => false,
    }
}

/// Whether the new state fits its product type (read `FOR SHARE`, see `type_repo`): every
/// command of a typed product is checked on the state it would leave.
async fn fits_its_type(
    conn: &mut AsyncPgConnection,
    next: &Product,
) -> Result<Result<(), product::DomainError>, StoreError> {
    let Some(key) = &next.product_type else {
        return Ok(Ok(()));
    };
    match type_repo::for_product(conn, key).await {
        Ok(t) => Ok(product_type::check(&t, next)),
        Err(StoreError::Domain(rule)) => Ok(Err(rule)),
        Err(e) => Err(e),
    }
}
