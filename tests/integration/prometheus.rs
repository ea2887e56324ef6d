//! The native stack's Prometheus scrapes every long-running role.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::helpers::{wait_until, TestEnv};

struct Role(Child);

impl Drop for Role {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(self.0.id().to_string()).status();
        let _ = self.0.wait();
    }
}

fn port_free(addr: &str) -> bool {
    std::net::TcpListener::bind(addr).is_ok()
}

/// The write token of the `serve` that `make up` runs (`deploy/local/roles` writes it to
/// `$ALIEXPRESS_STATE_DIR/roles/api-token`, or takes `API_TOKENS` from its environment).
fn running_platform_token() -> String {
    let dir = std::env::var("ALIEXPRESS_STATE_DIR").unwrap_or_else(|_| "/var/tmp/aliexpress-stack".into());
    let path = std::path::Path::new(&dir).join("roles/api-token");
    if let Ok(token) = std::fs::read_to_string(&path) {
        if !token.trim().is_empty() {
            return token.trim().to_owned();
        }
    }
    std::env::var("API_TOKENS")
        .ok()
        .and_then(|t| t.split(',').map(str::trim).find(|t| !t.is_empty()).map(str::to_owned))
        .unwrap_or_else(|| {
            panic!(
                "a serve already listens on 127.0.0.1:8000 (make up?) but its write token is neither in {} nor in API_TOKENS",
                path.display()
            )
        })
}

/// Every PromQL expression of the Grafana dashboard, with its panel's title.
fn dashboard_queries() -> Vec<(String, String)> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/grafana/dashboards/aliexpress.json");
    let d: Value = serde_json::from_str(&std::fs::read_to_string(path).expect("dashboard")).expect("dashboard JSON");
    let mut out = Vec::new();
    for panel in d["panels"].as_array().into_iter().flatten() {
        for t in panel["targets"].as_array().into_iter().flatten() {
            if let Some(expr) = t["expr"].as_str() {
                out.push((panel["title"].as_str().unwrap_or("?").to_owned(), expr.to_owned()));
            }
        }
    }
    out
}

/// Result rows of an instant query (`None` when Prometheus refuses the expression).
async fn query(http: &reqwest::Client, prom: &str, expr: &str) -> Option<usize> {
    let r = http
        .get(format!("{prom}/api/v1/query"))
        .query(&[("query", expr)])
        .send()
        .await
        .ok()?;
    let v: Value = r.json().await.ok()?;
    (v["status"] == "success").then(|| v["data"]["result"].as_array().map_or(0, Vec::len))
}

#[tokio::test(flavor = "multi_thread")]
async fn prometheus_scrapes_every_role_and_every_dashboard_panel_has_data() {
    let env = TestEnv::new().await;
    let roles: [(&str, Vec<&str>); 4] = [
        (
            "127.0.0.1:9463",
            vec!["serve", "--bind", "127.0.0.1:8000", "--metrics-bind", "127.0.0.1:9463"],
        ),
        (
            "127.0.0.1:9464",
            vec!["process-outbox", "--follow", "--metrics-bind", "127.0.0.1:9464"],
        ),
        (
            "127.0.0.1:9465",
            vec!["run-product-consumer", "--metrics-bind", "127.0.0.1:9465"],
        ),
        (
            "127.0.0.1:9466",
            vec!["run-product-event-consumer", "--metrics-bind", "127.0.0.1:9466"],
        ),
    ];
    // Roles already running (make up) are scraped and written through as they are, with the
    // token the platform wrote; the others are started here with the test's own token.
    let serve_running = !port_free("127.0.0.1:8000") || !port_free("127.0.0.1:9463");
    let token = if serve_running {
        running_platform_token()
    } else {
        crate::helpers::TOKEN.to_owned()
    };
    let mut running = Vec::new();
    for (addr, args) in roles {
        if port_free(addr) && (addr != "127.0.0.1:9463" || port_free("127.0.0.1:8000")) {
            running.push(start(&env, &args));
        }
    }
    let http = reqwest::Client::new();
    let prom = std::env::var("PROMETHEUS_URL").unwrap_or_else(|_| "http://127.0.0.1:9090".into());
    let all_up = wait_until(Duration::from_secs(60), || {
        let (http, prom) = (http.clone(), prom.clone());
        async move {
            let Ok(r) = http.get(format!("{prom}/api/v1/targets")).send().await else {
                return false;
            };
            let v: Value = r.json().await.unwrap_or_default();
            let targets = v["data"]["activeTargets"].as_array().cloned().unwrap_or_default();
            let ours: Vec<&Value> = targets
                .iter()
                .filter(|t| {
                    t["labels"]["job"]
                        .as_str()
                        .is_some_and(|j| j.starts_with("aliexpress-"))
                })
                .collect();
            ours.len() == 4 && ours.iter().all(|t| t["health"] == "up")
        }
    })
    .await;
    assert!(all_up, "every aliexpress scrape target is up in Prometheus");
    let lag = wait_until(Duration::from_secs(30), || {
        let (http, prom) = (http.clone(), prom.clone());
        async move {
            let Ok(r) = http
                .get(format!("{prom}/api/v1/query"))
                .query(&[("query", "aliexpress_consumer_lag_messages")])
                .send()
                .await
            else {
                return false;
            };
            let v: Value = r.json().await.unwrap_or_default();
            v["data"]["result"].as_array().is_some_and(|a| !a.is_empty())
        }
    })
    .await;
    assert!(lag, "the consumer lag metric is present in Prometheus");

    // Traffic through every role: a product write (API, outbox, projection) and a command
    // (outbox, command consumer), then every panel of the dashboard must show data.
    let api = "http://127.0.0.1:8000";
    let product = serde_json::json!({"sku": format!("PROM-{}", uuid::Uuid::new_v4().simple()), "title": "Metered kettle",
        "description": "d", "category": "electronics", "brand": "Acme",
        "price": {"amount_minor": 100, "currency": "USD"}, "stock": 1});
    let created = http
        .post(format!("{api}/api/products"))
        .bearer_auth(&token)
        .json(&product)
        .send()
        .await
        .expect("create through serve");
    assert_eq!(created.status(), 201, "{:?}", created.text().await);
    let command = serde_json::json!({"product_id": uuid::Uuid::now_v7(), "command_type": "CreateProduct",
        "payload": {"sku": format!("PROM-{}", uuid::Uuid::new_v4().simple()), "title": "Commanded", "description": "d",
                    "category": "c", "brand": "b", "price": {"amount_minor": 1, "currency": "USD"}, "stock": 1}});
    let accepted = http
        .post(format!("{api}/api/commands"))
        .bearer_auth(&token)
        .json(&command)
        .send()
        .await
        .expect("command through serve");
    assert_eq!(accepted.status(), 202);
    let queries = dashboard_queries();
    assert!(queries.len() >= 10, "the dashboard's panels: {}", queries.len());
    let empty = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let all_have_data = wait_until(Duration::from_secs(120), || {
        let (http, prom, queries, empty) = (http.clone(), prom.clone(), queries.clone(), empty.clone());
        async move {
            let mut missing = Vec::new();
            for (title, expr) in &queries {
                match query(&http, &prom, expr).await {
                    Some(n) if n > 0 => {}
                    Some(_) => missing.push(format!("{title}: no data")),
                    None => missing.push(format!("{title}: refused by Prometheus: {expr}")),
                }
            }
            let done = missing.is_empty();
            *empty.lock().expect("list") = missing;
            done
        }
    })
    .await;
    assert!(
        all_have_data,
        "dashboard panels without data: {:#?}",
        empty.lock().expect("list")
    );
    drop(running);
}

/// A free loopback address for a role's `/metrics`.
fn free_addr() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    format!("127.0.0.1:{port}")
}

/// Starts `aliexpress <args>` on this test's resources; stopped when dropped.
fn start(env: &TestEnv, args: &[&str]) -> Role {
    Role(
        Command::new(env!("CARGO_BIN_EXE_aliexpress"))
            .args(args)
            .envs(env.bin_env())
            .env("API_TOKENS", crate::helpers::TOKEN)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("role"),
    )
}

/// The text `/metrics` at `addr` answers with (empty until it answers).
async fn scrape(http: &reqwest::Client, addr: &str) -> String {
    match http.get(format!("http://{addr}/metrics")).send().await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// The `partition` label of every `metric` series of `group` in a scrape.
fn partitions(text: &str, metric: &str, group: &str) -> std::collections::BTreeSet<String> {
    text.lines()
        .filter(|l| l.starts_with(&format!("{metric}{{")) && l.contains(&format!("group=\"{group}\"")))
        .filter_map(|l| l.split("partition=\"").nth(1)?.split('"').next().map(str::to_owned))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_role_exports_build_info_process_and_pool_metrics() {
    let env = TestEnv::new().await;
    let http = reqwest::Client::new();
    let api_bind = free_addr();
    // (role's /metrics, its arguments, the pools it has)
    let roles: Vec<(String, Vec<String>, &[&str])> = vec![
        {
            let m = free_addr();
            let args = vec![
                "serve".into(),
                "--bind".into(),
                api_bind.clone(),
                "--metrics-bind".into(),
                m.clone(),
            ];
            (m, args, &["postgres", "redis"][..])
        },
        {
            let m = free_addr();
            (
                m.clone(),
                vec!["process-outbox".into(), "--follow".into(), "--metrics-addr".into(), m],
                &["postgres"][..],
            )
        },
        {
            let m = free_addr();
            (
                m.clone(),
                vec!["run-product-consumer".into(), "--metrics-addr".into(), m],
                &["postgres"][..],
            )
        },
        {
            let m = free_addr();
            (
                m.clone(),
                vec!["run-product-event-consumer".into(), "--metrics-addr".into(), m],
                &["redis"][..],
            )
        },
    ];
    let _running: Vec<Role> = roles
        .iter()
        .map(|(_, args, _)| start(&env, &args.iter().map(String::as_str).collect::<Vec<_>>()))
        .collect();
    let build = format!(
        "aliexpress_build_info{{git_sha=\"{}\",version=\"{}\"}} 1",
        aliexpress::telemetry::metrics::GIT_SHA,
        env!("CARGO_PKG_VERSION")
    );
    for (addr, args, pools) in &roles {
        let mut expected = vec![
            build.clone(),
            "process_cpu_seconds_total".into(),
            "process_resident_memory_bytes".into(),
            "process_open_fds".into(),
        ];
        for pool in *pools {
            for m in [
                "aliexpress_pool_max_connections",
                "aliexpress_pool_connections",
                "aliexpress_pool_idle_connections",
                "aliexpress_pool_waiting_requests",
            ] {
                expected.push(format!("{m}{{pool=\"{pool}\"}}"));
            }
        }
        let last = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let found = wait_until(Duration::from_secs(60), || {
            let (http, addr, expected, last) = (http.clone(), addr.clone(), expected.clone(), last.clone());
            async move {
                let text = scrape(&http, &addr).await;
                let ok = expected.iter().all(|e| text.contains(e.as_str()));
                *last.lock().expect("last") = text;
                ok
            }
        })
        .await;
        let text = last.lock().expect("last").clone();
        let missing: Vec<&String> = expected.iter().filter(|e| !text.contains(e.as_str())).collect();
        assert!(found, "{args:?} exports every convention metric; missing {missing:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn two_members_of_a_group_export_each_partitions_lag_once_between_them() {
    let env = TestEnv::new().await;
    let http = reqwest::Client::new();
    let all: std::collections::BTreeSet<String> =
        (0..env.infra.kafka.topic_partitions).map(|p| p.to_string()).collect();
    for (role, group) in [
        ("run-product-consumer", env.names.command_group()),
        ("run-product-event-consumer", env.names.projection_group()),
    ] {
        let (a, b) = (free_addr(), free_addr());
        let _first = start(&env, &[role, "--metrics-addr", &a]);
        // Alone in its group, the first member exports every partition.
        let alone = wait_until(Duration::from_secs(60), || {
            let (http, a, group, all) = (http.clone(), a.clone(), group.clone(), all.clone());
            async move { partitions(&scrape(&http, &a).await, "aliexpress_consumer_lag_messages", &group) == all }
        })
        .await;
        assert!(
            alone,
            "{role}: a lone member exports the lag of all {} partitions",
            all.len()
        );
        let _second = start(&env, &[role, "--metrics-addr", &b]);
        // Once the second has its share, each partition is exported by exactly one of them.
        let last = std::sync::Arc::new(std::sync::Mutex::new((Default::default(), Default::default())));
        let shared = wait_until(Duration::from_secs(90), || {
            let (http, a, b, group, all, last) = (
                http.clone(),
                a.clone(),
                b.clone(),
                group.clone(),
                all.clone(),
                last.clone(),
            );
            async move {
                let pa = partitions(&scrape(&http, &a).await, "aliexpress_consumer_lag_messages", &group);
                let pb = partitions(&scrape(&http, &b).await, "aliexpress_consumer_lag_messages", &group);
                let ok = !pa.is_empty()
                    && !pb.is_empty()
                    && pa.is_disjoint(&pb)
                    && pa.union(&pb).cloned().collect::<std::collections::BTreeSet<_>>() == all;
                *last.lock().expect("last") = (pa, pb);
                ok
            }
        })
        .await;
        let (pa, pb): (std::collections::BTreeSet<String>, std::collections::BTreeSet<String>) =
            last.lock().expect("last").clone();
        assert!(
            shared,
            "{role}: the two members export {pa:?} and {pb:?}, not each of {all:?} once"
        );
    }
}
