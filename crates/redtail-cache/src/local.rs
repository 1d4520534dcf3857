//! The in-process first tier and the pub/sub channel that keeps instances consistent.

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

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
///
/// A value read from Redis is kept only if no broad invalidation (of a tag, or of everything:
/// a gap in the messages, a reconnect) was applied while it was read: the reader takes
/// [`Local::generation`] before its read and hands it to [`Local::insert`]. So a tier cleared at
/// any moment of a read is never refilled by it with what the clear was for. (A single key's
/// message does not count: it would refuse every concurrent fill under steady writes.)
#[derive(Debug, Clone)]
pub(crate) struct Local {
    entries: Moka<Bytes, Arc<Envelope>>,
    /// Broad invalidations applied so far; bumped before each takes effect.
    generation: Arc<AtomicU64>,
}

impl Local {
    pub(crate) fn new(tier: LocalTier) -> Local {
        let entries =
            Moka::builder().max_capacity(tier.capacity).time_to_live(tier.ttl).support_invalidation_closures().build();
        Local { entries, generation: Arc::default() }
    }

    pub(crate) fn get(&self, key: &[u8]) -> Option<Arc<Envelope>> {
        self.entries.get(key)
    }

    /// Broad invalidations applied so far, to be read before a read from Redis whose value may be
    /// kept.
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// Keeps `entry`, read from Redis after [`Local::generation`] was `generation`, unless an
    /// invalidation was applied since.
    pub(crate) fn insert(&self, key: Bytes, entry: Arc<Envelope>, generation: u64) {
        if self.generation() != generation {
            return;
        }
        self.entries.insert(key.clone(), entry);
        // An invalidation between the check and the insert may have run before the insert.
        if self.generation() != generation {
            self.entries.invalidate(&key);
        }
    }

    fn invalidating(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    pub(crate) fn remove(&self, key: &[u8]) {
        self.entries.invalidate(key);
    }

    pub(crate) fn remove_tag(&self, tag: &str) {
        self.invalidating();
        let tag = tag.to_owned();
        // Only fails when closures are not enabled, and they are.
        let _ = self.entries.invalidate_entries_if(move |_, e| e.tags.iter().any(|(t, _)| t[..] == *tag.as_bytes()));
    }

    pub(crate) fn clear(&self) {
        self.invalidating();
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn entry(value: &'static [u8]) -> Arc<Envelope> {
        let value = Bytes::from_static(value);
        Arc::new(Envelope { format: 0, fresh_until_ms: u64::MAX, load_ms: 0, tags: Vec::new(), value })
    }

    #[test]
    fn a_value_read_across_an_invalidation_is_not_kept() {
        let local = Local::new(LocalTier::new(100, Duration::from_secs(30)));
        let key = Bytes::from_static(b"k");
        // A read starts, a broad invalidation (a tag, or a gap) is applied, the read returns.
        for invalidate in [|l: &Local| l.remove_tag("t"), |l: &Local| l.clear()] {
            let generation = local.generation();
            invalidate(&local);
            local.insert(key.clone(), entry(b"old"), generation);
            assert!(local.get(&key).is_none(), "an invalidation during the read was undone");
        }
        // A read with no invalidation meanwhile is kept.
        let generation = local.generation();
        local.insert(key.clone(), entry(b"new"), generation);
        assert_eq!(local.get(&key).map(|e| e.value.clone()), Some(Bytes::from_static(b"new")));
    }
}
