//! tether's wire protocol.
#![forbid(unsafe_code)]
