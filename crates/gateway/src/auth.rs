//! JWT authentication.
//!
//! The algorithm is pinned: by configuration here, by the key a token's `kid` names with a JWKS
//! (`jwks.rs`). A token whose header names any other algorithm — `none`, or HS256 signed with an
//! RS256 public key (algorithm confusion) — is refused.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, TokenData, Validation};
use serde::{Deserialize, Serialize};
use switchboard_protocol::{UserId, UserRef};

use crate::config::{Config, ConfigError, JwtAlgorithm};

/// Longest display name kept from a token, in characters.
const MAX_NAME_CHARS: usize = 64;

/// Who a verified token says the client is, and until when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub user: UserRef,
    /// The token's `exp`: the session ends (close 4003) at this instant.
    pub expires_at: SystemTime,
}

/// Why a token was refused. Told to the client only as "authentication failed" plus this text.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("token expired")]
    Expired,
    #[error("token not valid yet (nbf)")]
    NotYetValid,
    #[error("token rejected: {0}")]
    Invalid(String),
    #[error("token subject is not a valid user id: {0}")]
    BadSubject(#[from] switchboard_protocol::IdError),
}

/// Verifies bearer tokens: with a configured key ([`JwtAuthenticator`]) or an identity
/// provider's key set (`jwks::JwksAuthenticator`, which may fetch it first); session code never
/// knows which.
#[async_trait]
pub trait Authenticator: Send + Sync + 'static {
    async fn verify(&self, token: &str) -> Result<Identity, AuthError>;
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Claims {
    sub: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    iat: Option<u64>,
}

/// Verifies JWTs with one pinned algorithm and key, and during an HS256 rotation the previous
/// secret until its end.
pub struct JwtAuthenticator {
    key: DecodingKey,
    validation: Validation,
    /// The secret being rotated out, and when it stops being accepted.
    previous: Option<(DecodingKey, SystemTime)>,
}

impl std::fmt::Debug for JwtAuthenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtAuthenticator")
            .field("algorithms", &self.validation.algorithms)
            .finish()
    }
}

/// A key could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read key file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("invalid key in {path}: {source}")]
    Parse {
        path: String,
        source: jsonwebtoken::errors::Error,
    },
    #[error("no signing key: set SWITCHBOARD_JWT_SECRET, or --private-key-file for RS256/ES256")]
    Missing,
    /// Key settings the server refuses (`Config::validate_key`), in the server's words.
    #[error(transparent)]
    Refused(#[from] ConfigError),
}

impl JwtAuthenticator {
    /// HS256 with a shared secret.
    pub fn hs256(secret: &[u8], issuer: Option<&str>, audience: Option<&str>) -> Self {
        Self::new(
            Algorithm::HS256,
            DecodingKey::from_secret(secret),
            issuer,
            audience,
        )
    }

    /// The authenticator the configuration asks for; `dev_secret` is used in dev mode.
    pub fn from_config(config: &Config, dev_secret: Option<&[u8]>) -> Result<Self, KeyError> {
        let (issuer, audience) = (config.jwt_issuer.as_deref(), config.jwt_audience.as_deref());
        match (
            config.jwt_algorithm,
            &config.jwt_secret,
            &config.jwt_public_key_file,
            dev_secret,
        ) {
            (JwtAlgorithm::Hs256, Some(secret), _, _) => {
                let mut auth = Self::hs256(secret.as_bytes(), issuer, audience);
                if let (Some(previous), Some(until)) =
                    (&config.jwt_previous_secret, config.previous_secret_until())
                {
                    auth.previous = Some((DecodingKey::from_secret(previous.as_bytes()), until));
                }
                Ok(auth)
            }
            (JwtAlgorithm::Hs256, None, _, Some(secret)) => {
                Ok(Self::hs256(secret, issuer, audience))
            }
            (alg @ (JwtAlgorithm::Rs256 | JwtAlgorithm::Es256), _, Some(path), _) => {
                let pem = read_key(path)?;
                let parsed = match alg {
                    JwtAlgorithm::Rs256 => DecodingKey::from_rsa_pem(&pem),
                    _ => DecodingKey::from_ec_pem(&pem),
                };
                let key = parsed.map_err(|source| KeyError::Parse {
                    path: path.display().to_string(),
                    source,
                })?;
                Ok(Self::new(algorithm(alg), key, issuer, audience))
            }
            _ => Err(KeyError::Missing),
        }
    }

    fn new(alg: Algorithm, key: DecodingKey, issuer: Option<&str>, audience: Option<&str>) -> Self {
        Self {
            key,
            validation: validation(alg, issuer, audience),
            previous: None,
        }
    }
}

/// What every token must satisfy, signed with `alg`.
pub(crate) fn validation(
    alg: Algorithm,
    issuer: Option<&str>,
    audience: Option<&str>,
) -> Validation {
    let mut validation = Validation::new(alg);
    // The same leeway for `exp` and `nbf`: clocks of issuer and gateway may differ a little.
    validation.leeway = 5;
    validation.validate_nbf = true;
    validation.set_required_spec_claims(&["exp", "sub"]);
    if let Some(iss) = issuer {
        validation.set_issuer(&[iss]);
        validation.required_spec_claims.insert("iss".into());
    }
    match audience {
        Some(aud) => {
            validation.set_audience(&[aud]);
            validation.required_spec_claims.insert("aud".into());
        }
        None => validation.validate_aud = false,
    }
    validation
}

/// The identity a decoded token names, or why it is refused.
pub(crate) fn identity(
    decoded: jsonwebtoken::errors::Result<TokenData<Claims>>,
) -> Result<Identity, AuthError> {
    use jsonwebtoken::errors::ErrorKind;
    let data = decoded.map_err(|e| match e.kind() {
        ErrorKind::ExpiredSignature => AuthError::Expired,
        ErrorKind::ImmatureSignature => AuthError::NotYetValid,
        _ => AuthError::Invalid(e.to_string()),
    })?;
    let claims = data.claims;
    let id = UserId::parse(claims.sub)?;
    if id.as_str() == crate::actions::SYSTEM_USER_ID {
        return Err(AuthError::Invalid(
            "the user id \"system\" is reserved for the app's backend".into(),
        ));
    }
    let name = display_name(claims.name.as_deref(), &id);
    Ok(Identity {
        user: UserRef { id, name },
        expires_at: UNIX_EPOCH + Duration::from_secs(claims.exp),
    })
}

#[async_trait]
impl Authenticator for JwtAuthenticator {
    async fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        use jsonwebtoken::errors::ErrorKind;
        let mut decoded = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation);
        if let (Err(e), Some((previous, until))) = (&decoded, &self.previous)
            && matches!(e.kind(), ErrorKind::InvalidSignature)
            && SystemTime::now() < *until
        {
            decoded = jsonwebtoken::decode::<Claims>(token, previous, &self.validation);
        }
        identity(decoded)
    }
}

/// A display name as given (in a token, or by the server API): control characters (NUL among
/// them) removed, trimmed, cut to 64 characters; the user id when nothing is left.
pub fn display_name(given: Option<&str>, id: &UserId) -> String {
    let name: String = given
        .unwrap_or_default()
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_NAME_CHARS)
        .collect();
    match name.trim() {
        "" => id.to_string(),
        trimmed => trimmed.to_owned(),
    }
}

/// Signs tokens: for `gateway token` and for dev mode's ready-to-paste token.
#[derive(Clone)]
pub struct TokenSigner {
    alg: Algorithm,
    key: EncodingKey,
    issuer: Option<String>,
    audience: Option<String>,
}

impl std::fmt::Debug for TokenSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSigner")
            .field("alg", &self.alg)
            .finish()
    }
}

impl TokenSigner {
    pub fn hs256(secret: &[u8]) -> Self {
        Self {
            alg: Algorithm::HS256,
            key: EncodingKey::from_secret(secret),
            issuer: None,
            audience: None,
        }
    }

    /// The signer matching the configuration: its secret, `dev_secret`, or a private key file.
    /// Key settings the server would refuse are refused here too: a token signed with them could
    /// never be verified by a running gateway.
    pub fn from_config(
        config: &Config,
        private_key_file: Option<&std::path::Path>,
        dev_secret: Option<&[u8]>,
    ) -> Result<Self, KeyError> {
        config.validate_key()?;
        let mut signer = match (
            config.jwt_algorithm,
            &config.jwt_secret,
            private_key_file,
            dev_secret,
        ) {
            (JwtAlgorithm::Hs256, Some(secret), _, _) => Self::hs256(secret.as_bytes()),
            (JwtAlgorithm::Hs256, None, _, Some(secret)) => Self::hs256(secret),
            (alg @ (JwtAlgorithm::Rs256 | JwtAlgorithm::Es256), _, Some(path), _) => {
                let pem = read_key(path)?;
                let parsed = match alg {
                    JwtAlgorithm::Rs256 => EncodingKey::from_rsa_pem(&pem),
                    _ => EncodingKey::from_ec_pem(&pem),
                };
                let key = parsed.map_err(|source| KeyError::Parse {
                    path: path.display().to_string(),
                    source,
                })?;
                Self {
                    alg: algorithm(alg),
                    key,
                    issuer: None,
                    audience: None,
                }
            }
            _ => return Err(KeyError::Missing),
        };
        signer.issuer = config.jwt_issuer.clone();
        signer.audience = config.jwt_audience.clone();
        Ok(signer)
    }

    pub fn sign(
        &self,
        user: &UserRef,
        ttl: Duration,
    ) -> Result<String, jsonwebtoken::errors::Error> {
        #[derive(Serialize)]
        struct Signed<'a> {
            #[serde(flatten)]
            claims: Claims,
            #[serde(skip_serializing_if = "Option::is_none")]
            iss: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            aud: Option<&'a str>,
        }
        let now = unix_now();
        let claims = Claims {
            sub: user.id.to_string(),
            name: Some(user.name.clone()),
            exp: now + ttl.as_secs(),
            iat: Some(now),
        };
        let signed = Signed {
            claims,
            iss: self.issuer.as_deref(),
            aud: self.audience.as_deref(),
        };
        jsonwebtoken::encode(&Header::new(self.alg), &signed, &self.key)
    }
}

fn algorithm(alg: JwtAlgorithm) -> Algorithm {
    match alg {
        JwtAlgorithm::Hs256 => Algorithm::HS256,
        JwtAlgorithm::Rs256 => Algorithm::RS256,
        JwtAlgorithm::Es256 => Algorithm::ES256,
    }
}

fn read_key(path: &std::path::Path) -> Result<Vec<u8>, KeyError> {
    std::fs::read(path).map_err(|source| KeyError::Read {
        path: path.display().to_string(),
        source,
    })
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn alice() -> UserRef {
        UserRef {
            id: UserId::parse("alice").unwrap(),
            name: "Alice".into(),
        }
    }

    #[tokio::test]
    async fn a_signed_token_verifies() {
        let token = TokenSigner::hs256(SECRET)
            .sign(&alice(), Duration::from_secs(60))
            .unwrap();
        let identity = JwtAuthenticator::hs256(SECRET, None, None)
            .verify(&token)
            .await
            .unwrap();
        assert_eq!(identity.user, alice());
    }

    #[tokio::test]
    async fn the_system_user_id_is_reserved_for_the_backend() {
        let system = UserRef {
            id: UserId::parse(crate::actions::SYSTEM_USER_ID).unwrap(),
            name: "Impostor".into(),
        };
        let token = TokenSigner::hs256(SECRET)
            .sign(&system, Duration::from_secs(60))
            .unwrap();
        let refused = JwtAuthenticator::hs256(SECRET, None, None)
            .verify(&token)
            .await;
        assert!(matches!(refused, Err(AuthError::Invalid(why)) if why.contains("reserved")));
    }

    #[test]
    fn names_are_cleaned_and_default_to_the_id() {
        let id = UserId::parse("alice").unwrap();
        assert_eq!(display_name(Some("  Al\u{0}ice\n "), &id), "Alice");
        assert_eq!(display_name(Some(" \t "), &id), "alice");
        assert_eq!(display_name(None, &id), "alice");
        assert_eq!(
            display_name(Some(&"x".repeat(100)), &id).len(),
            MAX_NAME_CHARS
        );
    }

    #[tokio::test]
    async fn wrong_secret_and_alg_none_are_refused() {
        let token = TokenSigner::hs256(b"another-secret-another-secret-xx")
            .sign(&alice(), Duration::from_secs(60))
            .unwrap();
        let auth = JwtAuthenticator::hs256(SECRET, None, None);
        assert!(matches!(
            auth.verify(&token).await,
            Err(AuthError::Invalid(_))
        ));
        // Header {"alg":"none"} with a valid payload and no signature.
        let payload = token.split('.').nth(1).unwrap();
        let none = format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{payload}.");
        assert!(matches!(
            auth.verify(&none).await,
            Err(AuthError::Invalid(_))
        ));
    }

    #[test]
    fn a_secret_the_server_refuses_signs_nothing() {
        let no_env = std::collections::HashMap::<&str, &str>::new();
        let config = |args: &[&str]| {
            let argv = ["gateway"].iter().chain(args);
            crate::config::Cli::try_parse_with(argv, &no_env)
                .expect("parses")
                .config
        };
        let short = config(&["--jwt-secret", "short"]);
        let refused = TokenSigner::from_config(&short, None, None).unwrap_err();
        let server = short.validate().unwrap_err();
        assert_eq!(refused.to_string(), server.to_string());
        assert!(
            refused.to_string().contains("at least 32 bytes"),
            "{refused}"
        );
        let long = config(&["--jwt-secret", std::str::from_utf8(SECRET).unwrap()]);
        assert!(TokenSigner::from_config(&long, None, None).is_ok());
    }

    #[tokio::test]
    async fn issuer_and_audience_are_checked_when_configured() {
        let auth = JwtAuthenticator::hs256(SECRET, Some("sb"), Some("chat"));
        let plain = TokenSigner::hs256(SECRET)
            .sign(&alice(), Duration::from_secs(60))
            .unwrap();
        assert!(auth.verify(&plain).await.is_err());
        let mut signer = TokenSigner::hs256(SECRET);
        signer.issuer = Some("sb".into());
        signer.audience = Some("chat".into());
        let token = signer.sign(&alice(), Duration::from_secs(60)).unwrap();
        assert!(auth.verify(&token).await.is_ok());
    }
}
