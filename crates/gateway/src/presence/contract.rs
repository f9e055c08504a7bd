//! The behaviour every [`Presence`] must have, as one suite run against each implementation:
//! the in-memory presence in unit tests, Redis in integration tests against a real server.
//!
//! A case talks to two nodes, A and B, sharing one backend. For a single-node presence both are
//! the same instance and every case still holds. Each case uses its own user ids (from
//! `prefix`), so the suite can share a backend with other runs.

use std::time::Duration;

use switchboard_protocol::{PresenceStatus, RoomId, UserId, UserRef};

use super::{Announcement, Presence, Subject};
use crate::broker::ConnId;

fn user(prefix: &str, name: &str) -> UserRef {
    UserRef {
        id: UserId::parse(format!("{prefix}-{name}")).expect("user id"),
        name: name.to_uppercase(),
    }
}

fn conn(prefix: &str, n: u64) -> ConnId {
    ConnId::new(prefix, n)
}

/// Runs every case; `a` and `b` may be the same instance.
pub async fn run_all(a: &dyn Presence, b: &dyn Presence, prefix: &str) {
    first_and_last_connection_are_reported_across_nodes(a, b, prefix).await;
    connections_are_listed_oldest_first(a, b, prefix).await;
    online_lists_visible_users_with_status_and_name(a, b, prefix).await;
    online_answers_for_a_large_room(a, b, prefix).await;
    an_unknown_connection_changes_nothing(a, prefix).await;
    live_nodes_depart_no_one(a, b, prefix).await;
    announcements_are_debounced_across_nodes(a, b, prefix).await;
    a_room_is_occupied_while_an_announced_member_counts_toward_it(a, b, prefix).await;
}

pub async fn first_and_last_connection_are_reported_across_nodes(
    a: &dyn Presence,
    b: &dyn Presence,
    prefix: &str,
) {
    let alice = user(prefix, "alice");
    let (c1, c2) = (conn(prefix, 1), conn(prefix, 2));
    let first = a.connect(&alice, &c1).await.expect("connect");
    assert!(first.first);
    assert_eq!(first.connections, vec![c1.clone()]);
    let second = b.connect(&alice, &c2).await.expect("connect");
    assert!(!second.first, "already online through another connection");
    assert_eq!(second.connections, vec![c1.clone(), c2.clone()]);
    assert_eq!(
        a.disconnect(&alice.id, &c1).await.expect("disconnect"),
        None
    );
    let last = b.disconnect(&alice.id, &c2).await.expect("disconnect");
    assert!(last.is_some_and(|at| at > 0), "the last one: {last:?}");
    let online = a.online(std::slice::from_ref(&alice.id)).await;
    assert!(online.expect("online").is_empty());
    // Back again: a fresh first connection.
    assert!(b.connect(&alice, &c1).await.expect("connect").first);
    assert!(
        a.disconnect(&alice.id, &c1)
            .await
            .expect("disconnect")
            .is_some()
    );
}

pub async fn connections_are_listed_oldest_first(a: &dyn Presence, b: &dyn Presence, prefix: &str) {
    let carol = user(prefix, "carol");
    let conns: Vec<ConnId> = (10..14).map(|n| conn(prefix, n)).collect();
    a.connect(&carol, &conns[0]).await.expect("connect");
    b.connect(&carol, &conns[1]).await.expect("connect");
    let third = a.connect(&carol, &conns[2]).await.expect("connect");
    assert_eq!(third.connections, conns[..3].to_vec());
    b.disconnect(&carol.id, &conns[1])
        .await
        .expect("disconnect");
    let fourth = b.connect(&carol, &conns[3]).await.expect("connect");
    assert_eq!(
        fourth.connections,
        vec![conns[0].clone(), conns[2].clone(), conns[3].clone()]
    );
    a.disconnect(&carol.id, &conns[0])
        .await
        .expect("disconnect");
    a.disconnect(&carol.id, &conns[2])
        .await
        .expect("disconnect");
    let last = b
        .disconnect(&carol.id, &conns[3])
        .await
        .expect("disconnect");
    assert!(last.is_some());
}

pub async fn online_lists_visible_users_with_status_and_name(
    a: &dyn Presence,
    b: &dyn Presence,
    prefix: &str,
) {
    let bob = user(prefix, "bob");
    let dave = user(prefix, "dave");
    let ids = vec![bob.id.clone(), dave.id.clone()];
    let c = conn(prefix, 20);
    a.connect(&bob, &c).await.expect("connect");
    assert_eq!(
        b.online(&ids).await.expect("online"),
        vec![(bob.clone(), PresenceStatus::Online)],
        "dave never connected"
    );
    b.set_status(&bob.id, PresenceStatus::Away)
        .await
        .expect("status");
    assert_eq!(
        a.online(&ids).await.expect("online"),
        vec![(bob.clone(), PresenceStatus::Away)]
    );
    a.set_status(&bob.id, PresenceStatus::Offline)
        .await
        .expect("status");
    assert!(
        b.online(&ids).await.expect("online").is_empty(),
        "invisible"
    );
    // A status for someone not connected is not kept.
    a.set_status(&dave.id, PresenceStatus::Busy)
        .await
        .expect("status");
    assert!(b.online(&ids).await.expect("online").is_empty());
    // The last connection ends: the next session starts online, under its current name.
    a.disconnect(&bob.id, &c).await.expect("disconnect");
    let renamed = UserRef {
        id: bob.id.clone(),
        name: "Robert".into(),
    };
    b.connect(&renamed, &c).await.expect("connect");
    assert_eq!(
        a.online(&ids).await.expect("online"),
        vec![(renamed, PresenceStatus::Online)]
    );
    b.disconnect(&bob.id, &c).await.expect("disconnect");
}

/// A join's `online` list covers every member of the room: thousands of users in one call,
/// in the order asked, whichever node each is on.
pub async fn online_answers_for_a_large_room(a: &dyn Presence, b: &dyn Presence, prefix: &str) {
    let members: Vec<UserRef> = (0..2_500).map(|n| user(prefix, &format!("m{n}"))).collect();
    let ids: Vec<UserId> = members.iter().map(|m| m.id.clone()).collect();
    let connected = [(0, a), (999, b), (1_000, a), (2_499, b)];
    for (n, (index, node)) in connected.iter().enumerate() {
        node.connect(&members[*index], &conn(prefix, 100 + n as u64))
            .await
            .expect("connect");
    }
    let expected: Vec<(UserRef, PresenceStatus)> = connected
        .iter()
        .map(|(index, _)| (members[*index].clone(), PresenceStatus::Online))
        .collect();
    assert_eq!(a.online(&ids).await.expect("online"), expected);
    for (n, (index, node)) in connected.iter().enumerate() {
        node.disconnect(&members[*index].id, &conn(prefix, 100 + n as u64))
            .await
            .expect("disconnect");
    }
    assert!(b.online(&ids).await.expect("online").is_empty());
}

pub async fn an_unknown_connection_changes_nothing(a: &dyn Presence, prefix: &str) {
    let erin = user(prefix, "erin");
    assert_eq!(
        a.disconnect(&erin.id, &conn(prefix, 30))
            .await
            .expect("disconnect"),
        None
    );
    let c = conn(prefix, 31);
    a.connect(&erin, &c).await.expect("connect");
    assert_eq!(
        a.disconnect(&erin.id, &conn(prefix, 32))
            .await
            .expect("disconnect"),
        None,
        "not one of hers"
    );
    assert_eq!(
        a.online(std::slice::from_ref(&erin.id))
            .await
            .expect("online")
            .len(),
        1
    );
    assert!(
        a.disconnect(&erin.id, &c)
            .await
            .expect("disconnect")
            .is_some()
    );
}

pub async fn live_nodes_depart_no_one(a: &dyn Presence, b: &dyn Presence, prefix: &str) {
    let frank = user(prefix, "frank");
    let c = conn(prefix, 40);
    a.connect(&frank, &c).await.expect("connect");
    for node in [a, b] {
        let departed = node.maintain().await.expect("maintain");
        assert!(departed.iter().all(|d| d.user != frank.id), "{departed:?}");
    }
    assert_eq!(
        b.online(std::slice::from_ref(&frank.id))
            .await
            .expect("online")
            .len(),
        1
    );
    a.disconnect(&frank.id, &c).await.expect("disconnect");
}

/// `node`'s due announcements about `user`.
async fn due_for(
    node: &dyn Presence,
    user: &UserId,
    grace: Duration,
    lease: Duration,
) -> Vec<Announcement> {
    due_about(node, &Subject::User(user.clone()), grace, lease).await
}

async fn due_about(
    node: &dyn Presence,
    subject: &Subject,
    grace: Duration,
    lease: Duration,
) -> Vec<Announcement> {
    let due = node
        .due_announcements(1_000, grace, lease)
        .await
        .expect("due announcements");
    due.into_iter().filter(|a| &a.subject == subject).collect()
}

pub async fn announcements_are_debounced_across_nodes(
    a: &dyn Presence,
    b: &dyn Presence,
    prefix: &str,
) {
    let gina = user(prefix, "gina");
    let (c1, c2) = (conn(prefix, 50), conn(prefix, 51));
    let long = Duration::from_secs(600);
    assert!(a.connect(&gina, &c1).await.expect("connect").first);
    a.watch(&gina.id, None).await.expect("watch");
    let online = due_for(b, &gina.id, long, long).await;
    assert_eq!(online.len(), 1, "{online:?}");
    assert!(online[0].online);
    assert!(
        due_for(a, &gina.id, long, long).await.is_empty(),
        "leased to b"
    );
    b.settled(&online[0]).await.expect("settle");
    assert!(due_for(a, &gina.id, long, long).await.is_empty());

    // Gone from a, back on b within the grace: nothing to announce.
    let last = a.disconnect(&gina.id, &c1).await.expect("disconnect");
    a.watch(&gina.id, last).await.expect("watch");
    assert!(
        due_for(b, &gina.id, long, long).await.is_empty(),
        "in grace"
    );
    assert!(b.connect(&gina, &c2).await.expect("connect").first);
    b.watch(&gina.id, None).await.expect("watch");
    assert!(
        due_for(a, &gina.id, long, long).await.is_empty(),
        "came back"
    );

    // Gone for good: offline under the same generation, last seen when the connection went;
    // an announcement not settled within its lease is handed out again, the same one.
    let last = b.disconnect(&gina.id, &c2).await.expect("disconnect");
    let last_seen = last.expect("her last connection");
    b.watch(&gina.id, last).await.expect("watch");
    let offline = due_for(a, &gina.id, Duration::ZERO, Duration::ZERO).await;
    let expected = Announcement {
        online: false,
        at: last_seen,
        ..online[0].clone()
    };
    assert_eq!(offline, vec![expected.clone()]);
    assert_eq!(
        due_for(b, &gina.id, Duration::ZERO, long).await,
        vec![expected.clone()],
        "the lease ran out"
    );
    b.settled(&expected).await.expect("settle");
    assert!(due_for(a, &gina.id, Duration::ZERO, long).await.is_empty());

    // Back later: a new generation.
    assert!(a.connect(&gina, &c1).await.expect("connect").first);
    a.watch(&gina.id, None).await.expect("watch");
    let again = due_for(b, &gina.id, long, long).await;
    assert_eq!(again.len(), 1);
    assert!(again[0].online && again[0].generation > online[0].generation);
    b.settled(&again[0]).await.expect("settle");
    a.disconnect(&gina.id, &c1).await.expect("disconnect");
}

pub async fn a_room_is_occupied_while_an_announced_member_counts_toward_it(
    a: &dyn Presence,
    b: &dyn Presence,
    prefix: &str,
) {
    let hank = user(prefix, "hank");
    let ivy = user(prefix, "ivy");
    let room = RoomId::parse(format!("{prefix}-lounge")).expect("room id");
    let lounge = Subject::Room(room.clone());
    let rooms = std::slice::from_ref(&room);
    let long = Duration::from_secs(600);

    // Ivy was never announced online: she does not count.
    a.enter_rooms(&ivy.id, rooms).await.expect("enter");
    assert!(due_about(b, &lounge, long, long).await.is_empty());

    let c = conn(prefix, 60);
    a.connect(&hank, &c).await.expect("connect");
    a.watch(&hank.id, None).await.expect("watch");
    let online = due_for(b, &hank.id, long, long).await;
    b.settled(&online[0]).await.expect("settle");
    a.enter_rooms(&hank.id, rooms).await.expect("enter");
    let occupied = due_about(b, &lounge, long, long).await;
    assert_eq!(occupied.len(), 1, "{occupied:?}");
    assert!(occupied[0].online);
    b.settled(&occupied[0]).await.expect("settle");
    // Counted twice is counted once.
    b.enter_rooms(&hank.id, rooms).await.expect("enter");
    assert!(due_about(a, &lounge, long, long).await.is_empty());

    // No longer counted anywhere: vacated at once, rooms have no grace of their own.
    b.leave_rooms(&hank.id, None).await.expect("leave");
    let vacated = due_about(a, &lounge, long, long).await;
    assert_eq!(vacated.len(), 1, "{vacated:?}");
    assert!(!vacated[0].online);
    assert_eq!(vacated[0].generation, occupied[0].generation);
    a.settled(&vacated[0]).await.expect("settle");
    assert!(due_about(b, &lounge, long, long).await.is_empty());
    a.disconnect(&hank.id, &c).await.expect("disconnect");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::presence::memory::MemoryPresence;

    #[tokio::test]
    async fn the_memory_presence_meets_the_presence_contract() {
        let presence = MemoryPresence::new();
        run_all(&presence, &presence, "mem").await;
    }
}
