//! Operator tools: replay (consumer-group offset moves), lag, DLQ inspection and redrive.
