//! Counters for `/metrics`, shared by the acceptance path (`service`) and the delivery
//! workers (`delivery`), so that neither imports the other for them.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

/// Counters of the delivery workers.
#[derive(Debug, Default)]
pub struct DeliveryMetrics {
    pub delivered: AtomicU64,
    pub deferred: AtomicU64,
    pub failed: AtomicU64,
    pub transactions: AtomicU64,
    pub connections: AtomicU64,
}

/// Counters of the list server.
#[derive(Debug, Default)]
pub struct ListMetrics {
    pub posts_accepted: AtomicU64,
    pub posts_refused: AtomicU64,
    pub roster_ops: AtomicU64,
    pub delivery: Arc<DeliveryMetrics>,
}
