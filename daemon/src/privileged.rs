//! The privileged part besides the TUN device (`tun`): each function does one validated thing.

pub mod resolv_conf;
pub mod route_check;
