//! The relay's lease on its share of the outbox: the claim connection, which holds one
//! advisory lock per owned slice (`store::outbox_slices`), and the slices taken from a lost
//! owner that may not be produced for before the takeover grace is over.
//!
//! [`SliceLease::rebalance`] aims at `ceil(slices / live relays)`: it lets go of extras (once
//! the batch in flight is marked, so nothing of a slice is in flight when another relay takes
//! it) and takes free slices. A slice taken from an owner that did not let go cleanly is
//! fenced for the grace, unless that owner's process is known to be gone (same host, same pid
//! namespace, no such pid). Losing the session loses every slice with it ([`SliceLease::lose`]).

use diesel_async::AsyncPgConnection;
use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};
use uuid::Uuid;

use crate::store::outbox_marker::OutboxMarker;
use crate::store::outbox_slices::{self, Takeover, OUTBOX_SLICES};
use crate::store::{outbox_repo, pool, StoreError};
use crate::telemetry::metrics::{OUTBOX_SLICES_OWNED, OUTBOX_SLICE_TAKEOVERS};

/// The claim connection and the slices whose locks it holds.
pub(super) struct SliceLease {
    database_url: String,
    /// Name in `outbox_slice_owners` and in logs: host, pid namespace, pid, random suffix.
    owner: String,
    /// Wait before producing for a slice taken from a lost owner.
    grace: Duration,
    /// Holds the membership lock and the slice locks; claims and marks run on it.
    conn: Option<AsyncPgConnection>,
    /// Slices owned (their locks are held on `conn`).
    owned: BTreeSet<i16>,
    /// Slices taken from a lost owner: no producing for them before this instant.
    fenced_until: HashMap<i16, Instant>,
    last_rebalance: Option<Instant>,
    /// The owned slices, for observers (tests, status).
    owned_tx: tokio::sync::watch::Sender<Vec<i16>>,
}

impl SliceLease {
    /// A lease that has not joined yet.
    pub(super) fn new(database_url: String, grace: Duration) -> Self {
        let owner = format!(
            "{}:{}:{}:{}",
            host_name(),
            pid_namespace(),
            std::process::id(),
            &Uuid::new_v4().simple().to_string()[..6]
        );
        Self {
            database_url,
            owner,
            grace,
            conn: None,
            owned: BTreeSet::new(),
            fenced_until: HashMap::new(),
            last_rebalance: None,
            owned_tx: tokio::sync::watch::channel(Vec::new()).0,
        }
    }

    /// This relay's name.
    pub(super) fn owner(&self) -> &str {
        &self.owner
    }

    /// The claim connection, once joined.
    pub(super) fn conn(&mut self) -> Option<&mut AsyncPgConnection> {
        self.conn.as_mut()
    }

    /// Joined, with at least one slice.
    pub(super) fn is_active(&self) -> bool {
        self.conn.is_some() && !self.owned.is_empty()
    }

    /// Whether any slice is owned.
    pub(super) fn owns_any(&self) -> bool {
        !self.owned.is_empty()
    }

    /// The owned slices, as they change.
    pub(super) fn slices(&self) -> tokio::sync::watch::Receiver<Vec<i16>> {
        self.owned_tx.subscribe()
    }

    /// Whether `interval` has passed since the last rebalance (or there was none).
    pub(super) fn rebalance_due(&self, interval: Duration) -> bool {
        self.last_rebalance.is_none_or(|t| t.elapsed() >= interval)
    }

    /// How long until every owned slice may be produced for; `None` when none waits.
    pub(super) fn fenced_for(&self) -> Option<Duration> {
        let now = Instant::now();
        self.fenced_until.values().filter(|t| **t > now).max().map(|t| *t - now)
    }

    /// The slices to claim from now: owned and not waiting out a takeover grace (`None`
    /// when that is every slice).
    pub(super) fn producible(&mut self) -> Option<Vec<i16>> {
        let now = Instant::now();
        self.fenced_until.retain(|_, t| *t > now);
        if self.fenced_until.is_empty() && self.owned.len() == OUTBOX_SLICES as usize {
            return None;
        }
        Some(
            self.owned
                .iter()
                .filter(|s| !self.fenced_until.contains_key(s))
                .copied()
                .collect(),
        )
    }

    /// Forgets the connection and every slice with it (their locks ended with the session,
    /// or will when the connection drops).
    pub(super) fn lose(&mut self) {
        if self.conn.take().is_some() && !self.owned.is_empty() {
            tracing::warn!(relay = %self.owner, slices = self.owned.len(), "lost the Postgres session; no longer owns its slices");
        }
        self.owned.clear();
        self.fenced_until.clear();
        self.last_rebalance = None;
        self.publish();
    }

    fn publish(&self) {
        OUTBOX_SLICES_OWNED.set(self.owned.len() as i64);
        self.owned_tx.send_replace(self.owned.iter().copied().collect());
    }

    /// Joins if needed, then aims at `ceil(slices / live relays)` slices: lets go of extras
    /// (after `marker`'s mark in flight) and takes free ones.
    pub(super) async fn rebalance(&mut self, marker: &mut OutboxMarker) -> Result<(), StoreError> {
        if self.conn.is_none() {
            let mut conn = pool::connect(&self.database_url, Duration::from_secs(60)).await?;
            outbox_slices::join(&mut conn).await?;
            self.conn = Some(conn);
            self.owned.clear();
            self.fenced_until.clear();
        }
        self.last_rebalance = Some(Instant::now());
        let Some(conn) = self.conn.as_mut() else {
            return Ok(());
        };
        let relays = outbox_slices::live_relays(conn).await?.max(1);
        let target = usize::try_from((i64::from(OUTBOX_SLICES) + relays - 1) / relays).unwrap_or(1);
        let (taken, released) = if self.owned.len() > target {
            // Nothing of a slice may be in flight when another relay takes it.
            marker.flush().await?;
            (Vec::new(), self.release_extras(target).await?)
        } else if self.owned.len() < target {
            (self.take_free(target).await?, Vec::new())
        } else {
            (Vec::new(), Vec::new())
        };
        if !taken.is_empty() && taken.len() == self.owned.len() {
            tracing::info!(relay = %self.owner, relays, "outbox relay is active (owns {} of {OUTBOX_SLICES} slices)", self.owned.len());
        }
        if !taken.is_empty() || !released.is_empty() {
            let fenced = taken.iter().filter(|s| self.fenced_until.contains_key(s)).count();
            tracing::info!(
                relay = %self.owner,
                relays,
                owned = self.owned.len(),
                taken = %ranges(&taken),
                released = %ranges(&released),
                waiting_out_grace = fenced,
                "outbox slices rebalanced"
            );
            self.publish();
        }
        Ok(())
    }

    /// Lets go of the highest owned slices until `target` are left.
    async fn release_extras(&mut self, target: usize) -> Result<Vec<i16>, StoreError> {
        let extras: Vec<i16> = self
            .owned
            .iter()
            .rev()
            .take(self.owned.len() - target)
            .copied()
            .collect();
        let Some(conn) = self.conn.as_mut() else {
            return Ok(Vec::new());
        };
        for slice in &extras {
            // Observers see it go before another relay can take it.
            self.owned.remove(slice);
            self.fenced_until.remove(slice);
            self.owned_tx.send_replace(self.owned.iter().copied().collect());
            outbox_slices::release(conn, *slice).await?;
        }
        Ok(extras)
    }

    /// Takes free slices until `target` are owned.
    async fn take_free(&mut self, target: usize) -> Result<Vec<i16>, StoreError> {
        let Some(conn) = self.conn.as_mut() else {
            return Ok(Vec::new());
        };
        let held = outbox_slices::held(conn).await?;
        let mut taken = Vec::new();
        for slice in (0..OUTBOX_SLICES).filter(|s| !held.contains(s)) {
            if self.owned.len() >= target {
                break;
            }
            if let Some(how) = outbox_slices::try_take(conn, slice, &self.owner).await? {
                took(&mut self.owned, &mut self.fenced_until, self.grace, slice, how);
                taken.push(slice);
            }
        }
        Ok(taken)
    }

    /// Takes every slice that no relay holds and that has rows publishable now, beyond this
    /// relay's share if need be; returns how many it took (see
    /// `OutboxRelay::take_unowned_publishable` for why a one-shot run does this). On a
    /// failure the mark in flight is awaited and the lease lost.
    pub(super) async fn take_unowned_publishable(&mut self, marker: &mut OutboxMarker) -> Result<usize, StoreError> {
        let taken = match self.take_unowned_publishable_inner().await {
            Ok(t) => t,
            Err(e) => {
                let _ = marker.flush().await;
                self.lose();
                return Err(e);
            }
        };
        if !taken.is_empty() {
            self.last_rebalance = Some(Instant::now());
            let fenced = taken.iter().filter(|s| self.fenced_until.contains_key(s)).count();
            tracing::info!(
                relay = %self.owner,
                owned = self.owned.len(),
                taken = %ranges(&taken),
                waiting_out_grace = fenced,
                "outbox slices nobody owned had rows to publish; taken"
            );
            self.publish();
        }
        Ok(taken.len())
    }

    async fn take_unowned_publishable_inner(&mut self) -> Result<Vec<i16>, StoreError> {
        let Some(conn) = self.conn.as_mut() else {
            return Err(StoreError::Pool("the relay has not joined".into()));
        };
        let held = outbox_slices::held(conn).await?;
        let free: Vec<i16> = (0..OUTBOX_SLICES)
            .filter(|s| !held.contains(s) && !self.owned.contains(s))
            .collect();
        let mut taken = Vec::new();
        for slice in outbox_repo::publishable_slices(conn, &free).await? {
            if let Some(how) = outbox_slices::try_take(conn, slice, &self.owner).await? {
                took(&mut self.owned, &mut self.fenced_until, self.grace, slice, how);
                taken.push(slice);
            }
        }
        Ok(taken)
    }

    /// Lets go of every slice cleanly, after `marker`'s mark in flight (dropping the
    /// connection would release the locks too, but the next owners would wait out the grace).
    pub(super) async fn release(&mut self, marker: &mut OutboxMarker) {
        if let Err(e) = marker.flush().await {
            tracing::warn!(error = %e, "last published mark failed; those rows will be sent again");
        }
        if let Some(mut c) = self.conn.take() {
            let owned = std::mem::take(&mut self.owned);
            self.publish();
            for slice in owned {
                if let Err(e) = outbox_slices::release(&mut c, slice).await {
                    tracing::warn!(error = %e, slice, "could not let go of a slice cleanly");
                    break;
                }
            }
        }
        self.lose();
    }
}

/// Records a slice just taken (its lock is held): owned, and fenced for the takeover grace
/// when its previous owner may still be producing. (A function of the fields: callers hold
/// the connection borrowed meanwhile.)
fn took(
    owned: &mut BTreeSet<i16>,
    fenced_until: &mut HashMap<i16, Instant>,
    grace: Duration,
    slice: i16,
    how: Takeover,
) {
    owned.insert(slice);
    let label = match how {
        Takeover::Clean => "clean",
        // A relay process that is gone cannot produce: no grace.
        Takeover::FromLostOwner(previous) if process_is_gone(&previous) => "lost_owner_gone",
        Takeover::FromLostOwner(_) => {
            fenced_until.insert(slice, Instant::now() + grace);
            "lost_owner"
        }
    };
    OUTBOX_SLICE_TAKEOVERS.with_label_values(&[label]).inc();
}

/// This machine's name, for relay names (`HOSTNAME`, else `/etc/hostname`, else "relay").
fn host_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "relay".to_owned())
}

/// Slices as ranges, e.g. `0-15,32,40-47` (`-` when none).
fn ranges(slices: &[i16]) -> String {
    let mut sorted = slices.to_vec();
    sorted.sort_unstable();
    let mut out: Vec<String> = Vec::new();
    let mut iter = sorted.into_iter().peekable();
    while let Some(start) = iter.next() {
        let mut end = start;
        while iter.peek() == Some(&(end + 1)) {
            end += 1;
            iter.next();
        }
        out.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
    }
    if out.is_empty() {
        "-".to_owned()
    } else {
        out.join(",")
    }
}

/// This process's pid namespace (`/proc/self/ns/pid`, e.g. `pid:[4026531836]`), or "-".
fn pid_namespace() -> String {
    std::fs::read_link("/proc/self/ns/pid")
        .ok()
        .map(|p| p.to_string_lossy().trim_start_matches("pid:").replace(['[', ']'], ""))
        .unwrap_or_else(|| "-".to_owned())
}

/// True when a relay named `owner` ran on this host, in this pid namespace, and its process
/// no longer exists: it cannot have anything in flight. Anything else (another host or
/// container, a pid in use again, this very process) counts as possibly alive.
fn process_is_gone(owner: &str) -> bool {
    let mut parts = owner.split(':');
    let (Some(host), Some(ns), Some(pid)) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    let Ok(pid) = pid.parse::<u32>() else {
        return false;
    };
    host == host_name()
        && ns != "-"
        && ns == pid_namespace()
        && pid != std::process::id()
        && !std::path::Path::new(&format!("/proc/{pid}")).exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(pid: u32) -> String {
        format!("{}:{}:{pid}:abcdef", host_name(), pid_namespace())
    }

    #[test]
    fn only_a_relay_process_known_to_have_ended_skips_the_grace() {
        assert!(process_is_gone(&name(u32::MAX)), "no such pid here");
        assert!(!process_is_gone(&name(std::process::id())), "this process");
        assert!(!process_is_gone(&name(1)), "a live pid");
        assert!(
            !process_is_gone(&format!("elsewhere:{}:{}:abcdef", pid_namespace(), u32::MAX)),
            "another host"
        );
        assert!(
            !process_is_gone(&format!("{}:1:{}:abcdef", host_name(), u32::MAX)),
            "another pid namespace"
        );
        assert!(!process_is_gone("garbage"));
    }

    #[test]
    fn slices_are_logged_as_ranges() {
        assert_eq!(ranges(&[3, 0, 1, 2, 7, 9, 10]), "0-3,7,9-10");
        assert_eq!(ranges(&[]), "-");
    }

    #[test]
    fn a_slice_from_a_live_lost_owner_is_fenced_and_from_a_gone_one_not() {
        let (mut owned, mut fenced) = (BTreeSet::new(), HashMap::new());
        let grace = Duration::from_secs(5);
        took(&mut owned, &mut fenced, grace, 1, Takeover::Clean);
        took(
            &mut owned,
            &mut fenced,
            grace,
            2,
            Takeover::FromLostOwner(name(u32::MAX)),
        );
        took(
            &mut owned,
            &mut fenced,
            grace,
            3,
            Takeover::FromLostOwner(name(std::process::id())),
        );
        assert_eq!(owned.into_iter().collect::<Vec<_>>(), vec![1, 2, 3]);
        assert_eq!(
            fenced.keys().copied().collect::<Vec<_>>(),
            vec![3],
            "only a possibly live owner's slice waits"
        );
    }

    #[test]
    fn a_fresh_lease_owns_nothing_and_is_due_a_rebalance() {
        let mut l = SliceLease::new("postgres://unused".into(), Duration::from_secs(5));
        assert!(!l.is_active() && !l.owns_any());
        assert!(l.rebalance_due(Duration::from_secs(3600)));
        assert_eq!(l.fenced_for(), None);
        assert_eq!(l.producible(), Some(vec![]), "nothing owned: nothing to claim");
        assert_eq!(*l.slices().borrow(), Vec::<i16>::new());
    }
}
