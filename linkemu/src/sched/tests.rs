//! The scheduler on a fake clock: virtual instants, seeded draws.

use std::time::{Duration, Instant};

use super::*;
use crate::profile::Profile;

const MS: Duration = Duration::from_millis(1);

fn delay_only(rtt_ms: u32) -> Profile {
    Profile {
        rtt: rtt_ms * MS,
        ..Profile::LAN
    }
}

/// Releases everything due up to `until`, stepping the clock by `step`; (id, release time).
fn run_until(
    s: &mut Scheduler<u64>,
    from: Instant,
    until: Instant,
    step: Duration,
) -> Vec<(u64, Instant)> {
    let mut out = Vec::new();
    let mut now = from;
    while now <= until {
        while let Some(id) = s.poll_release(now) {
            out.push((id, now));
        }
        now += step;
    }
    out
}

#[test]
fn each_direction_delays_by_half_the_rtt() {
    let t0 = Instant::now();
    let mut s = Scheduler::new(delay_only(20), 1000, 1);
    s.push(t0, Direction::Up, 100, 1).unwrap();
    s.push(t0 + MS, Direction::Down, 100, 2).unwrap();
    assert_eq!(s.next_release(), Some(t0 + 10 * MS));
    assert_eq!(s.poll_release(t0 + 10 * MS - Duration::from_nanos(1)), None);
    assert_eq!(s.poll_release(t0 + 10 * MS), Some(1));
    assert_eq!(s.poll_release(t0 + 10 * MS), None);
    assert_eq!(s.next_release(), Some(t0 + 11 * MS));
    assert_eq!(s.poll_release(t0 + 11 * MS), Some(2));
    assert_eq!(s.held(), 0);
}

#[test]
fn lan_releases_at_once() {
    let t0 = Instant::now();
    let mut s = Scheduler::new(Profile::LAN, 10, 1);
    s.push(t0, Direction::Up, 1500, 7).unwrap();
    assert_eq!(s.poll_release(t0), Some(7));
}

#[test]
fn the_rate_spaces_packets_by_their_serialization_time() {
    // 1500 bytes at 200 Mbit/s: 60 µs each. A burst of 100 arriving together leaves at the rate.
    let p = Profile {
        rtt: 20 * MS,
        rate_bps: Some(200_000_000),
        buffer: 100 * MS,
        ..Profile::LAN
    };
    let t0 = Instant::now();
    let mut s = Scheduler::new(p, 1000, 1);
    for id in 0..100 {
        s.push(t0, Direction::Down, 1500, id).unwrap();
    }
    let out = run_until(&mut s, t0, t0 + 30 * MS, Duration::from_micros(1));
    assert_eq!(out.len(), 100);
    for (i, (id, at)) in out.iter().enumerate() {
        assert_eq!(*id, i as u64, "in order");
        let expected = t0 + 10 * MS + Duration::from_micros(60) * (i as u32 + 1);
        assert_eq!(*at, expected, "packet {i}");
    }
    // 12 MB/s over the whole burst: 150 kB in 6 ms.
    assert_eq!(
        s.stats(Direction::Down).max_queueing,
        Duration::from_micros(60 * 99)
    );
    // The other direction has its own link.
    s.push(t0 + 30 * MS, Direction::Up, 1500, 1000).unwrap();
    assert_eq!(
        s.next_release(),
        Some(t0 + 40 * MS + Duration::from_micros(60))
    );
}

#[test]
fn a_full_bottleneck_buffer_drops_and_counts() {
    // 10 ms of buffer at 12 Mbit/s: 1000 µs per 1500-byte packet, so 11 fit (the first does not
    // wait; the 11th waits exactly 10 ms), the rest overflow.
    let p = Profile {
        rate_bps: Some(12_000_000),
        buffer: 10 * MS,
        ..Profile::LAN
    };
    let t0 = Instant::now();
    let mut s = Scheduler::new(p, 1000, 1);
    let mut dropped = Vec::new();
    for id in 0..20u64 {
        if let Err(d) = s.push(t0, Direction::Up, 1500, id) {
            assert_eq!(d.reason, DropReason::BufferFull);
            dropped.push(d.packet);
        }
    }
    assert_eq!(dropped, (11..20).collect::<Vec<_>>());
    let st = s.stats(Direction::Up);
    assert_eq!(
        (st.packets, st.buffer_full, st.overflow, st.lost),
        (20, 9, 0, 0)
    );
    assert_eq!(s.held(), 11);
    // Once the queue drained, packets are taken again.
    assert!(s.push(t0 + 11 * MS, Direction::Up, 1500, 99).is_ok());
}

#[test]
fn the_held_packet_limit_overflows_and_counts() {
    let t0 = Instant::now();
    let mut s = Scheduler::new(delay_only(100), 5, 1);
    let results: Vec<bool> = (0..8)
        .map(|id| s.push(t0, Direction::Down, 60, id).is_ok())
        .collect();
    assert_eq!(results, [true, true, true, true, true, false, false, false]);
    let st = s.stats(Direction::Down);
    assert_eq!((st.overflow, st.buffer_full), (3, 0));
    assert_eq!(s.drain().count(), 5);
    assert_eq!(s.held(), 0);
}

#[test]
fn loss_rate_is_close_to_the_profile() {
    let p = Profile {
        loss: 0.01,
        ..delay_only(50)
    };
    let t0 = Instant::now();
    let mut s = Scheduler::new(p, usize::MAX, 42);
    let n = 200_000u64;
    let mut lost = 0;
    for id in 0..n {
        if let Err(d) = s.push(t0, Direction::Up, 1500, id) {
            assert_eq!(d.reason, DropReason::Loss);
            lost += 1;
        }
    }
    assert_eq!(s.stats(Direction::Up).lost, lost);
    let rate = lost as f64 / n as f64;
    // σ = sqrt(p(1-p)/n) ≈ 0.00022: ±5σ.
    assert!((rate - 0.01).abs() < 0.0011, "loss rate {rate}");
    // Seeded: the same again.
    let mut again = Scheduler::new(p, usize::MAX, 42);
    let lost_again = (0..n)
        .filter(|id| again.push(t0, Direction::Up, 1500, *id).is_err())
        .count() as u64;
    assert_eq!(lost_again, lost);
}

#[test]
fn jitter_stays_within_bounds() {
    let p = Profile {
        jitter: 3 * MS,
        ..delay_only(20)
    };
    let t0 = Instant::now();
    let mut s = Scheduler::new(p, usize::MAX, 7);
    // Sparse packets (further apart than the jitter's span): each delay is its own draw.
    let sent = |id: u64| t0 + 7 * MS * id as u32;
    for id in 0..300u64 {
        s.push(sent(id), Direction::Up, 100, id).unwrap();
    }
    let mut delays = Vec::new();
    while let Some(at) = s.next_release() {
        let id = s.poll_release(at).unwrap();
        delays.push(at - sent(id));
    }
    assert_eq!(delays.len(), 300);
    assert!(
        delays.iter().all(|d| (7 * MS..=13 * MS).contains(d)),
        "{delays:?}"
    );
    let (min, max) = (delays.iter().min(), delays.iter().max());
    // The draws do spread over the range.
    assert!(
        min < Some(&(8 * MS)) && max > Some(&(12 * MS)),
        "{min:?} {max:?}"
    );
}

#[test]
fn jitter_alone_never_reorders_dense_traffic() {
    // Packets 100 µs apart with ± 3 ms of jitter: a later packet's draw often comes before an
    // earlier one's; it waits for it. (So under a bulk flow the delay sits near its top.)
    let p = Profile {
        jitter: 3 * MS,
        ..delay_only(20)
    };
    let t0 = Instant::now();
    let mut s = Scheduler::new(p, usize::MAX, 7);
    let sent = |id: u64| t0 + Duration::from_micros(100 * id);
    for id in 0..1000u64 {
        s.push(sent(id), Direction::Up, 100, id).unwrap();
    }
    let mut expected = 0;
    while let Some(at) = s.next_release() {
        let id = s.poll_release(at).unwrap();
        assert_eq!(id, expected, "in order");
        let delay = at - sent(id);
        assert!(
            (7 * MS..=13 * MS).contains(&delay),
            "packet {id}: {delay:?}"
        );
        expected += 1;
    }
    assert_eq!(expected, 1000);
}

#[test]
fn reordering_is_light_and_bounded() {
    let p = Profile {
        reorder: 0.01,
        reorder_gap: 3 * MS,
        ..delay_only(50)
    };
    let t0 = Instant::now();
    let mut s = Scheduler::new(p, usize::MAX, 3);
    let n = 20_000u64;
    // One packet every 50 µs.
    let sent = |id: u64| t0 + Duration::from_micros(50 * id);
    for id in 0..n {
        s.push(sent(id), Direction::Down, 1500, id).unwrap();
    }
    let mut out = Vec::new();
    while let Some(at) = s.next_release() {
        out.push((s.poll_release(at).unwrap(), at));
    }
    assert_eq!(out.len() as u64, n);
    let reordered = s.stats(Direction::Down).reordered;
    let share = reordered as f64 / n as f64;
    assert!((share - 0.01).abs() < 0.004, "reordered share {share}");
    let mut late = 0;
    for (id, at) in &out {
        let slot = sent(*id) + 25 * MS;
        // Either on time, or exactly the gap late: never more.
        if *at != slot {
            assert_eq!(*at, slot + 3 * MS, "packet {id}");
            late += 1;
        }
    }
    assert_eq!(late, reordered);
    // How far out of order: a held-back packet is overtaken only by what entered within the gap
    // after it (3 ms / 50 µs = 60 packets).
    let mut max_displacement = 0;
    for (pos, (id, _)) in out.iter().enumerate() {
        max_displacement = max_displacement.max(pos.abs_diff(*id as usize));
    }
    assert!(max_displacement > 0, "some reordering happened");
    assert!(max_displacement <= 60, "displacement {max_displacement}");
}
