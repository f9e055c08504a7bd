//! Fuzzing a live session: one real gateway, a JSON and a MessagePack connection, and
//! thousands of generated frames (valid frames of every kind, mutated ones, damaged bytes,
//! frames around the size limit, the wrong opcode).
//!
//! After every frame the connection must still answer a `ping`, and what came before that
//! `pong` must be exactly the documented answer: the decoder's refusal (same code, the request
//! id when there was one) for a refused frame, one `ack`/`pong` for an accepted request, at most
//! one `error` for an accepted frame without an id, never `INTERNAL`. A frame over
//! `maxFrameBytes` must close the connection with 1009, a text frame that is not UTF-8 with 1007,
//! and a new connection must then work. Nothing else may close it, and the gateway must log no
//! panic.
//!
//! A second property sends generated first frames on connections without a token: only an
//! `auth` with a good token opens a session; an oversized frame closes with 1009, a text frame
//! that is not UTF-8 with 1007, anything else with 4001.
//!
//! Generators and the decoder oracle: `crates/protocol/tests/generate/`. The decoder is
//! fuzzed on its own in `crates/protocol/tests/fuzz.rs`; this checks the gateway answers as it
//! says. Cases: 3,000 by default (about 30 s in a debug build); `SWITCHBOARD_FUZZ_CASES` for
//! more. A failing case's seed is saved in `fuzz.proptest-regressions` next to this file.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../protocol/tests/generate/mod.rs"]
mod generate;

mod common;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use generate::*;
use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence, TestError, TestRunner};
use switchboard_protocol::{ClientFrame, Codec, ErrorCode, ServerFrame};
use switchboard_testkit::{ConnectOptions, Gateway, WsClient};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

/// Small enough that oversized frames are cheap to make.
const MAX_FRAME_BYTES: usize = 8_192;

/// What one case sends.
#[derive(Debug, Clone)]
enum Payload {
    /// A document, encoded with the connection's codec.
    Doc(Doc),
    /// Damaged or random bytes (made valid UTF-8 for a JSON text frame).
    Bytes(Vec<u8>),
    /// A valid frame of the other codec, so with the wrong opcode.
    WrongOpcode(ClientFrame),
    /// A `ping` padded to this many bytes: closed with 1009 above `maxFrameBytes`.
    Sized(usize),
    /// A text frame whose payload is not UTF-8: closed with 1007.
    NotUtf8(Vec<u8>),
}

#[derive(Debug, Clone)]
struct Case {
    codec: Codec,
    payload: Payload,
}

fn case() -> impl Strategy<Value = Case> {
    codec().prop_flat_map(|codec| {
        // More valid frames than the decoder's fuzz: they reach the session's handlers.
        let payload = prop_oneof![
            6 => valid_frame().prop_map(|frame| Payload::Doc(frame_doc(&frame))),
            6 => structured().prop_map(Payload::Doc),
            3 => raw_bytes(codec).prop_map(Payload::Bytes),
            1 => valid_frame().prop_map(Payload::WrongOpcode),
            1 => prop_oneof![
                MAX_FRAME_BYTES - 2..=MAX_FRAME_BYTES + 2,
                MAX_FRAME_BYTES..4 * MAX_FRAME_BYTES,
            ]
            .prop_map(Payload::Sized),
            1 => prop::collection::vec(any::<u8>(), 0..64).prop_map(|mut bytes| {
                // 0xff is never part of UTF-8.
                bytes.push(0xff);
                Payload::NotUtf8(bytes)
            }),
        ];
        (Just(codec), payload).prop_map(|(codec, payload)| Case { codec, payload })
    })
}

/// A WebSocket message as the client sends it.
#[derive(Debug)]
enum Wire {
    Text(String),
    Binary(Vec<u8>),
    /// A text frame, as bytes that are not UTF-8.
    BadText(Vec<u8>),
}

impl Wire {
    fn of(case: &Case) -> Self {
        let codec = case.codec;
        let bytes = match &case.payload {
            Payload::Doc(doc) => doc.encode(codec),
            Payload::Bytes(bytes) => bytes.clone(),
            Payload::NotUtf8(bytes) => return Self::BadText(bytes.clone()),
            Payload::WrongOpcode(frame) => {
                let other = if codec.is_binary() {
                    Codec::Json
                } else {
                    Codec::MsgPack
                };
                let bytes = other.encode(frame).unwrap();
                return if other.is_binary() {
                    Self::Binary(bytes)
                } else {
                    Self::Text(String::from_utf8(bytes).unwrap())
                };
            }
            Payload::Sized(size) => {
                let frame = serde_json::json!({"type": "ping", "pad": ""});
                let base = codec.encode(&frame).unwrap().len();
                // MessagePack needs more length bytes for a longer string; close enough for
                // the boundary to be crossed in both directions.
                let pad = "x".repeat(size.saturating_sub(base + 2));
                codec
                    .encode(&serde_json::json!({"type": "ping", "pad": pad}))
                    .unwrap()
            }
        };
        if codec.is_binary() {
            Self::Binary(bytes)
        } else {
            Self::Text(String::from_utf8_lossy(&bytes).into_owned())
        }
    }

    fn bytes(&self) -> &[u8] {
        match self {
            Self::Text(text) => text.as_bytes(),
            Self::Binary(bytes) | Self::BadText(bytes) => bytes,
        }
    }

    async fn send(self, client: &mut WsClient) -> anyhow::Result<()> {
        match self {
            Self::Text(text) => client.send_raw_text(&text).await,
            Self::Binary(bytes) => client.send_raw_binary(bytes).await,
            Self::BadText(bytes) => {
                let frame = Frame::message(bytes, OpCode::Data(Data::Text), true);
                client.send_message(Message::Frame(frame)).await
            }
        }
    }

    /// The close a frame sent first or in a session gets regardless of its content.
    fn closes_with(&self) -> Option<(u16, &'static str)> {
        if self.len() > MAX_FRAME_BYTES {
            Some((1009, "frame too big"))
        } else if matches!(self, Self::BadText(_)) {
            Some((1007, "invalid utf-8"))
        } else {
            None
        }
    }

    fn len(&self) -> usize {
        self.bytes().len()
    }
}

/// The answer the gateway owes to one frame.
#[derive(Debug)]
enum Owed {
    /// An `ack` with this error for a readable id, else an `error` frame.
    Refusal(ErrorCode, Option<u64>),
    /// Exactly one `ack` with this id (a result or a domain error).
    Ack(u64),
    /// A `pong`, with the ping's id if it had one (docs/protocol.md, `pong`).
    Pong(Option<u64>),
    /// Nothing, or one `error` frame with a domain error.
    AtMostAnError,
    /// The connection closes with this code (1009, 1007).
    Close(u16),
}

fn owed(codec: Codec, wire: &Wire) -> Owed {
    if let Some((code, _)) = wire.closes_with() {
        return Owed::Close(code);
    }
    let bytes = match (codec.is_binary(), wire) {
        (true, Wire::Binary(bytes)) => bytes.as_slice(),
        (false, Wire::Text(text)) => text.as_bytes(),
        _ => return Owed::Refusal(ErrorCode::MalformedFrame, None),
    };
    match codec.decode_client(bytes) {
        Err(e) => Owed::Refusal(e.code, e.id),
        Ok(ClientFrame::Ping { id }) => Owed::Pong(id),
        Ok(ClientFrame::Auth { .. }) => Owed::Refusal(ErrorCode::AlreadyAuthenticated, None),
        Ok(frame) => match frame.request_id() {
            Some(id) => Owed::Ack(id),
            None => Owed::AtMostAnError,
        },
    }
}

/// Codes the session itself may answer an accepted frame with. Not `INTERNAL` or
/// `STORE_UNAVAILABLE` (nothing here may fail the server), not `RATE_LIMITED` (no limit in
/// reach), not the decoder's `MALFORMED_FRAME` / `UNKNOWN_TYPE`.
fn domain_code(code: ErrorCode) -> bool {
    !matches!(
        code,
        ErrorCode::Internal
            | ErrorCode::StoreUnavailable
            | ErrorCode::RateLimited
            | ErrorCode::MalformedFrame
            | ErrorCode::UnknownType
    )
}

struct Live {
    gw: Gateway,
    clients: BTreeMap<&'static str, WsClient>,
    /// Ids of the `ping`s that end each case; far above what the generators make.
    next_probe: u64,
    /// How the cases were answered, to show the fuzz reaches past the decoder.
    answers: BTreeMap<String, u32>,
}

fn codec_name(codec: Codec) -> &'static str {
    if codec.is_binary() { "msgpack" } else { "json" }
}

impl Live {
    async fn client(&mut self, codec: Codec) -> &mut WsClient {
        let name = codec_name(codec);
        if !self.clients.contains_key(name) {
            let opts = ConnectOptions::bearer(token(&format!("fuzzer-{name}"))).with_codec(codec);
            let (mut client, _ready) = WsClient::connect_session(&self.gw.ws_url(), opts)
                .await
                .expect("a new connection works");
            // Password rooms hash with Argon2, seconds in a debug build.
            client.set_timeout(Duration::from_secs(20));
            self.clients.insert(name, client);
        }
        self.clients.get_mut(name).unwrap()
    }

    fn count(&mut self, what: impl Into<String>) {
        *self.answers.entry(what.into()).or_default() += 1;
    }

    /// Reads what is pending on the idle connection, so events for it never pile up.
    async fn drain_others(&mut self, codec: Codec) {
        for (name, client) in &mut self.clients {
            if *name != codec_name(codec) {
                while let Ok(Some(_)) = client.try_recv(Duration::ZERO).await {}
            }
        }
    }

    async fn run(&mut self, case: &Case) -> Result<(), TestCaseError> {
        let wire = Wire::of(case);
        let owed = owed(case.codec, &wire);
        self.next_probe += 1;
        let probe = self.next_probe;
        let client = self.client(case.codec).await;
        if let Some(closed) = client.closed() {
            let code = closed.code;
            self.clients.remove(codec_name(case.codec));
            return Err(TestCaseError::fail(format!(
                "the connection was closed ({code}) after the pong of an earlier case"
            )));
        }
        wire.send(client)
            .await
            .map_err(|e| TestCaseError::fail(format!("send: {e:#}")))?;
        // After a frame that closes the connection, a probe could only meet a reset and lose
        // the close frame: read the close instead.
        let sent = match owed {
            Owed::Close(_) => Err("the frame closes the connection".to_owned()),
            _ => client
                .send(&ClientFrame::Ping { id: Some(probe) })
                .await
                .map_err(|e| format!("{e:#}")),
        };
        let answer = match sent {
            Ok(()) => client
                .recv_until_collect(
                    |f| matches!(f, ServerFrame::Pong { id: Some(id) } if *id == probe),
                )
                .await
                .map(|(_, before)| before)
                .map_err(|e| format!("{e:#}")),
            Err(e) => {
                let _ = client.expect_close().await;
                Err(e)
            }
        };
        let closed = client.closed().map(|c| c.code);
        let before = match (answer, closed) {
            (Ok(before), None) => before,
            (_, Some(code)) => {
                self.clients.remove(codec_name(case.codec));
                prop_assert!(
                    matches!(owed, Owed::Close(owed) if owed == code),
                    "the connection was closed with {code}; owed {owed:?}"
                );
                self.count(format!("closed {code}"));
                // A new connection works.
                let client = self.client(case.codec).await;
                let pong = client.request(&ClientFrame::Ping { id: Some(probe) }).await;
                prop_assert!(matches!(pong, Ok(ServerFrame::Pong { .. })), "{pong:?}");
                return Ok(());
            }
            (Err(e), None) => return Err(TestCaseError::fail(format!("no pong: {e}"))),
        };
        let replies: Vec<&ServerFrame> = before
            .iter()
            .filter(|f| {
                matches!(
                    f,
                    ServerFrame::Ack { .. } | ServerFrame::Error { .. } | ServerFrame::Pong { .. }
                )
            })
            .collect();
        let what = match (&owed, replies.as_slice()) {
            (
                Owed::Refusal(code, Some(id)),
                [
                    ServerFrame::Ack {
                        id: got,
                        result: None,
                        error: Some(e),
                    },
                ],
            ) if got == id && e.code == *code => format!("ack {code}"),
            (Owed::Refusal(code, None), [ServerFrame::Error { code: got, .. }]) if got == code => {
                format!("error {code}")
            }
            (Owed::Pong(id), [ServerFrame::Pong { id: got }]) if got == id => "pong".into(),
            (
                Owed::Ack(id),
                [
                    ServerFrame::Ack {
                        id: got,
                        result: Some(_),
                        error: None,
                    },
                ],
            ) if got == id => "accepted".into(),
            (
                Owed::Ack(id),
                [
                    ServerFrame::Ack {
                        id: got,
                        result: None,
                        error: Some(e),
                    },
                ],
            ) if got == id && domain_code(e.code) => format!("ack {}", e.code),
            (Owed::AtMostAnError, []) => "accepted".into(),
            (Owed::AtMostAnError, [ServerFrame::Error { code, .. }]) if domain_code(*code) => {
                format!("error {code}")
            }
            (owed, replies) => {
                return Err(TestCaseError::fail(format!(
                    "owed {owed:?}, got {replies:?}"
                )));
            }
        };
        self.count(what);
        self.drain_others(case.codec).await;
        Ok(())
    }
}

#[test]
fn a_live_session_answers_every_fuzzed_frame_as_documented_and_stays_usable() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let gw = rt.block_on(gateway_with(&[
        ("SWITCHBOARD_RATE_PER_SEC", "1000000"),
        ("SWITCHBOARD_RATE_BURST", "1000000"),
        ("SWITCHBOARD_MAX_FRAME_BYTES", &MAX_FRAME_BYTES.to_string()),
        ("SWITCHBOARD_MAX_MESSAGE_CHARS", "200"),
    ]));
    let live = RefCell::new(Live {
        gw,
        clients: BTreeMap::new(),
        next_probe: 1 << 62,
        answers: BTreeMap::new(),
    });
    let mut runner = TestRunner::new(Config {
        cases: cases(3_000),
        rng_seed: seed(),
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource(
            "proptest-regressions",
        ))),
        source_file: Some(file!()),
        // Shrinking replays cases against the live gateway; a few hundred steps are plenty.
        max_shrink_iters: 500,
        ..Config::default()
    });
    let failures = std::cell::Cell::new(0u32);
    let result = runner.run(&case(), |case| {
        let outcome = rt.block_on(live.borrow_mut().run(&case));
        if let Err(e) = &outcome {
            // The first failure as it happened; shrinking replays cases on a live gateway, whose
            // state the first failure may have changed.
            failures.set(failures.get() + 1);
            if failures.get() == 1 {
                eprintln!("first failure: {e}\ncase: {case:#?}");
            }
        }
        outcome
    });
    let live = live.into_inner();
    let logs = live.gw.logs();
    eprintln!("answers: {:#?}", live.answers);
    match result {
        Ok(()) => {}
        Err(TestError::Fail(reason, case)) => {
            panic!(
                "{reason}\nminimal failing case: {case:#?}\ngateway log tail:\n{}",
                tail(&logs)
            )
        }
        Err(e) => panic!("{e}"),
    }
    assert!(
        !logs.contains("panicked"),
        "the gateway panicked:\n{}",
        tail(&logs)
    );
}

/// What a connection without an `Authorization` header sends first.
#[derive(Debug, Clone)]
enum First {
    /// `auth` with a good token, or with this bad one.
    Auth(Option<String>),
    /// Anything: a mutated frame, damaged bytes, the other codec's opcode.
    Other(Case),
}

fn first_frame() -> impl Strategy<Value = (Codec, First)> {
    let other = case();
    prop_oneof![
        1 => (codec(), prop::option::of(nasty_string()))
            .prop_map(|(codec, bad)| (codec, First::Auth(bad))),
        3 => other.prop_map(|case| (case.codec, First::Other(case))),
    ]
}

#[test]
fn a_first_frame_other_than_a_good_auth_closes_with_its_documented_code() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let gw = rt.block_on(gateway_with(&[(
        "SWITCHBOARD_MAX_FRAME_BYTES",
        &MAX_FRAME_BYTES.to_string(),
    )]));
    let good = token("fuzzer-first");
    let mut runner = TestRunner::new(Config {
        cases: cases(1_000),
        rng_seed: seed(),
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource(
            "proptest-regressions",
        ))),
        source_file: Some(file!()),
        max_shrink_iters: 500,
        ..Config::default()
    });
    let result = runner.run(&first_frame(), |(codec, first)| {
        rt.block_on(async {
            let opts = ConnectOptions::default().with_codec(codec);
            let mut client = WsClient::connect(&gw.ws_url(), opts)
                .await
                .map_err(|e| TestCaseError::fail(format!("connect: {e}")))?;
            let (wire, ready, close) = match &first {
                First::Auth(bad) => {
                    let token = bad.clone().unwrap_or_else(|| good.clone());
                    let frame = ClientFrame::Auth { token };
                    let bytes = codec.encode(&frame).unwrap();
                    let wire = if codec.is_binary() {
                        Wire::Binary(bytes)
                    } else {
                        Wire::Text(String::from_utf8(bytes).unwrap())
                    };
                    (wire, bad.is_none(), (4001, "authentication failed"))
                }
                First::Other(case) => {
                    let wire = Wire::of(case);
                    // Only bytes that decode as an `auth` with the good token can open a
                    // session; a fuzzed token never is one.
                    let bytes = match (&wire, codec.is_binary()) {
                        (Wire::Binary(b), true) => Some(b.as_slice()),
                        (Wire::Text(t), false) => Some(t.as_bytes()),
                        _ => None,
                    };
                    let ready = bytes.is_some_and(|b| {
                        matches!(codec.decode_client(b), Ok(ClientFrame::Auth { token }) if token == good)
                    });
                    let close = wire.closes_with().unwrap_or((4001, "authentication failed"));
                    (wire, ready, close)
                }
            };
            wire.send(&mut client)
                .await
                .map_err(|e| TestCaseError::fail(format!("send: {e:#}")))?;
            if ready {
                let frame = client.recv().await;
                prop_assert!(
                    matches!(frame, Ok(ServerFrame::SessionReady { .. })),
                    "{:?}",
                    frame
                );
                client.close().await.unwrap();
            } else {
                let closed = client.expect_close().await;
                prop_assert_eq!(
                    closed.as_ref().ok(),
                    Some(&(close.0, close.1.to_owned())),
                    "{:?}",
                    closed
                );
            }
            Ok(())
        })
    });
    if let Err(e) = result {
        panic!("{e}\ngateway log tail:\n{}", tail(&gw.logs()));
    }
    assert!(!gw.logs().contains("panicked"), "{}", tail(&gw.logs()));
}

fn tail(logs: &str) -> String {
    let lines: Vec<&str> = logs.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}
