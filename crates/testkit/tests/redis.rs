//! The Redis fixture really runs redis-server, and restarts it on the same port.

use std::time::Duration;

use switchboard_testkit::Redis;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

async fn raw_ping(redis: &Redis) -> String {
    let mut stream = TcpStream::connect(redis.addr()).await.expect("connect");
    stream.write_all(b"PING\r\n").await.expect("write");
    let mut reply = [0u8; 7];
    stream.read_exact(&mut reply).await.expect("read");
    String::from_utf8_lossy(&reply).into_owned()
}

#[tokio::test]
async fn redis_answers_ping_and_comes_back_empty_on_the_same_port_after_a_restart() {
    let mut redis = Redis::start().await.unwrap();
    assert_eq!(redis.url(), format!("redis://127.0.0.1:{}", redis.port()));
    assert_eq!(raw_ping(&redis).await, "+PONG\r\n");
    assert_eq!(redis.cli(&["SET", "k", "v"]).await.unwrap(), "OK");
    assert_eq!(redis.cli(&["GET", "k"]).await.unwrap(), "v");

    let port = redis.port();
    redis.stop().await.unwrap();
    assert!(!redis.is_running());
    assert!(TcpStream::connect(redis.addr()).await.is_err());
    redis.restart().await.unwrap();
    assert_eq!(redis.port(), port);
    assert_eq!(raw_ping(&redis).await, "+PONG\r\n");
    assert_eq!(
        redis.cli(&["GET", "k"]).await.unwrap(),
        "",
        "no persistence"
    );
    assert!(
        redis.logs().contains("Ready to accept connections"),
        "{}",
        redis.logs()
    );
}

#[tokio::test]
async fn a_paused_redis_does_not_answer_until_resumed() {
    let redis = Redis::start().await.unwrap();
    redis.pause().unwrap();
    let mut stream = TcpStream::connect(redis.addr()).await.unwrap();
    stream.write_all(b"PING\r\n").await.unwrap();
    let mut reply = [0u8; 7];
    let read =
        tokio::time::timeout(Duration::from_millis(300), stream.read_exact(&mut reply)).await;
    assert!(read.is_err(), "a stopped process cannot answer");
    redis.resume().unwrap();
    tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut reply))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&reply, b"+PONG\r\n");
}
