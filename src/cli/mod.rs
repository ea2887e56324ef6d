//! The command line: one binary, many subcommands sharing one set of modules. Each
//! subcommand's module is wiring only: build config, pools and clients, handle shutdown, call
//! into `worker`, `http` or `ops`.
//!
//! Exit codes: 0 success, 1 runtime failure, 2 bad usage or configuration (including a
//! dependency that cannot be reached at start-up).

pub mod connect;
pub mod consumer_groups;
pub mod dev_issuer;
pub mod dlq;
pub mod keys;
pub mod migrate;
pub mod outbox;
pub mod post_restore;
pub mod process_outbox;
pub mod reconcile;
pub mod replay;
pub mod run_product_consumer;
pub mod run_product_event_consumer;
pub mod serve;
pub mod status;
pub mod trace;

use clap::{Parser, Subcommand};

use crate::config::{ConfigError, InfraConfig, TelemetrySettings};

/// aliexpress: product catalog platform (CQRS + events).
#[derive(Debug, Parser)]
#[command(name = "aliexpress", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// Connection settings (flags or environment variables).
    #[command(flatten)]
    pub infra: InfraConfig,
    /// Logs and span export.
    #[command(flatten)]
    pub telemetry: TelemetrySettings,
    /// What to run.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// HTTP API: products, commands, search, health, metrics.
    Serve(serve::Args),
    /// Apply database migrations (embedded in the binary).
    Migrate,
    /// Publish pending outbox rows to Kafka (one-shot, or --follow as a daemon).
    ProcessOutbox(process_outbox::Args),
    /// Inspect or retry outbox rows (parked rows after repeated publish failures).
    Outbox(outbox::Args),
    /// Write side: consume product.commands, run them through the aggregate.
    RunProductConsumer(run_product_consumer::Args),
    /// Read side: consume product.events, project into OpenSearch and Redis.
    RunProductEventConsumer(run_product_event_consumer::Args),
    /// Rewind (or move) a consumer group's offsets so projections are rebuilt.
    ///
    /// Replay makes the read side (OpenSearch, Redis) re-read product events: it moves the
    /// committed offsets of a consumer group (by default product-event-projection-group on
    /// product.events) to the position you give, and the projection re-projects from there
    /// when it starts again. Projection writes are versioned, so re-reading events already
    /// projected is harmless. Without --execute it only prints the plan (current offset, new
    /// offset, events to re-project per partition).
    ///
    /// The operations guide's rewind, step by step: stop the projection
    /// (run-product-event-consumer) so the group has no members; `aliexpress replay
    /// --to-earliest` to see the plan; the same with --execute (refused while the group is
    /// active; --wait-inactive 60s waits for it); start the projection again: one
    /// indexing_product line per event.
    ///
    /// Positions: --to-earliest, --to-latest, --to-offset N, --shift-by N, --to-datetime T,
    /// --by-duration PnDTnHnMnS, --from-file F. Or, leaving offsets alone: --rebuild (a fresh
    /// index, the alias swapped once it matches Postgres) and --rollback.
    Replay(replay::Args),
    /// List consumer groups or describe one (offsets and lag).
    ConsumerGroups(consumer_groups::Args),
    /// Inspect and redrive dead-letter topics.
    Dlq(dlq::Args),
    /// One screen: health, outbox backlog, lag per group, DLQ depth.
    Status(status::Args),
    /// One product's way through the pipeline, hop by hop, and where it is stuck (exit 0: ok).
    Trace(trace::Args),
    /// Compare OpenSearch and Redis with Postgres; --repair re-sends the drifted products.
    Reconcile(reconcile::Args),
    /// After Postgres was restored from backup: bring search and the cache back to it.
    ///
    /// Finds the events on product.events the restored database does not hold (published
    /// after the restore point), moves each product that still exists past its lost versions
    /// (a snapshot event), fences the projection's group at the topic's end, clears the
    /// cached products and rebuilds the index from Postgres. Dry run without --execute; with
    /// it, the projection must be stopped. docs/RUNBOOK.md, "Restoring Postgres".
    PostRestore(post_restore::Args),
    /// Named, scoped API keys for machines: create (the secret shown once), list, revoke.
    Keys(keys::Args),
    /// A token issuer for local development (loopback only): JWKS, and tokens on request.
    DevIssuer(dev_issuer::Args),
}

/// Checks every setting of the command line without connecting anywhere: the connection
/// settings (see [`connect::check`]) and those of the subcommand. What `run` does first.
pub fn check(cli: &Cli) -> Result<(), ConfigError> {
    connect::check(&cli.infra)?;
    let metrics = match &cli.command {
        Command::Serve(a) => {
            a.resilience.validate()?;
            a.api.validate()?;
            Some(a.metrics_bind.clone())
        }
        Command::ProcessOutbox(a) => worker_metrics_bind(a.metrics_bind.as_deref()),
        Command::RunProductConsumer(a) => worker_metrics_bind(a.metrics_bind.as_deref()),
        Command::RunProductEventConsumer(a) => worker_metrics_bind(a.metrics_bind.as_deref()),
        _ => None,
    };
    match metrics.as_deref().map(str::trim) {
        Some(addr) if !addr.is_empty() && !is_host_port(addr) => Err(ConfigError::new(
            "METRICS_BIND",
            format!("expected host:port, got {addr:?}"),
        )),
        _ => Ok(()),
    }
}

/// `host:port` with a port number (the host is resolved when binding).
fn is_host_port(addr: &str) -> bool {
    addr.rsplit_once(':')
        .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok())
}

/// Runs the parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    check(&cli)?;
    match cli.command {
        Command::Serve(a) => serve::run(&cli.infra, a).await,
        Command::Migrate => migrate::run(&cli.infra).await,
        Command::ProcessOutbox(a) => process_outbox::run(&cli.infra, a).await,
        Command::Outbox(a) => outbox::run(&cli.infra, a).await,
        Command::RunProductConsumer(a) => run_product_consumer::run(&cli.infra, a).await,
        Command::RunProductEventConsumer(a) => run_product_event_consumer::run(&cli.infra, a).await,
        Command::Replay(a) => replay::run(&cli.infra, a).await,
        Command::ConsumerGroups(a) => consumer_groups::run(&cli.infra, a).await,
        Command::Dlq(a) => dlq::run(&cli.infra, a).await,
        Command::Status(a) => status::run(&cli.infra, a).await,
        Command::Keys(a) => keys::run(&cli.infra, a).await,
        Command::Trace(a) => trace::run(&cli.infra, a).await,
        Command::Reconcile(a) => reconcile::run(&cli.infra, a).await,
        Command::PostRestore(a) => post_restore::run(&cli.infra, a).await,
        Command::DevIssuer(a) => dev_issuer::run(a).await,
    }
}

/// The `/metrics` address of a worker role: `--metrics-bind` (or `METRICS_BIND`), else the
/// old `METRICS_ADDR`; an empty value counts as unset (an env file may leave it empty).
pub fn worker_metrics_bind(flag: Option<&str>) -> Option<String> {
    let set = |v: &str| Some(v.trim().to_owned()).filter(|v| !v.is_empty());
    flag.and_then(set)
        .or_else(|| std::env::var(LEGACY_METRICS_ENV).ok().as_deref().and_then(set))
}

/// The worker roles' former name of `METRICS_BIND`, still read when that is unset.
pub const LEGACY_METRICS_ENV: &str = "METRICS_ADDR";

/// A usage error found after parsing (exit code 2).
pub fn usage(setting: &'static str, message: impl Into<String>) -> anyhow::Error {
    ConfigError::new(setting, message).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;
    use std::collections::BTreeSet;
    use std::path::PathBuf;

    /// The command lines of the long-running roles (and of the one-shot commands run most),
    /// as `deploy/local/roles` and the Helm chart give them.
    const ROLES: [&[&str]; 6] = [
        &["aliexpress", "serve"],
        &["aliexpress", "process-outbox", "--follow"],
        &["aliexpress", "run-product-consumer"],
        &["aliexpress", "run-product-event-consumer"],
        &["aliexpress", "migrate"],
        &["aliexpress", "status"],
    ];

    fn env_example() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".env.example")
    }

    /// Every variable a flag of the command line, or of any subcommand, reads.
    fn read_variables() -> BTreeSet<String> {
        fn walk(cmd: &clap::Command, out: &mut BTreeSet<String>) {
            for arg in cmd.get_arguments() {
                if let Some(env) = arg.get_env() {
                    out.insert(env.to_string_lossy().into_owned());
                }
            }
            for sub in cmd.get_subcommands() {
                walk(sub, out);
            }
        }
        let mut out = BTreeSet::new();
        walk(&Cli::command(), &mut out);
        out
    }

    /// The variables `.env.example` lists, set (`NAME=value`) or commented out
    /// (`# NAME=value`).
    fn listed_variables(text: &str) -> BTreeSet<String> {
        text.lines()
            .map(|l| l.trim_start_matches('#').trim_start())
            .filter_map(|l| l.split_once('='))
            .map(|(name, _)| name)
            .filter(|n| {
                !n.is_empty()
                    && n.chars()
                        .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
            })
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn env_example_lists_every_variable_the_binary_reads_and_no_other() {
        let text = std::fs::read_to_string(env_example()).expect(".env.example");
        let listed = listed_variables(&text);
        let read = read_variables();
        let missing: Vec<_> = read.difference(&listed).collect();
        assert!(missing.is_empty(), ".env.example lacks {missing:?}");
        // KAFKA_PROPERTY_<NAME> is a family the Kafka settings read by prefix.
        let unread: Vec<_> = listed
            .difference(&read)
            .filter(|v| !v.starts_with(crate::config::kafka::PROPERTY_ENV_PREFIX))
            .collect();
        assert!(
            unread.is_empty(),
            ".env.example lists {unread:?}, which the binary does not read"
        );
    }

    #[test]
    fn a_role_reads_one_metrics_address_and_an_empty_one_is_none() {
        assert_eq!(
            worker_metrics_bind(Some(" 127.0.0.1:9464 ")).as_deref(),
            Some("127.0.0.1:9464")
        );
        assert_eq!(worker_metrics_bind(Some("")), worker_metrics_bind(None));
        let cli = Cli::try_parse_from(["aliexpress", "run-product-consumer", "--metrics-addr", "h:1"]).expect("parses");
        assert!(matches!(cli.command, Command::RunProductConsumer(a) if a.metrics_bind.as_deref() == Some("h:1")));
    }

    /// Child side of [`every_role_parses_and_checks_its_settings_from_a_sourced_env_example`].
    const CHILD: &str = "ALIEXPRESS_TEST_SOURCED_ENV_EXAMPLE";

    #[test]
    fn every_role_parses_and_checks_its_settings_from_a_sourced_env_example() {
        if std::env::var_os(CHILD).is_some() {
            for argv in ROLES {
                let cli = Cli::try_parse_from(argv).unwrap_or_else(|e| panic!("{argv:?}: {e}"));
                if let Err(e) = check(&cli) {
                    panic!("{argv:?}: {e}");
                }
            }
            return;
        }
        // This test again, in a process whose only environment is what `source .env.example`
        // gives (the settings are read from the process environment; changing this process's
        // would race the other tests).
        let exe = std::env::current_exe().expect("test binary");
        let out = std::process::Command::new("bash")
            .args([
                "-c",
                r#"set -a; . "$1"; set +a; exec "$2" --exact "$3" --nocapture"#,
                "bash",
            ])
            .arg(env_example())
            .arg(exe)
            .arg("cli::tests::every_role_parses_and_checks_its_settings_from_a_sourced_env_example")
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env(CHILD, "1")
            .output()
            .expect("bash runs");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{text}");
        assert!(text.contains("1 passed"), "the child ran no test: {text}");
    }
}
