//! `tether`: connect a workstation to a Kubernetes cluster.
#![forbid(unsafe_code)]

fn main() {
    println!("tether {}", env!("CARGO_PKG_VERSION"));
}
