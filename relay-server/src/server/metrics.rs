//! The relay's Prometheus metrics, served as text on `/metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// The label of the auth-failure counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// `AuthError::reason`.
    pub reason: String,
}

/// Every metric the relay exports.
pub struct Metrics {
    registry: Registry,
    /// Open WebSocket connections.
    pub connections: Gauge,
    /// Frames received from clients.
    pub frames_in: Counter,
    /// Frames sent to clients.
    pub frames_out: Counter,
    /// Bytes received from clients.
    pub bytes_in: Counter,
    /// Bytes sent to clients.
    pub bytes_out: Counter,
    /// Document changes made durable (one per document per append).
    pub changes_stored: Counter,
    /// Refused tokens, by reason.
    pub auth_failures: Family<ReasonLabel, Counter>,
    /// Seconds from a `Sync` frame's actions reaching the hub to its acknowledgement.
    pub sync_seconds: Histogram,
    /// Connections refused at a cap, by cap (`total`, `device`, `tenant`).
    pub connections_refused: Family<ReasonLabel, Counter>,
    /// Commits refused because the storage was full.
    pub storage_full: Counter,
    /// Stored documents found not to load (each time one was needed).
    pub corrupt_documents: Counter,
    /// Reads and parses of stored documents that failed: at most one per document a minute
    /// (a document that does not load is not read again before then).
    pub failed_loads: Counter,
}

impl Metrics {
    /// Registers the metrics.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("syncline");
        let metrics = Self {
            connections: Gauge::default(),
            frames_in: Counter::default(),
            frames_out: Counter::default(),
            bytes_in: Counter::default(),
            bytes_out: Counter::default(),
            changes_stored: Counter::default(),
            auth_failures: Family::default(),
            sync_seconds: Histogram::new(exponential_buckets(0.0001, 2.0, 16)),
            connections_refused: Family::default(),
            storage_full: Counter::default(),
            corrupt_documents: Counter::default(),
            failed_loads: Counter::default(),
            registry: Registry::default(),
        };
        registry.register(
            "connections",
            "Open WebSocket connections",
            metrics.connections.clone(),
        );
        registry.register(
            "frames_received",
            "Frames received from clients",
            metrics.frames_in.clone(),
        );
        registry.register(
            "frames_sent",
            "Frames sent to clients",
            metrics.frames_out.clone(),
        );
        registry.register(
            "bytes_received",
            "Bytes received from clients",
            metrics.bytes_in.clone(),
        );
        registry.register(
            "bytes_sent",
            "Bytes sent to clients",
            metrics.bytes_out.clone(),
        );
        registry.register(
            "changes_stored",
            "Document changes made durable",
            metrics.changes_stored.clone(),
        );
        registry.register(
            "auth_failures",
            "Refused tokens, by reason",
            metrics.auth_failures.clone(),
        );
        registry.register(
            "sync_seconds",
            "Time from a Sync frame to its acknowledgement",
            metrics.sync_seconds.clone(),
        );
        registry.register(
            "connections_refused",
            "Connections refused at a cap, by cap",
            metrics.connections_refused.clone(),
        );
        registry.register(
            "storage_full",
            "Commits refused because the storage was full",
            metrics.storage_full.clone(),
        );
        registry.register(
            "corrupt_documents",
            "Stored documents found not to load",
            metrics.corrupt_documents.clone(),
        );
        registry.register(
            "failed_loads",
            "Reads of stored documents that did not load (at most one per document a minute)",
            metrics.failed_loads.clone(),
        );
        Self {
            registry,
            ..metrics
        }
    }

    /// Counts a connection refused at a cap.
    pub fn refused(&self, refused: super::Refused) {
        self.connections_refused
            .get_or_create(&ReasonLabel {
                reason: refused.label().into(),
            })
            .inc();
    }

    /// Counts a refused token under its reason.
    pub fn auth_failed(&self, error: &crate::auth::AuthError) {
        self.auth_failures
            .get_or_create(&ReasonLabel {
                reason: error.reason().into(),
            })
            .inc();
    }

    /// The metrics in the Prometheus text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
