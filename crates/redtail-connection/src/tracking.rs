//! Key tracking ([`Backend::track`](redtail_core::Backend::track)): Redis's server-assisted
//! client-side caching in broadcast mode, on a connection of its own to every primary.
//!
//! Each primary reports only writes to its own keys, so tracking is turned on on each of them:
//! `CLIENT ID`, then `CLIENT TRACKING ON REDIRECT <that id> BCAST PREFIX ...`, then `SUBSCRIBE
//! __redis__:invalidate` on the same connection, which receives the invalidations (RESP2, as
//! every other connection of the backend). A primary is *registered* once all three succeeded.
//!
//! One task owns the registrations: a reconnect unregisters that server (tracking state lives
//! in the connection) and reports a gap at once; every [`CHECK_EVERY`] it registers what is not
//! registered yet (on a cluster: the current primaries, which it re-reads) and reports a second
//! gap once that succeeded, since what a follower read between the two gaps may rest on writes
//! nobody reported. It also pings every connection each time: a subscribed connection that
//! stalls (half-open) would otherwise go unnoticed while invalidations silently stop.

use std::{collections::HashSet, time::Duration};

use fred::{
    clients::Client,
    interfaces::{ClientInterface, ClientLike, ClusterInterface, EventInterface, PubsubInterface, TrackingInterface},
    prelude::{Builder, Server},
    types::client::Invalidation,
};
use redtail_core::{Bytes, Error, Feed, Message, Result, Subscription, TRACKING_CHANNEL};
use tokio::sync::{broadcast::error::RecvError, watch};

use crate::convert;

/// How often unregistered primaries are registered again, and a cluster's primaries re-read.
const CHECK_EVERY: Duration = Duration::from_secs(1);

/// How many messages (changed keys) a subscription holds before it reports a gap instead.
const BUFFER: usize = 16_384;

/// Starts tracking `prefixes` on a client of its own, built by `builder`; returns once every
/// primary is registered.
pub(crate) async fn track(
    builder: &Builder,
    prefixes: &[&str],
    timeout: Duration,
    stopping: watch::Receiver<bool>,
) -> Result<Subscription> {
    if prefixes.is_empty() {
        return Err(Error::InvalidInput("tracking needs at least one key prefix".to_owned()));
    }
    let client = builder.build().map_err(|e| convert::error(e, timeout))?;
    client.init().await.map_err(|e| convert::error(e, timeout))?;
    let mut tracker = Tracker {
        client: client.clone(),
        prefixes: prefixes.iter().map(|p| (*p).to_owned()).collect(),
        registered: HashSet::new(),
        timeout,
    };
    // Listening before registering: no invalidation or reconnect is missed.
    let (invalidations, reconnects) = (client.invalidation_rx(), client.reconnect_rx());
    if let Err(e) = tracker.register_missing().await {
        let _ = client.quit().await;
        return Err(e);
    }
    let (feed, subscription) = Subscription::channel(BUFFER, Stop(client));
    tokio::spawn(tracker.follow(feed, invalidations, reconnects, stopping));
    Ok(subscription)
}

/// Ends tracking when the subscription is dropped: the connections close.
struct Stop(Client);

impl Drop for Stop {
    fn drop(&mut self) {
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let client = self.0.clone();
            runtime.spawn(async move {
                let _ = client.quit().await;
            });
        }
    }
}

/// The tracking client and which of its servers track the prefixes.
struct Tracker {
    client: Client,
    prefixes: Vec<String>,
    /// Registered primaries; `None` stands for the one server of a standalone or sentinel setup.
    registered: HashSet<Option<Server>>,
    timeout: Duration,
}

impl Tracker {
    /// Forwards invalidations to `feed` until the client quits or the subscription is dropped.
    async fn follow(
        mut self,
        feed: Feed,
        mut invalidations: tokio::sync::broadcast::Receiver<Invalidation>,
        mut reconnects: tokio::sync::broadcast::Receiver<Server>,
        mut stopping: watch::Receiver<bool>,
    ) {
        let mut check = tokio::time::interval(CHECK_EVERY);
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                invalidation = invalidations.recv() => match invalidation {
                    // An invalidation without keys is a flush: every key changed.
                    Ok(invalidation) if invalidation.keys.is_empty() => feed.gap(),
                    Ok(invalidation) => {
                        for key in invalidation.keys {
                            let payload = Bytes::copy_from_slice(key.as_bytes());
                            feed.deliver(Message { channel: TRACKING_CHANNEL.to_owned(), payload });
                        }
                    }
                    Err(RecvError::Lagged(lost)) => {
                        tracing::warn!(lost, "key tracking: invalidations dropped, the follower is too slow");
                        feed.gap();
                    }
                    Err(RecvError::Closed) => break,
                },
                reconnect = reconnects.recv() => {
                    match reconnect {
                        Ok(server) => {
                            self.unregister(&server);
                        }
                        Err(RecvError::Lagged(_)) => self.registered.clear(),
                        Err(RecvError::Closed) => break,
                    }
                    feed.gap();
                    self.register_and_report(&feed).await;
                }
                _ = check.tick() => {
                    crate::redis::ping_or_reconnect(&self.client, self.timeout).await;
                    self.register_and_report(&feed).await;
                }
                () = feed.closed() => break,
                _ = async { stopping.wait_for(|stop| *stop).await.is_ok() } => {
                    let _ = self.client.quit().await;
                    break;
                }
            }
        }
    }

    /// Forgets the registration a reconnect to `server` ended.
    fn unregister(&mut self, server: &Server) {
        if self.client.is_clustered() {
            self.registered.remove(&Some(server.clone()));
        } else {
            self.registered.clear();
        }
    }

    /// Registers what is missing, and reports a gap if anything was.
    async fn register_and_report(&mut self, feed: &Feed) {
        match self.register_missing().await {
            Ok(true) => feed.gap(),
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "key tracking: a primary could not be registered; retrying"),
        }
    }

    /// Registers every primary not registered yet; whether any was.
    async fn register_missing(&mut self) -> Result<bool> {
        let servers = self.servers().await?;
        self.registered.retain(|s| servers.contains(s));
        let mut any = false;
        for server in servers {
            if !self.registered.contains(&server) {
                self.register(server.as_ref()).await?;
                self.registered.insert(server);
                any = true;
            }
        }
        Ok(any)
    }

    /// The primaries to track: re-read on a cluster; the one server elsewhere.
    async fn servers(&self) -> Result<Vec<Option<Server>>> {
        if !self.client.is_clustered() {
            return Ok(vec![None]);
        }
        self.client.sync_cluster().await.map_err(|e| convert::error(e, self.timeout))?;
        let state = self
            .client
            .cached_cluster_state()
            .ok_or_else(|| Error::Backend { source: "the cluster routing table is not known yet".into() })?;
        Ok(state.unique_primary_nodes().into_iter().map(Some).collect())
    }

    /// Turns tracking on on `server`'s connection (the only one when `None`).
    async fn register(&self, server: Option<&Server>) -> Result<()> {
        let error = |e| convert::error(e, self.timeout);
        let client = match server {
            Some(server) => self.client.with_cluster_node(server),
            None => self.client.with_options(&Default::default()),
        };
        let id: i64 = client.client_id().await.map_err(error)?;
        let _: () = client
            .client_tracking("ON", Some(id), self.prefixes.clone(), true, false, false, false)
            .await
            .map_err(error)?;
        client.subscribe(TRACKING_CHANNEL).await.map_err(error)?;
        Ok(())
    }
}
