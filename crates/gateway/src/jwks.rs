//! Tokens from an identity provider (Auth0, Keycloak, Cognito...): verified with the key of its
//! JSON Web Key Set (`SWITCHBOARD_JWT_JWKS_URL`) that the token's `kid` names.
//!
//! The set is fetched at start-up, again every `SWITCHBOARD_JWT_JWKS_REFRESH_MS`, and when a
//! token names a key the set lacks (a provider that rotated its keys) — such fetches not more
//! often than every `SWITCHBOARD_JWT_JWKS_MIN_REFRESH_MS`, so tokens with made-up `kid`s cannot
//! make the node hammer the provider. A fetch that fails keeps the last good set.
//!
//! **Invariant:** each key has one algorithm (its `alg`, or the one its type implies: RSA →
//! RS256, P-256 → ES256, Ed25519 → EdDSA); a token whose header names another one is refused.
//! Symmetric (`oct`) keys are never used: a public document cannot hold a secret.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use tokio::sync::Mutex;

use crate::auth::{AuthError, Authenticator, Claims, Identity, identity, validation};
use crate::config::Config;
use crate::error::Chain;
use crate::metrics;
use crate::outcall::Outcall;

/// Longest a fetch of the key set may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a fetch gave no new key set.
#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    #[error("cannot fetch the key set")]
    Fetch(#[source] crate::outcall::OutcallError),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("the key set answered HTTP {0}")]
    Status(u16),
    #[error("the key set is not a JWKS document")]
    Document(#[source] serde_json::Error),
    #[error("the key set holds no usable signing key")]
    NoKeys,
}

/// One usable key, ready to verify: shared with the verifications that use it.
struct Key {
    key: DecodingKey,
    algorithm: Algorithm,
    /// The authenticator's checks with this key's one algorithm.
    validation: Validation,
}

pub struct JwksAuthenticator {
    url: http::Uri,
    outcall: Outcall,
    keys: RwLock<Arc<HashMap<String, Arc<Key>>>>,
    /// Issuer and audience checks; the algorithm is set per key.
    validation: Validation,
    min_refresh: Duration,
    /// When a token naming an unknown key last caused a fetch; held during that fetch, so
    /// tokens arriving meanwhile wait for its outcome instead of fetching again.
    last_asked: Mutex<Option<Instant>>,
}

impl std::fmt::Debug for JwksAuthenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwksAuthenticator")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl JwksAuthenticator {
    /// Fetches the key set once; a node that cannot reach its provider starts anyway (refusing
    /// tokens until a fetch succeeds), as a provider outage must not keep a cluster down.
    pub async fn start(config: &Config, url: &str, outcall: Outcall) -> Result<Self, String> {
        let url = crate::outcall::parse_url(url)?;
        let auth = Self {
            url,
            outcall,
            keys: RwLock::new(Arc::new(HashMap::new())),
            validation: validation(
                Algorithm::RS256,
                config.jwt_issuer.as_deref(),
                config.jwt_audience.as_deref(),
            ),
            min_refresh: Duration::from_millis(config.jwt_jwks_min_refresh_ms),
            last_asked: Mutex::new(None),
        };
        if let Err(error) = auth.refresh().await {
            tracing::error!(url = %auth.url, error = %Chain(&error), "cannot load the JWKS: tokens are refused until it loads");
        }
        Ok(auth)
    }

    /// Fetches the set again every `every`, for as long as the node runs.
    pub async fn refresh_every(self: Arc<Self>, every: Duration) {
        loop {
            tokio::time::sleep(every).await;
            if let Err(error) = self.refresh().await {
                tracing::warn!(url = %self.url, error = %Chain(&error), "JWKS refresh failed: keeping the last good set");
            }
        }
    }

    fn key(&self, kid: &str) -> Option<Arc<Key>> {
        let keys = self.keys.read().unwrap_or_else(|p| p.into_inner());
        keys.get(kid).cloned()
    }

    /// Fetches and installs the set.
    async fn refresh(&self) -> Result<(), JwksError> {
        let fetched = self.fetch().await;
        metrics::jwks_refresh(if fetched.is_ok() { "ok" } else { "error" });
        let keys = fetched?;
        tracing::info!(url = %self.url, keys = keys.len(), "JWKS loaded");
        *self.keys.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(keys);
        Ok(())
    }

    /// A token named a key the set lacks: fetches again, unless that was done less than
    /// `min_refresh` ago.
    async fn refresh_for_unknown_key(&self) {
        let mut last = self.last_asked.lock().await;
        if last.is_some_and(|at| at.elapsed() < self.min_refresh) {
            return;
        }
        *last = Some(Instant::now());
        if let Err(error) = self.refresh().await {
            tracing::warn!(url = %self.url, error = %Chain(&error), "JWKS refresh for an unknown key failed");
        }
    }

    async fn fetch(&self) -> Result<HashMap<String, Arc<Key>>, JwksError> {
        let (status, body) = tokio::time::timeout(FETCH_TIMEOUT, self.outcall.get(&self.url))
            .await
            .map_err(|_| JwksError::Timeout(FETCH_TIMEOUT))?
            .map_err(JwksError::Fetch)?;
        if !status.is_success() {
            return Err(JwksError::Status(status.as_u16()));
        }
        let keys = usable_keys(&body, &self.validation)?;
        if keys.is_empty() {
            return Err(JwksError::NoKeys);
        }
        Ok(keys)
    }
}

/// The signing keys of a JWKS document, by `kid`; keys that cannot verify tokens here are left
/// out (logged), not fatal: a provider may publish encryption keys or new key types.
/// Each key gets `checks` with its own algorithm.
fn usable_keys(body: &[u8], checks: &Validation) -> Result<HashMap<String, Arc<Key>>, JwksError> {
    #[derive(serde::Deserialize)]
    struct Document {
        keys: Vec<serde_json::Value>,
    }
    let document: Document = serde_json::from_slice(body).map_err(JwksError::Document)?;
    let mut keys = HashMap::new();
    for value in document.keys {
        let jwk: Jwk = match serde_json::from_value(value) {
            Ok(jwk) => jwk,
            Err(error) => {
                tracing::debug!(%error, "JWKS: a key that does not read is skipped");
                continue;
            }
        };
        let Some(kid) = jwk.common.key_id.clone() else {
            tracing::debug!("JWKS: a key without kid is skipped");
            continue;
        };
        if matches!(&jwk.common.public_key_use, Some(u) if *u != PublicKeyUse::Signature) {
            continue;
        }
        let Some(algorithm) = algorithm_of(&jwk) else {
            tracing::debug!(%kid, "JWKS: a key of an unsupported type or algorithm is skipped");
            continue;
        };
        match DecodingKey::from_jwk(&jwk) {
            Ok(key) => {
                let mut validation = checks.clone();
                validation.algorithms = vec![algorithm];
                let key = Key {
                    key,
                    algorithm,
                    validation,
                };
                keys.insert(kid, Arc::new(key));
            }
            Err(error) => tracing::debug!(%kid, %error, "JWKS: an unreadable key is skipped"),
        }
    }
    Ok(keys)
}

/// The one algorithm a key verifies: RS256, ES256 or EdDSA.
fn algorithm_of(jwk: &Jwk) -> Option<Algorithm> {
    let implied = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Algorithm::RS256,
        AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => Algorithm::ES256,
        AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => {
            Algorithm::EdDSA
        }
        _ => return None,
    };
    match jwk.common.key_algorithm {
        None => Some(implied),
        Some(KeyAlgorithm::RS256) if implied == Algorithm::RS256 => Some(implied),
        Some(KeyAlgorithm::ES256) if implied == Algorithm::ES256 => Some(implied),
        Some(KeyAlgorithm::EdDSA) if implied == Algorithm::EdDSA => Some(implied),
        Some(_) => None,
    }
}

#[async_trait]
impl Authenticator for JwksAuthenticator {
    async fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        let header =
            jsonwebtoken::decode_header(token).map_err(|e| AuthError::Invalid(e.to_string()))?;
        let kid = header
            .kid
            .ok_or_else(|| AuthError::Invalid("the token names no key (kid)".into()))?;
        let key = match self.key(&kid) {
            Some(found) => found,
            None => {
                // Perhaps the provider rotated: look again (rate limited), then decide.
                self.refresh_for_unknown_key().await;
                self.key(&kid).ok_or_else(|| {
                    AuthError::Invalid(format!("the key {kid:?} is not in the key set"))
                })?
            }
        };
        if header.alg != key.algorithm {
            return Err(AuthError::Invalid(format!(
                "the key {kid:?} verifies {:?}, not {:?}",
                key.algorithm, header.alg
            )));
        }
        identity(jsonwebtoken::decode::<Claims>(
            token,
            &key.key,
            &key.validation,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_name_one_algorithm_and_symmetric_or_unknown_keys_are_left_out() {
        let document = br#"{"keys": [
            {"kty": "RSA", "kid": "rs", "n": "sXchDaQebHnPiGvyDOAT4saGEUetSyo9MKLOoWFsueri23bOdgWp4Dy1WlUzewbgBHod5pcM9H95GQRV3JDXboIRROSBigeC5yjU1hGzHHyXss8UDprecbAYxknTcQkhslANGRUZmdTOQ5qTRsLAt6BTYuyvVRdhS8exSZEy_c4gs_7svlJJQ4H9_NxsiIoLwAEk7-Q3UXERGYw_75IDrGA84-lA_-Ct4eTlXHBIY2EaV7t7LjJaynVJCpkv4LKjTTAumiGUIuQhrNhZLuF_RJLqHpM2kgWFLU7-VTdL1VbC2tejvcI2BlMkEpk1BzBZI0KQB0GaDWFLN-aEAw3vRw", "e": "AQAB"},
            {"kty": "RSA", "kid": "rs-mislabelled", "alg": "ES256", "n": "sXchDaQebHnPiGvyDOAT4saGEUetSyo9MKLOoWFsueri23bOdgWp4Dy1WlUzewbgBHod5pcM9H95GQRV3JDXboIRROSBigeC5yjU1hGzHHyXss8UDprecbAYxknTcQkhslANGRUZmdTOQ5qTRsLAt6BTYuyvVRdhS8exSZEy_c4gs_7svlJJQ4H9_NxsiIoLwAEk7-Q3UXERGYw_75IDrGA84-lA_-Ct4eTlXHBIY2EaV7t7LjJaynVJCpkv4LKjTTAumiGUIuQhrNhZLuF_RJLqHpM2kgWFLU7-VTdL1VbC2tejvcI2BlMkEpk1BzBZI0KQB0GaDWFLN-aEAw3vRw", "e": "AQAB"},
            {"kty": "oct", "kid": "secret", "k": "c2VjcmV0"},
            {"kty": "OKP", "kid": "ed", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"},
            {"kty": "RSA", "kid": "enc", "use": "enc", "n": "AQAB", "e": "AQAB"},
            {"kty": "XYZ", "kid": "future"}
        ]}"#;
        let checks = validation(Algorithm::RS256, None, None);
        let keys = usable_keys(document, &checks).expect("a JWKS document");
        let mut kids: Vec<(&str, Algorithm)> = keys
            .iter()
            .map(|(k, v)| (k.as_str(), v.algorithm))
            .collect();
        kids.sort_by_key(|(k, _)| *k);
        assert_eq!(kids, [("ed", Algorithm::EdDSA), ("rs", Algorithm::RS256)]);
        assert!(
            keys.values()
                .all(|k| k.validation.algorithms == [k.algorithm])
        );
        assert!(usable_keys(b"{\"kid\": 1}", &checks).is_err());
    }
}
