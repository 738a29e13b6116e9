//! The list server's `/metrics`: counters kept where the events happen, encoded by
//! `prometheus-client` (OpenMetrics text). A scrape runs no query over a whole table: the
//! delivered and failed parts of the queue gauge are counted from the store once, at start,
//! and then follow this process's own outcomes; the pending part is read at each scrape
//! through the claim-order index, so it costs the backlog rather than every delivery ever
//! made, and every instance sharing one store shows the same backlog. (With several
//! instances, each one's delivered and failed figures are the store's at its start plus its
//! own outcomes since.)

use std::sync::Arc;

use hushlist_store::{DeliveryCounts, ListStore, StoreError};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// The media type of the exposition `encode` writes.
pub const OPENMETRICS_TEXT: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Counters of the delivery workers.
#[derive(Debug, Default)]
pub struct DeliveryMetrics {
    pub delivered: Counter,
    pub deferred: Counter,
    pub failed: Counter,
    pub transactions: Counter,
    pub connections: Counter,
    /// Deliveries in each state, for `hushlist_listserver_queue`.
    pub queue: QueueGauge,
}

/// `hushlist_listserver_queue{state}`: deliveries by state.
#[derive(Debug, Default)]
pub struct QueueGauge(Family<[(&'static str, &'static str); 1], Gauge>);

impl QueueGauge {
    fn state(&self, state: &'static str) -> Gauge {
        self.0.get_or_create(&[("state", state)]).clone()
    }

    /// Deliveries this process moved from pending to delivered.
    pub fn delivered(&self, n: u64) {
        self.state("delivered")
            .inc_by(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// A delivery this process moved from pending to failed.
    pub fn failed(&self) {
        self.state("failed").inc();
    }
}

/// Everything the list server's `/metrics` shows.
#[derive(Debug)]
pub struct ListMetrics {
    pub posts_accepted: Counter,
    pub posts_refused: Counter,
    pub roster_ops: Counter,
    pub delivery: Arc<DeliveryMetrics>,
    /// Mirrors the roster cache's count at each scrape (the cache keeps it).
    roster_ops_verified: Counter,
    registry: Registry,
}

impl Default for ListMetrics {
    fn default() -> Self {
        let (posts_accepted, posts_refused, roster_ops, roster_ops_verified) = Default::default();
        let delivery = Arc::new(DeliveryMetrics::default());
        let mut registry = Registry::with_prefix("hushlist_listserver");
        let counters: [(&str, &str, &Counter); 9] = [
            (
                "posts_accepted",
                "Posts accepted over SMTP",
                &posts_accepted,
            ),
            (
                "posts_refused",
                "Posts refused at end of DATA",
                &posts_refused,
            ),
            ("roster_ops", "Roster ops accepted", &roster_ops),
            ("delivered", "Copies the relay took", &delivery.delivered),
            (
                "deferred",
                "Delivery attempts deferred (4xx or relay unreachable)",
                &delivery.deferred,
            ),
            (
                "failed",
                "Deliveries failed for good (5xx or given up)",
                &delivery.failed,
            ),
            (
                "relay_transactions",
                "SMTP transactions with the relay",
                &delivery.transactions,
            ),
            (
                "relay_connections",
                "Connections opened to the relay",
                &delivery.connections,
            ),
            (
                "roster_ops_verified",
                "Roster ops read from the store and verified (each list's whole log once after a start, then new ops)",
                &roster_ops_verified,
            ),
        ];
        for (name, help, counter) in counters {
            registry.register(name, help, counter.clone());
        }
        for state in ["pending", "delivered", "failed"] {
            delivery.queue.state(state);
        }
        registry.register("queue", "Deliveries by state", delivery.queue.0.clone());
        ListMetrics {
            posts_accepted,
            posts_refused,
            roster_ops,
            delivery,
            roster_ops_verified,
            registry,
        }
    }
}

impl ListMetrics {
    /// Counts the delivered and failed deliveries already in `store`; once, at start.
    pub async fn count_queue(&self, store: &ListStore) -> Result<(), StoreError> {
        let DeliveryCounts {
            delivered, failed, ..
        } = store.delivery_counts().await?;
        let queue = &self.delivery.queue;
        queue.state("delivered").set(delivered);
        queue.state("failed").set(failed);
        Ok(())
    }

    /// The exposition, with the pending deliveries and the roster ops verified read now.
    pub async fn encode(
        &self,
        store: &ListStore,
        roster_ops_verified: u64,
    ) -> Result<String, StoreError> {
        self.delivery
            .queue
            .state("pending")
            .set(store.count_pending_deliveries().await?);
        self.roster_ops_verified
            .inner()
            .store(roster_ops_verified, std::sync::atomic::Ordering::Relaxed);
        let mut text = String::new();
        encode(&mut text, &self.registry).expect("writing to a String cannot fail");
        Ok(text)
    }
}
