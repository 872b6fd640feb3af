//! The in-cluster side of tether.
#![forbid(unsafe_code)]
