//! Scenarios: each starts a fresh system, runs the workload, injects one kind of fault while it
//! runs, stops the workload, waits (with a deadline) for the stores to converge, and checks
//! them. Also the checker's self-test, which corrupts each store on purpose and requires every
//! column to notice. The cluster scenarios (`--cluster`) kill one node of a replicated service and
//! require every role to keep going without it: no request may fail while it is down.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::Producer as _;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use uuid::Uuid;

use crate::checker::{self, Expect, Findings};
use crate::poll::{poll_until, Probe};
use crate::stack::{Service, Stack};
use crate::sut::{self, pg, Role, Sut};
use crate::workload::{self, lock, Outcome, Record, Summary, Workload, DOWN_API, DOWN_PG};
use crate::Opts;

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

/// One table row.
#[derive(Debug, Default)]
pub struct Row {
    name: String,
    findings: Findings,
    api: Summary,
    converge: Option<Duration>,
    waited: Duration,
    skipped: Option<String>,
    error: Option<String>,
    timeline: Vec<String>,
}

impl Row {
    fn passed(&self) -> bool {
        self.skipped.is_some()
            || (self.error.is_none()
                && self.findings.anomalies() == 0
                && self.api.anomalies == 0
                && self.converge.is_some_and(|c| c <= CONVERGE_TARGET))
    }
}

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
        let _ = self.0.signal(self.1, "CONT");
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
    let ctx = Ctx {
        sut: &sut,
        wl: &wl,
        rng: Mutex::new(StdRng::seed_from_u64(seed)),
        expect: Mutex::new(Expect::default()),
        extra_commands: Mutex::new(HashSet::new()),
        last_fault_end: Mutex::new(None),
        timeline: Mutex::new(Vec::new()),
        started: Instant::now(),
    };
    {
        let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed);
        wl.seed_products(10, &mut rng).await;
    }
    let runner = {
        let wl = wl.clone();
        let rate = opts.rate;
        tokio::spawn(async move { wl.run(rate, seed).await })
    };
    ctx.log("workload started");
    tokio::time::sleep(Duration::from_secs(3)).await; // warm-up: a timed phase, not a wait for a condition
    let injected = tokio::time::timeout(Duration::from_secs(240), inject(&ctx, s.fault))
        .await
        .unwrap_or_else(|_| Err("fault script did not finish within 240 s".into()));
    if let Err(e) = injected {
        ctx.log(format!("fault script failed: {e}"));
        row.error = Some(e);
    }
    ctx.fault_ended_if_unset();
    tokio::time::sleep(TAIL).await; // the workload keeps going after the fault: timed
    wl.stop();
    let started: Option<usize> = runner.await.ok();
    ctx.log(format!("workload stopped after {} requests", started.unwrap_or(0)));
    for crashed in sut.restart_exited() {
        ctx.log(format!("role crashed on its own and was restarted: {crashed}"));
    }

    // Quiesce: wait for the stores to agree, with a deadline.
    let (acked, mut commands) = {
        let l = lock(&wl.ledger);
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
        let r = checker::check(&sut, &acked, &commands, expect).await;
        if matches!(r, Ok(ref f) if f.anomalies() == 0) {
            row.converge = Some(fault_end.elapsed());
            break r;
        }
        if Instant::now() > deadline {
            break r;
        }
        for crashed in sut.restart_exited() {
            ctx.log(format!("role crashed on its own and was restarted: {crashed}"));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    row.waited = fault_end.elapsed();
    match last {
        Ok(f) => row.findings = f,
        Err(e) => row.error = Some(row.error.take().map_or(e.clone(), |x| format!("{x}; check: {e}"))),
    }
    row.api = workload::summarise(&lock(&wl.ledger).records);
    row.timeline = lock(&ctx.timeline).clone();
    drop(ctx);
    sut.teardown(opts.keep).await;
    row
}

impl Ctx<'_> {
    fn fault_ended_if_unset(&self) {
        let mut g = lock(&self.last_fault_end);
        if g.is_none() {
            *g = Some(Instant::now());
        }
    }
}

async fn inject(ctx: &Ctx<'_>, fault: Fault) -> Result<(), String> {
    let sut = ctx.sut;
    let stack = &sut.stack;
    match fault {
        Fault::Kill(role) => {
            for i in 1..=3 {
                tokio::time::sleep(ctx.secs(1.0, 4.0)).await;
                if role == Role::Api {
                    ctx.wl.set_down(DOWN_API, true);
                }
                sut.kill9(role, None);
                ctx.log(format!("kill -9 {role:?} ({i}/3)"));
                tokio::time::sleep(ctx.secs(0.5, 2.0)).await;
                sut.spawn(role)?;
                if role == Role::Api {
                    sut.wait_api(Duration::from_secs(30)).await?;
                    ctx.wl.set_down(DOWN_API, false);
                }
                ctx.log(format!("{role:?} restarted"));
                ctx.fault_ended();
            }
        }
        Fault::Stop(service, secs) => {
            ctx.wl.set_down(service.bit(), true);
            let pid = stack.signal(service, "STOP")?;
            let resume = Resume(stack, service);
            ctx.log(format!("SIGSTOP {service:?} (pid {pid}) for {secs} s"));
            tokio::time::sleep(Duration::from_secs(secs)).await; // the outage's length
            drop(resume);
            ctx.wl.set_down(service.bit(), false);
            ctx.log(format!("SIGCONT {service:?}"));
            ctx.fault_ended();
        }
        Fault::RedisRestart => {
            ctx.wl.set_down(Service::Redis.bit(), true);
            stack.kill9(Service::Redis).await?;
            ctx.log("kill -9 redis");
            stack.up().await?;
            ctx.wl.set_down(Service::Redis.bit(), false);
            ctx.log("redis started again, empty");
            ctx.fault_ended();
        }
        Fault::KafkaKill => {
            ctx.wl.set_down(Service::Kafka.bit(), true);
            stack.kill9(Service::Kafka).await?;
            ctx.log("kill -9 kafka broker; down for 15 s");
            tokio::time::sleep(Duration::from_secs(15)).await; // the outage's length
            stack.up().await?;
            ctx.wl.set_down(Service::Kafka.bit(), false);
            ctx.log("kafka broker ready again");
            ctx.fault_ended();
        }
        Fault::PgTerminate => {
            let admin = pg(&stack.database_url).await?;
            ctx.wl.set_down(DOWN_PG, true);
            ctx.log("terminating the app's Postgres sessions every 250 ms for 10 s");
            let end = Instant::now() + Duration::from_secs(10);
            let mut killed = 0u64;
            while Instant::now() < end {
                let rows = admin
                    .query(
                        // Client sessions of the app only: an autovacuum worker may not be
                        // terminated by a non-superuser.
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 \
                         AND backend_type = 'client backend' AND usename = current_user AND pid <> pg_backend_pid()",
                        &[&sut.db],
                    )
                    .await
                    .map_err(|e| sut::pg_error(&e))?;
                killed += rows.len() as u64;
                tokio::time::sleep(Duration::from_millis(250)).await; // the fault's rhythm
            }
            ctx.wl.set_down(DOWN_PG, false);
            ctx.log(format!("stopped terminating ({killed} sessions terminated)"));
            ctx.fault_ended();
        }
        Fault::PgRestart => {
            ctx.wl.set_down(DOWN_PG, true);
            ctx.log("postgres restart (immediate)");
            stack.restart_postgres().await?;
            ctx.wl.set_down(DOWN_PG, false);
            ctx.log("postgres accepting connections again");
            ctx.fault_ended();
        }
        Fault::Poison => poison(ctx).await?,
        Fault::DuplicateReorder => {
            for round in 1..=2 {
                tokio::time::sleep(ctx.secs(2.0, 4.0)).await;
                let n = duplicate_reorder(ctx, 300).await?;
                ctx.log(format!(
                    "produced {n} copies of real events, newest first (round {round})"
                ));
            }
            ctx.fault_ended();
        }
        Fault::Replay => {
            tokio::time::sleep(ctx.secs(2.0, 4.0)).await;
            let clean = sut.stop(Role::Projection, None, Duration::from_secs(30)).await;
            ctx.log(format!(
                "projection stopped ({})",
                if clean { "SIGTERM" } else { "had to be killed" }
            ));
            let (ok, out) = sut
                .command(&["replay", "--to-earliest", "--execute", "--wait-inactive", "30s"])
                .await?;
            ctx.log(format!(
                "replay --to-earliest --execute: {}",
                out.lines().last().unwrap_or_default()
            ));
            sut.spawn(Role::Projection)?;
            ctx.log("projection started again");
            ctx.fault_ended();
            if !ok {
                return Err(format!("replay failed: {out}"));
            }
        }
        Fault::LateOutbox => late_outbox(ctx).await?,
        Fault::BrokerKill => broker_kill(ctx).await?,
        Fault::SearchNodeKill => search_node_kill(ctx).await?,
        Fault::Rebalance => {
            tokio::time::sleep(ctx.secs(1.0, 3.0)).await;
            let a = sut.spawn_extra(Role::Projection)?;
            ctx.log(format!("second projection joined (pid {a})"));
            tokio::time::sleep(ctx.secs(6.0, 9.0)).await;
            let clean = sut.stop(Role::Projection, Some(a), Duration::from_secs(30)).await;
            ctx.log(format!(
                "second projection left ({})",
                if clean { "SIGTERM" } else { "had to be killed" }
            ));
            tokio::time::sleep(ctx.secs(2.0, 4.0)).await;
            let b = sut.spawn_extra(Role::Projection)?;
            ctx.log(format!("third projection joined (pid {b})"));
            tokio::time::sleep(ctx.secs(4.0, 7.0)).await;
            sut.kill9(Role::Projection, Some(b));
            ctx.log("third projection killed (-9)");
            ctx.fault_ended();
        }
    }
    Ok(())
}

/// Work each role has done so far: outbox rows published (relay), commands decided (command
/// consumer), offsets committed on the events topic (projection).
#[derive(Debug, Clone, Copy)]
struct Progress {
    published: i64,
    decided: i64,
    projected: i64,
}

impl Progress {
    /// The roles that did nothing since `before`.
    fn stalled_since(&self, before: &Progress) -> Vec<&'static str> {
        let mut v = Vec::new();
        if self.published <= before.published {
            v.push("relay");
        }
        if self.decided <= before.decided {
            v.push("command consumer");
        }
        if self.projected <= before.projected {
            v.push("projection");
        }
        v
    }
}

async fn progress(sut: &Sut) -> Result<Progress, String> {
    let db = pg(&sut.db_url).await?;
    let row = db
        .query_one(
            "SELECT (SELECT count(*) FROM outbox WHERE published_at IS NOT NULL), \
             (SELECT count(*) FROM commands WHERE status <> 'pending')",
            &[],
        )
        .await
        .map_err(|e| sut::pg_error(&e))?;
    let (bootstrap, group, topic) = (
        sut.stack.kafka.clone(),
        sut.names.projection_group(),
        sut.names.events_topic(),
    );
    let projected = tokio::task::spawn_blocking(move || checker::committed(&bootstrap, &group, &topic))
        .await
        .map_err(|e| e.to_string())??;
    Ok(Progress {
        published: row.get(0),
        decided: row.get(1),
        projected,
    })
}

/// Waits until every role has made progress past `before`, or `until` passes (then says which
/// role stalled). A role that exits meanwhile is started again, as its supervisor would.
async fn wait_progress(ctx: &Ctx<'_>, before: Progress, until: Instant) -> Result<Progress, String> {
    let sut = ctx.sut;
    loop {
        for crashed in sut.restart_exited() {
            ctx.log_api(format!("role exited on its own and was restarted: {crashed}"));
        }
        let now = progress(sut).await;
        if let Ok(p) = &now {
            if p.stalled_since(&before).is_empty() {
                return Ok(*p);
            }
        }
        if Instant::now() > until {
            return Err(match now {
                Ok(p) => format!(
                    "{} made no progress while the node was down ({before:?} -> {p:?})",
                    p.stalled_since(&before).join(", ")
                ),
                Err(e) => format!("progress could not be read while the node was down: {e}"),
            });
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Waits until every role has done some work (the fault must hit a system that runs), then
/// returns where they are.
async fn roles_working(ctx: &Ctx<'_>) -> Result<Progress, String> {
    let zero = Progress {
        published: 0,
        decided: 0,
        projected: 0,
    };
    let p = wait_progress(ctx, zero, Instant::now() + Duration::from_secs(60))
        .await
        .map_err(|e| format!("before the fault: {e}"))?;
    ctx.log(format!("every role is working: {p:?}"));
    progress(ctx.sut).await
}

/// Requires every role to make progress twice while `node` is down: soon after the kill, and
/// again in the second half of the outage (after the failover: partitions moved, coordinators
/// found again). Returns at `back_at`, the end of the outage, and logs what it saw.
async fn keeps_going(ctx: &Ctx<'_>, before: Progress, back_at: Instant, node: &str) -> Result<(), String> {
    let second_half = back_at - NODE_OUTAGE / 2;
    let result = async {
        let first = wait_progress(ctx, before, back_at).await?;
        tokio::time::sleep_until(second_half.into()).await; // the first half of the outage: timed
        let mid = progress(ctx.sut).await?;
        let last = wait_progress(ctx, mid, back_at).await?;
        Ok::<_, String>((first, mid, last))
    }
    .await;
    match &result {
        Ok((first, mid, last)) => ctx.log_api(format!(
            "relay, command consumer and projection went on without {node}: {before:?} -> {first:?}, \
             and in the outage's second half {mid:?} -> {last:?}"
        )),
        Err(e) => ctx.log_api(e.clone()),
    }
    tokio::time::sleep_until(back_at.into()).await; // the outage's length
    result.map(|_| ())
}

/// (partition, leader, replicas, in-sync replicas) of each partition of `topic`.
async fn partitions(sut: &Sut, topic: &str) -> Result<Vec<(i32, i32, usize, usize)>, String> {
    let producer = sut.producer.clone();
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || {
        let md = producer
            .client()
            .fetch_metadata(Some(&topic), Duration::from_secs(10))
            .map_err(|e| format!("metadata of {topic}: {e}"))?;
        let t = md.topics().first().ok_or(format!("no metadata for {topic}"))?;
        Ok(t.partitions()
            .iter()
            .map(|p| (p.id(), p.leader(), p.replicas().len(), p.isr().len()))
            .collect())
    })
    .await
    .map_err(|e| e.to_string())?
}

/// Waits until every partition of the scenario's topics has all its replicas in sync.
async fn wait_in_sync(sut: &Sut, deadline: Duration) -> Result<(), String> {
    poll_until(Instant::now() + deadline, Duration::from_millis(500), || async {
        let mut behind = Vec::new();
        for topic in sut.names.all_topics() {
            match partitions(sut, &topic).await {
                Ok(ps) => behind.extend(
                    ps.iter()
                        .filter(|(_, _, replicas, isr)| isr < replicas)
                        .map(|(p, _, replicas, isr)| format!("{topic}/{p} {isr}/{replicas}")),
                ),
                Err(e) => behind.push(e),
            }
        }
        if behind.is_empty() {
            Probe::Ready(())
        } else {
            Probe::Waiting(format!(
                "replicas not back in sync within {deadline:?}: {}",
                behind.join(", ")
            ))
        }
    })
    .await
}

async fn broker_kill(ctx: &Ctx<'_>) -> Result<(), String> {
    let sut = ctx.sut;
    let stack = &sut.stack;
    let topic = sut.names.events_topic();
    wait_in_sync(sut, Duration::from_secs(30)).await?;
    // The leader of a partition the relay writes and the projection reads: its death moves
    // leadership (and maybe the group coordinator or the controller) to the other two.
    let leader = partitions(sut, &topic)
        .await?
        .iter()
        .find(|p| p.0 == 0)
        .map(|p| p.1)
        .ok_or(format!("no partition 0 in {topic}"))?;
    let broker = u8::try_from(leader).map_err(|_| format!("{topic}/0 has no leader ({leader})"))?;
    let before = roles_working(ctx).await?;
    stack.kill9(Service::KafkaBroker(broker)).await?;
    let back_at = Instant::now() + NODE_OUTAGE;
    ctx.log_api(format!(
        "kill -9 kafka-{broker} (leader of {topic}/0); down for {} s",
        NODE_OUTAGE.as_secs()
    ));
    let during = keeps_going(ctx, before, back_at, &format!("kafka-{broker}")).await;
    ctx.log_api("deploy/local/stack up --cluster");
    stack.up().await?;
    ctx.log_api(format!("kafka-{broker} ready again"));
    wait_in_sync(sut, Duration::from_secs(90)).await?;
    ctx.log_api("every partition of the scenario's topics has its replicas in sync again");
    ctx.fault_ended();
    during.map(|_| ())
}

/// GET `url` as JSON (status and body; Null when the body is not JSON).
async fn get_json(http: &reqwest::Client, url: &str) -> Result<(u16, Value), String> {
    let r = http
        .get(url)
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .map_err(|e| format!("GET {url}: {e}"))?;
    let status = r.status().as_u16();
    Ok((status, r.json().await.unwrap_or(Value::Null)))
}

/// The id of the OpenSearch node answering at `url`.
async fn local_node_id(http: &reqwest::Client, url: &str) -> Result<String, String> {
    let (_, v) = get_json(http, &format!("{url}/_nodes/_local")).await?;
    v["nodes"]
        .as_object()
        .and_then(|o| o.keys().next().cloned())
        .ok_or(format!("no node id from {url}: {v}"))
}

/// The concrete index behind `alias`, the id of the node holding its primary, and the
/// primary's state.
async fn primary_of(http: &reqwest::Client, url: &str, alias: &str) -> Result<(String, String, String), String> {
    let (_, v) = get_json(
        http,
        &format!("{url}/_cat/shards/{alias}?format=json&h=index,shard,prirep,state,id"),
    )
    .await?;
    v.as_array()
        .and_then(|a| a.iter().find(|s| s["prirep"] == "p"))
        .map(|s| {
            let f = |k: &str| s[k].as_str().unwrap_or_default().to_owned();
            (f("index"), f("id"), f("state"))
        })
        .ok_or(format!("no primary shard of {alias}: {v}"))
}

/// Waits until `alias`'s index is green (every copy allocated and started).
async fn wait_green(http: &reqwest::Client, url: &str, alias: &str, deadline: Duration) -> Result<(), String> {
    poll_until(Instant::now() + deadline, Duration::from_millis(500), || async {
        let r = get_json(
            http,
            &format!("{url}/_cluster/health/{alias}?wait_for_status=green&timeout=1s"),
        )
        .await;
        if matches!(&r, Ok((200, v)) if v["status"] == "green") {
            Probe::Ready(())
        } else {
            Probe::Waiting(format!("{alias} not green within {deadline:?}: {r:?}"))
        }
    })
    .await
}

async fn search_node_kill(ctx: &Ctx<'_>) -> Result<(), String> {
    let sut = ctx.sut;
    let stack = &sut.stack;
    let http = reqwest::Client::new();
    // The app reaches OpenSearch through node 1 only (one OPENSEARCH_URL), so node 2 goes down,
    // holding the primary: the replica on node 1 must take over while searches go on.
    let node1 = stack.opensearch_url.clone();
    let node2 = stack.opensearch_node_url(2);
    let alias = sut.names.index_alias();
    wait_green(&http, &node1, &alias, Duration::from_secs(60)).await?;
    let id1 = local_node_id(&http, &node1).await?;
    let id2 = local_node_id(&http, &node2).await?;
    let (index, holder, _) = primary_of(&http, &node1, &alias).await?;
    if holder != id2 {
        // Failing the primary promotes the replica on node 2; node 1 gets a new replica.
        let (status, v) = {
            let r = http
                .post(format!("{node1}/_cluster/reroute"))
                .json(&json!({"commands": [{"cancel": {"index": index, "shard": 0, "node": holder, "allow_primary": true}}]}))
                .timeout(Duration::from_secs(10))
                .send()
                .await
                .map_err(|e| format!("reroute: {e}"))?;
            (r.status().as_u16(), r.json::<Value>().await.unwrap_or(Value::Null))
        };
        if status != 200 {
            return Err(format!(
                "could not move the primary of {index} to opensearch-2: {status} {v}"
            ));
        }
        poll_until(
            Instant::now() + Duration::from_secs(60),
            Duration::from_millis(200),
            || async {
                match primary_of(&http, &node1, &alias).await {
                    Ok((_, id, _)) if id == id2 => Probe::Ready(()),
                    Ok(_) => Probe::Waiting(format!(
                        "the primary of {index} did not move to opensearch-2 within 60 s"
                    )),
                    Err(e) => Probe::Failed(e),
                }
            },
        )
        .await?;
        wait_green(&http, &node1, &alias, Duration::from_secs(60)).await?;
        ctx.log_api(format!(
            "moved the primary of {index} to opensearch-2 (replica promoted, new replica on opensearch-1)"
        ));
    }
    let before = roles_working(ctx).await?;
    stack.kill9(Service::OpenSearchNode(2)).await?;
    let down_at = Instant::now();
    let back_at = down_at + NODE_OUTAGE;
    ctx.log_api(format!(
        "kill -9 opensearch-2 (primary of {index}); down for {} s; the API searches through opensearch-1",
        NODE_OUTAGE.as_secs()
    ));
    poll_until(
        down_at + Duration::from_secs(30),
        Duration::from_millis(200),
        || async {
            match primary_of(&http, &node1, &alias).await {
                Ok((_, id, state)) if id == id1 && state == "STARTED" => Probe::Ready(()),
                Ok(_) => Probe::Waiting(format!("no primary of {index} on opensearch-1 within 30 s")),
                Err(e) => Probe::Failed(e),
            }
        },
    )
    .await?;
    ctx.log_api(format!(
        "replica on opensearch-1 promoted to primary after {:.1} s",
        down_at.elapsed().as_secs_f64()
    ));
    let during = keeps_going(ctx, before, back_at, "opensearch-2").await;
    ctx.log_api("deploy/local/stack up --cluster");
    stack.up().await?;
    ctx.log_api("opensearch-2 back in the cluster");
    wait_green(&http, &node1, &alias, Duration::from_secs(90)).await?;
    ctx.log_api(format!("{index} green again (replica recovered on opensearch-2)"));
    ctx.fault_ended();
    during.map(|_| ())
}

fn headers_from(v: &Value) -> OwnedHeaders {
    let mut h = OwnedHeaders::new();
    if let Some(o) = v.as_object() {
        for (k, val) in o {
            let s = val.as_str().map_or_else(|| val.to_string(), str::to_owned);
            h = h.insert(Header {
                key: k,
                value: Some(s.as_bytes()),
            });
        }
    }
    h
}

/// Produces copies of up to `n` published events, each twice, newest first.
async fn duplicate_reorder(ctx: &Ctx<'_>, n: i64) -> Result<usize, String> {
    let db = pg(&ctx.sut.db_url).await?;
    let rows = db
        .query(
            "SELECT topic, key, payload::text, headers::text FROM \
             (SELECT * FROM outbox WHERE published_at IS NOT NULL ORDER BY random() LIMIT $1) s ORDER BY id DESC",
            &[&n],
        )
        .await
        .map_err(|e| e.to_string())?;
    // Newest first: the reverse of the order they were published in.
    let rows: Vec<(String, String, String, String)> =
        rows.iter().map(|r| (r.get(0), r.get(1), r.get(2), r.get(3))).collect();
    let mut sent = 0;
    for _ in 0..2 {
        for (topic, key, payload, headers) in &rows {
            let h = headers_from(&serde_json::from_str(headers).unwrap_or(Value::Null));
            ctx.sut.produce(topic, key, payload.as_bytes(), Some(h)).await?;
            sent += 1;
        }
    }
    Ok(sent)
}

async fn post_command(ctx: &Ctx<'_>, body: &Value) -> Result<u16, String> {
    let r = reqwest::Client::new()
        .post(format!("{}/api/commands", ctx.sut.base))
        .bearer_auth(sut::TOKEN)
        .json(body)
        .timeout(workload::REQUEST_BOUND)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    Ok(r.status().as_u16())
}

async fn poison(ctx: &Ctx<'_>) -> Result<(), String> {
    let sut = ctx.sut;
    let names = &sut.names;
    let target = workload::products(ctx.wl)
        .first()
        .copied()
        .ok_or("no product to poison")?;
    // Through the API: a title Postgres cannot store, and an unknown command type.
    let nul_id = Uuid::new_v4();
    let st = post_command(
        ctx,
        &json!({"command_id": nul_id, "product_id": target, "command_type": "UpdateProductDetails", "payload": {"title": "a\u{0}b"}}),
    )
    .await?;
    if (200..300).contains(&st) {
        lock(&ctx.extra_commands).insert(nul_id);
    }
    ctx.log(format!(
        "POST /api/commands with a NUL title: {st} (accepted means it must end rejected)"
    ));
    let unknown_id = Uuid::new_v4();
    let st = post_command(
        ctx,
        &json!({"command_id": unknown_id, "product_id": target, "command_type": "Explode", "payload": {}}),
    )
    .await?;
    if (200..300).contains(&st) {
        lock(&ctx.extra_commands).insert(unknown_id);
    }
    ctx.log(format!(
        "POST /api/commands with command_type Explode: {st} (expected 422)"
    ));
    // Straight onto the topics.
    let key = target.to_string();
    let cmd_topic = names.commands_topic();
    let ev_topic = names.events_topic();
    sut.produce(&cmd_topic, &key, b"\xff\xfe not json at all", None).await?;
    sut.produce(
        &cmd_topic,
        &key,
        json!({"command_id": Uuid::new_v4(), "product_id": target, "command_type": "Explode"})
            .to_string()
            .as_bytes(),
        None,
    )
    .await?;
    lock(&ctx.expect).dlq_commands += 2;
    sut.produce(&ev_topic, &key, b"\x00\x01 garbage", None).await?;
    sut.produce(
        &ev_topic,
        &key,
        json!({"event_id": Uuid::new_v4(), "event_type": "ProductExploded", "schema_version": 1, "aggregate_id": target}).to_string().as_bytes(),
        None,
    )
    .await?;
    sut.produce(
        &ev_topic,
        &key,
        json!({"event_id": Uuid::new_v4(), "event_type": "ProductCreated", "schema_version": 99, "aggregate_id": target}).to_string().as_bytes(),
        None,
    )
    .await?;
    lock(&ctx.expect).dlq_events += 3;
    ctx.log("produced 2 poison commands and 3 poison events straight to the topics");
    tokio::time::sleep(Duration::from_secs(5)).await; // let traffic flow behind the poison: timed
                                                      // The poison window ends once traffic has flowed behind it, like the other faults.
    ctx.fault_ended();
    Ok(())
}

/// Replaces every "stock" value under `v` with `stock` and every "delta" with 1.
fn restock(v: &mut Value, stock: i64) {
    match v {
        Value::Object(o) => {
            for (k, x) in o.iter_mut() {
                match k.as_str() {
                    "stock" if x.is_number() => *x = json!(stock),
                    "delta" if x.is_number() => *x = json!(1),
                    _ => restock(x, stock),
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|x| restock(x, stock)),
        _ => {}
    }
}

/// A stock change written the way the write side writes it (product row + outbox row in one
/// transaction), but committed only after later outbox rows were published.
async fn late_outbox(ctx: &Ctx<'_>) -> Result<(), String> {
    let sut = ctx.sut;
    let http = reqwest::Client::new();
    let created: Value = http
        .post(format!("{}/api/products", sut.base))
        .bearer_auth(sut::TOKEN)
        .json(
            &json!({"sku": format!("late-{}", Uuid::new_v4().simple()), "title": "Late one", "stock": 1,
                      "price": {"amount_minor": 500, "currency": "USD"}}),
        )
        .send()
        .await
        .map_err(|e| e.to_string())?
        .json()
        .await
        .map_err(|e| e.to_string())?;
    let id = created["id"]
        .as_str()
        .and_then(|s| Uuid::parse_str(s).ok())
        .ok_or(format!("create: {created}"))?;
    lock(&ctx.wl.ledger).ack(id, created["version"].as_i64().unwrap_or(1));
    let adjusted: Value = http
        .post(format!("{}/api/products/{id}/stock", sut.base))
        .bearer_auth(sut::TOKEN)
        .json(&json!({"delta": 1}))
        .send()
        .await
        .map_err(|e| e.to_string())?
        .json()
        .await
        .map_err(|e| e.to_string())?;
    let v = adjusted["version"].as_i64().ok_or(format!("adjust: {adjusted}"))?;
    lock(&ctx.wl.ledger).ack(id, v);

    let db = pg(&sut.db_url).await?;
    db.batch_execute("BEGIN").await.map_err(|e| e.to_string())?;
    let r = db
        .query_one(
            "SELECT p.version, p.stock, o.id, o.payload::text, o.headers::text FROM products p \
             JOIN outbox o ON o.aggregate_id = p.id AND o.aggregate_version = p.version \
             WHERE p.id = $1::text::uuid FOR UPDATE OF p",
            &[&id.to_string()],
        )
        .await
        .map_err(|e| format!("late outbox: read: {}", crate::sut::pg_error(&e)))?;
    let (version, stock, src_id, payload, headers): (i64, i64, i64, String, String) =
        (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4));
    let new_version = version + 1;
    let new_stock = stock + 1;
    let event_id = Uuid::new_v4();
    let now = chrono::Utc::now().to_rfc3339();
    let mut p: Value = serde_json::from_str(&payload).map_err(|e| e.to_string())?;
    p["event_id"] = json!(event_id);
    p["aggregate_version"] = json!(new_version);
    p["occurred_at"] = json!(now);
    p["causation_id"] = Value::Null;
    p["state"]["version"] = json!(new_version);
    p["state"]["stock"] = json!(new_stock);
    p["state"]["updated_at"] = json!(now);
    restock(&mut p["data"], new_stock);
    let mut h: Value = serde_json::from_str(&headers).unwrap_or(json!({}));
    h["event_id"] = json!(event_id.to_string());
    h["aggregate_version"] = json!(new_version.to_string());
    db.execute(
        "UPDATE products SET stock = $2, version = $3, updated_at = now() WHERE id = $1::text::uuid",
        &[&id.to_string(), &new_stock, &new_version],
    )
    .await
    .map_err(|e| format!("late outbox: update: {}", crate::sut::pg_error(&e)))?;
    let row = db
        .query_one(
            "INSERT INTO outbox (event_id, aggregate_type, aggregate_id, aggregate_version, topic, key, event_type, \
             schema_version, payload, headers) SELECT $1::text::uuid, aggregate_type, aggregate_id, $2, topic, key, \
             event_type, schema_version, $3::text::jsonb, $4::text::jsonb FROM outbox WHERE id = $5 RETURNING id",
            &[
                &event_id.to_string(),
                &new_version,
                &p.to_string(),
                &h.to_string(),
                &src_id,
            ],
        )
        .await
        .map_err(|e| format!("late outbox: insert: {}", crate::sut::pg_error(&e)))?;
    let late_id: i64 = row.get(0);
    ctx.log(format!(
        "outbox row {late_id} inserted (product {id} v{new_version}), transaction held open"
    ));
    // Hold it until at least 20 later rows were published.
    let watch = pg(&sut.db_url).await?;
    let end = Instant::now() + Duration::from_secs(60);
    loop {
        let n: i64 = watch
            .query_one(
                "SELECT count(*) FROM outbox WHERE id > $1 AND published_at IS NOT NULL",
                &[&late_id],
            )
            .await
            .map_err(|e| e.to_string())?
            .get(0);
        if n >= 20 {
            ctx.log(format!("{n} later rows published"));
            break;
        }
        if Instant::now() > end {
            let _ = db.batch_execute("ROLLBACK").await;
            return Err("late outbox: later rows were not published within 60 s".into());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    db.batch_execute("COMMIT")
        .await
        .map_err(|e| format!("late outbox: commit: {}", crate::sut::pg_error(&e)))?;
    lock(&ctx.wl.ledger).ack(id, new_version);
    ctx.log(format!("committed outbox row {late_id} late"));
    ctx.fault_ended();
    Ok(())
}

fn render(rows: &[Row], details: bool) -> String {
    let mut t = String::from(
        "| scenario | lost acks | search≠pg | cache≠pg | newer than pg | cmds stuck | dup effects | outbox stuck | lag | DLQ unexplained | API errors (hung) | converge | result |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        if let Some(why) = &r.skipped {
            let _ = writeln!(t, "| {} | | | | | | | | | | | | SKIP: {why} |", r.name);
            continue;
        }
        let f = &r.findings;
        let conv = match r.converge {
            Some(c) if c <= CONVERGE_TARGET => format!("{:.1} s", c.as_secs_f64()),
            Some(c) => format!("**{:.1} s**", c.as_secs_f64()),
            None => format!("**> {:.0} s**", r.waited.as_secs_f64()),
        };
        let result = if let Some(e) = &r.error {
            format!("ERROR: {}", e.replace('|', "/").chars().take(120).collect::<String>())
        } else if r.passed() {
            "PASS".into()
        } else {
            "FAIL".into()
        };
        let _ = writeln!(
            t,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} ({}) | {} | {} |",
            r.name,
            f.lost,
            f.search_diff,
            f.cache_diff,
            f.newer,
            f.cmds_stuck,
            f.dup_effects,
            f.outbox_stuck,
            f.lag,
            f.dlq_unexplained,
            r.api.anomalies,
            r.api.hung,
            conv,
            result
        );
    }
    if details {
        t.push_str("\nDetails (requests: total / during a fault / failed during a fault; p99 latency during faults vs calm):\n");
        for r in rows.iter().filter(|r| r.skipped.is_none()) {
            let a = &r.api;
            let _ = writeln!(
                t,
                "- {}: {} requests, {} during a fault, {} failed then; p99 {} ms vs {} ms",
                r.name, a.total, a.during_fault, a.fault_errors, a.fault_p99_ms, a.calm_p99_ms
            );
            for (k, n) in a.by_kind.iter().take(4) {
                let _ = writeln!(t, "  - API anomaly: {n} × {k}");
            }
            for n in &r.findings.notes {
                let _ = writeln!(t, "  - {n}");
            }
            for l in &r.timeline {
                let _ = writeln!(t, "  - {l}");
            }
        }
    }
    t
}

/// Proves every checker column can fail: a clean run first, then one deliberate corruption per
/// column in that throwaway namespace, each of which must be reported.
pub async fn self_test(opts: &Opts) -> bool {
    let stack = Stack::from_env();
    println!("chaos self-test on {}", stack.describe());
    let dir = run_dir();
    let _ = std::fs::create_dir_all(&dir);
    match self_test_inner(&stack, opts, &dir).await {
        Ok(ok) => ok,
        Err(e) => {
            eprintln!("self-test could not run: {e}");
            false
        }
    }
}

async fn self_test_inner(stack: &Stack, opts: &Opts, dir: &std::path::Path) -> Result<bool, String> {
    let sut = Sut::start(stack, "self-test", dir).await?;
    let wl = Workload::new(&sut.base);
    let mut rng = StdRng::seed_from_u64(opts.seed);
    wl.seed_products(12, &mut rng).await;
    for _ in 0..20 {
        let r = wl.request(workload::Op::Command, &mut rng).await;
        lock(&wl.ledger).records.push(r);
        let r = wl.request(workload::Op::Price, &mut rng).await;
        lock(&wl.ledger).records.push(r);
    }
    let (mut acked, mut commands) = {
        let l = lock(&wl.ledger);
        (l.acked.clone(), l.commands.keys().copied().collect::<HashSet<_>>())
    };
    let expect = Expect::default();
    let end = Instant::now() + Duration::from_secs(60);
    let baseline = loop {
        let f = checker::check(&sut, &acked, &commands, expect).await?;
        if f.anomalies() == 0 || Instant::now() > end {
            break f;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    if baseline.anomalies() != 0 {
        println!("baseline did not converge, cannot prove the columns: {:?}", baseline);
        sut.teardown(opts.keep).await;
        return Ok(false);
    }
    println!("baseline clean: every column 0");
    // Freeze the moving parts so each corruption stays put.
    sut.stop(Role::Relay, None, Duration::from_secs(20)).await;
    sut.stop(Role::CommandConsumer, None, Duration::from_secs(20)).await;
    sut.stop(Role::Projection, None, Duration::from_secs(20)).await;
    let db = pg(&sut.db_url).await?;
    let ids: Vec<Uuid> = {
        let mut v: Vec<Uuid> = acked.keys().copied().collect();
        v.sort();
        v
    };
    if ids.len() < 5 {
        return Err("too few products for the self-test".into());
    }
    let version = |id: &Uuid| acked[id].iter().copied().max().unwrap_or(1);
    // cache≠pg: one Redis entry's title changed.
    let client = redis::Client::open(stack.redis_url.as_str()).map_err(|e| e.to_string())?;
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .map_err(|e| e.to_string())?;
    let key = sut.names.product_cache_key(&ids[0]);
    let d: Option<String> = redis::cmd("HGET")
        .arg(&key)
        .arg("d")
        .query_async(&mut conn)
        .await
        .map_err(|e| e.to_string())?;
    let mut d: Value = d
        .and_then(|d| serde_json::from_str(&d).ok())
        .ok_or("no cache entry to corrupt")?;
    d["title"] = json!("corrupted by the self-test");
    let _: () = redis::cmd("HSET")
        .arg(&key)
        .arg("d")
        .arg(d.to_string())
        .query_async(&mut conn)
        .await
        .map_err(|e| e.to_string())?;
    // search≠pg and newer: one document rewritten with a higher version, one deleted.
    let http = reqwest::Client::new();
    let alias = sut.names.index_alias();
    let os = &stack.opensearch_url;
    let doc: Value = http
        .get(format!("{os}/{alias}/_doc/{}", ids[1]))
        .send()
        .await
        .map_err(|e| e.to_string())?
        .json()
        .await
        .map_err(|e| e.to_string())?;
    let mut src = doc["_source"].clone();
    let bumped = version(&ids[1]) + 5;
    src["version"] = json!(bumped);
    let index = doc["_index"].as_str().ok_or("no document to corrupt")?.to_owned();
    let r = http
        .put(format!(
            "{os}/{index}/_doc/{}?version={bumped}&version_type=external_gte",
            ids[1]
        ))
        .json(&src)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if !r.status().is_success() {
        return Err(format!("could not rewrite the document: {}", r.status()));
    }
    let _ = http.delete(format!("{os}/{index}/_doc/{}", ids[2])).send().await;
    // lost: the outbox row of an acknowledged write deleted.
    db.execute(
        "DELETE FROM outbox WHERE aggregate_id = $1::text::uuid AND aggregate_version = $2",
        &[&ids[3].to_string(), &version(&ids[3])],
    )
    .await
    .map_err(|e| e.to_string())?;
    // lost (command): the event of an applied command deleted.
    let applied: Vec<String> = commands.iter().map(Uuid::to_string).collect();
    let gone = db
        .execute(
            "DELETE FROM outbox WHERE id = (SELECT o.id FROM outbox o JOIN commands c \
             ON o.payload->>'causation_id' = c.command_id::text WHERE c.status = 'applied' \
             AND c.command_id::text = ANY($1) AND o.aggregate_id <> ALL($2::text[]::uuid[]) LIMIT 1)",
            &[&applied, &ids[..5].iter().map(Uuid::to_string).collect::<Vec<_>>()],
        )
        .await
        .map_err(|e| e.to_string())?;
    if gone != 1 {
        return Err("no applied command to corrupt".into());
    }
    // dup effects: a second row for an existing (product, version), published.
    db.execute(
        "INSERT INTO outbox (event_id, aggregate_type, aggregate_id, aggregate_version, topic, key, event_type, \
         schema_version, payload, headers, published_at) SELECT gen_random_uuid(), aggregate_type, aggregate_id, \
         aggregate_version, topic, key, event_type, schema_version, jsonb_set(payload, '{causation_id}', 'null'), headers, now() \
         FROM outbox WHERE aggregate_id = $1::text::uuid ORDER BY id LIMIT 1",
        &[&ids[4].to_string()],
    )
    .await
    .map_err(|e| e.to_string())?;
    // outbox stuck: a pending row nobody publishes (the relay is stopped).
    db.execute(
        "INSERT INTO outbox (event_id, aggregate_type, aggregate_id, aggregate_version, topic, key, event_type, \
         schema_version, payload, headers) SELECT gen_random_uuid(), aggregate_type, aggregate_id, 100000, topic, key, \
         event_type, schema_version, jsonb_set(payload, '{causation_id}', 'null'), headers \
         FROM outbox WHERE aggregate_id = $1::text::uuid ORDER BY id LIMIT 1",
        &[&ids[4].to_string()],
    )
    .await
    .map_err(|e| e.to_string())?;
    // cmds stuck: an accepted command id nobody processed.
    commands.insert(Uuid::new_v4());
    // lag: a command nobody consumes (the consumer is stopped).
    sut.produce(&sut.names.commands_topic(), "k", b"{}", None).await?;
    // DLQ: a dead letter no poison explains.
    sut.produce(&sut.names.events_dlq_topic(), "k", b"unexplained", None)
        .await?;
    acked.entry(ids[3]).or_default();
    let f = checker::check(&sut, &acked, &commands, expect).await?;
    // API errors: the classification of request outcomes.
    let rec = |op, outcome, down| Record {
        op,
        latency: Duration::ZERO,
        outcome,
        down,
    };
    let api_cases = [
        (rec(workload::Op::Price, Outcome::Hung, 0), true),
        (rec(workload::Op::Price, Outcome::Server(500), DOWN_PG), true),
        (
            rec(workload::Op::Price, Outcome::Server(503), workload::DOWN_REDIS),
            true,
        ),
        (
            rec(
                workload::Op::Get,
                Outcome::Transport("refused".into()),
                workload::DOWN_KAFKA,
            ),
            true,
        ),
        (rec(workload::Op::Price, Outcome::Server(503), DOWN_PG), false),
        (
            rec(workload::Op::Command, Outcome::Server(503), workload::DOWN_KAFKA),
            false,
        ),
        (
            rec(workload::Op::Get, Outcome::Transport("refused".into()), DOWN_API),
            false,
        ),
    ];
    let api_ok = api_cases.iter().all(|(r, want)| r.is_anomaly() == *want);
    // (column, corruption, found, needed): each corruption touches its own product.
    let columns: Vec<(&str, &str, i64, i64)> = vec![
        (
            "lost acks",
            "outbox row of an acked write deleted; event of an applied command deleted",
            f.lost as i64,
            2,
        ),
        (
            "search≠pg",
            "document rewritten with version +5; another deleted",
            f.search_diff as i64,
            2,
        ),
        ("cache≠pg", "Redis entry's title changed", f.cache_diff as i64, 1),
        ("newer than pg", "document version +5", f.newer as i64, 1),
        (
            "cmds stuck",
            "accepted command id never processed",
            f.cmds_stuck as i64,
            1,
        ),
        (
            "dup effects",
            "second outbox row for a (product, version)",
            f.dup_effects as i64,
            1,
        ),
        (
            "outbox stuck",
            "pending row while the relay is stopped",
            f.outbox_stuck as i64,
            1,
        ),
        ("lag", "one command while the consumer is stopped", f.lag, 1),
        (
            "DLQ unexplained",
            "one dead letter, no poison injected",
            f.dlq_unexplained,
            1,
        ),
        (
            "API errors",
            "hang, 500, 503 while deps up vs excused failures (7 cases)",
            i64::from(api_ok),
            1,
        ),
    ];
    let mut ok = true;
    println!("| column | corruption | found | needed | result |\n|---|---|---|---|---|");
    for (col, what, n, need) in &columns {
        let pass = n >= need;
        ok &= pass;
        println!(
            "| {col} | {what} | {n} | {need} | {} |",
            if pass { "detected" } else { "MISSED" }
        );
    }
    for n in &f.notes {
        println!("  - {n}");
    }
    sut.teardown(opts.keep).await;
    println!(
        "self-test: {}",
        if ok {
            "every column detects its corruption"
        } else {
            "some column missed its corruption"
        }
    );
    Ok(ok)
}
