//! The process's Prometheus recorder, as the service installs it; the bench installs the same
//! one to measure what metrics cost a service.

use std::time::Duration;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// The process's Prometheus recorder, installed on first use with redtail's duration buckets
/// (histograms rather than summaries: they aggregate across instances and cost less per sample;
/// docs/metrics.md). Call it before building anything that counts: a counter registered before
/// a recorder exists is never exported. `None` if another recorder was installed first.
pub fn prometheus() -> Option<&'static PrometheusHandle> {
    static HANDLE: std::sync::OnceLock<Option<PrometheusHandle>> = std::sync::OnceLock::new();
    HANDLE
        .get_or_init(|| {
            PrometheusBuilder::new().set_buckets(redtail_core::metrics::DURATION_BUCKETS).ok()?.install_recorder().ok()
        })
        .as_ref()
}

/// Drains `recorder`'s histograms every `every`, on a task of its own: the recorder keeps every
/// sample until a scrape or an upkeep drains it, so a service nobody scrapes would grow without
/// bound. Must be called within a Tokio runtime.
pub fn spawn_upkeep(recorder: &'static PrometheusHandle, every: Duration) {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(every);
        loop {
            ticks.tick().await;
            recorder.run_upkeep();
        }
    });
}
