//! The runbook's replay steps with the role commands (docs/RUNBOOK.md §4): all four roles run
//! under `deploy/local/roles`; the projection alone is stopped while the API keeps serving,
//! its group then has no active members, `replay --to-earliest --execute` rewinds it, and
//! once started again it re-projects everything and catches up. The roles run from this test's
//! own state folder and ports, on its own namespace, beside anyone else's.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::json;

use crate::helpers::{restartable_ports, wait_until, TestEnv, TOKEN};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

struct Roles {
    env: Vec<(&'static str, String)>,
    state: PathBuf,
}

impl Roles {
    fn run(&self, args: &[&str]) -> Output {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/local/roles");
        let out = Command::new(script)
            .args(args)
            .envs(self.env.clone())
            .output()
            .expect("roles runs");
        assert!(
            out.status.success(),
            "roles {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    fn status(&self) -> String {
        String::from_utf8_lossy(&self.run(&["status"]).stdout).into_owned()
    }

    fn aliexpress(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_aliexpress"))
            .args(args)
            .envs(self.env.clone())
            .output()
            .expect("aliexpress runs")
    }
}

impl Drop for Roles {
    fn drop(&mut self) {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/local/roles");
        let _ = Command::new(script).arg("stop").envs(self.env.clone()).output();
        let _ = std::fs::remove_dir_all(&self.state);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_runbooks_replay_steps_run_with_the_role_commands_while_the_api_serves() {
    let env = TestEnv::new().await;
    let state = std::env::temp_dir().join(format!("aliexpress-roles-{}", env.names.projection_group()));
    let api_port = free_port();
    let mut vars = env.bin_env();
    vars.extend([
        ("ALIEXPRESS_STATE_DIR", state.display().to_string()),
        ("ALIEXPRESS_BIN", env!("CARGO_BIN_EXE_aliexpress").to_owned()),
        ("ALIEXPRESS_API_PORT", api_port.to_string()),
        ("ALIEXPRESS_ISSUER_PORT", free_port().to_string()),
        ("ALIEXPRESS_METRICS_PORT_BASE", restartable_ports(4).to_string()),
        ("API_TOKENS", TOKEN.to_owned()),
    ]);
    let roles = Roles { env: vars, state };
    roles.run(&["start"]);
    let status = roles.status();
    for r in [
        "issuer",
        "serve",
        "outbox-relay",
        "product-consumer",
        "product-event-consumer",
    ] {
        assert!(status.contains(&format!("{r} running")), "{status}");
    }

    // A write goes all the way to the index through the roles.
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{api_port}");
    let created: serde_json::Value = http
        .post(format!("{base}/api/products"))
        .bearer_auth(TOKEN)
        .json(&json!({"sku": "ROLES-1", "title": "Runbook lamp"}))
        .send()
        .await
        .expect("create")
        .json()
        .await
        .expect("json");
    let id = created["id"].as_str().expect("id").to_owned();
    assert!(
        wait_until(Duration::from_secs(60), || async { env.document(&id).await.is_some() }).await,
        "projected by the running roles"
    );

    // 1. Stop the consumer only: the others keep running, the API keeps answering.
    roles.run(&["stop", "product-event-consumer"]);
    let status = roles.status();
    assert!(status.contains("product-event-consumer stopped"), "{status}");
    assert!(
        status.contains("serve running") && status.contains("outbox-relay running"),
        "{status}"
    );
    let live = http.get(format!("{base}/health/live")).send().await.expect("live");
    assert_eq!(live.status(), 200, "the API serves while the consumer is stopped");

    // 2. Its group has no active members.
    let group = env.names.projection_group();
    let described = roles.aliexpress(&["consumer-groups", "describe", "--group", &group]);
    let text = String::from_utf8_lossy(&described.stdout).into_owned();
    assert!(
        text.contains(&format!("Consumer group '{group}' has no active members.")),
        "{text}{}",
        String::from_utf8_lossy(&described.stderr)
    );

    // 3-4. Dry run, then the reset.
    let dry = roles.aliexpress(&["replay", "--to-earliest"]);
    assert!(dry.status.success(), "{}", String::from_utf8_lossy(&dry.stderr));
    let reset = roles.aliexpress(&["replay", "--to-earliest", "--execute"]);
    assert!(
        reset.status.success(),
        "{}{}",
        String::from_utf8_lossy(&reset.stdout),
        String::from_utf8_lossy(&reset.stderr)
    );
    assert!(
        env.count(&format!("replay_audit WHERE group_id = '{group}'")).await >= 1,
        "the reset is audited"
    );

    // 5. Start it again: it re-projects from the start and catches up (lag 0 again).
    roles.run(&["start", "product-event-consumer"]);
    assert!(roles.status().contains("product-event-consumer running"));
    let log = roles.state.join("roles/product-event-consumer.log");
    let probe = aliexpress::bus::consumer::build(
        &aliexpress::bus::KafkaConnection::from_settings(&env.infra.kafka).expect("kafka settings"),
        &group,
    )
    .expect("probe");
    let topic = env.names.events_topic();
    let caught_up = wait_until(Duration::from_secs(60), || {
        let relog = std::fs::read_to_string(&log).unwrap_or_default();
        let lag = aliexpress::bus::consumer::lag_blocking(&probe, &topic, Duration::from_secs(5)).unwrap_or_default();
        async move {
            // Both runs of the consumer projected the product: the second after the reset.
            relog.matches("indexing_product").count() >= 2
                && !lag.is_empty()
                && lag.iter().all(|p| p.lag == 0 && p.committed.is_some())
        }
    })
    .await;
    assert!(
        caught_up,
        "the consumer re-projected after the reset and caught up: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
}
