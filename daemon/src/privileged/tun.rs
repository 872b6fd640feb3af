//! The TUN device and the routes that send cluster CIDRs into it (Linux).
//!
//! This is the privileged part of the daemon: creating the device needs `CAP_NET_ADMIN`, and so
//! does changing routes. It is kept small; its one `unsafe` adopts the descriptor the helper
//! passes to the daemon (tun-rs has no safe way to). The device comes from [`tun_rs`], routes
//! are changed with the `ip` command.
//!
//! Why the `ip` command rather than netlink (the `rtnetlink` crate): a session changes a handful
//! of routes, rarely, so the cost of a process per change does not matter; iproute2 is on every
//! Linux desktop; and it saves a sizeable async netlink dependency tree. Arguments are typed
//! values validated here and passed as separate argv entries (no shell), so nothing a caller
//! passes can be read as another option.
//!
//! The device is not persistent: when the last handle to it is dropped the kernel deletes it, and
//! with it every route through it.

use std::net::IpAddr;
use std::process::Stdio;

use ipnet::{IpNet, Ipv4Net};
use thiserror::Error;
use tun_rs::{AsyncDevice, DeviceBuilder};

/// Smallest MTU accepted: the IPv6 minimum, so that the same device could carry IPv6 later.
pub const MIN_MTU: u16 = 1280;
/// Packets the kernel queues for the daemon to read. The kernel's default, 500, overflowed when
/// 2,000 flows opened at once (`bench --only scale`: thousands of packets dropped at the TUN,
/// 2-7 % of UDP echoes lost, TCP flows waiting for retransmitted SYNs).
pub const TX_QUEUE_LEN: u32 = 4096;

/// Longest interface name Linux accepts (`IFNAMSIZ` - 1).
const MAX_NAME_LEN: usize = 15;

/// What the TUN device should look like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunConfig {
    /// Interface name, e.g. `tether0`.
    pub name: String,
    /// The device's own address and prefix, e.g. `198.18.0.1/32`.
    pub address: Ipv4Net,
    /// MTU in bytes. The stack terminates TCP locally, so a large MTU (up to 65535) only means
    /// fewer, larger packets between the kernel and us.
    pub mtu: u16,
}

/// Errors from creating the device or changing routes.
#[derive(Debug, Error)]
pub enum TunError {
    /// The interface name is empty, too long, or has characters Linux does not allow.
    #[error("invalid interface name {0:?}: use 1-15 characters from [A-Za-z0-9_.-]")]
    InvalidName(String),
    /// The MTU is below the minimum.
    #[error("invalid MTU {0}: must be at least {MIN_MTU}")]
    InvalidMtu(u16),
    /// A CIDR has host bits set, e.g. `10.0.0.1/8`.
    #[error("{given} is not a network address; did you mean {canonical}?")]
    NotCanonical {
        /// The CIDR as given.
        given: IpNet,
        /// The network it is inside.
        canonical: IpNet,
    },
    /// A CIDR that must never be routed into the tunnel (default route, loopback, multicast,
    /// link-local, unspecified).
    #[error("refusing to route {0} through the tunnel")]
    ForbiddenRoute(IpNet),
    /// Creating or configuring the device failed (missing privileges, name taken, ...).
    #[error("cannot create TUN device {name}")]
    Create {
        /// The requested name.
        name: String,
        /// What the kernel said.
        #[source]
        source: std::io::Error,
    },
    /// A route for the range exists already (tether never replaces one).
    #[error("a route for {0} exists already; tether adds routes and never replaces one")]
    RouteExists(IpNet),
    /// The `ip` command could not be started.
    #[error("cannot run `ip` (is iproute2 installed?)")]
    Spawn(#[source] std::io::Error),
    /// The `ip` command failed.
    #[error("`ip {args}` failed: {stderr}")]
    Command {
        /// The arguments passed.
        args: String,
        /// Its standard error, trimmed.
        stderr: String,
    },
}

/// A TUN device, up and addressed. Dropping it deletes the interface and its routes.
pub struct Tun {
    device: AsyncDevice,
    name: String,
    mtu: u16,
}

impl std::fmt::Debug for Tun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tun")
            .field("name", &self.name)
            .field("mtu", &self.mtu)
            .finish_non_exhaustive()
    }
}

impl Tun {
    /// Creates the device and brings it up. Must run inside a tokio runtime; the device belongs
    /// to the network namespace of the calling thread.
    pub fn create(config: &TunConfig) -> Result<Tun, TunError> {
        validate_name(&config.name)?;
        if config.mtu < MIN_MTU {
            return Err(TunError::InvalidMtu(config.mtu));
        }
        let create_err = |source| TunError::Create {
            name: config.name.clone(),
            source,
        };
        let device = DeviceBuilder::new()
            .name(config.name.as_str())
            .ipv4(config.address.addr(), config.address.prefix_len(), None)
            .mtu(config.mtu)
            .tx_queue_len(TX_QUEUE_LEN)
            .build_async()
            .map_err(create_err)?;
        tracing::debug!(name = %config.name, address = %config.address, mtu = config.mtu, "TUN device up");
        Ok(Tun {
            device,
            name: config.name.clone(),
            mtu: config.mtu,
        })
    }

    /// Wraps a device created by the privileged helper and passed over its channel.
    #[allow(unsafe_code)] // tun-rs has no safe way to adopt a descriptor.
    pub fn from_fd(fd: std::os::fd::OwnedFd, name: &str, mtu: u16) -> Result<Tun, TunError> {
        use std::os::fd::IntoRawFd;
        let raw = fd.into_raw_fd();
        // SAFETY: `raw` is a TUN device the helper opened with tun-rs (IFF_NO_PI, no vnet
        // header) and passed with SCM_RIGHTS; this process owns the only copy, handed over here.
        let device = unsafe { AsyncDevice::from_fd(raw) }.map_err(|source| TunError::Create {
            name: name.to_owned(),
            source,
        })?;
        Ok(Tun {
            device,
            name: name.to_owned(),
            mtu,
        })
    }

    /// The interface name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The MTU the device was created with.
    pub fn mtu(&self) -> u16 {
        self.mtu
    }

    /// Routes `cidr` into this device; see [`Routes::add`].
    pub async fn add_route(&self, cidr: IpNet) -> Result<(), TunError> {
        self.routes().add(cidr).await
    }

    /// Removes the route for `cidr` through this device.
    pub async fn remove_route(&self, cidr: IpNet) -> Result<(), TunError> {
        validate_route(cidr)?;
        ip(&["route", "del", &cidr.to_string(), "dev", &self.name]).await
    }

    /// A handle that changes this device's routes after the device went to the stack.
    pub fn routes(&self) -> Routes {
        Routes {
            name: self.name.clone(),
        }
    }

    /// Hands the packet device to the stack. Routes stay until the device is dropped.
    pub fn into_device(self) -> AsyncDevice {
        self.device
    }
}

impl std::os::fd::AsRawFd for Tun {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.device.as_raw_fd()
    }
}

/// Changes the routes of one TUN device (by name); validated like [`Tun::add_route`].
#[derive(Debug, Clone)]
pub struct Routes {
    name: String,
}

impl Routes {
    /// The routes of the device called `name`.
    pub fn named(name: &str) -> Routes {
        Routes {
            name: name.to_owned(),
        }
    }

    /// Routes `cidr` into the device. The route is added, never replaced: `ip route replace`
    /// would silently take over an identical route the machine had (and delete it with the
    /// device), so an existing one is an error.
    pub async fn add(&self, cidr: IpNet) -> Result<(), TunError> {
        validate_route(cidr)?;
        let args = add_route_args(cidr, &self.name);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        match ip(&args).await {
            Err(TunError::Command { stderr, .. }) if stderr.contains("File exists") => {
                Err(TunError::RouteExists(cidr))
            }
            other => other,
        }
    }
}

/// The `ip` arguments that add a route for `cidr` into `dev`.
fn add_route_args(cidr: IpNet, dev: &str) -> Vec<String> {
    ["route", "add", &cidr.to_string(), "dev", dev]
        .map(String::from)
        .to_vec()
}

/// Checks an interface name the way the kernel would, minus the characters that are legal there
/// but would only cause trouble (spaces, slashes, colons).
pub fn validate_name(name: &str) -> Result<(), TunError> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-');
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name.chars().all(ok_char)
        && name != "."
        && name != ".."
        && !name.starts_with('-');
    if ok {
        Ok(())
    } else {
        Err(TunError::InvalidName(name.to_owned()))
    }
}

/// Checks that `cidr` is a network address and a sane thing to send through the tunnel.
pub fn validate_route(cidr: IpNet) -> Result<(), TunError> {
    let canonical = cidr.trunc();
    if canonical != cidr {
        return Err(TunError::NotCanonical {
            given: cidr,
            canonical,
        });
    }
    let addr = cidr.network();
    let forbidden = cidr.prefix_len() == 0
        || addr.is_unspecified()
        || addr.is_loopback()
        || addr.is_multicast()
        || match addr {
            IpAddr::V4(v4) => v4.is_link_local() || v4.is_broadcast(),
            IpAddr::V6(v6) => v6.is_unicast_link_local(),
        };
    if forbidden {
        return Err(TunError::ForbiddenRoute(cidr));
    }
    Ok(())
}

/// Runs `ip ARGS`, mapping a non-zero exit to [`TunError::Command`].
async fn ip(args: &[&str]) -> Result<(), TunError> {
    let output = tokio::process::Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(TunError::Spawn)?;
    if output.status.success() {
        tracing::debug!(args = %args.join(" "), "ip");
        Ok(())
    } else {
        Err(TunError::Command {
            args: args.join(" "),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().expect("test CIDR parses")
    }

    #[test]
    fn names() {
        for good in ["tether0", "tnst-1234", "a", "tun_x.1", "abcdefghijklmno"] {
            assert!(validate_name(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "abcdefghijklmnop",
            "a b",
            "a/b",
            "a:1",
            ".",
            "..",
            "-x",
            "tün",
        ] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn routes() {
        for good in [
            "10.96.0.0/12",
            "10.123.4.5/32",
            "fd00:10:96::/112",
            "172.16.0.0/12",
        ] {
            assert!(validate_route(net(good)).is_ok(), "{good}");
        }
        for bad in [
            "0.0.0.0/0",
            "::/0",
            "127.0.0.0/8",
            "224.0.0.0/4",
            "169.254.0.0/16",
            "fe80::/10",
            "255.255.255.255/32",
            "0.0.0.0/8",
        ] {
            assert!(
                matches!(validate_route(net(bad)), Err(TunError::ForbiddenRoute(_))),
                "{bad}"
            );
        }
        let err = validate_route(net("10.96.0.1/12")).expect_err("host bits set");
        assert_eq!(
            add_route_args(net("10.96.0.0/12"), "tether0"),
            ["route", "add", "10.96.0.0/12", "dev", "tether0"],
            "routes are added, never replaced"
        );
        assert_eq!(
            err.to_string(),
            "10.96.0.1/12 is not a network address; did you mean 10.96.0.0/12?"
        );
    }
}
