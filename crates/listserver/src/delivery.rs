//! Fan-out: workers claim due rows of the delivery queue, write each post's list copy and
//! hand it to the relay MTA over SMTP. A worker keeps its relay connection open while there
//! is work and pipelines MAIL and RCPT commands. Without VERP one copy goes to many
//! recipients per transaction (the message is identical for all of them); with VERP each
//! recipient gets its own transaction so the envelope sender names them. A 4xx reply or a lost
//! connection is retried with exponential backoff; a 5xx reply is recorded for that recipient.
//! A recipient is marked delivered only after the relay's 250 to DATA, so a crash re-sends
//! at most the transaction in flight.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hushlist_core::Address;
use hushlist_core::listmail::{ListCopy, ListHeaders, bounce_sender, verp_sender};
use hushlist_store::{ClaimedDelivery, PostRow, Store, StoreError};
use mail_send::SmtpClient;
use smtp_proto::{EXT_PIPELINING, Response};
use tokio::net::TcpStream;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use crate::service::ListServer;

/// Where and how copies are handed over.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    pub host: String,
    pub port: u16,
    /// Name given in EHLO.
    pub helo_name: String,
    /// Limit on connecting and on each reply.
    pub timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct DeliveryConfig {
    pub relay: RelayConfig,
    /// Concurrent workers, each with its own relay connection.
    pub workers: usize,
    /// Recipients per SMTP transaction for a shared copy; also how many deliveries a worker
    /// claims at a time.
    pub max_rcpts_per_transaction: usize,
    /// One transaction per recipient with a VERP envelope sender naming them.
    pub verp: bool,
    /// How long claimed deliveries stay with a worker before others may take them. Must
    /// outlast the slowest transaction (see [`DeliveryConfig::validate`]), or a slow relay
    /// could let a second worker send the same copies.
    pub lease: Duration,
    /// Delay before the first retry; doubled for each later one up to `retry_max`.
    pub retry_first: Duration,
    pub retry_max: Duration,
    /// A post not delivered this long after it arrived is given up for that recipient.
    pub give_up_after: Duration,
    /// How often idle workers look for due retries.
    pub poll_interval: Duration,
    /// Base URL of this list server's HTTP service, for List-Archive.
    pub public_url: Option<String>,
}

impl DeliveryConfig {
    pub fn new(relay: RelayConfig) -> Self {
        DeliveryConfig {
            relay,
            workers: 4,
            max_rcpts_per_transaction: 100,
            verp: false,
            lease: Duration::from_secs(300),
            retry_first: Duration::from_secs(60),
            retry_max: Duration::from_secs(3600),
            give_up_after: Duration::from_secs(5 * 24 * 3600),
            poll_interval: Duration::from_secs(1),
            public_url: None,
        }
    }
}

/// Replies a transaction waits for at most: greeting/EHLO, the pipelined MAIL and RCPTs,
/// 354 to DATA, and the reply to the message.
const WAITS_PER_TRANSACTION: u32 = 4;

impl DeliveryConfig {
    /// Checks that a transaction always ends within the lease it runs under.
    pub fn validate(&self) -> Result<(), String> {
        let slowest = self.relay.timeout * WAITS_PER_TRANSACTION;
        if self.lease <= slowest {
            return Err(format!(
                "the delivery lease ({} s) must exceed {WAITS_PER_TRANSACTION} relay timeouts ({} s), \
                 or a slow relay would get the same copies twice",
                self.lease.as_secs(),
                slowest.as_secs()
            ));
        }
        Ok(())
    }

    /// Seconds a transaction may take at most.
    fn slowest_transaction_secs(&self) -> i64 {
        secs(self.relay.timeout * WAITS_PER_TRANSACTION)
    }
}

/// Counters for /metrics.
#[derive(Debug, Default)]
pub struct DeliveryMetrics {
    pub delivered: AtomicU64,
    pub deferred: AtomicU64,
    pub failed: AtomicU64,
    pub transactions: AtomicU64,
    pub connections: AtomicU64,
}

/// The fan-out workers of one list server process.
pub struct Deliverer {
    store: Store,
    config: Arc<DeliveryConfig>,
    queued: Arc<Notify>,
    metrics: Arc<DeliveryMetrics>,
}

impl Deliverer {
    /// Workers for `server`'s queue; they wake when it accepts a post.
    pub fn new(server: &ListServer, config: DeliveryConfig) -> Self {
        Deliverer {
            store: server.store().clone(),
            config: Arc::new(config),
            queued: server.queued(),
            metrics: server.metrics.delivery.clone(),
        }
    }

    /// Starts the workers; they stop when `shutdown` turns true, after their current batch.
    pub fn spawn(&self, shutdown: watch::Receiver<bool>) -> Vec<JoinHandle<()>> {
        (0..self.config.workers.max(1))
            .map(|id| {
                let worker = Worker {
                    id,
                    store: self.store.clone(),
                    config: self.config.clone(),
                    metrics: self.metrics.clone(),
                    relay: None,
                };
                let queued = self.queued.clone();
                tokio::spawn(worker.run(queued, shutdown.clone()))
            })
            .collect()
    }
}

struct Worker {
    id: usize,
    store: Store,
    config: Arc<DeliveryConfig>,
    metrics: Arc<DeliveryMetrics>,
    relay: Option<Relay>,
}

/// What became of one recipient in one attempt.
#[derive(Debug)]
enum Outcome {
    Delivered,
    Deferred(String),
    Failed(String),
}

impl Worker {
    async fn run(mut self, queued: Arc<Notify>, mut shutdown: watch::Receiver<bool>) {
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

    /// Claims and works one batch; returns whether there was anything to do.
    async fn round(&mut self) -> Result<bool, StoreError> {
        let now = unix_now();
        let lease_until = now + secs(self.config.lease);
        let claimed = self
            .store
            .claim_deliveries(
                now,
                lease_until,
                self.config.max_rcpts_per_transaction.max(1) as i64,
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
            let Some(post) = self.store.post(post_id).await? else {
                for d in &deliveries {
                    self.store
                        .fail_delivery(post_id, &d.recipient, "the post is no longer stored")
                        .await?;
                }
                continue;
            };
            self.deliver_post(&post, &deliveries, lease_until).await?;
        }
        Ok(true)
    }

    async fn deliver_post(
        &mut self,
        post: &PostRow,
        deliveries: &[ClaimedDelivery],
        lease_until: i64,
    ) -> Result<(), StoreError> {
        let prepared = Address::parse(&post.list)
            .map_err(|e| e.to_string())
            .and_then(|list| {
                let headers = ListHeaders {
                    archive_url: self
                        .config
                        .public_url
                        .as_ref()
                        .map(|base| format!("{base}/v1/lists/{list}/archive")),
                    description: None,
                    list,
                };
                let copy = ListCopy::new(&post.message, &headers).map_err(|e| e.to_string())?;
                Ok((copy.shared(&headers), headers.list))
            });
        let (message, list) = match prepared {
            Ok(prepared) => prepared,
            Err(e) => {
                // Accepted posts were parsed at acceptance; failing here is a bug, not a retry.
                tracing::error!(post = post.id, error = %e, "post cannot be prepared for delivery");
                for d in deliveries {
                    self.store
                        .fail_delivery(post.id, &d.recipient, &format!("cannot prepare: {e}"))
                        .await?;
                }
                return Ok(());
            }
        };
        let per_transaction = if self.config.verp {
            1
        } else {
            self.config.max_rcpts_per_transaction.max(1)
        };
        for batch in deliveries.chunks(per_transaction) {
            let recipients: Vec<String> = batch.iter().map(|d| d.recipient.clone()).collect();
            if unix_now() + self.config.slowest_transaction_secs() >= lease_until {
                // Too little of the lease is left to be sure no other worker takes these
                // over mid-transaction: hand them back for whoever claims next.
                self.store
                    .release_deliveries(post.id, &recipients, unix_now())
                    .await?;
                continue;
            }
            let sender = match (self.config.verp, Address::parse(&recipients[0])) {
                (true, Ok(recipient)) => verp_sender(&list, &recipient),
                _ => bounce_sender(&list),
            };
            let outcomes = self.transact(&sender, &recipients, &message).await;
            self.record(post, batch, outcomes).await?;
        }
        Ok(())
    }

    /// One SMTP transaction on the pooled connection; a connection that failed is dropped
    /// and every recipient in the transaction deferred.
    async fn transact(
        &mut self,
        sender: &str,
        recipients: &[String],
        message: &[u8],
    ) -> Vec<Outcome> {
        if self.relay.is_none() {
            match Relay::connect(&self.config.relay).await {
                Ok(relay) => {
                    self.metrics.connections.fetch_add(1, Ordering::Relaxed);
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
        self.metrics.transactions.fetch_add(1, Ordering::Relaxed);
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

    async fn record(
        &self,
        post: &PostRow,
        batch: &[ClaimedDelivery],
        outcomes: Vec<Outcome>,
    ) -> Result<(), StoreError> {
        let now = unix_now();
        let mut delivered = Vec::new();
        for (delivery, outcome) in batch.iter().zip(outcomes) {
            match outcome {
                Outcome::Delivered => delivered.push(delivery.recipient.clone()),
                Outcome::Failed(reply) => {
                    self.metrics.failed.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(post = post.id, recipient = %delivery.recipient, reply = %reply, "delivery failed");
                    self.store
                        .fail_delivery(post.id, &delivery.recipient, &reply)
                        .await?;
                }
                Outcome::Deferred(reason) => {
                    self.metrics.deferred.fetch_add(1, Ordering::Relaxed);
                    if now - post.received_at >= secs(self.config.give_up_after) {
                        let reason = format!(
                            "gave up after {} attempts; last: {reason}",
                            delivery.attempts + 1
                        );
                        self.metrics.failed.fetch_add(1, Ordering::Relaxed);
                        self.store
                            .fail_delivery(post.id, &delivery.recipient, &reason)
                            .await?;
                    } else {
                        let next = now + self.backoff(delivery.attempts);
                        self.store
                            .defer_delivery(post.id, &delivery.recipient, next, &reason)
                            .await?;
                    }
                }
            }
        }
        self.metrics
            .delivered
            .fetch_add(delivered.len() as u64, Ordering::Relaxed);
        self.store.mark_delivered(post.id, &delivered).await
    }

    /// Seconds to wait after `attempts` earlier failures: doubling from `retry_first`.
    fn backoff(&self, attempts: i64) -> i64 {
        let first = secs(self.config.retry_first).max(1);
        let doubled = first.saturating_mul(1i64 << attempts.clamp(0, 30));
        doubled.min(secs(self.config.retry_max).max(first))
    }
}

/// An open SMTP connection to the relay and what it advertised.
struct Relay {
    client: SmtpClient<TcpStream>,
    pipelining: bool,
}

impl Relay {
    async fn connect(config: &RelayConfig) -> Result<Self, mail_send::Error> {
        let address = tokio::time::timeout(
            config.timeout,
            tokio::net::lookup_host((config.host.as_str(), config.port)),
        )
        .await
        .map_err(|_| mail_send::Error::Timeout)??
        .next()
        .ok_or_else(|| {
            mail_send::Error::Io(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("{} has no address", config.host),
            ))
        })?;
        let mut client = SmtpClient::connect(address, config.timeout).await?;
        let greeting = tokio::time::timeout(config.timeout, client.read())
            .await
            .map_err(|_| mail_send::Error::Timeout)??;
        if greeting.code >= 300 {
            return Err(mail_send::Error::UnexpectedReply(greeting));
        }
        let ehlo = client.ehlo(&config.helo_name).await?;
        Ok(Relay {
            pipelining: ehlo.has_capability(EXT_PIPELINING),
            client,
        })
    }

    /// MAIL, the RCPTs (pipelined when offered), then DATA if any recipient was taken.
    /// Returns one outcome per recipient; an error means the connection is unusable.
    async fn send(
        &mut self,
        sender: &str,
        recipients: &[String],
        message: &[u8],
    ) -> Result<Vec<Outcome>, mail_send::Error> {
        let mut commands = Vec::with_capacity(recipients.len() + 1);
        commands.push(format!("MAIL FROM:<{sender}>\r\n"));
        commands.extend(recipients.iter().map(|r| format!("RCPT TO:<{r}>\r\n")));
        let replies = if self.pipelining {
            self.client.cmds(commands.iter()).await?
        } else {
            let mut replies = Vec::with_capacity(commands.len());
            for command in &commands {
                let reply = self.client.cmd(command).await?;
                let refused_sender = replies.is_empty() && reply.code >= 400;
                replies.push(reply);
                if refused_sender {
                    break;
                }
            }
            replies
        };
        let mail_reply = &replies[0];
        if mail_reply.code >= 400 {
            // The relay refused the sender: the same answer for every recipient.
            self.client.rset().await?;
            return Ok(recipients.iter().map(|_| refusal(mail_reply)).collect());
        }
        let mut outcomes: Vec<Outcome> = replies[1..]
            .iter()
            .map(|reply| {
                if reply.code < 300 {
                    Outcome::Delivered
                } else {
                    refusal(reply)
                }
            })
            .collect();
        if !outcomes.iter().any(|o| matches!(o, Outcome::Delivered)) {
            self.client.rset().await?;
            return Ok(outcomes);
        }
        let data_reply = match self.client.data(message).await {
            Ok(reply) => reply,
            Err(mail_send::Error::UnexpectedReply(reply)) => reply,
            Err(e) => return Err(e),
        };
        if data_reply.code >= 300 {
            for outcome in &mut outcomes {
                if matches!(outcome, Outcome::Delivered) {
                    *outcome = refusal(&data_reply);
                }
            }
        }
        Ok(outcomes)
    }

    async fn quit(self) {
        // The relay may already have closed the connection; nothing depends on its answer.
        let _ = self.client.quit().await;
    }
}

fn refusal(reply: &Response<String>) -> Outcome {
    let text = reply_text(reply);
    if reply.code >= 500 {
        Outcome::Failed(text)
    } else {
        Outcome::Deferred(text)
    }
}

/// A reply as the relay gave it, for the queue record.
fn reply_text(reply: &Response<String>) -> String {
    let message = reply.message.replace(['\r', '\n'], " ");
    if reply.esc[0] == 0 {
        format!("{} {}", reply.code, message.trim())
    } else {
        format!(
            "{} {}.{}.{} {}",
            reply.code,
            reply.esc[0],
            reply.esc[1],
            reply.esc[2],
            message.trim()
        )
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

fn secs(duration: Duration) -> i64 {
    i64::try_from(duration.as_secs()).unwrap_or(i64::MAX)
}
