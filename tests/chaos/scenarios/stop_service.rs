//! stop-opensearch, stop-redis, stop-postgres, stop-kafka: SIGSTOP a service (and every
//! process under it) for a while, then SIGCONT: alive, connections open, no answers. No request
//! may wait past the API's deadline (the suite's request bound is above it: a wait past the
//! bound is a hang, an anomaly), and every role catches up after.

use std::time::Duration;

use super::{Ctx, Resume};
use crate::stack::Service;

/// SIGSTOP `service` for `secs` seconds, then SIGCONT (also on drop, whatever happens).
pub(super) async fn run(ctx: &Ctx<'_>, service: Service, secs: u64) -> Result<(), String> {
    let stack = &ctx.sut.stack;
    ctx.wl.set_down(service.bit(), true);
    let pid = stack.signal_tree(service, "STOP")?;
    let resume = Resume(stack, service);
    ctx.log(format!("SIGSTOP {service:?} (pid {pid}) for {secs} s"));
    tokio::time::sleep(Duration::from_secs(secs)).await; // the outage's length
    drop(resume);
    ctx.wl.set_down(service.bit(), false);
    ctx.log(format!("SIGCONT {service:?}"));
    ctx.fault_ended();
    Ok(())
}
