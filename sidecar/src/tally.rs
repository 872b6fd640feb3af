//! [`Tally`]: what the agent's proxies routed where, per port and intercept, with latencies. The
//! link reports it to the manager ([`RouteStats`]), which sums it for each intercept's holder
//! (`tether top`). Unlike the Prometheus families (by port and route only), it knows intercepts:
//! their ids are not bounded enough for labels, and only their holders need them.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tether_proto::stats::{MirrorCounts, RouteCounts};
use tether_proto::{RouteStat, RouteStats};

/// Where counts are kept: an app port and the intercept that took the requests (`None`: the
/// app).
type Key = (u16, Option<u64>);

/// What is counted under one key: requests routed, and for a mirror its copies.
#[derive(Debug, Default)]
struct Counts {
    routed: RouteCounts,
    mirrored: MirrorCounts,
}

#[derive(Debug, Default)]
struct Inner {
    routes: BTreeMap<Key, Counts>,
    /// Bumped by every count, so the link sends only what changed.
    changes: u64,
}

/// The counts, shared by the proxies (which count) and the link (which reports). Cloning gives
/// another handle to the same counts.
#[derive(Debug, Clone, Default)]
pub struct Tally(Arc<Mutex<Inner>>);

impl Tally {
    /// Counts one request on `port` routed to `intercept` (or the app), answered after `took`.
    pub fn request(&self, port: u16, intercept: Option<u64>, took: Duration) {
        let mut inner = self.lock();
        inner
            .routes
            .entry((port, intercept))
            .or_default()
            .routed
            .record(took);
        inner.changes += 1;
    }

    /// Counts one non-HTTP connection on `port` relayed to `intercept` (or the app).
    pub fn connection(&self, port: u16, intercept: Option<u64>) {
        let mut inner = self.lock();
        inner
            .routes
            .entry((port, intercept))
            .or_default()
            .routed
            .record_connection();
        inner.changes += 1;
    }

    /// Counts one copy of mirror `intercept` on `port`: sent (the laptop answered) or dropped.
    pub fn mirrored(&self, port: u16, intercept: u64, sent: bool) {
        let mut inner = self.lock();
        let counts = &mut inner
            .routes
            .entry((port, Some(intercept)))
            .or_default()
            .mirrored;
        if sent {
            counts.sent += 1;
        } else {
            counts.dropped += 1;
        }
        inner.changes += 1;
    }

    /// The counts as a report, if anything was counted since the report of `*seen` changes
    /// (which it then updates).
    pub fn report_if_changed(&self, seen: &mut Option<u64>) -> Option<RouteStats> {
        let inner = self.lock();
        if *seen == Some(inner.changes) {
            return None;
        }
        *seen = Some(inner.changes);
        Some(RouteStats {
            routes: inner
                .routes
                .iter()
                .map(|(&(port, intercept), counts)| RouteStat {
                    port,
                    intercept,
                    counts: counts.routed.clone(),
                    mirrored: counts.mirrored,
                })
                .collect(),
        })
    }

    /// Forgets the counts of intercepts not in `live` (ended: their holders see them no more),
    /// so the tally does not grow with every intercept the agent ever served.
    pub fn retain(&self, live: impl Fn(u64) -> bool) {
        let mut inner = self.lock();
        let before = inner.routes.len();
        inner.routes.retain(|(_, i), _| i.is_none_or(&live));
        if inner.routes.len() != before {
            inner.changes += 1;
        }
    }

    // Counting never panics while holding the lock; a poisoned one still holds counts.
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_only_after_a_change() {
        let tally = Tally::default();
        let mut seen = None;
        let empty = tally.report_if_changed(&mut seen).unwrap();
        assert!(empty.routes.is_empty(), "the first report is always sent");
        assert_eq!(tally.report_if_changed(&mut seen), None);
        tally.request(8080, Some(7), Duration::from_millis(3));
        tally.request(8080, None, Duration::from_millis(1));
        tally.connection(8080, Some(7));
        let report = tally.report_if_changed(&mut seen).unwrap();
        let by: Vec<(u16, Option<u64>, u64)> = report
            .routes
            .iter()
            .map(|r| (r.port, r.intercept, r.counts.requests))
            .collect();
        assert_eq!(by, [(8080, None, 1), (8080, Some(7), 2)]);
        assert_eq!(tally.report_if_changed(&mut seen), None);
    }

    #[test]
    fn mirror_copies_are_counted_apart_from_requests() {
        let tally = Tally::default();
        tally.request(8080, None, Duration::ZERO);
        tally.mirrored(8080, 7, true);
        tally.mirrored(8080, 7, true);
        tally.mirrored(8080, 7, false);
        let report = tally.report_if_changed(&mut None).unwrap();
        let by: Vec<(Option<u64>, u64, MirrorCounts)> = report
            .routes
            .iter()
            .map(|r| (r.intercept, r.counts.requests, r.mirrored))
            .collect();
        assert_eq!(
            by,
            [
                (None, 1, MirrorCounts::default()),
                (
                    Some(7),
                    0,
                    MirrorCounts {
                        sent: 2,
                        dropped: 1
                    }
                )
            ]
        );
    }

    #[test]
    fn ended_intercepts_are_forgotten_and_the_app_kept() {
        let tally = Tally::default();
        tally.request(8080, Some(7), Duration::ZERO);
        tally.request(8080, Some(8), Duration::ZERO);
        tally.request(8080, None, Duration::ZERO);
        let mut seen = None;
        tally.report_if_changed(&mut seen);
        tally.retain(|id| id == 8);
        let report = tally.report_if_changed(&mut seen).expect("a change");
        let keys: Vec<Option<u64>> = report.routes.iter().map(|r| r.intercept).collect();
        assert_eq!(keys, [None, Some(8)]);
    }
}
