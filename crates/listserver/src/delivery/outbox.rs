//! The list server's own mail (notices, probes, digests) goes out through the workers'
//! relay connections, one message a round.

use hushlist_store::StoreError;

use super::worker::Worker;
use super::{Outcome, secs};
use crate::service::unix_now;

impl Worker {
    /// The list server's own mail (notices, probes), one message a round so that a claim
    /// never outlasts its lease.
    pub(super) async fn send_from_outbox(&mut self) -> Result<bool, StoreError> {
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
}
