//! A Rust client for the Switchboard real-time gateway that keeps the protocol's promise: an
//! acknowledged message is never lost, and a client that comes back catches up exactly, in
//! order, without duplicates (docs/clients.md, docs/protocol.md).
//!
//! [`Client`] does the client's half for you: it reconnects with exponential backoff and full
//! jitter as the close codes say, resumes every room it has seen from the last `seq` it handed
//! over, hands each message over once ([`Event::Message`]) or reports a [`GapReason`], keeps sends
//! in a bounded outbox until acknowledged (resent under their original `clientMsgId`, so stored
//! once), and refreshes the token before it expires when given a [`TokenSource::provider`].
//! [`Connection`] is the layer under it: one WebSocket speaking typed frames, no reconnects.
//!
//! ```no_run
//! # async fn demo() -> Result<(), switchboard_client::Error> {
//! use switchboard_client::{Client, ClientOptions, Event};
//! use switchboard_protocol::RoomId;
//!
//! let options = ClientOptions::new("ws://127.0.0.1:8080/ws", "<a token from your backend>");
//! let (client, mut events, ready) = Client::connect(options).await?;
//! println!("signed in as {}", ready.user.name);
//! let general = RoomId::parse("general").expect("a valid room id");
//! let joined = client.join(&general).await?;
//! let sent = client.send(&general, "hello").await?; // resolves once, with the stored seq
//! while let Some(event) = events.next().await {
//!     if let Event::Message(message) = event {
//!         println!("{}: {}", message.sender.name, message.content);
//!     }
//! }
//! # let _ = (joined, sent);
//! # Ok(()) }
//! ```

mod client;
mod connection;
mod error;
mod outbox;
#[cfg(feature = "tls")]
mod tls;
mod token;

pub use client::{
    Client, ClientOptions, ConnectionState, Event, Events, GapReason, History, Joined, Ready, Sent,
};
pub use connection::{
    ABNORMAL_CLOSURE, ConnectOptions, Connection, Incoming, NO_STATUS, RawWebSocket, Transport,
};
pub use error::{BoxError, ConnectError, Error};
pub use outbox::{JsonFileStore, OutboxStore, PendingSend};
#[cfg(feature = "tls")]
pub use tls::tls_config;
pub use token::TokenSource;
#[cfg(feature = "mint")]
pub use token::{Hs256Minter, MintError};
