//! The `aliexpress` binary: parse the command line, start telemetry and the runtime, run.

use clap::{CommandFactory, FromArgMatches};
use std::process::ExitCode;

use aliexpress::cli::{self, Cli};
use aliexpress::config::ConfigError;

fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(c) => c,
        Err(e) => e.exit(),
    };
    let service = format!("aliexpress-{}", matches.subcommand_name().unwrap_or("cli"));
    // Before any TLS client (Postgres, Redis, OpenSearch) is built, whichever comes first.
    aliexpress::tls::ensure_crypto_provider();
    let telemetry = aliexpress::telemetry::init(&cli.telemetry, &service);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(cli::run(cli));
    // librdkafka and pools may hold background tasks; do not wait for them forever.
    runtime.shutdown_timeout(std::time::Duration::from_secs(5));
    telemetry.shutdown();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if let Some(c) = e.downcast_ref::<ConfigError>() {
                eprintln!("error: {c}");
                ExitCode::from(2)
            } else {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        }
    }
}
