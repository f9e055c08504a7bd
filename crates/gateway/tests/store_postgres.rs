//! The PostgreSQL store against a real server: the store contract, migrations, group commit,
//! and what happens while PostgreSQL is down.
#![allow(clippy::unwrap_used)] // in scenario helpers too, a panic is the failure report

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use switchboard_gateway::store::postgres::{PgConfig, PgStore};
use switchboard_gateway::store::{Appended, NewMessage, NewRoom, Store, StoreError};
use switchboard_protocol::{MessageKind, RoomId, RoomKind, UserId, UserRef};
use switchboard_testkit::Postgres;
use tokio::time::Instant;

/// Bounds a call that must fail fast; generous, as the machine is shared.
const FAIL_FAST_BOUND: Duration = Duration::from_secs(10);

fn config(url: String) -> PgConfig {
    PgConfig {
        url,
        pool_size: 8,
        timeout: Duration::from_secs(5),
        batch_max_messages: 256,
        batch_max_delay: Duration::from_millis(2),
        committers: 2,
        events: None,
    }
}

fn user(id: &str) -> UserRef {
    UserRef {
        id: UserId::parse(id).unwrap(),
        name: id.to_uppercase(),
    }
}

fn room_id(id: &str) -> RoomId {
    RoomId::parse(id).unwrap()
}

async fn create_room(store: &PgStore, id: &str) -> RoomId {
    let room = NewRoom {
        id: room_id(id),
        name: id.into(),
        kind: RoomKind::Public,
        password_hash: None,
        creator: user("owner"),
        creator_role: switchboard_protocol::Role::owner(),
    };
    store.create_room(room).await.unwrap().info.room_id
}

fn message(room: &RoomId, from: &str, client_msg_id: &str) -> NewMessage {
    NewMessage {
        room: room.clone(),
        sender: user(from),
        kind: MessageKind::Text,
        content: format!("{from}: {client_msg_id}"),
        client_msg_id: client_msg_id.into(),
    }
}

/// Appends every message at once, each from its own task.
async fn append_all(store: &Arc<PgStore>, messages: Vec<NewMessage>) -> Vec<Appended> {
    let tasks: Vec<_> = messages
        .into_iter()
        .map(|m| {
            let store = Arc::clone(store);
            tokio::spawn(async move { store.append(m).await })
        })
        .collect();
    let mut appended = Vec::with_capacity(tasks.len());
    for task in tasks {
        appended.push(task.await.unwrap().expect("append"));
    }
    appended
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_postgres_store_meets_the_store_contract() {
    let pg = Postgres::start().await.unwrap();
    let store = PgStore::connect(&config(pg.url())).await.unwrap();
    switchboard_gateway::store::contract::run_all(&store, "pg").await;

    // The same contract with one transaction per message, as the benchmark compares.
    let single = PgStore::connect(&PgConfig {
        batch_max_messages: 1,
        ..config(pg.url())
    })
    .await
    .unwrap();
    switchboard_gateway::store::contract::run_all(&single, "pg1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_postgres_store_follows_the_push_rule() {
    use switchboard_gateway::store::contract;
    let pg = Postgres::start().await.unwrap();
    let delay = Duration::from_secs(2);
    let store = PgStore::connect(&PgConfig {
        events: Some(contract::push_sink(None, delay)),
        ..config(pg.url())
    })
    .await
    .unwrap();
    contract::push_is_owed_once_to_those_who_did_not_read(&store, &store, "pg", delay).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateways_starting_together_migrate_once_and_share_the_epoch() {
    let pg = Postgres::start().await.unwrap();
    let settings = config(pg.url());
    let (a, b, c) = tokio::join!(
        PgStore::connect(&settings),
        PgStore::connect(&settings),
        PgStore::connect(&settings),
    );
    let (a, b, c) = (a.unwrap(), b.unwrap(), c.unwrap());
    assert_eq!(
        pg.psql("SELECT version, count(*) FROM schema_migrations GROUP BY version ORDER BY 1")
            .await
            .unwrap(),
        "1|1\n2|1\n3|1\n4|1\n5|1\n6|1",
        "each version applied once"
    );
    let stored = pg.psql("SELECT epoch FROM store_meta").await.unwrap();
    assert_eq!(stored.lines().count(), 1, "one epoch row");
    for store in [&a, &b, &c] {
        assert_eq!(store.epoch(), stored);
    }

    // A later start changes nothing and keeps the epoch.
    let again = PgStore::connect(&config(pg.url())).await.unwrap();
    assert_eq!(again.epoch(), stored);
    assert_eq!(
        pg.psql("SELECT count(*) FROM schema_migrations")
            .await
            .unwrap(),
        "6"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_share_transactions_and_get_gap_free_seqs() {
    let pg = Postgres::start().await.unwrap();
    let store = Arc::new(
        PgStore::connect(&PgConfig {
            batch_max_delay: Duration::from_millis(5),
            ..config(pg.url())
        })
        .await
        .unwrap(),
    );
    let mut rooms = Vec::new();
    for i in 0..5 {
        rooms.push(create_room(&store, &format!("gc-{i}")).await);
    }

    // 500 appends at once, 100 per room, from 500 tasks.
    let messages: Vec<_> = (0..500)
        .map(|i| message(&rooms[i % 5], &format!("u{}", i % 7), &format!("m{i}")))
        .collect();
    let appended = append_all(&store, messages).await;
    assert!(appended.iter().all(|a| !a.duplicate));
    let positions: BTreeSet<_> = appended
        .iter()
        .map(|a| (a.message.room_id.to_string(), a.message.seq))
        .collect();
    assert_eq!(positions.len(), 500, "every append got its own seq");
    let batches = store.batches_committed();
    assert!(
        batches < 100,
        "{batches} transactions for 500 appends: group commit did not group"
    );
    assert_eq!(store.messages_committed(), 500);
    let per_room = "SELECT room, count(*), count(DISTINCT seq), min(seq), max(seq) \
                    FROM messages GROUP BY room ORDER BY room";
    let expected: Vec<String> = (0..5).map(|i| format!("gc-{i}|100|100|1|100")).collect();
    assert_eq!(pg.psql(per_room).await.unwrap(), expected.join("\n"));
    assert_eq!(
        pg.psql("SELECT string_agg(last_seq::text, ',' ORDER BY id) FROM rooms")
            .await
            .unwrap(),
        "100,100,100,100,100"
    );

    // The same clientMsgId sent 20 times at once (one batch, or several): stored once.
    let retries: Vec<_> = (0..20)
        .map(|_| message(&rooms[0], "alice", "dup"))
        .collect();
    let appended = append_all(&store, retries).await;
    assert_eq!(appended.iter().filter(|a| !a.duplicate).count(), 1);
    assert!(appended.iter().all(|a| a.message == appended[0].message));
    assert_eq!(appended[0].message.seq, 101);

    // A retry of a message committed in an earlier batch returns the original.
    let original = store
        .messages_after(&rooms[3], 0, 1)
        .await
        .unwrap()
        .remove(0);
    let retry = store
        .append(NewMessage {
            room: rooms[3].clone(),
            sender: original.sender.clone(),
            kind: original.kind,
            content: "a retry carries the same content".into(),
            client_msg_id: original.client_msg_id.clone(),
        })
        .await
        .unwrap();
    assert!(retry.duplicate);
    assert_eq!(retry.message, original);
    assert_eq!(
        pg.psql("SELECT count(*), count(*) FILTER (WHERE client_msg_id = 'dup') FROM messages")
            .await
            .unwrap(),
        "501|1"
    );

    // Messages to a missing room fail alone; their batch-mates are stored.
    let mut mixed: Vec<_> = (0..10)
        .map(|i| message(&rooms[1], "bob", &format!("mixed{i}")))
        .collect();
    mixed.push(message(&room_id("gc-missing"), "bob", "lost"));
    let tasks: Vec<_> = mixed
        .into_iter()
        .map(|m| {
            let store = Arc::clone(&store);
            tokio::spawn(async move { store.append(m).await })
        })
        .collect();
    let mut not_found = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(a) => assert!(!a.duplicate),
            Err(StoreError::RoomNotFound(room)) => {
                assert_eq!(room.as_str(), "gc-missing");
                not_found += 1;
            }
            Err(other) => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(not_found, 1);
    assert_eq!(
        pg.psql("SELECT max(seq) FROM messages WHERE room = 'gc-1'")
            .await
            .unwrap(),
        "110"
    );

    // Two gateways racing on the same keys: each key is stored once, both get the original.
    let other = Arc::new(PgStore::connect(&config(pg.url())).await.unwrap());
    let keys: Vec<_> = (0..50)
        .map(|i| message(&rooms[2], "dave", &format!("race{i}")))
        .collect();
    let (mine, theirs) = tokio::join!(append_all(&store, keys.clone()), append_all(&other, keys));
    for (a, b) in mine.iter().zip(&theirs) {
        assert_eq!(a.message, b.message);
        assert!(a.duplicate != b.duplicate, "exactly one stored it");
    }
    assert_eq!(
        pg.psql("SELECT count(*), max(seq) FROM messages WHERE room = 'gc-2'")
            .await
            .unwrap(),
        "150|150"
    );

    // With one message per transaction, every append is a transaction of its own.
    let single = Arc::new(
        PgStore::connect(&PgConfig {
            batch_max_messages: 1,
            ..config(pg.url())
        })
        .await
        .unwrap(),
    );
    let messages: Vec<_> = (0..50)
        .map(|i| message(&rooms[4], "carol", &format!("one{i}")))
        .collect();
    let appended = append_all(&single, messages).await;
    let seqs: BTreeSet<u64> = appended.iter().map(|a| a.message.seq).collect();
    assert_eq!(seqs, (101..=150).collect());
    assert_eq!(single.batches_committed(), 50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_postgres_stopped_calls_fail_fast_and_the_store_recovers_by_itself() {
    let mut pg = Postgres::start().await.unwrap();
    let store = Arc::new(
        PgStore::connect(&PgConfig {
            timeout: Duration::from_secs(1),
            pool_size: 4,
            ..config(pg.url())
        })
        .await
        .unwrap(),
    );
    let room = create_room(&store, "outage").await;
    let mut acked = Vec::new();
    for i in 0..20 {
        let a = store
            .append(message(&room, "alice", &format!("before{i}")))
            .await
            .unwrap();
        acked.push(a.message);
    }

    pg.stop().await.unwrap();

    let started = Instant::now();
    let result = store.append(message(&room, "alice", "during")).await;
    assert!(
        matches!(result, Err(StoreError::Unavailable(_))),
        "{result:?}"
    );
    let result = store.room(&room).await;
    assert!(
        matches!(result, Err(StoreError::Unavailable(_))),
        "{result:?}"
    );
    let result = store.health().await;
    assert!(
        matches!(result, Err(StoreError::Unavailable(_))),
        "{result:?}"
    );
    assert!(
        started.elapsed() < FAIL_FAST_BOUND,
        "three failing calls took {:?}",
        started.elapsed()
    );

    pg.restart().await.unwrap();

    let deadline = Instant::now() + Duration::from_secs(30);
    while let Err(error) = store.health().await {
        assert!(
            Instant::now() < deadline,
            "still unhealthy 30 s after restart: {error}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A retry of the refused message is stored now, right after the acked ones.
    let after = store
        .append(message(&room, "alice", "during"))
        .await
        .unwrap();
    assert_eq!((after.duplicate, after.message.seq), (false, 21));
    acked.push(after.message);
    let stored = store.messages_after(&room, 0, 100).await.unwrap();
    assert_eq!(stored, acked, "every acknowledged message survived");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_message_acked_before_a_mid_traffic_outage_is_in_the_table() {
    let mut pg = Postgres::start().await.unwrap();
    let store = Arc::new(
        PgStore::connect(&PgConfig {
            timeout: Duration::from_secs(1),
            pool_size: 4,
            ..config(pg.url())
        })
        .await
        .unwrap(),
    );
    let room = create_room(&store, "traffic").await;

    // Four writers, each retrying a refused message (same clientMsgId) until it is acked.
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let (store, room) = (Arc::clone(&store), room.clone());
            tokio::spawn(async move {
                let mut acked = Vec::new();
                let mut refused = 0;
                for i in 0..60 {
                    let deadline = Instant::now() + Duration::from_secs(60);
                    loop {
                        let call = Instant::now();
                        match store
                            .append(message(&room, &format!("w{w}"), &format!("{i}")))
                            .await
                        {
                            Ok(a) => {
                                acked.push(a.message);
                                break;
                            }
                            Err(StoreError::Unavailable(_)) => {
                                assert!(call.elapsed() < FAIL_FAST_BOUND);
                                assert!(Instant::now() < deadline, "no recovery");
                                refused += 1;
                                tokio::time::sleep(Duration::from_millis(50)).await;
                            }
                            // The connection died with the commit in flight: it may have landed.
                            // A client retries with the same clientMsgId, and the table below
                            // must still hold the message once.
                            Err(StoreError::OutcomeUnknown(_)) => {
                                assert!(Instant::now() < deadline, "no recovery");
                                refused += 1;
                                tokio::time::sleep(Duration::from_millis(50)).await;
                            }
                            Err(other) => panic!("unexpected {other:?}"),
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                (acked, refused)
            })
        })
        .collect();

    tokio::time::sleep(Duration::from_millis(300)).await;
    pg.stop().await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    pg.restart().await.unwrap();

    let mut acked = Vec::new();
    let mut refused = 0;
    for writer in writers {
        let (messages, failures) = writer.await.unwrap();
        acked.extend(messages);
        refused += failures;
    }
    assert!(refused > 0, "the outage was not seen");
    assert_eq!(acked.len(), 240);
    let stored = store.messages_after(&room, 0, 1_000).await.unwrap();
    let seqs: Vec<u64> = stored.iter().map(|m| m.seq).collect();
    assert_eq!(seqs, (1..=240).collect::<Vec<_>>(), "gap-free, stored once");
    for message in &acked {
        assert!(stored.contains(message), "acked but lost: {message:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_racing_outside_the_room_lock_resolves_to_its_row() {
    let pg = Postgres::start().await.unwrap();
    let store = Arc::new(PgStore::connect(&config(pg.url())).await.unwrap());
    let room = create_room(&store, "race").await;
    // Another writer that does not lock the room: its row is uncommitted while we append.
    let (mut rogue, connection) = tokio_postgres::connect(&pg.url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let tx = rogue.transaction().await.unwrap();
    tx.batch_execute(
        "INSERT INTO messages (room, seq, id, sender, sender_name, kind, content, client_msg_id, \
         created_at) VALUES ('race', 1000, gen_random_uuid(), 'alice', 'ALICE', 'text', 'first', \
         'k1', now())",
    )
    .await
    .unwrap();
    let append = {
        let (store, room) = (Arc::clone(&store), room.clone());
        tokio::spawn(async move { store.append(message(&room, "alice", "k1")).await })
    };
    // Wait until the committer's insert waits on the uncommitted row, then commit it.
    let deadline = Instant::now() + Duration::from_secs(30);
    while pg
        .psql("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'")
        .await
        .unwrap()
        != "1"
    {
        assert!(Instant::now() < deadline, "the committer never waited");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tx.commit().await.unwrap();

    let appended = append.await.unwrap().expect("the race resolves, not fails");
    assert!(appended.duplicate);
    assert_eq!(
        (appended.message.seq, appended.message.content.as_str()),
        (1000, "first")
    );
    assert_eq!(
        pg.psql("SELECT last_seq, (SELECT count(*) FROM messages) FROM rooms")
            .await
            .unwrap(),
        "0|1",
        "the losing attempt took no seq"
    );
    let next = store.append(message(&room, "alice", "k2")).await.unwrap();
    assert_eq!(next.message.seq, 1);
}
