//! A bounded open-loop workload: one request started every 1/rate seconds whatever the latency
//! (a slow system does not slow the arrivals down), each bounded by [`REQUEST_BOUND`]. It
//! records every acknowledged write (product id and the version the 2xx answer returned), every
//! accepted command id, and each request's outcome, latency and which dependencies were down
//! while it ran (the fault injector sets the bits of the shared `down` mask).

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use uuid::Uuid;

use crate::sut::TOKEN;

/// A request that takes longer than this has hung.
pub const REQUEST_BOUND: Duration = Duration::from_secs(5);

/// Postgres is down (bit of the `down` mask).
pub const DOWN_PG: u8 = 1;
/// Redis is down.
pub const DOWN_REDIS: u8 = 2;
/// The Kafka broker is down.
pub const DOWN_KAFKA: u8 = 4;
/// OpenSearch is down.
pub const DOWN_SEARCH: u8 = 8;
/// The API process itself is down (killed).
pub const DOWN_API: u8 = 16;

/// Kind of request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// POST /api/products.
    Create,
    /// PATCH /api/products/{id}.
    Details,
    /// POST .../price.
    Price,
    /// POST .../stock {"set"}.
    SetStock,
    /// POST .../stock {"delta"}.
    AdjustStock,
    /// POST .../publish.
    Publish,
    /// POST .../unpublish.
    Unpublish,
    /// POST .../archive.
    Archive,
    /// POST .../variants (a new size; 409 when the product's variants cannot take it).
    AddVariant,
    /// PUT .../variants/1/prices (EUR and USD).
    VariantPrices,
    /// POST .../variants/1/stock {"delta"}.
    VariantStock,
    /// GET /api/products/{id}.
    Get,
    /// GET /api/search.
    Search,
    /// POST /api/commands.
    Command,
    /// POST /api/commands again with an accepted command's id and body.
    DuplicateCommand,
}

impl Op {
    /// Dependencies the request cannot do without (an error while one of them is down is
    /// expected; an error otherwise is an anomaly). Reads of a product need Postgres or Redis,
    /// so neither alone.
    pub fn needs(self) -> u8 {
        match self {
            Self::Get => 0,
            Self::Search => DOWN_SEARCH,
            // Either design is fine: hand the command to Kafka, or accept it into Postgres.
            Self::Command | Self::DuplicateCommand => DOWN_PG | DOWN_KAFKA,
            _ => DOWN_PG,
        }
    }

    /// A product write that returns the new version.
    pub fn is_product_write(self) -> bool {
        !matches!(self, Self::Get | Self::Search | Self::Command | Self::DuplicateCommand)
    }
}

const MIX: &[(Op, u32)] = &[
    (Op::Create, 12),
    (Op::Details, 10),
    (Op::Price, 10),
    (Op::SetStock, 7),
    (Op::AdjustStock, 10),
    (Op::Publish, 6),
    (Op::Unpublish, 3),
    (Op::Archive, 2),
    (Op::AddVariant, 5),
    (Op::VariantPrices, 4),
    (Op::VariantStock, 4),
    (Op::Get, 10),
    (Op::Search, 5),
    (Op::Command, 20),
    (Op::DuplicateCommand, 5),
];

/// How a request ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// 2xx.
    Ok,
    /// 4xx (a rule the request broke: expected, not an error of the platform).
    Client(u16),
    /// 5xx.
    Server(u16),
    /// Connection refused, reset, ...
    Transport(String),
    /// No answer within [`REQUEST_BOUND`].
    Hung,
}

/// One request.
#[derive(Debug, Clone)]
pub struct Record {
    /// Kind.
    pub op: Op,
    /// Time to the answer (or to the bound).
    pub latency: Duration,
    /// Outcome.
    pub outcome: Outcome,
    /// Dependencies down at any point while it ran (start or end).
    pub down: u8,
}

impl Record {
    /// An error the platform owes an explanation for: a hang, an opaque 500, or any failure
    /// while everything the request needs was up.
    pub fn is_anomaly(&self) -> bool {
        match &self.outcome {
            Outcome::Ok | Outcome::Client(_) => false,
            Outcome::Hung => true,
            Outcome::Server(500) => true,
            Outcome::Server(_) | Outcome::Transport(_) => self.op.needs() & self.down == 0 && self.down & DOWN_API == 0,
        }
    }

    /// Any failure (expected or not).
    pub fn is_error(&self) -> bool {
        !matches!(self.outcome, Outcome::Ok | Outcome::Client(_))
    }
}

/// What the workload saw acknowledged.
#[derive(Debug, Default)]
pub struct Ledger {
    /// Product id → versions returned by 2xx writes.
    pub acked: HashMap<Uuid, Vec<i64>>,
    /// Products the workload writes to (created, not archived).
    pub products: Vec<Uuid>,
    /// Accepted command ids (202) and their bodies.
    pub commands: HashMap<Uuid, Value>,
    /// Accepted duplicate submissions (same command id again).
    pub duplicate_submissions: u32,
    /// Every request.
    pub records: Vec<Record>,
}

impl Ledger {
    /// Records an acknowledged write.
    pub fn ack(&mut self, id: Uuid, version: i64) {
        self.acked.entry(id).or_default().push(version);
    }
}

/// The workload's shared state.
#[derive(Clone)]
pub struct Workload {
    /// What was acknowledged.
    pub ledger: Arc<Mutex<Ledger>>,
    /// Dependencies currently down (bits `DOWN_*`), set by the fault injector.
    pub down: Arc<AtomicU8>,
    stop: Arc<AtomicBool>,
    http: reqwest::Client,
    base: String,
}

/// Locks a mutex, taking over a poisoned one (a panicked request task must not stop the run).
pub fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

fn pick<'a>(rng: &mut StdRng, items: &'a [&'a str]) -> &'a str {
    items[rng.random_range(0..items.len())]
}

impl Workload {
    /// A workload against the API at `base`.
    pub fn new(base: &str) -> Self {
        Self {
            ledger: Arc::new(Mutex::new(Ledger::default())),
            down: Arc::new(AtomicU8::new(0)),
            stop: Arc::new(AtomicBool::new(false)),
            http: reqwest::Client::builder()
                .timeout(REQUEST_BOUND)
                .pool_max_idle_per_host(0)
                .build()
                .unwrap_or_default(),
            base: base.to_owned(),
        }
    }

    /// Marks `bits` down (`true`) or up again.
    pub fn set_down(&self, bits: u8, down: bool) {
        if down {
            self.down.fetch_or(bits, Ordering::SeqCst);
        } else {
            self.down.fetch_and(!bits, Ordering::SeqCst);
        }
    }

    /// Asks the running loop to stop starting requests.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }

    /// Creates `n` products before the clock starts (so every kind of write has targets).
    pub async fn seed_products(&self, n: usize, rng: &mut StdRng) {
        for _ in 0..n {
            let r = self.request(Op::Create, rng).await;
            lock(&self.ledger).records.push(r);
        }
    }

    /// Starts one request every 1/rate s until [`stop`](Self::stop), then waits for those in
    /// flight (each is bounded). Returns how many were started.
    pub async fn run(&self, rate: u32, seed: u64) -> usize {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(rate)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let total: u32 = MIX.iter().map(|(_, w)| w).sum();
        let mut tasks = Vec::new();
        while !self.stop.load(Ordering::SeqCst) {
            tick.tick().await;
            let mut x = rng.random_range(0..total);
            let op = MIX
                .iter()
                .find(|(_, w)| {
                    if x < *w {
                        true
                    } else {
                        x -= w;
                        false
                    }
                })
                .map_or(Op::Get, |(op, _)| *op);
            let me = self.clone();
            let mut task_rng = StdRng::seed_from_u64(rng.random());
            tasks.push(tokio::spawn(async move {
                let r = me.request(op, &mut task_rng).await;
                lock(&me.ledger).records.push(r);
            }));
        }
        let n = tasks.len();
        for t in tasks {
            let _ = t.await;
        }
        n
    }

    fn target(&self, rng: &mut StdRng) -> Option<Uuid> {
        let l = lock(&self.ledger);
        (!l.products.is_empty()).then(|| l.products[rng.random_range(0..l.products.len())])
    }

    /// Sends one request of kind `op` and records what it acknowledged.
    pub async fn request(&self, op: Op, rng: &mut StdRng) -> Record {
        let mut op = op;
        let target = self.target(rng);
        if target.is_none() && op != Op::Search {
            op = Op::Create;
        }
        let id = target.unwrap_or_default();
        let p = |suffix: &str| format!("{}/api/products/{id}{suffix}", self.base);
        let titles = ["Lamp", "Chair", "Phone case", "Kettle", "Desk", "Cable", "Backpack"];
        let mut command_body = None;
        let req = match op {
            Op::Create => {
                let mut body = json!({
                    "title": format!("{} {}", pick(rng, &titles), rng.random_range(1..1000)),
                    "description": "made for the chaos suite",
                    "category": pick(rng, &["electronics", "home", "garden", "toys"]),
                    "brand": pick(rng, &["Acme", "Globex", "Initech"]),
                    "attributes": {"colour": pick(rng, &["red", "blue", "green"])},
                });
                let price = json!({"amount_minor": rng.random_range(100..100_000), "currency": "USD"});
                let stock = rng.random_range(0..100);
                if rng.random_bool(0.5) {
                    body["sku"] = json!(format!("sku-{}", Uuid::new_v4().simple()));
                    body["price"] = price;
                    body["stock"] = json!(stock);
                } else {
                    body["variants"] = json!([{"sku": format!("sku-{}", Uuid::new_v4().simple()),
                        "options": {"size": "M"}, "prices": [price], "stock": stock}]);
                }
                self.http.post(format!("{}/api/products", self.base)).json(&body)
            }
            Op::AddVariant => self.http.post(p("/variants")).json(&json!({
                "sku": format!("sku-{}", Uuid::new_v4().simple()),
                "options": {"size": pick(rng, &["S", "L", "XL"])},
                "prices": [{"amount_minor": rng.random_range(100..100_000), "currency": "USD"}],
                "stock": rng.random_range(0..50),
            })),
            Op::VariantPrices => self.http.put(p("/variants/1/prices")).json(&json!({"prices": [
                {"amount_minor": rng.random_range(100..100_000), "currency": "EUR"},
                {"amount_minor": rng.random_range(100..100_000), "currency": "USD"},
            ]})),
            Op::VariantStock => self
                .http
                .post(p("/variants/1/stock"))
                .json(&json!({"delta": rng.random_range(1..10)})),
            Op::Details => self.http.patch(p("")).json(&json!({
                "title": format!("{} {}", pick(rng, &titles), rng.random_range(1..1000)),
                "description": format!("revision {}", rng.random_range(0..1_000_000)),
            })),
            Op::Price => self
                .http
                .post(p("/price"))
                .json(&json!({"amount_minor": rng.random_range(100..100_000), "currency": "USD"})),
            Op::SetStock => self
                .http
                .post(p("/stock"))
                .json(&json!({"set": rng.random_range(0..500)})),
            Op::AdjustStock => self
                .http
                .post(p("/stock"))
                .json(&json!({"delta": rng.random_range(1..10)})),
            Op::Publish => self.http.post(p("/publish")),
            Op::Unpublish => self.http.post(p("/unpublish")),
            Op::Archive => self.http.post(p("/archive")),
            Op::Get => self.http.get(p("")),
            Op::Search => self
                .http
                .get(format!("{}/api/search", self.base))
                .query(&[("q", pick(rng, &titles))]),
            Op::Command | Op::DuplicateCommand => {
                let dup = (op == Op::DuplicateCommand)
                    .then(|| {
                        let l = lock(&self.ledger);
                        let n = l.commands.len();
                        (n > 0)
                            .then(|| l.commands.values().nth(rng.random_range(0..n)).cloned())
                            .flatten()
                    })
                    .flatten();
                let body = dup.unwrap_or_else(|| {
                    op = Op::Command;
                    let (t, payload) = match rng.random_range(0..5) {
                        4 => (
                            "AddVariant",
                            json!({"sku": format!("sku-{}", Uuid::new_v4().simple()), "options": {"size": "XXL"},
                                   "prices": [{"amount_minor": rng.random_range(100..100_000), "currency": "USD"}]}),
                        ),
                        0 => ("AdjustStock", json!({"delta": rng.random_range(1..10)})),
                        1 => ("SetStock", json!({"stock": rng.random_range(0..500)})),
                        2 => (
                            "ChangePrice",
                            json!({"price": {"amount_minor": rng.random_range(100..100_000), "currency": "USD"}}),
                        ),
                        _ => (
                            "UpdateProductDetails",
                            json!({"description": format!("via command {}", rng.random_range(0..1_000_000))}),
                        ),
                    };
                    json!({"command_id": Uuid::new_v4(), "product_id": id, "command_type": t, "payload": payload})
                });
                command_body = Some(body.clone());
                self.http.post(format!("{}/api/commands", self.base)).json(&body)
            }
        };
        let down_before = self.down.load(Ordering::SeqCst);
        let start = Instant::now();
        let res = req.bearer_auth(TOKEN).send().await;
        let outcome = match res {
            Err(e) if e.is_timeout() => Outcome::Hung,
            Err(e) => Outcome::Transport(e.to_string()),
            Ok(r) => {
                let status = r.status().as_u16();
                let body: Option<Value> = tokio::time::timeout(REQUEST_BOUND, r.json())
                    .await
                    .ok()
                    .and_then(Result::ok);
                match status {
                    200..=299 => {
                        self.on_success(op, id, body, command_body);
                        Outcome::Ok
                    }
                    400..=499 => {
                        if op == Op::Archive || (status == 404 && target.is_some()) {
                            lock(&self.ledger).products.retain(|p| *p != id);
                        }
                        Outcome::Client(status)
                    }
                    _ => Outcome::Server(status),
                }
            }
        };
        Record {
            op,
            latency: start.elapsed(),
            outcome,
            down: down_before | self.down.load(Ordering::SeqCst),
        }
    }

    fn on_success(&self, op: Op, id: Uuid, body: Option<Value>, command_body: Option<Value>) {
        let mut l = lock(&self.ledger);
        if op.is_product_write() {
            let pid = body
                .as_ref()
                .and_then(|b| b["id"].as_str())
                .and_then(|s| Uuid::parse_str(s).ok());
            let version = body.as_ref().and_then(|b| b["version"].as_i64());
            if let (Some(pid), Some(v)) = (pid, version) {
                l.ack(pid, v);
                if op == Op::Create {
                    l.products.push(pid);
                }
                if op == Op::Archive {
                    l.products.retain(|p| *p != pid);
                }
            }
            let _ = id;
        }
        if let Some(b) = command_body {
            if let Some(cid) = b["command_id"].as_str().and_then(|s| Uuid::parse_str(s).ok()) {
                if l.commands.insert(cid, b).is_some() {
                    l.duplicate_submissions += 1;
                }
            }
        }
    }
}

/// Per-window summary of the records.
#[derive(Debug, Default, Clone)]
pub struct Summary {
    /// Requests.
    pub total: usize,
    /// Requests started or ended while something was down.
    pub during_fault: usize,
    /// Failures while something was down (expected or not).
    pub fault_errors: usize,
    /// Anomalies (hangs, 500s, failures while everything needed was up).
    pub anomalies: usize,
    /// Of which hangs.
    pub hung: usize,
    /// p99 latency during faults, ms.
    pub fault_p99_ms: u128,
    /// p99 latency otherwise, ms.
    pub calm_p99_ms: u128,
    /// Anomalies by op and outcome, for the details.
    pub by_kind: Vec<(String, usize)>,
}

fn p99(mut v: Vec<u128>) -> u128 {
    if v.is_empty() {
        return 0;
    }
    v.sort_unstable();
    v[(v.len() * 99 / 100).min(v.len() - 1)]
}

/// Summarises `records`.
pub fn summarise(records: &[Record]) -> Summary {
    let mut s = Summary {
        total: records.len(),
        ..Default::default()
    };
    let mut fault = Vec::new();
    let mut calm = Vec::new();
    let mut kinds: HashMap<String, usize> = HashMap::new();
    for r in records {
        if r.down != 0 {
            s.during_fault += 1;
            fault.push(r.latency.as_millis());
            if r.is_error() {
                s.fault_errors += 1;
            }
        } else {
            calm.push(r.latency.as_millis());
        }
        if r.is_anomaly() {
            s.anomalies += 1;
            if r.outcome == Outcome::Hung {
                s.hung += 1;
            }
            let what = match &r.outcome {
                Outcome::Server(c) => format!("{c}"),
                Outcome::Hung => "hung".into(),
                Outcome::Transport(_) => "transport".into(),
                o => format!("{o:?}"),
            };
            *kinds.entry(format!("{:?} {what}", r.op)).or_default() += 1;
        }
    }
    s.fault_p99_ms = p99(fault);
    s.calm_p99_ms = p99(calm);
    let mut k: Vec<_> = kinds.into_iter().collect();
    k.sort_by_key(|kind| std::cmp::Reverse(kind.1));
    s.by_kind = k;
    s
}

/// The product ids the workload has in play, for scenarios that need a target.
pub fn products(w: &Workload) -> Vec<Uuid> {
    lock(&w.ledger).products.clone()
}
