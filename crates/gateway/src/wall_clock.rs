//! Wall-clock time as the protocol speaks it: Unix milliseconds (`createdAt`, `lastSeen`,
//! `expiresAt`). Monotonic deadlines use `tokio::time::Instant` instead.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// `time` in Unix milliseconds; 0 before 1970.
pub fn unix_millis(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Now, in Unix milliseconds.
pub fn now_millis() -> u64 {
    unix_millis(SystemTime::now())
}

/// The time `millis` Unix milliseconds name.
pub fn from_millis(millis: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(millis)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn milliseconds_round_trip() {
        let at = 1_795_782_708_123;
        assert_eq!(unix_millis(from_millis(at)), at);
        assert_eq!(unix_millis(UNIX_EPOCH - Duration::from_secs(1)), 0);
    }
}
