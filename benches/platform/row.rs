//! The report's row: one value type and its builder, and the statistics each row is made of.

/// One line of the report. `ours` and `baseline` are medians of interleaved runs; the
/// ranges are their min and max. `verified` says what was counted to check the work was done.
#[derive(serde::Serialize, Default, Clone)]
pub(super) struct Row {
    pub(super) what: String,
    pub(super) ours: f64,
    pub(super) ours_range: (f64, f64),
    pub(super) unit: &'static str,
    pub(super) baseline_name: String,
    pub(super) baseline: f64,
    pub(super) baseline_range: (f64, f64),
    pub(super) goal: &'static str,
    /// Failed requests / operations over all runs (both sides).
    pub(super) errors: u64,
    pub(super) verified: String,
    /// The per-sample values the figure was taken from (the freshness rows: every write's due
    /// -> searchable latency in ms, all runs), for the pictures (charts.rs); not in report.json.
    #[serde(skip)]
    pub(super) samples: Vec<f64>,
}

impl Row {
    /// A row measuring `what` in `unit`; the other fields are set by the methods below
    /// (errors default to 0).
    pub(super) fn new(what: impl Into<String>, unit: &'static str) -> Self {
        Row {
            what: what.into(),
            unit,
            ..Default::default()
        }
    }

    /// Our figure: median and (min, max).
    pub(super) fn ours(mut self, median: f64, range: (f64, f64)) -> Self {
        self.ours = median;
        self.ours_range = range;
        self
    }

    /// The baseline's name, median and (min, max).
    pub(super) fn baseline(mut self, name: impl Into<String>, median: f64, range: (f64, f64)) -> Self {
        self.baseline_name = name.into();
        self.baseline = median;
        self.baseline_range = range;
        self
    }

    /// The goal the ratio (or the figure) is held to.
    pub(super) fn goal(mut self, goal: &'static str) -> Self {
        self.goal = goal;
        self
    }

    /// Failed requests / operations over all runs (both sides).
    pub(super) fn errors(mut self, errors: u64) -> Self {
        self.errors = errors;
        self
    }

    /// What was counted to check the work was done.
    pub(super) fn verified(mut self, verified: impl Into<String>) -> Self {
        self.verified = verified.into();
        self
    }

    /// The per-sample values behind the figure, for the pictures (charts.rs).
    pub(super) fn samples(mut self, samples: Vec<f64>) -> Self {
        self.samples = samples;
        self
    }

    pub(super) fn ratio(&self) -> Option<f64> {
        (self.baseline > 0.0 && self.unit != "ms" && self.unit != "s").then(|| self.ours / self.baseline)
    }
}

/// Median, min and max of a few samples.
pub(super) fn summary(mut v: Vec<f64>) -> (f64, (f64, f64)) {
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return (0.0, (0.0, 0.0));
    }
    (v[v.len() / 2], (v[0], v[v.len() - 1]))
}

/// Quantile `q` (0..=1) of sorted samples.
pub(super) fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * q).round() as usize]
}
