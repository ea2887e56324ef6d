//! The checker's self-test (`--self-test`): proves every checker column can fail. A clean run
//! first, then one deliberate corruption per column in that throwaway namespace (each step below
//! corrupts one store), each of which must be reported.

use rand::rngs::StdRng;
use rand::SeedableRng;
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};
use uuid::Uuid;

use super::run_dir;
use crate::checker::{self, Expect, Findings};
use crate::stack::Stack;
use crate::sut::{pg, Role, Sut};
use crate::workload::{self, lock, Outcome, Record, Workload, DOWN_API, DOWN_PG};
use crate::Opts;

/// Acknowledged versions per product, as the workload's ledger keeps them.
type Acked = HashMap<Uuid, Vec<i64>>;

/// Proves every checker column can fail: a clean run first, then one deliberate corruption per
/// column in that throwaway namespace, each of which must be reported.
pub async fn self_test(opts: &Opts) -> bool {
    let stack = Stack::from_env();
    println!("chaos self-test on {}", stack.describe());
    let dir = run_dir();
    let _ = std::fs::create_dir_all(&dir);
    match self_test_inner(&stack, opts, &dir).await {
        Ok(ok) => ok,
        Err(e) => {
            eprintln!("self-test could not run: {e}");
            false
        }
    }
}

async fn self_test_inner(stack: &Stack, opts: &Opts, dir: &std::path::Path) -> Result<bool, String> {
    let sut = Sut::start(stack, "self-test", dir).await?;
    let wl = Workload::new(&sut.base);
    let (mut acked, mut commands) = traffic(&wl, opts.seed).await;
    let expect = Expect::default();
    let baseline = baseline(&sut, &acked, &commands, expect).await?;
    if baseline.anomalies() != 0 {
        println!("baseline did not converge, cannot prove the columns: {:?}", baseline);
        sut.teardown(opts.keep).await;
        return Ok(false);
    }
    println!("baseline clean: every column 0");
    freeze(&sut).await;
    let db = pg(&sut.db_url).await?;
    let ids: Vec<Uuid> = {
        let mut v: Vec<Uuid> = acked.keys().copied().collect();
        v.sort();
        v
    };
    if ids.len() < 5 {
        return Err("too few products for the self-test".into());
    }
    corrupt_cache(stack, &sut, &ids).await?;
    corrupt_search(stack, &sut, &ids, &acked).await?;
    corrupt_outbox(&db, &ids, &acked, &commands).await?;
    corrupt_topics(&sut, &mut commands).await?;
    acked.entry(ids[3]).or_default();
    let f = checker::check(&sut, &acked, &commands, expect).await?;
    let ok = print_columns(&f, api_classification_ok());
    for n in &f.notes {
        println!("  - {n}");
    }
    sut.teardown(opts.keep).await;
    println!(
        "self-test: {}",
        if ok {
            "every column detects its corruption"
        } else {
            "some column missed its corruption"
        }
    );
    Ok(ok)
}

/// Step 1: products seeded, then 20 commands and 20 price changes; what was acknowledged.
async fn traffic(wl: &Workload, seed: u64) -> (Acked, HashSet<Uuid>) {
    let mut rng = StdRng::seed_from_u64(seed);
    wl.seed_products(12, &mut rng).await;
    for _ in 0..20 {
        let r = wl.request(workload::Op::Command, &mut rng).await;
        lock(&wl.ledger).records.push(r);
        let r = wl.request(workload::Op::Price, &mut rng).await;
        lock(&wl.ledger).records.push(r);
    }
    let l = lock(&wl.ledger);
    (l.acked.clone(), l.commands.keys().copied().collect::<HashSet<_>>())
}

/// Step 2: checks until every column is 0 or 60 s pass; the last findings.
async fn baseline(sut: &Sut, acked: &Acked, commands: &HashSet<Uuid>, expect: Expect) -> Result<Findings, String> {
    let end = Instant::now() + Duration::from_secs(60);
    loop {
        let f = checker::check(sut, acked, commands, expect).await?;
        if f.anomalies() == 0 || Instant::now() > end {
            return Ok(f);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Step 3: freezes the moving parts so each corruption stays put.
async fn freeze(sut: &Sut) {
    sut.stop(Role::Relay, None, Duration::from_secs(20)).await;
    sut.stop(Role::CommandConsumer, None, Duration::from_secs(20)).await;
    sut.stop(Role::Projection, None, Duration::from_secs(20)).await;
}

/// The newest acknowledged version of `id`.
fn version(acked: &Acked, id: &Uuid) -> i64 {
    acked[id].iter().copied().max().unwrap_or(1)
}

/// cache≠pg: one Redis entry's title changed.
async fn corrupt_cache(stack: &Stack, sut: &Sut, ids: &[Uuid]) -> Result<(), String> {
    let client = redis::Client::open(stack.redis_url.as_str()).map_err(|e| e.to_string())?;
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .map_err(|e| e.to_string())?;
    let key = sut.names.product_cache_key(&ids[0]);
    let d: Option<String> = redis::cmd("HGET")
        .arg(&key)
        .arg("d")
        .query_async(&mut conn)
        .await
        .map_err(|e| e.to_string())?;
    let mut d: Value = d
        .and_then(|d| serde_json::from_str(&d).ok())
        .ok_or("no cache entry to corrupt")?;
    d["title"] = json!("corrupted by the self-test");
    let _: () = redis::cmd("HSET")
        .arg(&key)
        .arg("d")
        .arg(d.to_string())
        .query_async(&mut conn)
        .await
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// search≠pg and newer: one document rewritten with a higher version, one deleted.
async fn corrupt_search(stack: &Stack, sut: &Sut, ids: &[Uuid], acked: &Acked) -> Result<(), String> {
    let http = reqwest::Client::new();
    let alias = sut.names.index_alias();
    let os = &stack.opensearch_url;
    let doc: Value = http
        .get(format!("{os}/{alias}/_doc/{}", ids[1]))
        .send()
        .await
        .map_err(|e| e.to_string())?
        .json()
        .await
        .map_err(|e| e.to_string())?;
    let mut src = doc["_source"].clone();
    let bumped = version(acked, &ids[1]) + 5;
    src["version"] = json!(bumped);
    let index = doc["_index"].as_str().ok_or("no document to corrupt")?.to_owned();
    let r = http
        .put(format!(
            "{os}/{index}/_doc/{}?version={bumped}&version_type=external_gte",
            ids[1]
        ))
        .json(&src)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if !r.status().is_success() {
        return Err(format!("could not rewrite the document: {}", r.status()));
    }
    let _ = http.delete(format!("{os}/{index}/_doc/{}", ids[2])).send().await;
    Ok(())
}

/// lost (an acked write's outbox row, an applied command's event), dup effects and outbox stuck.
async fn corrupt_outbox(
    db: &tokio_postgres::Client,
    ids: &[Uuid],
    acked: &Acked,
    commands: &HashSet<Uuid>,
) -> Result<(), String> {
    // lost: the outbox row of an acknowledged write deleted.
    db.execute(
        "DELETE FROM outbox WHERE aggregate_id = $1::text::uuid AND aggregate_version = $2",
        &[&ids[3].to_string(), &version(acked, &ids[3])],
    )
    .await
    .map_err(|e| e.to_string())?;
    // lost (command): the event of an applied command deleted.
    let applied: Vec<String> = commands.iter().map(Uuid::to_string).collect();
    let gone = db
        .execute(
            "DELETE FROM outbox WHERE id = (SELECT o.id FROM outbox o JOIN commands c \
             ON o.payload->>'causation_id' = c.command_id::text WHERE c.status = 'applied' \
             AND c.command_id::text = ANY($1) AND o.aggregate_id <> ALL($2::text[]::uuid[]) LIMIT 1)",
            &[&applied, &ids[..5].iter().map(Uuid::to_string).collect::<Vec<_>>()],
        )
        .await
        .map_err(|e| e.to_string())?;
    if gone != 1 {
        return Err("no applied command to corrupt".into());
    }
    // dup effects: a second row for an existing (product, version), published.
    db.execute(
        "INSERT INTO outbox (event_id, aggregate_type, aggregate_id, aggregate_version, topic, key, event_type, \
         schema_version, payload, headers, published_at) SELECT gen_random_uuid(), aggregate_type, aggregate_id, \
         aggregate_version, topic, key, event_type, schema_version, jsonb_set(payload::jsonb, '{causation_id}', 'null'), headers, now() \
         FROM outbox WHERE aggregate_id = $1::text::uuid ORDER BY id LIMIT 1",
        &[&ids[4].to_string()],
    )
    .await
    .map_err(|e| e.to_string())?;
    // outbox stuck: a pending row nobody publishes (the relay is stopped).
    db.execute(
        "INSERT INTO outbox (event_id, aggregate_type, aggregate_id, aggregate_version, topic, key, event_type, \
         schema_version, payload, headers) SELECT gen_random_uuid(), aggregate_type, aggregate_id, 100000, topic, key, \
         event_type, schema_version, jsonb_set(payload::jsonb, '{causation_id}', 'null'), headers \
         FROM outbox WHERE aggregate_id = $1::text::uuid ORDER BY id LIMIT 1",
        &[&ids[4].to_string()],
    )
    .await
    .map_err(|e| e.to_string())?;
    Ok(())
}

/// cmds stuck, lag and DLQ: an accepted command id never processed, a command nobody consumes,
/// a dead letter no poison explains.
async fn corrupt_topics(sut: &Sut, commands: &mut HashSet<Uuid>) -> Result<(), String> {
    // cmds stuck: an accepted command id nobody processed.
    commands.insert(Uuid::new_v4());
    // lag: a command nobody consumes (the consumer is stopped).
    sut.produce(&sut.names.commands_topic(), "k", b"{}", None).await?;
    // DLQ: a dead letter no poison explains.
    sut.produce(&sut.names.events_dlq_topic(), "k", b"unexplained", None)
        .await?;
    Ok(())
}

/// API errors: the classification of request outcomes (7 cases); true when each is right.
fn api_classification_ok() -> bool {
    let rec = |op, outcome, down| Record {
        op,
        latency: Duration::ZERO,
        outcome,
        down,
    };
    let api_cases = [
        (rec(workload::Op::Price, Outcome::Hung, 0), true),
        (rec(workload::Op::Price, Outcome::Server(500), DOWN_PG), true),
        (
            rec(workload::Op::Price, Outcome::Server(503), workload::DOWN_REDIS),
            true,
        ),
        (
            rec(
                workload::Op::Get,
                Outcome::Transport("refused".into()),
                workload::DOWN_KAFKA,
            ),
            true,
        ),
        (rec(workload::Op::Price, Outcome::Server(503), DOWN_PG), false),
        (
            rec(workload::Op::Command, Outcome::Server(503), workload::DOWN_KAFKA),
            false,
        ),
        (
            rec(workload::Op::Get, Outcome::Transport("refused".into()), DOWN_API),
            false,
        ),
    ];
    api_cases.iter().all(|(r, want)| r.is_anomaly() == *want)
}

/// Prints one line per column (found vs needed); true when every column detected its corruption.
fn print_columns(f: &Findings, api_ok: bool) -> bool {
    // (column, corruption, found, needed): each corruption touches its own product.
    let columns: Vec<(&str, &str, i64, i64)> = vec![
        (
            "lost acks",
            "outbox row of an acked write deleted; event of an applied command deleted",
            f.lost as i64,
            2,
        ),
        (
            "search≠pg",
            "document rewritten with version +5; another deleted",
            f.search_diff as i64,
            2,
        ),
        ("cache≠pg", "Redis entry's title changed", f.cache_diff as i64, 1),
        ("newer than pg", "document version +5", f.newer as i64, 1),
        (
            "cmds stuck",
            "accepted command id never processed",
            f.cmds_stuck as i64,
            1,
        ),
        (
            "dup effects",
            "second outbox row for a (product, version)",
            f.dup_effects as i64,
            1,
        ),
        (
            "outbox stuck",
            "pending row while the relay is stopped",
            f.outbox_stuck as i64,
            1,
        ),
        ("lag", "one command while the consumer is stopped", f.lag, 1),
        (
            "DLQ unexplained",
            "one dead letter, no poison injected",
            f.dlq_unexplained,
            1,
        ),
        (
            "API errors",
            "hang, 500, 503 while deps up vs excused failures (7 cases)",
            i64::from(api_ok),
            1,
        ),
    ];
    let mut ok = true;
    println!("| column | corruption | found | needed | result |\n|---|---|---|---|---|");
    for (col, what, n, need) in &columns {
        let pass = n >= need;
        ok &= pass;
        println!(
            "| {col} | {what} | {n} | {need} | {} |",
            if pass { "detected" } else { "MISSED" }
        );
    }
    ok
}
