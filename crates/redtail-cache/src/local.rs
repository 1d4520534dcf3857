//! The in-process first tier, and what keeps it consistent across instances: the pub/sub
//! channel, or Redis's key tracking.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use moka::sync::Cache as Moka;
use redtail_core::{Bytes, Event, Subscription, unescape};
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
/// A value read from Redis is kept only if nothing invalidated it while it was read: neither a
/// broad invalidation (a tag, or everything: a gap in the messages, a reconnect) nor one of its
/// key (a write here, or another instance's message). The reader takes a ticket
/// ([`Local::generation`]) before its read and hands it to [`Local::insert`]. So a tier
/// invalidated at any moment of a read is never refilled by it with what the invalidation was
/// for: a read that fetched the old value just before another instance's write, and returns
/// just after that write's message, is refused.
#[derive(Debug, Clone)]
pub(crate) struct Local {
    entries: Moka<Bytes, Arc<Envelope>>,
    /// Invalidations applied so far, of any kind; bumped before each takes effect.
    seq: Arc<AtomicU64>,
    /// The number of the last broad invalidation.
    broad: Arc<AtomicU64>,
    /// The number of each key's last invalidation (bounded: when full it is emptied, and that
    /// counts as a broad invalidation).
    removed: Arc<Mutex<HashMap<Bytes, u64>>>,
}

impl Local {
    /// Keys whose last invalidation is remembered at once.
    const REMEMBERED: usize = 10_000;

    pub(crate) fn new(tier: LocalTier) -> Local {
        let mut builder =
            Moka::builder().max_capacity(tier.capacity).time_to_live(tier.ttl).support_invalidation_closures();
        if tier.weighed {
            builder = builder.weigher(|key: &Bytes, entry: &Arc<Envelope>| {
                u32::try_from(key.len().saturating_add(entry.value.len())).unwrap_or(u32::MAX)
            });
        }
        if let Some(idle) = tier.time_to_idle {
            builder = builder.time_to_idle(idle);
        }
        let entries = builder.build();
        Local { entries, seq: Arc::default(), broad: Arc::default(), removed: Arc::default() }
    }

    pub(crate) fn get(&self, key: &[u8]) -> Option<Arc<Envelope>> {
        self.entries.get(key)
    }

    /// A ticket for a read from Redis whose value may be kept: the invalidations applied so far.
    pub(crate) fn generation(&self) -> u64 {
        self.seq.load(Ordering::SeqCst)
    }

    /// Whether an invalidation of `key` was applied after the ticket `generation` was taken.
    fn invalidated_since(&self, key: &[u8], generation: u64) -> bool {
        self.broad.load(Ordering::SeqCst) > generation
            || self.removed.lock().unwrap_or_else(|p| p.into_inner()).get(key).is_some_and(|&at| at > generation)
    }

    /// Keeps `entry`, read from Redis with the ticket `generation`, unless an invalidation of it
    /// was applied since.
    pub(crate) fn insert(&self, key: Bytes, entry: Arc<Envelope>, generation: u64) {
        if self.invalidated_since(&key, generation) {
            return;
        }
        self.entries.insert(key.clone(), entry);
        // An invalidation between the check and the insert may have run before the insert.
        if self.invalidated_since(&key, generation) {
            self.entries.invalidate(&key);
        }
    }

    fn invalidating(&self) {
        let at = self.seq.fetch_add(1, Ordering::SeqCst) + 1;
        self.broad.fetch_max(at, Ordering::SeqCst);
    }

    pub(crate) fn remove(&self, key: &[u8]) {
        let at = self.seq.fetch_add(1, Ordering::SeqCst) + 1;
        let full = {
            let mut removed = self.removed.lock().unwrap_or_else(|p| p.into_inner());
            let full = removed.len() >= Self::REMEMBERED;
            if full {
                removed.clear();
            }
            removed.insert(Bytes::copy_from_slice(key), at);
            full
        };
        if full {
            // What was forgotten is covered by a broad invalidation, as of now.
            self.broad.fetch_max(at, Ordering::SeqCst);
        }
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
    fn apply_message(&self, own_id: &[u8; 8], payload: &[u8]) {
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

    /// Applies a key Redis reports changed: an entry's own, or a tag record's (its version
    /// changed, it was created, extended or it expired: entries carrying the tag go).
    fn apply_change(&self, tags: &[u8], key: &[u8]) {
        match key.strip_prefix(tags).and_then(unescape) {
            Some(tag) => self.remove_tag(&String::from_utf8_lossy(&tag)),
            None => self.remove(key),
        }
    }

    /// Applies messages and gaps until `stop` fires or the backend shuts down.
    pub(crate) fn follow(self, source: Source, mut subscription: Subscription, mut stop: oneshot::Receiver<()>) {
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = &mut stop => break,
                    event = subscription.recv() => match event {
                        Some(Event::Message(m)) => match &source {
                            Source::Messages { own_id } => self.apply_message(own_id, &m.payload),
                            Source::Tracking { tags } => self.apply_change(tags, &m.payload),
                        },
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

/// Where a [`Local`] tier's invalidations come from.
#[derive(Debug)]
pub(crate) enum Source {
    /// Messages of other instances on the cache's channel; this instance's id.
    Messages { own_id: [u8; 8] },
    /// Keys Redis reports changed; the prefix of tag record keys (`<prefix>:t:`).
    Tracking { tags: Bytes },
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
        // A read across its own key's invalidation (another instance wrote it) is not kept
        // either; one across another key's is.
        let generation = local.generation();
        local.remove(b"k");
        local.insert(key.clone(), entry(b"old"), generation);
        assert!(local.get(&key).is_none(), "a read across its key's invalidation was kept");
        let generation = local.generation();
        local.remove(b"other");
        local.insert(key.clone(), entry(b"new"), generation);
        assert!(local.get(&key).is_some(), "another key's invalidation refused the read");
        local.remove(b"k");
        // A read with no invalidation meanwhile is kept.
        let generation = local.generation();
        local.insert(key.clone(), entry(b"new"), generation);
        assert_eq!(local.get(&key).map(|e| e.value.clone()), Some(Bytes::from_static(b"new")));
    }
}
