//! A cluster: several gateway processes sharing PostgreSQL and Redis, optionally behind nginx.
#![allow(clippy::unwrap_used)] // in scenario helpers too, a panic is the failure report

mod common;

use std::time::Duration;

use common::*;
use switchboard_protocol::{AckResult, ClientFrame, MessageKind, ServerFrame};
use switchboard_testkit::{ConnectOptions, Gateway, Nginx, Postgres, Redis, WsClient};
use tokio::time::Instant;

const SIGKILL_TTL_MS: &str = "3000";

struct Cluster {
    _pg: Postgres,
    redis: Redis,
    nodes: Vec<Gateway>,
}

async fn cluster(n: usize) -> Cluster {
    let pg = Postgres::start().await.unwrap();
    let redis = Redis::start().await.unwrap();
    let mut nodes = Vec::new();
    for name in ["node-a", "node-b", "node-c"].into_iter().take(n) {
        nodes.push(node(&pg, &redis, name).await);
    }
    Cluster {
        _pg: pg,
        redis,
        nodes,
    }
}

async fn node(pg: &Postgres, redis: &Redis, name: &str) -> Gateway {
    builder()
        .name(name)
        .env("SWITCHBOARD_NODE_ID", name)
        .env("DATABASE_URL", pg.url())
        .env("REDIS_URL", redis.url())
        .env("SWITCHBOARD_PRESENCE_TTL_MS", SIGKILL_TTL_MS)
        .env("SWITCHBOARD_PRESENCE_REFRESH_MS", "500")
        .env(UNLIMITED_RATE.0, UNLIMITED_RATE.1)
        .start()
        .await
        .unwrap()
}

/// The node a session landed on, from its `connId` (`<node>-<n>`).
fn node_of(ready: &ServerFrame) -> String {
    let ServerFrame::SessionReady { conn_id, .. } = ready else {
        panic!("{ready:?}")
    };
    conn_id.rsplit_once('-').unwrap().0.to_owned()
}

#[tokio::test]
async fn a_message_sent_on_node_a_arrives_on_nodes_b_and_c_in_seq_order() {
    let c = cluster(3).await;
    let mut alice = connect(&c.nodes[0], "alice").await;
    let mut bob = connect(&c.nodes[1], "bob").await;
    let mut carol = connect(&c.nodes[2], "carol").await;
    alice.create_room("general").await.unwrap();
    bob.join_room("general").await.unwrap();
    carol.join_room("general").await.unwrap();
    let joined = alice.recv_until(|f| matches!(f, ServerFrame::UserJoinedRoom { user, .. } if user.id.as_str() == "carol")).await;
    joined.expect("carol's join crosses nodes");
    let mut sent = Vec::new();
    for i in 0..30 {
        sent.push(send(&mut alice, "general", &format!("m{i}")).await);
    }
    for client in [&mut bob, &mut carol] {
        let mut got = Vec::new();
        for _ in 0..30 {
            got.push(next_message(client).await.seq);
        }
        assert_eq!(got, sent);
    }
    // bob answers from node B; alice on A hears it.
    let seq = send(&mut bob, "general", "from b").await;
    assert_eq!(next_message(&mut alice).await.seq, seq);
}

#[tokio::test]
async fn a_direct_message_reaches_every_device_of_the_recipient_across_nodes() {
    let c = cluster(3).await;
    let mut alice = connect(&c.nodes[0], "alice").await;
    let mut bob_phone = connect(&c.nodes[1], "bob").await;
    let mut bob_laptop = connect(&c.nodes[2], "bob").await;
    let mut alice_tablet = connect(&c.nodes[2], "alice").await;
    let dm = ClientFrame::DmSend {
        id: 1,
        recipient_id: user("bob"),
        content: "across the cluster".into(),
        kind: MessageKind::Text,
        client_msg_id: "dm-x".into(),
    };
    alice.request_ok(&dm).await.unwrap();
    for client in [&mut bob_phone, &mut bob_laptop, &mut alice_tablet] {
        let m = next_message(client).await;
        assert_eq!(
            (m.room_id.as_str(), m.content.as_str()),
            ("dm:alice:bob", "across the cluster")
        );
    }
    assert_quiet(&mut alice).await;
}

#[tokio::test]
async fn typing_room_events_and_presence_cross_nodes() {
    let c = cluster(2).await;
    let mut alice = connect(&c.nodes[0], "alice").await;
    let mut bob = connect(&c.nodes[1], "bob").await;
    alice.create_room("general").await.unwrap();
    bob.join_room("general").await.unwrap();
    let AckResult::Room { online, .. } = bob.join_room("general").await.unwrap() else {
        panic!()
    };
    assert!(
        online.iter().any(|m| m.user.id.as_str() == "alice"),
        "online members are cluster-wide: {online:?}"
    );
    bob.send(&ClientFrame::TypingStart {
        room_id: room("general"),
    })
    .await
    .unwrap();
    let typing = alice
        .recv_until(|f| matches!(f, ServerFrame::TypingStart { .. }))
        .await
        .unwrap();
    assert!(
        matches!(typing, ServerFrame::TypingStart { ref user, .. } if user.id.as_str() == "bob")
    );
    let data = serde_json::json!({"from": "e2", "to": "e4"});
    bob.request_ok(&ClientFrame::RoomEmit {
        id: 90,
        room_id: room("general"),
        event: "game:move".into(),
        data: data.clone(),
    })
    .await
    .unwrap();
    let event = alice
        .recv_until(|f| matches!(f, ServerFrame::RoomEvent { .. }))
        .await
        .unwrap();
    assert_eq!(
        event,
        ServerFrame::RoomEvent {
            room_id: room("general"),
            event: "game:move".into(),
            data,
            from: switchboard_protocol::UserRef {
                id: user("bob"),
                name: display_name("bob"),
            },
        }
    );
    drop(bob);
    let offline = alice
        .recv_until(|f| matches!(f, ServerFrame::UserOffline { .. }))
        .await
        .unwrap();
    assert!(
        matches!(offline, ServerFrame::UserOffline { ref user_id, .. } if user_id.as_str() == "bob")
    );
    let _bob = connect(&c.nodes[1], "bob").await;
    let online = alice
        .recv_until(|f| matches!(f, ServerFrame::UserOnline { .. }))
        .await
        .unwrap();
    assert!(matches!(online, ServerFrame::UserOnline { ref user } if user.id.as_str() == "bob"));
}

#[tokio::test]
async fn a_node_that_only_serves_room_x_receives_no_traffic_for_room_y() {
    let c = cluster(3).await;
    let mut alice = connect(&c.nodes[0], "alice").await;
    let mut bob = connect(&c.nodes[1], "bob").await;
    let mut carol = connect(&c.nodes[2], "carol").await;
    alice.create_room("room-y").await.unwrap();
    bob.join_room("room-y").await.unwrap();
    alice.create_room("room-x").await.unwrap();
    carol.join_room("room-x").await.unwrap();
    // Redis delivers to node C in publish order: once this message is in, so is every event
    // the connects and joins published before it (presence, memberships).
    send(&mut alice, "room-x", "x0").await;
    assert_eq!(next_message(&mut carol).await.content, "x0");
    let received_before = c.nodes[2]
        .metric("switchboard_broker_received_total")
        .await
        .unwrap()
        .unwrap_or(0.0);
    for i in 0..50 {
        send(&mut alice, "room-y", &format!("y{i}")).await;
    }
    for _ in 0..50 {
        next_message(&mut bob).await;
    }
    send(&mut alice, "room-x", "x").await;
    assert_eq!(next_message(&mut carol).await.content, "x");
    let received = c.nodes[2]
        .metric("switchboard_broker_received_total")
        .await
        .unwrap()
        .unwrap_or(0.0);
    assert_eq!(
        received - received_before,
        1.0,
        "node C received only room X's message"
    );
}

#[tokio::test]
async fn a_client_routed_through_nginx_reaches_users_on_every_node() {
    let c = cluster(3).await;
    let proxy = Nginx::start_proxy(&c.nodes.iter().map(Gateway::addr).collect::<Vec<_>>())
        .await
        .unwrap();
    let (mut via_proxy, ready) =
        WsClient::connect_session(&proxy.ws_url(), ConnectOptions::bearer(token("zoe")))
            .await
            .unwrap();
    assert!(node_of(&ready).starts_with("node-"));
    via_proxy.create_room("lobby").await.unwrap();
    let mut direct = Vec::new();
    for (i, gw) in c.nodes.iter().enumerate() {
        let mut client = connect(gw, &format!("user{i}")).await;
        client.join_room("lobby").await.unwrap();
        direct.push(client);
    }
    let seq = send(&mut via_proxy, "lobby", "hello everyone").await;
    for client in &mut direct {
        assert_eq!(next_message(client).await.seq, seq);
    }
}

/// A client that keeps its rooms' positions and, when its connection drops, reconnects through
/// `url` and resumes: what every real client does.
struct Resuming {
    user: String,
    client: WsClient,
    seqs: Vec<u64>,
    reconnects: usize,
}

impl Resuming {
    async fn connect(url: &str, user: &str) -> (Self, ServerFrame) {
        let (client, ready) = WsClient::connect_session(url, ConnectOptions::bearer(token(user)))
            .await
            .unwrap();
        (
            Self {
                user: user.to_owned(),
                client,
                seqs: Vec::new(),
                reconnects: 0,
            },
            ready,
        )
    }

    /// Reads messages of `room` until it holds `last`, reconnecting and resuming as needed.
    async fn read_until(&mut self, url: &str, room_id: &str, last: u64) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.seqs.last().copied().unwrap_or(0) < last {
            assert!(
                Instant::now() < deadline,
                "{} stuck at {:?}",
                self.user,
                self.seqs.last()
            );
            match self.client.recv_timeout(Duration::from_secs(5)).await {
                Ok(ServerFrame::MessageNew { message }) => self.take(message.seq),
                Ok(_) => {}
                Err(_) if self.client.closed().is_some() => self.resume(url, room_id).await,
                Err(_) => {}
            }
        }
    }

    fn take(&mut self, seq: u64) {
        let last = self.seqs.last().copied().unwrap_or(0);
        assert_eq!(
            seq,
            last + 1,
            "{}: seq {seq} after {last}: a gap or a duplicate",
            self.user
        );
        self.seqs.push(seq);
    }

    async fn resume(&mut self, url: &str, room_id: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let client = loop {
            match WsClient::connect_session(url, ConnectOptions::bearer(token(&self.user))).await {
                Ok((client, _)) => break client,
                Err(e) => {
                    assert!(
                        Instant::now() < deadline,
                        "{} cannot reconnect: {e:#}",
                        self.user
                    );
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        };
        self.client = client;
        self.reconnects += 1;
        let since = self.seqs.last().copied().unwrap_or(0);
        let resume = ClientFrame::RoomJoin {
            id: 1,
            room_id: room(room_id),
            password: None,
            since_seq: Some(since),
        };
        let AckResult::Room {
            messages,
            recovered,
            ..
        } = self.client.request_ok(&resume).await.unwrap()
        else {
            panic!()
        };
        assert!(recovered, "{} could not recover from {since}", self.user);
        for m in messages {
            self.take(m.seq);
        }
    }
}

#[tokio::test]
async fn killing_a_node_under_traffic_loses_no_acknowledged_message() {
    let mut c = cluster(3).await;
    let proxy = Nginx::start_proxy(&c.nodes.iter().map(Gateway::addr).collect::<Vec<_>>())
        .await
        .unwrap();
    let url = proxy.ws_url();
    let mut receivers = Vec::new();
    let mut victim = String::new();
    for i in 0..3 {
        let (mut r, ready) = Resuming::connect(&url, &format!("reader{i}")).await;
        victim = node_of(&ready);
        if i == 0 {
            r.client.create_room("stream").await.unwrap();
        } else {
            r.client.join_room("stream").await.unwrap();
        }
        receivers.push(r);
    }
    let victim_index = ["node-a", "node-b", "node-c"]
        .iter()
        .position(|n| *n == victim)
        .unwrap();
    let survivor = (victim_index + 1) % 3;
    let mut publisher = connect(&c.nodes[survivor], "publisher").await;
    publisher.join_room("stream").await.unwrap();
    let mut observer = connect(&c.nodes[(victim_index + 2) % 3], "observer").await;
    observer.join_room("stream").await.unwrap();
    // A user on the doomed node who, unlike the readers, does not come back at once.
    let mut ghost = connect(&c.nodes[victim_index], "ghost").await;
    ghost.join_room("stream").await.unwrap();

    let mut last = 0;
    for i in 0..100 {
        last = send(&mut publisher, "stream", &format!("before {i}")).await;
    }
    c.nodes[victim_index].kill_hard().await.unwrap();
    let killed_at = Instant::now();
    for i in 0..100 {
        last = send(&mut publisher, "stream", &format!("after {i}")).await;
    }
    for r in &mut receivers {
        r.read_until(&url, "stream", last).await;
        assert!(r.reconnects >= 1, "{} was on the killed node", r.user);
        assert_eq!(r.seqs, (1..=last).collect::<Vec<_>>());
    }
    // The ghost's node died without a word: within the lease TTL the others see it offline.
    drop(ghost);
    observer.set_timeout(Duration::from_secs(20));
    let offline = observer
        .recv_until(|f| matches!(f, ServerFrame::UserOffline { user_id, .. } if user_id.as_str() == "ghost"))
        .await
        .unwrap();
    assert!(matches!(offline, ServerFrame::UserOffline { .. }));
    assert!(
        killed_at.elapsed() < Duration::from_secs(15),
        "no ghosts after the TTL: {:?}",
        killed_at.elapsed()
    );
    // And online again once it reconnects, wherever it lands.
    let _ghost = connect(&c.nodes[survivor], "ghost").await;
    let online = observer
        .recv_until(
            |f| matches!(f, ServerFrame::UserOnline { user } if user.id.as_str() == "ghost"),
        )
        .await;
    online.expect("user:online after the reconnect");
}

#[tokio::test]
async fn a_redis_restart_under_traffic_leaves_no_gap() {
    let mut c = cluster(2).await;
    let mut alice = connect(&c.nodes[0], "alice").await;
    let mut bob = connect(&c.nodes[1], "bob").await;
    alice.create_room("general").await.unwrap();
    bob.join_room("general").await.unwrap();
    let mut last = 0;
    for i in 0..50 {
        last = send(&mut alice, "general", &format!("before {i}")).await;
    }
    c.redis.stop().await.unwrap();
    for i in 0..30 {
        // Durable sends still commit and are acknowledged while Redis is away.
        last = send(&mut alice, "general", &format!("during {i}")).await;
    }
    c.redis.restart().await.unwrap();
    for i in 0..50 {
        last = send(&mut alice, "general", &format!("after {i}")).await;
    }
    let mut seen = Vec::new();
    bob.set_timeout(Duration::from_secs(30));
    while seen.last().copied().unwrap_or(0) < last {
        seen.push(next_message(&mut bob).await.seq);
    }
    assert_eq!(
        seen,
        (1..=last).collect::<Vec<_>>(),
        "every acknowledged message, in order, once"
    );
    assert_quiet(&mut bob).await;
}
