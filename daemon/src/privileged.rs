//! The privileged part: the helper process that runs as root while the daemon does not
//! ([`helper`]), the channel between them ([`channel`]), and what the helper does besides the TUN
//! device (`tun`), each function one validated thing.

pub mod channel;
pub mod helper;
pub mod resolv_conf;
pub mod resolved;
pub mod route_check;
