//! Real-process fixtures for Switchboard's integration tests.
//!
//! Each fixture starts a real server as a child process on a free port on 127.0.0.1, waits for
//! it to be ready with a deadline (polling, never a fixed sleep), captures its output, and kills
//! it and removes its temp dir when dropped. If the test fails (the fixture is dropped while the
//! thread panics) the child's last output is printed to stderr; set `TESTKIT_SHOW_LOGS=1` to see
//! it always.
//!
//! - [`Gateway`] / [`GatewayBuilder`]: the `gateway` binary (`env!("CARGO_BIN_EXE_gateway")`).
//! - [`Redis`], [`Postgres`], [`Nginx`]: backends and the sticky WebSocket proxy; `Redis` and
//!   `Postgres` stop and restart on the same port for failure tests.
//! - [`ws::WsClient`]: a protocol-aware WebSocket client whose every wait has a deadline.
//! - [`jwt`]: HS256 / RS256 / ES256 / `alg: none` tokens and test key pairs.
//! - [`http_get`]: a tiny HTTP/1.1 client for `/readyz`, `/metrics` and friends.
//! - [`receiver::Receiver`]: the app's backend as a real HTTP server that records hook and
//!   webhook requests and answers them with scripted statuses, bodies and delays, over HTTP or
//!   HTTPS ([`tls`]: the test certificate authority and server certificate).
//!
//! Nothing here skips when a binary is missing: `scripts/test.sh` installs `redis-server`,
//! `nginx` and PostgreSQL 15, and a missing one is an error naming it.

pub mod gateway;
pub mod http;
pub mod jwt;
pub mod nginx;
pub mod postgres;
pub mod process;
pub mod receiver;
pub mod redis;
pub mod sse;
pub mod tls;
pub mod ws;

pub use gateway::{CommandOutput, Gateway, GatewayBuilder, metric_value};
pub use http::{HttpResponse, http_get, http_request};
pub use nginx::Nginx;
pub use postgres::Postgres;
pub use process::{LogMark, Process, free_port, signal};
pub use redis::Redis;
pub use sse::{SseClient, SseEvent, SseResponse};
pub use ws::{Closed, ConnectError, ConnectOptions, WsClient};
