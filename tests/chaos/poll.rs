//! Waiting for a condition with a deadline, the one loop the scenarios share.

use std::future::Future;
use std::time::{Duration, Instant};

/// What one look at the condition found.
pub enum Probe<T> {
    /// It holds; the wait ends with this value.
    Ready(T),
    /// Not yet; the message is the error returned if the deadline passes now.
    Waiting(String),
    /// It can no longer hold; the wait ends with this error at once.
    Failed(String),
}

/// Looks at the condition with `probe` every `every` until it is ready, fails, or `end`
/// passes (then the last [`Probe::Waiting`] message is the error).
pub async fn poll_until<T, F, Fut>(end: Instant, every: Duration, mut probe: F) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Probe<T>>,
{
    loop {
        match probe().await {
            Probe::Ready(v) => return Ok(v),
            Probe::Failed(e) => return Err(e),
            Probe::Waiting(e) if Instant::now() > end => return Err(e),
            Probe::Waiting(_) => tokio::time::sleep(every).await,
        }
    }
}
