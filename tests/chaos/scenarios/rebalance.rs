//! rebalance: a second projection consumer joins and leaves (SIGTERM), a third joins and dies
//! (kill -9).

use std::time::Duration;

use super::Ctx;
use crate::sut::Role;

/// Extra projection consumers join and leave, gracefully then by kill -9.
pub(super) async fn run(ctx: &Ctx<'_>) -> Result<(), String> {
    let sut = ctx.sut;
    tokio::time::sleep(ctx.secs(1.0, 3.0)).await;
    let a = sut.spawn_extra(Role::Projection)?;
    ctx.log(format!("second projection joined (pid {a})"));
    tokio::time::sleep(ctx.secs(6.0, 9.0)).await;
    let clean = sut.stop(Role::Projection, Some(a), Duration::from_secs(30)).await;
    ctx.log(format!(
        "second projection left ({})",
        if clean { "SIGTERM" } else { "had to be killed" }
    ));
    tokio::time::sleep(ctx.secs(2.0, 4.0)).await;
    let b = sut.spawn_extra(Role::Projection)?;
    ctx.log(format!("third projection joined (pid {b})"));
    tokio::time::sleep(ctx.secs(4.0, 7.0)).await;
    sut.kill9(Role::Projection, Some(b));
    ctx.log("third projection killed (-9)");
    ctx.fault_ended();
    Ok(())
}
