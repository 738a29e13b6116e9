//! Fan-out: workers claim due rows of the delivery queue, write each post's list copy and
//! hand it to the relay MTA over SMTP. A worker keeps its relay connection open while there
//! is work and pipelines MAIL and RCPT commands. Without VERP one copy goes to many
//! recipients per transaction (the message is identical for all of them); with VERP each
//! recipient gets its own transaction so the envelope sender names them. A 4xx reply or a lost
//! connection is retried with exponential backoff; a 5xx reply is recorded for that recipient.
//! A recipient is marked delivered only after the relay's 250 to DATA, so a crash re-sends
//! at most the transaction in flight.

mod config;
mod grants;
mod modes;
mod outbox;
mod push;
mod relay;
mod worker;

use std::time::Duration;

pub use config::{DeliveryConfig, DnsResolver, KeyServerAccess, TRANSACTIONS_PER_CLAIM};
pub use relay::{RelayConfig, RelayTls};
pub use worker::Deliverer;

/// What became of one recipient in one attempt.
#[derive(Debug, Clone)]
enum Outcome {
    Delivered,
    Deferred(String),
    Failed(String),
}

fn secs(duration: Duration) -> i64 {
    i64::try_from(duration.as_secs()).unwrap_or(i64::MAX)
}
