//! docker-compose.yml cannot run on this machine (no Docker engine), so it is checked by
//! reading: the operations guide's services and names, healthchecks, and commands that the
//! binary accepts.

use std::process::Command;

use serde_yaml::Value;

fn compose() -> Value {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docker-compose.yml")).expect("compose file");
    let mut v: Value = serde_yaml::from_str(&text).expect("valid YAML");
    v.apply_merge().expect("merge keys resolve");
    v
}

#[test]
fn compose_has_the_guides_services_with_healthchecks() {
    let c = compose();
    let services = c["services"].as_mapping().expect("services");
    for name in [
        "api",
        "postgres",
        "kafka",
        "redis",
        "opensearch",
        "prometheus",
        "grafana",
        "outbox-relay",
        "product-consumer",
        "product-event-consumer",
    ] {
        let s = &c["services"][name];
        assert!(s.is_mapping(), "service {name} missing");
        assert!(
            s["healthcheck"]["test"].is_sequence(),
            "service {name} has no healthcheck"
        );
    }
    assert_eq!(
        c["services"]["kafka"]["container_name"].as_str(),
        Some("aliexpress_kafka")
    );
    assert!(c["services"]["kafka"]["environment"]["KAFKA_ADVERTISED_LISTENERS"]
        .as_str()
        .is_some_and(|l| l.contains("aliexpress_kafka:9092")));
    // Every depends_on names a service that exists.
    for (name, s) in services {
        if let Some(deps) = s["depends_on"].as_mapping() {
            for d in deps.keys() {
                assert!(services.contains_key(d), "{name:?} depends on unknown {d:?}");
            }
        }
    }
}

#[test]
fn every_compose_command_is_accepted_by_the_binary() {
    let c = compose();
    let mut checked = 0;
    for (name, s) in c["services"].as_mapping().expect("services") {
        let uses_app = s["image"].as_str() == Some("aliexpress:local");
        let Some(cmd) = s["command"].as_sequence().filter(|_| uses_app) else {
            continue;
        };
        let mut args: Vec<String> = cmd.iter().map(|v| v.as_str().expect("string arg").to_owned()).collect();
        args.push("--help".into());
        let out = Command::new(env!("CARGO_BIN_EXE_aliexpress"))
            .args(&args)
            .output()
            .expect("runs");
        assert!(
            out.status.success(),
            "service {name:?}: `aliexpress {}` is rejected: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        checked += 1;
    }
    assert_eq!(checked, 5, "migrate, api and the three worker roles");
}
