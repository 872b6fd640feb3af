//! The workstation side of tether.
