//! Every topic, consumer group, index and Redis key prefix, in one place. With an empty
//! namespace they are exactly the operations guide's names.

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
/// Redis key prefix of the product read model.
pub const REDIS_PRODUCT_PREFIX: &str = "product:";
/// Postgres NOTIFY channel that wakes the outbox relay.
pub const OUTBOX_NOTIFY_CHANNEL: &str = "aliexpress_outbox";

/// Kafka header names on every product event message (see docs/EVENTS.md).
pub mod event_headers {
    /// Event id (UUID).
    pub const EVENT_ID: &str = "event_id";
    /// Event type, e.g. ProductCreated.
    pub const EVENT_TYPE: &str = "event_type";
    /// Schema version of the envelope.
    pub const SCHEMA_VERSION: &str = "schema_version";
    /// Product version after the event.
    pub const AGGREGATE_VERSION: &str = "aggregate_version";
    /// Correlation id of the flow.
    pub const CORRELATION_ID: &str = "correlation_id";
}

/// Kafka header names on every command message (see docs/EVENTS.md).
pub mod command_headers {
    /// Command id (UUID), the idempotency key of the write side.
    pub const COMMAND_ID: &str = "command_id";
    /// Command type, e.g. ChangePrice.
    pub const COMMAND_TYPE: &str = "command_type";
}

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
