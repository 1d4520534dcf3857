//! The in-process first tier and the pub/sub channel that keeps instances consistent.

use std::sync::Arc;

use moka::sync::Cache as Moka;
use redtail_core::{Bytes, Event, Subscription};
use tokio::sync::oneshot;

use crate::{LocalTier, envelope::Envelope};

/// An invalidation message about one key.
pub(crate) const KEY: u8 = b'k';
/// An invalidation message about one tag.
pub(crate) const TAG: u8 = b't';
/// An invalidation message about every key.
pub(crate) const ALL: u8 = b'a';

/// Entries held in process, by Redis key.
#[derive(Debug, Clone)]
pub(crate) struct Local {
    entries: Moka<Bytes, Arc<Envelope>>,
}

impl Local {
    pub(crate) fn new(tier: LocalTier) -> Local {
        let entries =
            Moka::builder().max_capacity(tier.capacity).time_to_live(tier.ttl).support_invalidation_closures().build();
        Local { entries }
    }

    pub(crate) fn get(&self, key: &[u8]) -> Option<Arc<Envelope>> {
        self.entries.get(key)
    }

    pub(crate) fn insert(&self, key: Bytes, entry: Arc<Envelope>) {
        self.entries.insert(key, entry);
    }

    pub(crate) fn remove(&self, key: &[u8]) {
        self.entries.invalidate(key);
    }

    pub(crate) fn remove_tag(&self, tag: &str) {
        let tag = tag.to_owned();
        // Only fails when closures are not enabled, and they are.
        let _ = self.entries.invalidate_entries_if(move |_, e| e.tags.iter().any(|(t, _)| t[..] == *tag.as_bytes()));
    }

    pub(crate) fn clear(&self) {
        self.entries.invalidate_all();
    }

    /// Applies a message from another instance; messages from `own_id` were applied already.
    fn apply(&self, own_id: &[u8; 8], payload: &[u8]) {
        let Some((&kind, rest)) = payload.split_first() else { return };
        let Some((sender, body)) = rest.split_at_checked(8) else { return };
        if sender == own_id {
            return;
        }
        match kind {
            KEY => self.remove(body),
            TAG => self.remove_tag(&String::from_utf8_lossy(body)),
            ALL => self.clear(),
            _ => tracing::debug!(kind, "unknown cache invalidation message ignored"),
        }
    }

    /// Applies messages and gaps until `stop` fires or the backend shuts down.
    pub(crate) fn follow(self, own_id: [u8; 8], mut subscription: Subscription, mut stop: oneshot::Receiver<()>) {
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = &mut stop => break,
                    event = subscription.recv() => match event {
                        Some(Event::Message(m)) => self.apply(&own_id, &m.payload),
                        Some(Event::Gap) => {
                            tracing::info!("cache invalidations may have been missed; in-process tier cleared");
                            self.clear();
                        }
                        None => break,
                    },
                }
            }
        });
    }
}

/// Builds an invalidation message.
pub(crate) fn message(kind: u8, own_id: &[u8; 8], body: &[u8]) -> Bytes {
    let mut m = Vec::with_capacity(9 + body.len());
    m.push(kind);
    m.extend_from_slice(own_id);
    m.extend_from_slice(body);
    m.into()
}
