//! `tether-agent`: the traffic manager and the sidecar traffic agent, in one image.
#![forbid(unsafe_code)]

fn main() {
    println!("tether-agent {}", env!("CARGO_PKG_VERSION"));
}
