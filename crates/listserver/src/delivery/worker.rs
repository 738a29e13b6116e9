//! The worker loop: each worker claims due deliveries under a lease, groups them by post,
//! hands each post to its delivery mode and records what the relay answered.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use hushlist_remote::Server;
use hushlist_store::{ClaimedDelivery, PostRow, StoreError};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use super::relay::Relay;
use super::{DeliveryConfig, Outcome, TRANSACTIONS_PER_CLAIM, secs};
use crate::dmarc::AuthorDomains;
use crate::metrics::DeliveryMetrics;
use crate::service::{ListServer, unix_now};

/// Per-recipient transactions (VERP, push mode) whose outcomes are recorded together.
const RECORD_EVERY: usize = 50;

/// The fan-out workers of one list server process.
pub struct Deliverer {
    server: Arc<ListServer>,
    config: Arc<DeliveryConfig>,
    metrics: Arc<DeliveryMetrics>,
    key_server: Option<Server>,
    author_domains: Arc<AuthorDomains>,
}

impl Deliverer {
    /// Workers for `server`'s queue; they wake when it accepts a post.
    pub fn new(server: &Arc<ListServer>, config: DeliveryConfig) -> Self {
        let key_server = config
            .key_server
            .as_ref()
            .map(|access| Server::key_server(&access.url).with_timeout(config.relay.timeout));
        Deliverer {
            author_domains: Arc::new(AuthorDomains::new(config.dns_resolver)),
            server: server.clone(),
            metrics: server.metrics.delivery.clone(),
            config: Arc::new(config),
            key_server,
        }
    }

    /// Starts the workers; they stop when `shutdown` turns true, after their current batch.
    pub fn spawn(&self, shutdown: watch::Receiver<bool>) -> Vec<JoinHandle<()>> {
        (0..self.config.workers.max(1))
            .map(|id| {
                let worker = Worker {
                    id,
                    server: self.server.clone(),
                    config: self.config.clone(),
                    metrics: self.metrics.clone(),
                    key_server: self.key_server.clone(),
                    author_domains: self.author_domains.clone(),
                    relay: None,
                };
                let queued = self.server.queued();
                tokio::spawn(worker.run(queued, shutdown.clone()))
            })
            .collect()
    }
}

pub(super) struct Worker {
    pub(super) id: usize,
    pub(super) server: Arc<ListServer>,
    pub(super) config: Arc<DeliveryConfig>,
    pub(super) metrics: Arc<DeliveryMetrics>,
    pub(super) key_server: Option<Server>,
    pub(super) author_domains: Arc<AuthorDomains>,
    relay: Option<Relay>,
}

impl Worker {
    async fn run(mut self, queued: Arc<Notify>, mut shutdown: watch::Receiver<bool>) {
        // The first worker also sends the owners' digests of refused posts that waited.
        let digest_check_every = self
            .server
            .refusal_digest_every()
            .min(Duration::from_secs(60));
        let mut next_digest_check = tokio::time::Instant::now();
        while !*shutdown.borrow() {
            let worked = match self.round().await {
                Ok(worked) => worked,
                Err(e) => {
                    tracing::error!(worker = self.id, error = %e, "delivery queue unavailable");
                    false
                }
            };
            if !worked {
                // Nothing due: let go of the relay and wait for a new post or a retry time.
                if let Some(relay) = self.relay.take() {
                    relay.quit().await;
                }
                if self.id == 0 && tokio::time::Instant::now() >= next_digest_check {
                    next_digest_check = tokio::time::Instant::now() + digest_check_every;
                    if let Err(e) = self.server.send_due_refusal_digests().await {
                        tracing::error!(error = %e, "cannot send the owners' digests of refused posts");
                    }
                }
                tokio::select! {
                    _ = queued.notified() => {}
                    _ = tokio::time::sleep(self.config.poll_interval) => {}
                    _ = shutdown.changed() => {}
                }
            }
        }
        if let Some(relay) = self.relay.take() {
            relay.quit().await;
        }
    }

    /// Sends one message of the outbox and works one batch of deliveries; returns whether
    /// there was anything to do.
    async fn round(&mut self) -> Result<bool, StoreError> {
        let sent_mail = self.send_from_outbox().await?;
        let delivered = self.deliver_batch().await?;
        Ok(sent_mail || delivered)
    }

    /// Claims and works one batch of deliveries; returns whether there was anything to do.
    async fn deliver_batch(&mut self) -> Result<bool, StoreError> {
        let now = unix_now();
        let lease_until = now + secs(self.config.lease);
        let store = self.server.store();
        let claimed = store
            .claim_deliveries(
                now,
                lease_until,
                (self.config.max_rcpts_per_transaction.max(1) * TRANSACTIONS_PER_CLAIM) as i64,
            )
            .await?;
        if claimed.is_empty() {
            return Ok(false);
        }
        let mut by_post: BTreeMap<i64, Vec<ClaimedDelivery>> = BTreeMap::new();
        for delivery in claimed {
            by_post.entry(delivery.post_id).or_default().push(delivery);
        }
        for (post_id, deliveries) in by_post {
            let Some(post) = self.server.store().post(post_id).await? else {
                for d in &deliveries {
                    self.fail(post_id, &d.recipient, "the post is no longer stored")
                        .await?;
                }
                continue;
            };
            self.deliver_post(&post, &deliveries, lease_until).await?;
        }
        Ok(true)
    }

    /// Records the outcomes of per-recipient transactions once [`RECORD_EVERY`] have
    /// gathered: one commit for many, at the price of re-sending at most that many copies
    /// after a crash (the relay had taken them; at-least-once, as in shared transactions).
    pub(super) async fn record_every(
        &self,
        post: &PostRow,
        outcomes: &mut Vec<(&ClaimedDelivery, Outcome)>,
    ) -> Result<(), StoreError> {
        if outcomes.len() < RECORD_EVERY {
            return Ok(());
        }
        self.record(post, std::mem::take(outcomes)).await
    }

    /// Whether a transaction for `batch` can still end within the lease; if not, hands the
    /// deliveries back so that no other worker takes them over mid-transaction.
    pub(super) async fn lease_allows_transaction(
        &self,
        post: &PostRow,
        batch: &[ClaimedDelivery],
        lease_until: i64,
    ) -> Result<bool, StoreError> {
        if unix_now() + self.config.slowest_transaction_secs() < lease_until {
            return Ok(true);
        }
        let recipients: Vec<String> = batch.iter().map(|d| d.recipient.clone()).collect();
        self.server
            .store()
            .release_deliveries(post.id, &recipients, unix_now())
            .await?;
        Ok(false)
    }

    /// One SMTP transaction on the pooled connection; a connection that failed is dropped
    /// and every recipient in the transaction deferred.
    pub(super) async fn transact(
        &mut self,
        sender: &str,
        recipients: &[String],
        message: &[u8],
    ) -> Vec<Outcome> {
        if self.relay.is_none() {
            match Relay::connect(&self.config.relay).await {
                Ok(relay) => {
                    self.metrics.connections.inc();
                    self.relay = Some(relay);
                }
                Err(e) => {
                    let reason = format!(
                        "relay {}:{} unreachable: {e}",
                        self.config.relay.host, self.config.relay.port
                    );
                    tracing::warn!(worker = self.id, error = %reason, "deferring deliveries");
                    return recipients
                        .iter()
                        .map(|_| Outcome::Deferred(reason.clone()))
                        .collect();
                }
            }
        }
        let relay = self.relay.as_mut().expect("connected above");
        self.metrics.transactions.inc();
        match relay.send(sender, recipients, message).await {
            Ok(outcomes) => outcomes,
            Err(e) => {
                self.relay = None;
                let reason = format!("relay connection failed: {e}");
                tracing::warn!(worker = self.id, error = %reason, "deferring deliveries");
                recipients
                    .iter()
                    .map(|_| Outcome::Deferred(reason.clone()))
                    .collect()
            }
        }
    }

    pub(super) async fn record(
        &self,
        post: &PostRow,
        outcomes: Vec<(&ClaimedDelivery, Outcome)>,
    ) -> Result<(), StoreError> {
        let store = self.server.store();
        let now = unix_now();
        let mut delivered = Vec::new();
        let (mut failed, mut deferred) = (0usize, 0usize);
        for (delivery, outcome) in outcomes {
            match outcome {
                Outcome::Delivered => delivered.push(delivery.recipient.clone()),
                Outcome::Failed(reply) => {
                    failed += 1;
                    self.metrics.failed.inc();
                    tracing::info!(post = post.id, recipient = %delivery.recipient, reply = %reply, "delivery failed");
                    self.fail(post.id, &delivery.recipient, &reply).await?;
                }
                Outcome::Deferred(reason) => {
                    deferred += 1;
                    self.metrics.deferred.inc();
                    if now - post.received_at >= secs(self.config.give_up_after) {
                        let reason = format!(
                            "gave up after {} attempts; last: {reason}",
                            delivery.attempts + 1
                        );
                        self.metrics.failed.inc();
                        self.fail(post.id, &delivery.recipient, &reason).await?;
                    } else {
                        let next = now + self.backoff(delivery.attempts);
                        store
                            .defer_delivery(post.id, &delivery.recipient, next, &reason)
                            .await?;
                    }
                }
            }
        }
        tracing::info!(
            list = %post.list,
            queue_id = post.id,
            delivered = delivered.len(),
            failed,
            deferred,
            "relay outcomes"
        );
        self.metrics.delivered.inc_by(delivered.len() as u64);
        let marked = store.mark_delivered(post.id, &delivered).await?;
        self.metrics.queue.delivered(marked);
        Ok(())
    }

    /// Records that a delivery will not be tried again.
    async fn fail(&self, post_id: i64, recipient: &str, reason: &str) -> Result<(), StoreError> {
        if self
            .server
            .store()
            .fail_delivery(post_id, recipient, reason)
            .await?
        {
            self.metrics.queue.failed();
        }
        Ok(())
    }

    /// Seconds to wait after `attempts` earlier failures: doubling from `retry_first`.
    pub(super) fn backoff(&self, attempts: i64) -> i64 {
        let first = secs(self.config.retry_first).max(1);
        let doubled = first.saturating_mul(1i64 << attempts.clamp(0, 30));
        doubled.min(secs(self.config.retry_max).max(first))
    }
}
