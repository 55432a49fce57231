//! The mailbox through which a session's subscription tasks report back.
//!
//! A `subscribe` runs on its own task (it may replay a long page); when it is
//! done it leaves its result here and the session's read loop picks it up.
//! Why not a tokio mpsc channel: an idle session has nothing in flight, yet a
//! channel costs it ~800 bytes up front (the cache-padded channel state plus
//! its first 32-slot block). A mutex-guarded `VecDeque` and a `Notify` cost ~100.

use std::collections::VecDeque;
use std::sync::Mutex;

use tokio::sync::Notify;

/// Results of finished subscription tasks, waiting for the session to read.
pub struct JoinReports<T> {
    queue: Mutex<VecDeque<T>>,
    ready: Notify,
}

impl<T> JoinReports<T> {
    pub fn new() -> JoinReports<T> {
        JoinReports {
            queue: Mutex::new(VecDeque::new()),
            ready: Notify::new(),
        }
    }

    /// Leaves a result and wakes the session. Never waits.
    pub fn send(&self, report: T) {
        self.queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push_back(report);
        // Stores a permit if the session is not waiting right now, so a
        // report left between its check and its wait still wakes it.
        self.ready.notify_one();
    }

    /// The oldest result, waiting for one if there is none.
    pub async fn recv(&self) -> T {
        loop {
            if let Some(report) = self.take() {
                return report;
            }
            self.ready.notified().await;
        }
    }

    fn take(&self) -> Option<T> {
        let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        let report = queue.pop_front();
        if queue.is_empty() {
            // Give the allocation back: an idle session holds none.
            *queue = VecDeque::new();
        }
        report
    }
}

#[cfg(test)]
mod tests {
    use super::JoinReports;
    use std::sync::Arc;

    #[tokio::test]
    async fn reports_arrive_in_order_sent_before_or_during_the_wait() {
        let reports = Arc::new(JoinReports::new());
        reports.send(1);
        reports.send(2);
        assert_eq!(reports.recv().await, 1);
        assert_eq!(reports.recv().await, 2);
        let sender = reports.clone();
        let waiter = tokio::spawn(async move { reports.recv().await });
        tokio::task::yield_now().await;
        sender.send(3);
        assert_eq!(waiter.await.unwrap(), 3);
    }
}
