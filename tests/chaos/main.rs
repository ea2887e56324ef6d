//! Fault-injection suite ("chaos"): runs the four roles of the binary under test as child
//! processes on their own database and namespace, drives a bounded open-loop workload (API
//! writes of every kind, commands with duplicates and poison), injects one kind of fault per
//! scenario, then quiesces and compares every store with a checker. One table row per scenario;
//! the run exits non-zero when any column shows an anomaly.
//!
//! Usage: cargo test --test chaos -- [--long | --cluster] [--scenario NAME]... [--list]
//!        [--self-test] [--seed N] [--rate R] [--keep]
//!
//! Without arguments the short form runs (a few scenarios that only kill the suite's own child
//! processes, safe on a shared stack; `make test`). `--long` runs every scenario (`make chaos`).
//! Faults on services (SIGSTOP of OpenSearch or Redis, broker kill, Postgres restart, Redis
//! restarted empty) need a stack of their own: they run only when `ALIEXPRESS_STATE_DIR` names a
//! state folder other than the default one (see `deploy/local/stack`), and are skipped otherwise.
//! `--cluster` runs the cluster scenarios instead (`make test-cluster`): one of three brokers and
//! one of two OpenSearch nodes killed under load and brought back, on the stack's cluster
//! profile (`deploy/local/stack up --cluster`), where nothing may fail while they are down.
//! Services are addressed by the usual variables (DATABASE_URL, REDIS_URL,
//! KAFKA_BOOTSTRAP_SERVERS, OPENSEARCH_URL; else ALIEXPRESS_*_PORT, else the default ports), and
//! faults are injected by pid only (the stack's pid files, or the suite's own children).
//!
//! The table is printed and written to `$CARGO_TARGET_TMPDIR/chaos/report.md`; role logs go to
//! `$CARGO_TARGET_TMPDIR/chaos/<scenario>/` (`chaos-cluster/` for `--cluster`).

mod checker;
mod poll;
mod scenarios;
mod stack;
mod sut;
mod workload;

use std::process::ExitCode;
use std::time::Duration;

/// Parsed command line.
#[derive(Debug, Clone)]
pub struct Opts {
    /// Every scenario (otherwise the short list).
    pub long: bool,
    /// The cluster scenarios (a broker, an OpenSearch node killed), on the cluster profile.
    pub cluster: bool,
    /// Only these scenarios.
    pub scenarios: Vec<String>,
    /// Print the scenario names and exit.
    pub list: bool,
    /// Prove each checker column can fail, then exit.
    pub self_test: bool,
    /// Random seed (fault timing, workload mix).
    pub seed: u64,
    /// Workload rate, requests per second.
    pub rate: u32,
    /// Keep databases, topics and indices of the run.
    pub keep: bool,
}

/// libtest flags `cargo test` may pass to every test binary (ignored here).
const LIBTEST_FLAGS: &[&str] = &[
    "--nocapture",
    "--quiet",
    "-q",
    "--show-output",
    "--include-ignored",
    "--ignored",
];
const LIBTEST_VALUE_FLAGS: &[&str] = &["--test-threads", "--color", "--format", "-Z", "--skip"];

fn parse(args: Vec<String>) -> Result<Opts, String> {
    let mut o = Opts {
        long: false,
        cluster: false,
        scenarios: Vec::new(),
        list: false,
        self_test: false,
        seed: rand::random::<u32>().into(),
        rate: 30,
        keep: false,
    };
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        let (flag, inline) = match a.split_once('=') {
            Some((f, v)) => (f.to_owned(), Some(v.to_owned())),
            None => (a.clone(), None),
        };
        let mut value = |name: &str| {
            inline
                .clone()
                .or_else(|| it.next())
                .ok_or(format!("{name} needs a value"))
        };
        match flag.as_str() {
            "--long" => o.long = true,
            "--cluster" => o.cluster = true,
            "--list" => o.list = true,
            "--self-test" => o.self_test = true,
            "--keep" => o.keep = true,
            "--scenario" => o.scenarios.push(value("--scenario")?),
            "--seed" => o.seed = value("--seed")?.parse().map_err(|e| format!("--seed: {e}"))?,
            "--rate" => o.rate = value("--rate")?.parse().map_err(|e| format!("--rate: {e}"))?,
            f if LIBTEST_FLAGS.contains(&f) => {}
            f if LIBTEST_VALUE_FLAGS.contains(&f) => {
                if inline.is_none() {
                    it.next();
                }
            }
            f if !f.starts_with('-') => o.scenarios.push(f.to_owned()),
            f => return Err(format!("unknown flag {f} (see tests/chaos/main.rs)")),
        }
    }
    if o.rate == 0 {
        return Err("--rate must be at least 1".into());
    }
    Ok(o)
}

fn main() -> ExitCode {
    let opts = match parse(std::env::args().skip(1).collect()) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("chaos: {e}");
            return ExitCode::from(2);
        }
    };
    if opts.list {
        for s in scenarios::ALL {
            let set = if s.needs_cluster() {
                " [cluster]"
            } else if s.short {
                " [short]"
            } else {
                ""
            };
            println!("{:<24} {}{set}", s.name, s.about);
        }
        return ExitCode::SUCCESS;
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("chaos: tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let ok = rt.block_on(async {
        if opts.self_test {
            scenarios::self_test(&opts).await
        } else {
            scenarios::run_all(&opts).await
        }
    });
    rt.shutdown_timeout(Duration::from_secs(5));
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
