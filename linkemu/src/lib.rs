//! tether-linkemu: a userspace link emulator for the benchmarks and tests.
//!
//! The kernel this project runs its cluster on has no `netem`, but it has NFQUEUE. The emulator
//! queues every packet crossing one interface (both directions) to itself, holds each one as a
//! link with a [`Profile`] would (one-way delay, jitter, rate, random loss, reordering), and
//! gives the kernel its verdict when the packet's time has come: verdicts go out of order, which
//! NFQUEUE allows.
//!
//! # Layout
//! - [`profile`]: the link's parameters and the benchmark's named profiles.
//! - [`sched`]: the sans-IO core, which decides each packet's fate on a clock passed in.
//! - [`rng`]: the seeded random source the core draws from.
//! - [`iptables`]: the NFQUEUE rules, added and removed exactly.
//! - [`queue`]: the I/O loop around the core (the NFQUEUE socket, signals, timers).

pub mod iptables;
pub mod profile;
pub mod queue;
pub mod rng;
pub mod sched;

pub use profile::{Named, Profile};
pub use sched::{Direction, DropReason, Scheduler};
