//! The test certificates (`keys/tls-*.pem`, see `keys/README.md`): public, so they secure
//! nothing; for tests only.

/// The test certificate authority's certificate, as a file a gateway can be pointed at
/// (`SWITCHBOARD_OUTCALL_CA_FILE`).
pub const CA_FILE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/keys/tls-ca.pem");

/// The certificate [`crate::receiver::Receiver::start_tls`] serves, for `127.0.0.1` and
/// `localhost`, signed by the authority of [`CA_FILE`].
pub const SERVER: &str = include_str!("../keys/tls-server.pem");

/// Its private key (PKCS#8).
pub const SERVER_KEY: &str = include_str!("../keys/tls-server-key.pem");
