//! How PostgreSQL and pool failures become [`StoreError`]s.
//!
//! Everything the database cannot do right now (unreachable, restarting, timed out, a statement
//! refused) is [`StoreError::Unavailable`] with its cause; the session maps that to
//! `STORE_UNAVAILABLE` and logs the cause once. A commit that got no answer is
//! [`StoreError::OutcomeUnknown`] (see `batch.rs`). The few outcomes that are answers rather than
//! failures (a room id taken, a room missing) are recognised by SQLSTATE where they are queried.

use std::error::Error;
use std::sync::Arc;
use std::time::Duration;

use tokio_postgres::error::SqlState;

use crate::store::StoreError;

/// Any database or pool failure: the store is unavailable, with the cause for the log.
pub(super) fn unavailable<E: Error + Send + Sync + 'static>(error: E) -> StoreError {
    StoreError::Unavailable(Arc::new(error))
}

/// No answer from PostgreSQL within the configured timeout.
#[derive(Debug, thiserror::Error)]
#[error("no answer from PostgreSQL within {} ms", .0.as_millis())]
pub(super) struct TimedOut(pub(super) Duration);

/// A call that did not finish within the configured timeout, and wrote nothing that a retry
/// could not repeat: the store is unavailable.
pub(super) fn timed_out(timeout: Duration) -> StoreError {
    unavailable(TimedOut(timeout))
}

/// Whether running the same transaction again may succeed: another writer won a race.
pub(super) fn is_race(error: &tokio_postgres::Error) -> bool {
    matches!(
        error.code(),
        Some(code) if *code == SqlState::UNIQUE_VIOLATION
            || *code == SqlState::T_R_DEADLOCK_DETECTED
            || *code == SqlState::T_R_SERIALIZATION_FAILURE
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Chain;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn a_failure_keeps_its_cause() {
        let error = Outer(std::io::Error::other("connection refused"));
        let StoreError::Unavailable(cause) = unavailable(error) else {
            panic!("unavailable")
        };
        assert_eq!(Chain(&*cause).to_string(), "outer: connection refused");
    }
}
