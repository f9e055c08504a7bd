//! The behaviour every [`Store`] must have, as one suite run against each implementation: the
//! in-memory store in unit tests, PostgreSQL in integration tests against a real server.
//!
//! Each case uses its own room and user ids, so the suite can share one store.

use switchboard_protocol::{MessageKind, RoomId, RoomKind, UserId, UserRef};

use switchboard_protocol::{FriendStatus, Role};

use super::{NewMessage, NewNotification, NewRoom, RoomSettings, Store, StoreError};
use crate::webhooks::WebhookOutbox;

fn user(id: &str) -> UserRef {
    UserRef {
        id: UserId::parse(id).expect("valid user id"),
        name: id.to_uppercase(),
    }
}

fn new_room(id: &RoomId, kind: RoomKind, creator: &str) -> NewRoom {
    NewRoom {
        id: id.clone(),
        name: format!("Room {id}"),
        kind,
        password_hash: (kind == RoomKind::Password).then(|| "$argon2id$fake".to_owned()),
        creator: user(creator),
        creator_role: Role::owner(),
    }
}

fn message(room: &RoomId, from: &str, client_msg_id: &str) -> NewMessage {
    NewMessage {
        room: room.clone(),
        sender: user(from),
        kind: MessageKind::Text,
        content: format!("{from} says {client_msg_id}"),
        client_msg_id: client_msg_id.to_owned(),
    }
}

/// Runs every case; `prefix` keeps ids apart from other runs on the same store.
pub async fn run_all(store: &dyn Store, prefix: &str) {
    rooms_have_members_and_refuse_duplicates(store, prefix).await;
    rooms_put_by_the_backend_are_created_then_changed(store, prefix).await;
    seq_is_gap_free_and_appends_are_idempotent(store, prefix).await;
    history_pages_in_ascending_order(store, prefix).await;
    read_watermarks_only_move_forward(store, prefix).await;
    direct_rooms_are_one_per_pair(store, prefix).await;
    notifications_page_newest_first_and_are_read_once(store, prefix).await;
    friendships_need_both_sides(store, prefix).await;
    bans_hold_until_they_end_or_are_lifted(store, prefix).await;
    store.health().await.expect("a running store is healthy");
    assert!(!store.epoch().is_empty());
}

pub async fn rooms_have_members_and_refuse_duplicates(store: &dyn Store, prefix: &str) {
    let id = RoomId::parse(format!("{prefix}-rooms")).expect("room id");
    let alice = UserId::parse(format!("{prefix}-alice")).expect("user id");
    let bob = UserId::parse(format!("{prefix}-bob")).expect("user id");
    let created = store
        .create_room(new_room(&id, RoomKind::Password, alice.as_str()))
        .await
        .expect("create");
    assert_eq!((created.info.last_seq, created.info.member_count), (0, 1));
    assert!(created.password_hash.is_some());
    assert!(matches!(
        store
            .create_room(new_room(&id, RoomKind::Public, bob.as_str()))
            .await,
        Err(StoreError::RoomExists(_))
    ));
    assert!(store.is_member(&id, &alice).await.expect("is_member"));
    assert!(!store.is_member(&id, &bob).await.expect("is_member"));
    assert!(store.add_member(&id, &bob, None).await.expect("add"));
    assert!(
        !store.add_member(&id, &bob, None).await.expect("add again"),
        "already a member"
    );
    let mut members = store.members(&id).await.expect("members");
    members.sort();
    assert_eq!(members, vec![alice.clone(), bob.clone()]);
    let rooms = store.rooms_of(&bob).await.expect("rooms_of");
    assert!(
        rooms
            .iter()
            .any(|r| r.room_id == id && r.role == Role::member())
    );
    // Roles: the creator's as given, a member's default, and replaced when given again.
    assert_eq!(
        store.member_role(&id, &alice).await.expect("role"),
        Some(Role::owner())
    );
    assert_eq!(
        store.member_role(&id, &bob).await.expect("role"),
        Some(Role::member())
    );
    let moderator = Role::parse("moderator").expect("role");
    assert!(
        !store
            .add_member(&id, &bob, Some(&moderator))
            .await
            .expect("add with a role")
    );
    assert_eq!(
        store.member_role(&id, &bob).await.expect("role"),
        Some(moderator.clone())
    );
    assert!(!store.add_member(&id, &bob, None).await.expect("add again"));
    assert_eq!(
        store.member_role(&id, &bob).await.expect("role"),
        Some(moderator),
        "kept"
    );
    assert!(store.remove_member(&id, &bob).await.expect("remove"));
    assert_eq!(store.member_role(&id, &bob).await.expect("role"), None);
    assert!(!store.remove_member(&id, &bob).await.expect("remove again"));
    assert!(
        !store
            .rooms_of(&bob)
            .await
            .expect("rooms_of")
            .iter()
            .any(|r| r.room_id == id)
    );
    let missing = RoomId::parse(format!("{prefix}-missing")).expect("room id");
    assert!(store.room(&missing).await.expect("room").is_none());
    assert!(matches!(
        store.append(message(&missing, "x", "1")).await,
        Err(StoreError::RoomNotFound(_))
    ));
}

pub async fn rooms_put_by_the_backend_are_created_then_changed(store: &dyn Store, prefix: &str) {
    let id = RoomId::parse(format!("{prefix}-put")).expect("room id");
    let settings = |name: &str, kind| RoomSettings {
        id: id.clone(),
        name: name.to_owned(),
        kind,
        created_by: UserId::parse("system").expect("user id"),
    };
    let (created, new) = store
        .put_room(settings("News", RoomKind::Feed))
        .await
        .expect("put");
    assert!(new);
    assert_eq!(
        (
            created.info.name.as_str(),
            created.info.kind,
            created.info.member_count
        ),
        ("News", RoomKind::Feed, 0),
        "created with no member"
    );
    let alice = UserId::parse(format!("{prefix}-alice")).expect("user id");
    assert!(store.add_member(&id, &alice, None).await.expect("add"));
    store
        .append(message(&id, &format!("{prefix}-alice"), "put-1"))
        .await
        .expect("append");
    let (changed, new) = store
        .put_room(settings("Old news", RoomKind::Private))
        .await
        .expect("put again");
    assert!(!new);
    assert_eq!(
        (
            changed.info.name.as_str(),
            changed.info.kind,
            changed.info.member_count,
            changed.info.last_seq
        ),
        ("Old news", RoomKind::Private, 1, 1),
        "members and messages stay"
    );
    assert_eq!(store.room(&id).await.expect("read"), Some(changed));
}

pub async fn seq_is_gap_free_and_appends_are_idempotent(store: &dyn Store, prefix: &str) {
    let id = RoomId::parse(format!("{prefix}-seq")).expect("room id");
    store
        .create_room(new_room(&id, RoomKind::Public, "alice"))
        .await
        .expect("create");
    let first = store
        .append(message(&id, "alice", "c1"))
        .await
        .expect("append");
    let other = store
        .append(message(&id, "bob", "c1"))
        .await
        .expect("same id, other sender");
    let retry = store
        .append(message(&id, "alice", "c1"))
        .await
        .expect("retry");
    assert_eq!((first.message.seq, other.message.seq), (1, 2));
    assert!(!first.duplicate && !other.duplicate);
    assert!(retry.duplicate);
    assert_eq!(retry.message, first.message, "a retry returns the original");
    let room = store.room(&id).await.expect("room").expect("exists");
    assert_eq!(room.info.last_seq, 2);
    let all = store.messages_after(&id, 0, 100).await.expect("after");
    assert_eq!(
        all.iter().map(|m| m.seq).collect::<Vec<_>>(),
        vec![1, 2],
        "stored once"
    );
}

pub async fn history_pages_in_ascending_order(store: &dyn Store, prefix: &str) {
    let id = RoomId::parse(format!("{prefix}-history")).expect("room id");
    store
        .create_room(new_room(&id, RoomKind::Public, "alice"))
        .await
        .expect("create");
    for i in 1..=30 {
        store
            .append(message(&id, "alice", &format!("h{i}")))
            .await
            .expect("append");
    }
    let seqs = |v: Vec<switchboard_protocol::Message>| v.iter().map(|m| m.seq).collect::<Vec<_>>();
    assert_eq!(
        seqs(store.messages_after(&id, 25, 10).await.expect("after")),
        vec![26, 27, 28, 29, 30]
    );
    assert_eq!(
        seqs(store.messages_after(&id, 0, 3).await.expect("after")),
        vec![1, 2, 3]
    );
    assert_eq!(
        seqs(store.messages_before(&id, 5, 10).await.expect("before")),
        vec![1, 2, 3, 4]
    );
    assert_eq!(
        seqs(
            store
                .messages_before(&id, u64::MAX, 2)
                .await
                .expect("latest")
        ),
        vec![29, 30]
    );
}

pub async fn read_watermarks_only_move_forward(store: &dyn Store, prefix: &str) {
    let id = RoomId::parse(format!("{prefix}-reads")).expect("room id");
    let bob = UserId::parse(format!("{prefix}-bob")).expect("user id");
    store
        .create_room(new_room(&id, RoomKind::Public, bob.as_str()))
        .await
        .expect("create");
    for i in 1..=5 {
        store
            .append(message(&id, "alice", &format!("r{i}")))
            .await
            .expect("append");
    }
    assert_eq!(store.mark_read(&bob, &id, 3).await.expect("read"), Some(3));
    assert_eq!(
        store.mark_read(&bob, &id, 2).await.expect("read"),
        None,
        "never backwards"
    );
    assert_eq!(
        store.mark_read(&bob, &id, 99).await.expect("read"),
        Some(5),
        "capped at the last seq"
    );
    let summary = store
        .rooms_of(&bob)
        .await
        .expect("rooms_of")
        .into_iter()
        .find(|r| r.room_id == id);
    let summary = summary.expect("bob's room");
    assert_eq!(
        (summary.last_seq, summary.last_read_seq, summary.unread),
        (5, 5, 0)
    );
}

pub async fn direct_rooms_are_one_per_pair(store: &dyn Store, prefix: &str) {
    let (a, b) = (
        user(&format!("{prefix}-dma")),
        user(&format!("{prefix}-dmb")),
    );
    let first = store.direct_room(&a, &b.id).await.expect("direct room");
    let again = store
        .direct_room(&b, &a.id)
        .await
        .expect("same pair, other way round");
    assert_eq!(first.info.room_id, again.info.room_id);
    assert_eq!(
        (first.info.kind, first.info.member_count),
        (RoomKind::Direct, 2)
    );
    assert!(
        store
            .is_member(&first.info.room_id, &b.id)
            .await
            .expect("is_member")
    );
    assert!(matches!(
        store.direct_room(&a, &a.id).await,
        Err(StoreError::SelfDirect)
    ));
}

pub async fn notifications_page_newest_first_and_are_read_once(store: &dyn Store, prefix: &str) {
    let bob = UserId::parse(format!("{prefix}-nbob")).expect("user id");
    let carol = UserId::parse(format!("{prefix}-ncarol")).expect("user id");
    let mut ids = Vec::new();
    for i in 1..=5 {
        let n = store
            .add_notification(NewNotification {
                user: bob.clone(),
                kind: "test".into(),
                title: format!("n{i}"),
                body: "body".into(),
                data: serde_json::json!({ "i": i, "nested": { "ok": true } }),
            })
            .await
            .expect("add");
        assert_eq!((n.read_at, n.data["i"].as_i64()), (None, Some(i)));
        ids.push(n.id);
    }
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids increase: {ids:?}");
    let page = store.notifications(&bob, None, 2).await.expect("list");
    assert_eq!(
        page.iter().map(|n| n.title.as_str()).collect::<Vec<_>>(),
        vec!["n5", "n4"]
    );
    let older = store
        .notifications(&bob, Some(page[1].id), 10)
        .await
        .expect("older");
    assert_eq!(
        older.iter().map(|n| n.title.as_str()).collect::<Vec<_>>(),
        vec!["n3", "n2", "n1"]
    );
    assert_eq!(store.unread_notifications(&bob).await.expect("unread"), 5);
    assert_eq!(
        store
            .mark_notifications_read(&carol, &ids)
            .await
            .expect("not carol's"),
        0
    );
    assert_eq!(
        store
            .mark_notifications_read(&bob, &ids[..2])
            .await
            .expect("read"),
        2
    );
    assert_eq!(
        store
            .mark_notifications_read(&bob, &ids[..2])
            .await
            .expect("again"),
        0
    );
    assert_eq!(store.unread_notifications(&bob).await.expect("unread"), 3);
    let first = store
        .notifications(&bob, Some(ids[1]), 1)
        .await
        .expect("first")
        .remove(0);
    assert!(first.read_at.is_some());
}

pub async fn friendships_need_both_sides(store: &dyn Store, prefix: &str) {
    let ann = user(&format!("{prefix}-fann"));
    let ben = user(&format!("{prefix}-fben"));
    let cat = user(&format!("{prefix}-fcat"));
    for u in [&ann, &ben, &cat] {
        store.upsert_user(u).await.expect("upsert");
    }
    let status = |v: Vec<switchboard_protocol::Friend>| {
        v.into_iter()
            .map(|f| (f.user.id.to_string(), f.status))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        store.request_friend(&ann.id, &ben.id).await.expect("ask"),
        FriendStatus::Outgoing
    );
    assert_eq!(
        status(store.friends(&ann.id).await.expect("ann")),
        vec![(ben.id.to_string(), FriendStatus::Outgoing)]
    );
    let bens = store.friends(&ben.id).await.expect("ben");
    assert_eq!(bens[0].user.name, ann.name, "names come from the users");
    assert_eq!(
        status(bens),
        vec![(ann.id.to_string(), FriendStatus::Incoming)]
    );
    assert!(
        !store
            .accept_friend(&ann.id, &ben.id)
            .await
            .expect("wrong side"),
        "only the asked accepts"
    );
    assert!(store.accept_friend(&ben.id, &ann.id).await.expect("accept"));
    assert_eq!(
        status(store.friends(&ann.id).await.expect("ann")),
        vec![(ben.id.to_string(), FriendStatus::Accepted)]
    );
    // Asking someone who asked first makes friends at once.
    assert_eq!(
        store
            .request_friend(&cat.id, &ann.id)
            .await
            .expect("cat asks"),
        FriendStatus::Outgoing
    );
    assert_eq!(
        store
            .request_friend(&ann.id, &cat.id)
            .await
            .expect("ann asks"),
        FriendStatus::Accepted
    );
    assert!(store.remove_friend(&ben.id, &ann.id).await.expect("remove"));
    assert!(!store.remove_friend(&ben.id, &ann.id).await.expect("again"));
    assert_eq!(
        status(store.friends(&ann.id).await.expect("ann")),
        vec![(cat.id.to_string(), FriendStatus::Accepted)]
    );
    assert!(matches!(
        store.request_friend(&ann.id, &ann.id).await,
        Err(StoreError::SelfDirect)
    ));
}

pub async fn bans_hold_until_they_end_or_are_lifted(store: &dyn Store, prefix: &str) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after the epoch")
        .as_millis() as u64;
    let mallory = user(&format!("{prefix}-mallory"));
    assert_eq!(store.upsert_user(&mallory).await.expect("upsert"), None);
    let ban = super::Ban {
        until: now + 60_000,
        reason: "spam".into(),
    };
    store.ban(&mallory.id, &ban).await.expect("ban");
    assert_eq!(
        store.upsert_user(&mallory).await.expect("upsert"),
        Some(ban)
    );
    assert!(store.unban(&mallory.id).await.expect("unban"));
    assert!(!store.unban(&mallory.id).await.expect("unban again"));
    assert_eq!(store.upsert_user(&mallory).await.expect("upsert"), None);
    // A ban for a user never seen, and one that has ended.
    let newcomer = UserId::parse(format!("{prefix}-newcomer")).expect("user id");
    let ended = super::Ban {
        until: now.saturating_sub(1_000),
        reason: String::new(),
    };
    store.ban(&newcomer, &ended).await.expect("ban");
    assert_eq!(
        store
            .upsert_user(&user(newcomer.as_str()))
            .await
            .expect("upsert"),
        None
    );
    assert!(
        !store
            .unban(&newcomer)
            .await
            .expect("an ended ban is not lifted")
    );
}

/// A webhook subscription to `push` alone, for the stores that
/// [`push_is_owed_once_to_those_who_did_not_read`] runs against.
pub fn push_sink(
    memory: Option<std::sync::Arc<crate::webhooks::MemoryOutbox>>,
    delay: std::time::Duration,
) -> crate::webhooks::EventSink {
    let subscription =
        crate::webhooks::Subscription::new(&["push".to_owned()], &["*".to_owned()]).expect("valid");
    crate::webhooks::EventSink::new(
        subscription,
        memory,
        delay,
        std::sync::Arc::new(tokio::sync::Notify::new()),
    )
}

/// The `push` bodies waiting in `outbox` whose user starts with `prefix`, by user.
async fn pushes(
    outbox: &dyn WebhookOutbox,
    prefix: &str,
) -> std::collections::BTreeMap<String, serde_json::Value> {
    let claimed = outbox
        .claim(1_000, std::time::Duration::from_secs(60))
        .await
        .expect("claim");
    let ids: Vec<String> = claimed.iter().map(|c| c.id.clone()).collect();
    outbox.delivered(&ids).await.expect("settle");
    let mut by_user = std::collections::BTreeMap::new();
    for webhook in claimed.into_iter().filter(|c| c.kind == "push") {
        let body: serde_json::Value = serde_json::from_str(&webhook.body).expect("JSON");
        let user = body["data"]["userId"].as_str().expect("userId").to_owned();
        if user.starts_with(prefix) {
            let repeated = by_user.insert(user.clone(), body["data"].clone());
            assert!(repeated.is_none(), "one push per user per pass: {user}");
        }
    }
    by_user
}

/// The push rule (`webhooks/push.rs`) on a store whose events go to `outbox`, subscribed to
/// `push` with `delay` ([`push_sink`]). Time is the pass's `now`: nothing is due before the
/// delay, everything after it.
pub async fn push_is_owed_once_to_those_who_did_not_read(
    store: &dyn Store,
    outbox: &dyn WebhookOutbox,
    prefix: &str,
    delay: std::time::Duration,
) {
    use std::time::SystemTime;
    let id = RoomId::parse(format!("{prefix}-push")).expect("room id");
    let name = |who: &str| format!("{prefix}-{who}");
    let [alice, bob, carol, dave] =
        ["alice", "bob", "carol", "dave"].map(|who| UserId::parse(name(who)).expect("user id"));
    let early = store
        .create_room(new_room(&id, RoomKind::Public, alice.as_str()))
        .await
        .expect("create");
    assert_eq!(early.info.last_seq, 0);
    for user in [&bob, &carol] {
        store.add_member(&id, user, None).await.expect("join");
    }
    store
        .append(message(&id, alice.as_str(), "before-dave"))
        .await
        .expect("append");
    // Dave joins after the first message: it is not his to be pushed.
    store.add_member(&id, &dave, None).await.expect("join");
    assert!(store.set_muted(&id, &carol, true).await.expect("mute"));
    assert!(
        !store
            .set_muted(&id, &UserId::parse(name("eve")).expect("id"), true)
            .await
            .expect("mute"),
        "not a member"
    );
    let muted = store.rooms_of(&carol).await.expect("rooms_of");
    assert!(muted.iter().any(|r| r.room_id == id && r.muted));
    for i in 1..=2 {
        store
            .append(message(&id, alice.as_str(), &format!("p{i}")))
            .await
            .expect("append");
    }
    let sent = store
        .append(message(&id, bob.as_str(), "from-bob"))
        .await
        .expect("append")
        .message;
    assert_eq!(sent.seq, 4);
    // Dave reads the first of his; Bob reads nothing but wrote the latest.
    store.mark_read(&dave, &id, 2).await.expect("read");
    let id_of = |who: &UserId| who.as_str().to_owned();

    let now = SystemTime::now();
    let pass = store.write_due_pushes(now).await.expect("pass");
    assert_eq!(pass.written, 0, "nothing is owed before the delay");
    let later = now + delay * 3;
    store.write_due_pushes(later).await.expect("pass");
    let owed = pushes(outbox, prefix).await;
    assert_eq!(
        owed.keys().cloned().collect::<Vec<_>>(),
        [id_of(&alice), id_of(&bob), id_of(&dave)],
        "not muted Carol: {owed:?}"
    );
    let alice_push = &owed[&id_of(&alice)];
    assert_eq!(
        alice_push["rooms"][0]["message"]["seq"], 4,
        "Bob's, not her own"
    );
    let bob_push = &owed[&id_of(&bob)];
    assert_eq!(bob_push["unread"], 4);
    let room = &bob_push["rooms"][0];
    assert_eq!(room["roomId"], id.as_str());
    assert_eq!(room["name"], format!("Room {id}"));
    assert_eq!(room["unread"], 4);
    assert_eq!(room["message"]["seq"], 3, "the latest someone else sent");
    assert_eq!(room["message"]["sender"]["id"], alice.as_str());
    assert_eq!(
        room["message"]["preview"],
        format!("{} says p2", alice.as_str())
    );
    assert!(bob_push.get("notifications").is_none());
    let dave_push = &owed[&id_of(&dave)];
    assert_eq!(dave_push["rooms"][0]["unread"], 2);
    assert_eq!(dave_push["rooms"][0]["message"]["seq"], 4);
    store.write_due_pushes(later).await.expect("pass");
    assert!(
        pushes(outbox, prefix).await.is_empty(),
        "nothing is owed twice"
    );

    // Read in time: nothing; read too late: already pushed, nothing again. Unmuting owes
    // nothing from before.
    assert!(store.set_muted(&id, &carol, false).await.expect("unmute"));
    let last = store
        .append(message(&id, bob.as_str(), "late"))
        .await
        .expect("append")
        .message;
    store.mark_read(&dave, &id, last.seq).await.expect("read");
    store
        .add_notification(NewNotification {
            user: bob.clone(),
            kind: "friend:request".into(),
            title: "Dave wants to be friends".into(),
            body: String::new(),
            data: serde_json::json!({}),
        })
        .await
        .expect("notify");
    let later = SystemTime::now() + delay * 3;
    store.write_due_pushes(later).await.expect("pass");
    let owed = pushes(outbox, prefix).await;
    assert_eq!(
        owed.keys().cloned().collect::<Vec<_>>(),
        [id_of(&alice), id_of(&bob), id_of(&carol)],
        "Dave read it in time: {owed:?}"
    );
    assert_eq!(owed[&id_of(&carol)]["rooms"][0]["message"]["seq"], 5);
    let bob_push = &owed[&id_of(&bob)];
    assert_eq!(
        bob_push["rooms"],
        serde_json::json!([]),
        "only his own message"
    );
    assert_eq!(bob_push["notifications"]["unread"], 1);
    assert_eq!(
        bob_push["notifications"]["latest"]["title"],
        "Dave wants to be friends"
    );
    assert_eq!(bob_push["unread"], 1);
}
