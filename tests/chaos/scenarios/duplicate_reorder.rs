//! duplicate-reorder: copies of real events, each twice and newest first, on the events topic.

use rdkafka::message::{Header, OwnedHeaders};
use serde_json::Value;

use super::Ctx;
use crate::sut::pg;

/// Two rounds of 300 published events produced again, twice each, newest first.
pub(super) async fn run(ctx: &Ctx<'_>) -> Result<(), String> {
    for round in 1..=2 {
        tokio::time::sleep(ctx.secs(2.0, 4.0)).await;
        let n = copies(ctx, 300).await?;
        ctx.log(format!(
            "produced {n} copies of real events, newest first (round {round})"
        ));
    }
    ctx.fault_ended();
    Ok(())
}

fn headers_from(v: &Value) -> OwnedHeaders {
    let mut h = OwnedHeaders::new();
    if let Some(o) = v.as_object() {
        for (k, val) in o {
            let s = val.as_str().map_or_else(|| val.to_string(), str::to_owned);
            h = h.insert(Header {
                key: k,
                value: Some(s.as_bytes()),
            });
        }
    }
    h
}

/// Produces copies of up to `n` published events, each twice, newest first.
async fn copies(ctx: &Ctx<'_>, n: i64) -> Result<usize, String> {
    let db = pg(&ctx.sut.db_url).await?;
    let rows = db
        .query(
            "SELECT topic, key, payload::text, headers::text FROM \
             (SELECT * FROM outbox WHERE published_at IS NOT NULL ORDER BY random() LIMIT $1) s ORDER BY id DESC",
            &[&n],
        )
        .await
        .map_err(|e| e.to_string())?;
    // Newest first: the reverse of the order they were published in.
    let rows: Vec<(String, String, String, String)> =
        rows.iter().map(|r| (r.get(0), r.get(1), r.get(2), r.get(3))).collect();
    let mut sent = 0;
    for _ in 0..2 {
        for (topic, key, payload, headers) in &rows {
            let h = headers_from(&serde_json::from_str(headers).unwrap_or(Value::Null));
            ctx.sut.produce(topic, key, payload.as_bytes(), Some(h)).await?;
            sent += 1;
        }
    }
    Ok(sent)
}
