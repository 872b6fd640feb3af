//! The privileged part: the helper process that runs as root while the daemon does not
//! ([`helper`]), the channel between them ([`channel`]), who runs what ([`identity`]), root's
//! files ([`runtime_dir`]), the TUN device and its routes ([`tun`], Linux), and what else the
//! helper does, each function one validated thing ([`route_policy`], [`domain`], [`resolv_conf`], [`resolved`], [`fuse_mount`]).

pub mod channel;
pub mod domain;
#[cfg(target_os = "linux")]
pub mod fuse_mount;
pub mod helper;
pub mod identity;
pub mod resolv_conf;
pub mod resolved;
pub mod route_check;
pub mod route_policy;
pub mod runtime_dir;
#[cfg(target_os = "linux")]
pub mod tun;
