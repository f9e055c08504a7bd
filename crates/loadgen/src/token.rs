//! Tokens minted locally with the gateway's HS256 secret, one user per connection.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, ensure};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;

/// Shortest secret the gateway accepts; a shorter one is refused here with a clear message
/// rather than by 10,000 failed upgrades.
const MIN_SECRET_BYTES: usize = 32;
/// Lifetime of every token: longer than any bounded run.
const TTL: Duration = Duration::from_secs(3600);

#[derive(Serialize)]
struct Claims<'a> {
    sub: &'a str,
    name: &'a str,
    exp: u64,
    iat: u64,
}

/// Signs tokens for `bench-<n>` users.
pub struct Mint {
    key: EncodingKey,
    header: Header,
    /// Seconds since the Unix epoch when the mint was made; every token shares it.
    now: u64,
}

impl std::fmt::Debug for Mint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mint").finish_non_exhaustive()
    }
}

impl Mint {
    pub fn new(secret: &str) -> anyhow::Result<Self> {
        ensure!(
            secret.len() >= MIN_SECRET_BYTES,
            "--secret must be at least {MIN_SECRET_BYTES} bytes (the gateway refuses shorter ones)"
        );
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .context("clock before 1970")?
            .as_secs();
        Ok(Self {
            key: EncodingKey::from_secret(secret.as_bytes()),
            header: Header::new(Algorithm::HS256),
            now,
        })
    }

    /// A token whose `sub` and `name` are `user`.
    pub fn token(&self, user: &str) -> anyhow::Result<String> {
        let claims = Claims {
            sub: user,
            name: user,
            exp: self.now + TTL.as_secs(),
            iat: self.now,
        };
        jsonwebtoken::encode(&self.header, &claims, &self.key).context("signing a token")
    }
}
