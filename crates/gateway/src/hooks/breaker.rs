//! A circuit breaker per hook: after a run of failures the hook is not called for a cooldown, so
//! a backend that is down is answered `HOOK_UNAVAILABLE` at once instead of every client waiting
//! out the timeout, and it is not buried under calls while it recovers. After the cooldown one
//! call tries; its success closes the breaker, its failure opens it again.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

#[derive(Debug)]
pub(super) struct Breaker {
    /// Failures in a row that open the breaker.
    threshold: u32,
    cooldown: Duration,
    state: Mutex<State>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
    },
    /// One call is trying since then. A trial that never reports (its caller went away) counts
    /// as failed after a cooldown, so the breaker cannot stay stuck here.
    Trial {
        since: Instant,
    },
}

/// What the breaker did with a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Tripped {
    /// It opened now.
    Opened,
    /// It was already open or still counting.
    No,
}

impl Breaker {
    pub(super) fn new(threshold: u32, cooldown: Duration) -> Self {
        Self {
            threshold: threshold.max(1),
            cooldown,
            state: Mutex::new(State::Closed { failures: 0 }),
        }
    }

    /// Whether a call may go out now.
    pub(super) fn admit(&self, now: Instant) -> bool {
        let mut state = self.lock();
        match *state {
            State::Closed { .. } => true,
            State::Open { until } | State::Trial { since: until } if now >= until => {
                *state = State::Trial {
                    since: now + self.cooldown,
                };
                true
            }
            State::Open { .. } | State::Trial { .. } => false,
        }
    }

    pub(super) fn succeeded(&self) {
        *self.lock() = State::Closed { failures: 0 };
    }

    pub(super) fn failed(&self, now: Instant) -> Tripped {
        let mut state = self.lock();
        let open = State::Open {
            until: now + self.cooldown,
        };
        match *state {
            State::Closed { failures } if failures + 1 < self.threshold => {
                *state = State::Closed {
                    failures: failures + 1,
                };
                Tripped::No
            }
            State::Closed { .. } | State::Trial { .. } => {
                *state = open;
                Tripped::Opened
            }
            State::Open { .. } => Tripped::No,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The state is a value replaced whole: a panic elsewhere cannot leave it half-written.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const COOLDOWN: Duration = Duration::from_secs(5);

    #[test]
    fn opens_after_the_threshold_and_lets_one_trial_through_after_the_cooldown() {
        let t0 = Instant::now();
        let breaker = Breaker::new(3, COOLDOWN);
        assert!(breaker.admit(t0));
        assert_eq!(breaker.failed(t0), Tripped::No);
        assert_eq!(breaker.failed(t0), Tripped::No);
        assert!(breaker.admit(t0), "two failures are below the threshold");
        assert_eq!(breaker.failed(t0), Tripped::Opened);
        assert!(!breaker.admit(t0 + COOLDOWN / 2), "open");

        let later = t0 + COOLDOWN;
        assert!(breaker.admit(later), "the trial call");
        assert!(!breaker.admit(later), "only one trial at a time");
        assert_eq!(
            breaker.failed(later),
            Tripped::Opened,
            "a failed trial reopens"
        );
        assert!(!breaker.admit(later + COOLDOWN / 2));

        assert!(breaker.admit(later + COOLDOWN));
        breaker.succeeded();
        assert!(breaker.admit(later + COOLDOWN), "closed again");
    }

    #[test]
    fn a_success_resets_the_count_and_a_lost_trial_does_not_stick() {
        let t0 = Instant::now();
        let breaker = Breaker::new(2, COOLDOWN);
        breaker.failed(t0);
        breaker.succeeded();
        assert_eq!(breaker.failed(t0), Tripped::No, "the count started over");
        assert_eq!(breaker.failed(t0), Tripped::Opened);

        assert!(
            breaker.admit(t0 + COOLDOWN),
            "a trial whose caller vanishes"
        );
        assert!(!breaker.admit(t0 + COOLDOWN));
        assert!(
            breaker.admit(t0 + COOLDOWN * 2),
            "another trial after a cooldown without news"
        );
    }
}
