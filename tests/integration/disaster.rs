//! The disaster drill: a Postgres of the test's own (deploy/local/stack with
//! `ALIEXPRESS_SERVICES=postgres`: its own state folder and port, a synchronous WAL archive and
//! base backups), its data directory destroyed under the API, restored to the latest point and
//! then to a time before the last writes; `aliexpress post-restore` brings search and the cache
//! back to each restored truth.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use diesel::QueryableByName;
use diesel_async::RunQueryDsl;
use serde_json::json;
use uuid::Uuid;

use aliexpress::store::pool;

use crate::helpers::{TestApp, TestEnv, TOKEN};
use crate::ops::bin;

/// The drill's own Postgres instance, removed on drop.
struct DrillPostgres {
    state: PathBuf,
    port: u16,
}

impl DrillPostgres {
    fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let pg = Self {
            state: PathBuf::from("/var/tmp/aliexpress-drill-test"),
            port,
        };
        // What an interrupted earlier run left.
        let _ = pg.stack(&["down", "--purge"]);
        let up = pg.stack(&["up"]);
        assert!(up.status.success(), "drill postgres up: {}", text(&up));
        pg
    }

    fn stack(&self, args: &[&str]) -> Output {
        Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/local/stack"))
            .args(args)
            .env("ALIEXPRESS_STATE_DIR", &self.state)
            .env("ALIEXPRESS_PG_PORT", self.port.to_string())
            .env("ALIEXPRESS_SERVICES", "postgres")
            .env("ALIEXPRESS_PG_BACKUP", "sync")
            .output()
            .expect("deploy/local/stack runs")
    }

    fn url(&self) -> String {
        format!("postgres://aliexpress:aliexpress@127.0.0.1:{}/aliexpress", self.port)
    }

    /// The disaster: the server killed and its data directory gone.
    fn destroy(&self) {
        let data = self.state.join("postgres/data");
        let pid = std::fs::read_to_string(data.join("postmaster.pid")).expect("postmaster.pid");
        let pid = pid.lines().next().expect("pid line").trim().to_owned();
        assert!(Command::new("kill")
            .args(["-9", &pid])
            .status()
            .expect("kill")
            .success());
        std::fs::remove_dir_all(&data).expect("data directory removed");
    }

    fn restore(&self, args: &[&str]) {
        let o = self.stack(&[&["restore"], args].concat());
        assert!(o.status.success(), "restore {args:?}: {}", text(&o));
    }
}

impl Drop for DrillPostgres {
    fn drop(&mut self) {
        let _ = self.stack(&["down", "--purge"]);
    }
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[derive(QueryableByName)]
struct Row {
    #[diesel(sql_type = diesel::sql_types::Uuid)]
    id: Uuid,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    version: i64,
    #[diesel(sql_type = diesel::sql_types::Text)]
    title: String,
}

/// Every product of the test's database: id -> (version, title), on a fresh connection.
async fn products(env: &TestEnv) -> BTreeMap<Uuid, (i64, String)> {
    let mut c = pool::connect(env.infra.database.url.expose(), Duration::from_secs(60))
        .await
        .expect("connect");
    let rows: Vec<Row> = diesel::sql_query("SELECT id, version, title FROM products")
        .load(&mut c)
        .await
        .expect("products");
    rows.into_iter().map(|r| (r.id, (r.version, r.title))).collect()
}

async fn create(app: &TestApp, n: usize, tag: &str) -> Vec<Uuid> {
    let mut ids = Vec::new();
    for i in 0..n {
        let p = app
            .create_product(&format!("{tag}-{i}-{}", Uuid::new_v4()), &format!("{tag} {i}"))
            .await;
        ids.push(p["id"].as_str().and_then(|s| s.parse().ok()).expect("id"));
    }
    ids
}

async fn retitle(app: &TestApp, id: Uuid, title: &str) {
    let r = app
        .http
        .patch(app.url(&format!("/api/products/{id}")))
        .bearer_auth(TOKEN)
        .json(&json!({ "title": title }))
        .send()
        .await
        .expect("patch");
    assert_eq!(r.status(), 200, "retitle {id}");
}

/// Publishes the outbox and projects everything published.
async fn project(env: &TestEnv) {
    env.drain_outbox().await;
    let mut p = env.projector(None, None).await;
    env.consume_until_idle(&mut p).await;
}

/// Search and cache hold exactly `truth`: every product indexed at its version and title,
/// every cached entry at its version, and nothing of `gone`.
async fn assert_read_side_is(env: &TestEnv, truth: &BTreeMap<Uuid, (i64, String)>, gone: &[Uuid], when: &str) {
    let cache = env.cache();
    for (id, (version, title)) in truth {
        let doc = env
            .document(&id.to_string())
            .await
            .unwrap_or_else(|| panic!("{when}: {id} not in search"))["_source"]
            .clone();
        let found = (doc["version"].as_i64(), doc["title"].as_str());
        assert_eq!(found, (Some(*version), Some(title.as_str())), "{when}: search of {id}");
        if let Some(cached) = cache.get(*id).await.expect("cache") {
            assert_eq!(
                (cached.version, &cached.title),
                (*version, title),
                "{when}: cache of {id}"
            );
        }
    }
    for id in gone {
        assert!(
            env.document(&id.to_string()).await.is_none(),
            "{when}: {id} still in search"
        );
        assert!(
            cache.get(*id).await.expect("cache").is_none(),
            "{when}: {id} still cached"
        );
    }
}

fn post_restore(env: &TestEnv) -> String {
    let o = bin(env, &["post-restore", "--execute", "--grace", "1s"]);
    assert!(o.status.success(), "post-restore: {}", text(&o));
    text(&o)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_destroyed_database_comes_back_from_backup_and_the_read_side_follows_it() {
    let pg = DrillPostgres::start();
    let app = TestApp::spawn_on(TestEnv::with_settings(pg.url(), |_| {}).await, |_| {}).await;
    let env = &app.env;

    // Acknowledged writes, a base backup, more acknowledged writes.
    let a = create(&app, 4, "before-backup").await;
    let o = pg.stack(&["backup"]);
    assert!(o.status.success(), "backup: {}", text(&o));
    let b = create(&app, 4, "after-backup").await;
    retitle(&app, a[0], "changed after the backup").await;
    project(env).await;
    let at_t = products(env).await;
    let t = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);

    // After T: creates and updates, projected (search ahead of T)...
    let c = create(&app, 3, "after-t").await;
    retitle(&app, b[0], "changed after t").await;
    retitle(&app, a[1], "changed after t").await;
    project(env).await;
    // ...and more, published but not yet projected (the projection lagging).
    let d = create(&app, 1, "lagging").await;
    retitle(&app, b[1], "lagging change").await;
    env.drain_outbox().await;
    let acknowledged = products(env).await;

    // Disaster 1: the data directory destroyed; restore to the latest point.
    pg.destroy();
    pg.restore(&[]);
    assert_eq!(products(env).await, acknowledged, "every acknowledged write is back");
    let out = post_restore(env);
    assert!(out.contains("Lost with the restore: 0 event(s)"), "{out}");
    assert_read_side_is(env, &acknowledged, &[], "after the restore to the latest point").await;

    // Disaster 2: destroyed again; restore to T, before the last writes.
    pg.destroy();
    pg.restore(&["--to", &t]);
    let restored = products(env).await;
    assert_eq!(
        restored.keys().collect::<Vec<_>>(),
        at_t.keys().collect::<Vec<_>>(),
        "the products of T"
    );
    for (id, (_, title)) in &at_t {
        assert_eq!(&restored[id].1, title, "{id} as it was at T");
    }
    let out = post_restore(env);
    assert!(
        out.contains("3 to move past their lost versions") && out.contains("4 no longer exist"),
        "{out}"
    );
    // Each product whose later versions were lost is now past them.
    for id in [a[1], b[0], b[1]] {
        assert!(restored[&id].0 < acknowledged[&id].0);
    }
    let after = products(env).await;
    for id in [a[1], b[0], b[1]] {
        assert_eq!(
            after[&id].0,
            acknowledged[&id].0 + 1,
            "{id} moved past its lost versions"
        );
    }
    // The live projection, fenced, never applies the lost events it had not consumed; the
    // snapshots that moved the products on reach it like any write.
    project(env).await;
    let gone: Vec<Uuid> = c.iter().chain(&d).copied().collect();
    assert_read_side_is(env, &after, &gone, "after the restore to T").await;

    // Replaying the topic from the start would bring the vanished products back: refused.
    let o = bin(env, &["replay", "--to-earliest", "--execute"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("restore fence"), "{}", text(&o));
}
