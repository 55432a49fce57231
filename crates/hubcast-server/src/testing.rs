//! Internals for in-process tests (`features = ["testing"]`), not part of the
//! stable API: the hub hand-off property test (`tests/hub_handoff.rs`) drives
//! a node's hubs and the session's join directly, with no socket.

pub use crate::hub::Hubs;
pub use crate::node::Node;
pub use crate::outbound::{Outbound, SessionControl};
pub use crate::session::join;

/// Event data containing this string makes the hub that delivers it panic.
pub const HUB_PANIC: &str = "__hubcast_test_fault_hub_panic__";
/// Event data containing this string makes the SQLite writer thread panic.
pub const WRITER_PANIC: &str = "__hubcast_test_fault_writer_panic__";

/// A test-only fault hook: panics when `data` carries `fault`. Compiled only
/// with the `testing` feature, so release builds have no such path.
pub(crate) fn fault_point(data: &str, fault: &str) {
    if data.contains(fault) {
        panic!("injected fault {fault}");
    }
}
