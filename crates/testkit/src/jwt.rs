//! Tokens for tests: valid, expired, wrongly signed, `alg: none`, and RS256 / ES256 key pairs.
//!
//! The key pairs under `crates/testkit/keys/` are test-only and public (see its README).

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

pub use jsonwebtoken::Algorithm as JwtAlgorithm;

/// Seconds since the Unix epoch.
pub fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// The claims the gateway reads: `sub`, `name`, `iat`, and `exp` = now + `ttl_secs` (negative:
/// already expired). Add `iss` / `aud` with `claims["iss"] = ...` before minting.
pub fn claims(sub: &str, name: &str, ttl_secs: i64) -> Value {
    let now = now_secs();
    json!({ "sub": sub, "name": name, "iat": now, "exp": now + ttl_secs })
}

/// An HS256 token for `sub` with display name `name`, valid for `ttl_secs` (negative: expired).
pub fn mint_hs256(secret: &str, sub: &str, name: &str, ttl_secs: i64) -> String {
    mint_with_claims(
        Algorithm::HS256,
        &EncodingKey::from_secret(secret.as_bytes()),
        &claims(sub, name, ttl_secs),
    )
}

/// A token with any claims, signed with `key` under `alg`.
///
/// # Panics
/// If `key` does not fit `alg`: a mistake in the test itself.
pub fn mint_with_claims(alg: Algorithm, key: &EncodingKey, claims: &Value) -> String {
    jsonwebtoken::encode(&Header::new(alg), claims, key)
        .unwrap_or_else(|e| panic!("signing a {alg:?} test token failed: {e}"))
}

/// An HS256 token with any claims.
pub fn mint_hs256_claims(secret: &str, claims: &Value) -> String {
    mint_with_claims(
        Algorithm::HS256,
        &EncodingKey::from_secret(secret.as_bytes()),
        claims,
    )
}

/// An unsigned token, `{"alg":"none","typ":"JWT"}` with valid-looking claims and an empty
/// signature: a server must refuse it.
pub fn alg_none_token(sub: &str, name: &str) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(claims(sub, name, 3600).to_string());
    format!("{header}.{payload}.")
}

/// A test key pair, its PEM texts embedded and its public key also on disk (for
/// `SWITCHBOARD_JWT_PUBLIC_KEY_FILE`).
#[derive(Debug, Clone, Copy)]
pub struct TestKeyPair {
    pub alg: Algorithm,
    /// PKCS#8 private key.
    pub private_pem: &'static str,
    /// SPKI public key.
    pub public_pem: &'static str,
    /// File name of the public key under `crates/testkit/keys/`.
    public_file: &'static str,
}

/// An RS256 (RSA 2048) pair.
pub const RS256: TestKeyPair = TestKeyPair {
    alg: Algorithm::RS256,
    private_pem: include_str!("../keys/rs256-private.pem"),
    public_pem: include_str!("../keys/rs256-public.pem"),
    public_file: "rs256-public.pem",
};

/// Another RS256 pair, unrelated to [`RS256`]: tokens it signs must fail verification there.
pub const RS256_OTHER: TestKeyPair = TestKeyPair {
    alg: Algorithm::RS256,
    private_pem: include_str!("../keys/rs256-other-private.pem"),
    public_pem: include_str!("../keys/rs256-other-public.pem"),
    public_file: "rs256-other-public.pem",
};

/// An ES256 (P-256) pair.
pub const ES256: TestKeyPair = TestKeyPair {
    alg: Algorithm::ES256,
    private_pem: include_str!("../keys/es256-private.pem"),
    public_pem: include_str!("../keys/es256-public.pem"),
    public_file: "es256-public.pem",
};

/// Another ES256 pair, unrelated to [`ES256`].
pub const ES256_OTHER: TestKeyPair = TestKeyPair {
    alg: Algorithm::ES256,
    private_pem: include_str!("../keys/es256-other-private.pem"),
    public_pem: include_str!("../keys/es256-other-public.pem"),
    public_file: "es256-other-public.pem",
};

/// An Ed25519 pair (EdDSA), published in [`JWKS`] only.
pub const ED25519: TestKeyPair = TestKeyPair {
    alg: Algorithm::EdDSA,
    private_pem: include_str!("../keys/ed25519-private.pem"),
    public_pem: include_str!("../keys/ed25519-public.pem"),
    public_file: "ed25519-public.pem",
};

/// The public keys of [`RS256`] (`kid` `rs-1`), [`ES256`] (`ec-1`), [`ED25519`] (`ed-1`) and
/// [`RS256_OTHER`] (`rs-2`) as a JSON Web Key Set.
pub const JWKS: &str = include_str!("../keys/jwks.json");

impl TestKeyPair {
    /// The signing key.
    ///
    /// # Panics
    /// Never for the embedded keys (a unit test parses each).
    pub fn encoding_key(&self) -> EncodingKey {
        let key = match self.alg {
            Algorithm::ES256 | Algorithm::ES384 => {
                EncodingKey::from_ec_pem(self.private_pem.as_bytes())
            }
            Algorithm::EdDSA => EncodingKey::from_ed_pem(self.private_pem.as_bytes()),
            _ => EncodingKey::from_rsa_pem(self.private_pem.as_bytes()),
        };
        key.unwrap_or_else(|e| panic!("embedded {:?} test key is invalid: {e}", self.alg))
    }

    /// The public key file, an absolute path into the source tree.
    pub fn public_key_path(&self) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("keys")
            .join(self.public_file)
    }

    /// The algorithm name for `SWITCHBOARD_JWT_ALGORITHM`.
    pub fn alg_name(&self) -> &'static str {
        match self.alg {
            Algorithm::ES256 => "ES256",
            Algorithm::RS256 => "RS256",
            _ => "unsupported",
        }
    }

    /// A token for `sub` valid for `ttl_secs` (negative: expired).
    pub fn mint(&self, sub: &str, name: &str, ttl_secs: i64) -> String {
        self.mint_claims(&claims(sub, name, ttl_secs))
    }

    /// A token with any claims.
    pub fn mint_claims(&self, claims: &Value) -> String {
        mint_with_claims(self.alg, &self.encoding_key(), claims)
    }

    /// A token for `sub` whose header names the key `kid` (as an identity provider's do).
    pub fn mint_with_kid(&self, kid: &str, sub: &str) -> String {
        let mut header = Header::new(self.alg);
        header.kid = Some(kid.to_owned());
        jsonwebtoken::encode(&header, &claims(sub, sub, 3_600), &self.encoding_key())
            .unwrap_or_else(|e| panic!("signing a {:?} test token failed: {e}", self.alg))
    }
}

#[cfg(test)]
mod tests {
    use jsonwebtoken::{DecodingKey, Validation, decode};

    use super::*;

    fn verify(token: &str, alg: Algorithm, key: &DecodingKey) -> Result<Value, String> {
        decode::<Value>(token, key, &Validation::new(alg))
            .map(|data| data.claims)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn hs256_tokens_verify_and_expire() {
        let key = DecodingKey::from_secret(b"s3cret");
        let claims = verify(
            &mint_hs256("s3cret", "alice", "Alice", 60),
            Algorithm::HS256,
            &key,
        )
        .unwrap();
        assert_eq!(
            (claims["sub"].as_str(), claims["name"].as_str()),
            (Some("alice"), Some("Alice"))
        );
        assert!(
            verify(
                &mint_hs256("s3cret", "alice", "Alice", -3600),
                Algorithm::HS256,
                &key
            )
            .unwrap_err()
            .contains("Expired")
        );
        assert!(
            verify(
                &mint_hs256("other", "alice", "Alice", 60),
                Algorithm::HS256,
                &key
            )
            .is_err()
        );
    }

    #[test]
    fn every_embedded_pair_signs_and_verifies_and_the_others_do_not() {
        for (pair, other) in [(RS256, RS256_OTHER), (ES256, ES256_OTHER)] {
            let public = std::fs::read(pair.public_key_path()).unwrap();
            assert_eq!(public, pair.public_pem.as_bytes());
            let key = match pair.alg {
                Algorithm::ES256 => DecodingKey::from_ec_pem(&public),
                _ => DecodingKey::from_rsa_pem(&public),
            }
            .unwrap();
            let claims = verify(&pair.mint("bob", "Bob", 60), pair.alg, &key).unwrap();
            assert_eq!(claims["sub"], "bob");
            assert!(verify(&other.mint("bob", "Bob", 60), pair.alg, &key).is_err());
        }
    }

    #[test]
    fn alg_none_tokens_have_an_empty_signature_and_are_refused() {
        let token = alg_none_token("mallory", "Mallory");
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 3);
        assert_eq!(parts[2], "");
        let header = URL_SAFE_NO_PAD.decode(parts[0]).unwrap();
        assert_eq!(header, br#"{"alg":"none","typ":"JWT"}"#);
        assert!(verify(&token, Algorithm::HS256, &DecodingKey::from_secret(b"x")).is_err());
    }
}
