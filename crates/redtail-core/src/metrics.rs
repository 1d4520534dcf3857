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

/// Counters of one name whose label values are known only when they happen, from a bounded set
/// (a command's name and outcome, a policy's name): each series is registered with the facade
/// the first time and its handle kept, so that counting costs a read lock and an atomic add
/// rather than a lookup in the recorder with freshly built labels. Nothing without the feature.
pub struct CounterFamily<K> {
    #[cfg(feature = "metrics")]
    series: Series<K, metrics::Counter>,
    _key: std::marker::PhantomData<fn(K)>,
}

impl<K: std::hash::Hash + Eq + Clone> CounterFamily<K> {
    /// The family `name`, whose series `labels` names from their key.
    #[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
    pub fn new(name: &'static str, labels: fn(&K) -> Vec<Label>) -> Self {
        CounterFamily {
            #[cfg(feature = "metrics")]
            series: Series::new(name, labels),
            _key: std::marker::PhantomData,
        }
    }

    /// Adds `n` to the series of `key`.
    #[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
    #[inline]
    pub fn add(&self, key: &K, n: u64) {
        #[cfg(feature = "metrics")]
        self.series.of(key, |name, labels| metrics::counter!(name, labels)).increment(n);
    }
}

/// Histograms of one name by a bounded label, as [`CounterFamily`] keeps counters; values in
/// seconds.
pub struct HistogramFamily<K> {
    #[cfg(feature = "metrics")]
    series: Series<K, metrics::Histogram>,
    _key: std::marker::PhantomData<fn(K)>,
}

impl<K: std::hash::Hash + Eq + Clone> HistogramFamily<K> {
    /// The family `name`, whose series `labels` names from their key.
    #[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
    pub fn new(name: &'static str, labels: fn(&K) -> Vec<Label>) -> Self {
        HistogramFamily {
            #[cfg(feature = "metrics")]
            series: Series::new(name, labels),
            _key: std::marker::PhantomData,
        }
    }

    /// Records `value` in the series of `key`.
    #[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
    #[inline]
    pub fn record(&self, key: &K, value: Duration) {
        #[cfg(feature = "metrics")]
        self.series.of(key, |name, labels| metrics::histogram!(name, labels)).record(value.as_secs_f64());
    }
}

impl<K> std::fmt::Debug for CounterFamily<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CounterFamily")
    }
}

impl<K> std::fmt::Debug for HistogramFamily<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HistogramFamily")
    }
}

/// The facade handles of one family by key, each registered the first time it is asked for.
/// Looked up on every call, so hashed with foldhash rather than SipHash (keys come from bounded
/// sets the service chooses: no flooding to guard against).
#[cfg(feature = "metrics")]
struct Series<K, H> {
    name: &'static str,
    labels: fn(&K) -> Vec<Label>,
    handles: std::sync::RwLock<std::collections::HashMap<K, H, foldhash::fast::RandomState>>,
}

#[cfg(feature = "metrics")]
impl<K: std::hash::Hash + Eq + Clone, H: Clone> Series<K, H> {
    fn new(name: &'static str, labels: fn(&K) -> Vec<Label>) -> Self {
        Series { name, labels, handles: std::sync::RwLock::default() }
    }

    /// The handle of `key`'s series, which `register` makes from the family's name and the
    /// key's labels the first time.
    fn of(&self, key: &K, register: fn(&'static str, Vec<metrics::Label>) -> H) -> H {
        if let Some(handle) = self.handles.read().unwrap_or_else(|p| p.into_inner()).get(key) {
            return handle.clone();
        }
        let mut handles = self.handles.write().unwrap_or_else(|p| p.into_inner());
        handles.entry(key.clone()).or_insert_with(|| register(self.name, to_labels(&(self.labels)(key)))).clone()
    }
}

/// A histogram registered once, in seconds; nothing without the feature.
#[derive(Debug, Clone)]
pub struct Histogram {
    #[cfg(feature = "metrics")]
    histogram: metrics::Histogram,
}

impl Histogram {
    /// The histogram `name` with `labels`, registered with the recorder of the moment.
    #[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
    pub fn new(name: &'static str, labels: &[Label]) -> Histogram {
        Histogram {
            #[cfg(feature = "metrics")]
            histogram: metrics::histogram!(name, to_labels(labels)),
        }
    }

    /// Records `value`.
    #[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
    #[inline]
    pub fn record(&self, value: Duration) {
        #[cfg(feature = "metrics")]
        self.histogram.record(value.as_secs_f64());
    }
}

/// A gauge registered once; nothing without the feature.
#[derive(Debug, Clone)]
pub struct Gauge {
    #[cfg(feature = "metrics")]
    gauge: metrics::Gauge,
}

impl Gauge {
    /// The gauge `name` with `labels`, registered with the recorder of the moment.
    #[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
    pub fn new(name: &'static str, labels: &[Label]) -> Gauge {
        Gauge {
            #[cfg(feature = "metrics")]
            gauge: metrics::gauge!(name, to_labels(labels)),
        }
    }

    /// Sets it to `value`.
    #[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
    #[inline]
    pub fn set(&self, value: f64) {
        #[cfg(feature = "metrics")]
        self.gauge.set(value);
    }
}

/// Bucket bounds, in seconds, for every redtail duration histogram: from a Redis command's
/// 100 µs to a job that runs for minutes. A recorder that keeps exact buckets rather than
/// quantiles (`metrics-exporter-prometheus`'s `set_buckets(DURATION_BUCKETS)`) costs less per
/// sample and aggregates across instances; docs/metrics.md says what each costs.
pub const DURATION_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    300.0,
];

/// Whether the facade is compiled in (the `metrics` feature), so that callers skip work that
/// only feeds it, such as reading a clock.
pub const ENABLED: bool = cfg!(feature = "metrics");

#[cfg(feature = "metrics")]
fn to_labels(labels: &[Label]) -> Vec<metrics::Label> {
    labels.iter().map(|(k, v)| metrics::Label::new(*k, v.clone())).collect()
}
