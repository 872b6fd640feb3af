//! Request counts with a latency histogram: what an agent tallies per route, sends to the
//! manager ([`RouteStats`](crate::RouteStats)), and the manager sums for each intercept's holder
//! ([`InterceptStats`](crate::InterceptStats)). Counts are cumulative since the agent started, so
//! a lost message loses nothing and a reader finds rates by subtracting an earlier copy
//! ([`RouteCounts::since`]).

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The latency buckets' upper bounds in microseconds; one more bucket counts everything above
/// the last. Fixed forever: both ends index buckets by position.
pub const LATENCY_BOUNDS_US: [u64; 16] = [
    250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000,
    2_500_000, 5_000_000, 10_000_000, 30_000_000,
];

/// How many buckets a full histogram has.
pub const BUCKETS: usize = LATENCY_BOUNDS_US.len() + 1;

/// Requests routed one way, and how long each took (from the request's head to its response's
/// head; connections relayed as bytes count as requests without a latency).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteCounts {
    /// Requests (or non-HTTP connections).
    pub requests: u64,
    /// Requests per latency bucket (see [`LATENCY_BOUNDS_US`]); trailing empty buckets may be
    /// left out, and buckets past [`BUCKETS`] are ignored.
    pub latency: Vec<u64>,
}

impl RouteCounts {
    /// Counts one request that took `took`.
    pub fn record(&mut self, took: Duration) {
        self.requests += 1;
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        let bucket = LATENCY_BOUNDS_US
            .iter()
            .position(|bound| us <= *bound)
            .unwrap_or(LATENCY_BOUNDS_US.len());
        if self.latency.len() <= bucket {
            self.latency.resize(bucket + 1, 0);
        }
        self.latency[bucket] += 1;
    }

    /// Counts one connection relayed as bytes (no latency).
    pub fn record_connection(&mut self) {
        self.requests += 1;
    }

    /// Adds `other`'s counts to these.
    pub fn add(&mut self, other: &RouteCounts) {
        self.requests += other.requests;
        let n = other.latency.len().min(BUCKETS);
        if self.latency.len() < n {
            self.latency.resize(n, 0);
        }
        for (mine, theirs) in self.latency.iter_mut().zip(&other.latency[..n]) {
            *mine += theirs;
        }
    }

    /// What was counted after `earlier` (an older copy of the same counts). A count that went
    /// down (an agent restarted, or left) is taken as zero, never as a negative.
    pub fn since(&self, earlier: &RouteCounts) -> RouteCounts {
        let bucket = |i: usize| earlier.latency.get(i).copied().unwrap_or(0);
        RouteCounts {
            requests: self.requests.saturating_sub(earlier.requests),
            latency: self
                .latency
                .iter()
                .take(BUCKETS)
                .enumerate()
                .map(|(i, n)| n.saturating_sub(bucket(i)))
                .collect(),
        }
    }

    /// The latency below which a fraction `q` (0 to 1) of the timed requests fall, as the upper
    /// bound of the bucket that holds it (above the last bound: that bound). `None` when no
    /// request was timed.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        let timed: u64 = self.latency.iter().take(BUCKETS).sum();
        if timed == 0 {
            return None;
        }
        // The rank of the q-th request, 1-based: the median of 3 is the 2nd.
        let rank = ((q.clamp(0.0, 1.0) * timed as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, n) in self.latency.iter().take(BUCKETS).enumerate() {
            seen += n;
            if seen >= rank {
                let bound = LATENCY_BOUNDS_US[i.min(LATENCY_BOUNDS_US.len() - 1)];
                return Some(Duration::from_micros(bound));
            }
        }
        None
    }
}

/// A mirror's copies (see [`InterceptMode::Mirror`](crate::InterceptMode::Mirror)):
/// cumulative, like [`RouteCounts`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MirrorCounts {
    /// Copies the laptop answered (the answer was discarded).
    pub sent: u64,
    /// Copies that never reached the laptop's answer: the mirror's queue was full, the body was
    /// over the copy limit, the request could not be copied (an upgrade), or the laptop could
    /// not be reached or did not answer in time.
    pub dropped: u64,
}

impl MirrorCounts {
    /// Adds `other`'s counts to these.
    pub fn add(&mut self, other: &MirrorCounts) {
        self.sent += other.sent;
        self.dropped += other.dropped;
    }

    /// What was counted after `earlier`; a count that went down is taken as zero.
    pub fn since(&self, earlier: &MirrorCounts) -> MirrorCounts {
        MirrorCounts {
            sent: self.sent.saturating_sub(earlier.sent),
            dropped: self.dropped.saturating_sub(earlier.dropped),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn counts_each_request_in_its_bucket() {
        let mut c = RouteCounts::default();
        c.record(Duration::from_micros(100));
        c.record(Duration::from_micros(250));
        c.record(ms(3));
        assert_eq!(c.requests, 3);
        assert_eq!(c.latency, [2, 0, 0, 0, 1]);
        c.record(Duration::from_secs(100));
        assert_eq!(c.latency.len(), BUCKETS);
        assert_eq!(c.latency[BUCKETS - 1], 1);
    }

    #[test]
    fn quantiles_are_bucket_bounds() {
        let mut c = RouteCounts::default();
        assert_eq!(c.quantile(0.5), None);
        for _ in 0..98 {
            c.record(ms(2));
        }
        c.record(ms(40));
        c.record(ms(2_000));
        assert_eq!(c.quantile(0.5), Some(ms(2) + Duration::from_micros(500)));
        assert_eq!(c.quantile(0.99), Some(ms(50)));
        assert_eq!(c.quantile(1.0), Some(ms(2_500)));
        // A connection relayed as bytes is counted, not timed.
        let mut relayed = RouteCounts::default();
        relayed.record_connection();
        assert_eq!((relayed.requests, relayed.quantile(0.5)), (1, None));
    }

    #[test]
    fn the_slowest_bucket_reports_the_last_bound() {
        let mut c = RouteCounts::default();
        c.record(Duration::from_secs(60));
        assert_eq!(c.quantile(0.5), Some(Duration::from_secs(30)));
    }

    #[test]
    fn differences_never_go_negative() {
        let mut earlier = RouteCounts::default();
        earlier.record(ms(1));
        let mut now = earlier.clone();
        now.record(ms(1));
        now.record(ms(20));
        let d = now.since(&earlier);
        assert_eq!(d.requests, 2);
        assert_eq!(d.quantile(0.5), Some(ms(1)));
        assert_eq!(d.quantile(1.0), Some(ms(25)));
        // An agent that restarted counts from zero again.
        let restarted = RouteCounts::default();
        assert_eq!(restarted.since(&now), RouteCounts::default());
    }

    #[test]
    fn mirror_counts_sum_and_subtract() {
        let mut a = MirrorCounts {
            sent: 3,
            dropped: 1,
        };
        a.add(&MirrorCounts {
            sent: 2,
            dropped: 4,
        });
        assert_eq!(
            a,
            MirrorCounts {
                sent: 5,
                dropped: 5
            }
        );
        let earlier = MirrorCounts {
            sent: 4,
            dropped: 9,
        };
        assert_eq!(
            a.since(&earlier),
            MirrorCounts {
                sent: 1,
                dropped: 0
            }
        );
    }

    #[test]
    fn sums_agents() {
        let (mut a, mut b) = (RouteCounts::default(), RouteCounts::default());
        a.record(ms(1));
        b.record(ms(1));
        b.record(ms(200));
        a.add(&b);
        assert_eq!(a.requests, 3);
        assert_eq!(a.latency.iter().sum::<u64>(), 3);
        // A peer's oversized histogram is cut at BUCKETS.
        let long = RouteCounts {
            requests: 1,
            latency: vec![1; BUCKETS + 5],
        };
        a.add(&long);
        assert_eq!(a.latency.len(), BUCKETS);
    }
}
