//! opensearch-node-kill (cluster profile): kill -9 the OpenSearch node holding the index's
//! primary (not the node the app talks to), keep it down, start it again; search keeps answering.

use serde_json::{json, Value};
use std::time::{Duration, Instant};

use super::progress::{keeps_going, roles_working};
use super::{Ctx, NODE_OUTAGE};
use crate::poll::{poll_until, Probe};
use crate::stack::Service;

/// GET `url` as JSON (status and body; Null when the body is not JSON).
async fn get_json(http: &reqwest::Client, url: &str) -> Result<(u16, Value), String> {
    let r = http
        .get(url)
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .map_err(|e| format!("GET {url}: {e}"))?;
    let status = r.status().as_u16();
    Ok((status, r.json().await.unwrap_or(Value::Null)))
}

/// The id of the OpenSearch node answering at `url`.
async fn local_node_id(http: &reqwest::Client, url: &str) -> Result<String, String> {
    let (_, v) = get_json(http, &format!("{url}/_nodes/_local")).await?;
    v["nodes"]
        .as_object()
        .and_then(|o| o.keys().next().cloned())
        .ok_or(format!("no node id from {url}: {v}"))
}

/// The concrete index behind `alias`, the id of the node holding its primary, and the
/// primary's state.
async fn primary_of(http: &reqwest::Client, url: &str, alias: &str) -> Result<(String, String, String), String> {
    let (_, v) = get_json(
        http,
        &format!("{url}/_cat/shards/{alias}?format=json&h=index,shard,prirep,state,id"),
    )
    .await?;
    v.as_array()
        .and_then(|a| a.iter().find(|s| s["prirep"] == "p"))
        .map(|s| {
            let f = |k: &str| s[k].as_str().unwrap_or_default().to_owned();
            (f("index"), f("id"), f("state"))
        })
        .ok_or(format!("no primary shard of {alias}: {v}"))
}

/// Waits until `alias`'s index is green (every copy allocated and started).
async fn wait_green(http: &reqwest::Client, url: &str, alias: &str, deadline: Duration) -> Result<(), String> {
    poll_until(Instant::now() + deadline, Duration::from_millis(500), || async {
        let r = get_json(
            http,
            &format!("{url}/_cluster/health/{alias}?wait_for_status=green&timeout=1s"),
        )
        .await;
        if matches!(&r, Ok((200, v)) if v["status"] == "green") {
            Probe::Ready(())
        } else {
            Probe::Waiting(format!("{alias} not green within {deadline:?}: {r:?}"))
        }
    })
    .await
}

pub(super) async fn run(ctx: &Ctx<'_>) -> Result<(), String> {
    let sut = ctx.sut;
    let stack = &sut.stack;
    let http = reqwest::Client::new();
    // The app reaches OpenSearch through node 1 only (one OPENSEARCH_URL), so node 2 goes down,
    // holding the primary: the replica on node 1 must take over while searches go on.
    let node1 = stack.opensearch_url.clone();
    let node2 = stack.opensearch_node_url(2);
    let alias = sut.names.index_alias();
    wait_green(&http, &node1, &alias, Duration::from_secs(60)).await?;
    let id1 = local_node_id(&http, &node1).await?;
    let id2 = local_node_id(&http, &node2).await?;
    let (index, holder, _) = primary_of(&http, &node1, &alias).await?;
    if holder != id2 {
        // Failing the primary promotes the replica on node 2; node 1 gets a new replica.
        let (status, v) = {
            let r = http
                .post(format!("{node1}/_cluster/reroute"))
                .json(&json!({"commands": [{"cancel": {"index": index, "shard": 0, "node": holder, "allow_primary": true}}]}))
                .timeout(Duration::from_secs(10))
                .send()
                .await
                .map_err(|e| format!("reroute: {e}"))?;
            (r.status().as_u16(), r.json::<Value>().await.unwrap_or(Value::Null))
        };
        if status != 200 {
            return Err(format!(
                "could not move the primary of {index} to opensearch-2: {status} {v}"
            ));
        }
        poll_until(
            Instant::now() + Duration::from_secs(60),
            Duration::from_millis(200),
            || async {
                match primary_of(&http, &node1, &alias).await {
                    Ok((_, id, _)) if id == id2 => Probe::Ready(()),
                    Ok(_) => Probe::Waiting(format!(
                        "the primary of {index} did not move to opensearch-2 within 60 s"
                    )),
                    Err(e) => Probe::Failed(e),
                }
            },
        )
        .await?;
        wait_green(&http, &node1, &alias, Duration::from_secs(60)).await?;
        ctx.log_api(format!(
            "moved the primary of {index} to opensearch-2 (replica promoted, new replica on opensearch-1)"
        ));
    }
    let before = roles_working(ctx).await?;
    stack.kill9(Service::OpenSearchNode(2)).await?;
    let down_at = Instant::now();
    let back_at = down_at + NODE_OUTAGE;
    ctx.log_api(format!(
        "kill -9 opensearch-2 (primary of {index}); down for {} s; the API searches through opensearch-1",
        NODE_OUTAGE.as_secs()
    ));
    poll_until(
        down_at + Duration::from_secs(30),
        Duration::from_millis(200),
        || async {
            match primary_of(&http, &node1, &alias).await {
                Ok((_, id, state)) if id == id1 && state == "STARTED" => Probe::Ready(()),
                Ok(_) => Probe::Waiting(format!("no primary of {index} on opensearch-1 within 30 s")),
                Err(e) => Probe::Failed(e),
            }
        },
    )
    .await?;
    ctx.log_api(format!(
        "replica on opensearch-1 promoted to primary after {:.1} s",
        down_at.elapsed().as_secs_f64()
    ));
    let during = keeps_going(ctx, before, back_at, "opensearch-2").await;
    ctx.log_api("deploy/local/stack up --cluster");
    stack.up().await?;
    ctx.log_api("opensearch-2 back in the cluster");
    wait_green(&http, &node1, &alias, Duration::from_secs(90)).await?;
    ctx.log_api(format!("{index} green again (replica recovered on opensearch-2)"));
    ctx.fault_ended();
    during.map(|_| ())
}
