//! A session's connection as Socket.IO v5 over Engine.IO v4 on a WebSocket (`/socket.io/`), so
//! that `socket.io-client` apps connect unchanged: the connect packet's auth payload is the
//! `auth` frame, events are frames and frames are events (`crate::socketio::mapping`), acks
//! carry the replies, and Engine.IO pings probe liveness. The session's rules are the same as
//! on `/ws`; only the wire differs.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use serde::Deserialize;

use futures_util::{SinkExt, StreamExt};
use switchboard_protocol::{
    AckResult, ClientFrame, CloseCode, Codec, ErrorBody, ErrorCode, Message, RoomId, ServerFrame,
};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Error as WsError;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode as WsCloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};

use super::connection::{Connection, End, Inbound, within};
use super::websocket::written;
use crate::app::App;
use crate::error::SessionError;
use crate::outbound::Outbound;
use crate::socketio::mapping::{auth_frame, event_of_frame, frame_of_event};
use crate::socketio::packet::{self, EnginePacket, MAIN_NAMESPACE, SocketKind, SocketPacket};
use crate::socketio::recovery::{Claim, Pid, Positions, offset};
use crate::wall_clock;

/// Queued frames written per flush.
const MAX_BATCH: usize = 256;
/// Time allowed for a close handshake before the socket is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(2);
/// Request ids the connection gives events sent without an ack: their replies are not
/// written. Above any id `socket.io-client` counts to.
const UNACKED_IDS: u64 = 1 << 53;
/// Request ids of the `room:join`s a recovery makes up (above the unacked ones).
const RESUME_IDS: u64 = 1 << 62;
/// Frames held while a recovery gathers its replay; past it, the socket connects unrecovered.
const MAX_HELD: usize = 4_096;

/// A Socket.IO client's WebSocket.
pub(crate) struct SocketIo<S> {
    ws: WebSocketStream<S>,
    write_timeout: Duration,
    /// The connect packet was answered: the socket is connected.
    connected: bool,
    /// The next id for an event without an ack.
    next_unacked: u64,
    /// Binary attachments still to skip (binary events are not supported).
    skip_attachments: usize,
    /// How long after its first connect a socket may be recovered.
    recovery_window: Duration,
    /// What the client's connect packet claimed, to recover.
    claim: Option<Claim>,
    /// This socket's pid once connected, and its offsets' base.
    pid: Option<(String, Pid)>,
    /// Where each room stands on this socket: what the offset of every `message:new` says.
    positions: Positions,
    /// The last seq a recovery replayed in each room: live messages up to it were handed over.
    replayed: BTreeMap<RoomId, u64>,
    /// Made-up `room:join`s of a recovery, not handed to the session yet.
    joins: VecDeque<Bytes>,
    /// A recovery gathering its replay: the connect answer waits for it.
    gathering: Option<Gathering>,
}

/// A recovery under way: `session:ready` and everything after it wait until every made-up
/// `room:join` is answered, so that the connect answer can say whether the socket recovered.
#[derive(Debug)]
struct Gathering {
    ready: ReadyPeek,
    ready_json: String,
    /// The made-up joins not answered yet.
    pending: BTreeSet<u64>,
    /// Every join recovered its room exactly.
    recovered: bool,
    /// The missed messages, room by room in seq order.
    replay: Vec<Message>,
    /// Frames that came meanwhile (live messages among them), as JSON.
    held: Vec<String>,
}

/// What the connect answer needs of `session:ready`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ReadyPeek {
    conn_id: String,
    user: UserPeek,
    rooms: Vec<RoomPeek>,
}

#[derive(Debug, Clone, Deserialize)]
struct UserPeek {
    id: switchboard_protocol::UserId,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RoomPeek {
    room_id: RoomId,
    last_seq: u64,
}

/// The room and seq of a `message:new`, read without decoding the message.
#[derive(Debug, Deserialize)]
struct MessagePeek {
    message: MessagePosition,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct MessagePosition {
    room_id: RoomId,
    seq: u64,
}

/// What the wire has for the session next.
#[derive(Debug)]
pub(crate) enum SocketIoIncoming {
    Ws(Option<Result<WsMessage, WsError>>),
    /// A made-up `room:join` is waiting in `joins`.
    Join,
}

impl<S> std::fmt::Debug for SocketIo<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SocketIo")
            .field("connected", &self.connected)
            .finish_non_exhaustive()
    }
}

impl<S> SocketIo<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    /// Wraps a socket whose upgrade was answered with 101 and sends the Engine.IO open packet;
    /// `None` when the client is gone already.
    pub(crate) async fn accept(socket: S, app: &App) -> Option<Self> {
        let ws =
            WebSocketStream::from_raw_socket(socket, Role::Server, Some(app.ws_config())).await;
        let mut wire = Self {
            ws,
            write_timeout: app.config.write_timeout(),
            connected: false,
            next_unacked: UNACKED_IDS,
            skip_attachments: 0,
            recovery_window: app.config.socketio_recovery_window(),
            claim: None,
            pid: None,
            positions: Positions::default(),
            replayed: BTreeMap::new(),
            joins: VecDeque::new(),
            gathering: None,
        };
        let interval = app.config.heartbeat_interval();
        let open = packet::open(
            &engine_sid(),
            millis(interval),
            // The session closes a connection silent for the heartbeat timeout.
            millis(app.config.heartbeat_timeout().saturating_sub(interval)),
            app.config.max_frame_bytes,
        );
        wire.write_text(open).await.ok()?;
        Some(wire)
    }

    /// Writes `packets` with one flush.
    async fn write_packets(&mut self, packets: Vec<String>) -> Result<(), SessionError> {
        let ws = &mut self.ws;
        let batch = async {
            for packet in packets {
                ws.feed(WsMessage::text(packet)).await?;
            }
            ws.flush().await
        };
        written(within(self.write_timeout, batch).await)
    }

    async fn write_text(&mut self, text: String) -> Result<(), SessionError> {
        written(within(self.write_timeout, self.ws.send(WsMessage::text(text))).await)
    }

    /// Answers an event's ack with a refusal the connection makes itself.
    async fn refuse(&mut self, ack_id: Option<u64>, message: &str) -> Result<(), SessionError> {
        let Some(id) = ack_id else {
            return Ok(());
        };
        let error = ErrorBody {
            code: ErrorCode::InvalidField,
            message: message.to_owned(),
        };
        let payload = serde_json::json!({ "error": error }).to_string();
        self.write_text(packet::ack(id, &payload)).await
    }

    /// What one Socket.IO packet from the client means.
    async fn socket_packet(&mut self, text: &str) -> Result<Inbound, SessionError> {
        let Ok(socket) = SocketPacket::parse(text) else {
            tracing::debug!("unreadable Socket.IO packet");
            return Err(SessionError::Close(CloseCode::ProtocolError));
        };
        if socket.namespace != MAIN_NAMESPACE {
            if socket.kind == SocketKind::Connect {
                let refusal = packet::connect_error(socket.namespace, "Invalid namespace", None);
                self.write_text(refusal).await?;
            }
            return Ok(Inbound::Alive);
        }
        match socket.kind {
            SocketKind::Connect if !self.connected => {
                self.claim = Claim::of_connect(socket.data);
                Ok(Inbound::Frame(auth_frame(socket.data).into()))
            }
            SocketKind::Connect | SocketKind::Ack => Ok(Inbound::Alive),
            SocketKind::Disconnect => Err(SessionError::Gone),
            SocketKind::Event => {
                let id = match socket.ack_id {
                    Some(id) => id,
                    None => {
                        self.next_unacked += 1;
                        self.next_unacked
                    }
                };
                match frame_of_event(socket.data, id) {
                    Ok((_, json)) => Ok(Inbound::Frame(json.into())),
                    Err(error) => {
                        self.refuse(socket.ack_id, &error.to_string()).await?;
                        Ok(Inbound::Alive)
                    }
                }
            }
            SocketKind::BinaryEvent | SocketKind::BinaryAck => {
                self.skip_attachments = socket.attachments;
                self.refuse(socket.ack_id, "binary events are not supported")
                    .await?;
                Ok(Inbound::Alive)
            }
            SocketKind::ConnectError => Err(SessionError::Close(CloseCode::ProtocolError)),
        }
    }

    /// The packets the client expects for `json`, a frame (`type` first), appended to `out`.
    fn outgoing(&mut self, json: &str, out: &mut Vec<String>) {
        if let Some(gathering) = &mut self.gathering {
            if let Some((id, outcome)) = resume_answer(json) {
                gathering.pending.remove(&id);
                match outcome {
                    Some((messages, true)) => gathering.replay.extend(messages),
                    _ => gathering.recovered = false,
                }
            } else if gathering.held.len() < MAX_HELD {
                gathering.held.push(json.to_owned());
            } else {
                gathering.recovered = false;
                gathering.held.push(json.to_owned());
                gathering.pending.clear();
            }
            if gathering.pending.is_empty() {
                self.finish_recovery(out);
            }
            return;
        }
        let Some((name, argument)) = event_of_frame(json) else {
            return;
        };
        match name.as_str() {
            "session:ready" if !self.connected => self.on_ready(json, out),
            "ack" => {
                let Ok(reply) = serde_json::from_str::<ServerFrame>(json) else {
                    return;
                };
                let sent = self.follow_reply(&reply);
                out.extend(ack_packet(&reply));
                // The client learns offsets from events only: a stored message of its own moves
                // its position, and this event carries the new offset.
                if let Some(sent) = sent
                    && self.pid.is_some()
                {
                    out.push(self.with_offset("message:sent", &sent));
                }
            }
            "message:new" => {
                let Ok(MessagePeek { message }) = serde_json::from_str(json) else {
                    return;
                };
                if self
                    .replayed
                    .get(&message.room_id)
                    .is_some_and(|&replayed| message.seq <= replayed)
                {
                    // Handed over by the recovery's replay already.
                    return;
                }
                self.positions.advance(&message.room_id, message.seq);
                out.push(self.with_offset(&name, &argument));
            }
            _ => out.push(packet::event(&name, &argument)),
        }
    }

    /// `session:ready`: connects the socket, new or recovered. A claim that holds makes up
    /// one `room:join` per room to resume and waits for their answers.
    fn on_ready(&mut self, json: &str, out: &mut Vec<String>) {
        let Ok(ready) = serde_json::from_str::<ReadyPeek>(json) else {
            return;
        };
        let members: BTreeSet<RoomId> = ready.rooms.iter().map(|r| r.room_id.clone()).collect();
        let points = self.claim.as_ref().and_then(|claim| {
            claim.resume_points(
                &ready.user.id,
                wall_clock::now_millis(),
                self.recovery_window,
                &members,
            )
        });
        let Some(points) = points else {
            self.connect_new(&ready, json, out);
            return;
        };
        self.joins = points
            .iter()
            .enumerate()
            .map(|(i, (room, since))| {
                let join = ClientFrame::RoomJoin {
                    id: RESUME_IDS + i as u64,
                    room_id: room.clone(),
                    password: None,
                    since_seq: Some(*since),
                };
                Bytes::from(serde_json::to_vec(&join).unwrap_or_default())
            })
            .collect();
        self.positions = Positions::new(points);
        self.gathering = Some(Gathering {
            ready,
            ready_json: json.to_owned(),
            pending: (0..self.joins.len() as u64)
                .map(|i| RESUME_IDS + i)
                .collect(),
            recovered: true,
            replay: Vec::new(),
            held: Vec::new(),
        });
        if self.joins.is_empty() {
            self.finish_recovery(out);
        }
    }

    /// Connects with a new pid: where every room of the user stands now.
    fn connect_new(&mut self, ready: &ReadyPeek, ready_json: &str, out: &mut Vec<String>) {
        let pid = Pid {
            user: ready.user.id.clone(),
            issued_ms: wall_clock::now_millis(),
            base: ready
                .rooms
                .iter()
                .map(|r| (r.room_id.clone(), r.last_seq))
                .collect(),
        };
        self.positions = Positions::new(pid.base.clone());
        // Without a window, no pid: the client asks for no recovery.
        let pid = (!self.recovery_window.is_zero()).then(|| (pid.encode(), pid));
        self.connect(&ready.conn_id, pid, ready_json, out);
    }

    fn connect(
        &mut self,
        conn_id: &str,
        pid: Option<(String, Pid)>,
        ready_json: &str,
        out: &mut Vec<String>,
    ) {
        self.connected = true;
        out.push(packet::connected(
            conn_id,
            pid.as_ref().map(|(text, _)| text.as_str()),
        ));
        self.pid = pid;
        if let Some((name, argument)) = event_of_frame(ready_json) {
            out.push(packet::event(&name, &argument));
        }
    }

    /// Every made-up join answered: connects recovered (same pid, the replay, then what was
    /// held) or not (a new pid, what was held).
    fn finish_recovery(&mut self, out: &mut Vec<String>) {
        let Some(gathering) = self.gathering.take() else {
            return;
        };
        // Given up early (too much held): joins not handed over yet are not needed.
        self.joins.clear();
        let claim = self.claim.take();
        match claim {
            Some(claim) if gathering.recovered => {
                self.connect(
                    &gathering.ready.conn_id,
                    Some((claim.pid_text, claim.pid)),
                    &gathering.ready_json,
                    out,
                );
                for message in gathering.replay {
                    let (room, seq) = (message.room_id.clone(), message.seq);
                    let frame = ServerFrame::MessageNew { message };
                    if let Ok(json) = serde_json::to_string(&frame) {
                        self.outgoing(&json, out);
                    }
                    self.replayed.insert(room, seq);
                }
            }
            _ => self.connect_new(&gathering.ready, &gathering.ready_json, out),
        }
        for json in gathering.held {
            self.outgoing(&json, out);
        }
    }

    /// What a reply means for the positions: a room the client joined or created counts in
    /// its offsets from then on; a message it sent is one it does not need replayed (then the
    /// `message:sent` argument, `{"roomId","messageId","seq"}`, is returned).
    fn follow_reply(&mut self, reply: &ServerFrame) -> Option<String> {
        let ServerFrame::Ack {
            id,
            result: Some(result),
            ..
        } = reply
        else {
            return None;
        };
        match result {
            AckResult::Room { room, .. } if *id < UNACKED_IDS => {
                self.positions.advance(&room.room_id, room.last_seq);
                None
            }
            AckResult::Sent {
                room_id,
                message_id,
                seq,
                ..
            } => {
                self.positions.sent(room_id, *seq);
                let sent =
                    serde_json::json!({ "roomId": room_id, "messageId": message_id, "seq": seq });
                Some(sent.to_string())
            }
            _ => None,
        }
    }

    /// `42["message:new",{...},"<offset>"]`: the offset is what a recovery resumes from.
    fn with_offset(&self, name: &str, argument: &str) -> String {
        let Some((_, pid)) = &self.pid else {
            return packet::event(name, argument);
        };
        let offset = offset(self.positions.seen(), &pid.base);
        let offset = serde_json::Value::from(offset).to_string();
        packet::event(name, &format!("{argument},{offset}"))
    }
}

/// What a made-up `room:join` brought: the replay and whether it is exact; `None` for a refusal.
type Resumed = Option<(Vec<Message>, bool)>;

/// The answer to a made-up `room:join`: its id and what it brought. `None` for any other frame.
fn resume_answer(json: &str) -> Option<(u64, Resumed)> {
    if !json.starts_with(r#"{"type":"ack""#) {
        return None;
    }
    let ServerFrame::Ack { id, result, .. } = serde_json::from_str::<ServerFrame>(json).ok()?
    else {
        return None;
    };
    if id < RESUME_IDS {
        return None;
    }
    Some((
        id,
        match result {
            Some(AckResult::Room {
                messages,
                recovered,
                ..
            }) => Some((messages, recovered)),
            _ => None,
        },
    ))
}

/// `43<id>[result]` or `43<id>[{"error": ...}]`; nothing for an event sent without an ack.
fn ack_packet(reply: &ServerFrame) -> Option<String> {
    let ServerFrame::Ack { id, result, error } = reply else {
        return None;
    };
    if *id >= UNACKED_IDS {
        return None;
    }
    let payload = match (result, error) {
        (Some(result), _) => serde_json::to_string(&result).ok()?,
        (None, Some(error)) => serde_json::json!({ "error": error }).to_string(),
        (None, None) => "{}".to_owned(),
    };
    Some(packet::ack(*id, &payload))
}

impl<S> Connection for SocketIo<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    fn codec(&self) -> Codec {
        Codec::Json
    }

    type Incoming = SocketIoIncoming;

    fn incoming(&mut self) -> impl Future<Output = Self::Incoming> + Send {
        // The join stays in `joins` until `inbound` takes it: a dropped future loses nothing.
        let join_waiting = !self.joins.is_empty();
        let next = self.ws.next();
        async move {
            if join_waiting {
                SocketIoIncoming::Join
            } else {
                SocketIoIncoming::Ws(next.await)
            }
        }
    }

    async fn inbound(&mut self, incoming: Self::Incoming) -> Result<Inbound, SessionError> {
        let incoming = match incoming {
            SocketIoIncoming::Join => {
                return Ok(match self.joins.pop_front() {
                    Some(join) => Inbound::Frame(join),
                    None => Inbound::Alive,
                });
            }
            SocketIoIncoming::Ws(incoming) => incoming,
        };
        let text = match incoming {
            None | Some(Err(_)) => return Err(SessionError::Gone),
            Some(Ok(WsMessage::Text(text))) => text,
            Some(Ok(WsMessage::Binary(_))) => {
                // An attachment of a refused binary event; nothing else comes as binary.
                if self.skip_attachments == 0 {
                    return Err(SessionError::Close(CloseCode::ProtocolError));
                }
                self.skip_attachments -= 1;
                return Ok(Inbound::Alive);
            }
            Some(Ok(WsMessage::Ping(_))) => {
                written(within(self.write_timeout, self.ws.flush()).await)?;
                return Ok(Inbound::Alive);
            }
            Some(Ok(WsMessage::Pong(_) | WsMessage::Frame(_))) => return Ok(Inbound::Alive),
            Some(Ok(WsMessage::Close(_))) => {
                let _ = self.ws.flush().await;
                return Err(SessionError::Gone);
            }
        };
        match EnginePacket::parse(text.as_str()) {
            Ok(EnginePacket::Message(socket)) => self.socket_packet(socket).await,
            Ok(EnginePacket::Pong | EnginePacket::Noop | EnginePacket::Upgrade) => {
                Ok(Inbound::Alive)
            }
            Ok(EnginePacket::Ping(data)) => {
                self.write_text(format!("3{data}")).await?;
                Ok(Inbound::Alive)
            }
            Ok(EnginePacket::Close) => Err(SessionError::Gone),
            Err(error) => {
                tracing::debug!(%error, "unreadable Engine.IO packet");
                Err(SessionError::Close(CloseCode::ProtocolError))
            }
        }
    }

    async fn send(&mut self, frame: &ServerFrame) -> Result<(), SessionError> {
        let json = serde_json::to_string(frame).map_err(|error| {
            tracing::error!(%error, "cannot encode frame");
            SessionError::Close(CloseCode::InternalError)
        })?;
        let mut packets = Vec::new();
        self.outgoing(&json, &mut packets);
        self.write_packets(packets).await
    }

    async fn send_queued(
        &mut self,
        first: Outbound,
        more: &mut (dyn FnMut() -> Option<Outbound> + Send),
    ) -> Result<(), SessionError> {
        let mut packets = Vec::new();
        let mut next = Some(first);
        while let Some(outbound) = next.take() {
            if let WsMessage::Text(json) = &*outbound {
                self.outgoing(json.as_str(), &mut packets);
            }
            if packets.len() < MAX_BATCH {
                next = more();
            }
        }
        self.write_packets(packets).await
    }

    async fn probe(&mut self) -> Result<(), SessionError> {
        self.write_text(packet::PING.to_owned()).await
    }

    /// Before the socket connected, a refusal is a connect error (`connect_error` with the
    /// close code in `data`); after, a code that says not to reconnect disconnects the socket
    /// (`41`: the client stays away), any other only closes the WebSocket, and the client
    /// reconnects.
    async fn close(&mut self, end: End) {
        let (frame, packet) = match end {
            End::Close(code) => {
                let packet = if !self.connected {
                    let data = serde_json::json!({ "code": code.code() });
                    Some(packet::connect_error(
                        MAIN_NAMESPACE,
                        code.reason(),
                        Some(&data),
                    ))
                } else if !code.reconnect() {
                    Some(packet::DISCONNECT.to_owned())
                } else {
                    None
                };
                let frame = CloseFrame {
                    code: WsCloseCode::from(code.code()),
                    reason: code.reason().into(),
                };
                (Some(frame), packet)
            }
            End::ByClient => (None, None),
        };
        let ws = &mut self.ws;
        let _ = tokio::time::timeout(CLOSE_GRACE, async {
            if let Some(packet) = packet
                && ws.send(WsMessage::text(packet)).await.is_err()
            {
                return;
            }
            if ws.close(frame).await.is_err() {
                return;
            }
            while let Some(Ok(_)) = ws.next().await {}
        })
        .await;
    }
}

/// An Engine.IO session id: unique enough to tell sessions apart in a client's logs.
fn engine_sid() -> String {
    format!("{:016x}", rand::random::<u64>())
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_go_to_acks_and_unacked_events_get_none() {
        let ok = r#"{"type":"ack","id":3,"result":{"kind":"ok"}}"#;
        let ack =
            |json: &str| ack_packet(&serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}")));
        assert_eq!(ack(ok).as_deref(), Some(r#"433[{"kind":"ok"}]"#));
        let refused =
            r#"{"type":"ack","id":4,"error":{"code":"NOT_A_MEMBER","message":"join first"}}"#;
        assert_eq!(
            ack(refused).as_deref(),
            Some(r#"434[{"error":{"code":"NOT_A_MEMBER","message":"join first"}}]"#)
        );
        let unacked = format!(
            r#"{{"type":"ack","id":{},"result":{{"kind":"ok"}}}}"#,
            UNACKED_IDS + 1
        );
        assert_eq!(ack(&unacked), None);
    }
}
