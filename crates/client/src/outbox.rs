//! Sends waiting for their ack: kept across reconnects (and, with an [`OutboxStore`], across
//! restarts) and sent again under their original `clientMsgId`, so each is stored exactly once.

use std::io;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use switchboard_protocol::{ClientFrame, MessageKind, RoomId, UserId};

/// A send as the outbox keeps it: what `message:send` or `dm:send` carries, without the request
/// id. Its JSON is the TypeScript client's, so both can share a store's format.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum PendingSend {
    #[serde(rename = "message:send", rename_all = "camelCase")]
    Room {
        room_id: RoomId,
        content: String,
        kind: MessageKind,
        client_msg_id: String,
    },
    #[serde(rename = "dm:send", rename_all = "camelCase")]
    Direct {
        recipient_id: UserId,
        content: String,
        kind: MessageKind,
        client_msg_id: String,
    },
}

impl PendingSend {
    pub fn client_msg_id(&self) -> &str {
        match self {
            Self::Room { client_msg_id, .. } | Self::Direct { client_msg_id, .. } => client_msg_id,
        }
    }

    pub fn content(&self) -> &str {
        match self {
            Self::Room { content, .. } | Self::Direct { content, .. } => content,
        }
    }

    /// The frame that sends it as request `id`.
    pub fn frame(&self, id: u64) -> ClientFrame {
        match self.clone() {
            Self::Room {
                room_id,
                content,
                kind,
                client_msg_id,
            } => ClientFrame::MessageSend {
                id,
                room_id,
                content,
                kind,
                client_msg_id,
            },
            Self::Direct {
                recipient_id,
                content,
                kind,
                client_msg_id,
            } => ClientFrame::DmSend {
                id,
                recipient_id,
                content,
                kind,
                client_msg_id,
            },
        }
    }
}

/// Where the outbox is kept between runs. Both calls run on the client's task, after every
/// change: keep them quick.
pub trait OutboxStore: Send + Sync + 'static {
    /// The sends saved last, oldest first.
    fn load(&self) -> io::Result<Vec<PendingSend>>;
    /// Replaces what is saved with `pending`.
    fn save(&self, pending: &[PendingSend]) -> io::Result<()>;
}

/// An outbox in a JSON file, replaced atomically (written aside, then renamed over it).
#[derive(Debug, Clone)]
pub struct JsonFileStore {
    path: PathBuf,
}

impl JsonFileStore {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }
}

impl OutboxStore for JsonFileStore {
    fn load(&self) -> io::Result<Vec<PendingSend>> {
        match std::fs::read(&self.path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(io::Error::other),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }

    fn save(&self, pending: &[PendingSend]) -> io::Result<()> {
        let mut aside = self.path.clone().into_os_string();
        aside.push(".tmp");
        let bytes = serde_json::to_vec(pending).map_err(io::Error::other)?;
        std::fs::write(&aside, bytes)?;
        std::fs::rename(&aside, &self.path)
    }
}

/// Bounded, in send order; a full outbox refuses new sends rather than dropping old ones.
pub(crate) struct Outbox {
    limit: usize,
    pending: Vec<PendingSend>,
    store: Option<std::sync::Arc<dyn OutboxStore>>,
}

impl Outbox {
    pub(crate) fn new(limit: usize, store: Option<std::sync::Arc<dyn OutboxStore>>) -> Self {
        Self {
            limit,
            pending: Vec::new(),
            store,
        }
    }

    /// Sends kept by an earlier run (at most `limit`), in their order.
    pub(crate) fn restore(&mut self) -> Vec<PendingSend> {
        let Some(store) = &self.store else {
            return Vec::new();
        };
        match store.load() {
            Ok(mut restored) => {
                restored.truncate(self.limit);
                self.pending = restored;
            }
            Err(e) => tracing::warn!(error = %e, "cannot load the outbox; starting empty"),
        }
        self.pending.clone()
    }

    pub(crate) fn contains(&self, client_msg_id: &str) -> bool {
        self.pending
            .iter()
            .any(|p| p.client_msg_id() == client_msg_id)
    }

    /// Adds `send`; `false` when the outbox is full.
    pub(crate) fn add(&mut self, send: PendingSend) -> bool {
        if self.contains(send.client_msg_id()) {
            return true;
        }
        if self.pending.len() >= self.limit {
            return false;
        }
        self.pending.push(send);
        self.persist();
        true
    }

    pub(crate) fn remove(&mut self, client_msg_id: &str) -> Option<PendingSend> {
        let at = self
            .pending
            .iter()
            .position(|p| p.client_msg_id() == client_msg_id)?;
        let send = self.pending.remove(at);
        self.persist();
        Some(send)
    }

    pub(crate) fn get(&self, client_msg_id: &str) -> Option<&PendingSend> {
        self.pending
            .iter()
            .find(|p| p.client_msg_id() == client_msg_id)
    }

    pub(crate) fn all(&self) -> &[PendingSend] {
        &self.pending
    }

    pub(crate) fn limit(&self) -> usize {
        self.limit
    }

    fn persist(&self) {
        if let Some(store) = &self.store
            && let Err(e) = store.save(&self.pending)
        {
            // The sends stay in memory: persistence is lost, not the messages.
            tracing::warn!(error = %e, "cannot save the outbox");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn send(n: u32) -> PendingSend {
        PendingSend::Room {
            room_id: RoomId::parse("r").unwrap_or_else(|e| panic!("{e}")),
            content: format!("m{n}"),
            kind: MessageKind::Text,
            client_msg_id: format!("c{n}"),
        }
    }

    #[test]
    fn a_full_outbox_refuses_and_keeps_what_it_holds() {
        let mut outbox = Outbox::new(2, None);
        assert!(outbox.add(send(1)));
        assert!(outbox.add(send(1)), "the same send again is not a new one");
        assert!(outbox.add(send(2)));
        assert!(!outbox.add(send(3)));
        assert_eq!(outbox.remove("c1"), Some(send(1)));
        assert!(outbox.add(send(3)));
        let ids: Vec<_> = outbox
            .all()
            .iter()
            .map(PendingSend::client_msg_id)
            .collect();
        assert_eq!(ids, ["c2", "c3"]);
    }

    #[test]
    fn pending_sends_read_as_the_typescript_client_writes_them() {
        let json = r#"[{"type":"message:send","roomId":"r","content":"m1","kind":"text","clientMsgId":"c1"},
                       {"type":"dm:send","recipientId":"bob","content":"hi","kind":"text","clientMsgId":"c2"}]"#;
        let sends: Vec<PendingSend> = serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(sends[0], send(1));
        assert_eq!(sends[1].client_msg_id(), "c2");
    }

    #[test]
    fn a_file_store_keeps_the_outbox_across_runs() {
        let dir = std::env::temp_dir().join(format!("switchboard-outbox-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
        let store = std::sync::Arc::new(JsonFileStore::new(dir.join("outbox.json")));
        let mut first = Outbox::new(10, Some(store.clone()));
        assert_eq!(first.restore(), []);
        first.add(send(1));
        first.add(send(2));
        first.remove("c1");
        let mut second = Outbox::new(10, Some(store));
        assert_eq!(second.restore(), [send(2)]);
        std::fs::remove_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    }
}
