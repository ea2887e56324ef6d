//! Test support: a `tracing` layer that records every span's name and fields (values as text,
//! including those recorded later), to check span conventions in unit tests.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::Layer;

/// A span's fields by name.
pub type Fields = HashMap<String, String>;

/// Spans in creation order: (id, name, fields).
type Spans = Vec<(u64, String, Fields)>;

/// The recording layer; clones share what was recorded.
#[derive(Clone, Default)]
pub struct SpanRecorder(Arc<Mutex<Spans>>);

struct Visitor<'a>(&'a mut Fields);

impl Visit for Visitor<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

impl<S: tracing::Subscriber> Layer<S> for SpanRecorder {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, _: Context<'_, S>) {
        let mut fields = Fields::new();
        attrs.record(&mut Visitor(&mut fields));
        let name = attrs.metadata().name().to_owned();
        self.0.lock().expect("lock").push((id.into_u64(), name, fields));
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, _: Context<'_, S>) {
        let mut spans = self.0.lock().expect("lock");
        if let Some((_, _, fields)) = spans.iter_mut().rev().find(|(i, _, _)| *i == id.into_u64()) {
            values.record(&mut Visitor(fields));
        }
    }
}

impl SpanRecorder {
    /// Records the spans of this thread until the guard is dropped.
    pub fn install(&self) -> tracing::subscriber::DefaultGuard {
        tracing::subscriber::set_default(tracing_subscriber::registry().with(self.clone()))
    }

    /// The fields of every span named `name`, in creation order.
    pub fn named(&self, name: &str) -> Vec<Fields> {
        self.0
            .lock()
            .expect("lock")
            .iter()
            .filter(|(_, n, _)| n == name)
            .map(|(_, _, f)| f.clone())
            .collect()
    }
}
