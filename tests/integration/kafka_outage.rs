//! The relay survives a Kafka outage: a private single-node broker (same jars as the stack's)
//! is killed and restarted under a following publisher.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use diesel_async::RunQueryDsl;

use crate::helpers::{wait_until, TestEnv};

struct Broker {
    dir: PathBuf,
    port: u16,
    child: Option<Child>,
}

impl Broker {
    fn libs() -> String {
        let state = std::env::var("ALIEXPRESS_STATE_DIR").unwrap_or_else(|_| "/var/tmp/aliexpress-stack".into());
        format!("{state}/kafka/libs/*")
    }

    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("aliexpress-broker-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("dir");
        // The broker is stopped and started again on the same ports.
        let port = crate::helpers::restartable_ports(2);
        let ctl = port + 1;
        let props = format!(
            "process.roles=broker,controller\nnode.id=1\ncontroller.quorum.bootstrap.servers=127.0.0.1:{ctl}\n\
             listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{ctl}\n\
             advertised.listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{ctl}\n\
             controller.listener.names=CONTROLLER\ninter.broker.listener.name=PLAINTEXT\n\
             listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT\nlog.dirs={}\n\
             offsets.topic.replication.factor=1\ntransaction.state.log.replication.factor=1\ntransaction.state.log.min.isr=1\n\
             share.coordinator.state.topic.replication.factor=1\nshare.coordinator.state.topic.min.isr=1\n\
             group.initial.rebalance.delay.ms=0\nnum.partitions=3\n",
            dir.join("data").display()
        );
        std::fs::write(dir.join("server.properties"), props).expect("props");
        let id = Command::new("java")
            .args(["-cp", &Self::libs(), "kafka.tools.StorageTool", "random-uuid"])
            .output()
            .expect("java");
        let id = String::from_utf8_lossy(&id.stdout).trim().to_owned();
        let fmt = Command::new("java")
            .args([
                "-cp",
                &Self::libs(),
                "kafka.tools.StorageTool",
                "format",
                "--standalone",
                "-t",
                &id,
                "-c",
            ])
            .arg(dir.join("server.properties"))
            .output()
            .expect("format");
        assert!(fmt.status.success(), "{}", String::from_utf8_lossy(&fmt.stderr));
        let mut b = Self { dir, port, child: None };
        b.start();
        b
    }

    fn start(&mut self) {
        let log = std::fs::File::create(self.dir.join("broker.log")).expect("log");
        self.child = Some(
            Command::new("java")
                .args(["-Xmx384m", "-cp", &Self::libs(), "kafka.Kafka"])
                .arg(self.dir.join("server.properties"))
                .stdout(log)
                .stderr(Stdio::null())
                .spawn()
                .expect("broker"),
        );
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    async fn wait_ready(&self) {
        let b = self.bootstrap();
        let ok = wait_until(Duration::from_secs(60), || {
            let b = b.clone();
            async move {
                let p = aliexpress::bus::producer::build(
                    &aliexpress::bus::KafkaConnection::new(b.clone()),
                    &Default::default(),
                )
                .expect("producer");
                aliexpress::bus::admin::probe(&p, Duration::from_secs(1)).await.is_ok()
            }
        })
        .await;
        assert!(
            ok,
            "private broker did not start: {}",
            std::fs::read_to_string(self.dir.join("broker.log")).unwrap_or_default()
        );
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn with_kafka_down_rows_stay_pending_and_the_following_relay_resumes_when_it_returns() {
    let env = TestEnv::new().await;
    let mut broker = Broker::new();
    broker.wait_ready().await;
    let bootstrap = broker.bootstrap();
    aliexpress::bus::admin::ensure_topics(
        &aliexpress::bus::KafkaConnection::new(bootstrap.clone()),
        &[env.names.events_topic()],
        3,
        1,
    )
    .await
    .expect("topic");
    let mut relay = Command::new(env!("CARGO_BIN_EXE_aliexpress"))
        .args([
            "process-outbox",
            "--follow",
            "--message-timeout",
            "3s",
            "--poll-interval",
            "200ms",
        ])
        .envs(env.bin_env())
        .env("KAFKA_BOOTSTRAP_SERVERS", &bootstrap)
        .env("RUST_LOG", "warn")
        .env("LOG_FORMAT", "json")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(broker.dir.join("relay.log")).expect("relay log"))
        .spawn()
        .expect("relay");
    let relay_log = broker.dir.join("relay.log");
    let insert = |n: i32| {
        format!(
            "INSERT INTO outbox (event_id, aggregate_type, aggregate_id, aggregate_version, topic, key, event_type, schema_version, payload) \
             SELECT gen_random_uuid(), 'product', gen_random_uuid(), 1, '{t}', 'k', 'ProductCreated', 1, '{{}}'::jsonb FROM generate_series(1, {n})",
            t = env.names.events_topic()
        )
    };
    let mut c = env.pool.get().await.expect("conn");
    diesel::sql_query(insert(5)).execute(&mut c).await.expect("rows");
    assert!(
        wait_until(Duration::from_secs(30), || async {
            env.count("outbox WHERE published_at IS NULL").await == 0
        })
        .await,
        "published while up"
    );

    broker.kill();
    diesel::sql_query(insert(7)).execute(&mut c).await.expect("rows");
    // The relay has tried (and failed) twice with the rows in hand.
    let failed_batches = || {
        std::fs::read_to_string(&relay_log)
            .unwrap_or_default()
            .matches("outbox batch failed")
            .count()
    };
    let before = failed_batches();
    assert!(
        wait_until(Duration::from_secs(60), || {
            let n = failed_batches();
            async move { n >= before + 2 }
        })
        .await,
        "the relay kept trying while Kafka was down"
    );
    assert_eq!(
        env.count("outbox WHERE published_at IS NULL").await,
        7,
        "rows stay pending while Kafka is down"
    );
    assert_eq!(
        env.count("outbox WHERE parked_at IS NOT NULL OR attempts > 0 AND published_at IS NULL")
            .await,
        0,
        "an outage does not count against rows"
    );
    assert!(relay.try_wait().expect("wait").is_none(), "the relay stays up");

    broker.start();
    broker.wait_ready().await;
    assert!(
        wait_until(Duration::from_secs(60), || async {
            env.count("outbox WHERE published_at IS NULL").await == 0
        })
        .await,
        "the relay resumed when the broker returned"
    );
    let _ = Command::new("kill").arg(relay.id().to_string()).status();
    let status = relay.wait().expect("exit");
    assert!(status.success(), "graceful shutdown on SIGTERM");
}
