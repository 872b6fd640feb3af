//! Loopback tests of the tunnel: handshakes, trust, and both carriers.

mod carrier;
mod handshake;
mod support;
mod throughput;
mod trust;
