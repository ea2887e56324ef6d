//! A cloneable shutdown signal, tripped by SIGINT/SIGTERM (or by tests).

use tokio::sync::watch;

/// Shutdown flag shared by a role's tasks.
#[derive(Clone, Debug)]
pub struct Shutdown {
    tx: std::sync::Arc<watch::Sender<bool>>,
    rx: watch::Receiver<bool>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Self::new()
    }
}

impl Shutdown {
    /// A signal that has not fired.
    pub fn new() -> Self {
        let (tx, rx) = watch::channel(false);
        Self {
            tx: std::sync::Arc::new(tx),
            rx,
        }
    }

    /// Fires the signal.
    pub fn trigger(&self) {
        let _ = self.tx.send(true);
    }

    /// True once fired.
    pub fn is_triggered(&self) -> bool {
        *self.rx.borrow()
    }

    /// Resolves when fired.
    pub async fn wait(&self) {
        let mut rx = self.rx.clone();
        let _ = rx.wait_for(|v| *v).await;
    }

    /// Sleeps for `d` unless shutdown comes first; true when shutdown fired.
    pub async fn sleep(&self, d: std::time::Duration) -> bool {
        tokio::select! {
            () = self.wait() => true,
            () = tokio::time::sleep(d) => self.is_triggered(),
        }
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
