//! The sidecar proxy on loopback: an "app" and a "laptop" (small HTTP servers that say who
//! answered and echo `x-session`), the proxy in front of the app, and intercepts that send some
//! or all traffic to the laptop. `bench` is an ignored measurement, for release builds.

mod bench;
mod routing;
mod support;
