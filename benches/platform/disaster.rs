//! disaster: the database lost and restored from backup, on a Postgres of the row's own
//! (deploy/local/stack with `ALIEXPRESS_SERVICES=postgres`, a synchronous WAL archive):
//! N products, a base backup, N/10 more acknowledged after it, the data directory destroyed,
//! `deploy/local/stack restore` to the latest point, then `aliexpress post-restore --execute`
//! until search holds every product. RPO: acknowledged writes missing after the restore; RTO:
//! each step's time (`BENCH_DISASTER_PRODUCTS`, default 100 000 x scale). One run: a restore is
//! minutes of one machine's disk, not a rate to take a median of.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use aliexpress::search::SearchClient;
use aliexpress::store::pool;
use diesel_async::RunQueryDsl;

use super::harness::{bin, bin_env, free_port, fresh_env_on, seed_products};
use super::projection::doc_count;
use super::row::Row;
use super::{env_or, progress, scale};

struct Drill {
    state: PathBuf,
    port: u16,
}

impl Drill {
    fn stack(&self, args: &[&str]) -> Output {
        let out = Command::new("deploy/local/stack")
            .args(args)
            .env("ALIEXPRESS_STATE_DIR", &self.state)
            .env("ALIEXPRESS_PG_PORT", self.port.to_string())
            .env("ALIEXPRESS_SERVICES", "postgres")
            .env("ALIEXPRESS_PG_BACKUP", "sync")
            .output()
            .expect("deploy/local/stack runs");
        assert!(
            out.status.success() || args == ["down", "--purge"],
            "stack {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    fn url(&self) -> String {
        format!("postgres://aliexpress:aliexpress@127.0.0.1:{}/aliexpress", self.port)
    }
}

impl Drop for Drill {
    fn drop(&mut self) {
        self.stack(&["down", "--purge"]);
    }
}

async fn count(url: &str) -> i64 {
    #[derive(diesel::QueryableByName)]
    struct N {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let mut c = pool::connect(url, Duration::from_secs(600)).await.expect("conn");
    diesel::sql_query("SELECT count(*) AS n FROM products")
        .get_result::<N>(&mut c)
        .await
        .expect("count")
        .n
}

pub(super) async fn bench_disaster(rows: &mut Vec<Row>) {
    let port = free_port();
    let pg = Drill {
        state: PathBuf::from("/var/tmp/aliexpress-drill-bench"),
        port,
    };
    pg.stack(&["down", "--purge"]);
    pg.stack(&["up"]);
    let e = fresh_env_on("disaster", &pg.url()).await;
    let url = e.infra.database.url.expose().to_owned();
    let n: usize = env_or("BENCH_DISASTER_PRODUCTS", &format!("{:.0}", 100_000.0 * scale()))
        .parse()
        .unwrap_or(100_000);
    let before: Vec<uuid::Uuid> = (0..n).map(|_| uuid::Uuid::now_v7()).collect();
    let after: Vec<uuid::Uuid> = (0..n / 10).map(|_| uuid::Uuid::now_v7()).collect();
    progress(format_args!(
        "disaster: {n} products, a base backup, {} more",
        after.len()
    ));
    seed_products(&url, &before, 1, 1000).await;
    let t = Instant::now();
    pg.stack(&["backup"]);
    let backup = t.elapsed().as_secs_f64();
    seed_products(&url, &after, 1, 10).await;
    let acknowledged = (before.len() + after.len()) as i64;

    let data = pg.state.join("postgres/data");
    let pid = std::fs::read_to_string(data.join("postmaster.pid")).expect("postmaster.pid");
    let pid = pid.lines().next().expect("pid").trim().to_owned();
    Command::new("kill").args(["-9", &pid]).status().expect("kill");
    std::fs::remove_dir_all(&data).expect("data directory removed");

    let t = Instant::now();
    pg.stack(&["restore"]);
    let restore = t.elapsed().as_secs_f64();
    let found = count(&url).await;
    let t = Instant::now();
    let out = Command::new(bin())
        .args(["post-restore", "--execute", "--grace", "0s", "--verify-timeout", "600s"])
        .envs(bin_env(&e))
        .output()
        .expect("post-restore runs");
    let read_side = t.elapsed().as_secs_f64();
    let errors = u64::from(!out.status.success());
    if errors > 0 {
        eprintln!("post-restore failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let search = SearchClient::new(e.infra.opensearch.url.expose(), Duration::from_secs(60)).expect("search");
    let docs = doc_count(&search, &e.names.index_alias()).await;
    progress(format_args!(
        "disaster: backup {backup:.1} s, restore {restore:.1} s, post-restore {read_side:.1} s; {found} of {acknowledged} products back, {docs} documents"
    ));
    rows.push(
        Row::new(format!("disaster: Postgres restored to the latest point, {acknowledged} products"), "s")
            .ours(restore, (restore, restore))
            .goal("RPO 0")
            .errors((acknowledged - found).unsigned_abs())
            .verified(format!(
                "{found} of {acknowledged} acknowledged products back ({} committed after the base backup, which took {backup:.1} s)",
                after.len()
            )),
    );
    rows.push(
        Row::new(
            "disaster: read side back (post-restore: scan, fence, rebuild from Postgres)",
            "s",
        )
        .ours(read_side, (read_side, read_side))
        .goal("RTO stated")
        .errors(errors + (acknowledged - docs as i64).unsigned_abs())
        .verified(format!("{docs} documents behind the alias for {found} products")),
    );
}
