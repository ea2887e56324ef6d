//! poison: undecodable and unknown messages on both topics, a NUL title command and an unknown
//! command type through the API.

use serde_json::{json, Value};
use std::time::Duration;
use uuid::Uuid;

use super::Ctx;
use crate::sut;
use crate::workload::{self, lock};

async fn post_command(ctx: &Ctx<'_>, body: &Value) -> Result<u16, String> {
    let r = reqwest::Client::new()
        .post(format!("{}/api/commands", ctx.sut.base))
        .bearer_auth(sut::TOKEN)
        .json(body)
        .timeout(workload::REQUEST_BOUND)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    Ok(r.status().as_u16())
}

pub(super) async fn run(ctx: &Ctx<'_>) -> Result<(), String> {
    let sut = ctx.sut;
    let names = &sut.names;
    let target = workload::products(ctx.wl)
        .first()
        .copied()
        .ok_or("no product to poison")?;
    // Through the API: a title Postgres cannot store, and an unknown command type.
    let nul_id = Uuid::new_v4();
    let st = post_command(
        ctx,
        &json!({"command_id": nul_id, "product_id": target, "command_type": "UpdateProductDetails", "payload": {"title": "a\u{0}b"}}),
    )
    .await?;
    if (200..300).contains(&st) {
        lock(&ctx.extra_commands).insert(nul_id);
    }
    ctx.log(format!(
        "POST /api/commands with a NUL title: {st} (accepted means it must end rejected)"
    ));
    let unknown_id = Uuid::new_v4();
    let st = post_command(
        ctx,
        &json!({"command_id": unknown_id, "product_id": target, "command_type": "Explode", "payload": {}}),
    )
    .await?;
    if (200..300).contains(&st) {
        lock(&ctx.extra_commands).insert(unknown_id);
    }
    ctx.log(format!(
        "POST /api/commands with command_type Explode: {st} (expected 422)"
    ));
    // Straight onto the topics.
    let key = target.to_string();
    let cmd_topic = names.commands_topic();
    let ev_topic = names.events_topic();
    sut.produce(&cmd_topic, &key, b"\xff\xfe not json at all", None).await?;
    sut.produce(
        &cmd_topic,
        &key,
        json!({"command_id": Uuid::new_v4(), "product_id": target, "command_type": "Explode"})
            .to_string()
            .as_bytes(),
        None,
    )
    .await?;
    lock(&ctx.expect).dlq_commands += 2;
    sut.produce(&ev_topic, &key, b"\x00\x01 garbage", None).await?;
    sut.produce(
        &ev_topic,
        &key,
        json!({"event_id": Uuid::new_v4(), "event_type": "ProductExploded", "schema_version": 1, "aggregate_id": target}).to_string().as_bytes(),
        None,
    )
    .await?;
    sut.produce(
        &ev_topic,
        &key,
        json!({"event_id": Uuid::new_v4(), "event_type": "ProductCreated", "schema_version": 99, "aggregate_id": target}).to_string().as_bytes(),
        None,
    )
    .await?;
    lock(&ctx.expect).dlq_events += 3;
    ctx.log("produced 2 poison commands and 3 poison events straight to the topics");
    tokio::time::sleep(Duration::from_secs(5)).await; // let traffic flow behind the poison: timed
                                                      // The poison window ends once traffic has flowed behind it, like the other faults.
    ctx.fault_ended();
    Ok(())
}
