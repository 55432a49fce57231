//! Per-second samples of the node's totals, kept for a minute: the rates and
//! the history `GET /v1/stats` serves (and the dashboard draws).

use std::collections::VecDeque;
use std::sync::Mutex;

use serde::Serialize;

/// Samples kept: one a second for the last minute.
const WINDOW: usize = 61;

/// One second's reading of the node.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Sample {
    /// Milliseconds since the Unix epoch.
    pub t: i64,
    /// Sessions open.
    pub connections: u64,
    /// Rooms with a hub on this node.
    pub rooms: u64,
    /// Events committed by this node since it started.
    pub published: u64,
    /// Event frames queued to sessions since it started.
    pub delivered: u64,
}

/// The last minute of samples, oldest first.
#[derive(Default)]
pub struct Samples {
    /// A std mutex: held only to push or copy, never across an await.
    samples: Mutex<VecDeque<Sample>>,
}

impl Samples {
    pub fn snapshot(&self) -> Vec<Sample> {
        self.samples
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .copied()
            .collect()
    }

    pub fn push(&self, sample: Sample) {
        let mut samples = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        if samples.len() == WINDOW {
            samples.pop_front();
        }
        samples.push_back(sample);
    }
}

/// Per-second rates between the first and the last sample.
pub fn rates(samples: &[Sample]) -> (f64, f64) {
    match (samples.first(), samples.last()) {
        (Some(first), Some(last)) if last.t > first.t => {
            let seconds = (last.t - first.t) as f64 / 1000.0;
            (
                (last.published - first.published) as f64 / seconds,
                (last.delivered - first.delivered) as f64 / seconds,
            )
        }
        _ => (0.0, 0.0),
    }
}
