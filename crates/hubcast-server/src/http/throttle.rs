//! Log lines at a bounded rate: the same failure repeated by a flood of
//! requests (a store outage, a node out of file descriptors) is logged once a
//! second with the number of lines suppressed since the last one, as
//! `metrics::note_refusal` does for refusals. Counters still count every one.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// One kind of log line, let through at most once a second.
pub struct LogThrottle {
    last_ms: AtomicI64,
    suppressed: AtomicU64,
}

impl LogThrottle {
    pub const fn new() -> LogThrottle {
        LogThrottle {
            last_ms: AtomicI64::new(i64::MIN),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(n)`: log this line, and say that `n` were suppressed before it;
    /// `None`: skip it (it is counted for the next line).
    pub fn admit(&self) -> Option<u64> {
        self.admit_at(crate::event::now_ms())
    }

    fn admit_at(&self, now_ms: i64) -> Option<u64> {
        let last = self.last_ms.load(Ordering::Relaxed);
        if now_ms.saturating_sub(last) >= 1000
            && self
                .last_ms
                .compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            Some(self.suppressed.swap(0, Ordering::Relaxed))
        } else {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_a_second_with_the_count_suppressed() {
        let throttle = LogThrottle::new();
        let admitted: Vec<Option<u64>> = [0, 10, 500, 999, 1000, 1001, 1500, 2000, 5000]
            .iter()
            .map(|&t| throttle.admit_at(1_000_000 + t))
            .collect();
        assert_eq!(
            admitted,
            [
                Some(0),
                None,
                None,
                None,
                Some(3),
                None,
                None,
                Some(2),
                Some(0)
            ]
        );
    }
}
