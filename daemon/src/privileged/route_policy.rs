//! The helper's own rules for a route the daemon asks for. The daemon (and through it the
//! manager, which announces the cluster's subnets) is not trusted here: whatever it asks, the
//! helper routes only cluster-sized unicast networks that leave the machine's own traffic alone.
//!
//! A route is refused when it
//! - is not a plain unicast network (see [`validate_route`]);
//! - is broader than [`MIN_PREFIX_LEN`] (`0.0.0.0/1` and `128.0.0.0/1` would take the default
//!   route's traffic without touching the default route);
//! - touches a `--never-proxy` range;
//! - covers the gateway of any existing route (the default route's first of all): the machine
//!   would lose its way out, and the tunnel with it. `--allow-conflicting-subnets` does not lift
//!   this;
//! - is identical to an existing route of another device: routes are added, never replaced, so
//!   what the machine had stays as it was. Nor does `--allow-conflicting-subnets` lift this;
//! - overlaps an existing route, unless `--allow-conflicting-subnets`;
//! - would bring the session's routed space past [`MAX_ROUTED_ADDRESSES`], not counting
//!   `--also-proxy` (root's own choice): many /8s, each allowed alone, would otherwise add up to
//!   the whole Internet.
//!
//! Sans-IO: the kernel's routes and what the session has routed so far are arguments.

use ipnet::{IpNet, Ipv4Net};

use super::route_check::{self, Conflict, Route};
use super::tun::{validate_route, TunError};

/// The broadest route the helper adds: a /8.
pub const MIN_PREFIX_LEN: u8 = 8;

/// The most addresses one session may route into the device besides `--also-proxy`: two /8s,
/// far more than any cluster's pod and service ranges.
pub const MAX_ROUTED_ADDRESSES: u64 = 2 << 24;

/// Why the helper refused a route.
#[derive(Debug, thiserror::Error)]
pub enum RouteRefused {
    /// Not a network address, or a range that is never routed (loopback, multicast, ...).
    #[error(transparent)]
    NotRoutable(#[from] TunError),
    /// Broader than [`MIN_PREFIX_LEN`].
    #[error("{0} is broader than /{MIN_PREFIX_LEN}; the helper never routes so much")]
    TooBroad(Ipv4Net),
    /// Touches a `--never-proxy` range.
    #[error("{cidr} touches the never-proxied range {never}")]
    NeverProxied { cidr: Ipv4Net, never: Ipv4Net },
    /// Covers the gateway an existing route goes through.
    #[error("{cidr} covers {route}'s gateway; routing it would cut the machine off")]
    CoversGateway { cidr: Ipv4Net, route: Route },
    /// An identical route exists on another device.
    #[error(
        "an identical route {0} exists; tether adds routes and never replaces one. Use \
         --never-proxy to leave that range alone"
    )]
    Identical(Route),
    /// Overlaps an existing route (without `--allow-conflicting-subnets`).
    #[error("{0}")]
    Conflict(Conflict),
    /// Past the session's budget.
    #[error(
        "{cidr} would bring the routed space to {total} addresses; the helper routes at most \
         {MAX_ROUTED_ADDRESSES} besides --also-proxy"
    )]
    OverBudget { cidr: Ipv4Net, total: u64 },
}

/// What root's command line allows.
#[derive(Debug, Clone, Default)]
pub struct RoutePolicy {
    /// `--never-proxy`.
    pub never: Vec<Ipv4Net>,
    /// `--also-proxy`: outside the budget.
    pub also: Vec<Ipv4Net>,
    /// `--allow-conflicting-subnets`.
    pub allow_conflicting: bool,
    /// The TUN device: its own routes never conflict.
    pub own_dev: String,
}

impl RoutePolicy {
    /// Checks `cidr` against the kernel's `existing` routes and the `routed` ones this session
    /// has added already.
    pub fn check(
        &self,
        cidr: Ipv4Net,
        existing: &[Route],
        routed: &[Ipv4Net],
    ) -> Result<(), RouteRefused> {
        if cidr.prefix_len() < MIN_PREFIX_LEN {
            return Err(RouteRefused::TooBroad(cidr));
        }
        validate_route(IpNet::V4(cidr))?;
        if let Some(n) = self.never.iter().find(|n| overlaps(n, &cidr)) {
            return Err(RouteRefused::NeverProxied { cidr, never: *n });
        }
        let others = existing.iter().filter(|r| r.dev != self.own_dev);
        for route in others.clone() {
            if route.gateway.is_some_and(|gw| cidr.contains(&gw)) {
                return Err(RouteRefused::CoversGateway {
                    cidr,
                    route: route.clone(),
                });
            }
            if route.dst == cidr {
                return Err(RouteRefused::Identical(route.clone()));
            }
        }
        if !self.allow_conflicting {
            let conflicts = route_check::find_conflicts(existing, &[cidr], &self.own_dev);
            if let Some(conflict) = conflicts.into_iter().next() {
                return Err(RouteRefused::Conflict(conflict));
            }
        }
        let total = routed_space(routed, cidr, &self.also);
        if total > MAX_ROUTED_ADDRESSES {
            return Err(RouteRefused::OverBudget { cidr, total });
        }
        Ok(())
    }
}

fn overlaps(a: &Ipv4Net, b: &Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// The addresses `routed` and `cidr` cover together, outside `also`.
fn routed_space(routed: &[Ipv4Net], cidr: Ipv4Net, also: &[Ipv4Net]) -> u64 {
    let mut all: Vec<Ipv4Net> = routed.to_vec();
    all.push(cidr);
    let union = Ipv4Net::aggregate(&all);
    route_check::subtract(&union, also)
        .iter()
        .map(|n| 1u64 << (32 - n.prefix_len()))
        .sum()
}

#[cfg(test)]
mod tests;
