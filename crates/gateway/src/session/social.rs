//! Notifications and friendships.

use std::sync::Arc;

use switchboard_protocol::{
    AckResult, ErrorCode, Friend, FriendStatus, MAX_NOTIFICATION_PAGE, ServerFrame, UserId, UserRef,
};

use super::{Connection, Session};
use crate::actions;
use crate::broker::{Envelope, Topic};
use crate::error::SessionError;
use crate::store::NewNotification;

/// Ids one `notifications:read` may mark.
const MAX_READ_IDS: usize = 1_000;
/// Page size when `notifications:list` gives no limit.
const DEFAULT_NOTIFICATION_PAGE: u32 = 50;

type Outcome = Result<Option<AckResult>, SessionError>;

impl<C: Connection> Session<C> {
    pub(super) async fn list_notifications(
        &mut self,
        limit: Option<u32>,
        before: Option<u64>,
    ) -> Outcome {
        let limit = match limit.unwrap_or(DEFAULT_NOTIFICATION_PAGE) {
            n @ 1..=MAX_NOTIFICATION_PAGE => n as usize,
            _ => {
                return Err(SessionError::refused(
                    ErrorCode::InvalidField,
                    format!("limit must be 1-{MAX_NOTIFICATION_PAGE}"),
                ));
            }
        };
        let mut notifications = self
            .app
            .store
            .notifications(&self.user.id, before, limit + 1)
            .await?;
        let has_more = notifications.len() > limit;
        notifications.truncate(limit);
        Ok(Some(AckResult::Notifications {
            notifications,
            has_more,
        }))
    }

    pub(super) async fn read_notifications(&mut self, ids: Vec<u64>) -> Outcome {
        if ids.len() > MAX_READ_IDS {
            return Err(SessionError::refused(
                ErrorCode::InvalidField,
                format!("at most {MAX_READ_IDS} ids at a time"),
            ));
        }
        self.app
            .store
            .mark_notifications_read(&self.user.id, &ids)
            .await?;
        Ok(Some(AckResult::Ok))
    }

    pub(super) async fn request_friend(&mut self, other: UserId) -> Outcome {
        self.refuse_self(&other)?;
        let app = Arc::clone(&self.app);
        // Asking again changes nothing and tells no one again.
        let before = app.store.friends(&self.user.id).await?;
        if let Some(known) = before.into_iter().find(|f| f.user.id == other)
            && known.status != FriendStatus::Incoming
        {
            return Ok(Some(AckResult::Friend { friend: known }));
        }
        let status = app.store.request_friend(&self.user.id, &other).await?;
        match status {
            FriendStatus::Outgoing => {
                let title = format!("{} wants to be friends", self.user.name);
                self.notify(&other, "friend:request", title).await?;
                self.tell_user(
                    &other,
                    ServerFrame::FriendRequest {
                        user: self.user.clone(),
                    },
                )
                .await;
            }
            FriendStatus::Accepted => self.announce_friendship(&other).await?,
            FriendStatus::Incoming => {}
        }
        self.friend_result(other, status).await
    }

    pub(super) async fn accept_friend(&mut self, other: UserId) -> Outcome {
        self.refuse_self(&other)?;
        if !self.app.store.accept_friend(&self.user.id, &other).await? {
            return Err(SessionError::refused(
                ErrorCode::FriendRequestNotFound,
                format!("no pending friend request from {other}"),
            ));
        }
        self.announce_friendship(&other).await?;
        self.friend_result(other, FriendStatus::Accepted).await
    }

    pub(super) async fn remove_friend(&mut self, other: UserId) -> Outcome {
        self.refuse_self(&other)?;
        if self.app.store.remove_friend(&self.user.id, &other).await? {
            self.tell_user(
                &other,
                ServerFrame::FriendRemoved {
                    user_id: self.user.id.clone(),
                },
            )
            .await;
        }
        Ok(Some(AckResult::Ok))
    }

    pub(super) async fn list_friends(&mut self) -> Outcome {
        let friends = self.app.store.friends(&self.user.id).await?;
        Ok(Some(AckResult::Friends { friends }))
    }

    fn refuse_self(&self, other: &UserId) -> Result<(), SessionError> {
        if *other == self.user.id {
            return Err(SessionError::refused(
                ErrorCode::InvalidRecipient,
                "that is you",
            ));
        }
        Ok(())
    }

    /// The other user learns that the friendship started, live and as a notification.
    async fn announce_friendship(&mut self, other: &UserId) -> Result<(), SessionError> {
        let title = format!("{} is now your friend", self.user.name);
        self.notify(other, "friend:accepted", title).await?;
        self.tell_user(
            other,
            ServerFrame::FriendAccepted {
                user: self.user.clone(),
            },
        )
        .await;
        Ok(())
    }

    async fn friend_result(&mut self, other: UserId, status: FriendStatus) -> Outcome {
        let friends = self.app.store.friends(&self.user.id).await?;
        let user = friends
            .into_iter()
            .find(|f| f.user.id == other)
            .map_or_else(
                || UserRef {
                    name: other.to_string(),
                    id: other,
                },
                |f| f.user,
            );
        Ok(Some(AckResult::Friend {
            friend: Friend { user, status },
        }))
    }

    /// Stores a notification for `user` and pushes it to their open connections.
    async fn notify(
        &mut self,
        user: &UserId,
        kind: &str,
        title: String,
    ) -> Result<(), SessionError> {
        let notification = NewNotification {
            user: user.clone(),
            kind: kind.to_owned(),
            title,
            body: String::new(),
            data: serde_json::json!({ "userId": self.user.id }),
        };
        actions::notify(&self.app, notification).await?;
        Ok(())
    }

    async fn tell_user(&mut self, user: &UserId, frame: ServerFrame) {
        self.app
            .publish(Envelope::frame(vec![Topic::User(user.clone())], frame))
            .await;
    }
}
