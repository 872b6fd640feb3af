//! The usual world: a fake cluster with a TCP and a UDP echo Service in namespace `shop`, a
//! manager serving it, and user `alice`, who may do everything, connected to it.

use std::net::{IpAddr, Ipv4Addr};

use tether_harness::servers::{self, Server};
use tether_harness::{FakeApi, FakeCluster, HarnessError, Manager, ManagerOptions, Workstation};
use tether_manager::view::Protocol;

/// The ClusterIP (and address) of Service `shop/echo`, a TCP echo.
pub const ECHO_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 11);
/// The ClusterIP (and address) of Service `shop/udp-echo`.
pub const UDP_ECHO_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 12);

pub type Result<T = ()> = std::result::Result<T, HarnessError>;

/// Logs to the test's output with `RUST_LOG=...` (shown for failing tests).
pub fn logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

pub struct World {
    pub api: FakeApi,
    pub echo: Server,
    pub udp_echo: Server,
    pub manager: Manager,
    pub alice: Workstation,
}

impl World {
    pub async fn start() -> Result<World> {
        World::start_with(ManagerOptions::default()).await
    }

    pub async fn start_with(options: ManagerOptions) -> Result<World> {
        logs();
        let api = FakeApi::new();
        api.allow_everything("alice");
        let echo = servers::tcp_echo(IpAddr::V4(ECHO_IP)).await?;
        let udp_echo = servers::udp_echo(IpAddr::V4(UDP_ECHO_IP)).await?;
        let cluster = FakeCluster::new()
            .namespace("web")
            .service("shop", "echo", echo.addr(), Protocol::Tcp)
            .service("shop", "udp-echo", udp_echo.addr(), Protocol::Udp);
        let manager = Manager::start_with(cluster.build(), &api, options)?;
        let credential = manager.session_credential("alice", &["devs"])?;
        let alice = Workstation::connect(&manager, &credential, "shop").await?;
        Ok(World {
            api,
            echo,
            udp_echo,
            manager,
            alice,
        })
    }
}
