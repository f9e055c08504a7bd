//! How PostgreSQL and pool failures become [`StoreError`]s.
//!
//! Everything the database cannot do right now (unreachable, restarting, timed out, a statement
//! refused) is [`StoreError::Unavailable`] with its cause chain; the session maps that to
//! `STORE_UNAVAILABLE` and logs the cause once. The few outcomes that are answers rather than
//! failures (a room id taken, a room missing) are recognised by SQLSTATE where they are queried.

use std::error::Error;
use std::sync::Arc;
use std::time::Duration;

use tokio_postgres::error::SqlState;

use crate::store::StoreError;

/// The error and its causes, `outer: inner: innermost`, each said once.
pub(super) fn cause_chain(error: &dyn Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

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

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn the_cause_chain_names_each_cause_once() {
        let error = Outer(std::io::Error::other("connection refused"));
        assert_eq!(cause_chain(&error), "outer: connection refused");
        let StoreError::Unavailable(cause) = unavailable(error) else {
            panic!("unavailable")
        };
        assert_eq!(cause_chain(&*cause), "outer: connection refused");
    }
}
