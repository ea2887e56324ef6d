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

#[tokio::test(flavor = "multi_thread")]
async fn prometheus_scrapes_every_role_and_sees_consumer_lag() {
    let env = TestEnv::new().await;
    let roles: [(&str, Vec<&str>); 4] = [
        (
            "127.0.0.1:9463",
            vec!["serve", "--bind", "127.0.0.1:8000", "--metrics-bind", "127.0.0.1:9463"],
        ),
        (
            "127.0.0.1:9464",
            vec!["process-outbox", "--follow", "--metrics-addr", "127.0.0.1:9464"],
        ),
        (
            "127.0.0.1:9465",
            vec!["run-product-consumer", "--metrics-addr", "127.0.0.1:9465"],
        ),
        (
            "127.0.0.1:9466",
            vec!["run-product-event-consumer", "--metrics-addr", "127.0.0.1:9466"],
        ),
    ];
    // Roles already running (make up) are scraped as they are; the others are started here.
    let mut running = Vec::new();
    for (addr, args) in roles {
        if port_free(addr) && (addr != "127.0.0.1:9463" || port_free("127.0.0.1:8000")) {
            running.push(Role(
                Command::new(env!("CARGO_BIN_EXE_aliexpress"))
                    .args(args)
                    .envs(env.bin_env())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("role"),
            ));
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
    drop(running);
}
