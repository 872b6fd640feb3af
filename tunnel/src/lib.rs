//! The QUIC tunnel shared by the daemon and the agent.
#![forbid(unsafe_code)]
