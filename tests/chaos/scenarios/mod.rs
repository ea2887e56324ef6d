//! Scenarios: each starts a fresh system, runs the workload, injects one kind of fault while it
//! runs, stops the workload, waits (with a deadline) for the stores to converge, and checks
//! them. Also the checker's self-test, which corrupts each store on purpose and requires every
//! column to notice. The cluster scenarios (`--cluster`) kill one node of a replicated service and
//! require every role to keep going without it: no request may fail while it is down.
//!
//! This module holds the list of scenarios, the run of one (start, workload, fault, converge,
//! check) and the dispatch to the fault scripts; each fault script is a module of its own.

mod broker_kill;
mod duplicate_reorder;
mod kafka_kill;
mod kill;
mod late_outbox;
mod pg_restart;
mod pg_terminate;
mod poison;
mod progress;
mod rebalance;
mod redis_restart;
mod replay;
mod report;
mod search_node_kill;
mod self_test;
mod stop_service;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use uuid::Uuid;

use crate::checker::{self, Expect};
use crate::stack::{Service, Stack};
use crate::sut::{self, Role, Sut};
use crate::workload::{self, lock, Workload};
use crate::Opts;
use report::{render, Row};

pub use self_test::self_test;

/// What a scenario injects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// kill -9 a role several times, restarting it each time.
    Kill(Role),
    /// SIGSTOP a service for a while, then SIGCONT.
    Stop(Service, u64),
    /// kill -9 Redis and start it again, empty.
    RedisRestart,
    /// kill -9 the broker, keep it down, start it again.
    KafkaKill,
    /// pg_terminate_backend of the scenario database's sessions, repeatedly for 10 s.
    PgTerminate,
    /// Postgres restarted like a crash (immediate shutdown).
    PgRestart,
    /// Poison on both topics and through the API.
    Poison,
    /// Copies of real events, duplicated and in reverse order, on the events topic.
    DuplicateReorder,
    /// Projection stopped, its group rewound to earliest, projection started, under load.
    Replay,
    /// An outbox row committed after later rows were published (it has a lower id).
    LateOutbox,
    /// A second projection consumer joins and leaves (gracefully, then by kill -9).
    Rebalance,
    /// Cluster profile: kill -9 the broker leading the events topic's first partition, keep it
    /// down, start it again.
    BrokerKill,
    /// Cluster profile: kill -9 the OpenSearch node holding the index's primary (not the node
    /// the app talks to), keep it down, start it again.
    SearchNodeKill,
}

/// A selectable scenario.
#[derive(Debug, Clone, Copy)]
pub struct Scenario {
    /// Name for `--scenario`.
    pub name: &'static str,
    /// One line.
    pub about: &'static str,
    /// Part of the short form (`make test`).
    pub short: bool,
    /// What it injects.
    pub fault: Fault,
}

impl Scenario {
    /// Needs a stack of its own (acts on a service's process).
    pub fn service_fault(&self) -> bool {
        matches!(
            self.fault,
            Fault::Stop(..)
                | Fault::RedisRestart
                | Fault::KafkaKill
                | Fault::PgRestart
                | Fault::BrokerKill
                | Fault::SearchNodeKill
        )
    }

    /// Needs the stack's cluster profile (`--cluster`, `make test-cluster`).
    pub fn needs_cluster(&self) -> bool {
        matches!(self.fault, Fault::BrokerKill | Fault::SearchNodeKill)
    }

    /// Acts on the single broker or OpenSearch node of the default profile (a cluster has a
    /// scenario of its own for each).
    fn single_node_only(&self) -> bool {
        matches!(self.fault, Fault::KafkaKill | Fault::Stop(Service::OpenSearch, _))
    }
}

/// Every scenario, in run order.
pub const ALL: &[Scenario] = &[
    Scenario {
        name: "kill-relay",
        about: "kill -9 the outbox relay 3 times, restart it",
        short: true,
        fault: Fault::Kill(Role::Relay),
    },
    Scenario {
        name: "kill-command-consumer",
        about: "kill -9 the command consumer 3 times, restart it",
        short: true,
        fault: Fault::Kill(Role::CommandConsumer),
    },
    Scenario {
        name: "kill-projection",
        about: "kill -9 the projection 3 times, restart it",
        short: true,
        fault: Fault::Kill(Role::Projection),
    },
    Scenario {
        name: "kill-api",
        about: "kill -9 the API 3 times, restart it",
        short: false,
        fault: Fault::Kill(Role::Api),
    },
    Scenario {
        name: "poison",
        about: "undecodable and unknown messages on both topics, a NUL title command, an unknown command type",
        short: true,
        fault: Fault::Poison,
    },
    Scenario {
        name: "duplicate-reorder",
        about: "copies of real events twice, newest first, on the events topic",
        short: false,
        fault: Fault::DuplicateReorder,
    },
    Scenario {
        name: "late-outbox",
        about: "an outbox row committed after later rows were published",
        short: false,
        fault: Fault::LateOutbox,
    },
    Scenario {
        name: "rebalance",
        about: "a second projection joins and leaves (SIGTERM), joins and dies (kill -9)",
        short: false,
        fault: Fault::Rebalance,
    },
    Scenario {
        name: "replay",
        about: "projection stopped, replay --to-earliest --execute, restarted, under load",
        short: false,
        fault: Fault::Replay,
    },
    Scenario {
        name: "pg-terminate",
        about: "pg_terminate_backend of the app's sessions every 250 ms for 10 s",
        short: false,
        fault: Fault::PgTerminate,
    },
    Scenario {
        name: "stop-opensearch",
        about: "SIGSTOP OpenSearch 30 s, then SIGCONT",
        short: false,
        fault: Fault::Stop(Service::OpenSearch, 30),
    },
    Scenario {
        name: "stop-redis",
        about: "SIGSTOP Redis 20 s, then SIGCONT",
        short: false,
        fault: Fault::Stop(Service::Redis, 20),
    },
    Scenario {
        name: "stop-postgres",
        about: "SIGSTOP PostgreSQL and every backend 15 s, then SIGCONT",
        short: false,
        fault: Fault::Stop(Service::Postgres, 15),
    },
    Scenario {
        name: "stop-kafka",
        about: "SIGSTOP the broker 25 s, then SIGCONT",
        short: false,
        fault: Fault::Stop(Service::Kafka, 25),
    },
    Scenario {
        name: "redis-restart",
        about: "kill -9 Redis, start it again empty",
        short: false,
        fault: Fault::RedisRestart,
    },
    Scenario {
        name: "kafka-kill",
        about: "kill -9 the broker, 15 s down, start it again",
        short: false,
        fault: Fault::KafkaKill,
    },
    Scenario {
        name: "pg-restart",
        about: "Postgres restarted like a crash (pg_ctl -m immediate)",
        short: false,
        fault: Fault::PgRestart,
    },
    Scenario {
        name: "kafka-broker-kill",
        about: "kill -9 one of 3 brokers (a partition leader) for 30 s, start it again; nothing may fail",
        short: false,
        fault: Fault::BrokerKill,
    },
    Scenario {
        name: "opensearch-node-kill",
        about: "kill -9 the OpenSearch node holding the primary for 30 s, start it again; search keeps answering",
        short: false,
        fault: Fault::SearchNodeKill,
    },
];

/// How long a cluster scenario keeps its node down: longer than a killed broker takes to be
/// fenced (`broker.session.timeout.ms`, 9 s) and its partitions to move, plus a consumer's
/// rejoin and its next offset commit.
const NODE_OUTAGE: Duration = Duration::from_secs(30);

/// Convergence target after the last fault ends.
pub const CONVERGE_TARGET: Duration = Duration::from_secs(10);
/// Workload time after the last fault ends, before it stops.
const TAIL: Duration = Duration::from_secs(3);

/// What a running scenario shares with its fault script.
struct Ctx<'a> {
    sut: &'a Sut,
    wl: &'a Workload,
    rng: Mutex<StdRng>,
    expect: Mutex<Expect>,
    extra_commands: Mutex<HashSet<Uuid>>,
    last_fault_end: Mutex<Option<Instant>>,
    timeline: Mutex<Vec<String>>,
    started: Instant,
}

impl Ctx<'_> {
    fn log(&self, msg: impl Into<String>) {
        let line = format!("{:>6.1}s {}", self.started.elapsed().as_secs_f64(), msg.into());
        println!("    {line}");
        lock(&self.timeline).push(line);
    }

    fn secs(&self, lo: f64, hi: f64) -> Duration {
        Duration::from_secs_f64(lock(&self.rng).random_range(lo..hi))
    }

    fn fault_ended(&self) {
        *lock(&self.last_fault_end) = Some(Instant::now());
    }

    /// Logs `msg` with the API anomalies counted so far, to place them in the fault's phases.
    fn log_api(&self, msg: impl Into<String>) {
        let n = lock(&self.wl.ledger).records.iter().filter(|r| r.is_anomaly()).count();
        self.log(format!("{} (API anomalies so far: {n})", msg.into()));
    }
}

/// SIGCONT on drop, so a stopped service is resumed whatever happens to the scenario.
struct Resume<'a>(&'a Stack, Service);

impl Drop for Resume<'_> {
    fn drop(&mut self) {
        let _ = self.0.signal_tree(self.1, "CONT");
    }
}

fn run_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("chaos")
}

/// Runs the selected scenarios, prints and writes the table; true when every row passed.
pub async fn run_all(opts: &Opts) -> bool {
    let stack = Stack::from_env();
    if opts.cluster && !stack.cluster {
        eprintln!(
            "chaos: --cluster needs the stack's cluster profile: ALIEXPRESS_STATE_DIR naming a state folder made by \
             `deploy/local/stack up --cluster` (see make test-cluster); got {}",
            stack.describe()
        );
        return false;
    }
    let selected: Vec<&Scenario> = if opts.scenarios.is_empty() {
        ALL.iter()
            .filter(|s| {
                if opts.cluster {
                    s.needs_cluster()
                } else {
                    !s.needs_cluster() && (opts.long || s.short)
                }
            })
            .collect()
    } else {
        let mut v = Vec::new();
        for name in &opts.scenarios {
            match ALL.iter().find(|s| s.name == name) {
                Some(s) => v.push(s),
                None => {
                    eprintln!("chaos: no scenario {name:?} (--list shows them)");
                    return false;
                }
            }
        }
        v
    };
    println!(
        "chaos: {} scenario(s), seed {}, {} req/s; {}",
        selected.len(),
        opts.seed,
        opts.rate,
        stack.describe()
    );
    // The cluster run keeps its own table and logs beside the single-node suite's.
    let dir = if opts.cluster {
        run_dir().with_file_name("chaos-cluster")
    } else {
        run_dir()
    };
    let _ = std::fs::create_dir_all(&dir);
    sut::cleanup_previous_runs(&stack).await;
    let mut rows = Vec::new();
    for (i, s) in selected.iter().enumerate() {
        println!("\n== {} ({})", s.name, s.about);
        let skip = |why: &str| Row {
            name: s.name.into(),
            skipped: Some(why.into()),
            ..Default::default()
        };
        let row = if s.service_fault() && !stack.dedicated {
            skip("needs a stack of its own (ALIEXPRESS_STATE_DIR, see make chaos)")
        } else if s.needs_cluster() && !stack.cluster {
            skip("needs the cluster profile (make test-cluster)")
        } else if s.single_node_only() && stack.cluster {
            skip("acts on a single-node stack (the cluster's own: kafka-broker-kill, opensearch-node-kill)")
        } else {
            run_one(&stack, s, opts, opts.seed.wrapping_add(i as u64), &dir).await
        };
        println!("{}", render(std::slice::from_ref(&row), true));
        rows.push(row);
    }
    let table = render(&rows, true);
    println!("\n{table}");
    let path = dir.join("report.md");
    let _ = std::fs::write(
        &path,
        format!(
            "seed {}, {} req/s, {}\n\n{table}",
            opts.seed,
            opts.rate,
            stack.describe()
        ),
    );
    println!("table written to {} (role logs beside it)", path.display());
    rows.iter().all(Row::passed)
}

async fn run_one(stack: &Stack, s: &Scenario, opts: &Opts, seed: u64, dir: &std::path::Path) -> Row {
    let mut row = Row {
        name: s.name.into(),
        ..Default::default()
    };
    let sut = match Sut::start(stack, s.name, dir).await {
        Ok(sut) => sut,
        Err(e) => {
            row.error = Some(format!("start: {e}"));
            return row;
        }
    };
    let wl = Workload::new(&sut.base);
    let ctx = Ctx::new(&sut, &wl, seed);
    if let Err(e) = run_under_fault(&ctx, s.fault, opts, seed).await {
        row.error = Some(e);
    }
    converge(&ctx, opts, &mut row).await;
    row.timeline = lock(&ctx.timeline).clone();
    drop(ctx);
    sut.teardown(opts.keep).await;
    row
}

/// Step 1 of a scenario: seeds products, runs the workload, injects the fault after a warm-up,
/// keeps the workload going for [`TAIL`] after the fault, then stops it. The fault script's
/// error, if any.
async fn run_under_fault(ctx: &Ctx<'_>, fault: Fault, opts: &Opts, seed: u64) -> Result<(), String> {
    {
        let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed);
        ctx.wl.seed_products(10, &mut rng).await;
    }
    let runner = {
        let wl = ctx.wl.clone();
        let rate = opts.rate;
        tokio::spawn(async move { wl.run(rate, seed).await })
    };
    ctx.log("workload started");
    tokio::time::sleep(Duration::from_secs(3)).await; // warm-up: a timed phase, not a wait for a condition
    let injected = tokio::time::timeout(Duration::from_secs(240), inject(ctx, fault))
        .await
        .unwrap_or_else(|_| Err("fault script did not finish within 240 s".into()));
    if let Err(e) = &injected {
        ctx.log(format!("fault script failed: {e}"));
    }
    ctx.fault_ended_if_unset();
    tokio::time::sleep(TAIL).await; // the workload keeps going after the fault: timed
    ctx.wl.stop();
    let started: Option<usize> = runner.await.ok();
    ctx.log(format!("workload stopped after {} requests", started.unwrap_or(0)));
    ctx.restart_crashed();
    injected
}

/// Step 2 of a scenario (quiesce): checks the stores until they agree or the deadline passes,
/// and fills the row's findings, convergence time and API summary.
async fn converge(ctx: &Ctx<'_>, opts: &Opts, row: &mut Row) {
    let sut = ctx.sut;
    let (acked, mut commands) = {
        let l = lock(&ctx.wl.ledger);
        (l.acked.clone(), l.commands.keys().copied().collect::<HashSet<_>>())
    };
    commands.extend(lock(&ctx.extra_commands).iter().copied());
    let expect = *lock(&ctx.expect);
    let fault_end = lock(&ctx.last_fault_end).unwrap_or_else(Instant::now);
    let deadline = Instant::now()
        + if opts.long || opts.cluster {
            Duration::from_secs(90)
        } else {
            Duration::from_secs(45)
        };
    let last = loop {
        let r = checker::check(sut, &acked, &commands, expect).await;
        if matches!(r, Ok(ref f) if f.anomalies() == 0) {
            row.converge = Some(fault_end.elapsed());
            break r;
        }
        if Instant::now() > deadline {
            break r;
        }
        ctx.restart_crashed();
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    row.waited = fault_end.elapsed();
    match last {
        Ok(f) => row.findings = f,
        Err(e) => row.error = Some(row.error.take().map_or(e.clone(), |x| format!("{x}; check: {e}"))),
    }
    row.api = workload::summarise(&lock(&ctx.wl.ledger).records);
}

impl<'a> Ctx<'a> {
    fn new(sut: &'a Sut, wl: &'a Workload, seed: u64) -> Self {
        Ctx {
            sut,
            wl,
            rng: Mutex::new(StdRng::seed_from_u64(seed)),
            expect: Mutex::new(Expect::default()),
            extra_commands: Mutex::new(HashSet::new()),
            last_fault_end: Mutex::new(None),
            timeline: Mutex::new(Vec::new()),
            started: Instant::now(),
        }
    }

    fn fault_ended_if_unset(&self) {
        let mut g = lock(&self.last_fault_end);
        if g.is_none() {
            *g = Some(Instant::now());
        }
    }

    /// Starts again each role that exited on its own, as its supervisor would, and logs it.
    fn restart_crashed(&self) {
        for crashed in self.sut.restart_exited() {
            self.log(format!("role crashed on its own and was restarted: {crashed}"));
        }
    }
}

/// Runs the fault script of `fault` (each in its own module).
async fn inject(ctx: &Ctx<'_>, fault: Fault) -> Result<(), String> {
    match fault {
        Fault::Kill(role) => kill::run(ctx, role).await,
        Fault::Stop(service, secs) => stop_service::run(ctx, service, secs).await,
        Fault::RedisRestart => redis_restart::run(ctx).await,
        Fault::KafkaKill => kafka_kill::run(ctx).await,
        Fault::PgTerminate => pg_terminate::run(ctx).await,
        Fault::PgRestart => pg_restart::run(ctx).await,
        Fault::Poison => poison::run(ctx).await,
        Fault::DuplicateReorder => duplicate_reorder::run(ctx).await,
        Fault::Replay => replay::run(ctx).await,
        Fault::LateOutbox => late_outbox::run(ctx).await,
        Fault::BrokerKill => broker_kill::run(ctx).await,
        Fault::SearchNodeKill => search_node_kill::run(ctx).await,
        Fault::Rebalance => rebalance::run(ctx).await,
    }
}
