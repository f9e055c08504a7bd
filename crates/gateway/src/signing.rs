//! Signatures on every request Switchboard makes to the app's backend (hooks and webhooks), as
//! [Standard Webhooks](https://www.standardwebhooks.com/) defines them, so the app verifies them
//! with any of that spec's libraries: `webhook-signature` holds `v1,<base64 HMAC-SHA256>` of
//! `<webhook-id>.<webhook-timestamp>.<body>`, one per configured secret, separated by spaces.
//! Several secrets let the app rotate: add the new one, deploy, switch the app, drop the old one.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac as _};
use sha2::Sha256;

/// The prefix of a Standard Webhooks secret; the base64 key follows it.
pub const SECRET_PREFIX: &str = "whsec_";

/// Shortest key accepted, in bytes (the spec's libraries make 24 to 64).
const MIN_KEY_BYTES: usize = 16;

/// The keys requests are signed with, the current one first.
#[derive(Clone)]
pub struct Signer {
    keys: Vec<Vec<u8>>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the keys.
        f.debug_struct("Signer")
            .field("keys", &self.keys.len())
            .finish()
    }
}

impl Signer {
    /// Parses `whsec_<base64>` secrets. The error names the position of a bad one, never its
    /// value.
    pub fn new(secrets: &[String]) -> Result<Self, String> {
        let mut keys = Vec::with_capacity(secrets.len());
        for (i, secret) in secrets.iter().enumerate() {
            let key = secret
                .strip_prefix(SECRET_PREFIX)
                .and_then(|b64| BASE64.decode(b64).ok())
                .filter(|key| key.len() >= MIN_KEY_BYTES)
                .ok_or_else(|| {
                    format!(
                        "secret {} is not {SECRET_PREFIX}<base64 of at least {MIN_KEY_BYTES} bytes>",
                        i + 1
                    )
                })?;
            keys.push(key);
        }
        Ok(Self { keys })
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The `webhook-signature` header value for a request: one `v1,<signature>` per key.
    pub fn sign(&self, id: &str, timestamp: u64, body: &[u8]) -> String {
        let mut header = String::new();
        for key in &self.keys {
            if !header.is_empty() {
                header.push(' ');
            }
            header.push_str("v1,");
            header.push_str(&BASE64.encode(mac(key, id, timestamp, body)));
        }
        header
    }
}

fn mac(key: &[u8], id: &str, timestamp: u64, body: &[u8]) -> Vec<u8> {
    // HMAC takes a key of any length.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
        unreachable!("HMAC accepts keys of any length")
    };
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.finalize().into_bytes().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_standard_webhooks_reference_vector() {
        // The example of the Standard Webhooks specification (its libraries' tests use it).
        let signer = Signer::new(&["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_owned()])
            .expect("a valid secret");
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(
            signer.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn every_secret_signs_and_bad_ones_are_named_by_position_only() {
        let signer = Signer::new(&[
            format!("{SECRET_PREFIX}{}", BASE64.encode([1u8; 24])),
            format!("{SECRET_PREFIX}{}", BASE64.encode([2u8; 32])),
        ])
        .expect("valid secrets");
        let header = signer.sign("id", 1, b"{}");
        assert_eq!(header.split(' ').count(), 2);
        assert!(header.split(' ').all(|s| s.starts_with("v1,")));

        let error = Signer::new(&["whsec_c2VjcmV0".to_owned(), "plain-secret".to_owned()])
            .expect_err("too short, and no prefix");
        assert!(error.starts_with("secret 1 "), "{error}");
        assert!(!error.contains("c2VjcmV0"), "never the value: {error}");
        assert!(format!("{signer:?}").contains("keys: 2"));
    }
}
