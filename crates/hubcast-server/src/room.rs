//! Room names: defined in the protocol crate (`hubcast_protocol::room`), the one
//! place that decides what a valid room name is.

pub use hubcast_protocol::room::*;
