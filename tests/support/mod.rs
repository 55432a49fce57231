//! Shared helpers for the black-box tests, one file per thing:
//!
//! - [`wait`]: [`within`] and [`eventually`], the limits every await goes through.
//! - [`server`]: a real `hubcast serve` process on a port the kernel picks,
//!   with its own data directory and `hubcast.toml` ([`Server`]).
//! - [`cluster`]: the PostgreSQL + NATS backend (`HUBCAST_TEST_BACKEND=cluster`).
//! - [`api`]: an HTTP client for the v1 routes ([`Api`]).
//! - [`ws`]: a WebSocket client ([`Ws`]).
//! - [`raw_ws`]: a byte-level WebSocket client that can stop reading or never
//!   answer pings ([`RawWs`]).
//! - [`sse`]: a Server-Sent Events reader ([`SseStream`]).
//! - [`webhook_receiver`]: a Python webhook receiver that verifies signatures
//!   with the `standardwebhooks` package ([`webhook_receiver::Receiver`]).
//! - [`follower`]: a resuming follower that checks the gapless-sequence
//!   guarantee ([`Follower`]).
//!
//! A hang fails the test with a message instead of hanging the suite. No test
//! asserts a wall-clock duration: the limits here only turn "never" into a
//! failure. No test guesses a free port: servers are started on port 0 and
//! say which port they got.

// Every test binary compiles this module and uses a part of it.
#![allow(dead_code, unused_imports)]

pub mod api;
pub mod cluster;
pub mod follower;
pub mod raw_ws;
pub mod server;
pub mod sse;
pub mod wait;
pub mod webhook_receiver;
pub mod ws;

use std::sync::{Arc, Mutex};

pub use api::{range, seqs, Api, Receipt};
pub use cluster::{cluster_backend, pg_connect, test_nats_url, test_pg_url, Cluster};
pub use follower::{Followed, Follower};
pub use raw_ws::{Frame, RawWs};
pub use server::{Server, FAST};
pub use sse::{room_seqs, SseStream};
pub use wait::{eventually, within, PHASE, STEP};
pub use ws::Ws;

/// An error with all its sources, for failure messages.
pub fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

/// Collects values from tasks that push into a shared list.
pub fn shared<T>() -> Arc<Mutex<Vec<T>>> {
    Arc::new(Mutex::new(Vec::new()))
}

/// The resident memory of process `pid`, in KiB (`VmRSS` of /proc/PID/status).
pub fn rss_kib(pid: u32) -> u64 {
    let status =
        std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc/PID/status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/PID/status")
}
