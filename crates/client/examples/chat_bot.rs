//! A small chat bot on `switchboard-client`: it joins a room, welcomes whoever joins, and answers
//! `!help`, `!echo <text>`, `!roll` and `!time`. Reconnects, resumes and its outbox come from the
//! client: stop the gateway and start it again, and the bot carries on where it was.
//!
//! Against a gateway in dev mode (`cargo run --release`, no key configured) it gets its token
//! from the dev page's `/dev/token`:
//!
//! ```sh
//! cargo run -p switchboard-client --features mint --example chat_bot
//! ```
//!
//! Env: `SWITCHBOARD_URL` (default `ws://127.0.0.1:8080/ws`), `BOT_ROOM` (default `general`,
//! created when missing), `BOT_USER` (default `bot`), and the token: `SWITCHBOARD_TOKEN`, or
//! `SWITCHBOARD_JWT_SECRET` to sign its own (a bot is a trusted service), or else `/dev/token`.

use std::io::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use switchboard_client::{Client, ClientOptions, Error, Event, Hs256Minter, TokenSource};
use switchboard_protocol::{ClientFrame, ErrorCode, Message, RoomId, RoomKind, ServerFrame};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let url = env_or("SWITCHBOARD_URL", "ws://127.0.0.1:8080/ws");
    let room = RoomId::parse(env_or("BOT_ROOM", "general")).context("BOT_ROOM")?;
    let user = env_or("BOT_USER", "bot");
    let token = token_source(&url, &user)?;

    let (client, mut events, ready) = Client::connect(ClientOptions::new(url, token)).await?;
    say(format_args!(
        "connected as {} ({})",
        ready.user.name, ready.conn_id
    ));
    join_or_create(&client, &room).await?;
    say(format_args!("in {room}; try !help there"));

    loop {
        tokio::select! {
            event = events.next() => match event {
                Some(Event::Message(message)) if message.room_id == room => {
                    if let Some(answer) = answer(&message) {
                        // A send made while reconnecting waits in the outbox and goes out after.
                        if let Err(e) = client.send(&room, answer).await {
                            say(format_args!("could not answer: {e}"));
                        }
                    }
                }
                Some(Event::Frame(ServerFrame::UserJoinedRoom { room_id, user })) if room_id == room => {
                    let _ = client.send(&room, format!("Welcome, {}! Say !help.", user.name)).await;
                }
                Some(Event::State(state)) => say(format_args!("{state:?}")),
                Some(Event::Closed { code, reason }) => bail!("closed for good: {code} {reason}"),
                Some(_) => {}
                None => return Ok(()),
            },
            _ = tokio::signal::ctrl_c() => {
                client.close().await;
                return Ok(());
            }
        }
    }
}

/// The bot's answer to a message, if it is a command.
fn answer(message: &Message) -> Option<String> {
    let text = message.content.trim();
    let (command, rest) = text.split_once(' ').unwrap_or((text, ""));
    Some(match command {
        "!help" => "I know !echo <text>, !roll and !time.".to_owned(),
        "!echo" if !rest.is_empty() => rest.to_owned(),
        "!roll" => format!("{} rolled {}", message.sender.name, 1 + rand_below(6)),
        "!time" => {
            let secs = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            format!("{secs} seconds since 1970")
        }
        _ => return None,
    })
}

fn rand_below(n: u64) -> u64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::from(d.subsec_nanos()));
    nanos % n
}

async fn join_or_create(client: &Client, room: &RoomId) -> anyhow::Result<()> {
    match client.join(room).await {
        Ok(_) => Ok(()),
        Err(Error::Refused {
            code: ErrorCode::RoomNotFound,
            ..
        }) => {
            let create = ClientFrame::RoomCreate {
                id: 0,
                room_id: room.clone(),
                name: None,
                kind: RoomKind::Public,
                password: None,
            };
            client.join_with(create).await?;
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

/// `SWITCHBOARD_TOKEN`, else tokens signed with `SWITCHBOARD_JWT_SECRET`, else the dev-mode
/// gateway's `/dev/token`. The last two are asked again for every connect and refresh.
fn token_source(url: &str, user: &str) -> anyhow::Result<TokenSource> {
    if let Ok(token) = std::env::var("SWITCHBOARD_TOKEN") {
        return Ok(TokenSource::Fixed(token));
    }
    let user = user.to_owned();
    if let Ok(secret) = std::env::var("SWITCHBOARD_JWT_SECRET") {
        let minter = std::sync::Arc::new(Hs256Minter::new(&secret)?);
        return Ok(TokenSource::provider(move || {
            let token = minter.token(&user, "Bot", Duration::from_secs(3600));
            async move { token.map_err(Into::into) }
        }));
    }
    let authority = url
        .split_once("://")
        .and_then(|(_, rest)| rest.split('/').next())
        .context("SWITCHBOARD_URL has no host")?
        .to_owned();
    Ok(TokenSource::provider(move || {
        let (authority, user) = (authority.clone(), user.clone());
        async move { dev_token(&authority, &user).await.map_err(Into::into) }
    }))
}

/// `GET /dev/token?user=..` from a gateway in dev mode: `{"token": "..."}`.
async fn dev_token(authority: &str, user: &str) -> anyhow::Result<String> {
    let mut stream = tokio::net::TcpStream::connect(authority).await?;
    let request = format!(
        "GET /dev/token?user={user}&name=Bot HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
    let response = String::from_utf8(response)?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .context("no HTTP response")?;
    if !head.starts_with("HTTP/1.1 200") {
        bail!(
            "GET /dev/token: {} (is the gateway in dev mode?)",
            head.lines().next().unwrap_or("")
        );
    }
    let body: serde_json::Value = serde_json::from_str(body.trim())?;
    body["token"]
        .as_str()
        .map(str::to_owned)
        .context("no token in /dev/token's answer")
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

fn say(line: std::fmt::Arguments<'_>) {
    let _ = writeln!(std::io::stdout(), "{line}");
}
