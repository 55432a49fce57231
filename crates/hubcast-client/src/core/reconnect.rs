//! When to reconnect after a socket closed: the backoff (exponential with full
//! jitter) and how the close code's policy ([`CloseCode::reconnect`], written
//! in the protocol crate's `codes` with every other code) turns into a delay.
//! docs/clients.md, "Reconnect policy".

use hubcast_protocol::codes::{sdk, CloseCode, Reconnect};

use crate::types::ClientError;

/// Reconnect backoff: exponential with full jitter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub min_delay_ms: u64,
    pub max_delay_ms: u64,
    /// The least wait after 1013 (over capacity), 4008 (rate limited) or 4013
    /// (the connect hook could not decide).
    pub try_again_later_ms: u64,
}

impl Default for Backoff {
    fn default() -> Backoff {
        Backoff {
            min_delay_ms: 250,
            max_delay_ms: 30_000,
            try_again_later_ms: 5_000,
        }
    }
}

impl Backoff {
    /// `floor(random × min(max, min × 2^attempt))`.
    pub fn delay(&self, attempt: u32, random: f64) -> u64 {
        let window = (self.max_delay_ms as f64)
            .min(self.min_delay_ms as f64 * 2f64.powi(attempt.min(30) as i32));
        (random * window).floor() as u64
    }

    /// The delay before reconnecting after a close with `code` that is not
    /// terminal. `attempt` counts the failed attempts since the last `welcome`
    /// (0 when the closed session had one: `welcomed`). `random` is asked only
    /// when the delay is jittered.
    pub(super) fn after_close(
        &self,
        code: u16,
        welcomed: bool,
        attempt: u32,
        random: impl FnOnce() -> f64,
    ) -> u64 {
        match CloseCode::from(code).reconnect() {
            Reconnect::AtOnce if welcomed => 0,
            Reconnect::TryAgainLater => self.delay(attempt, random()).max(self.try_again_later_ms),
            _ => self.delay(attempt, random()),
        }
    }
}

/// Whether the client closes for good after `code`: reconnecting as is cannot help.
pub(super) fn is_terminal(code: u16) -> bool {
    CloseCode::from(code).reconnect() == Reconnect::Never
}

/// The error a terminal close surfaces with (and fails pending publishes with).
pub(super) fn terminal_error(code: u16, reason: &str) -> ClientError {
    let name = CloseCode::from(code)
        .terminal_error_code()
        .unwrap_or(sdk::CLOSED);
    let reason = if reason.is_empty() {
        String::new()
    } else {
        format!(": {reason}")
    };
    let mut error = ClientError::new(
        name,
        format!("connection closed with {code}{reason}; not retrying"),
    );
    error.close_code = Some(code);
    error
}

#[cfg(test)]
mod tests {
    use hubcast_protocol::codes::close;

    use super::*;

    #[test]
    fn delays_per_close_code() {
        let backoff = Backoff {
            min_delay_ms: 100,
            max_delay_ms: 1000,
            try_again_later_ms: 5000,
        };
        let check = |code, welcomed, attempt, want: u64| {
            assert_eq!(
                backoff.after_close(code, welcomed, attempt, || 0.5),
                want,
                "{code} {welcomed} {attempt}"
            );
        };
        check(close::RESTART, true, 0, 0);
        check(close::GOING_AWAY, true, 0, 0);
        check(close::RESTART, false, 2, 200);
        check(close::TRY_AGAIN_LATER, true, 0, 5000);
        check(close::RATE_LIMITED, false, 9, 5000);
        check(close::SLOW_CONSUMER, true, 0, 50);
        check(close::ABNORMAL, false, 3, 400);
        check(close::ABNORMAL, false, 30, 500);
        assert!(
            is_terminal(close::UNAUTHENTICATED)
                && is_terminal(close::TOO_BIG)
                && !is_terminal(close::ABNORMAL)
        );
        let error = terminal_error(close::POLICY, "binary");
        assert_eq!(
            (error.code.as_str(), error.close_code),
            ("policy_violation", Some(close::POLICY))
        );
        assert_eq!(
            error.message,
            "connection closed with 1008: binary; not retrying"
        );
    }
}
