//! Waiting with a limit: every await of the tests goes through [`within`] or
//! [`eventually`], so a hang fails the test with a message. The limits are
//! generous on purpose: they turn "never" into a failure and measure nothing.

use std::future::Future;
use std::time::Duration;

/// The limit for one step: one frame, one request, one process start.
pub const STEP: Duration = Duration::from_secs(15);
/// The limit for a whole phase of a test (a replay, a churn run).
pub const PHASE: Duration = Duration::from_secs(90);

/// Awaits `fut`, failing the test if it takes longer than `limit`.
pub async fn within<T>(limit: Duration, what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(limit, fut).await {
        Ok(value) => value,
        Err(_) => panic!("timed out after {limit:?} waiting for {what}"),
    }
}

/// Polls `check` until it returns `Some`, failing after [`PHASE`].
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    within(PHASE, what, async {
        loop {
            if let Some(value) = check().await {
                return value;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    })
    .await
}
