//! The relay's "published" marks, committed on a connection of their own in the background
//! while the next batch is claimed and produced.

use diesel_async::AsyncPgConnection;
use std::time::Duration;
use tokio::task::JoinHandle;

use super::{outbox_repo, pool, StoreError};

type MarkTask = JoinHandle<(AsyncPgConnection, Result<usize, StoreError>)>;

/// One mark at a time, on one connection (opened when first needed).
pub struct OutboxMarker {
    database_url: String,
    conn: Option<AsyncPgConnection>,
    in_flight: Option<MarkTask>,
    in_flight_ids: Vec<i64>,
}

impl OutboxMarker {
    /// A marker on `database_url`; connects on its first mark.
    pub fn new(database_url: String) -> Self {
        Self {
            database_url,
            conn: None,
            in_flight: None,
            in_flight_ids: Vec::new(),
        }
    }

    /// Rows of the mark in progress: delivered, not yet marked (a claim must skip them).
    pub fn in_flight_ids(&self) -> &[i64] {
        &self.in_flight_ids
    }

    /// Starts marking `ids` published in the background; waits for the previous mark first.
    pub async fn start(&mut self, ids: Vec<i64>) -> Result<(), StoreError> {
        self.flush().await?;
        let mut conn = match self.conn.take() {
            Some(c) => c,
            None => pool::connect(&self.database_url, Duration::from_secs(60)).await?,
        };
        self.in_flight_ids.clone_from(&ids);
        self.in_flight = Some(tokio::spawn(async move {
            let r = outbox_repo::mark_published(&mut conn, &ids).await;
            (conn, r)
        }));
        Ok(())
    }

    /// Waits for the mark in progress, if any; returns the rows it marked. A failed mark
    /// drops its connection (the next one reconnects); its rows stay pending and are sent again.
    pub async fn flush(&mut self) -> Result<usize, StoreError> {
        let Some(handle) = self.in_flight.take() else {
            return Ok(0);
        };
        self.in_flight_ids.clear();
        let (conn, result) = handle
            .await
            .map_err(|e| StoreError::Pool(format!("mark task failed: {e}")))?;
        if result.is_ok() {
            self.conn = Some(conn);
        }
        result
    }
}
