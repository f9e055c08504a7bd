//! The cluster backends against a real redis-server: the broker and presence contracts, and
//! what happens when Redis restarts or stops and when a node dies without a word.
#![allow(clippy::unwrap_used)] // in scenario helpers too, a panic is the failure report

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::FutureExt;
use switchboard_gateway::broker::contract::{self, Node, Recorder, marked, room, user};
use switchboard_gateway::broker::redis::RedisBroker;
use switchboard_gateway::broker::{ConnId, Topic};
use switchboard_gateway::presence::redis::RedisPresence;
use switchboard_gateway::presence::{Departed, Presence};
use switchboard_protocol::{PresenceStatus, UserId, UserRef};
use switchboard_testkit::Redis;

/// How long Redis may take to come back and the nodes to reconnect, on a busy machine.
const RECOVERY: Duration = Duration::from_secs(20);

async fn redis() -> Redis {
    Redis::start().await.expect("redis-server starts")
}

async fn node(redis: &Redis, id: &str) -> (Arc<RedisBroker>, Node) {
    let broker = RedisBroker::connect(&redis.url(), id).await.unwrap();
    let inbox = Recorder::new();
    broker.attach(inbox.clone());
    let node = Node {
        broker: broker.clone(),
        inbox,
    };
    (broker, node)
}

async fn presence(redis: &Redis, id: &str, ttl: Duration) -> RedisPresence {
    RedisPresence::connect(&redis.url(), id, ttl).await.unwrap()
}

fn person(id: &str) -> UserRef {
    UserRef {
        id: UserId::parse(id).unwrap(),
        name: id.to_uppercase(),
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Publishes a new marker from `from` until one reaches `to`; returns how long it took.
async fn publish_until_received(from: &Node, to: &Node, topic: &Topic, first: u64) -> Duration {
    let start = Instant::now();
    for marker in first.. {
        assert!(
            start.elapsed() < RECOVERY,
            "nothing published on {topic:?} arrived within {RECOVERY:?}"
        );
        // Fails while the publisher is still reconnecting: that is the point of retrying.
        let _ = from
            .broker
            .publish(marked(vec![topic.clone()], marker))
            .await;
        let arrived = to
            .inbox
            .wait_until(Duration::from_millis(250), |r| r.count(marker) > 0)
            .await;
        if arrived {
            break;
        }
    }
    start.elapsed()
}

#[tokio::test]
async fn the_redis_broker_meets_the_broker_contract() {
    let redis = redis().await;
    let (_a, a) = node(&redis, "node-a").await;
    let (_b, b) = node(&redis, "node-b").await;
    contract::run_all(&a, &b, "all").await;
    contract::run_cluster(&a, &b, "cluster").await;
    let channels = redis.cli(&["PUBSUB", "CHANNELS"]).await.unwrap();
    assert_eq!(channels, "", "every case unsubscribed what it subscribed");
}

#[tokio::test]
async fn a_node_that_serves_only_room_x_receives_no_traffic_for_room_y() {
    let redis = redis().await;
    let (_a, a) = node(&redis, "node-a").await;
    let (b_broker, b) = node(&redis, "node-b").await;
    let (x, y) = (room("only", "x"), room("only", "y"));
    b.broker.subscribe(std::slice::from_ref(&x)).await.unwrap();
    for marker in 0..100 {
        a.broker
            .publish(marked(vec![y.clone()], marker))
            .await
            .unwrap();
    }
    a.broker
        .publish(marked(vec![x.clone()], 1_000))
        .await
        .unwrap();
    assert!(b.inbox.wait_for(1_000).await);
    assert_eq!(
        b_broker.received(),
        1,
        "room y's 100 events never reached node b"
    );
    assert_eq!(
        redis.cli(&["PUBSUB", "CHANNELS"]).await.unwrap(),
        "sb:room:only-x"
    );
    b.broker.unsubscribe(&[x]).await.unwrap();
    assert_eq!(redis.cli(&["PUBSUB", "CHANNELS"]).await.unwrap(), "");
}

#[tokio::test]
async fn after_a_redis_restart_a_node_resubscribes_and_repairs_its_rooms() {
    let mut redis = redis().await;
    let (_a, a) = node(&redis, "node-a").await;
    let (_b, b) = node(&redis, "node-b").await;
    let (r, u) = (room("rs", "general"), user("rs", "bob"));
    b.broker.subscribe(&[r.clone(), u.clone()]).await.unwrap();
    a.broker.publish(marked(vec![r.clone()], 1)).await.unwrap();
    assert!(b.inbox.wait_for(1).await);
    assert!(b.inbox.gap_topics().is_empty());

    redis.restart().await.unwrap();
    let repaired = b
        .inbox
        .wait_until(RECOVERY, |inbox| inbox.gap_topics().contains(&r))
        .await;
    assert!(
        repaired,
        "node b reported a gap for its room after reconnecting"
    );
    assert!(b.inbox.gap_topics().contains(&u));
    publish_until_received(&a, &b, &r, 100).await;
    publish_until_received(&a, &b, &u, 200).await;
    let mut channels: Vec<String> = redis
        .cli(&["PUBSUB", "CHANNELS"])
        .await
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    channels.sort();
    assert_eq!(channels, vec!["sb:room:rs-general", "sb:user:rs-bob"]);
}

#[tokio::test]
async fn publishing_while_redis_is_down_fails_fast_and_still_reaches_local_members() {
    let mut redis = redis().await;
    let (broker_a, a) = node(&redis, "node-a").await;
    let (_b, b) = node(&redis, "node-b").await;
    let r = room("down", "general");
    b.broker.subscribe(std::slice::from_ref(&r)).await.unwrap();

    redis.stop().await.unwrap();
    let start = Instant::now();
    let published = a.broker.publish(marked(vec![r.clone()], 1)).await;
    // Fails at once once the client knows the connection is gone; queued just before that,
    // it fails in the background.
    while published.is_ok() && broker_a.publishes_failed() == 0 {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "the remote part never failed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(a.inbox.count(1), 1, "local members got it all the same");
    assert!(a.broker.health().await.is_err());
    // A session joining meanwhile: the subscribe fails fast, and is kept for later.
    let late = room("down", "late");
    let start = Instant::now();
    let subscribed = a.broker.subscribe(std::slice::from_ref(&late)).await;
    assert!(subscribed.is_err());
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );

    redis.restart().await.unwrap();
    let start = Instant::now();
    while a.broker.health().await.is_err() {
        assert!(
            start.elapsed() < RECOVERY,
            "healthy again once redis is back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let repaired = a
        .inbox
        .wait_until(RECOVERY, |inbox| inbox.gap_topics().contains(&late))
        .await;
    assert!(repaired, "the late subscription is repaired from the store");
    publish_until_received(&b, &a, &late, 100).await;
    publish_until_received(&a, &b, &r, 200).await;
}

#[tokio::test]
async fn the_redis_presence_meets_the_presence_contract() {
    let redis = redis().await;
    let ttl = Duration::from_secs(15);
    let a = presence(&redis, "node-a", ttl).await;
    let b = presence(&redis, "node-b", ttl).await;
    switchboard_gateway::presence::contract::run_all(&a, &b, "pc").await;
}

#[tokio::test]
async fn a_dead_nodes_users_go_offline_once_within_the_lease_ttl() {
    let redis = redis().await;
    let ttl = Duration::from_millis(1_500);
    let refresh = Duration::from_millis(300);
    let survivors = [
        presence(&redis, "node-1", ttl).await,
        presence(&redis, "node-2", ttl).await,
    ];
    let doomed = presence(&redis, "node-3", ttl).await;
    let (alice, bob, carol) = (person("alice"), person("bob"), person("carol"));
    doomed
        .connect(&alice, &ConnId::new("node-3", 1))
        .await
        .unwrap();
    doomed
        .connect(&alice, &ConnId::new("node-3", 2))
        .await
        .unwrap();
    doomed
        .connect(&bob, &ConnId::new("node-3", 3))
        .await
        .unwrap();
    survivors[0]
        .connect(&bob, &ConnId::new("node-1", 1))
        .await
        .unwrap();
    survivors[1]
        .connect(&carol, &ConnId::new("node-2", 1))
        .await
        .unwrap();
    let ids = [alice.id.clone(), bob.id.clone(), carol.id.clone()];
    assert_eq!(survivors[0].online(&ids).await.unwrap().len(), 3);

    // kill -9: no disconnect, no more lease refresh.
    drop(doomed);
    let died = Instant::now();
    let mut departed: Vec<Departed> = Vec::new();
    let mut reported_after = None;
    let deadline = ttl + refresh * 2 + Duration::from_secs(2);
    while died.elapsed() < deadline {
        let (one, two) = tokio::join!(survivors[0].maintain(), survivors[1].maintain());
        departed.extend(one.unwrap());
        departed.extend(two.unwrap());
        if reported_after.is_none() && departed.iter().any(|d| d.user == alice.id) {
            reported_after = Some(died.elapsed());
        }
        tokio::time::sleep(refresh).await;
    }
    let reported_after = reported_after.expect("alice was reported offline");
    // The TTL, then the next maintain; plus slack for a busy machine.
    assert!(
        reported_after <= ttl + refresh + Duration::from_secs(1),
        "reported after {reported_after:?}"
    );
    let users: Vec<&UserId> = departed.iter().map(|d| &d.user).collect();
    assert_eq!(users, vec![&alice.id], "alice once; bob is still on node-1");
    assert!(departed[0].last_seen <= now_ms() && departed[0].last_seen > 0);
    let online = survivors[1].online(&ids).await.unwrap();
    assert_eq!(
        online,
        vec![
            (bob.clone(), PresenceStatus::Online),
            (carol.clone(), PresenceStatus::Online)
        ]
    );
    // Alice comes back through another node: a fresh first connection.
    let back = survivors[0]
        .connect(&alice, &ConnId::new("node-1", 2))
        .await
        .unwrap();
    assert!(back.first);
    assert_eq!(back.connections, vec![ConnId::new("node-1", 2)]);
}

#[tokio::test]
async fn presence_is_written_back_after_redis_forgets_it() {
    let mut redis = redis().await;
    let node = presence(&redis, "node-1", Duration::from_secs(15)).await;
    let alice = person("alice");
    let [c1, c2, c3] = [1, 2, 3].map(|n| ConnId::new("node-1", n));
    node.connect(&alice, &c1).await.unwrap();
    node.connect(&alice, &c2).await.unwrap();

    redis.restart().await.unwrap();
    let start = Instant::now();
    while node.maintain().await.is_err() {
        assert!(
            start.elapsed() < RECOVERY,
            "maintain works once redis is back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let online = node.online(std::slice::from_ref(&alice.id)).await.unwrap();
    assert_eq!(online, vec![(alice.clone(), PresenceStatus::Online)]);
    let third = node.connect(&alice, &c3).await.unwrap();
    assert!(!third.first);
    assert_eq!(
        third.connections,
        vec![c1.clone(), c2.clone(), c3.clone()],
        "written back oldest first"
    );
    assert_eq!(node.disconnect(&alice.id, &c1).await.unwrap(), None);
    assert_eq!(node.disconnect(&alice.id, &c2).await.unwrap(), None);
    assert!(node.disconnect(&alice.id, &c3).await.unwrap().is_some());
}

#[tokio::test]
async fn a_node_restarted_under_the_same_id_reports_its_previous_users_offline() {
    let redis = redis().await;
    let ttl = Duration::from_secs(15);
    let witness = presence(&redis, "node-2", ttl).await;
    let before = presence(&redis, "node-1", ttl).await;
    let (alice, bob) = (person("alice"), person("bob"));
    before
        .connect(&alice, &ConnId::new("node-1", 1))
        .await
        .unwrap();
    before
        .connect(&bob, &ConnId::new("node-1", 2))
        .await
        .unwrap();
    witness
        .connect(&bob, &ConnId::new("node-2", 1))
        .await
        .unwrap();
    drop(before);

    // Back within the TTL: its lease never expired, yet its old connections are gone.
    let after = presence(&redis, "node-1", ttl).await;
    let departed: Vec<UserId> = after
        .maintain()
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.user)
        .collect();
    assert_eq!(departed, vec![alice.id.clone()], "bob is still on node-2");
    assert!(after.maintain().await.unwrap().is_empty(), "reported once");
    let online = witness.online(&[alice.id.clone(), bob.id.clone()]).await;
    assert_eq!(online.unwrap(), vec![(bob, PresenceStatus::Online)]);
}

#[tokio::test]
async fn a_frozen_redis_fails_publishes_in_bounded_time_and_bounded_memory() {
    let redis = redis().await;
    let (broker_a, a) = node(&redis, "node-a").await;
    let (_b, b) = node(&redis, "node-b").await;
    let r = room("frozen", "general");
    b.broker.subscribe(std::slice::from_ref(&r)).await.unwrap();

    redis.pause().unwrap();
    // A publish does not wait for Redis: it is queued, and fails in the background.
    let start = Instant::now();
    a.broker.publish(marked(vec![r.clone()], 1)).await.unwrap();
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(a.inbox.count(1), 1, "local members got it all the same");
    while broker_a.publishes_failed() == 0 {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "the queued publish never failed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The queue is bounded: while Redis stays silent, publishing fails at once past its bound.
    let refused = (2..200_000u64).find(|&marker| {
        a.broker
            .publish(marked(vec![r.clone()], marker))
            .now_or_never()
            .is_some_and(|published| published.is_err())
    });
    assert!(refused.is_some(), "the publish queue never filled up");
    redis.resume().unwrap();
    publish_until_received(&a, &b, &r, 1_000_000).await;
}

#[tokio::test]
async fn a_subscriber_connection_frozen_past_its_deadline_is_replaced_and_repaired() {
    let redis = redis().await;
    let (_a, a) = node(&redis, "node-a").await;
    let (_b, b) = node(&redis, "node-b").await;
    let r = room("stuck", "general");
    b.broker.subscribe(std::slice::from_ref(&r)).await.unwrap();

    redis.pause().unwrap();
    tokio::time::sleep(Duration::from_secs(7)).await;
    redis.resume().unwrap();
    let repaired = b
        .inbox
        .wait_until(RECOVERY, |inbox| inbox.gap_topics().contains(&r))
        .await;
    assert!(repaired, "the replaced connection's room is repaired");
    publish_until_received(&a, &b, &r, 100).await;
}

#[tokio::test]
async fn connecting_to_a_missing_redis_fails_instead_of_hanging() {
    let url = format!(
        "redis://127.0.0.1:{}",
        switchboard_testkit::free_port().unwrap()
    );
    let start = Instant::now();
    assert!(RedisBroker::connect(&url, "node-a").await.is_err());
    let ttl = Duration::from_secs(15);
    assert!(RedisPresence::connect(&url, "node-a", ttl).await.is_err());
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "{:?}",
        start.elapsed()
    );
}
