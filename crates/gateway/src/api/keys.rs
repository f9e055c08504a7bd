//! The server API's keys: which one a request presents, compared in constant time, and each
//! key's own rate limit. A key is never logged; logs name it by its position in
//! `SWITCHBOARD_API_KEYS` (`key 1`, `key 2`, ...).

use std::sync::{Mutex, PoisonError};

use tokio::time::Instant;

use crate::limiter::RateLimiter;

pub struct ApiKeys {
    keys: Vec<Key>,
}

struct Key {
    secret: Box<[u8]>,
    limiter: Mutex<RateLimiter>,
}

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ApiKeys({} keys)", self.keys.len())
    }
}

impl ApiKeys {
    /// The keys, each allowed `per_sec` requests a second in bursts of `burst`; `None` without
    /// a key (the API is off).
    pub fn new(keys: &[String], per_sec: u32, burst: u32) -> Option<Self> {
        (!keys.is_empty()).then(|| Self {
            keys: keys
                .iter()
                .map(|key| Key {
                    secret: key.as_bytes().into(),
                    // Refusing is enough: there is no connection to close.
                    limiter: Mutex::new(RateLimiter::new(per_sec, burst, u32::MAX)),
                })
                .collect(),
        })
    }

    /// The position (from 1) of the key `presented` is. Every key is compared in full, whatever
    /// matched before, so the time taken says nothing of which key or how much of one matched.
    pub fn find(&self, presented: &[u8]) -> Option<usize> {
        let mut found = None;
        for (i, key) in self.keys.iter().enumerate() {
            if constant_time_eq(&key.secret, presented) {
                found = Some(i + 1);
            }
        }
        found
    }

    /// Whether key `number` (from [`ApiKeys::find`]) may make one more request now.
    pub fn admit(&self, number: usize, now: Instant) -> bool {
        self.keys.get(number.wrapping_sub(1)).is_some_and(|key| {
            key.limiter
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .admit(now)
        })
    }
}

/// Equal bytes, in a time that depends only on the lengths.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let difference = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(difference) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> ApiKeys {
        ApiKeys::new(
            &[
                "current-key-0123456789".into(),
                "previous-key-012345678".into(),
            ],
            1,
            2,
        )
        .expect("keys")
    }

    #[test]
    fn each_configured_key_is_found_by_its_position_and_nothing_else_is() {
        let keys = keys();
        assert_eq!(keys.find(b"current-key-0123456789"), Some(1));
        assert_eq!(keys.find(b"previous-key-012345678"), Some(2));
        for wrong in [
            &b""[..],
            b"current-key-012345678",
            b"current-key-01234567890",
            b"current-key-0123456788",
            b"CURRENT-KEY-0123456789",
        ] {
            assert_eq!(keys.find(wrong), None, "{}", String::from_utf8_lossy(wrong));
        }
        assert!(ApiKeys::new(&[], 1, 1).is_none(), "no key: the API is off");
    }

    #[test]
    fn each_key_has_its_own_bucket() {
        let keys = keys();
        let now = Instant::now();
        assert!(keys.admit(1, now) && keys.admit(1, now));
        assert!(!keys.admit(1, now), "key 1's burst is spent");
        assert!(keys.admit(2, now), "key 2 is not held back by key 1");
        assert!(!keys.admit(0, now) && !keys.admit(3, now), "no such key");
    }
}
