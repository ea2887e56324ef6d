//! Wake-ups for the relays: a LISTEN connection on the outbox channel (the write path
//! NOTIFYs after each commit). Notifications lost while disconnected are covered by the
//! relays' poll interval.

use diesel_async::RunQueryDsl;
use futures::StreamExt;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::outbox_repo::OUTBOX_NOTIFY_CHANNEL;
use super::pool;
use crate::failure::sleep_or_cancel;

/// Turns notifications into `wake` until `cancel` fires; reconnects after failures.
pub async fn listen(url: String, wake: Arc<Notify>, cancel: CancellationToken) {
    const RECONNECT: Duration = Duration::from_secs(2);
    while !cancel.is_cancelled() {
        let mut conn = match pool::connect(&url, Duration::from_secs(0)).await {
            Ok(c) => c,
            Err(_) => {
                sleep_or_cancel(&cancel, RECONNECT).await;
                continue;
            }
        };
        if diesel::sql_query(format!("LISTEN {OUTBOX_NOTIFY_CHANNEL}"))
            .execute(&mut conn)
            .await
            .is_err()
        {
            sleep_or_cancel(&cancel, RECONNECT).await;
            continue;
        }
        let mut stream = std::pin::pin!(conn.notifications_stream());
        loop {
            tokio::select! {
                n = stream.next() => match n {
                    Some(Ok(_)) => wake.notify_one(),
                    _ => break,
                },
                () = cancel.cancelled() => return,
            }
        }
    }
}
