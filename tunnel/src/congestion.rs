//! CUBIC that does not take random loss for congestion.
//!
//! A loss-based controller halves (CUBIC: × 0.7) its window on every loss. On a Wi-Fi or mobile
//! link that loses 1 % of packets whatever the load, that caps a 50 ms path at a few hundred
//! KB/s, however fast the link: the bench's `lossy50` profile measured 0.33 MB/s for the tunnel
//! against 5.3 MB/s for the kernel's TCP (which uses BBR here). quinn's BBR ignores such loss
//! but is marked experimental, and on this machine's loopback it moved 27 % less than CUBIC.
//!
//! So tether keeps quinn's CUBIC and filters what it is told: a loss is taken for congestion
//! only when the path shows it, that is when the smoothed RTT stands clearly above the minimum
//! (a queue is building at the bottleneck) or when more than [`LOSS_THRESHOLD`] of the recent
//! bytes were lost (a shallow or policing bottleneck drops without queueing, and then loss
//! climbs fast). Anything else is random loss: the packets are resent, the window stays. Loss
//! that persists (all packets over the persistent-congestion period) always counts. This is
//! the loss threshold of BBRv2 and the delay signal of Vegas-like controllers, put in front of
//! CUBIC.
//!
//! Two more things keep one overflowing queue from costing seconds. quinn's CUBIC has no
//! HyStart: slow start doubles the window until a loss, so on `lossy50` (312 KB in flight fill
//! the link, and the bottleneck holds 312 KB more) it reached 938 KB, and the bottleneck dropped
//! a burst of packets. Every loss of that burst then raised the recent loss rate past
//! [`LOSS_THRESHOLD`], and for the seconds the rate remembered it each random loss cut the
//! window again: 938 KB fell to 16 KB, and the first 32 MiB moved at a third of the link's rate.
//! So (1) slow start ends when a round of RTT samples shows a queue (the delay test of
//! HyStart++, RFC 9406, with its thresholds); and (2) a cut answers for the losses of packets
//! sent before it: they neither cut again nor count in the loss rate, which starts afresh.
//!
//! [`LossFilter`] is the decision, sans-IO and unit-tested; [`Tolerant`] is the glue that
//! plugs it into quinn.

use std::any::Any;
use std::sync::Arc;
use std::time::{Duration, Instant};

use quinn::congestion::{Controller, ControllerFactory, ControllerMetrics, CubicConfig};

/// Above this share of bytes lost (recently), loss is congestion whatever the RTT says.
pub const LOSS_THRESHOLD: f64 = 0.03;

/// Queueing delay (smoothed RTT above the minimum) that marks a building queue: a quarter of
/// the minimum RTT, but at least this much, so that jitter on a fast path is not taken for it.
const MIN_QUEUE_DELAY: Duration = Duration::from_millis(2);

/// Bytes sent per loss-accounting period, at least: the recent loss rate covers the current
/// period and the one before it.
const MIN_PERIOD_BYTES: u64 = 256 << 10;

/// RTT samples a round needs before its minimum is trusted to end slow start (RFC 9406's
/// `N_RTT_SAMPLE`).
const ROUND_SAMPLES: u32 = 8;

/// Bounds of the rise of a round's minimum RTT over the path's minimum that ends slow start
/// (RFC 9406's `MIN_RTT_THRESH` and `MAX_RTT_THRESH`; the rise allowed is an eighth of the
/// minimum between them).
const SLOW_START_RISE: (Duration, Duration) = (Duration::from_millis(4), Duration::from_millis(16));

/// Decides which losses are congestion. Plain data: bytes and RTTs in, a verdict out.
#[derive(Debug, Clone, Default)]
pub struct LossFilter {
    /// Bytes sent and lost in the current period and in the one before.
    sent: [u64; 2],
    lost: [u64; 2],
    /// Bytes a period lasts (grows with the window, so a period spans about a round trip or more).
    period: u64,
    smoothed_rtt: Duration,
    min_rtt: Duration,
    /// Losses not passed on, for the record.
    tolerated: u64,
    /// When the last cut was made: losses of packets sent before it were answered by it.
    answered_until: Option<Instant>,
    /// The current round of RTT samples: when it started, its smallest sample, how many.
    round: Option<Round>,
}

/// One round trip's RTT samples: it ends with the ACK of a packet sent after it started.
#[derive(Debug, Clone, Copy)]
struct Round {
    started: Instant,
    min: Duration,
    samples: u32,
}

impl LossFilter {
    /// Bytes were sent; `window` is the congestion window now.
    pub fn on_sent(&mut self, bytes: u64, window: u64) {
        self.period = self.period.max(MIN_PERIOD_BYTES).max(2 * window);
        self.sent[1] += bytes;
        if self.sent[1] >= self.period {
            self.sent = [self.sent[1], 0];
            self.lost = [self.lost[1], 0];
        }
    }

    /// An ACK brought an RTT sample.
    pub fn on_rtt(&mut self, smoothed: Duration, min: Duration) {
        self.smoothed_rtt = smoothed;
        self.min_rtt = min;
    }

    /// Bytes were declared lost, the newest of them sent at `sent`: `true` if the controller
    /// should treat it as congestion (and cut: call [`on_cut`](Self::on_cut) then).
    pub fn on_loss(&mut self, lost_bytes: u64, persistent: bool, sent: Instant) -> bool {
        if persistent {
            return true;
        }
        if self.answered_until.is_some_and(|cut| sent <= cut) {
            // Part of the overflow the last cut answered.
            return false;
        }
        self.lost[1] += lost_bytes;
        if self.queueing() || self.loss_rate() > LOSS_THRESHOLD {
            return true;
        }
        self.tolerated += 1;
        false
    }

    /// The controller cut its window at `now`: the losses so far are answered.
    pub fn on_cut(&mut self, now: Instant) {
        self.answered_until = Some(now);
        self.lost = [0, 0];
        self.round = None;
    }

    /// An ACK at `now` of a packet sent at `sent`, in slow start: `true` when the smallest RTT
    /// of the current round (at least [`ROUND_SAMPLES`] of them) stands above the path's minimum
    /// by more than RFC 9406 allows, that is when a queue is building and slow start should
    /// end.
    pub fn on_slow_start_ack(&mut self, now: Instant, sent: Instant) -> bool {
        let sample = now.saturating_duration_since(sent);
        let round = self.round.get_or_insert(Round {
            started: now,
            min: sample,
            samples: 0,
        });
        if sent >= round.started {
            // A packet sent in this round came back: the next round begins.
            *round = Round {
                started: now,
                min: sample,
                samples: 0,
            };
        }
        round.min = round.min.min(sample);
        round.samples += 1;
        // As RFC 9406 does, judge the round as soon as it has enough samples: waiting for its
        // end would let the window double once more.
        if round.samples < ROUND_SAMPLES || self.min_rtt.is_zero() {
            return false;
        }
        let (low, high) = SLOW_START_RISE;
        let allowed = (self.min_rtt / 8).clamp(low, high);
        round.min > self.min_rtt + allowed
    }

    /// Share of the recent bytes that were lost. Until a period's worth was sent, the share is
    /// of a period: early in a connection one random loss among a few dozen packets is not 3 %
    /// of anything yet (taken for congestion, it ended slow start at a few tens of KB and left
    /// CUBIC to climb for seconds: 1.3-2.4 MB/s on the 6.25 MB/s `lossy50` link).
    pub fn loss_rate(&self) -> f64 {
        let sent = self.sent[0] + self.sent[1];
        if sent == 0 {
            return 1.0;
        }
        (self.lost[0] + self.lost[1]) as f64 / sent.max(MIN_PERIOD_BYTES) as f64
    }

    /// Whether the smoothed RTT shows a queue at the bottleneck.
    pub fn queueing(&self) -> bool {
        let allowed = (self.min_rtt / 4).max(MIN_QUEUE_DELAY);
        self.smoothed_rtt > self.min_rtt + allowed
    }

    /// Losses so far that were not taken for congestion.
    pub fn tolerated(&self) -> u64 {
        self.tolerated
    }
}

/// quinn's CUBIC behind a [`LossFilter`].
pub struct Tolerant {
    inner: Box<dyn Controller>,
    filter: LossFilter,
}

impl Tolerant {
    fn new(inner: Box<dyn Controller>) -> Self {
        Tolerant {
            inner,
            filter: LossFilter::default(),
        }
    }

    /// Whether CUBIC is in slow start (its window below its threshold).
    fn in_slow_start(&self) -> bool {
        self.inner
            .metrics()
            .ssthresh
            .is_some_and(|threshold| self.inner.window() < threshold)
    }

    /// An ACK at `now` of a packet sent at `sent`, with the path's RTTs after it.
    fn on_rtt(&mut self, now: Instant, sent: Instant, smoothed: Duration, min: Duration) {
        self.filter.on_rtt(smoothed, min);
        if self.in_slow_start() && self.filter.on_slow_start_ack(now, sent) {
            // A queue is building: leave slow start as a loss would, before the queue
            // overflows.
            self.cut(now, now, false, 0);
        }
    }

    /// Tells CUBIC of congestion (it cuts, as the filter only passes losses of packets sent
    /// after the last cut), and the filter that it was answered.
    fn cut(&mut self, now: Instant, sent: Instant, persistent: bool, lost_bytes: u64) {
        let before = self.inner.window();
        self.inner
            .on_congestion_event(now, sent, persistent, lost_bytes);
        self.filter.on_cut(now);
        tracing::debug!(
            before,
            after = self.inner.window(),
            persistent,
            lost_bytes,
            smoothed_rtt = ?self.filter.smoothed_rtt,
            min_rtt = ?self.filter.min_rtt,
            tolerated = self.filter.tolerated,
            "congestion window cut"
        );
    }
}

impl std::fmt::Debug for Tolerant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tolerant")
            .field("window", &self.inner.window())
            .field("filter", &self.filter)
            .finish()
    }
}

impl Controller for Tolerant {
    fn on_sent(&mut self, now: Instant, bytes: u64, last_packet_number: u64) {
        self.filter.on_sent(bytes, self.inner.window());
        self.inner.on_sent(now, bytes, last_packet_number);
    }

    fn on_ack(
        &mut self,
        now: Instant,
        sent: Instant,
        bytes: u64,
        app_limited: bool,
        rtt: &quinn_proto::RttEstimator,
    ) {
        self.on_rtt(now, sent, rtt.get(), rtt.min());
        self.inner.on_ack(now, sent, bytes, app_limited, rtt);
    }

    fn on_end_acks(
        &mut self,
        now: Instant,
        in_flight: u64,
        app_limited: bool,
        largest_packet_num_acked: Option<u64>,
    ) {
        self.inner
            .on_end_acks(now, in_flight, app_limited, largest_packet_num_acked);
    }

    fn on_congestion_event(
        &mut self,
        now: Instant,
        sent: Instant,
        is_persistent_congestion: bool,
        lost_bytes: u64,
    ) {
        if self
            .filter
            .on_loss(lost_bytes, is_persistent_congestion, sent)
        {
            self.cut(now, sent, is_persistent_congestion, lost_bytes);
        }
    }

    fn on_mtu_update(&mut self, new_mtu: u16) {
        self.inner.on_mtu_update(new_mtu);
    }

    fn window(&self) -> u64 {
        self.inner.window()
    }

    fn metrics(&self) -> ControllerMetrics {
        self.inner.metrics()
    }

    fn clone_box(&self) -> Box<dyn Controller> {
        Box::new(Tolerant {
            inner: self.inner.clone_box(),
            filter: self.filter.clone(),
        })
    }

    fn initial_window(&self) -> u64 {
        self.inner.initial_window()
    }

    fn into_any(self: Box<Self>) -> Box<dyn Any> {
        self
    }
}

/// Builds a [`Tolerant`] controller per connection.
#[derive(Debug, Clone, Default)]
pub struct TolerantConfig {
    cubic: CubicConfig,
}

impl ControllerFactory for TolerantConfig {
    fn build(self: Arc<Self>, now: Instant, current_mtu: u16) -> Box<dyn Controller> {
        Box::new(Tolerant::new(
            Arc::new(self.cubic.clone()).build(now, current_mtu),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// A filter that has sent `sent` bytes over a path of `min` RTT now at `smoothed`.
    fn path(sent: u64, min: Duration, smoothed: Duration) -> LossFilter {
        let mut f = LossFilter::default();
        for _ in 0..sent / 1200 {
            f.on_sent(1200, 64 << 10);
        }
        f.on_rtt(smoothed, min);
        f
    }

    #[test]
    fn random_loss_on_an_unloaded_path_is_tolerated() {
        // 1 MB sent, 1 % lost, RTT at its minimum: Wi-Fi loss, not a queue.
        let mut f = path(1_000_000, 50 * MS, 51 * MS);
        for _ in 0..8 {
            assert!(!f.on_loss(1200, false, Instant::now()));
        }
        assert_eq!(f.tolerated(), 8);
    }

    #[test]
    fn loss_with_a_building_queue_is_congestion() {
        // 70 ms smoothed on a 50 ms path: 20 ms of queue (more than a quarter of 50).
        let mut f = path(1_000_000, 50 * MS, 70 * MS);
        assert!(f.queueing());
        assert!(f.on_loss(1200, false, Instant::now()));
        assert_eq!(f.tolerated(), 0);
    }

    #[test]
    fn on_a_fast_path_a_millisecond_of_jitter_is_not_a_queue() {
        let f = path(
            1_000_000,
            Duration::from_micros(200),
            Duration::from_micros(1_200),
        );
        assert!(!f.queueing());
        let f = path(
            1_000_000,
            Duration::from_micros(200),
            Duration::from_micros(2_500),
        );
        assert!(f.queueing());
    }

    #[test]
    fn heavy_loss_is_congestion_even_without_a_queue() {
        // A policer drops without queueing: past 3 % it counts.
        let mut f = path(1_000_000, 50 * MS, 50 * MS);
        let mut verdicts = Vec::new();
        for _ in 0..40 {
            verdicts.push(f.on_loss(1200, false, Instant::now()));
        }
        let first_congestion = verdicts.iter().position(|c| *c).expect("some loss counts");
        // The recent bytes are the last two periods: 474 KB of the 1 MB (a full period of
        // 262.8 KB and 211.2 KB of the current one). The 12th lost packet (14.4 KB) crosses 3 %.
        assert_eq!(first_congestion, 11);
        assert!(verdicts[first_congestion..].iter().all(|c| *c));
    }

    #[test]
    fn persistent_congestion_always_counts() {
        let mut f = path(1_000_000, 50 * MS, 50 * MS);
        assert!(f.on_loss(1200, true, Instant::now()));
    }

    #[test]
    fn the_loss_rate_forgets_old_periods() {
        let mut f = path(300_000, 50 * MS, 50 * MS);
        // 10 % lost long ago...
        f.lost = [30_000, 0];
        assert!(f.loss_rate() > LOSS_THRESHOLD);
        // ...then two clean periods.
        for _ in 0..(2 * (256 << 10) / 1200 + 2) {
            f.on_sent(1200, 64 << 10);
        }
        assert!(f.loss_rate() < 0.001, "{}", f.loss_rate());
        assert!(!f.on_loss(1200, false, Instant::now()));
    }

    #[test]
    fn one_loss_early_in_slow_start_is_not_congestion() {
        // 20 packets into a 50 ms path: one lost is 5 % of what was sent, but no queue shows
        // and it is 0.5 % of a period.
        let mut f = path(24_000, 50 * MS, 50 * MS);
        assert!(!f.on_loss(1200, false, Instant::now()));
        // Loss that keeps coming is still congestion before a period is over.
        let verdicts: Vec<bool> = (0..10)
            .map(|_| f.on_loss(1200, false, Instant::now()))
            .collect();
        assert!(verdicts.iter().any(|c| *c), "{verdicts:?}");
    }

    #[test]
    fn before_anything_was_sent_a_loss_counts() {
        let mut f = LossFilter::default();
        assert!(f.on_loss(1200, false, Instant::now()));
    }

    #[test]
    fn losses_of_packets_sent_before_a_cut_neither_cut_again_nor_count() {
        let start = Instant::now();
        let cut = start + 100 * MS;
        // The same overflow of 40 packets on a path without a queue (any more), with and
        // without the cut that answered it.
        let mut answered = path(1_000_000, 50 * MS, 50 * MS);
        answered.on_cut(cut);
        let mut unanswered = answered.clone();
        unanswered.answered_until = None;
        let overflow = |f: &mut LossFilter| -> Vec<bool> {
            (0..40)
                .map(|i| f.on_loss(1200, false, start + i * MS))
                .collect()
        };
        assert!(overflow(&mut answered).iter().all(|c| !c));
        assert!(answered.loss_rate() < 0.001, "{}", answered.loss_rate());
        assert_eq!(answered.tolerated(), 0, "nor are they random loss");
        assert!(overflow(&mut unanswered).iter().any(|c| *c));
        // A random loss after the cut is tolerated; persistent congestion still counts.
        assert!(!answered.on_loss(1200, false, cut + MS));
        assert!(answered.on_loss(1200, true, start));
    }

    /// Feeds `f` one round of 10 ACKs per RTT in `rtts` (sent in the first half of the round),
    /// starting at `start`; whether each round ended slow start.
    fn rounds(f: &mut LossFilter, start: Instant, rtts: &[Duration]) -> Vec<bool> {
        let mut verdicts = Vec::new();
        let mut sent = start;
        for rtt in rtts {
            let mut ended = false;
            for i in 0..10 {
                let at = sent + *rtt * i / 20;
                ended |= f.on_slow_start_ack(at + *rtt, at);
            }
            verdicts.push(ended);
            sent += *rtt;
        }
        verdicts
    }

    #[test]
    fn slow_start_ends_when_a_rounds_smallest_rtt_shows_a_queue() {
        let start = Instant::now();
        // 50 ms path: an eighth, 6.25 ms, of rise is allowed.
        let mut f = path(1_000_000, 50 * MS, 50 * MS);
        let verdicts = rounds(&mut f, start, &[50 * MS, 51 * MS, 56 * MS, 52 * MS]);
        assert_eq!(verdicts, [false; 4]);
        let verdicts = rounds(&mut f, start + 3 * SECOND, &[50 * MS, 60 * MS]);
        assert_eq!(verdicts, [false, true]);
        // Seven samples are not enough.
        let mut few = path(1_000_000, 50 * MS, 50 * MS);
        let late = start + 9 * SECOND;
        let verdicts: Vec<bool> = (0..7)
            .map(|i| few.on_slow_start_ack(late + i * MS + 90 * MS, late + i * MS))
            .collect();
        assert_eq!(verdicts, [false; 7]);
        // A fast path: at least 4 ms of rise is needed, whatever the minimum.
        let mut f = path(1_000_000, MS / 5, MS / 5);
        assert_eq!(rounds(&mut f, start, &[3 * MS, 3 * MS]), [false, false]);
        assert_eq!(rounds(&mut f, start + SECOND, &[5 * MS]), [true]);
        // Without an RTT sample, nothing to compare with.
        let mut f = LossFilter::default();
        assert_eq!(rounds(&mut f, start, &[90 * MS, 90 * MS]), [false, false]);
    }

    const SECOND: Duration = Duration::from_secs(1);

    /// CUBIC as far as this test needs it: slow start, and one cut to 0.7 × per recovery
    /// (losses of packets sent before its start are ignored). quinn's `on_ack` needs an
    /// `RttEstimator`, which only quinn can make, so an ACK is an `on_sent` with packet
    /// number `u64::MAX` here.
    #[derive(Debug, Clone)]
    struct SlowStart {
        window: u64,
        threshold: u64,
        recovery: Option<Instant>,
    }

    impl Default for SlowStart {
        fn default() -> Self {
            SlowStart {
                window: 12_000,
                threshold: u64::MAX,
                recovery: None,
            }
        }
    }

    impl Controller for SlowStart {
        fn on_sent(&mut self, _now: Instant, bytes: u64, packet: u64) {
            if packet == u64::MAX && self.window < self.threshold {
                self.window += bytes;
            }
        }

        fn on_congestion_event(&mut self, now: Instant, sent: Instant, _: bool, _: u64) {
            if self.recovery.is_some_and(|r| sent <= r) {
                return;
            }
            self.recovery = Some(now);
            self.window = self.window * 7 / 10;
            self.threshold = self.window;
        }

        fn on_mtu_update(&mut self, _: u16) {}

        fn window(&self) -> u64 {
            self.window
        }

        fn metrics(&self) -> ControllerMetrics {
            let mut m = ControllerMetrics::default();
            m.congestion_window = self.window;
            m.ssthresh = Some(self.threshold);
            m
        }

        fn clone_box(&self) -> Box<dyn Controller> {
            Box::new(self.clone())
        }

        fn initial_window(&self) -> u64 {
            12_000
        }

        fn into_any(self: Box<Self>) -> Box<dyn Any> {
            self
        }
    }

    #[test]
    fn a_queue_ends_slow_start_with_one_cut_and_its_overflow_costs_no_more() {
        let start = Instant::now();
        let mut c = Tolerant::new(Box::new(SlowStart::default()));
        let initial = c.window();
        // Slow start on a 50 ms path: each round acknowledges the window and doubles it.
        let mut now = start;
        let mut round = 0;
        'slow: loop {
            round += 1;
            assert!(round < 20, "slow start never ended");
            let packets = c.window() / 1200;
            // The next round is sent as this one's ACKs come back.
            let mut next = now;
            for p in 0..packets {
                let sent = now + Duration::from_micros(p * 10);
                // With more than 300 KB in flight a queue builds: 1 ms per 50 KB more.
                let queue = c.window().saturating_sub(300_000) as u32 * MS / 50_000;
                let rtt = 50 * MS + queue;
                if p == 0 {
                    next = sent + rtt;
                }
                c.on_sent(sent, 1200, p);
                c.on_rtt(sent + rtt, sent, rtt, 50 * MS);
                if !c.in_slow_start() {
                    break 'slow;
                }
                c.inner.on_sent(sent, 1200, u64::MAX); // stands for "acked" in SlowStart
            }
            now = next;
        }
        // A round's smallest RTT is its first packets', sent with the window the round began
        // with. The round that began at 384 KB showed 1.7 ms of queue; the next, at 768 KB,
        // 9.4 ms, more than the 6.25 ms allowed, and after 8 samples the window was cut to
        // 0.7 × 778 KB.
        let exited = c.window();
        assert!(
            (540_000..550_000).contains(&exited),
            "{exited} vs {initial}"
        );
        // The overflow of packets sent before the cut: no further cut.
        for i in 0..60 {
            c.on_congestion_event(now + i * MS, now - 30 * MS, false, 1200);
        }
        assert_eq!(c.window(), exited);
        // Random loss after it, without a queue: kept.
        c.filter.on_rtt(51 * MS, 50 * MS);
        c.on_congestion_event(now + SECOND, now + SECOND / 2, false, 1200);
        assert_eq!(c.window(), exited);
    }

    #[test]
    fn the_controller_keeps_its_window_on_random_loss_and_cuts_it_on_congestion() {
        let now = Instant::now();
        let mut c = Arc::new(TolerantConfig::default()).build(now, 1200);
        let initial = c.window();
        for i in 0..1000 {
            c.on_sent(now, 1200, i);
        }
        // No RTT sample yet: min and smoothed are both zero, so no queue; 1.2 KB of 1.2 MB
        // lost is random loss.
        c.on_congestion_event(now, now, false, 1200);
        assert_eq!(c.window(), initial);
        c.on_congestion_event(now + MS, now + MS, true, 1200);
        assert!(c.window() < initial, "{} vs {initial}", c.window());
    }
}
