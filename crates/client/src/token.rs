//! Where tokens come from: a fixed string, or a function the client calls for every connect and
//! every refresh (`auth:expiring`), which a long-running client needs.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::error::BoxError;

type Provider =
    dyn Fn() -> Pin<Box<dyn Future<Output = Result<String, BoxError>> + Send>> + Send + Sync;

/// A token, or a function giving a fresh one.
#[derive(Clone)]
pub enum TokenSource {
    /// Used as is: the connection closes with 4003 at its expiry, and reconnects are refused.
    Fixed(String),
    /// Called for every connect and before every expiry.
    Provider(Arc<Provider>),
}

impl TokenSource {
    /// A function returning a fresh token, e.g. from the app's backend.
    pub fn provider<F, Fut>(f: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<String, BoxError>> + Send + 'static,
    {
        Self::Provider(Arc::new(move || Box::pin(f())))
    }

    pub(crate) async fn token(&self) -> Result<String, BoxError> {
        match self {
            Self::Fixed(token) => Ok(token.clone()),
            Self::Provider(provider) => provider().await,
        }
    }

    pub(crate) fn refreshable(&self) -> bool {
        matches!(self, Self::Provider(_))
    }
}

impl From<String> for TokenSource {
    fn from(token: String) -> Self {
        Self::Fixed(token)
    }
}

impl From<&str> for TokenSource {
    fn from(token: &str) -> Self {
        Self::Fixed(token.to_owned())
    }
}

impl std::fmt::Debug for TokenSource {
    // Tokens are secrets: never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Fixed(_) => "TokenSource::Fixed(<redacted>)",
            Self::Provider(_) => "TokenSource::Provider",
        })
    }
}

#[cfg(feature = "mint")]
pub use mint::{Hs256Minter, MintError};

#[cfg(feature = "mint")]
mod mint {
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    use serde::Serialize;

    /// Shortest HS256 secret the gateway accepts.
    const MIN_SECRET_BYTES: usize = 32;

    #[derive(Debug, thiserror::Error)]
    pub enum MintError {
        #[error(
            "the secret must be at least {MIN_SECRET_BYTES} bytes (the gateway refuses shorter ones)"
        )]
        ShortSecret,
        #[error("signing the token: {0}")]
        Sign(#[from] jsonwebtoken::errors::Error),
    }

    /// Tokens signed with the gateway's HS256 secret (`SWITCHBOARD_JWT_SECRET`), for trusted
    /// services that hold it: bots, load tests, test suites. An app's users get their tokens
    /// from its backend instead, which holds the secret.
    pub struct Hs256Minter {
        key: EncodingKey,
    }

    impl std::fmt::Debug for Hs256Minter {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("Hs256Minter(<secret>)")
        }
    }

    #[derive(Serialize)]
    struct Claims<'a> {
        sub: &'a str,
        name: &'a str,
        iat: u64,
        exp: u64,
    }

    impl Hs256Minter {
        pub fn new(secret: &str) -> Result<Self, MintError> {
            if secret.len() < MIN_SECRET_BYTES {
                return Err(MintError::ShortSecret);
            }
            Ok(Self {
                key: EncodingKey::from_secret(secret.as_bytes()),
            })
        }

        /// A token for user `sub`, shown as `name`, valid for `ttl` from now.
        pub fn token(&self, sub: &str, name: &str, ttl: Duration) -> Result<String, MintError> {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            self.sign(&Claims {
                sub,
                name,
                iat: now,
                exp: now + ttl.as_secs(),
            })
        }

        /// A token with any claims (tests of expired or odd tokens).
        pub fn sign(&self, claims: &impl Serialize) -> Result<String, MintError> {
            Ok(jsonwebtoken::encode(
                &Header::new(Algorithm::HS256),
                claims,
                &self.key,
            )?)
        }
    }
}
