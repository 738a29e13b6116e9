//! The key server's `/metrics`: counters kept where the events happen, encoded by
//! `prometheus-client` (OpenMetrics text). The keys held are counted from the store once, at
//! start, and then follow this process's deposits and destructions, so a scrape runs no
//! query. (With several instances on one store, each one's figure is the store's at its start
//! plus its own deposits and destructions since.)

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// The media type of the exposition `encode` writes.
pub const OPENMETRICS_TEXT: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Everything the key server's `/metrics` shows.
#[derive(Debug)]
pub struct Metrics {
    pub deposits: Counter,
    pub releases: Counter,
    pub refusals: Counter,
    pub grants: Counter,
    pub revocations: Counter,
    pub expirations: Counter,
    pub roster_ops: Counter,
    /// Session keys currently held.
    pub keys_stored: Gauge,
    /// Mirrors the roster cache's count at each scrape (the cache keeps it).
    roster_ops_verified: Counter,
    registry: Registry,
}

impl Default for Metrics {
    fn default() -> Self {
        let (deposits, releases, refusals, grants) = Default::default();
        let (revocations, expirations, roster_ops, roster_ops_verified) = Default::default();
        let keys_stored = Gauge::default();
        let mut registry = Registry::with_prefix("hushlist_keyserver");
        let counters: [(&str, &str, &Counter); 8] = [
            ("deposits", "Session keys deposited", &deposits),
            ("releases", "Keys released to members (pull)", &releases),
            ("grants", "PKESKs granted for push delivery", &grants),
            ("refusals", "Key requests and grants refused", &refusals),
            ("revocations", "Keys destroyed by revocation", &revocations),
            ("expirations", "Keys destroyed at expiry", &expirations),
            ("roster_ops", "Roster ops accepted", &roster_ops),
            (
                "roster_ops_verified",
                "Roster ops read from the store and verified (each list's whole log once after a start, then new ops)",
                &roster_ops_verified,
            ),
        ];
        for (name, help, counter) in counters {
            registry.register(name, help, counter.clone());
        }
        registry.register(
            "keys_stored",
            "Session keys currently held",
            keys_stored.clone(),
        );
        Metrics {
            deposits,
            releases,
            refusals,
            grants,
            revocations,
            expirations,
            roster_ops,
            keys_stored,
            roster_ops_verified,
            registry,
        }
    }
}

impl Metrics {
    /// The exposition, with the roster ops verified as the roster cache counts them now.
    pub fn encode(&self, roster_ops_verified: u64) -> String {
        self.roster_ops_verified
            .inner()
            .store(roster_ops_verified, std::sync::atomic::Ordering::Relaxed);
        let mut text = String::new();
        encode(&mut text, &self.registry).expect("writing to a String cannot fail");
        text
    }
}
