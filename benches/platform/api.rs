//! api: creates/s (8 clients, closed loop) vs a Rust client running the same SQL transaction
//! (with the relays' wake-up) and the same Redis write, and vs pgbench with the same statements; then create
//! latency open-loop at half the max rate. Also the "same work" baseline the consumer row uses.

use std::process::Command;
use std::time::{Duration, Instant};

use aliexpress::domain::product::{self as domain, EventEnvelope, EventMeta, ProductCommand};
use serde_json::json;

use super::harness::{create, fresh_env, http_client, open_loop, serve, Capacity, Env};
use super::row::{quantile, summary, Row};
use super::{progress, runs, secs};

/// Closed loop: `clients` tasks POST creates back to back for `warm + secs`; only answers
/// that arrive in the last `secs` count. Returns (201s per second, failures in the window).
pub(super) async fn api_creates(base: &str, clients: usize, warm: f64, secs: f64) -> (f64, u64) {
    let http = http_client();
    let begin = Instant::now() + Duration::from_secs_f64(warm);
    let end = begin + Duration::from_secs_f64(secs);
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let (http, base) = (http.clone(), base.to_owned());
            tokio::spawn(async move {
                let (mut ok, mut failed) = (0u64, 0u64);
                while Instant::now() < end {
                    let r = create(&http, &base).await;
                    let now = Instant::now();
                    if now >= begin && now < end {
                        if r.is_some() {
                            ok += 1;
                        } else {
                            failed += 1;
                        }
                    }
                }
                (ok, failed)
            })
        })
        .collect();
    let (mut ok, mut failed) = (0, 0);
    for t in tasks {
        let (o, f) = t.await.unwrap_or((0, 1));
        ok += o;
        failed += f;
    }
    (ok as f64 / secs, failed)
}

/// The work a create (or a consumed CreateProduct) does, without our code: one connection per
/// client (tokio-postgres, the driver under diesel-async), one round trip per statement as
/// diesel-async makes them, the same statements and row sizes, the relays' wake-up after the
/// commit, and for the API the same Redis write (the cache's versioned put script, one
/// pipeline) after that.
#[derive(Clone, Copy)]
pub(super) enum Work {
    /// Product row, outbox row (pipelined); then the wake-up and the Redis write-through.
    ApiCreate,
    /// Command probe, lock probe; product row, outbox row, command outcome (pipelined); then
    /// the wake-up.
    ConsumedCreate,
}

/// Runs `work` on `clients` connections for `warm + secs`; returns (transactions per second
/// in the last `secs`, failures in that window).
pub(super) async fn same_work(e: &Env, work: Work, clients: usize, warm: f64, secs: f64) -> (f64, u64) {
    let begin = Instant::now() + Duration::from_secs_f64(warm);
    let end = begin + Duration::from_secs_f64(secs);
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (url, names, topic) = (
            e.infra.database.url.expose().to_owned(),
            e.names.clone(),
            e.names.events_topic(),
        );
        let cache =
            aliexpress::cache::ProductCache::new(e.infra.redis.url.expose(), e.names.clone(), Duration::from_secs(600))
                .expect("cache");
        tasks.push(tokio::spawn(async move {
            let _ = names;
            let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.expect("connect");
            tokio::spawn(conn);
            let probe_cmd = client
                .prepare("SELECT status, result_version FROM commands WHERE command_id = $1::text::uuid FOR UPDATE")
                .await
                .expect("prepare");
            let probe = client
                .prepare("SELECT id, sku, title, description, category, brand, attributes, price_minor, currency, stock, status, version, created_at, updated_at FROM products WHERE id = $1::text::uuid FOR UPDATE")
                .await
                .expect("prepare");
            let product = client
                .prepare("INSERT INTO products (id, sku, title, description, category, brand, attributes, price_minor, currency, stock, status, version, created_at, updated_at, \
                          owner, product_type, category_path, variants, next_variant_id) \
                          VALUES ($1::text::uuid, $2, $3, $4, $5, $6, $7::text::jsonb, $8, $9, $10, $11, $12, now(), now(), 'default', NULL, '[]', $13::text::jsonb, 2)")
                .await
                .expect("prepare");
            let sku_row = client
                .prepare("INSERT INTO product_skus (sku, product_id, variant_id) VALUES ($1, $2::text::uuid, 1)")
                .await
                .expect("prepare");
            let history = client
                .prepare("INSERT INTO product_history (product_id, version, event_id, event_type, occurred_at, actor, causation_id, correlation_id, status, changes) \
                          VALUES ($1::text::uuid, 1, $2::text::uuid, 'ProductCreated', now(), 'token:0123456789ab', NULL, $3::text::uuid, 'draft', $4::text::jsonb)")
                .await
                .expect("prepare");
            let outbox = client
                .prepare("INSERT INTO outbox (event_id, aggregate_type, aggregate_id, aggregate_version, topic, key, event_type, schema_version, payload, headers) \
                          VALUES ($1::text::uuid, 'product', $2::text::uuid, $3, $4, $5, $6, $7, $8::text::json, $9::text::json)")
                .await
                .expect("prepare");
            let outcome = client
                .prepare("INSERT INTO commands (command_id, product_id, command_type, status, result_version, reason, processed_at) \
                          VALUES ($1::text::uuid, $2::text::uuid, 'CreateProduct', 'applied', $3, NULL, now()) \
                          ON CONFLICT (command_id) DO UPDATE SET status = excluded.status, result_version = excluded.result_version, \
                          reason = excluded.reason, processed_at = excluded.processed_at")
                .await
                .expect("prepare");
            let wake = aliexpress::store::outbox_repo::WAKE_RELAYS_SQL;
            let (mut ok, mut failed) = (0u64, 0u64);
            while Instant::now() < end {
                let id = uuid::Uuid::now_v7();
                let mut create = domain::CreateProduct::simple(
                    &uuid::Uuid::new_v4().to_string(),
                    "Bench product",
                    Some(domain::Money {
                        amount_minor: 100,
                        currency: "USD".into(),
                    }),
                    0,
                );
                create.description = "x".repeat(300);
                let cmd = ProductCommand::CreateProduct(create);
                let now = chrono::Utc::now();
                let (state, change) = domain::execute(None, id, &cmd, now).expect("valid");
                let env = EventEnvelope::new(
                    &change,
                    &state,
                    EventMeta {
                        event_id: uuid::Uuid::now_v7(),
                        causation_id: None,
                        correlation_id: Some(uuid::Uuid::now_v7()),
                        occurred_at: now,
                        actor: Some("token:0123456789ab".into()),
                    },
                );
                let payload = serde_json::to_string(&env).expect("json");
                let headers = json!({"event_id": env.event_id.to_string(), "event_type": env.event_type,
                    "schema_version": env.schema_version.to_string(), "aggregate_version": "1",
                    "correlation_id": uuid::Uuid::now_v7().to_string(),
                    "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"})
                .to_string();
                let (ids, eid, cid) = (id.to_string(), env.event_id.to_string(), uuid::Uuid::now_v7().to_string());
                let tx = async {
                    client.batch_execute("BEGIN").await?;
                    // The consumer reads and locks the command and the product first; the API's
                    // create has made its id and reads nothing.
                    if matches!(work, Work::ConsumedCreate) {
                        client.query_opt(&probe_cmd, &[&cid]).await?;
                        client.query_opt(&probe, &[&ids]).await?;
                    }
                    let status = "draft";
                    // The writes go out together (pipelined), as ours do. Fully qualified:
                    // diesel-async's RunQueryDsl::execute is in scope too.
                    let sku = &state.variants[0].sku;
                    let variants = serde_json::to_string(&state.variants).expect("json");
                    let changes = serde_json::to_string(&aliexpress::domain::product::history::changes(None, &state))
                        .expect("json");
                    let product_params: [&(dyn tokio_postgres::types::ToSql + Sync); 13] =
                        [&ids, sku, &state.title, &state.description, &state.category, &state.brand,
                         &"{}", &Some(100i64), &Some("USD"), &0i64, &status, &1i64, &variants];
                    let outbox_params: [&(dyn tokio_postgres::types::ToSql + Sync); 9] =
                        [&eid, &ids, &1i64, &topic, &ids, &env.event_type, &1i32, &payload, &headers];
                    let product_write = tokio_postgres::Client::execute(&client, &product, &product_params);
                    let outbox_write = tokio_postgres::Client::execute(&client, &outbox, &outbox_params);
                    let outcome_write = async {
                        if matches!(work, Work::ConsumedCreate) {
                            tokio_postgres::Client::execute(&client, &outcome, &[&cid, &ids, &1i64]).await?;
                        }
                        Ok(())
                    };
                    let sku_params: [&(dyn tokio_postgres::types::ToSql + Sync); 2] = [sku, &ids];
                    let history_params: [&(dyn tokio_postgres::types::ToSql + Sync); 4] = [&ids, &eid, &cid, &changes];
                    let sku_write = tokio_postgres::Client::execute(&client, &sku_row, &sku_params);
                    let history_write = tokio_postgres::Client::execute(&client, &history, &history_params);
                    futures::try_join!(product_write, sku_write, outbox_write, history_write, outcome_write)?;
                    client.batch_execute("COMMIT").await?;
                    client.batch_execute(wake).await?;
                    Ok::<_, tokio_postgres::Error>(())
                };
                let mut done = tx.await.is_ok();
                if matches!(work, Work::ApiCreate) && done {
                    done = cache.put(&state).await.is_ok();
                }
                let t = Instant::now();
                if t >= begin && t < end {
                    if done {
                        ok += 1;
                    } else {
                        failed += 1;
                    }
                }
                if !done {
                    let _ = client.batch_execute("ROLLBACK").await;
                }
            }
            (ok, failed)
        }));
    }
    let (mut ok, mut failed) = (0, 0);
    for t in tasks {
        let (o, f) = t.await.unwrap_or((0, 1));
        ok += o;
        failed += f;
    }
    (ok as f64 / secs, failed)
}

/// The SQL of the API's create for pgbench (product row with its variants, SKU row, history
/// row, outbox row of the envelope's size, pipelined as ours are; then the relays' wake-up in a
/// transaction of its own, `outbox_repo::WAKE_RELAYS_SQL`), without Redis.
pub(super) const PG_SAME_TX: &str = "\\set k random(1, 1000000000000000)
BEGIN;
\\startpipeline
INSERT INTO products (id, sku, title, description, category, brand, attributes, price_minor, currency, stock, status, version, created_at, updated_at, owner, category_path, variants, next_variant_id) VALUES (md5('p' || :k)::uuid, ('b-' || :k), 'Bench product', repeat('x', 300), '', '', '{}', 100, 'USD', 0, 'draft', 1, now(), now(), 'default', '[]', jsonb_build_array(jsonb_build_object('id', 1, 'sku', ('b-' || :k), 'options', '{}'::jsonb, 'prices', jsonb_build_array(jsonb_build_object('amount_minor', 100, 'currency', 'USD')), 'stock', 0)), 2);
INSERT INTO product_skus (sku, product_id, variant_id) VALUES (('b-' || :k), md5('p' || :k)::uuid, 1);
INSERT INTO product_history (product_id, version, event_id, event_type, occurred_at, actor, status, changes) VALUES (md5('p' || :k)::uuid, 1, gen_random_uuid(), 'ProductCreated', now(), 'token:0123456789ab', 'draft', jsonb_build_array(jsonb_build_object('field', 'title', 'before', NULL, 'after', 'Bench product')));
INSERT INTO outbox (event_id, aggregate_type, aggregate_id, aggregate_version, topic, key, event_type, schema_version, payload, headers) VALUES (gen_random_uuid(), 'product', gen_random_uuid(), 1, 't', 'k', 'ProductCreated', 1, json_build_object('pad', repeat('x', 900)), '{}');
\\endpipeline
COMMIT;
SELECT set_config('synchronous_commit', 'off', true), pg_notify('aliexpress_outbox', '');
";

/// [`PG_SAME_TX`] as it was before run Q: the NOTIFY pipelined with the rows, inside the
/// transaction (it takes Postgres's notify lock through the commit's flush).
fn pg_notify_inside() -> String {
    let wake = format!("{};\n", aliexpress::store::outbox_repo::WAKE_RELAYS_SQL);
    assert!(PG_SAME_TX.contains(&wake), "the create's SQL ends with the wake-up");
    PG_SAME_TX
        .replace(&wake, "")
        .replace("\\endpipeline", "NOTIFY aliexpress_outbox;\n\\endpipeline")
}

/// pgbench (`-n -M prepared`, `clients` connections on up to 2 threads, `-T secs`) of the
/// script at `script` against `url`, with `extra` arguments, run in `dir`.
fn run_pgbench(
    url: &str,
    clients: u32,
    secs: f64,
    script: &std::path::Path,
    extra: &[&str],
    dir: &std::path::Path,
) -> std::process::Output {
    Command::new("pgbench")
        .current_dir(dir)
        .args([
            "-n",
            "-M",
            "prepared",
            "-c",
            &clients.to_string(),
            "-j",
            &clients.min(2).to_string(),
        ])
        .args(["-T", &(secs.ceil() as u64).to_string()])
        .args(extra)
        .arg("-f")
        .arg(script)
        .arg(url)
        .output()
        .expect("pgbench runs (postgresql-contrib)")
}

/// pgbench `-T secs` of `sql` over `clients` connections; (tps, failed transactions).
pub(super) fn pgbench(url: &str, clients: u32, secs: f64, sql: &str) -> (f64, u64) {
    let script = std::env::temp_dir().join(format!("aliexpress-pgbench-{}.sql", std::process::id()));
    std::fs::write(&script, sql).expect("script");
    let out = run_pgbench(url, clients, secs, &script, &[], &std::env::temp_dir());
    let text = String::from_utf8_lossy(&out.stdout);
    let tps = text
        .lines()
        .find(|l| l.starts_with("tps"))
        .and_then(|l| l.split_whitespace().nth(2))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0.0);
    let failed = text
        .lines()
        .find(|l| l.starts_with("number of failed transactions"))
        .and_then(|l| l.split(':').nth(1))
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or(u64::from(!out.status.success()));
    (tps, failed)
}

/// pgbench of `sql` open loop at `rate` transactions/s over `clients` connections for `secs`:
/// (p50, p99, transactions logged, failed), each latency from when the transaction was due
/// (pgbench's `-R` schedule: its lag plus its time, from the per-transaction log).
pub(super) fn pgbench_latency(url: &str, clients: u32, rate: f64, secs: f64, sql: &str) -> (f64, f64, usize, u64) {
    let dir = std::env::temp_dir().join(format!("aliexpress-pgbench-log-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("log dir");
    let script = dir.join("tx.sql");
    std::fs::write(&script, sql).expect("script");
    let rate = format!("{rate:.0}");
    let out = run_pgbench(url, clients, secs, &script, &["-R", &rate, "-l"], &dir);
    // Lines: client, transaction, time (us), script, epoch, us, schedule lag (us).
    let mut ms: Vec<f64> = std::fs::read_dir(&dir)
        .expect("log dir")
        .flatten()
        .filter(|f| f.file_name().to_string_lossy().starts_with("pgbench_log"))
        .flat_map(|f| {
            std::fs::read_to_string(f.path())
                .unwrap_or_default()
                .lines()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .filter_map(|l| {
            let f: Vec<f64> = l.split_whitespace().filter_map(|x| x.parse().ok()).collect();
            (f.len() >= 7).then(|| (f[2] + f[6]) / 1000.0)
        })
        .collect();
    ms.sort_by(f64::total_cmp);
    let _ = std::fs::remove_dir_all(&dir);
    let failed = u64::from(!out.status.success());
    (quantile(&ms, 0.5), quantile(&ms, 0.99), ms.len(), failed)
}

pub(super) async fn bench_api(rows: &mut Vec<Row>, cap: &mut Capacity) {
    let e = fresh_env("api").await;
    let clients = 8;
    let (warm, secs) = (2.0, secs());
    let (mut ours, mut same, mut pg, mut inside) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut ours_err, mut same_err, mut pg_err) = (0, 0, 0);
    let (_role, base) = serve(&e, &[]).await;
    for run in 0..runs() {
        let (o, f) = api_creates(&base, clients, warm, secs).await;
        ours.push(o);
        ours_err += f;
        let (s, f) = same_work(&e, Work::ApiCreate, clients, warm, secs).await;
        same.push(s);
        same_err += f;
        let (p, f) = pgbench(e.infra.database.url.expose(), clients as u32, secs, PG_SAME_TX);
        pg.push(p);
        pg_err += f;
        let (n, f) = pgbench(e.infra.database.url.expose(), clients as u32, secs, &pg_notify_inside());
        inside.push(n);
        pg_err += f;
        progress(format_args!(
            "api run {run}: ours {o:.0}/s, same SQL+Redis {s:.0}/s, pgbench {p:.0}/s, with the NOTIFY inside the transaction {n:.0}/s"
        ));
    }
    let (o, or) = summary(ours);
    cap.creates_per_sec = Some(o);
    let (s, sr) = summary(same);
    let (p, pr) = summary(pg);
    rows.push(
        Row::new(format!("API creates, {clients} clients, closed loop"), "creates/s")
            .ours(o, or)
            .baseline(
                format!("same SQL (wake-up after commit) + Redis put, {clients} conns"),
                s,
                sr,
            )
            .goal(">= 0.6")
            .errors(ours_err + same_err)
            .verified(format!(
                "only 201s counted; {}s window after {warm}s warm-up; failures ours {ours_err}, baseline {same_err}",
                secs
            )),
    );
    rows.push(
        Row::new(format!("API creates vs SQL alone, {clients} clients"), "creates/s")
            .ours(o, or)
            .baseline(format!("pgbench same statements + wake-up, {clients} conns"), p, pr)
            .goal("(info)")
            .errors(pg_err)
            .verified(format!(
                "pgbench -M prepared, failed transactions {pg_err}; no Redis, no HTTP"
            )),
    );
    let (n, nr) = summary(inside);
    rows.push(
        Row::new(
            format!("SQL with the wake-up after commit vs NOTIFY inside the transaction, {clients} clients"),
            "tx/s",
        )
        .ours(p, pr)
        .baseline("pgbench, the NOTIFY pipelined with the rows (before run Q)", n, nr)
        .goal("(info)")
        .errors(pg_err)
        .verified("pgbench -M prepared, the same statements; only where the NOTIFY goes differs"),
    );

    // Latency of creates open-loop at half the measured maximum.
    let rate = (o / 2.0).max(10.0);
    let http = http_client();
    let (mut p50, mut p99, mut p999, mut errs, mut n) = (Vec::new(), Vec::new(), Vec::new(), 0, 0);
    let (mut sql99, mut sql50, mut sql_n, mut sql_err) = (Vec::new(), Vec::new(), 0, 0);
    for run in 0..runs() {
        let s = open_loop(rate, 1.0, secs, |_| {
            let (http, base) = (http.clone(), base.clone());
            ("create", async move { create(&http, &base).await.is_some() })
        })
        .await;
        let s = s.into_values().next().unwrap_or_default();
        n += s.ok.len();
        errs += s.errors;
        p50.push(quantile(&s.ok, 0.5));
        p99.push(quantile(&s.ok, 0.99));
        p999.push(quantile(&s.ok, 0.999));
        let (b50, b99, bn, bf) = pgbench_latency(e.infra.database.url.expose(), clients as u32, rate, secs, PG_SAME_TX);
        sql50.push(b50);
        sql99.push(b99);
        sql_n += bn;
        sql_err += bf;
        progress(format_args!(
            "api latency run {run} @{rate:.0}/s: p50 {:.1} ms, p99 {:.1} ms; the same SQL (pgbench -R): p50 {b50:.1}, p99 {b99:.1} ms",
            p50[run], p99[run]
        ));
    }
    let (a, ar) = summary(p99);
    let (b, br) = summary(p50);
    let (c, _) = summary(p999);
    rows.push(
        Row::new(
            format!("API create latency @{rate:.0}/s (half max), open loop: p99"),
            "ms",
        )
        .ours(a, ar)
        .baseline(format!("p50 (p99.9 {c:.1} ms)"), b, br)
        .goal("p99 <= 25")
        .errors(errs)
        .verified(format!("{n} 201s timed from when each was due, {errs} failures")),
    );
    // Where the time goes: the same statements at the same rate, without HTTP, Redis or us.
    let (s99, s99r) = summary(sql99);
    let (s50, _) = summary(sql50);
    rows.push(
        Row::new(
            format!("API create p99 @{rate:.0}/s vs the same SQL alone at that rate"),
            "ms",
        )
        .ours(a, ar)
        .baseline(
            format!("pgbench -R, same statements + wake-up, {clients} conns: p99 (p50 {s50:.1})"),
            s99,
            s99r,
        )
        .goal("(info)")
        .errors(sql_err)
        .verified(format!(
            "{sql_n} pgbench transactions, each from when it was due (schedule lag + time)"
        )),
    );
}
