//! kafka-kill: kill -9 the single broker, keep it down 15 s, start it again.

use std::time::Duration;

use super::Ctx;
use crate::stack::Service;

/// kill -9 the broker, 15 s down, then start it again.
pub(super) async fn run(ctx: &Ctx<'_>) -> Result<(), String> {
    let stack = &ctx.sut.stack;
    ctx.wl.set_down(Service::Kafka.bit(), true);
    stack.kill9(Service::Kafka).await?;
    ctx.log("kill -9 kafka broker; down for 15 s");
    tokio::time::sleep(Duration::from_secs(15)).await; // the outage's length
    stack.up().await?;
    ctx.wl.set_down(Service::Kafka.bit(), false);
    ctx.log("kafka broker ready again");
    ctx.fault_ended();
    Ok(())
}
