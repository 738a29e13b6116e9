//! How the workers deliver: the relay, concurrency, batch sizes, lease and retry timing, and
//! the key server for push mode.

use std::net::SocketAddr;
use std::time::Duration;

use super::RelayConfig;
use super::secs;

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
    /// Where authors' DMARC policies are looked up.
    pub dns_resolver: DnsResolver,
}

/// Where the list server asks for authors' DMARC policies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DnsResolver {
    /// The servers in /etc/resolv.conf.
    #[default]
    System,
    /// This DNS server only.
    At(SocketAddr),
    /// No lookups: every copy of a list whose rule is `dmarc` is From the list, as when a
    /// lookup fails (for machines without DNS, and for tests, which stay on loopback).
    Off,
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
            dns_resolver: DnsResolver::System,
        }
    }
}

/// Full transactions' worth of deliveries a worker claims at once: one claim (a write to
/// the queue) then serves several transactions on the worker's connection.
pub const TRANSACTIONS_PER_CLAIM: usize = 4;

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
    pub(super) fn slowest_transaction_secs(&self) -> i64 {
        secs(self.relay.timeout * WAITS_PER_TRANSACTION)
    }
}
