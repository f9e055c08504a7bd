//! Room passwords: only an Argon2id hash is stored. Hashing is deliberately slow, so it runs
//! on the blocking pool, never on a session's executor thread.

use argon2::Argon2;
use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use switchboard_protocol::ErrorCode;

use crate::error::{BackendError, SessionError};

/// Longest accepted password, in bytes: bounds the hashing cost a client can cause.
const MAX_PASSWORD_BYTES: usize = 256;

pub async fn hash(password: String) -> Result<String, SessionError> {
    check_len(&password)?;
    run(move || {
        let salt = SaltString::generate(&mut OsRng);
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .ok()
    })
    .await?
    .ok_or_else(internal)
}

pub async fn verify(password: String, hash: String) -> Result<bool, SessionError> {
    check_len(&password)?;
    run(move || {
        PasswordHash::new(&hash)
            .map(|parsed| {
                Argon2::default()
                    .verify_password(password.as_bytes(), &parsed)
                    .is_ok()
            })
            .ok()
    })
    .await?
    .ok_or_else(internal)
}

fn check_len(password: &str) -> Result<(), SessionError> {
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(SessionError::refused(
            ErrorCode::InvalidField,
            format!("password is longer than {MAX_PASSWORD_BYTES} bytes"),
        ));
    }
    Ok(())
}

async fn run<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, SessionError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|error| BackendError::Passwords(error.into()).into())
}

fn internal() -> SessionError {
    BackendError::Passwords("the hasher refused its input".into()).into()
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn a_hash_verifies_its_password_only() {
        let hash = super::hash("s3cret".into()).await.unwrap();
        assert!(!hash.contains("s3cret"));
        assert!(super::verify("s3cret".into(), hash.clone()).await.unwrap());
        assert!(!super::verify("guess".into(), hash).await.unwrap());
    }
}
