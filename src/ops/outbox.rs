//! Parked outbox rows: put back in line for the relays (`aliexpress outbox retry`, the
//! console's retry action). A dry run lists what would be retried and changes nothing.

use diesel_async::AsyncPgConnection;

use super::OpsError;
use crate::store::outbox_repo::{self, OutboxRowInfo};

/// Most parked rows a dry run lists.
pub const PLAN_LIMIT: i64 = 1000;

/// Which parked rows.
#[derive(Debug, Clone)]
pub enum Selection {
    /// Every parked row.
    AllParked,
    /// These outbox ids (rows that are not parked are left alone).
    Ids(Vec<i64>),
}

/// What a retry did, or in a dry run would do.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RetryOutcome {
    /// Whether rows were changed.
    pub executed: bool,
    /// Rows queued again (dry run: that would be; at most [`PLAN_LIMIT`] listed).
    pub count: usize,
    /// The parked rows selected, as they were before the retry.
    pub rows: Vec<OutboxRowInfo>,
}

/// Un-parks the selected rows (`execute`), or only lists them.
pub async fn retry_parked(
    conn: &mut AsyncPgConnection,
    selection: &Selection,
    execute: bool,
) -> Result<RetryOutcome, OpsError> {
    let rows: Vec<OutboxRowInfo> = outbox_repo::list(conn, true, PLAN_LIMIT)
        .await?
        .into_iter()
        .filter(|r| match selection {
            Selection::AllParked => true,
            Selection::Ids(ids) => ids.contains(&r.id),
        })
        .collect();
    let count = if execute {
        let ids = match selection {
            Selection::AllParked => None,
            Selection::Ids(ids) => Some(ids.as_slice()),
        };
        let n = outbox_repo::retry_parked(conn, ids).await?;
        tracing::info!(outbox.rows = n, "parked outbox rows queued for publishing again");
        n
    } else {
        rows.len()
    };
    Ok(RetryOutcome {
        executed: execute,
        count,
        rows,
    })
}
