//! A Server-Sent Events test client: one `GET` over HTTP/1.1, the chunked response read as it
//! arrives and cut into events (`id`, `event`, `data`), comments kept apart so tests can see
//! the heartbeat.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context as _, bail, ensure};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// How long [`SseClient::next`] waits for an event by default.
pub const EVENT_TIMEOUT: Duration = Duration::from_secs(10);

/// One event of the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    pub id: Option<String>,
    pub event: String,
    pub data: String,
}

impl SseEvent {
    /// The data parsed as JSON.
    pub fn json(&self) -> anyhow::Result<serde_json::Value> {
        serde_json::from_str(&self.data).with_context(|| format!("event data: {}", self.data))
    }
}

/// An open stream.
#[derive(Debug)]
pub struct SseClient {
    stream: TcpStream,
    /// Bytes read and not yet de-chunked.
    raw: Vec<u8>,
    /// De-chunked text not yet cut into events.
    text: String,
    /// The response ended (the last chunk, or the connection closed).
    ended: bool,
    /// Comment lines seen so far (`: ping`), in order.
    pub comments: Vec<String>,
    timeout: Duration,
}

/// A refused or accepted stream's status line and headers.
#[derive(Debug, Clone)]
pub struct SseResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    /// The body of a refusal (not a stream).
    pub body: String,
}

impl SseResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

impl SseClient {
    /// `GET path` (with its query) on `addr` with `headers`. A 200 gives the stream; any
    /// other status gives the response, read to its end, as the error's context-free value.
    pub async fn connect(
        addr: SocketAddr,
        path: &str,
        headers: &[(&str, &str)],
    ) -> anyhow::Result<Result<(Self, SseResponse), SseResponse>> {
        let stream = TcpStream::connect(addr).await.context("connecting")?;
        Self::connect_on(stream, addr, path, headers).await
    }

    /// As [`SseClient::connect`], on a connection already open (one that served other
    /// requests before, as a browser's or a proxy's kept-alive connection does).
    pub async fn connect_on(
        mut stream: TcpStream,
        addr: SocketAddr,
        path: &str,
        headers: &[(&str, &str)],
    ) -> anyhow::Result<Result<(Self, SseResponse), SseResponse>> {
        let mut head = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\nConnection: close\r\n"
        );
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        stream.write_all(head.as_bytes()).await?;
        let mut client = Self {
            stream,
            raw: Vec::new(),
            text: String::new(),
            ended: false,
            comments: Vec::new(),
            timeout: EVENT_TIMEOUT,
        };
        let deadline = Instant::now() + EVENT_TIMEOUT;
        let end_of_head = loop {
            if let Some(i) = client.raw.windows(4).position(|w| w == b"\r\n\r\n") {
                break i;
            }
            let more = client.read_more(deadline).await.with_context(|| {
                format!(
                    "waiting for the response head of GET {path}; got {:?}",
                    String::from_utf8_lossy(&client.raw)
                )
            })?;
            ensure!(more, "the response ended in its head");
        };
        let head = String::from_utf8_lossy(&client.raw[..end_of_head]).into_owned();
        client.raw.drain(..end_of_head + 4);
        let mut lines = head.split("\r\n");
        let status: u16 = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|s| s.parse().ok())
            .context("status line")?;
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
            .collect();
        let mut response = SseResponse {
            status,
            headers,
            body: String::new(),
        };
        if status != 200 {
            while client.read_more(deadline).await? {}
            client.dechunk_or_plain(&response);
            response.body = std::mem::take(&mut client.text);
            return Ok(Err(response));
        }
        ensure!(
            response
                .header("transfer-encoding")
                .is_some_and(|v| v.eq_ignore_ascii_case("chunked")),
            "expected a chunked stream: {:?}",
            response.headers
        );
        Ok(Ok((client, response)))
    }

    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// Reads into `raw`; false once the peer closed.
    async fn read_more(&mut self, deadline: Instant) -> anyhow::Result<bool> {
        self.raw.reserve(16 * 1024);
        let n = tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.raw))
            .await
            .context("timed out waiting for the stream")??;
        Ok(n > 0)
    }

    /// A refusal's body: chunked or not.
    fn dechunk_or_plain(&mut self, response: &SseResponse) {
        if response
            .header("transfer-encoding")
            .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
        {
            let _ = self.dechunk();
        } else {
            self.text
                .push_str(&String::from_utf8_lossy(&std::mem::take(&mut self.raw)));
        }
    }

    /// Moves every complete chunk from `raw` to `text`.
    fn dechunk(&mut self) -> anyhow::Result<()> {
        loop {
            let Some(line_end) = self.raw.windows(2).position(|w| w == b"\r\n") else {
                return Ok(());
            };
            let size_text = std::str::from_utf8(&self.raw[..line_end])?;
            let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
                .with_context(|| format!("chunk size {size_text:?}"))?;
            if self.raw.len() < line_end + 2 + size + 2 {
                return Ok(());
            }
            if size == 0 {
                self.ended = true;
                self.raw.clear();
                return Ok(());
            }
            let chunk = &self.raw[line_end + 2..line_end + 2 + size];
            self.text.push_str(std::str::from_utf8(chunk)?);
            self.raw.drain(..line_end + 2 + size + 2);
        }
    }

    /// The next event, skipping comments (kept in `comments`).
    pub async fn next(&mut self) -> anyhow::Result<SseEvent> {
        let deadline = Instant::now() + self.timeout;
        loop {
            // Chunks may have come with the response head, or with the last read.
            self.dechunk()?;
            if let Some(event) = self.take_event() {
                return Ok(event);
            }
            if self.ended {
                bail!("the stream ended");
            }
            if !self.read_more(deadline).await? {
                self.ended = true;
                bail!("the server closed the stream");
            }
        }
    }

    /// The next event named `name`, skipping others.
    pub async fn next_named(&mut self, name: &str) -> anyhow::Result<SseEvent> {
        loop {
            let event = self.next().await?;
            if event.event == name {
                return Ok(event);
            }
        }
    }

    /// Fails if an event arrives within `window`.
    pub async fn expect_quiet(&mut self, window: Duration) -> anyhow::Result<()> {
        let timeout = std::mem::replace(&mut self.timeout, window);
        let next = self.next().await;
        self.timeout = timeout;
        match next {
            Ok(event) => bail!("expected no event within {window:?}, got {event:?}"),
            Err(_) => Ok(()),
        }
    }

    fn take_event(&mut self) -> Option<SseEvent> {
        loop {
            let end = self.text.find("\n\n")?;
            let block: String = self.text.drain(..end + 2).collect();
            let mut event = SseEvent {
                id: None,
                event: "message".to_owned(),
                data: String::new(),
            };
            let mut fields = false;
            for line in block.lines().filter(|l| !l.is_empty()) {
                if let Some(comment) = line.strip_prefix(':') {
                    self.comments.push(comment.trim().to_owned());
                    continue;
                }
                let (field, value) = line.split_once(':').unwrap_or((line, ""));
                let value = value.strip_prefix(' ').unwrap_or(value);
                fields = true;
                match field {
                    "id" => event.id = Some(value.to_owned()),
                    "event" => event.event = value.to_owned(),
                    "data" => {
                        if !event.data.is_empty() {
                            event.data.push('\n');
                        }
                        event.data.push_str(value);
                    }
                    _ => {}
                }
            }
            if fields {
                return Some(event);
            }
        }
    }
}
