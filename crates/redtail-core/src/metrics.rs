//! What every crate counts: kept for its own `stats()`, and reported through the [`metrics`]
//! facade when the `metrics` feature is on (a service then exports them with the recorder of its
//! choice, Prometheus or OpenTelemetry). With the feature off nothing here reaches the facade:
//! names and labels are not even built.
//!
//! Names follow Prometheus's conventions (`redtail_<crate>_<what>_<unit>`, counters end in
//! `_total`, durations are in seconds) and are listed in docs/metrics.md. Label values are
//! bounded: names of queues, policies and caches, outcomes; never user or job ids.
//!
//! [`metrics`]: https://docs.rs/metrics

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

/// A label: its name and its value.
pub type Label = (&'static str, String);

/// A counter kept in process (read by a crate's `stats()`) and, with the `metrics` feature,
/// mirrored to the facade under `name` and `labels`, registered once.
#[derive(Debug)]
pub struct Counter {
    value: AtomicU64,
    #[cfg(feature = "metrics")]
    metric: metrics::Counter,
}

impl Counter {
    /// A counter at zero, reported as `name` with `labels`.
    #[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
    pub fn new(name: &'static str, labels: &[Label]) -> Counter {
        Counter {
            value: AtomicU64::new(0),
            #[cfg(feature = "metrics")]
            metric: metrics::counter!(name, to_labels(labels)),
        }
    }

    /// Adds one.
    pub fn bump(&self) {
        self.add(1);
    }

    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.value.fetch_add(n, Ordering::Relaxed);
        #[cfg(feature = "metrics")]
        self.metric.increment(n);
    }

    /// The count so far (this process's, since the counter was made).
    pub fn get(&self) -> u64 {
        self.value.load(Ordering::Relaxed)
    }
}

/// Adds `n` to the facade's counter `name` with `labels`, for counts whose labels are only
/// known when they happen (a rate-limit decision's policy); nothing without the feature.
#[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
#[inline]
pub fn count(name: &'static str, labels: impl FnOnce() -> Vec<Label>, n: u64) {
    #[cfg(feature = "metrics")]
    metrics::counter!(name, to_labels(&labels())).increment(n);
}

/// Records `value` in the facade's histogram `name` with `labels`, in seconds; nothing
/// without the feature.
#[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
#[inline]
pub fn seconds(name: &'static str, labels: impl FnOnce() -> Vec<Label>, value: Duration) {
    #[cfg(feature = "metrics")]
    metrics::histogram!(name, to_labels(&labels())).record(value.as_secs_f64());
}

/// Sets the facade's gauge `name` with `labels` to `value`; nothing without the feature.
#[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
#[inline]
pub fn gauge(name: &'static str, labels: impl FnOnce() -> Vec<Label>, value: f64) {
    #[cfg(feature = "metrics")]
    metrics::gauge!(name, to_labels(&labels())).set(value);
}

/// Whether the facade is compiled in (the `metrics` feature), so that callers skip work that
/// only feeds it, such as reading a clock.
pub const ENABLED: bool = cfg!(feature = "metrics");

#[cfg(feature = "metrics")]
fn to_labels(labels: &[Label]) -> Vec<metrics::Label> {
    labels.iter().map(|(k, v)| metrics::Label::new(*k, v.clone())).collect()
}
