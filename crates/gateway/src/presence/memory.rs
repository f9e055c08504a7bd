//! Presence for one node: connections live exactly as long as this process.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use switchboard_protocol::{PresenceStatus, RoomId, UserId, UserRef};

use super::announcements::Announcements;
use super::{Announcement, ClusterStats, Connected, Departed, NodeStats, Presence, PresenceError};
use crate::broker::{ConnId, ConnIds};
use crate::wall_clock::now_millis;

#[derive(Debug, Default)]
pub struct MemoryPresence {
    users: Mutex<HashMap<UserId, Entry>>,
    /// Taken after `users` when both are needed.
    announcements: Mutex<Announcements>,
}

/// One online user; the map's key is the id (held once: one entry per user, so every byte of it
/// counts per connection).
#[derive(Debug)]
struct Entry {
    name: String,
    status: PresenceStatus,
    /// Oldest first.
    connections: ConnIds,
}

impl MemoryPresence {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<UserId, Entry>> {
        self.users
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn announcements(&self) -> std::sync::MutexGuard<'_, Announcements> {
        self.announcements
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[async_trait]
impl Presence for MemoryPresence {
    async fn connect(&self, user: &UserRef, conn: &ConnId) -> Result<Connected, PresenceError> {
        let mut users = self.lock();
        let entry = users.entry(user.id.clone()).or_insert_with(|| Entry {
            name: user.name.clone(),
            status: PresenceStatus::Online,
            connections: ConnIds::new(),
        });
        entry.name.clone_from(&user.name);
        entry.connections.push(conn.clone());
        Ok(Connected {
            first: entry.connections.len() == 1,
            connections: entry.connections.to_vec(),
        })
    }

    async fn disconnect(&self, user: &UserId, conn: &ConnId) -> Result<Option<u64>, PresenceError> {
        let mut users = self.lock();
        let Some(entry) = users.get_mut(user) else {
            return Ok(None);
        };
        let before = entry.connections.len();
        entry.connections.retain(|c| c != conn);
        if before > 0 && entry.connections.is_empty() {
            users.remove(user);
            return Ok(Some(now_millis()));
        }
        Ok(None)
    }

    async fn report(&self, _stats: NodeStats) -> Result<(), PresenceError> {
        // One node: the caller knows its own counts; there is no other node to tell.
        Ok(())
    }

    async fn cluster_stats(&self) -> Result<ClusterStats, PresenceError> {
        Ok(ClusterStats {
            nodes: Vec::new(),
            users: self.lock().len() as u64,
        })
    }

    async fn maintain(&self) -> Result<Vec<Departed>, PresenceError> {
        // One process: its connections end with it, nothing ever expires.
        Ok(Vec::new())
    }

    async fn set_status(&self, user: &UserId, status: PresenceStatus) -> Result<(), PresenceError> {
        if let Some(entry) = self.lock().get_mut(user) {
            entry.status = status;
        }
        Ok(())
    }

    async fn online(
        &self,
        users: &[UserId],
    ) -> Result<Vec<(UserRef, PresenceStatus)>, PresenceError> {
        let map = self.lock();
        Ok(users
            .iter()
            .filter_map(|id| map.get_key_value(id))
            .filter(|(_, e)| e.status != PresenceStatus::Offline)
            .map(|(id, e)| {
                let user = UserRef {
                    id: id.clone(),
                    name: e.name.clone(),
                };
                (user, e.status)
            })
            .collect())
    }

    async fn watch(&self, user: &UserId, offline_since: Option<u64>) -> Result<(), PresenceError> {
        self.announcements()
            .watch(user, offline_since, now_millis());
        Ok(())
    }

    async fn enter_rooms(&self, user: &UserId, rooms: &[RoomId]) -> Result<(), PresenceError> {
        self.announcements().enter_rooms(user, rooms, now_millis());
        Ok(())
    }

    async fn leave_rooms(
        &self,
        user: &UserId,
        rooms: Option<&[RoomId]>,
    ) -> Result<(), PresenceError> {
        self.announcements().leave_rooms(user, rooms, now_millis());
        Ok(())
    }

    async fn due_announcements(
        &self,
        max: usize,
        grace: Duration,
        lease: Duration,
    ) -> Result<Vec<Announcement>, PresenceError> {
        let users = self.lock();
        Ok(self
            .announcements()
            .due(now_millis(), max, millis(grace), millis(lease), |user| {
                users.contains_key(user)
            }))
    }

    async fn settled(&self, announcement: &Announcement) -> Result<(), PresenceError> {
        self.announcements().settled(announcement);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn first_and_last_connection_are_reported() {
        let presence = MemoryPresence::new();
        let alice = UserRef {
            id: UserId::parse("alice").unwrap(),
            name: "A".into(),
        };
        let (c1, c2) = (ConnId::new("n", 1), ConnId::new("n", 2));
        assert!(presence.connect(&alice, &c1).await.unwrap().first);
        let second = presence.connect(&alice, &c2).await.unwrap();
        assert!(!second.first);
        assert_eq!(second.connections, vec![c1.clone(), c2.clone()]);
        assert_eq!(presence.disconnect(&alice.id, &c1).await.unwrap(), None);
        assert!(presence.disconnect(&alice.id, &c2).await.unwrap().is_some());
        assert!(
            presence
                .online(std::slice::from_ref(&alice.id))
                .await
                .unwrap()
                .is_empty()
        );
    }
}
