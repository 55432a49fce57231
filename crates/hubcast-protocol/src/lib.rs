//! hubcast's wire protocol, shared by the server, the Rust client and the
//! fuzz targets: room names, the messages clients and the server exchange,
//! the HTTP request shapes that carry client bytes, and every error and close
//! code. It knows nothing of sockets or runtimes. See docs/protocol.md.

pub mod codes;
pub mod message;
pub mod pattern;
pub mod request;
pub mod room;
#[cfg(feature = "jwt")]
pub mod token;

pub use message::*;
