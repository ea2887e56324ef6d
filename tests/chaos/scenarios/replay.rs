//! replay: projection stopped, its group rewound to earliest (`replay --to-earliest --execute`),
//! projection started again, under load.

use std::time::Duration;

use super::Ctx;
use crate::sut::Role;

/// Stops the projection, replays to earliest, starts it again; fails when the replay failed.
pub(super) async fn run(ctx: &Ctx<'_>) -> Result<(), String> {
    let sut = ctx.sut;
    tokio::time::sleep(ctx.secs(2.0, 4.0)).await;
    let clean = sut.stop(Role::Projection, None, Duration::from_secs(30)).await;
    ctx.log(format!(
        "projection stopped ({})",
        if clean { "SIGTERM" } else { "had to be killed" }
    ));
    let (ok, out) = sut
        // The projection is a static member: its session (45 s) outlives the stopped process.
        .command(&["replay", "--to-earliest", "--execute", "--wait-inactive", "60s"])
        .await?;
    ctx.log(format!(
        "replay --to-earliest --execute: {}",
        out.lines().last().unwrap_or_default()
    ));
    sut.spawn(Role::Projection)?;
    ctx.log("projection started again");
    ctx.fault_ended();
    if !ok {
        return Err(format!("replay failed: {out}"));
    }
    Ok(())
}
