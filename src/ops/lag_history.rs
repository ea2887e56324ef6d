//! Consumer-group lag and throughput over the last minutes, for the console's live chart.
//!
//! A [`Sample`] is every group's `describe` rows (committed offset, log end, lag per
//! partition, from [`groups::describe`]) at one instant. [`LagHistory`] keeps samples for
//! [`KEEP`] and derives from consecutive ones what no single sample shows: messages consumed
//! and produced per second, and the Burrow-style verdict of [`status::verdict`]. Samples are
//! taken on demand ([`refresh`]), at most one per [`MIN_INTERVAL`] however many callers ask,
//! so an API that nobody watches makes no Kafka calls; the history therefore starts when the
//! first caller looks, and a gap in the watching is a gap in the series. A group Kafka cannot
//! describe is reported with its error; it never fails the sample.

use chrono::{DateTime, Utc};
use std::collections::VecDeque;
use std::time::Duration;

use super::groups::{self, DescribeRow};
use super::status::{self, SAMPLE_GAP};
use crate::bus::catch_up::GroupCatchUp;
use crate::bus::KafkaConnection;

/// How long samples are kept.
pub const KEEP: Duration = Duration::from_secs(10 * 60);
/// Fewest seconds between two samples; callers in between get the latest one.
pub const MIN_INTERVAL: Duration = Duration::from_secs(2);
/// A latest sample older than this is no baseline for a verdict: a fresh pair is taken.
pub const STALE_AFTER: Duration = Duration::from_secs(30);

/// One group's rows at one instant.
#[derive(Debug, Clone)]
pub struct GroupSample {
    /// Group.
    pub group: String,
    /// Topic.
    pub topic: String,
    /// Broker-reported state (Stable, Empty, ...).
    pub state: String,
    /// Active members.
    pub members: usize,
    /// One row per partition (none when the group has neither offsets nor owners).
    pub rows: Vec<DescribeRow>,
    /// Why the group could not be described.
    pub error: Option<String>,
}

impl GroupSample {
    fn lag(&self) -> i64 {
        self.rows.iter().map(|r| r.lag).sum()
    }

    /// Committed offsets summed (the log start where nothing is committed).
    fn consumed(&self) -> i64 {
        self.rows.iter().map(|r| r.current.unwrap_or(r.log_start)).sum()
    }

    fn produced(&self) -> i64 {
        self.rows.iter().map(|r| r.log_end).sum()
    }
}

/// Every group at one instant.
#[derive(Debug, Clone)]
pub struct Sample {
    /// When it was taken.
    pub at: DateTime<Utc>,
    /// One entry per (group, topic) asked for, in that order.
    pub groups: Vec<GroupSample>,
}

/// Describes each (group, topic) once. Blocking (librdkafka); run it off the async runtime.
pub fn sample(kafka: &KafkaConnection, pairs: &[(String, String)]) -> Sample {
    let groups = pairs
        .iter()
        .map(
            |(group, topic)| match groups::describe(kafka, group, std::slice::from_ref(topic)) {
                Ok((info, rows)) => GroupSample {
                    group: group.clone(),
                    topic: topic.clone(),
                    state: info.state,
                    members: info.members.len(),
                    rows,
                    error: None,
                },
                Err(e) => GroupSample {
                    group: group.clone(),
                    topic: topic.clone(),
                    state: String::new(),
                    members: 0,
                    rows: Vec::new(),
                    error: Some(e.to_string()),
                },
            },
        )
        .collect();
    Sample { at: Utc::now(), groups }
}

/// One group now: its partitions, total lag and verdict.
#[derive(Debug, Clone, serde::Serialize)]
pub struct GroupLag {
    /// Group.
    pub group: String,
    /// Topic.
    pub topic: String,
    /// Broker-reported state.
    pub state: String,
    /// Active members.
    pub members: usize,
    /// Total lag (messages).
    pub lag: i64,
    /// OK, WARN, STALL, STOP or REWIND (see [`status::verdict`]); ERROR when not described.
    pub verdict: String,
    /// Per partition: committed offset, log end, lag and owner.
    pub partitions: Vec<DescribeRow>,
    /// When the group will have caught up (per partition too), against the baseline sample;
    /// `None` without one.
    pub catch_up: Option<GroupCatchUp>,
    /// Why the group could not be described.
    pub error: Option<String>,
}

/// One group's series over the kept samples (aligned with [`History::at`]).
#[derive(Debug, Clone, serde::Serialize)]
pub struct GroupSeries {
    /// Group.
    pub group: String,
    /// Total lag per sample (None where the group could not be described).
    pub lag: Vec<Option<i64>>,
    /// Messages committed per second since the previous sample (None for the first).
    pub consumed_per_sec: Vec<Option<f64>>,
    /// Messages appended to the topic per second since the previous sample.
    pub produced_per_sec: Vec<Option<f64>>,
}

/// Columns for a chart: one time axis, one series per group.
#[derive(Debug, Clone, serde::Serialize)]
pub struct History {
    /// Sample times, Unix seconds (fractional).
    pub at: Vec<f64>,
    /// One per group.
    pub series: Vec<GroupSeries>,
}

/// What the console shows: every group now, and the history behind it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LagView {
    /// When the latest sample was taken.
    pub sampled_at: Option<DateTime<Utc>>,
    /// Every group, from the latest sample.
    pub groups: Vec<GroupLag>,
    /// The kept samples as columns.
    pub history: History,
}

/// Samples of the last [`KEEP`], oldest first.
#[derive(Debug, Default)]
pub struct LagHistory {
    samples: VecDeque<Sample>,
}

impl LagHistory {
    /// Adds `s` and forgets samples older than [`KEEP`] before it.
    pub fn push(&mut self, s: Sample) {
        let horizon = s.at - chrono::Duration::from_std(KEEP).unwrap_or_default();
        self.samples.push_back(s);
        while self.samples.front().is_some_and(|f| f.at < horizon) {
            self.samples.pop_front();
        }
    }

    fn age(&self, now: DateTime<Utc>) -> Option<Duration> {
        self.samples.back().map(|s| (now - s.at).to_std().unwrap_or_default())
    }

    /// Whether a new sample is due at `now`.
    pub fn due(&self, now: DateTime<Utc>) -> bool {
        self.age(now).is_none_or(|a| a >= MIN_INTERVAL)
    }

    /// Whether the next sample needs a baseline taken [`SAMPLE_GAP`] before it (nothing
    /// recent to compare with).
    pub fn needs_baseline(&self, now: DateTime<Utc>) -> bool {
        self.age(now).is_none_or(|a| a >= STALE_AFTER)
    }

    /// Every group from the latest sample, each with its verdict against the newest sample at
    /// least [`SAMPLE_GAP`] older (within [`STALE_AFTER`]).
    pub fn view(&self) -> LagView {
        let Some(latest) = self.samples.back() else {
            return LagView {
                sampled_at: None,
                groups: Vec::new(),
                history: History {
                    at: Vec::new(),
                    series: Vec::new(),
                },
            };
        };
        let gap = chrono::Duration::from_std(SAMPLE_GAP).unwrap_or_default();
        let stale = chrono::Duration::from_std(STALE_AFTER).unwrap_or_default();
        let before = self
            .samples
            .iter()
            .rev()
            .find(|s| s.at <= latest.at - gap && s.at >= latest.at - stale);
        let groups = latest
            .groups
            .iter()
            .enumerate()
            .map(|(i, g)| {
                let baseline = before
                    .and_then(|b| b.groups.get(i).map(|bg| (b.at, bg)))
                    .filter(|(_, bg)| bg.error.is_none() && g.error.is_none());
                let verdict = match (&g.error, baseline) {
                    (Some(_), _) => "ERROR".to_owned(),
                    (None, Some((_, b))) => status::verdict(&b.rows, &g.rows, g.members).to_owned(),
                    // No baseline: only what one sample can tell.
                    (None, _) => status::verdict(&g.rows, &g.rows, g.members).to_owned(),
                };
                let catch_up = baseline
                    .map(|(at, b)| status::catch_up(&b.rows, &g.rows, (latest.at - at).to_std().unwrap_or_default()));
                GroupLag {
                    group: g.group.clone(),
                    topic: g.topic.clone(),
                    state: g.state.clone(),
                    members: g.members,
                    lag: g.lag(),
                    verdict,
                    partitions: g.rows.clone(),
                    catch_up,
                    error: g.error.clone(),
                }
            })
            .collect();
        LagView {
            sampled_at: Some(latest.at),
            groups,
            history: self.history(),
        }
    }

    fn history(&self) -> History {
        let at = self
            .samples
            .iter()
            .map(|s| s.at.timestamp_millis() as f64 / 1000.0)
            .collect();
        let names = self.samples.back().map(|s| s.groups.as_slice()).unwrap_or_default();
        let series = names
            .iter()
            .enumerate()
            .map(|(i, g)| {
                let points: Vec<Option<&GroupSample>> = self
                    .samples
                    .iter()
                    .map(|s| s.groups.get(i).filter(|x| x.group == g.group && x.error.is_none()))
                    .collect();
                let rate = |f: fn(&GroupSample) -> i64| -> Vec<Option<f64>> {
                    std::iter::once(None)
                        .chain(
                            self.samples
                                .iter()
                                .zip(self.samples.iter().skip(1))
                                .zip(points.windows(2))
                                .map(|((a, b), w)| {
                                    let secs = (b.at - a.at).num_milliseconds() as f64 / 1000.0;
                                    match (w[0], w[1]) {
                                        // A rewind or a recreated topic is no negative throughput.
                                        (Some(x), Some(y)) if secs > 0.0 => Some(((f(y) - f(x)).max(0) as f64) / secs),
                                        _ => None,
                                    }
                                }),
                        )
                        .collect()
                };
                GroupSeries {
                    group: g.group.clone(),
                    lag: points.iter().map(|p| p.map(GroupSample::lag)).collect(),
                    consumed_per_sec: rate(GroupSample::consumed),
                    produced_per_sec: rate(GroupSample::produced),
                }
            })
            .collect();
        History { at, series }
    }
}

/// The current view, sampling first when a sample is due (and a baseline [`SAMPLE_GAP`]
/// before it when there is nothing recent). Callers arriving while a sample is taken wait
/// for it and share it.
pub async fn refresh(
    history: &tokio::sync::Mutex<LagHistory>,
    kafka: &KafkaConnection,
    pairs: &[(String, String)],
) -> LagView {
    let mut h = history.lock().await;
    let now = Utc::now();
    if h.due(now) {
        let take = || {
            let (k, p) = (kafka.clone(), pairs.to_vec());
            async move { tokio::task::spawn_blocking(move || sample(&k, &p)).await }
        };
        if h.needs_baseline(now) {
            if let Ok(s) = take().await {
                h.push(s);
            }
            tokio::time::sleep(SAMPLE_GAP).await;
        }
        if let Ok(s) = take().await {
            h.push(s);
        }
    }
    h.view()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(partition: i32, current: i64, log_end: i64) -> DescribeRow {
        DescribeRow {
            group: "g".into(),
            topic: "t".into(),
            partition,
            current: Some(current),
            log_start: 0,
            log_end,
            lag: log_end - current,
            consumer_id: None,
            host: None,
            client_id: None,
        }
    }

    fn at(secs: i64, members: usize, rows: Vec<DescribeRow>) -> Sample {
        Sample {
            at: DateTime::from_timestamp(1_800_000_000 + secs, 0).expect("time"),
            groups: vec![GroupSample {
                group: "g".into(),
                topic: "t".into(),
                state: "Stable".into(),
                members,
                rows,
                error: None,
            }],
        }
    }

    #[test]
    fn throughput_is_the_offset_change_per_second_between_samples() {
        let mut h = LagHistory::default();
        h.push(at(0, 1, vec![row(0, 10, 100), row(1, 0, 50)]));
        h.push(at(2, 1, vec![row(0, 30, 110), row(1, 20, 60)]));
        let v = h.view();
        let s = &v.history.series[0];
        assert_eq!(v.history.at.len(), 2);
        assert_eq!(s.lag, vec![Some(140), Some(120)]);
        assert_eq!(s.consumed_per_sec, vec![None, Some(20.0)]);
        assert_eq!(s.produced_per_sec, vec![None, Some(10.0)]);
        assert_eq!(v.groups[0].verdict, "WARN", "behind but moving");
        assert_eq!(v.groups[0].partitions.len(), 2);
    }

    #[test]
    fn a_rewind_is_no_negative_throughput_and_is_called_rewind() {
        let mut h = LagHistory::default();
        h.push(at(0, 0, vec![row(0, 50, 100)]));
        h.push(at(2, 0, vec![row(0, 0, 100)]));
        let v = h.view();
        assert_eq!(v.history.series[0].consumed_per_sec, vec![None, Some(0.0)]);
        assert_eq!(v.groups[0].verdict, "REWIND");
    }

    #[test]
    fn samples_older_than_the_window_are_forgotten_and_sampling_is_spaced() {
        let mut h = LagHistory::default();
        h.push(at(0, 1, vec![row(0, 1, 1)]));
        h.push(at(KEEP.as_secs() as i64 + 1, 1, vec![row(0, 1, 1)]));
        assert_eq!(h.view().history.at.len(), 1);
        let last = h.samples.back().expect("sample").at;
        assert!(!h.due(last + chrono::Duration::seconds(1)));
        assert!(h.due(last + chrono::Duration::seconds(2)));
        assert!(!h.needs_baseline(last + chrono::Duration::seconds(5)));
        assert!(h.needs_baseline(last + chrono::Duration::seconds(31)));
    }

    #[test]
    fn a_group_kafka_cannot_describe_is_an_error_not_a_zero() {
        let mut h = LagHistory::default();
        let mut s = at(0, 0, Vec::new());
        s.groups[0].error = Some("kafka: broker down".into());
        h.push(s);
        let v = h.view();
        assert_eq!(v.groups[0].verdict, "ERROR");
        assert_eq!(v.history.series[0].lag, vec![None]);
    }
}
