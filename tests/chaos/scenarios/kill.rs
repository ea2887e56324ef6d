//! kill-relay, kill-command-consumer, kill-projection, kill-api: kill -9 a role three times,
//! restarting it each time (the API is waited for before the workload counts on it again).

use std::time::Duration;

use super::Ctx;
use crate::sut::Role;
use crate::workload::DOWN_API;

/// kill -9 `role` three times at random moments, restarting it after a short pause.
pub(super) async fn run(ctx: &Ctx<'_>, role: Role) -> Result<(), String> {
    let sut = ctx.sut;
    for i in 1..=3 {
        tokio::time::sleep(ctx.secs(1.0, 4.0)).await;
        if role == Role::Api {
            ctx.wl.set_down(DOWN_API, true);
        }
        sut.kill9(role, None);
        ctx.log(format!("kill -9 {role:?} ({i}/3)"));
        tokio::time::sleep(ctx.secs(0.5, 2.0)).await;
        sut.spawn(role)?;
        if role == Role::Api {
            sut.wait_api(Duration::from_secs(30)).await?;
            ctx.wl.set_down(DOWN_API, false);
        }
        ctx.log(format!("{role:?} restarted"));
        ctx.fault_ended();
    }
    Ok(())
}
