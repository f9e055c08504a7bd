//! The connection layer for `/sse`: a session whose client only listens, over Server-Sent Events.
//!
//! The client sends nothing, so the wire makes up what a WebSocket client would send: one
//! `room:join` per room it asked for (`?rooms=`), with `sinceSeq` from the `Last-Event-ID` it
//! came back with. The session answers them as it answers any client (membership, replay, the
//! meeting point of replay and live stream), and this layer turns the answers into events: a
//! resumed room's replay as `message:new` events, a refusal as an `error` event. Afterwards it
//! forwards the listed rooms' `message:new` and `room:event`, the user's `user:event` and
//! `notification:new`; nothing else. Each `message:new` carries as its id every listed room's
//! position, which is what `Last-Event-ID` brings back.
//!
//! Liveness: a comment line goes out every heartbeat (the session's probe), and the client is
//! taken for alive until it closes the socket. Writes go straight to the socket
//! (`event_stream.rs` read the request and wrote the response head), one chunk per batch, or on
//! a connection hyper serves into its response body; with the write timeout either way: a
//! client that does not keep up is a slow consumer.

use std::borrow::Cow;
use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::time::Duration;

use bytes::Bytes;
use serde::Deserialize;
use switchboard_protocol::{AckResult, ClientFrame, Codec, RoomId, ServerFrame};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use super::connection::{Connection, End, Inbound, within};
use crate::error::SessionError;
use crate::outbound::Outbound;
use switchboard_protocol::CloseCode;
use tokio_tungstenite::tungstenite::Message as WsMessage;

/// Most rooms one stream may list.
pub const MAX_SSE_ROOMS: usize = 32;

/// What comes back in `Last-Event-ID`: each listed room's position, `room:seq,room:seq`.
pub fn parse_positions(text: &str) -> Option<BTreeMap<RoomId, u64>> {
    let mut positions = BTreeMap::new();
    for pair in text.split(',').filter(|p| !p.is_empty()) {
        let (room, seq) = pair.rsplit_once(':')?;
        positions.insert(RoomId::parse(room).ok()?, seq.parse().ok()?);
    }
    Some(positions)
}

pub fn format_positions(positions: &BTreeMap<RoomId, u64>) -> String {
    let mut id = String::new();
    for (room, seq) in positions {
        if !id.is_empty() {
            id.push(',');
        }
        let _ = write!(id, "{room}:{seq}");
    }
    id
}

/// Where a stream's bytes go (see `event_stream.rs`).
pub(crate) enum SseOutput {
    /// The socket, after the response head: chunked for HTTP/1.1; for HTTP/1.0 the body ends
    /// with the connection.
    Socket { stream: TcpStream, chunked: bool },
    /// A hyper response body, for a stream asked for on a connection hyper already served.
    Body(mpsc::Sender<Bytes>),
}

/// One stream's wire.
pub(crate) struct Sse {
    output: SseOutput,
    /// The made-up `room:join`s not handed to the session yet.
    joins: VecDeque<Bytes>,
    rooms: Rooms,
    write_timeout: Duration,
    heartbeat: Duration,
    /// When the open response next counts as a sign of life. Kept here, not in the future
    /// `incoming` returns: the session makes that future anew on every turn of its loop.
    next_tick: tokio::time::Instant,
}

/// The listed rooms and where the stream stands in each: what decides which frames become
/// events, and what every event id says.
#[derive(Debug)]
struct Rooms {
    /// The listed rooms, by the id of their `room:join` (its index + 1).
    listed: Vec<RoomId>,
    /// Where each listed room stands on this stream (what a resume would ask from): from
    /// `Last-Event-ID`, else once its join was answered.
    positions: BTreeMap<RoomId, u64>,
    /// The rooms whose join resumes and is not answered yet: the reply is replayed as events,
    /// and until then their live messages wait in it.
    resuming: BTreeMap<RoomId, u64>,
}

/// What the stream's wire has for the session next.
#[derive(Debug)]
pub(crate) enum SseIncoming {
    Join(Bytes),
    Tick,
    Closed,
}

impl Sse {
    /// The wire of a stream of `rooms` into `output`, resuming from `positions`.
    pub(crate) fn new(
        output: SseOutput,
        rooms: Vec<RoomId>,
        positions: BTreeMap<RoomId, u64>,
        write_timeout: Duration,
        heartbeat: Duration,
    ) -> Self {
        let joins = rooms
            .iter()
            .enumerate()
            .map(|(i, room)| {
                let join = ClientFrame::RoomJoin {
                    id: i as u64 + 1,
                    room_id: room.clone(),
                    password: None,
                    since_seq: positions.get(room).copied(),
                };
                Bytes::from(serde_json::to_vec(&join).unwrap_or_default())
            })
            .collect();
        Self {
            output,
            joins,
            rooms: Rooms::new(rooms, positions),
            write_timeout,
            heartbeat,
            next_tick: tokio::time::Instant::now() + heartbeat,
        }
    }

    /// Writes `text` (whole events) as one chunk.
    async fn write(&mut self, text: String) -> Result<(), SessionError> {
        if text.is_empty() {
            return Ok(());
        }
        let written = match &mut self.output {
            SseOutput::Socket { stream, chunked } => {
                let bytes = if *chunked {
                    let mut chunk = Vec::with_capacity(text.len() + 12);
                    chunk.extend_from_slice(format!("{:x}\r\n", text.len()).as_bytes());
                    chunk.extend_from_slice(text.as_bytes());
                    chunk.extend_from_slice(b"\r\n");
                    chunk
                } else {
                    text.into_bytes()
                };
                within(self.write_timeout, stream.write_all(&bytes))
                    .await
                    .map(|sent| sent.is_ok())
            }
            SseOutput::Body(body) => within(self.write_timeout, body.send(Bytes::from(text)))
                .await
                .map(|sent| sent.is_ok()),
        };
        match written {
            Some(true) => Ok(()),
            Some(false) => Err(SessionError::Gone),
            None => Err(SessionError::Close(CloseCode::SlowConsumer)),
        }
    }
}

impl Rooms {
    fn new(listed: Vec<RoomId>, positions: BTreeMap<RoomId, u64>) -> Self {
        let resuming: BTreeMap<RoomId, u64> = positions
            .into_iter()
            .filter(|(room, _)| listed.contains(room))
            .collect();
        Self {
            listed,
            // Every id this stream sends keeps the positions it came back with, also while
            // those rooms' joins are still under way.
            positions: resuming.clone(),
            resuming,
        }
    }

    /// Appends `frame` to `out` as an event, if the stream carries it.
    fn event(&mut self, frame: &ServerFrame, out: &mut String) {
        match serde_json::to_string(frame) {
            Ok(json) => self.forward(&json, out),
            Err(error) => tracing::error!(%error, "cannot encode an SSE event"),
        }
    }

    /// Appends the server frame `json` to `out` as an event, if the stream carries it. Only
    /// what decides that is read (a queued frame reaches every stream in the room, and
    /// decoding it whole for each would cost more than the write); the data is `json` as is.
    fn forward(&mut self, json: &str, out: &mut String) {
        let peek = match serde_json::from_str::<Peek<'_>>(json) {
            Ok(peek) => peek,
            Err(error) => {
                tracing::error!(%error, "a server frame does not decode");
                return;
            }
        };
        match &*peek.kind {
            "message:new" => {
                let Some(message) = peek.message else {
                    return;
                };
                let room: &str = &message.room_id;
                if self.resuming.contains_key(room) {
                    // Its join's reply replays up to where live delivery begins: a message
                    // queued before the reply is in it, in order.
                    return;
                }
                let Some(position) = self.positions.get_mut(room) else {
                    return;
                };
                if message.seq <= *position {
                    return;
                }
                *position = message.seq;
                let id = format_positions(&self.positions);
                push_data(out, "message:new", Some(&id), json);
            }
            "room:event"
                if peek
                    .room_id
                    .is_some_and(|room| self.positions.contains_key(&*room)) =>
            {
                push_data(out, "room:event", None, json);
            }
            kind @ ("user:event" | "notification:new") => push_data(out, kind, None, json),
            _ => {}
        }
    }

    /// A join's answer: the room's position, and for a resumed room its replay.
    fn joined(&mut self, id: Option<u64>, result: &AckResult, out: &mut String) {
        let AckResult::Room {
            room,
            messages,
            recovered,
            ..
        } = result
        else {
            return;
        };
        if !self.is_our_join(id, &room.room_id) {
            return;
        }
        let Some(since) = self.resuming.remove(&room.room_id) else {
            // A fresh stream starts with what comes next.
            self.positions.insert(room.room_id.clone(), room.last_seq);
            self.push_joined(&room.room_id, out);
            return;
        };
        if since > room.last_seq {
            // A position this store never reached (its history was reset: a new epoch). Seqs
            // start over, so nothing to replay: say so and go on from the room as it is.
            push_resync(out, &room.room_id, since, room.last_seq);
            self.positions.insert(room.room_id.clone(), room.last_seq);
            self.push_joined(&room.room_id, out);
            return;
        }
        if !recovered {
            // More was missed than a resume replays: say so, then go on from the latest page.
            push_resync(out, &room.room_id, since, room.last_seq);
        }
        // Unrecovered, the reply holds the latest page: what of it is newer than `since`.
        let start = if *recovered {
            since
        } else {
            messages
                .first()
                .map_or(room.last_seq, |m| m.seq.saturating_sub(1))
                .max(since)
        };
        self.positions.insert(room.room_id.clone(), start);
        for message in messages {
            self.event(
                &ServerFrame::MessageNew {
                    message: message.clone(),
                },
                out,
            );
        }
        if let Some(position) = self.positions.get_mut(&room.room_id) {
            *position = (*position).max(room.last_seq);
        }
        self.push_joined(&room.room_id, out);
    }

    /// `joined`: the room's stream begins (after any replay). Its id holds every position, so
    /// a stream that drops before the room's first message still resumes from here.
    fn push_joined(&self, room: &RoomId, out: &mut String) {
        let joined = serde_json::json!({
            "type": "joined",
            "roomId": room,
            "lastSeq": self.positions.get(room),
        });
        let id = format_positions(&self.positions);
        push_data(out, "joined", Some(&id), &joined.to_string());
    }

    fn is_our_join(&self, id: Option<u64>, room: &RoomId) -> bool {
        id.and_then(|id| self.listed.get(usize::try_from(id).ok()?.checked_sub(1)?)) == Some(room)
    }

    /// A join that was refused: an `error` event naming the room.
    fn refused(&self, id: Option<u64>, code: &str, message: &str, out: &mut String) {
        let room = id.and_then(|id| self.listed.get(usize::try_from(id).ok()?.checked_sub(1)?));
        let error = serde_json::json!({
            "type": "error",
            "roomId": room,
            "code": code,
            "message": message,
        });
        push_data(out, "error", None, &error.to_string());
    }
}

/// What [`Sse::forward`] reads of a server frame: its type and room, and a message's room and
/// seq. Strings borrow from the frame unless they hold escapes.
#[derive(Debug, Deserialize)]
struct Peek<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(rename = "roomId", borrow, default)]
    room_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    message: Option<PeekMessage<'a>>,
}

#[derive(Debug, Deserialize)]
struct PeekMessage<'a> {
    #[serde(rename = "roomId", borrow)]
    room_id: Cow<'a, str>,
    seq: u64,
}

/// `resync`: the room cannot be resumed exactly from `since`.
fn push_resync(out: &mut String, room: &RoomId, since: u64, last_seq: u64) {
    let resync = serde_json::json!({
        "type": "resync",
        "roomId": room,
        "sinceSeq": since,
        "lastSeq": last_seq,
    });
    push_data(out, "resync", None, &resync.to_string());
}

fn push_event(out: &mut String, name: &str, id: Option<&str>, frame: &ServerFrame) {
    match serde_json::to_string(frame) {
        Ok(data) => push_data(out, name, id, &data),
        Err(error) => tracing::error!(%error, "cannot encode an SSE event"),
    }
}

/// One event; `data` is one line of JSON (serde never writes a raw newline).
fn push_data(out: &mut String, name: &str, id: Option<&str>, data: &str) {
    if let Some(id) = id {
        let _ = writeln!(out, "id: {id}");
    }
    let _ = write!(out, "event: {name}\ndata: {data}\n\n");
}

impl Connection for Sse {
    fn codec(&self) -> Codec {
        Codec::Json
    }

    type Incoming = SseIncoming;

    fn incoming(&mut self) -> impl Future<Output = SseIncoming> + Send {
        let join = self.joins.pop_front();
        let output = &self.output;
        let tick = self.next_tick;
        async move {
            if let Some(join) = join {
                return SseIncoming::Join(join);
            }
            tokio::select! {
                () = output.hung_up() => SseIncoming::Closed,
                // The client cannot speak; an open response is its sign of life.
                () = tokio::time::sleep_until(tick) => SseIncoming::Tick,
            }
        }
    }

    async fn inbound(&mut self, incoming: SseIncoming) -> Result<Inbound, SessionError> {
        match incoming {
            SseIncoming::Join(frame) => Ok(Inbound::Frame(frame)),
            SseIncoming::Tick => {
                self.next_tick = tokio::time::Instant::now() + self.heartbeat;
                Ok(Inbound::Alive)
            }
            SseIncoming::Closed => Err(SessionError::Gone),
        }
    }

    async fn send(&mut self, frame: &ServerFrame) -> Result<(), SessionError> {
        let mut out = String::new();
        match frame {
            ServerFrame::SessionReady { .. } => push_event(&mut out, "session:ready", None, frame),
            ServerFrame::Ack {
                id,
                result: Some(result),
                ..
            } => self.rooms.joined(Some(*id), result, &mut out),
            ServerFrame::Ack {
                id,
                error: Some(error),
                ..
            } => self
                .rooms
                .refused(Some(*id), error.code.as_str(), &error.message, &mut out),
            ServerFrame::Error { code, message, .. } => {
                self.rooms.refused(None, code.as_str(), message, &mut out);
            }
            other => self.rooms.event(other, &mut out),
        }
        self.write(out).await
    }

    async fn send_queued(
        &mut self,
        first: Outbound,
        more: &mut (dyn FnMut() -> Option<Outbound> + Send),
    ) -> Result<(), SessionError> {
        let mut out = String::new();
        let mut next = Some(first);
        while let Some(queued) = next {
            if let WsMessage::Text(text) = &*queued {
                self.rooms.forward(text.as_str(), &mut out);
            }
            next = more();
        }
        self.write(out).await
    }

    async fn probe(&mut self) -> Result<(), SessionError> {
        self.write(": ping\n\n".to_owned()).await
    }

    async fn close(&mut self, end: End) {
        if let End::Close(code) = end {
            let close = serde_json::json!({
                "type": "close",
                "code": code.code(),
                "reason": code.reason(),
            });
            let mut out = String::new();
            push_data(&mut out, "close", None, &close.to_string());
            let _ = self.write(out).await;
        }
        match &mut self.output {
            // The last chunk, then the connection ends with the response.
            SseOutput::Socket { stream, chunked } => {
                let chunked = *chunked;
                let _ = within(self.write_timeout, async {
                    if chunked {
                        stream.write_all(b"0\r\n\r\n").await?;
                    }
                    stream.shutdown().await
                })
                .await;
            }
            // Dropping the sender ends the response.
            SseOutput::Body(body) => *body = mpsc::channel(1).0,
        }
    }
}

impl SseOutput {
    /// Resolves once the client has gone.
    async fn hung_up(&self) {
        match self {
            Self::Socket { stream, .. } => hung_up(stream).await,
            Self::Body(body) => body.closed().await,
        }
    }
}

/// Resolves once the client has closed its side of the socket (or it failed). A listener sends
/// nothing; whatever it sends all the same is read and dropped.
async fn hung_up(stream: &TcpStream) {
    let mut sink = [0u8; 256];
    loop {
        if stream.readable().await.is_err() {
            return;
        }
        match stream.try_read(&mut sink) {
            Ok(0) => return,
            Ok(_) => {}
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_position_the_store_never_reached_resyncs_instead_of_dropping_what_comes() {
        let room = RoomId::parse("dash").unwrap();
        let mut sse = Rooms::new(vec![room.clone()], BTreeMap::from([(room.clone(), 10)]));
        let reply = AckResult::Room {
            room: switchboard_protocol::RoomInfo {
                room_id: room.clone(),
                name: "dash".into(),
                kind: switchboard_protocol::RoomKind::Public,
                created_by: switchboard_protocol::UserId::parse("alice").unwrap(),
                last_seq: 3,
                member_count: 1,
            },
            role: switchboard_protocol::Role::member(),
            online: Vec::new(),
            messages: Vec::new(),
            recovered: true,
        };
        let mut out = String::new();
        sse.joined(Some(1), &reply, &mut out);
        assert!(out.contains("event: resync"), "{out}");
        assert!(out.contains("id: dash:3\nevent: joined"), "{out}");
        assert_eq!(
            sse.positions.get(&room),
            Some(&3),
            "live seq 4 will be sent"
        );
    }

    #[test]
    fn a_queued_frame_is_forwarded_as_it_came_once_and_only_for_listed_rooms() {
        let dash = RoomId::parse("dash").unwrap();
        let mut sse = Rooms::new(vec![dash.clone()], BTreeMap::from([(dash, 4)]));
        // Its join answered: live from seq 4.
        sse.resuming.clear();
        let message = |room: &str, seq: u64| {
            format!(
                r#"{{"type":"message:new","message":{{"messageId":"m{seq}","roomId":"{room}","seq":{seq},"sender":{{"id":"alice","name":"Alice"}},"kind":"text","content":"say \"hi\"\nthen go","clientMsgId":"c{seq}","createdAt":1}}}}"#
            )
        };
        let mut out = String::new();
        sse.forward(&message("dash", 5), &mut out);
        assert_eq!(
            out,
            format!(
                "id: dash:5\nevent: message:new\ndata: {}\n\n",
                message("dash", 5)
            )
        );
        // Already sent, or not a listed room: nothing.
        out.clear();
        sse.forward(&message("dash", 5), &mut out);
        sse.forward(&message("other", 9), &mut out);
        sse.forward(r#"{"type":"room:event","roomId":"other","event":"x","data":1,"from":{"id":"a","name":"a"}}"#, &mut out);
        sse.forward(
            r#"{"type":"typing:start","roomId":"dash","user":{"id":"a","name":"a"}}"#,
            &mut out,
        );
        assert_eq!(out, "");
        let event = r#"{"type":"room:event","roomId":"dash","event":"cursor","data":{"x":1},"from":{"id":"a","name":"a"}}"#;
        sse.forward(event, &mut out);
        assert_eq!(out, format!("event: room:event\ndata: {event}\n\n"));
    }

    #[test]
    fn positions_read_back_as_written() {
        let mut positions = BTreeMap::new();
        positions.insert(RoomId::parse("news").unwrap(), 7);
        positions.insert(RoomId::parse("dm:alice:bob").unwrap(), 42);
        let text = format_positions(&positions);
        assert_eq!(text, "dm:alice:bob:42,news:7");
        assert_eq!(parse_positions(&text), Some(positions));
        assert_eq!(parse_positions(""), Some(BTreeMap::new()));
        for bad in ["news", "news:x", "bad id:3", "news:-1"] {
            assert_eq!(parse_positions(bad), None, "{bad}");
        }
    }
}
