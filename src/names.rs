//! Every topic, consumer group, index and Redis key prefix, in one place, and [`Names`],
//! which resolves them under a namespace (`ALIEXPRESS_NAMESPACE`, see `config`). With an
//! empty namespace they are exactly the operations guide's names.
//!
//! A leaf: it imports nothing of the crate, so the adapters and `config` alike can use it.
//! Wire constants that only one adapter speaks live in that adapter (Kafka header names and
//! the outbox NOTIFY channel in `store::outbox_repo`).

/// Commands for the write side.
pub const PRODUCT_COMMANDS_TOPIC: &str = "product.commands";
/// Product events (published from the outbox).
pub const PRODUCT_EVENTS_TOPIC: &str = "product.events";
/// Commands the write side could not decode.
pub const DLQ_PRODUCT_COMMANDS_TOPIC: &str = "dlq.product.commands";
/// Events the projection could not use.
pub const DLQ_PRODUCT_EVENTS_TOPIC: &str = "dlq.product.events";
/// Consumer group of `run-product-consumer`.
pub const PRODUCT_COMMAND_GROUP: &str = "product-command-consumer-group";
/// Consumer group of `run-product-event-consumer`.
pub const PRODUCT_PROJECTION_GROUP: &str = "product-event-projection-group";
/// Search alias queried by the API; points at `products_vN`.
pub const PRODUCTS_INDEX_ALIAS: &str = "products";
/// Redis key prefix of the product read model. It names the shape of what it holds (the
/// product JSON of event schema version 2): entries of an older shape are simply never read,
/// and expire, instead of being served in the old shape after an upgrade.
pub const REDIS_PRODUCT_PREFIX: &str = "product:v2:";

/// Names resolved under a namespace prefix.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Names {
    ns: String,
}

impl Names {
    /// Names under `namespace` (may be empty).
    pub fn new(namespace: &str) -> Self {
        Self {
            ns: namespace.to_owned(),
        }
    }
    fn prefixed(&self, s: &str) -> String {
        format!("{}{s}", self.ns)
    }
    /// `product.commands`.
    pub fn commands_topic(&self) -> String {
        self.prefixed(PRODUCT_COMMANDS_TOPIC)
    }
    /// `product.events`.
    pub fn events_topic(&self) -> String {
        self.prefixed(PRODUCT_EVENTS_TOPIC)
    }
    /// `dlq.product.commands`.
    pub fn commands_dlq_topic(&self) -> String {
        self.prefixed(DLQ_PRODUCT_COMMANDS_TOPIC)
    }
    /// `dlq.product.events`.
    pub fn events_dlq_topic(&self) -> String {
        self.prefixed(DLQ_PRODUCT_EVENTS_TOPIC)
    }
    /// `product-command-consumer-group`.
    pub fn command_group(&self) -> String {
        self.prefixed(PRODUCT_COMMAND_GROUP)
    }
    /// `product-event-projection-group`.
    pub fn projection_group(&self) -> String {
        self.prefixed(PRODUCT_PROJECTION_GROUP)
    }
    /// The search alias, `products`.
    pub fn index_alias(&self) -> String {
        self.prefixed(PRODUCTS_INDEX_ALIAS)
    }
    /// A concrete index behind the alias, `products_vN`.
    pub fn index_version(&self, n: u32) -> String {
        format!("{}_v{n}", self.index_alias())
    }
    /// The prefix of every cached product's key.
    pub fn product_cache_key_prefix(&self) -> String {
        format!("{}{REDIS_PRODUCT_PREFIX}", self.ns)
    }
    /// Redis key of a cached product.
    pub fn product_cache_key(&self, id: &uuid::Uuid) -> String {
        format!("{}{REDIS_PRODUCT_PREFIX}{id}", self.ns)
    }
    /// Every topic the platform uses, for creation and checks.
    pub fn all_topics(&self) -> Vec<String> {
        vec![
            self.commands_topic(),
            self.events_topic(),
            self.commands_dlq_topic(),
            self.events_dlq_topic(),
        ]
    }
}
