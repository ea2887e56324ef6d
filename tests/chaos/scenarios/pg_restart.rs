//! pg-restart: Postgres restarted like a crash (immediate shutdown).

use super::Ctx;
use crate::workload::DOWN_PG;

/// Restarts Postgres with an immediate shutdown.
pub(super) async fn run(ctx: &Ctx<'_>) -> Result<(), String> {
    let stack = &ctx.sut.stack;
    ctx.wl.set_down(DOWN_PG, true);
    ctx.log("postgres restart (immediate)");
    stack.restart_postgres().await?;
    ctx.wl.set_down(DOWN_PG, false);
    ctx.log("postgres accepting connections again");
    ctx.fault_ended();
    Ok(())
}
