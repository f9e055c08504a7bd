//! A minimal WebSocket client for the receivers' hot path (`fanout`, Switchboard dialect).
//!
//! tungstenite does more per frame than a receiver needs: it zeroes its read buffer, splits a
//! `BytesMut` per frame, validates every text frame as UTF-8 and registers a waker per frame.
//! Here one `read` fills a buffer that was initialised once, and [`RawWs::next_frame`] hands out
//! every complete frame in it as a slice, without copying, allocating or validating; the caller
//! reads the clock once per read. Pings are answered (masked pongs queued in [`RawWs::flush`]'s
//! buffer); fragmented frames are refused, since the gateway never fragments.
//!
//! The parsing is I/O-free ([`parse_head`], [`RawWs::next_frame`]) so it is tested on bytes.

use std::hash::{BuildHasher, RandomState};

use anyhow::{Context, bail, ensure};
use memchr::memmem;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::client::generate_key;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

const OP_CONTINUATION: u8 = 0x0;
const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xA;
/// Largest frame accepted: far above anything the gateway sends (its own limits are smaller).
const MAX_FRAME_BYTES: usize = 64 << 20;
/// Largest HTTP response head accepted during the upgrade.
const MAX_RESPONSE_HEAD: usize = 16 * 1024;

/// One frame from the server; text payloads borrow the read buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    Text(&'a [u8]),
    Binary,
    /// Answered already: a pong is queued for the next [`RawWs::flush`].
    Ping,
    Pong,
    /// The close code, if the frame carries one.
    Close(Option<u16>),
}

/// Why the byte stream is not a WebSocket stream we accept.
#[derive(Debug, PartialEq, Eq)]
pub enum FrameError {
    UnexpectedFragment,
    MaskedServerFrame,
    ReservedBits,
    BadOpcode(u8),
    TooLarge(u64),
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::UnexpectedFragment => f.write_str("unexpected fragment"),
            Self::MaskedServerFrame => f.write_str("masked frame from the server"),
            Self::ReservedBits => f.write_str("reserved bits set"),
            Self::BadOpcode(op) => write!(f, "unknown opcode {op:#x}"),
            Self::TooLarge(len) => write!(f, "frame of {len} bytes is too large"),
        }
    }
}

impl std::error::Error for FrameError {}

/// A frame's header: what it is and where its payload lies.
#[derive(Debug, PartialEq, Eq)]
pub struct Head {
    pub opcode: u8,
    /// Bytes of header before the payload.
    pub header_len: usize,
    pub payload_len: usize,
}

/// Parses the header at the start of `bytes`: `None` until enough bytes for it have arrived.
pub fn parse_head(bytes: &[u8]) -> Result<Option<Head>, FrameError> {
    let [b0, b1, rest @ ..] = bytes else {
        return Ok(None);
    };
    if b0 & 0x70 != 0 {
        return Err(FrameError::ReservedBits);
    }
    let opcode = b0 & 0x0F;
    if b0 & 0x80 == 0 || opcode == OP_CONTINUATION {
        return Err(FrameError::UnexpectedFragment);
    }
    if !matches!(opcode, OP_TEXT | OP_BINARY | OP_CLOSE | OP_PING | OP_PONG) {
        return Err(FrameError::BadOpcode(opcode));
    }
    if b1 & 0x80 != 0 {
        return Err(FrameError::MaskedServerFrame);
    }
    let (header_len, len) = match b1 & 0x7F {
        126 => match rest {
            [a, b, ..] => (4, u64::from(u16::from_be_bytes([*a, *b]))),
            _ => return Ok(None),
        },
        127 => match rest.first_chunk::<8>() {
            Some(len) => (10, u64::from_be_bytes(*len)),
            None => return Ok(None),
        },
        len => (2, u64::from(len)),
    };
    let payload_len = usize::try_from(len)
        .ok()
        .filter(|&len| len <= MAX_FRAME_BYTES)
        .ok_or(FrameError::TooLarge(len))?;
    Ok(Some(Head {
        opcode,
        header_len,
        payload_len,
    }))
}

/// Appends a masked client frame (FIN set) carrying `payload` to `out`.
pub fn write_frame(out: &mut Vec<u8>, opcode: u8, payload: &[u8], mask: [u8; 4]) {
    out.push(0x80 | opcode);
    match payload.len() {
        len @ 0..=125 => out.push(0x80 | len as u8),
        len @ 126..=0xFFFF => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        len => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().zip(mask.iter().cycle()).map(|(b, m)| b ^ m));
}

/// A client connection past the upgrade.
#[derive(Debug)]
pub struct RawWs {
    stream: TcpStream,
    /// Initialised once (and when it grows), never zeroed per read.
    buf: Vec<u8>,
    /// `buf[start..end]` has arrived and is not parsed yet.
    start: usize,
    end: usize,
    /// Frames to write (pongs, requests), already masked.
    out: Vec<u8>,
    /// Masking keys: xorshift state, randomly seeded.
    mask_state: u64,
}

impl RawWs {
    /// Upgrades `stream` to a WebSocket on `url` with the extra `headers`, keeping whatever the
    /// server sent after its response head (it may send its first frame in the same segment).
    pub async fn handshake(
        mut stream: TcpStream,
        url: &str,
        headers: &[(&str, &str)],
        read_buffer_bytes: usize,
    ) -> anyhow::Result<Self> {
        let request = url.into_client_request()?;
        let uri = request.uri();
        let host = uri.authority().context("URL without a host")?.as_str();
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        let key = generate_key();
        let mut head = format!(
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key}\r\n"
        );
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        stream.write_all(head.as_bytes()).await?;

        let mut ws = Self::new(stream, read_buffer_bytes.max(1024));
        let head_end = loop {
            if let Some(at) = memmem::find(&ws.buf[..ws.end], b"\r\n\r\n") {
                break at + 4;
            }
            ensure!(
                ws.end < MAX_RESPONSE_HEAD,
                "upgrade response head too large"
            );
            if ws.end == ws.buf.len() {
                ws.buf.resize(ws.buf.len() * 2, 0);
            }
            let end = ws.end;
            match ws.stream.read(&mut ws.buf[end..]).await? {
                0 => bail!("connection ended during the upgrade"),
                n => ws.end += n,
            }
        };
        ws.start = head_end;
        check_response(&ws.buf[..head_end], &ws.buf[head_end..ws.end], &key)?;
        Ok(ws)
    }

    fn new(stream: TcpStream, read_buffer_bytes: usize) -> Self {
        Self {
            stream,
            buf: vec![0; read_buffer_bytes],
            start: 0,
            end: 0,
            out: Vec::new(),
            mask_state: RandomState::new().hash_one(0u8) | 1,
        }
    }

    fn mask(&mut self) -> [u8; 4] {
        let mut x = self.mask_state;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.mask_state = x;
        (x as u32).to_ne_bytes()
    }

    /// Reads once from the socket into the buffer: `Ok(0)` at end of stream.
    pub async fn fill(&mut self) -> std::io::Result<usize> {
        self.make_room();
        let end = self.end;
        let n = self.stream.read(&mut self.buf[end..]).await?;
        self.end += n;
        Ok(n)
    }

    /// Moves unparsed bytes (normally the start of a frame) to the front, and grows the buffer
    /// if that frame is larger than it: the next read always has room.
    fn make_room(&mut self) {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
            return;
        }
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        // A head that does not parse is an error the next `next_frame` reports.
        let wanted = match parse_head(&self.buf[..self.end]) {
            Ok(Some(head)) => head.header_len + head.payload_len,
            _ => 0,
        }
        .max(self.end + 1);
        if wanted > self.buf.len() {
            self.buf.resize(wanted.max(self.buf.len() * 2), 0);
        }
    }

    /// The next complete frame in the buffer, or `None` when more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<Frame<'_>>, FrameError> {
        let Some(head) = parse_head(&self.buf[self.start..self.end])? else {
            return Ok(None);
        };
        let from = self.start + head.header_len;
        let to = from + head.payload_len;
        if to > self.end {
            return Ok(None);
        }
        self.start = to;
        Ok(Some(match head.opcode {
            OP_TEXT => Frame::Text(&self.buf[from..to]),
            OP_BINARY => Frame::Binary,
            OP_PING => {
                let mask = self.mask();
                write_frame(&mut self.out, OP_PONG, &self.buf[from..to], mask);
                Frame::Ping
            }
            OP_PONG => Frame::Pong,
            _ => Frame::Close(
                self.buf[from..to]
                    .first_chunk::<2>()
                    .map(|code| u16::from_be_bytes(*code)),
            ),
        }))
    }

    /// Whether frames (pongs) wait for [`Self::flush`].
    pub fn has_output(&self) -> bool {
        !self.out.is_empty()
    }

    /// Queues a text frame.
    pub fn feed_text(&mut self, text: &[u8]) {
        let mask = self.mask();
        write_frame(&mut self.out, OP_TEXT, text, mask);
    }

    /// Writes every queued frame.
    pub async fn flush(&mut self) -> std::io::Result<()> {
        if !self.out.is_empty() {
            self.stream.write_all(&self.out).await?;
            self.out.clear();
        }
        Ok(())
    }

    /// Sends a text frame now.
    pub async fn send_text(&mut self, text: &[u8]) -> std::io::Result<()> {
        self.feed_text(text);
        self.flush().await
    }

    /// The next text frame, copied (setup only); pings are answered, other frames skipped.
    pub async fn next_text(&mut self) -> anyhow::Result<Vec<u8>> {
        loop {
            while let Some(frame) = self.next_frame()? {
                match frame {
                    Frame::Text(text) => return Ok(text.to_vec()),
                    Frame::Close(Some(code)) => bail!("closed by the gateway: {code}"),
                    Frame::Close(None) => bail!("closed by the gateway"),
                    Frame::Ping | Frame::Pong | Frame::Binary => {}
                }
            }
            self.flush().await?;
            if self.fill().await? == 0 {
                bail!("connection ended");
            }
        }
    }
}

/// Checks an upgrade response: status 101 and the accept key derived from `key`.
fn check_response(head: &[u8], after: &[u8], key: &str) -> anyhow::Result<()> {
    let head = String::from_utf8_lossy(head);
    let status = head
        .split(' ')
        .nth(1)
        .context("unreadable upgrade response")?;
    if status != "101" {
        bail!(
            "upgrade refused with HTTP {status}: {}",
            String::from_utf8_lossy(after).trim()
        );
    }
    let accept = head.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case("sec-websocket-accept")
            .then(|| value.trim())
    });
    ensure!(
        accept == Some(derive_accept_key(key.as_bytes()).as_str()),
        "upgrade response without the right Sec-WebSocket-Accept"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// A server frame (unmasked) carrying `payload`.
    fn server_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        write_frame(&mut out, opcode, payload, [0; 4]);
        // Same layout as a client frame, minus the mask bit and key.
        out[1] &= 0x7F;
        let header_len = match out[1] {
            126 => 4,
            127 => 10,
            _ => 2,
        };
        out.drain(header_len..header_len + 4);
        out
    }

    /// Unmasks a client frame: its opcode and payload.
    fn unmask(frame: &[u8]) -> (u8, Vec<u8>) {
        assert_eq!(frame[0] & 0x80, 0x80, "FIN");
        assert_eq!(frame[1] & 0x80, 0x80, "client frames are masked");
        let (len, at) = match frame[1] & 0x7F {
            126 => (usize::from(u16::from_be_bytes([frame[2], frame[3]])), 4),
            127 => (
                usize::try_from(u64::from_be_bytes(frame[2..10].try_into().unwrap())).unwrap(),
                10,
            ),
            len => (usize::from(len), 2),
        };
        let mask = &frame[at..at + 4];
        let payload = &frame[at + 4..];
        assert_eq!(payload.len(), len);
        let payload = payload
            .iter()
            .zip(mask.iter().cycle())
            .map(|(b, m)| b ^ m)
            .collect();
        (frame[0] & 0x0F, payload)
    }

    /// A connected pair: the client end wrapped in a `RawWs`, the server end raw.
    async fn pair(buffer: usize) -> (RawWs, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap());
        let (client, server) = tokio::join!(client, listener.accept());
        (RawWs::new(client.unwrap(), buffer), server.unwrap().0)
    }

    #[test]
    fn lengths_of_7_16_and_64_bits_are_read() {
        for len in [0, 125, 126, 65_535, 65_536, 70_000] {
            let frame = server_frame(OP_TEXT, &vec![b'x'; len]);
            let head = parse_head(&frame).unwrap().unwrap();
            assert_eq!(head.payload_len, len);
            assert_eq!(head.header_len + len, frame.len());
            // Any shorter prefix of the header asks for more.
            for cut in 0..head.header_len {
                assert_eq!(parse_head(&frame[..cut]), Ok(None));
            }
        }
    }

    #[test]
    fn fragments_and_masked_frames_are_refused() {
        assert_eq!(
            parse_head(&[0x01, 0x00]),
            Err(FrameError::UnexpectedFragment)
        );
        assert_eq!(
            parse_head(&[0x80, 0x00]),
            Err(FrameError::UnexpectedFragment)
        );
        assert_eq!(
            parse_head(&[0x81, 0x80]),
            Err(FrameError::MaskedServerFrame)
        );
        assert_eq!(parse_head(&[0x83, 0x00]), Err(FrameError::BadOpcode(3)));
    }

    #[tokio::test]
    async fn frames_split_across_reads_are_reassembled() {
        let (mut ws, mut server) = pair(64).await;
        let big = vec![b'y'; 300];
        let mut bytes = server_frame(OP_TEXT, b"first");
        bytes.extend(server_frame(OP_TEXT, &big));
        bytes.extend(server_frame(OP_BINARY, b"bin"));
        bytes.extend(server_frame(OP_TEXT, b"last"));
        let mut texts = Vec::new();
        let mut others = 0;
        // Seven bytes at a time: every frame and header is cut somewhere.
        for chunk in bytes.chunks(7) {
            server.write_all(chunk).await.unwrap();
            let mut got = 0;
            while got < chunk.len() {
                let n = ws.fill().await.unwrap();
                assert!(n > 0, "a read with no room");
                got += n;
            }
            while let Some(frame) = ws.next_frame().unwrap() {
                match frame {
                    Frame::Text(text) => texts.push(text.to_vec()),
                    _ => others += 1,
                }
            }
        }
        assert_eq!(texts, vec![b"first".to_vec(), big, b"last".to_vec()]);
        assert_eq!(others, 1);
        // The 300-byte frame did not fit the 64-byte buffer, which grew.
        assert!(ws.buf.len() >= 302);
    }

    #[tokio::test]
    async fn a_ping_is_answered_with_a_masked_pong_of_the_same_payload() {
        let (mut ws, mut server) = pair(1024).await;
        server
            .write_all(&server_frame(OP_PING, b"are you there"))
            .await
            .unwrap();
        ws.fill().await.unwrap();
        assert_eq!(ws.next_frame(), Ok(Some(Frame::Ping)));
        assert_eq!(ws.next_frame(), Ok(None));
        assert!(ws.has_output());
        ws.flush().await.unwrap();
        let mut pong = vec![0; 2 + 4 + 13];
        server.read_exact(&mut pong).await.unwrap();
        assert_eq!(unmask(&pong), (OP_PONG, b"are you there".to_vec()));
    }

    #[tokio::test]
    async fn a_close_yields_its_code() {
        let (mut ws, mut server) = pair(1024).await;
        let mut close = server_frame(OP_CLOSE, &[0x0F, 0xA5, b'b', b'y', b'e']);
        close.extend(server_frame(OP_CLOSE, &[]));
        server.write_all(&close).await.unwrap();
        while ws.end < close.len() {
            ws.fill().await.unwrap();
        }
        assert_eq!(ws.next_frame(), Ok(Some(Frame::Close(Some(4005)))));
        assert_eq!(ws.next_frame(), Ok(Some(Frame::Close(None))));
    }

    #[test]
    fn client_frames_of_every_length_are_masked() {
        for len in [5, 200, 70_000] {
            let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let mut out = Vec::new();
            write_frame(&mut out, OP_TEXT, &payload, [1, 2, 3, 4]);
            assert_eq!(unmask(&out), (OP_TEXT, payload));
        }
    }

    #[tokio::test]
    async fn bytes_after_the_upgrade_response_are_kept() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}/ws", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut request = Vec::new();
            while !request.ends_with(b"\r\n\r\n") {
                let mut byte = [0];
                socket.read_exact(&mut byte).await.unwrap();
                request.push(byte[0]);
            }
            let request = String::from_utf8(request).unwrap();
            assert!(request.starts_with("GET /ws HTTP/1.1\r\n"));
            assert!(request.contains("\r\nAuthorization: Bearer t\r\n"));
            assert!(request.contains("\r\nSec-WebSocket-Version: 13\r\n"));
            let key = request
                .lines()
                .find_map(|l| l.strip_prefix("Sec-WebSocket-Key: "))
                .unwrap();
            // The response and the first frame in one write.
            let mut reply = format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nsec-websocket-accept: {}\r\n\r\n",
                derive_accept_key(key.as_bytes())
            )
            .into_bytes();
            reply.extend(server_frame(OP_TEXT, br#"{"type":"session:ready"}"#));
            socket.write_all(&reply).await.unwrap();
            socket
        });
        let stream = TcpStream::connect(url.trim_start_matches("ws://").trim_end_matches("/ws"))
            .await
            .unwrap();
        let mut ws = RawWs::handshake(stream, &url, &[("Authorization", "Bearer t")], 1024)
            .await
            .unwrap();
        let _server = server.await.unwrap();
        assert_eq!(
            ws.next_frame(),
            Ok(Some(Frame::Text(br#"{"type":"session:ready"}"#)))
        );
    }

    #[test]
    fn a_refused_upgrade_reports_status_and_body() {
        let error = check_response(
            b"HTTP/1.1 401 Unauthorized\r\ncontent-length: 9\r\n\r\n",
            b"bad token",
            "k",
        )
        .unwrap_err();
        assert_eq!(
            error.to_string(),
            "upgrade refused with HTTP 401: bad token"
        );
    }
}
