//! pg-terminate: pg_terminate_backend of the app's sessions every 250 ms for 10 s.

use std::time::{Duration, Instant};

use super::Ctx;
use crate::sut::{self, pg};
use crate::workload::DOWN_PG;

/// Terminates the scenario database's client sessions every 250 ms for 10 s.
pub(super) async fn run(ctx: &Ctx<'_>) -> Result<(), String> {
    let sut = ctx.sut;
    let stack = &sut.stack;
    let admin = pg(&stack.database_url).await?;
    ctx.wl.set_down(DOWN_PG, true);
    ctx.log("terminating the app's Postgres sessions every 250 ms for 10 s");
    let end = Instant::now() + Duration::from_secs(10);
    let mut killed = 0u64;
    while Instant::now() < end {
        let rows = admin
            .query(
                // Client sessions of the app only: an autovacuum worker may not be
                // terminated by a non-superuser.
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 \
                 AND backend_type = 'client backend' AND usename = current_user AND pid <> pg_backend_pid()",
                &[&sut.db],
            )
            .await
            .map_err(|e| sut::pg_error(&e))?;
        killed += rows.len() as u64;
        tokio::time::sleep(Duration::from_millis(250)).await; // the fault's rhythm
    }
    ctx.wl.set_down(DOWN_PG, false);
    ctx.log(format!("stopped terminating ({killed} sessions terminated)"));
    ctx.fault_ended();
    Ok(())
}
