//! A cloneable shutdown signal, tripped by SIGINT/SIGTERM (or by tests).

use tokio_util::sync::CancellationToken;

/// Shutdown flag shared by a role's tasks: a [`CancellationToken`] with the role's vocabulary.
#[derive(Clone, Debug, Default)]
pub struct Shutdown {
    token: CancellationToken,
}

impl Shutdown {
    /// A signal that has not fired.
    pub fn new() -> Self {
        Self::default()
    }

    /// Fires the signal.
    pub fn trigger(&self) {
        self.token.cancel();
    }

    /// True once fired.
    pub fn is_triggered(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Resolves when fired.
    pub async fn wait(&self) {
        self.token.cancelled().await;
    }

    /// The underlying token, for code that takes one (retry policies).
    pub fn token(&self) -> &CancellationToken {
        &self.token
    }

    /// Sleeps for `d` unless shutdown comes first; true when shutdown fired.
    pub async fn sleep(&self, d: std::time::Duration) -> bool {
        crate::failure::sleep_or_cancel(&self.token, d).await
    }

    /// Fires on SIGINT or SIGTERM.
    pub fn install_signal_handlers(&self) {
        let s = self.clone();
        tokio::spawn(async move {
            #[cfg(unix)]
            {
                use tokio::signal::unix::{signal, SignalKind};
                let mut term = match signal(SignalKind::terminate()) {
                    Ok(t) => t,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot listen for SIGTERM");
                        let _ = tokio::signal::ctrl_c().await;
                        s.trigger();
                        return;
                    }
                };
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received, shutting down"),
                    _ = term.recv() => tracing::info!("SIGTERM received, shutting down"),
                }
            }
            #[cfg(not(unix))]
            let _ = tokio::signal::ctrl_c().await;
            s.trigger();
        });
    }
}
