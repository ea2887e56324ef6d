//! late-outbox: an outbox row committed after later rows were published (it has a lower id).

use serde_json::{json, Value};
use std::time::{Duration, Instant};
use uuid::Uuid;

use super::Ctx;
use crate::sut::{self, pg};
use crate::workload::lock;

/// Replaces every "stock" value under `v` with `stock` and every "delta" with 1.
fn restock(v: &mut Value, stock: i64) {
    match v {
        Value::Object(o) => {
            for (k, x) in o.iter_mut() {
                match k.as_str() {
                    "stock" if x.is_number() => *x = json!(stock),
                    "delta" if x.is_number() => *x = json!(1),
                    _ => restock(x, stock),
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|x| restock(x, stock)),
        _ => {}
    }
}

/// A stock change written the way the write side writes it (product row + outbox row in one
/// transaction), but committed only after later outbox rows were published.
pub(super) async fn run(ctx: &Ctx<'_>) -> Result<(), String> {
    let sut = ctx.sut;
    let http = reqwest::Client::new();
    let created: Value = http
        .post(format!("{}/api/products", sut.base))
        .bearer_auth(sut::TOKEN)
        .json(
            &json!({"sku": format!("late-{}", Uuid::new_v4().simple()), "title": "Late one", "stock": 1,
                      "price": {"amount_minor": 500, "currency": "USD"}}),
        )
        .send()
        .await
        .map_err(|e| e.to_string())?
        .json()
        .await
        .map_err(|e| e.to_string())?;
    let id = created["id"]
        .as_str()
        .and_then(|s| Uuid::parse_str(s).ok())
        .ok_or(format!("create: {created}"))?;
    lock(&ctx.wl.ledger).ack(id, created["version"].as_i64().unwrap_or(1));
    let adjusted: Value = http
        .post(format!("{}/api/products/{id}/stock", sut.base))
        .bearer_auth(sut::TOKEN)
        .json(&json!({"delta": 1}))
        .send()
        .await
        .map_err(|e| e.to_string())?
        .json()
        .await
        .map_err(|e| e.to_string())?;
    let v = adjusted["version"].as_i64().ok_or(format!("adjust: {adjusted}"))?;
    lock(&ctx.wl.ledger).ack(id, v);

    let db = pg(&sut.db_url).await?;
    db.batch_execute("BEGIN").await.map_err(|e| e.to_string())?;
    let r = db
        .query_one(
            "SELECT p.version, p.stock, o.id, o.payload::text, o.headers::text FROM products p \
             JOIN outbox o ON o.aggregate_id = p.id AND o.aggregate_version = p.version \
             WHERE p.id = $1::text::uuid FOR UPDATE OF p",
            &[&id.to_string()],
        )
        .await
        .map_err(|e| format!("late outbox: read: {}", crate::sut::pg_error(&e)))?;
    let (version, stock, src_id, payload, headers): (i64, i64, i64, String, String) =
        (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4));
    let new_version = version + 1;
    let new_stock = stock + 1;
    let event_id = Uuid::new_v4();
    let now = chrono::Utc::now().to_rfc3339();
    let mut p: Value = serde_json::from_str(&payload).map_err(|e| e.to_string())?;
    p["event_id"] = json!(event_id);
    p["aggregate_version"] = json!(new_version);
    p["occurred_at"] = json!(now);
    p["causation_id"] = Value::Null;
    p["state"]["version"] = json!(new_version);
    restock(&mut p["state"]["variants"], new_stock);
    p["state"]["updated_at"] = json!(now);
    restock(&mut p["data"], new_stock);
    let mut h: Value = serde_json::from_str(&headers).unwrap_or(json!({}));
    h["event_id"] = json!(event_id.to_string());
    h["aggregate_version"] = json!(new_version.to_string());
    db.execute(
        "UPDATE products SET stock = $2, version = $3, updated_at = now() WHERE id = $1::text::uuid",
        &[&id.to_string(), &new_stock, &new_version],
    )
    .await
    .map_err(|e| format!("late outbox: update: {}", crate::sut::pg_error(&e)))?;
    let row = db
        .query_one(
            "INSERT INTO outbox (event_id, aggregate_type, aggregate_id, aggregate_version, topic, key, event_type, \
             schema_version, payload, headers) SELECT $1::text::uuid, aggregate_type, aggregate_id, $2, topic, key, \
             event_type, schema_version, $3::text::jsonb, $4::text::jsonb FROM outbox WHERE id = $5 RETURNING id",
            &[
                &event_id.to_string(),
                &new_version,
                &p.to_string(),
                &h.to_string(),
                &src_id,
            ],
        )
        .await
        .map_err(|e| format!("late outbox: insert: {}", crate::sut::pg_error(&e)))?;
    let late_id: i64 = row.get(0);
    ctx.log(format!(
        "outbox row {late_id} inserted (product {id} v{new_version}), transaction held open"
    ));
    // Hold it until at least 20 later rows were published.
    let watch = pg(&sut.db_url).await?;
    let end = Instant::now() + Duration::from_secs(60);
    loop {
        let n: i64 = watch
            .query_one(
                "SELECT count(*) FROM outbox WHERE id > $1 AND published_at IS NOT NULL",
                &[&late_id],
            )
            .await
            .map_err(|e| e.to_string())?
            .get(0);
        if n >= 20 {
            ctx.log(format!("{n} later rows published"));
            break;
        }
        if Instant::now() > end {
            let _ = db.batch_execute("ROLLBACK").await;
            return Err("late outbox: later rows were not published within 60 s".into());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    db.batch_execute("COMMIT")
        .await
        .map_err(|e| format!("late outbox: commit: {}", crate::sut::pg_error(&e)))?;
    lock(&ctx.wl.ledger).ack(id, new_version);
    ctx.log(format!("committed outbox row {late_id} late"));
    ctx.fault_ended();
    Ok(())
}
