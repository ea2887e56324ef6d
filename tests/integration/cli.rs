use std::process::Command;

use crate::helpers::TestEnv;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_aliexpress"))
}

#[test]
fn a_malformed_url_is_a_one_line_error_with_exit_code_2() {
    let out = bin()
        .args(["--database-url", "mysql://nope/db", "migrate"])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("DATABASE_URL"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_service_names_its_setting_and_exits_2() {
    let env = TestEnv::new().await;
    let out = bin()
        .envs(env.bin_env())
        .args([
            "--redis-url",
            "redis://127.0.0.1:1",
            "serve",
            "--bind",
            "127.0.0.1:0",
            "--metrics-bind",
            "127.0.0.1:0",
        ])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.lines().last().unwrap_or_default().contains("REDIS_URL"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn bad_flags_exit_2() {
    let out = bin()
        .args(["process-outbox", "--batch-size", "0"])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
}

#[tokio::test(flavor = "multi_thread")]
async fn migrate_is_idempotent() {
    let env = TestEnv::new().await;
    let out = bin().arg("migrate").envs(env.bin_env()).output().expect("runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "database is up to date");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_database_behind_the_binary_is_refused_with_a_hint_to_migrate() {
    use diesel_async::RunQueryDsl;
    let env = TestEnv::new().await; // also cleans up and proves the stack is up
    let mut admin =
        aliexpress::store::pool::connect(&crate::helpers::base_database_url(), std::time::Duration::from_secs(30))
            .await
            .expect("connect");
    let db = format!("aliexpress_{}", crate::helpers::new_namespace().trim_end_matches('_'));
    diesel::sql_query(format!("CREATE DATABASE \"{db}\""))
        .execute(&mut admin)
        .await
        .expect("create");
    let mut url = url::Url::parse(env.infra.database.url.expose()).expect("url");
    url.set_path(&format!("/{db}"));
    let out = bin()
        .args(["outbox", "list"])
        .envs(env.bin_env())
        .env("DATABASE_URL", url.as_str())
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("run `aliexpress migrate`"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let migrated = bin()
        .arg("migrate")
        .envs(env.bin_env())
        .env("DATABASE_URL", url.as_str())
        .output()
        .expect("runs");
    assert!(migrated.status.success());
    let out = bin()
        .args(["outbox", "list"])
        .envs(env.bin_env())
        .env("DATABASE_URL", url.as_str())
        .output()
        .expect("runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}
