//! The embedded broker: one node, so publishing is handing the envelope to the local hub.
//!
//! Delivery is synchronous, in the publisher's task: there is no queue to bound, and events from
//! one publisher reach the hub in publish order.

use std::sync::{Arc, OnceLock};

use async_trait::async_trait;

use super::{Broker, BrokerError, Envelope, Inbox, Topic};

#[derive(Default)]
pub struct MemoryBroker {
    inbox: OnceLock<Arc<dyn Inbox>>,
}

impl std::fmt::Debug for MemoryBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryBroker").finish_non_exhaustive()
    }
}

impl MemoryBroker {
    pub fn new() -> Self {
        Self::default()
    }

    /// Connects the hub that receives every publication. Set once at start-up.
    pub fn attach(&self, inbox: Arc<dyn Inbox>) {
        // A second attach would be a wiring bug; the first inbox stays.
        let _ = self.inbox.set(inbox);
    }
}

#[async_trait]
impl Broker for MemoryBroker {
    async fn publish(&self, envelope: Envelope) -> Result<(), BrokerError> {
        match self.inbox.get() {
            Some(inbox) => {
                inbox.deliver(&envelope);
                Ok(())
            }
            None => Err(BrokerError::Unavailable("no inbox attached".into())),
        }
    }

    async fn subscribe(&self, _topics: &[Topic]) -> Result<(), BrokerError> {
        Ok(())
    }

    async fn unsubscribe(&self, _topics: &[Topic]) -> Result<(), BrokerError> {
        Ok(())
    }

    async fn health(&self) -> Result<(), BrokerError> {
        Ok(())
    }

    async fn flush(&self) -> Result<(), BrokerError> {
        // Delivered during the publish.
        Ok(())
    }

    async fn followed_rooms(&self) -> Result<Option<u64>, BrokerError> {
        Ok(None)
    }
}
