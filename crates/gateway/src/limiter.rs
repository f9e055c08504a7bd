//! Rate limits: a token bucket, plus strikes that end a connection which keeps sending after
//! being told to slow down. Each connection has one (and one for its room events), and so have
//! each server API key and each client address opening connections (`connect_limit.rs`).

use std::time::Duration;

use tokio::time::Instant;

/// Rate-limited frames are counted within this window.
const STRIKE_WINDOW: Duration = Duration::from_secs(10);

#[derive(Debug)]
pub(crate) struct RateLimiter {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Option<Instant>,
    max_strikes: u32,
    strikes: u32,
    first_strike: Option<Instant>,
}

impl RateLimiter {
    pub(crate) fn new(per_sec: u32, burst: u32, max_strikes: u32) -> Self {
        Self {
            rate: f64::from(per_sec),
            burst: f64::from(burst),
            tokens: f64::from(burst),
            last: None,
            max_strikes,
            strikes: 0,
            first_strike: None,
        }
    }

    /// Takes a token for one frame; false (and a strike) when the bucket is empty.
    pub(crate) fn admit(&mut self, now: Instant) -> bool {
        if let Some(last) = self.last {
            let refill = now.saturating_duration_since(last).as_secs_f64() * self.rate;
            self.tokens = (self.tokens + refill).min(self.burst);
        }
        self.last = Some(now);
        if self
            .first_strike
            .is_some_and(|t| now.saturating_duration_since(t) > STRIKE_WINDOW)
        {
            self.strikes = 0;
            self.first_strike = None;
        }
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return true;
        }
        self.strikes += 1;
        self.first_strike.get_or_insert(now);
        false
    }

    /// Whether the bucket has refilled completely by `now`: its owner has been idle.
    pub(crate) fn is_full(&self, now: Instant) -> bool {
        let refill = self.last.map_or(0.0, |last| {
            now.saturating_duration_since(last).as_secs_f64() * self.rate
        });
        self.tokens + refill >= self.burst
    }

    /// The connection struck out: close it.
    pub(crate) fn exhausted(&self) -> bool {
        self.strikes >= self.max_strikes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bursts_then_refills_at_the_rate() {
        let mut limiter = RateLimiter::new(10, 5, 3);
        let now = Instant::now();
        assert!((0..5).all(|_| limiter.admit(now)));
        assert!(!limiter.admit(now));
        assert!(
            limiter.admit(now + Duration::from_millis(100)),
            "one token per 100 ms"
        );
        assert!(!limiter.exhausted());
    }

    #[test]
    fn repeated_abuse_strikes_out_but_strikes_expire() {
        let mut limiter = RateLimiter::new(1, 1, 3);
        let now = Instant::now();
        limiter.admit(now);
        for _ in 0..2 {
            assert!(!limiter.admit(now));
        }
        assert!(!limiter.exhausted());
        let later = now + STRIKE_WINDOW + Duration::from_secs(1);
        assert!(limiter.admit(later));
        assert!(!limiter.admit(later));
        assert!(!limiter.exhausted(), "old strikes expired");
        assert!(!limiter.admit(later));
        assert!(!limiter.admit(later));
        assert!(limiter.exhausted());
    }
}
