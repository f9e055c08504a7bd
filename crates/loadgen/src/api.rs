//! A keep-alive HTTP/1.1 client for the gateway's server API (`/api/v1`, docs/api.md): one
//! request at a time per connection, as a backend's connection pool sends them. Small on
//! purpose: a request is one write, a response head plus a `content-length` body.

use anyhow::{Context, bail, ensure};
use memchr::memmem;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::sse::content_length;

/// Largest response accepted (head and body).
const MAX_RESPONSE: usize = 1024 * 1024;

/// One keep-alive connection to the API.
#[derive(Debug)]
pub struct ApiConn {
    stream: TcpStream,
    host: String,
    authorization: String,
    buf: Vec<u8>,
    request: Vec<u8>,
}

/// An answer: status and body.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: Vec<u8>,
}

impl ApiConn {
    pub fn new(stream: TcpStream, host: &str, key: &str) -> Self {
        Self {
            stream,
            host: host.to_owned(),
            authorization: format!("Bearer {key}"),
            buf: Vec::with_capacity(4096),
            request: Vec::with_capacity(1024),
        }
    }

    /// Sends one request with a JSON body and reads its answer.
    pub async fn call(&mut self, method: &str, path: &str, body: &[u8]) -> anyhow::Result<Answer> {
        self.request.clear();
        self.request.extend_from_slice(
            format!(
                "{method} {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                self.host,
                self.authorization,
                body.len()
            )
            .as_bytes(),
        );
        self.request.extend_from_slice(body);
        self.stream.write_all(&self.request).await?;
        self.read_answer().await
    }

    async fn read_answer(&mut self) -> anyhow::Result<Answer> {
        self.buf.clear();
        let mut chunk = [0u8; 4096];
        let head_end = loop {
            if let Some(at) = memmem::find(&self.buf, b"\r\n\r\n") {
                break at + 4;
            }
            ensure!(self.buf.len() < MAX_RESPONSE, "response head too large");
            match self.stream.read(&mut chunk).await? {
                0 => bail!("the API closed the connection"),
                n => self.buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&self.buf[..head_end]).to_ascii_lowercase();
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .context("unreadable response status")?;
        let length = content_length(&head).context("a response without content-length")?;
        ensure!(length <= MAX_RESPONSE, "response body too large");
        while self.buf.len() < head_end + length {
            match self.stream.read(&mut chunk).await? {
                0 => bail!("the API closed the connection mid-body"),
                n => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
        ensure!(
            self.buf.len() == head_end + length,
            "more bytes than one response (no request was pipelined)"
        );
        Ok(Answer {
            status,
            body: self.buf[head_end..].to_vec(),
        })
    }
}
