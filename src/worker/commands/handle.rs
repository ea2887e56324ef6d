//! One command message: decode (malformed to the DLQ) → execute through the store (the same
//! aggregate and repository code as the API, retried by the failure policy) → reject (a
//! permanent refusal recorded for `GET /api/commands/{id}`).

use super::*;

impl Commands {
    /// Handles one message in a span of its own that continues the message's trace.
    pub(super) async fn handle_one(&self, msg: &OwnedMessage, shutdown: &Shutdown) -> CommandOutcome {
        // OpenTelemetry messaging conventions (see `bus::span`).
        let span = tracing::info_span!(
            "command",
            otel.name = %format_args!("process {}", msg.topic()),
            otel.kind = "consumer",
            messaging.system = crate::bus::span::MESSAGING_SYSTEM,
            messaging.operation.type = "process",
            messaging.destination.name = msg.topic(),
            messaging.kafka.destination.partition = msg.partition(),
            messaging.kafka.message.offset = msg.offset()
        );
        if let Some(tp) = crate::bus::consumer::header_str(msg, TRACEPARENT).and_then(TraceParent::parse) {
            crate::telemetry::trace_context::set_parent(&span, &tp);
        }
        tracing::Instrument::instrument(self.handle_in_span(msg, shutdown), span).await
    }

    pub(super) async fn handle_in_span(&self, msg: &OwnedMessage, shutdown: &Shutdown) -> CommandOutcome {
        let s = match self.decode(msg) {
            Ok(s) => s,
            Err(reason) => {
                tracing::warn!(kafka.partition = msg.partition(), kafka.offset = msg.offset(), error = %reason.message,
                    "malformed command sent to the DLQ");
                return self.dead_letter(msg, &reason, shutdown).await;
            }
        };
        let executed = match &s.nul_at {
            Some(path) => Err(Failed::Permanent(StoreError::Domain(
                crate::domain::product::DomainError::Invalid {
                    field: "payload",
                    reason: format!("{path} must not contain the NUL character (U+0000)"),
                },
            ))),
            None => {
                self.retry
                    .run(shutdown.token(), "command", || async {
                        let mut conn = pool::get(&self.pool).await?;
                        crate::app::execute::run_command(&mut conn, s.product_id, &s.command, &s.opts).await
                    })
                    .await
            }
        };
        let outcome = match executed {
            Ok(ExecuteOutcome::Applied(a)) => CommandOutcome::Applied(a.0.version),
            Ok(ExecuteOutcome::Rejected(rule)) => CommandOutcome::Rejected(rule.to_string()),
            Ok(ExecuteOutcome::Duplicate { .. }) => CommandOutcome::Duplicate,
            Err(Failed::Permanent(e)) => self.reject(msg, &s, &e, shutdown).await,
            Err(Failed::Exhausted(e)) => {
                tracing::warn!(command.id = %s.command_id, error = %e, "command unfinished; will be delivered again");
                CommandOutcome::Unfinished
            }
            Err(Failed::Cancelled) => CommandOutcome::Unfinished,
        };
        let label = match &outcome {
            CommandOutcome::Applied(v) => {
                tracing::info!(command.id = %s.command_id, product.id = %s.product_id, product.version = v,
                    command.r#type = s.command.command_type(), "command applied");
                "applied"
            }
            CommandOutcome::Rejected(r) => {
                tracing::info!(command.id = %s.command_id, product.id = %s.product_id, reason = %r, "command rejected");
                "rejected"
            }
            CommandOutcome::Duplicate => {
                tracing::info!(command.id = %s.command_id, "command already processed; skipping");
                "duplicate"
            }
            CommandOutcome::DeadLettered(_) => "dead_lettered",
            CommandOutcome::Unfinished => "unfinished",
        };
        COMMANDS_PROCESSED.with_label_values(&[label]).inc();
        outcome
    }

    pub(super) fn decode(&self, msg: &OwnedMessage) -> Result<Submitted, DlqReason> {
        let (env, mut command) = decode_command(msg.payload()).map_err(|e| DlqReason {
            stage: "decode",
            class: e.class,
            message: e.message,
            attempts: 1,
        })?;
        let command_id = env.command_id.ok_or_else(|| DlqReason {
            stage: "decode",
            class: "invalid_envelope",
            message: "missing field `command_id`".into(),
            attempts: 1,
        })?;
        // A command that names its caller reaches only what that caller may change; one that
        // names none comes from a trusted producer (the topic's ACLs decide who may write).
        let scope = env.caller.as_ref().map_or(Scope::Any, |c| Principal::from(c).scope());
        scope.stamp_owner(&mut command);
        let nul_at = env
            .payload
            .as_ref()
            .and_then(|p| crate::schema::text::first_nul(p, "payload"));
        Ok(Submitted {
            nul_at,
            command_id,
            product_id: env.product_id,
            command,
            opts: ExecuteOptions {
                command_id: Some(command_id),
                correlation_id: env.correlation_id,
                // The command's trace continues into its event.
                traceparent: crate::bus::consumer::header_str(msg, TRACEPARENT)
                    .map(|tp| TraceParent::continue_or_start(Some(tp)).to_string()),
                expected_version: env.expected_version,
                // The caller's subject, else the channel.
                actor: Some(
                    env.caller
                        .as_ref()
                        .map_or_else(|| format!("topic:{}", msg.topic()), |c| c.subject.clone()),
                ),
                events_topic: self.events_topic.clone(),
                notify: self.notify,
                // A command names its product id; it may exist already.
                fresh_id: false,
                scope,
            },
        })
    }

    /// A command the store refused for good. Conflicts are refusals in their own right; any
    /// other permanent store error is first checked against a working database (so a broken
    /// connection is never taken for a bad command), then recorded as a rejection.
    pub(super) async fn reject(
        &self,
        msg: &OwnedMessage,
        s: &Submitted,
        err: &StoreError,
        shutdown: &Shutdown,
    ) -> CommandOutcome {
        let reason = match err {
            StoreError::VersionConflict { .. } | StoreError::SkuTaken(_) | StoreError::Domain(_) => err.to_string(),
            other => {
                let healthy = self
                    .retry
                    .run(shutdown.token(), "database check", || async {
                        let mut conn = pool::get(&self.pool).await?;
                        pool::ping(&mut conn).await
                    })
                    .await;
                if healthy.is_err() {
                    return CommandOutcome::Unfinished;
                }
                tracing::warn!(command.id = %s.command_id, error = %other, "the database refuses this command; rejecting it");
                format!("the command could not be stored: {other}")
            }
        };
        let recorded = self
            .retry
            .run(shutdown.token(), "record rejection", || async {
                let mut conn = pool::get(&self.pool).await?;
                product_repo::record_rejection(&mut conn, s.command_id, s.product_id, s.command.command_type(), &reason)
                    .await
            })
            .await;
        match recorded {
            Ok(()) => CommandOutcome::Rejected(reason),
            Err(Failed::Permanent(e)) => {
                let dlq = DlqReason {
                    stage: "store",
                    class: "store_refused",
                    message: format!("{reason}; recording the rejection failed too: {e}"),
                    attempts: 1,
                };
                self.dead_letter(msg, &dlq, shutdown).await
            }
            Err(Failed::Exhausted(_) | Failed::Cancelled) => CommandOutcome::Unfinished,
        }
    }

    pub(super) async fn dead_letter(
        &self,
        msg: &OwnedMessage,
        reason: &DlqReason,
        shutdown: &Shutdown,
    ) -> CommandOutcome {
        match self
            .retry
            .run(shutdown.token(), "DLQ write", || self.dlq.send(msg, reason))
            .await
        {
            Ok(()) => {
                COMMANDS_PROCESSED.with_label_values(&["dead_lettered"]).inc();
                CommandOutcome::DeadLettered(reason.class)
            }
            Err(e) => {
                tracing::warn!(kafka.partition = msg.partition(), kafka.offset = msg.offset(), error = %e,
                    "could not dead-letter; message unfinished");
                CommandOutcome::Unfinished
            }
        }
    }
}
