//! hubcast's demos, written as applications on the server library's public
//! API (`hubcast_server`) the way a user's application would be:
//!
//! - [`market`]: the prediction market of `hubcast demo` (LMSR pricing; a buy
//!   checked and committed with its event in one store transaction through
//!   the backend's extension, `hubcast_server::store::transaction`).
//! - [`chat`]: the chat page of `hubcast demo chat`, a plain client of the
//!   WebSocket protocol.

pub mod chat;
pub mod market;
