//! The sans-IO core: decides, for each packet entering the link, whether it is lost and when it
//! comes out. No clock, no socket: time is passed in, packets are opaque handles.
//!
//! A packet entering direction `d` at `now` with `size` bytes:
//! 1. is dropped with probability `loss` ([`DropReason::Loss`]);
//! 2. waits for the link to be free and takes `size × 8 / rate` to be sent (the bottleneck's
//!    serialization); if it would wait longer than `buffer` it is dropped
//!    ([`DropReason::BufferFull`]), as by a full router queue: that is part of the emulated link.
//!    If the emulator already holds its limit of packets, it is dropped too
//!    ([`DropReason::Overflow`]): that is the emulator failing to keep up, and is reported;
//! 3. then travels `rtt / 2 ± jitter`, never arriving before the packet that entered before it;
//! 4. with probability `reorder` it is held back a further `reorder_gap`, and later packets
//!    overtake it.
//!
//! [`Scheduler::push`] takes a packet in; [`Scheduler::poll_release`] hands back those whose
//! time has come, earliest first; [`Scheduler::next_release`] says when to look again.

use std::{
    cmp::Reverse,
    collections::BinaryHeap,
    time::{Duration, Instant},
};

use crate::{profile::Profile, rng::Rng};

/// Which way a packet crosses the link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// From the workstation towards the cluster.
    Up,
    /// From the cluster towards the workstation.
    Down,
}

impl Direction {
    pub(crate) fn index(self) -> usize {
        match self {
            Direction::Up => 0,
            Direction::Down => 1,
        }
    }
}

/// Why a packet was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// The profile's random loss.
    Loss,
    /// The emulated bottleneck's buffer was full (drop-tail): part of the link's behaviour.
    BufferFull,
    /// The emulator's own limit on held packets was reached: not part of the profile.
    Overflow,
}

/// What happened to one direction's packets so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DirectionStats {
    /// Packets that entered the link.
    pub packets: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Dropped by random loss.
    pub lost: u64,
    /// Dropped by the emulated bottleneck's full buffer.
    pub buffer_full: u64,
    /// Dropped because the emulator held its limit of packets already.
    pub overflow: u64,
    /// Held back so that later packets overtook them.
    pub reordered: u64,
    /// The longest a packet waited for the link (queueing, not counting its own serialization).
    pub max_queueing: Duration,
}

/// A packet handed back by [`Scheduler::push`] with why it was dropped.
#[derive(Debug)]
pub struct Dropped<T> {
    pub packet: T,
    pub reason: DropReason,
}

#[derive(Debug, Clone, Copy)]
struct Lane {
    /// When the link finishes sending what it has.
    free_at: Option<Instant>,
    /// The latest in-order release so far: jitter never puts a packet before it.
    last_release: Option<Instant>,
}

/// A held packet, ordered by release time, then by arrival.
#[derive(Debug)]
struct Held<T> {
    at: Instant,
    seq: u64,
    packet: T,
}

impl<T> PartialEq for Held<T> {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl<T> Eq for Held<T> {}
impl<T> PartialOrd for Held<T> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl<T> Ord for Held<T> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

/// The link's state for both directions.
#[derive(Debug)]
pub struct Scheduler<T> {
    profile: Profile,
    max_held: usize,
    rng: Rng,
    lanes: [Lane; 2],
    stats: [DirectionStats; 2],
    held: BinaryHeap<Reverse<Held<T>>>,
    seq: u64,
}

impl<T> Scheduler<T> {
    /// A link with `profile`, holding at most `max_held` packets at once (both directions), its
    /// random draws seeded with `seed`.
    pub fn new(profile: Profile, max_held: usize, seed: u64) -> Scheduler<T> {
        let lane = Lane {
            free_at: None,
            last_release: None,
        };
        Scheduler {
            profile,
            max_held,
            rng: Rng::new(seed),
            lanes: [lane; 2],
            stats: [DirectionStats::default(); 2],
            held: BinaryHeap::new(),
            seq: 0,
        }
    }

    /// Takes in a packet of `size` bytes that entered the link in direction `dir` at `now`.
    /// A dropped packet is handed back at once.
    pub fn push(
        &mut self,
        now: Instant,
        dir: Direction,
        size: usize,
        packet: T,
    ) -> Result<(), Dropped<T>> {
        let p = self.profile;
        let stats = &mut self.stats[dir.index()];
        stats.packets += 1;
        stats.bytes += size as u64;
        if self.rng.chance(p.loss) {
            stats.lost += 1;
            return Err(Dropped {
                packet,
                reason: DropReason::Loss,
            });
        }
        let lane = &mut self.lanes[dir.index()];
        let start = lane.free_at.map_or(now, |free| free.max(now));
        let queueing = start - now;
        if self.held.len() >= self.max_held {
            stats.overflow += 1;
            return Err(Dropped {
                packet,
                reason: DropReason::Overflow,
            });
        }
        if p.rate_bps.is_some() && queueing > p.buffer {
            stats.buffer_full += 1;
            return Err(Dropped {
                packet,
                reason: DropReason::BufferFull,
            });
        }
        stats.max_queueing = stats.max_queueing.max(queueing);
        let sent = start + p.serialization(size);
        lane.free_at = Some(sent);
        let arrival = self.jittered(sent);
        let lane = &mut self.lanes[dir.index()];
        let in_order = lane.last_release.map_or(arrival, |last| arrival.max(last));
        lane.last_release = Some(in_order);
        let at = if self.rng.chance(p.reorder) {
            self.stats[dir.index()].reordered += 1;
            in_order + p.reorder_gap
        } else {
            in_order
        };
        self.seq += 1;
        self.held.push(Reverse(Held {
            at,
            seq: self.seq,
            packet,
        }));
        Ok(())
    }

    /// `sent` plus the one-way delay and a uniform draw within ± jitter.
    fn jittered(&mut self, sent: Instant) -> Instant {
        let p = self.profile;
        let base = sent + p.delay();
        if p.jitter.is_zero() {
            return base;
        }
        let span = p.jitter.as_secs_f64();
        let offset = (self.rng.unit() * 2.0 - 1.0) * span;
        if offset >= 0.0 {
            base + Duration::from_secs_f64(offset)
        } else {
            // Never before it was sent.
            base.checked_sub(Duration::from_secs_f64(-offset))
                .map_or(sent, |t| t.max(sent))
        }
    }

    /// The next packet whose release time is at or before `now`.
    pub fn poll_release(&mut self, now: Instant) -> Option<T> {
        if self.held.peek().is_some_and(|Reverse(h)| h.at <= now) {
            self.held.pop().map(|Reverse(h)| h.packet)
        } else {
            None
        }
    }

    /// When the earliest held packet is due.
    pub fn next_release(&self) -> Option<Instant> {
        self.held.peek().map(|Reverse(h)| h.at)
    }

    /// Every held packet, at once, whatever its time (for shutting down).
    pub fn drain(&mut self) -> impl Iterator<Item = T> + '_ {
        self.held.drain().map(|Reverse(h)| h.packet)
    }

    /// Packets held now.
    pub fn held(&self) -> usize {
        self.held.len()
    }

    pub fn stats(&self, dir: Direction) -> DirectionStats {
        self.stats[dir.index()]
    }

    pub fn profile(&self) -> &Profile {
        &self.profile
    }
}

#[cfg(test)]
mod tests;
