//! Kafka Connect standalone for the peer rows (the relay's peer, Debezium; the projection's
//! peer, an HTTP sink into OpenSearch): a fresh folder with the worker's, the connector's and
//! the logging properties, one JVM, its log kept for a failure's message; stopped and the
//! folder removed when dropped.

use std::path::PathBuf;
use std::process::Command;

use super::harness::{free_port, Env, Role};

/// A running Connect worker with one connector.
pub(super) struct ConnectStandalone {
    /// The JVM (stopped when dropped).
    pub(super) child: Role,
    dir: PathBuf,
}

impl ConnectStandalone {
    /// Starts Connect on `e`'s Kafka with the jars `libs` (`deploy/local/stack jars NAME`,
    /// named by `jars`), `worker_extra` appended to the worker's properties and `connector`
    /// as the connector's.
    pub(super) fn start(e: &Env, libs: &str, jars: &str, worker_extra: &str, connector: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("aliexpress-bench-connect-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("connect dir");
        let worker = format!(
            "bootstrap.servers={bootstrap}\n\
             key.converter=org.apache.kafka.connect.storage.StringConverter\n\
             value.converter=org.apache.kafka.connect.storage.StringConverter\n\
             offset.storage.file.filename={dir}/offsets\n\
             offset.flush.interval.ms=1000\n\
             listeners=http://127.0.0.1:{port}\n\
             plugin.discovery=only_scan\n{worker_extra}",
            bootstrap = e.infra.kafka.bootstrap_servers,
            dir = dir.display(),
            port = free_port(),
        );
        let log4j = "rootLogger.level=WARN\nrootLogger.appenderRef.out.ref=OUT\n\
                     appender.out.type=Console\nappender.out.name=OUT\n\
                     appender.out.layout.type=PatternLayout\nappender.out.layout.pattern=%d %-5p %c{1} %m%n\n";
        for (f, text) in [
            ("worker.properties", worker.as_str()),
            ("connector.properties", connector),
            ("log4j2.properties", log4j),
        ] {
            std::fs::write(dir.join(f), text).expect("connect config");
        }
        let log = std::fs::File::create(dir.join("connect.log")).expect("connect log");
        let child = Command::new("java")
            .args([
                "-Xms512m",
                "-Xmx1g",
                &format!("-Dlog4j2.configurationFile={}", dir.join("log4j2.properties").display()),
                "-cp",
                libs,
                "org.apache.kafka.connect.cli.ConnectStandalone",
            ])
            .arg(dir.join("worker.properties"))
            .arg(dir.join("connector.properties"))
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("java runs Kafka Connect (deploy/local/stack jars {jars}): {e}"));
        Self {
            child: Role(child),
            dir,
        }
    }

    /// The last 30 lines of its log.
    pub(super) fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.join("connect.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for ConnectStandalone {
    fn drop(&mut self) {
        // Stopped first: a graceful stop flushes the connector's offsets into the folder, and
        // with the folder gone it hung on the missing file (run Q's peer rows, 7 December).
        self.child.stop();
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
