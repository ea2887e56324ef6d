//! OpenSearch settings (product search): the cluster, credentials, certificate checks, and the
//! layout of a products index the binary creates. The client is built from them by
//! `search::SearchAccess::from_settings` and `search::SearchClient::with_access`; the index
//! layout by `search::index::IndexLayout::from_settings`.
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | OPENSEARCH_URL | http://127.0.0.1:9200 | the cluster; several nodes of one cluster comma separated |
//! | OPENSEARCH_USERNAME, OPENSEARCH_PASSWORD | (none) | basic auth; credentials in the URL work too |
//! | OPENSEARCH_CA_FILE | (system roots) | PEM file of the CA(s) trusted for `https://` |
//! | OPENSEARCH_DANGER_ACCEPT_INVALID_CERTS | false | certificates are always verified unless this is true |
//! | OPENSEARCH_INDEX_SHARDS | 1 | primary shards of a products index the projection (or a rebuild) creates |
//! | OPENSEARCH_INDEX_REPLICAS | 0 | replicas of each shard of that index |
//! | OPENSEARCH_REFRESH_INTERVAL_MS | 1000 | how often that index makes writes searchable |
//!
//! An existing index keeps its own shards, replicas and refresh interval.

use clap::Args;
use std::path::PathBuf;

use super::{check_url, ConfigError};
use crate::secret::{Secret, SecretUrl};

/// Default `OPENSEARCH_URL`: the local stack's node.
pub const DEFAULT_OPENSEARCH_URL: &str = "http://127.0.0.1:9200";

/// Where the OpenSearch client connects, as whom, and the layout of indices it creates.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "OpenSearch")]
pub struct OpenSearchSettings {
    /// OpenSearch URL (product search); several nodes of one cluster comma separated.
    #[arg(
        id = "opensearch_url",
        value_name = "OPENSEARCH_URL",
        long = "opensearch-url",
        env = "OPENSEARCH_URL",
        global = true,
        default_value = DEFAULT_OPENSEARCH_URL,
        hide_env_values = true
    )]
    pub url: SecretUrl,
    /// OpenSearch basic-auth user name (instead of credentials in the URL).
    #[arg(
        id = "opensearch_username",
        value_name = "OPENSEARCH_USERNAME",
        long = "opensearch-username",
        env = "OPENSEARCH_USERNAME",
        global = true
    )]
    pub username: Option<String>,
    /// OpenSearch basic-auth password (never shown).
    #[arg(
        id = "opensearch_password",
        value_name = "OPENSEARCH_PASSWORD",
        long = "opensearch-password",
        env = "OPENSEARCH_PASSWORD",
        global = true,
        hide_env_values = true
    )]
    pub password: Option<Secret>,
    /// PEM file of the CA(s) trusted for an https:// OpenSearch URL (the system's roots when
    /// unset).
    #[arg(
        id = "opensearch_ca_file",
        value_name = "OPENSEARCH_CA_FILE",
        long = "opensearch-ca-file",
        env = "OPENSEARCH_CA_FILE",
        global = true
    )]
    pub ca_file: Option<PathBuf>,
    /// DANGER: accept any OpenSearch certificate (no chain or hostname check). For a lab
    /// only; anyone on the path can then read and change the traffic.
    #[arg(
        id = "opensearch_danger_accept_invalid_certs",
        long = "opensearch-danger-accept-invalid-certs",
        env = "OPENSEARCH_DANGER_ACCEPT_INVALID_CERTS",
        global = true,
        default_value_t = false
    )]
    pub danger_accept_invalid_certs: bool,
    /// Replicas of each shard of a products index the binary creates (an existing index keeps
    /// its own).
    #[arg(
        id = "opensearch_index_replicas",
        value_name = "OPENSEARCH_INDEX_REPLICAS",
        long = "opensearch-index-replicas",
        env = "OPENSEARCH_INDEX_REPLICAS",
        global = true,
        default_value_t = 0
    )]
    pub index_replicas: u32,
    /// Primary shards of a products index the binary creates (an existing index keeps its
    /// own; a rebuild creates its new index with this many).
    #[arg(
        id = "opensearch_index_shards",
        value_name = "OPENSEARCH_INDEX_SHARDS",
        long = "opensearch-index-shards",
        env = "OPENSEARCH_INDEX_SHARDS",
        global = true,
        default_value_t = 1,
        value_parser = clap::value_parser!(u32).range(1..=1024)
    )]
    pub index_shards: u32,
    /// How often a products index the binary creates makes writes searchable, in ms (the
    /// freshness of search against indexing throughput; an existing index keeps its own).
    #[arg(
        id = "opensearch_refresh_interval_ms",
        value_name = "OPENSEARCH_REFRESH_INTERVAL_MS",
        long = "opensearch-refresh-interval-ms",
        env = "OPENSEARCH_REFRESH_INTERVAL_MS",
        global = true,
        default_value_t = 1000,
        value_parser = clap::value_parser!(u64).range(1..=3_600_000)
    )]
    pub refresh_interval_ms: u64,
}

impl Default for OpenSearchSettings {
    /// The values a command line without these flags and variables gets.
    fn default() -> Self {
        Self {
            url: SecretUrl::new(DEFAULT_OPENSEARCH_URL),
            username: None,
            password: None,
            ca_file: None,
            danger_accept_invalid_certs: false,
            index_replicas: 0,
            index_shards: 1,
            refresh_interval_ms: 1000,
        }
    }
}

impl OpenSearchSettings {
    /// Checks every node URL's shape, and that a password comes with a user name.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for url in self.url.expose().split(',').map(str::trim) {
            check_url("OPENSEARCH_URL", url, &["http", "https"])?;
        }
        if self.password.is_some() && self.username.is_none() {
            return Err(ConfigError::new(
                "OPENSEARCH_USERNAME",
                "OPENSEARCH_PASSWORD is set without a user name",
            ));
        }
        Ok(())
    }
}
