//! A Server-Sent Events client for `/sse` (docs/protocol.md), small enough to hold thousands of
//! streams on one thread: the response head, HTTP/1.1 chunked framing taken off in place, and
//! events split at their blank line. Like [`crate::raw`], one `read` may bring many events and
//! each is looked at where it lies.

use anyhow::{Context, bail, ensure};
use memchr::memmem;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Longest response head accepted.
const MAX_HEAD: usize = 16 * 1024;

/// One event: its `event:` name and its `data:` (the first data line; the gateway writes one).
#[derive(Debug)]
pub struct Event<'a> {
    pub name: &'a [u8],
    pub data: &'a [u8],
}

/// An open `/sse` response.
#[derive(Debug)]
pub struct SseStream {
    stream: TcpStream,
    /// Bytes as read: chunk framing and event text.
    raw: Vec<u8>,
    raw_start: usize,
    raw_end: usize,
    /// Event text with the chunk framing taken off; `text[..text_start]` is consumed.
    text: Vec<u8>,
    text_start: usize,
    /// Body bytes left in the current chunk; `None` between chunks (a size line comes next).
    chunk_left: Option<usize>,
    chunked: bool,
    ended: bool,
}

impl SseStream {
    /// Opens `GET {path}` on `stream` (a path such as `/sse?rooms=bench-0`) with a bearer
    /// token and checks that a `text/event-stream` answered.
    pub async fn open(
        mut stream: TcpStream,
        host: &str,
        path: &str,
        token: &str,
        read_buffer_bytes: usize,
    ) -> anyhow::Result<Self> {
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nAccept: text/event-stream\r\nAuthorization: Bearer {token}\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await?;
        let mut sse = Self {
            stream,
            raw: vec![0; read_buffer_bytes.max(1024)],
            raw_start: 0,
            raw_end: 0,
            text: Vec::new(),
            text_start: 0,
            chunk_left: None,
            chunked: false,
            ended: false,
        };
        let head_end = loop {
            if let Some(at) = memmem::find(&sse.raw[..sse.raw_end], b"\r\n\r\n") {
                break at + 4;
            }
            ensure!(sse.raw_end < MAX_HEAD, "response head too large");
            if sse.raw_end == sse.raw.len() {
                sse.raw.resize(sse.raw.len() * 2, 0);
            }
            let end = sse.raw_end;
            match sse.stream.read(&mut sse.raw[end..]).await? {
                0 => bail!("connection ended before the response head"),
                n => sse.raw_end += n,
            }
        };
        let head = String::from_utf8_lossy(&sse.raw[..head_end]).to_ascii_lowercase();
        let status = head.split(' ').nth(1).context("unreadable response")?;
        if status != "200" {
            // A refusal is a small JSON body: read it (bounded) to name the refusal.
            let wanted = content_length(&head).unwrap_or(0).min(4096);
            while sse.raw_end - head_end < wanted {
                if sse.raw_end == sse.raw.len() {
                    sse.raw.resize(sse.raw.len() * 2, 0);
                }
                let end = sse.raw_end;
                match sse.stream.read(&mut sse.raw[end..]).await? {
                    0 => break,
                    n => sse.raw_end += n,
                }
            }
            let body = String::from_utf8_lossy(&sse.raw[head_end..sse.raw_end]);
            bail!("/sse refused with HTTP {status}: {}", body.trim());
        }
        ensure!(
            head.contains("content-type: text/event-stream"),
            "/sse answered without content-type text/event-stream"
        );
        sse.chunked = head.contains("transfer-encoding: chunked");
        sse.raw_start = head_end;
        sse.dechunk()?;
        Ok(sse)
    }

    /// Reads once: `Ok(0)` when the response has ended.
    pub async fn fill(&mut self) -> anyhow::Result<usize> {
        if self.ended {
            return Ok(0);
        }
        if self.raw_start == self.raw_end {
            self.raw_start = 0;
            self.raw_end = 0;
        } else if self.raw_start > 0 {
            self.raw.copy_within(self.raw_start..self.raw_end, 0);
            self.raw_end -= self.raw_start;
            self.raw_start = 0;
        }
        if self.raw_end == self.raw.len() {
            self.raw.resize(self.raw.len() * 2, 0);
        }
        let end = self.raw_end;
        let n = self.stream.read(&mut self.raw[end..]).await?;
        if n == 0 {
            self.ended = true;
            return Ok(0);
        }
        self.raw_end += n;
        self.dechunk()?;
        Ok(n)
    }

    /// Moves the body bytes read so far from `raw` to `text`, without the chunk framing.
    fn dechunk(&mut self) -> anyhow::Result<()> {
        if self.text_start > 0 && self.text_start == self.text.len() {
            self.text.clear();
            self.text_start = 0;
        }
        if !self.chunked {
            self.text
                .extend_from_slice(&self.raw[self.raw_start..self.raw_end]);
            self.raw_start = self.raw_end;
            return Ok(());
        }
        while self.raw_start < self.raw_end {
            let pending = &self.raw[self.raw_start..self.raw_end];
            match self.chunk_left {
                None => {
                    // A size line; after a chunk's data its CRLF comes first.
                    let Some(line_end) = memmem::find(pending, b"\r\n") else {
                        ensure!(pending.len() < 64, "unreadable chunk size line");
                        return Ok(());
                    };
                    let line = &pending[..line_end];
                    self.raw_start += line_end + 2;
                    if line.is_empty() {
                        continue;
                    }
                    let hex = line.split(|&b| b == b';').next().unwrap_or_default();
                    let size = usize::from_str_radix(std::str::from_utf8(hex)?.trim(), 16)
                        .context("unreadable chunk size")?;
                    if size == 0 {
                        self.ended = true;
                        self.raw_start = self.raw_end;
                        return Ok(());
                    }
                    self.chunk_left = Some(size);
                }
                Some(left) => {
                    let take = left.min(pending.len());
                    self.text.extend_from_slice(&pending[..take]);
                    self.raw_start += take;
                    self.chunk_left = (left > take).then_some(left - take);
                }
            }
        }
        Ok(())
    }

    /// The next complete event of what has been read, or `None` when more is needed. Comment
    /// blocks (the heartbeat) come back with an empty name.
    pub fn next_event(&mut self) -> Option<Event<'_>> {
        let pending = &self.text[self.text_start..];
        let end = memmem::find(pending, b"\n\n")?;
        let block = &self.text[self.text_start..self.text_start + end];
        self.text_start += end + 2;
        let mut event = Event {
            name: b"",
            data: b"",
        };
        for line in block.split(|&b| b == b'\n') {
            if let Some(name) = line.strip_prefix(b"event: ") {
                event.name = name;
            } else if let Some(data) = line.strip_prefix(b"data: ")
                && event.data.is_empty()
            {
                event.data = data;
            }
        }
        Some(event)
    }

    /// Reads until an event named `name`, failing on an `error` or `close` event first.
    pub async fn expect(&mut self, name: &[u8]) -> anyhow::Result<()> {
        loop {
            while let Some(event) = self.next_event() {
                if event.name == name {
                    return Ok(());
                }
                if event.name == b"error" || event.name == b"close" {
                    bail!("/sse: {}", String::from_utf8_lossy(event.data));
                }
            }
            if self.fill().await? == 0 {
                bail!("/sse ended before {}", String::from_utf8_lossy(name));
            }
        }
    }
}

/// The `content-length` of a lower-cased response head.
pub fn content_length(head: &str) -> Option<usize> {
    head.lines()
        .find_map(|line| line.strip_prefix("content-length:"))
        .and_then(|value| value.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stream over a socket pair whose server side writes `body` (already chunked).
    async fn stream_of(parts: &[&[u8]]) -> anyhow::Result<SseStream> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let parts: Vec<Vec<u8>> = parts.iter().map(|p| p.to_vec()).collect();
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await?;
            let mut request = [0u8; 1024];
            let _ = socket.read(&mut request).await?;
            for part in parts {
                socket.write_all(&part).await?;
                socket.flush().await?;
                tokio::task::yield_now().await;
            }
            anyhow::Ok(())
        });
        let stream = TcpStream::connect(addr).await?;
        SseStream::open(stream, "test", "/sse", "t", 1024).await
    }

    #[tokio::test]
    async fn events_come_out_whole_however_the_chunks_fall() -> anyhow::Result<()> {
        let head: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n";
        let one = b"event: joined\ndata: {\"a\":1}\n\n";
        let two = b"id: r:1\nevent: message:new\ndata: {\"b\":2}\n\n: ping\n\n";
        let first = format!("{:x}\r\n", one.len());
        let second = format!("\r\n{:x}\r\n", two.len());
        // The second chunk's data split in the middle of an event.
        let mut sse = stream_of(&[
            head,
            first.as_bytes(),
            one,
            second.as_bytes(),
            &two[..10],
            &two[10..],
            b"\r\n0\r\n\r\n",
        ])
        .await?;
        let mut seen = Vec::new();
        loop {
            while let Some(event) = sse.next_event() {
                seen.push((
                    String::from_utf8_lossy(event.name).into_owned(),
                    String::from_utf8_lossy(event.data).into_owned(),
                ));
            }
            if sse.fill().await? == 0 {
                break;
            }
        }
        assert_eq!(
            seen,
            [
                ("joined".to_owned(), r#"{"a":1}"#.to_owned()),
                ("message:new".to_owned(), r#"{"b":2}"#.to_owned()),
                (String::new(), String::new()),
            ]
        );
        Ok(())
    }

    #[tokio::test]
    async fn a_refusal_names_its_status_and_body() {
        let refusal: &[u8] =
            b"HTTP/1.1 401 Unauthorized\r\ncontent-length: 20\r\n\r\n{\"code\":\"NO_TOKEN\"}\n";
        let error = stream_of(&[refusal]).await.expect_err("refused");
        let text = format!("{error:#}");
        assert!(
            text.contains("HTTP 401") && text.contains("NO_TOKEN"),
            "{text}"
        );
    }
}
