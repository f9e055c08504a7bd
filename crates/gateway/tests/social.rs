//! Notifications and friendships, and presence between friends.
#![allow(clippy::unwrap_used)] // in scenario helpers too, a panic is the failure report

mod common;

use common::*;
use switchboard_protocol::{AckResult, ClientFrame, FriendStatus, ServerFrame};

fn ask(id: u64, who: &str) -> ClientFrame {
    ClientFrame::FriendRequest {
        id,
        user_id: user(who),
    }
}

#[tokio::test]
async fn a_friend_request_made_while_offline_is_waiting_on_the_next_connect() {
    let gw = gateway().await;
    let (bob, _) = connect_ready(&gw, "bob").await;
    drop(bob);
    let mut alice = connect(&gw, "alice").await;
    let AckResult::Friend { friend } = alice.request_ok(&ask(1, "bob")).await.unwrap() else {
        panic!()
    };
    assert_eq!(
        (
            friend.user.id.as_str(),
            friend.user.name.as_str(),
            friend.status
        ),
        ("bob", "Bob", FriendStatus::Outgoing)
    );
    let AckResult::Friend { friend } = alice.request_ok(&ask(9, "bob")).await.unwrap() else {
        panic!()
    };
    assert_eq!(
        friend.status,
        FriendStatus::Outgoing,
        "asking twice is one request"
    );

    let (mut bob, ready) = connect_ready(&gw, "bob").await;
    let ServerFrame::SessionReady {
        unread_notifications,
        ..
    } = ready
    else {
        panic!()
    };
    assert_eq!(unread_notifications, 1);
    let list = ClientFrame::NotificationsList {
        id: 2,
        limit: None,
        before: None,
    };
    let AckResult::Notifications {
        notifications,
        has_more,
    } = bob.request_ok(&list).await.unwrap()
    else {
        panic!()
    };
    assert!(!has_more);
    let [n] = notifications.as_slice() else {
        panic!("{notifications:?}")
    };
    assert_eq!(
        (n.kind.as_str(), n.title.as_str(), n.data["userId"].as_str()),
        ("friend:request", "Alice wants to be friends", Some("alice"))
    );
    assert_eq!(n.read_at, None);
    bob.request_ok(&ClientFrame::NotificationsRead {
        id: 3,
        ids: vec![n.id],
    })
    .await
    .unwrap();
    drop(bob);
    let (_bob, ready) = connect_ready(&gw, "bob").await;
    assert!(
        matches!(
            ready,
            ServerFrame::SessionReady {
                unread_notifications: 0,
                ..
            }
        ),
        "{ready:?}"
    );
}

#[tokio::test]
async fn friends_are_made_live_and_then_see_each_others_presence() {
    let gw = gateway().await;
    let mut alice = connect(&gw, "alice").await;
    let mut bob = connect(&gw, "bob").await;
    alice.request_ok(&ask(1, "bob")).await.unwrap();
    let live = bob
        .recv_until(|f| matches!(f, ServerFrame::FriendRequest { .. }))
        .await
        .unwrap();
    assert!(
        matches!(live, ServerFrame::FriendRequest { ref user } if user.id.as_str() == "alice"),
        "{live:?}"
    );
    let accept = ClientFrame::FriendAccept {
        id: 2,
        user_id: user("alice"),
    };
    let AckResult::Friend { friend } = bob.request_ok(&accept).await.unwrap() else {
        panic!()
    };
    assert_eq!(friend.status, FriendStatus::Accepted);
    let accepted = alice
        .recv_until(|f| matches!(f, ServerFrame::FriendAccepted { .. }))
        .await
        .unwrap();
    assert!(
        matches!(accepted, ServerFrame::FriendAccepted { ref user } if user.id.as_str() == "bob")
    );
    let AckResult::Friends { friends } = alice
        .request_ok(&ClientFrame::FriendsList { id: 3 })
        .await
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(
        friends
            .iter()
            .map(|f| (f.user.id.as_str(), f.status))
            .collect::<Vec<_>>(),
        vec![("bob", FriendStatus::Accepted)]
    );

    // They share no room, yet presence reaches the friend.
    drop(bob);
    let offline = alice
        .recv_until(|f| matches!(f, ServerFrame::UserOffline { .. }))
        .await
        .unwrap();
    assert!(
        matches!(offline, ServerFrame::UserOffline { ref user_id, .. } if user_id.as_str() == "bob")
    );
    let _bob = connect(&gw, "bob").await;
    let online = alice
        .recv_until(|f| matches!(f, ServerFrame::UserOnline { .. }))
        .await
        .unwrap();
    assert!(matches!(online, ServerFrame::UserOnline { ref user } if user.id.as_str() == "bob"));
}

#[tokio::test]
async fn friend_requests_are_validated_and_removal_is_told() {
    let gw = gateway().await;
    let mut alice = connect(&gw, "alice").await;
    let mut carol = connect(&gw, "carol").await;
    assert_eq!(
        refused_code(&mut alice, &ask(1, "alice")).await,
        "INVALID_RECIPIENT"
    );
    let accept = ClientFrame::FriendAccept {
        id: 2,
        user_id: user("carol"),
    };
    assert_eq!(
        refused_code(&mut alice, &accept).await,
        "FRIEND_REQUEST_NOT_FOUND"
    );
    // Asking someone who asked first makes friends at once.
    carol.request_ok(&ask(3, "alice")).await.unwrap();
    let AckResult::Friend { friend } = alice.request_ok(&ask(4, "carol")).await.unwrap() else {
        panic!()
    };
    assert_eq!(friend.status, FriendStatus::Accepted);
    alice
        .request_ok(&ClientFrame::FriendRemove {
            id: 5,
            user_id: user("carol"),
        })
        .await
        .unwrap();
    let removed = carol
        .recv_until(|f| matches!(f, ServerFrame::FriendRemoved { .. }))
        .await
        .unwrap();
    assert!(
        matches!(removed, ServerFrame::FriendRemoved { ref user_id } if user_id.as_str() == "alice")
    );
    let list = ClientFrame::NotificationsList {
        id: 6,
        limit: Some(101),
        before: None,
    };
    assert_eq!(refused_code(&mut alice, &list).await, "INVALID_FIELD");
}
