//! Fan-out: workers claim due rows of the delivery queue, write each post's list copy and
//! hand it to the relay MTA over SMTP. A worker keeps its relay connection open while there
//! is work and pipelines MAIL and RCPT commands. Without VERP one copy goes to many
//! recipients per transaction (the message is identical for all of them); with VERP each
//! recipient gets its own transaction so the envelope sender names them. A 4xx reply or a lost
//! connection is retried with exponential backoff; a 5xx reply is recorded for that recipient.
//! A recipient is marked delivered only after the relay's 250 to DATA, so a crash re-sends
//! at most the transaction in flight.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hushlist_core::api::endpoints::{
    Endpoint as _, GrantKeys, ReadArchive, Unsubscribe, UnsubscribeToken,
};
use hushlist_core::api::{GrantRequest, Grants};
use hushlist_core::listmail::{Author, ListCopy, ListHeaders, bounce_sender, verp_sender};
use hushlist_core::outer::EncryptedPost;
use hushlist_core::roster::{DeliveryMode, Roster};
use hushlist_core::{Address, Fingerprint, KeyId, Pkesk};
use hushlist_remote::{RemoteError, Server};
use hushlist_store::rosters::RosterStoreError;
use hushlist_store::{ClaimedDelivery, PostRow, StoreError};
use mail_send::SmtpClient;
use smtp_proto::{EXT_PIPELINING, EXT_START_TLS, Response};
use tokio::io::BufStream;
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
    /// When set, the relay must offer STARTTLS and prove its name with a certificate this
    /// connector trusts; nothing is sent in clear.
    pub starttls: Option<RelayTls>,
}

/// How the relay's certificate is checked for STARTTLS.
#[derive(Clone)]
pub struct RelayTls(tokio_rustls::TlsConnector);

impl RelayTls {
    /// Trusts the system's certificate authorities.
    pub fn system_roots() -> Result<Self, String> {
        mail_send::smtp::tls::build_tls_connector(false).map(RelayTls)
    }

    /// Trusts only the certificate authorities in a PEM file (a private CA for the relay).
    pub fn from_ca_file(path: &std::path::Path) -> Result<Self, String> {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject as _;
        let mut roots = rustls::RootCertStore::empty();
        let certs = CertificateDer::pem_file_iter(path)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|e| format!("cannot read CA certificates from {}: {e}", path.display()))?;
        for cert in certs {
            roots
                .add(cert)
                .map_err(|e| format!("bad CA certificate in {}: {e}", path.display()))?;
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
        Ok(RelayTls(tokio_rustls::TlsConnector::from(Arc::new(config))))
    }
}

impl std::fmt::Debug for RelayTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RelayTls")
    }
}

/// The relay connection's stream: TCP, or TLS over TCP after STARTTLS.
trait RelayStream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + Sync {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + Sync> RelayStream for T {}

#[derive(Debug, Clone)]
pub struct DeliveryConfig {
    pub relay: RelayConfig,
    /// Concurrent workers, each with its own relay connection.
    pub workers: usize,
    /// Recipients per SMTP transaction for a shared copy; a worker claims
    /// [`TRANSACTIONS_PER_CLAIM`] times as many deliveries at a time.
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
    /// The key server that grants push-mode lists their members' PKESKs.
    pub key_server: Option<KeyServerAccess>,
    /// How often each list's roster is compared with the key server's (when `key_server`
    /// is set); owners are told of a difference that outlasts one check.
    pub roster_check_every: Duration,
}

/// Where the key server is and the token it gave this list server for grants.
#[derive(Clone)]
pub struct KeyServerAccess {
    pub url: String,
    pub grants_token: String,
}

impl std::fmt::Debug for KeyServerAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The token is a secret: never in logs.
        f.debug_struct("KeyServerAccess")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
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
            key_server: None,
            roster_check_every: Duration::from_secs(600),
        }
    }
}

/// Full transactions' worth of deliveries a worker claims at once: one claim (a write to
/// the queue) then serves several transactions on the worker's connection.
pub const TRANSACTIONS_PER_CLAIM: usize = 4;

/// Members a push-mode grants call asks the key server for at most, whatever the claim
/// size (the key server refuses calls of more than 10,000 by default).
const GRANTS_PER_CALL: usize = 1000;

/// Per-recipient transactions (VERP, push mode) whose outcomes are recorded together.
const RECORD_EVERY: usize = 50;

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
                 or a slow relay would get the same copies twice; raise the lease \
                 (--lease-secs) or lower the relay timeout (--relay-timeout-secs)",
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
    server: Arc<ListServer>,
    config: Arc<DeliveryConfig>,
    metrics: Arc<DeliveryMetrics>,
    key_server: Option<Server>,
}

impl Deliverer {
    /// Workers for `server`'s queue; they wake when it accepts a post.
    pub fn new(server: &Arc<ListServer>, config: DeliveryConfig) -> Self {
        let key_server = config
            .key_server
            .as_ref()
            .map(|access| Server::key_server(&access.url).with_timeout(config.relay.timeout));
        Deliverer {
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
                    relay: None,
                };
                let queued = self.server.queued();
                tokio::spawn(worker.run(queued, shutdown.clone()))
            })
            .collect()
    }
}

struct Worker {
    id: usize,
    server: Arc<ListServer>,
    config: Arc<DeliveryConfig>,
    metrics: Arc<DeliveryMetrics>,
    key_server: Option<Server>,
    relay: Option<Relay>,
}

/// What became of one recipient in one attempt.
#[derive(Debug, Clone)]
enum Outcome {
    Delivered,
    Deferred(String),
    Failed(String),
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

    /// The list server's own mail (notices, probes), one message a round so that a claim
    /// never outlasts its lease.
    async fn send_from_outbox(&mut self) -> Result<bool, StoreError> {
        let now = unix_now();
        let store = self.server.store().clone();
        let claimed = store
            .claim_outbox(now, now + secs(self.config.lease), 1)
            .await?;
        for message in &claimed {
            let outcome = self
                .transact(
                    &message.mail_from,
                    std::slice::from_ref(&message.recipient),
                    &message.message,
                )
                .await
                .pop()
                .expect("one outcome per recipient");
            match outcome {
                Outcome::Delivered => store.outbox_sent(message.id).await?,
                Outcome::Failed(reply) => {
                    tracing::warn!(recipient = %message.recipient, reply = %reply, "the relay refused a notice");
                    store
                        .outbox_attempt_failed(message.id, None, &reply)
                        .await?;
                }
                Outcome::Deferred(reason) => {
                    let next = (now - message.created_at < secs(self.config.give_up_after))
                        .then(|| now + self.backoff(message.attempts));
                    store
                        .outbox_attempt_failed(message.id, next, &reason)
                        .await?;
                }
            }
        }
        Ok(!claimed.is_empty())
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
                    self.server
                        .store()
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
        let list = match Address::parse(&post.list) {
            Ok(list) => list,
            Err(e) => return self.unpreparable(post, deliveries, e.to_string()).await,
        };
        let roster = match self.server.rosters().get(&list).await {
            Ok(roster) => roster,
            Err(RosterStoreError::Store(e)) => return Err(e),
            Err(e) => {
                let reason = format!("the list's roster is unavailable: {e}");
                let outcomes = deliveries
                    .iter()
                    .map(|d| (d, Outcome::Deferred(reason.clone())))
                    .collect();
                return self.record(post, outcomes).await;
            }
        };
        let headers = ListHeaders {
            archive_url: self
                .config
                .public_url
                .as_ref()
                .map(|base| format!("{base}{}", ReadArchive::path(&list))),
            description: None,
            list,
        };
        // The copy's From name and Reply-To come from the roster, not from the post.
        let copy = match Author::of_post(&post.message, &roster)
            .and_then(|author| ListCopy::new(&post.message, &headers, &author))
        {
            Ok(copy) => copy,
            Err(e) => return self.unpreparable(post, deliveries, e.to_string()).await,
        };
        let list = headers.list.clone();
        if roster.policy().delivery == DeliveryMode::Push {
            for members in deliveries.chunks(GRANTS_PER_CALL) {
                self.deliver_pushed(post, &roster, &copy, &headers, members, lease_until)
                    .await?;
            }
            return Ok(());
        }
        if self.config.verp {
            let mut outcomes = Vec::new();
            for delivery in deliveries {
                let batch = std::slice::from_ref(delivery);
                if !self
                    .lease_allows_transaction(post, batch, lease_until)
                    .await?
                {
                    continue;
                }
                let (sender, message) = self.copy_for_one(&copy, &headers, &delivery.recipient);
                let outcome = self
                    .transact(&sender, std::slice::from_ref(&delivery.recipient), &message)
                    .await
                    .pop()
                    .expect("one outcome per recipient");
                outcomes.push((delivery, outcome));
                self.record_every(post, &mut outcomes).await?;
            }
            return self.record(post, outcomes).await;
        }
        let message = copy.shared(&headers);
        for batch in deliveries.chunks(self.config.max_rcpts_per_transaction.max(1)) {
            if !self
                .lease_allows_transaction(post, batch, lease_until)
                .await?
            {
                continue;
            }
            let recipients: Vec<String> = batch.iter().map(|d| d.recipient.clone()).collect();
            let outcomes = self
                .transact(&bounce_sender(&list), &recipients, &message)
                .await;
            self.record(post, batch.iter().zip(outcomes).collect())
                .await?;
        }
        Ok(())
    }

    /// Fails every delivery of a post that cannot be made into a copy. Accepted posts were
    /// parsed at acceptance, so this is a bug, not something a retry mends.
    async fn unpreparable(
        &self,
        post: &PostRow,
        deliveries: &[ClaimedDelivery],
        error: String,
    ) -> Result<(), StoreError> {
        tracing::error!(post = post.id, %error, "post cannot be prepared for delivery");
        let reason = format!("cannot prepare: {error}");
        let outcomes = deliveries
            .iter()
            .map(|d| (d, Outcome::Failed(reason.clone())))
            .collect();
        self.record(post, outcomes).await
    }

    /// A copy for one recipient: a VERP envelope sender naming them and, when this list
    /// server has a public URL and an unsubscribe key, their one-click unsubscribe link.
    fn copy_for_one(
        &self,
        copy: &ListCopy,
        headers: &ListHeaders,
        recipient: &str,
    ) -> (String, Vec<u8>) {
        let Ok(member) = Address::parse(recipient) else {
            return (bounce_sender(&headers.list), copy.shared(headers));
        };
        let link = self
            .config
            .public_url
            .as_ref()
            .zip(self.server.unsubscribe_key())
            .map(|(base, key)| {
                let token = UnsubscribeToken(key.token(&headers.list, &member));
                format!(
                    "{}{}",
                    base.trim_end_matches('/'),
                    Unsubscribe::path(&token)
                )
            });
        let message = match link {
            Some(link) => copy.for_one(headers, &link),
            None => copy.shared(headers),
        };
        (verp_sender(&headers.list, &member), message)
    }

    /// Push mode: asks the key server for one PKESK per recipient and sends each member a
    /// copy of their own, spliced so that any OpenPGP client opens it with their key.
    async fn deliver_pushed(
        &mut self,
        post: &PostRow,
        roster: &Roster,
        copy: &ListCopy,
        headers: &ListHeaders,
        deliveries: &[ClaimedDelivery],
        lease_until: i64,
    ) -> Result<(), StoreError> {
        let list = &headers.list;
        let mut outcomes: Vec<(&ClaimedDelivery, Outcome)> = Vec::new();
        let mut wanted: Vec<(&ClaimedDelivery, Fingerprint)> = Vec::new();
        for delivery in deliveries {
            let member = Address::parse(&delivery.recipient)
                .ok()
                .and_then(|address| roster.member(&address));
            match member {
                Some(member) => wanted.push((delivery, member.cert.fingerprint().clone())),
                None => outcomes.push((
                    delivery,
                    Outcome::Failed("no longer a member of the list".into()),
                )),
            }
        }
        let grants = match self.request_grants(list, &post.key_id, &wanted).await {
            Ok(grants) => grants,
            Err(outcome) => {
                outcomes.extend(wanted.iter().map(|(d, _)| (*d, outcome.clone())));
                return self.record(post, outcomes).await;
            }
        };
        let mut pkesks: HashMap<Fingerprint, Result<Pkesk, String>> = grants
            .granted
            .into_iter()
            .map(|g| {
                let pkesk = Pkesk::from_bytes(&g.pkesk)
                    .map_err(|e| format!("the key server sent a malformed PKESK: {e}"));
                (g.fingerprint, pkesk)
            })
            .collect();
        pkesks.extend(grants.refused.into_iter().map(|r| {
            (
                r.fingerprint,
                Err(format!("the key server refused the key: {}", r.reason)),
            )
        }));
        self.record(post, std::mem::take(&mut outcomes)).await?;
        for (delivery, fingerprint) in wanted {
            let batch = std::slice::from_ref(delivery);
            let outcome = match pkesks.remove(&fingerprint) {
                Some(Ok(pkesk)) => {
                    if !self
                        .lease_allows_transaction(post, batch, lease_until)
                        .await?
                    {
                        continue;
                    }
                    let (sender, message) = self.copy_for_one(copy, headers, &delivery.recipient);
                    match EncryptedPost::parse(&message) {
                        Ok(parsed) => {
                            let spliced = parsed.splice(&message, &[pkesk]);
                            let recipients = std::slice::from_ref(&delivery.recipient);
                            self.transact(&sender, recipients, &spliced)
                                .await
                                .pop()
                                .expect("one outcome per recipient")
                        }
                        Err(e) => Outcome::Failed(format!("cannot prepare: {e}")),
                    }
                }
                Some(Err(reason)) => Outcome::Failed(reason),
                None => Outcome::Deferred("the key server did not answer for this member".into()),
            };
            outcomes.push((delivery, outcome));
            self.record_every(post, &mut outcomes).await?;
        }
        self.record(post, outcomes).await
    }

    /// Records the outcomes of per-recipient transactions once [`RECORD_EVERY`] have
    /// gathered: one commit for many, at the price of re-sending at most that many copies
    /// after a crash (the relay had taken them; at-least-once, as in shared transactions).
    async fn record_every(
        &self,
        post: &PostRow,
        outcomes: &mut Vec<(&ClaimedDelivery, Outcome)>,
    ) -> Result<(), StoreError> {
        if outcomes.len() < RECORD_EVERY {
            return Ok(());
        }
        self.record(post, std::mem::take(outcomes)).await
    }

    /// One grants call to the key server; on failure, the outcome for every recipient.
    async fn request_grants(
        &self,
        list: &Address,
        key_id: &str,
        wanted: &[(&ClaimedDelivery, Fingerprint)],
    ) -> Result<Grants, Outcome> {
        let (Some(access), Some(key_server)) = (&self.config.key_server, &self.key_server) else {
            tracing::error!(%list, "push-mode list but no key server configured");
            return Err(Outcome::Deferred(
                "push mode needs the key server's URL and grants token in the list server's configuration".into(),
            ));
        };
        let key_id: KeyId = key_id
            .parse()
            .map_err(|e| Outcome::Deferred(format!("the post's key id is malformed: {e}")))?;
        let request = GrantRequest {
            recipients: wanted.iter().map(|(_, f)| f.clone()).collect(),
        };
        key_server
            .call::<GrantKeys>(
                &(list.clone(), key_id),
                &request,
                Some(&access.grants_token),
            )
            .await
            .map_err(|e| match e {
                // The key was revoked or expired: no one will be able to read this post.
                RemoteError::Refused { status: 410, .. } => Outcome::Failed(e.to_string()),
                other => Outcome::Deferred(other.to_string()),
            })
    }

    /// Whether a transaction for `batch` can still end within the lease; if not, hands the
    /// deliveries back so that no other worker takes them over mid-transaction.
    async fn lease_allows_transaction(
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
                    self.metrics.failed.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(post = post.id, recipient = %delivery.recipient, reply = %reply, "delivery failed");
                    store
                        .fail_delivery(post.id, &delivery.recipient, &reply)
                        .await?;
                }
                Outcome::Deferred(reason) => {
                    deferred += 1;
                    self.metrics.deferred.fetch_add(1, Ordering::Relaxed);
                    if now - post.received_at >= secs(self.config.give_up_after) {
                        let reason = format!(
                            "gave up after {} attempts; last: {reason}",
                            delivery.attempts + 1
                        );
                        self.metrics.failed.fetch_add(1, Ordering::Relaxed);
                        store
                            .fail_delivery(post.id, &delivery.recipient, &reason)
                            .await?;
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
        self.metrics
            .delivered
            .fetch_add(delivered.len() as u64, Ordering::Relaxed);
        store.mark_delivered(post.id, &delivered).await
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
    client: SmtpClient<Box<dyn RelayStream>>,
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
        // A transaction ends in small writes (the message's last bytes and the final dot)
        // followed by a wait for the reply; with Nagle's algorithm each of them waited for the
        // relay's delayed ACK, about 40 ms a transaction.
        client.stream.set_nodelay(true)?;
        let greeting = tokio::time::timeout(config.timeout, client.read())
            .await
            .map_err(|_| mail_send::Error::Timeout)??;
        if greeting.code >= 300 {
            return Err(mail_send::Error::UnexpectedReply(greeting));
        }
        let ehlo = client.ehlo(&config.helo_name).await?;
        let Some(RelayTls(connector)) = &config.starttls else {
            return Ok(Relay {
                pipelining: ehlo.has_capability(EXT_PIPELINING),
                client: SmtpClient {
                    stream: Box::new(BufStream::new(client.stream)),
                    timeout: client.timeout,
                },
            });
        };
        if !ehlo.has_capability(EXT_START_TLS) {
            return Err(mail_send::Error::MissingStartTls);
        }
        let tls = client.start_tls(connector, &config.host).await?;
        let mut client: SmtpClient<Box<dyn RelayStream>> = SmtpClient {
            stream: Box::new(BufStream::new(tls.stream)),
            timeout: tls.timeout,
        };
        // RFC 3207: what the server said before TLS no longer counts; ask again.
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
