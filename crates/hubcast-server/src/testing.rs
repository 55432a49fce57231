//! Internals for in-process tests (`features = ["testing"]`), not part of the
//! stable API: the hub hand-off property test (`tests/hub_handoff.rs`) drives
//! a node's hubs and the session's join directly, with no socket.

pub use crate::hub::Hubs;
pub use crate::node::Node;
pub use crate::session::join;
pub use crate::outbound::{Outbound, SessionControl};
