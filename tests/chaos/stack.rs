//! The services under test: their addresses (the usual variables, else the stack's
//! ALIEXPRESS_*_PORT, else the default ports) and fault primitives that act on a service's pid
//! from the stack's pid files (checked against the process's command line first), never on a
//! process name. Service faults are refused on the default, shared stack. A stack started with
//! `deploy/local/stack up --cluster` (its state folder holds a `.cluster` marker) has three
//! brokers and two OpenSearch nodes, each with a pid file of its own.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The stack's default state folder (shared with other work: no service faults there).
pub const DEFAULT_STATE_DIR: &str = "/var/tmp/aliexpress-stack";

/// A service of the stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    /// PostgreSQL.
    Postgres,
    /// Redis.
    Redis,
    /// The Kafka broker.
    Kafka,
    /// OpenSearch.
    OpenSearch,
    /// Broker N (its `node.id`, from 1) of the cluster profile.
    KafkaBroker(u8),
    /// OpenSearch node N (from 1) of the cluster profile.
    OpenSearchNode(u8),
}

impl Service {
    /// Bit in the workload's "down" mask.
    pub fn bit(self) -> u8 {
        match self {
            Self::Postgres => workload::DOWN_PG,
            Self::Redis => workload::DOWN_REDIS,
            Self::Kafka | Self::KafkaBroker(_) => workload::DOWN_KAFKA,
            Self::OpenSearch | Self::OpenSearchNode(_) => workload::DOWN_SEARCH,
        }
    }
}

use crate::workload;

/// Addresses and state folder of the stack the suite runs against.
#[derive(Debug, Clone)]
pub struct Stack {
    /// Admin database URL (the stack's `aliexpress` database).
    pub database_url: String,
    /// Redis URL.
    pub redis_url: String,
    /// Kafka bootstrap servers.
    pub kafka: String,
    /// OpenSearch URL.
    pub opensearch_url: String,
    /// The stack's state folder (pid files).
    pub state_dir: PathBuf,
    /// True when the state folder is not the default one: service faults allowed.
    pub dedicated: bool,
    /// True when the stack is the cluster profile (3 brokers, 2 OpenSearch nodes).
    pub cluster: bool,
    /// deploy/local/stack of this repository.
    pub script: PathBuf,
    redis_port: String,
    kafka_port: String,
    opensearch_port: String,
}

fn env_or(key: &str, default: impl FnOnce() -> String) -> String {
    std::env::var(key)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(default)
}

fn port(var: &str, default: &str) -> String {
    env_or(var, || default.to_owned())
}

impl Stack {
    /// From the environment.
    pub fn from_env() -> Self {
        let pg = port("ALIEXPRESS_PG_PORT", "5432");
        let redis_port = port("ALIEXPRESS_REDIS_PORT", "6379");
        let kafka_port = port("ALIEXPRESS_KAFKA_PORT", "9092");
        let opensearch_port = port("ALIEXPRESS_OPENSEARCH_PORT", "9200");
        let state_dir = PathBuf::from(env_or("ALIEXPRESS_STATE_DIR", || DEFAULT_STATE_DIR.to_owned()));
        let dedicated = state_dir != Path::new(DEFAULT_STATE_DIR);
        let cluster = state_dir.join(".cluster").exists();
        let redis_url = env_or("REDIS_URL", || format!("redis://:aliexpress@127.0.0.1:{redis_port}"));
        let kafka = env_or("KAFKA_BOOTSTRAP_SERVERS", || format!("127.0.0.1:{kafka_port}"));
        let opensearch_url = env_or("OPENSEARCH_URL", || format!("http://127.0.0.1:{opensearch_port}"));
        // The ports of the services actually addressed (for the pid checks).
        let redis_port = url::Url::parse(&redis_url)
            .ok()
            .and_then(|u| u.port())
            .map_or(redis_port, |p| p.to_string());
        let kafka_port = kafka.rsplit(':').next().unwrap_or(&kafka_port).to_owned();
        let opensearch_port = url::Url::parse(&opensearch_url)
            .ok()
            .and_then(|u| u.port())
            .map_or(opensearch_port, |p| p.to_string());
        Self {
            database_url: env_or("DATABASE_URL", || {
                format!("postgres://aliexpress:aliexpress@127.0.0.1:{pg}/aliexpress")
            }),
            redis_url,
            kafka,
            opensearch_url,
            state_dir,
            dedicated,
            cluster,
            script: Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/local/stack"),
            redis_port,
            kafka_port,
            opensearch_port,
        }
    }

    fn pid_file(&self, s: Service) -> PathBuf {
        match s {
            Service::Postgres => self.state_dir.join("postgres/data/postmaster.pid"),
            Service::Redis => self.state_dir.join("redis/redis.pid"),
            Service::Kafka => self.state_dir.join("kafka/kafka.pid"),
            Service::OpenSearch => self.state_dir.join("opensearch/opensearch.pid"),
            Service::KafkaBroker(n) => self.state_dir.join(format!("kafka/broker-{n}/kafka.pid")),
            Service::OpenSearchNode(n) => self.state_dir.join(format!("opensearch/node-{n}/opensearch.pid")),
        }
    }

    /// URL of OpenSearch node `n` of the cluster profile (the nodes' HTTP ports follow
    /// OPENSEARCH_URL's, which is node 1's).
    pub fn opensearch_node_url(&self, n: u8) -> String {
        let base: u16 = self.opensearch_port.parse().unwrap_or(9260);
        format!("http://127.0.0.1:{}", base + u16::from(n) - 1)
    }

    /// The service's pid from its pid file, checked against its command line (right program,
    /// right port), so a stale pid file never makes the suite signal another process.
    pub fn pid(&self, s: Service) -> Result<u32, String> {
        let file = self.pid_file(s);
        let raw = std::fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))?;
        let pid: u32 = raw
            .lines()
            .next()
            .unwrap_or_default()
            .trim()
            .parse()
            .map_err(|e| format!("{}: {e}", file.display()))?;
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
            .map_err(|e| format!("pid {pid} from {}: {e}", file.display()))?;
        let ok = match s {
            Service::Postgres => {
                // postmaster.pid's 4th line is the port: it must be the one DATABASE_URL uses.
                let port = raw.lines().nth(3).unwrap_or_default().trim();
                let url_port = url::Url::parse(&self.database_url)
                    .ok()
                    .and_then(|u| u.port())
                    .unwrap_or(5432);
                cmdline.contains("postgres")
                    && cmdline.contains(&*self.state_dir.to_string_lossy())
                    && port == url_port.to_string()
            }
            Service::Redis => cmdline.contains("redis-server") && cmdline.contains(&format!(":{}", self.redis_port)),
            Service::Kafka => {
                let props = std::fs::read_to_string(self.state_dir.join("kafka/server.properties")).unwrap_or_default();
                cmdline.contains("kafka.Kafka")
                    && cmdline.contains(&*self.state_dir.to_string_lossy())
                    && props.contains(&format!("PLAINTEXT://127.0.0.1:{}", self.kafka_port))
            }
            Service::OpenSearch => {
                let base = self.opensearch_port.parse::<u32>().unwrap_or(0).saturating_sub(1);
                cmdline.contains("OpenSearchRunner")
                    && cmdline.contains(&*self.state_dir.to_string_lossy())
                    && cmdline.contains(&format!("-baseHttpPort {base}"))
            }
            // The node's own folder in this stack's state folder names it.
            Service::KafkaBroker(n) => {
                cmdline.contains("kafka.Kafka")
                    && cmdline.contains(&format!(
                        "{}/kafka/broker-{n}/server.properties",
                        self.state_dir.display()
                    ))
            }
            Service::OpenSearchNode(n) => {
                cmdline.contains("OpenSearchRunner")
                    && cmdline.contains(&format!("{}/opensearch/node-{n}/base", self.state_dir.display()))
            }
        };
        if ok {
            Ok(pid)
        } else {
            Err(format!(
                "pid {pid} from {} is not {s:?} of this stack: {cmdline}",
                file.display()
            ))
        }
    }

    fn guard(&self) -> Result<(), String> {
        if self.dedicated {
            Ok(())
        } else {
            Err(format!(
                "service faults need a stack of their own (ALIEXPRESS_STATE_DIR other than {DEFAULT_STATE_DIR})"
            ))
        }
    }

    /// Sends `signal` (e.g. "STOP", "CONT", "KILL") to the service's pid.
    pub fn signal(&self, s: Service, signal: &str) -> Result<u32, String> {
        self.guard()?;
        let pid = self.pid(s)?;
        let st = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string())
            .status()
            .map_err(|e| e.to_string())?;
        if st.success() {
            Ok(pid)
        } else {
            Err(format!("kill -{signal} {pid} failed"))
        }
    }

    /// `signal` to the service and every process under it (PostgreSQL's backends are children
    /// of its postmaster: stopping only the postmaster leaves the sessions answering).
    pub fn signal_tree(&self, s: Service, signal: &str) -> Result<u32, String> {
        let pid = self.signal(s, signal)?;
        let mut todo = vec![pid];
        while let Some(parent) = todo.pop() {
            for child in children(parent) {
                let _ = Command::new("kill")
                    .arg(format!("-{signal}"))
                    .arg(child.to_string())
                    .status();
                todo.push(child);
            }
        }
        Ok(pid)
    }

    /// kill -9 the service and wait until its pid is gone.
    pub async fn kill9(&self, s: Service) -> Result<(), String> {
        let pid = self.signal(s, "KILL")?;
        let end = Instant::now() + Duration::from_secs(30);
        while Path::new(&format!("/proc/{pid}")).exists() {
            // A zombie keeps /proc/<pid> until reaped by its parent; its state says so.
            let st = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            if st.split_whitespace().nth(2) == Some("Z") {
                break;
            }
            if Instant::now() > end {
                return Err(format!("{s:?} pid {pid} still alive 30 s after SIGKILL"));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(())
    }

    /// `deploy/local/stack up` with this environment: starts what is not running (and waits for
    /// readiness), leaves the rest alone.
    pub async fn up(&self) -> Result<(), String> {
        self.guard()?;
        let script = self.script.clone();
        let cluster = self.cluster;
        let out = tokio::task::spawn_blocking(move || {
            let mut cmd = Command::new(script);
            cmd.arg("up");
            if cluster {
                cmd.arg("--cluster");
            }
            cmd.output()
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "stack up failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    /// Restarts Postgres like a crash (`pg_ctl restart -m immediate`), waiting until it accepts
    /// connections again.
    pub async fn restart_postgres(&self) -> Result<(), String> {
        self.guard()?;
        self.pid(Service::Postgres)?;
        let data = self.state_dir.join("postgres/data");
        let pg_ctl = std::fs::read_dir("/usr/lib/postgresql")
            .map_err(|e| e.to_string())?
            .filter_map(Result::ok)
            .map(|d| d.path().join("bin/pg_ctl"))
            .find(|p| p.exists())
            .ok_or("pg_ctl not found under /usr/lib/postgresql")?;
        let log = self.state_dir.join("postgres/postgres.log");
        // -l and null stdio: the new postmaster must not hold a pipe of ours open.
        let st = tokio::task::spawn_blocking(move || {
            Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(pg_ctl)
                .arg("-D")
                .arg(data)
                .arg("-l")
                .arg(log)
                .args(["-m", "immediate", "-w", "-t", "60", "restart"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
        if st.success() {
            Ok(())
        } else {
            Err(format!(
                "pg_ctl restart failed ({st}); see {}/postgres/postgres.log",
                self.state_dir.display()
            ))
        }
    }

    /// Which port the suite's OpenSearch and Kafka listen on (for messages).
    pub fn describe(&self) -> String {
        format!(
            "postgres {} | redis :{} | kafka {} | opensearch :{} | state {}{}{}",
            crate::sut::redact(&self.database_url),
            self.redis_port,
            self.kafka,
            self.opensearch_port,
            self.state_dir.display(),
            if self.cluster { " (cluster profile)" } else { "" },
            if self.dedicated {
                " (dedicated: service faults on)"
            } else {
                " (shared: service faults off)"
            }
        )
    }
}

/// The pids whose parent is `pid` (from /proc/*/stat).
fn children(pid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/stat")).is_ok_and(|st| {
                // The command name (field 2) is in parentheses and may hold spaces: ppid is the
                // second field after its closing one.
                st.rsplit_once(')')
                    .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok())
                    == Some(pid)
            })
        })
        .collect()
}
