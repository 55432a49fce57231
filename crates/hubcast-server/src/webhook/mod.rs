//! Webhooks: what the application's backend is told, in the Standard Webhooks
//! format (<https://www.standardwebhooks.com>): which endpoints want which
//! kinds of message for which rooms (`endpoint`), the signed headers
//! (`signature`) and the JSON body (`message`).
//!
//! This module is the definitions only, below the store: the store records a
//! rendered message in the same transaction that makes it true (an
//! `event.published` with its event). Delivering them is `webhook_worker`;
//! occupancy is `occupancy`.

mod endpoint;
mod message;
pub mod pusher;
mod signals;
mod signature;
pub mod tally;

pub use endpoint::{Endpoint, EventKind, WebhookConfig, Webhooks};
pub use message::{rfc3339_ms, NewWebhook};
pub use signals::{RoomSignal, RoomSignals, SignalQueues};
pub use signature::{parse_secret, sign};
