//! redis-restart: kill -9 Redis and start it again, empty.

use super::Ctx;
use crate::stack::Service;

/// kill -9 Redis, then start it again (empty).
pub(super) async fn run(ctx: &Ctx<'_>) -> Result<(), String> {
    let stack = &ctx.sut.stack;
    ctx.wl.set_down(Service::Redis.bit(), true);
    stack.kill9(Service::Redis).await?;
    ctx.log("kill -9 redis");
    stack.up().await?;
    ctx.wl.set_down(Service::Redis.bit(), false);
    ctx.log("redis started again, empty");
    ctx.fault_ended();
    Ok(())
}
