//! When will a consumer have caught up? From two observations of a partition (its committed
//! offset and lag, some seconds apart): the rate it consumed at, and the seconds until its lag
//! is zero at that rate. A group is done when its slowest partition is ([`group`]). Pure: the
//! callers bring the observations (the consumer roles' lag export for the metric, `status`,
//! `consumer-groups describe` and the console's lag history for the screens).

use serde::Serialize;

/// The trend words every screen uses.
pub const CAUGHT_UP: &str = "caught up";
/// Lag above zero and shrinking.
pub const CATCHING_UP: &str = "catching up";
/// Lag growing, or nothing consumed while there is lag.
pub const NOT_CATCHING_UP: &str = "not catching up";
/// Nothing committed where there is something to read, or no earlier observation.
pub const UNKNOWN: &str = "unknown";

/// One partition, observed twice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Observation {
    /// Committed offset then (`None`: nothing committed).
    pub committed_before: Option<i64>,
    /// Lag then.
    pub lag_before: i64,
    /// Committed offset now.
    pub committed_now: Option<i64>,
    /// Lag now.
    pub lag_now: i64,
}

/// A partition's catch-up.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PartitionCatchUp {
    /// Partition.
    pub partition: i32,
    /// Lag now; `None` when unknown (records and nothing committed), never a made-up 0.
    pub lag: Option<i64>,
    /// Records consumed per second between the observations.
    pub rate_per_sec: Option<f64>,
    /// Seconds until its lag is zero at the rate it drained (consumed less produced) between
    /// the observations (0 when caught up; `None` when unknown or not catching up).
    pub eta_secs: Option<f64>,
    /// One of the trend words.
    pub trend: &'static str,
}

/// A partition's catch-up from two observations `secs` apart.
pub fn partition(partition: i32, o: Observation, secs: f64) -> PartitionCatchUp {
    let mut out = PartitionCatchUp {
        partition,
        lag: o.committed_now.map(|_| o.lag_now),
        rate_per_sec: None,
        eta_secs: None,
        trend: UNKNOWN,
    };
    let Some(now) = o.committed_now else {
        if o.lag_now == 0 {
            out.lag = Some(0);
            out.eta_secs = Some(0.0);
            out.trend = CAUGHT_UP;
        }
        return out;
    };
    if o.lag_now == 0 {
        out.eta_secs = Some(0.0);
        out.trend = CAUGHT_UP;
        return out;
    }
    let Some(before) = o.committed_before.filter(|_| secs > 0.0) else {
        return out;
    };
    out.rate_per_sec = Some((now - before).max(0) as f64 / secs);
    // The lag drains at what is consumed less what is produced meanwhile.
    let drain = (o.lag_before - o.lag_now) as f64 / secs;
    if drain <= 0.0 {
        out.trend = NOT_CATCHING_UP;
    } else {
        out.trend = CATCHING_UP;
        out.eta_secs = Some(o.lag_now as f64 / drain);
    }
    out
}

/// A group's catch-up: its partitions, and the group as its slowest partition.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GroupCatchUp {
    /// Seconds until every partition has caught up; `None` when unknown or not catching up.
    pub eta_secs: Option<f64>,
    /// One of the trend words: the worst of the partitions'.
    pub trend: &'static str,
    /// The partition the ETA waits for (or the one not catching up).
    pub slowest_partition: Option<i32>,
    /// Every partition.
    pub partitions: Vec<PartitionCatchUp>,
}

/// The group from its partitions: unknown if any is, else not catching up if any is (the
/// first such partition named), else the largest ETA.
pub fn group(partitions: Vec<PartitionCatchUp>) -> GroupCatchUp {
    let worst = |t: &str| partitions.iter().find(|p| p.trend == t).map(|p| p.partition);
    let (trend, slowest, eta) = if let Some(p) = worst(UNKNOWN) {
        (UNKNOWN, Some(p), None)
    } else if let Some(p) = worst(NOT_CATCHING_UP) {
        (NOT_CATCHING_UP, Some(p), None)
    } else if let Some(p) = partitions
        .iter()
        .filter(|p| p.trend == CATCHING_UP)
        .max_by(|a, b| a.eta_secs.partial_cmp(&b.eta_secs).unwrap_or(std::cmp::Ordering::Equal))
    {
        (CATCHING_UP, Some(p.partition), p.eta_secs)
    } else {
        (CAUGHT_UP, None, Some(0.0))
    };
    GroupCatchUp {
        eta_secs: eta,
        trend,
        slowest_partition: slowest,
        partitions,
    }
}

/// An ETA for a screen: `-` when unknown, else rounded seconds, minutes or hours.
pub fn render_eta(eta: Option<f64>) -> String {
    match eta {
        None => "-".into(),
        Some(s) if s < 1.0 && s > 0.0 => "<1s".into(),
        Some(s) if s < 120.0 => format!("{:.0}s", s),
        Some(s) if s < 7200.0 => format!("{:.0}m", s / 60.0),
        Some(s) => format!("{:.1}h", s / 3600.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(cb: Option<i64>, lb: i64, cn: Option<i64>, ln: i64) -> Observation {
        Observation {
            committed_before: cb,
            lag_before: lb,
            committed_now: cn,
            lag_now: ln,
        }
    }

    #[test]
    fn a_partition_catching_up_has_an_eta_at_its_rate() {
        let p = partition(3, obs(Some(100), 500, Some(200), 400), 2.0);
        assert_eq!(p.trend, CATCHING_UP);
        assert_eq!(p.rate_per_sec, Some(50.0));
        assert_eq!(p.eta_secs, Some(8.0));
        assert_eq!(p.lag, Some(400));
    }

    #[test]
    fn growing_or_stuck_lag_is_not_catching_up_and_unknown_lag_is_never_zero() {
        assert_eq!(
            partition(0, obs(Some(100), 5, Some(110), 9), 1.0).trend,
            NOT_CATCHING_UP
        );
        assert_eq!(
            partition(0, obs(Some(100), 5, Some(100), 5), 1.0).trend,
            NOT_CATCHING_UP
        );
        let u = partition(0, obs(None, 5, None, 5), 1.0);
        assert_eq!((u.trend, u.lag, u.eta_secs), (UNKNOWN, None, None));
        // No earlier observation: unknown rate, the lag itself known.
        let first = partition(0, obs(None, 0, Some(10), 5), 1.0);
        assert_eq!((first.trend, first.lag), (UNKNOWN, Some(5)));
        let done = partition(0, obs(Some(1), 1, Some(2), 0), 1.0);
        assert_eq!((done.trend, done.eta_secs), (CAUGHT_UP, Some(0.0)));
    }

    #[test]
    fn the_group_is_done_when_its_slowest_partition_is() {
        let g = group(vec![
            partition(0, obs(Some(0), 100, Some(50), 50), 1.0),
            partition(1, obs(Some(0), 100, Some(10), 90), 1.0),
            partition(2, obs(Some(5), 0, Some(5), 0), 1.0),
        ]);
        assert_eq!(
            (g.trend, g.slowest_partition, g.eta_secs),
            (CATCHING_UP, Some(1), Some(9.0))
        );
        let stuck = group(vec![
            partition(0, obs(Some(0), 100, Some(50), 50), 1.0),
            partition(1, obs(Some(0), 100, Some(0), 120), 1.0),
        ]);
        assert_eq!(
            (stuck.trend, stuck.slowest_partition, stuck.eta_secs),
            (NOT_CATCHING_UP, Some(1), None)
        );
        assert_eq!(group(vec![]).trend, CAUGHT_UP);
    }

    #[test]
    fn etas_render_for_people() {
        assert_eq!(render_eta(None), "-");
        assert_eq!(render_eta(Some(0.0)), "0s");
        assert_eq!(render_eta(Some(40.2)), "40s");
        assert_eq!(render_eta(Some(600.0)), "10m");
        assert_eq!(render_eta(Some(9000.0)), "2.5h");
    }
}
