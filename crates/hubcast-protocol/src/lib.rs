//! hubcast's wire protocol, shared by the server, the Rust client and the
//! fuzz targets: room names, the messages clients and the server exchange,
//! the HTTP request shapes that carry client bytes, and every error and close
//! code. It knows nothing of sockets or runtimes. See docs/protocol.md.
//!
//! - [`message`]: client messages parsed, server messages encoded (the server's path).
//! - [`frame`]: server frames decoded ([`ServerFrame`]; the client's and the bus's path).
//! - [`batch`]: atomic batch publishes (HTTP body, socket `publish_batch`).
//! - [`codes`]: error codes, close codes, and a client's policy for each.
//! - [`sse`]: Server-Sent Events: the stream id that carries every room's cursor.

pub mod batch;
pub mod codes;
pub mod frame;
pub mod message;
pub mod pattern;
pub mod request;
pub mod room;
pub mod sse;
#[cfg(feature = "jwt")]
pub mod token;

pub use frame::ServerFrame;
pub use message::*;
