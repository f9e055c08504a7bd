//! The nginx fixture really proxies HTTP and WebSocket traffic to upstreams started here; the
//! WebSocket half also exercises `WsClient` against a tiny protocol server.

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use switchboard_protocol::{ClientFrame, Codec, ServerFrame};
use switchboard_testkit::{ConnectOptions, Nginx, WsClient, http_get};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// An HTTP server answering every request with `echo <name> <request line>`, or with the status
/// named by a `/status/NNN` path.
async fn http_echo(name: &'static str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let text = String::from_utf8_lossy(&head).into_owned();
                let request_line = text.lines().next().unwrap_or_default().to_owned();
                let path = request_line.split(' ').nth(1).unwrap_or("/");
                let status = path.strip_prefix("/status/").unwrap_or("200");
                let body = format!("echo {name} {request_line}");
                let response = format!(
                    "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(response.as_bytes()).await;
            });
        }
    });
    addr
}

/// A WebSocket server speaking a sliver of the protocol: it picks the first offered known
/// subprotocol, answers `ping` with `pong`, sends an unsolicited `pong` before each reply (so
/// `request` must buffer it), and closes with 4001 on `{"type":"auth",...}`.
async fn ws_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut codec = Codec::Json;
                #[allow(clippy::result_large_err)] // the handshake callback type is fixed
                let pick = |req: &Request, mut resp: Response| {
                    let offers = req
                        .headers()
                        .get_all("sec-websocket-protocol")
                        .iter()
                        .filter_map(|v| v.to_str().ok())
                        .collect::<Vec<_>>();
                    if let Ok(Some(c)) = Codec::negotiate(offers) {
                        codec = c;
                        resp.headers_mut().insert(
                            "sec-websocket-protocol",
                            HeaderValue::from_static(c.subprotocol()),
                        );
                    }
                    Ok(resp)
                };
                let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(stream, pick).await else {
                    return;
                };
                let encode = |frame: &ServerFrame| {
                    let bytes = codec.encode(frame).expect("encode");
                    if codec.is_binary() {
                        Message::binary(bytes)
                    } else {
                        Message::text(String::from_utf8(bytes).expect("JSON is UTF-8"))
                    }
                };
                while let Some(Ok(message)) = ws.next().await {
                    let bytes = match message {
                        Message::Text(t) => t.as_bytes().to_vec(),
                        Message::Binary(b) => b.to_vec(),
                        _ => continue,
                    };
                    match codec.decode_client(&bytes) {
                        Ok(ClientFrame::Ping { id }) => {
                            let _ = ws.send(encode(&ServerFrame::Pong { id: None })).await;
                            let _ = ws.send(encode(&ServerFrame::Pong { id })).await;
                        }
                        Ok(ClientFrame::Auth { .. }) => {
                            let close = CloseFrame {
                                code: CloseCode::from(4001),
                                reason: "authentication failed".into(),
                            };
                            let _ = ws.send(Message::Close(Some(close))).await;
                        }
                        _ => {}
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn nginx_proxies_http_to_the_upstream() {
    let upstream = http_echo("a").await;
    let nginx = Nginx::start_proxy(&[upstream]).await.unwrap();
    let response = http_get(nginx.addr(), "/hello?x=1", &[]).await.unwrap();
    assert_eq!(response.status, 200, "{}", nginx.logs());
    assert_eq!(response.text(), "echo a GET /hello?x=1 HTTP/1.1");
    assert_eq!(
        http_get(nginx.addr(), "/status/503", &[])
            .await
            .unwrap()
            .status,
        503
    );
}

#[tokio::test]
async fn nginx_fails_over_when_an_upstream_is_down() {
    let live = http_echo("live").await;
    let dead = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let nginx = Nginx::start_proxy(&[dead, live]).await.unwrap();
    for _ in 0..4 {
        let response = http_get(nginx.addr(), "/", &[]).await.unwrap();
        assert_eq!(response.text(), "echo live GET / HTTP/1.1");
    }
}

#[tokio::test]
async fn websockets_pass_through_nginx_in_both_codecs() {
    let upstream = ws_server().await;
    let nginx = Nginx::start_proxy(&[upstream]).await.unwrap();
    for codec in [None, Some(Codec::Json), Some(Codec::MsgPack)] {
        let opts = ConnectOptions {
            codec,
            ..ConnectOptions::default()
        };
        let mut client = WsClient::connect(&nginx.ws_url(), opts).await.unwrap();
        assert_eq!(client.codec(), codec.unwrap_or(Codec::Json));
        assert_eq!(client.subprotocol(), codec.map(Codec::subprotocol));
        let reply = client
            .request(&ClientFrame::Ping { id: Some(7) })
            .await
            .unwrap();
        assert_eq!(reply, ServerFrame::Pong { id: Some(7) });
        // The unsolicited pong that came first was kept for recv().
        assert_eq!(client.recv().await.unwrap(), ServerFrame::Pong { id: None });
        client
            .expect_no_frame(Duration::from_millis(100))
            .await
            .unwrap();
        client
            .send(&ClientFrame::Auth { token: "x".into() })
            .await
            .unwrap();
        assert_eq!(
            client.expect_close().await.unwrap(),
            (4001, "authentication failed".to_owned())
        );
        assert!(client.recv().await.is_err());
    }
}

#[tokio::test]
async fn a_refused_upgrade_reports_its_http_status() {
    let upstream = http_echo("plain").await;
    let url = format!("ws://{upstream}/status/401");
    let err = WsClient::connect(&url, ConnectOptions::bearer("t"))
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(401), "{err}");
    let url = format!(
        "ws://{}/ws",
        switchboard_testkit::free_port()
            .map(|p| SocketAddr::from(([127, 0, 0, 1], p)))
            .unwrap()
    );
    let err = WsClient::connect(&url, ConnectOptions::default())
        .await
        .unwrap_err();
    assert_eq!(err.status(), None, "{err}");
}
