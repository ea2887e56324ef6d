//! `aliexpress trace`: one product's way through the pipeline and where it is stuck.
//!
//! Usage: aliexpress trace PRODUCT_ID [--json]
//!
//! One line per hop (time, delay from the previous hop, what was found), then the verdict.
//! Exit code 0 when the product is searchable at its current version, 1 otherwise (2 for a
//! malformed id).

use std::time::Duration;

use uuid::Uuid;

use crate::config::InfraConfig;
use crate::ops::trace::{self, TraceDeps};

/// Flags of `trace`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The product's id.
    pub product_id: String,
    /// Print JSON (hops, verdict and the facts behind them).
    #[arg(long)]
    pub json: bool,
}

/// Traces the product; the process exits with the verdict's code.
pub async fn run(infra: &InfraConfig, a: Args) -> anyhow::Result<()> {
    let id = Uuid::parse_str(a.product_id.trim())
        .map_err(|_| super::usage("PRODUCT_ID", format!("{:?} is not a product id (a UUID)", a.product_id)))?;
    let names = infra.names();
    let (pool, cache, search) = super::connect::ops_clients(infra, Duration::from_secs(5))?;
    let deps = TraceDeps {
        pool,
        cache,
        search,
        kafka: super::connect::kafka_connection(infra)?,
        names,
    };
    eprintln!("tracing {id} (a second more while the projection has not passed it: its rate is sampled)");
    let t = trace::trace(&deps, id).await?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&t)?);
    } else {
        println!("{:<11} {:<24} {:>9}  DETAIL", "HOP", "AT", "+MS");
        for h in &t.hops {
            let at =
                h.at.map_or("-".into(), |t| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string());
            let after = h.after_ms.map_or("-".into(), |m| m.to_string());
            println!("{:<11} {:<24} {:>9}  {}", h.hop, at, after, h.detail);
        }
        println!("{}", t.verdict.text);
    }
    if t.verdict.exit_code() != 0 {
        std::process::exit(t.verdict.exit_code());
    }
    Ok(())
}
