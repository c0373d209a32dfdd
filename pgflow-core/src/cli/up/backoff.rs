//! The restart backoff of `pgflow up`'s supervisor: how long to wait before
//! restarting a child that exited on its own. The pause doubles with each
//! crash (1 s, 2 s, 4 s, ... up to [`MAX_BACKOFF`]) and starts over at 1 s
//! once the child had been running healthily for [`HEALTHY_RESET`], so a
//! service that crashes once a day is not punished for last week's crashes.
//!
//! Time is passed in (`Instant`s), never read here, so the logic is tested
//! without waiting.

use std::time::{Duration, Instant};

/// First pause before restarting a child that exited on its own.
pub const INITIAL_BACKOFF: Duration = Duration::from_secs(1);
/// Longest pause between two restarts of a crashing child.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A child that ran (ready) at least this long before exiting is restarted
/// after [`INITIAL_BACKOFF`] again: the backoff only grows for children that
/// crash soon after starting.
pub const HEALTHY_RESET: Duration = Duration::from_secs(30);

/// Restart backoff of one supervised child.
#[derive(Debug, Clone)]
pub struct RestartBackoff {
    next: Duration,
    ready_at: Option<Instant>,
}

impl Default for RestartBackoff {
    fn default() -> Self {
        Self::new()
    }
}

impl RestartBackoff {
    /// A backoff whose first pause is [`INITIAL_BACKOFF`].
    pub fn new() -> Self {
        RestartBackoff {
            next: INITIAL_BACKOFF,
            ready_at: None,
        }
    }

    /// The child printed its ready line at `now`.
    pub fn ready(&mut self, now: Instant) {
        self.ready_at = Some(now);
    }

    /// The child exited (or failed to start) at `now`: the pause before the
    /// next start. It is [`INITIAL_BACKOFF`] when the child had been ready
    /// for at least [`HEALTHY_RESET`], else the previous pause doubled
    /// (capped at [`MAX_BACKOFF`]).
    pub fn exited(&mut self, now: Instant) -> Duration {
        if let Some(ready_at) = self.ready_at.take() {
            if now.saturating_duration_since(ready_at) >= HEALTHY_RESET {
                self.next = INITIAL_BACKOFF;
            }
        }
        let pause = self.next;
        self.next = (self.next * 2).min(MAX_BACKOFF);
        pause
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn crashes_soon_after_start_double_the_pause_up_to_the_cap() {
        let t0 = Instant::now();
        let mut b = RestartBackoff::new();
        let mut now = t0;
        let mut pauses = Vec::new();
        for _ in 0..7 {
            b.ready(now);
            now += S(2);
            let p = b.exited(now);
            pauses.push(p.as_secs());
            now += p;
        }
        assert_eq!(pauses, [1, 2, 4, 8, 16, 30, 30]);
    }

    #[test]
    fn healthy_running_resets_the_pause() {
        let t0 = Instant::now();
        let mut b = RestartBackoff::new();
        // Two quick crashes: 1 s, 2 s.
        b.ready(t0);
        assert_eq!(b.exited(t0 + S(1)), S(1));
        b.ready(t0 + S(2));
        assert_eq!(b.exited(t0 + S(3)), S(2));
        // The third run is healthy for 45 s: the pause starts over.
        b.ready(t0 + S(5));
        assert_eq!(b.exited(t0 + S(50)), INITIAL_BACKOFF);
        // And grows again from there.
        b.ready(t0 + S(51));
        assert_eq!(b.exited(t0 + S(52)), S(2));
    }

    #[test]
    fn the_reset_needs_the_full_healthy_period() {
        let t0 = Instant::now();
        let mut b = RestartBackoff::new();
        b.ready(t0);
        assert_eq!(b.exited(t0), S(1));
        b.ready(t0 + S(1));
        // Just under the healthy period: no reset.
        assert_eq!(
            b.exited(t0 + S(1) + HEALTHY_RESET - Duration::from_millis(1)),
            S(2)
        );
        b.ready(t0 + S(40));
        assert_eq!(b.exited(t0 + S(40) + HEALTHY_RESET), S(1));
    }

    #[test]
    fn a_failed_start_is_not_healthy_running() {
        let t0 = Instant::now();
        let mut b = RestartBackoff::new();
        b.ready(t0);
        assert_eq!(b.exited(t0 + S(1)), S(1));
        // A start that never became ready, long after: no ready line, no reset.
        assert_eq!(b.exited(t0 + S(100)), S(2));
        assert_eq!(b.exited(t0 + S(200)), S(4));
    }
}
