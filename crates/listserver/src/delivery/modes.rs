//! The list copy of a post and the two ways it goes to members who fetch its key from the
//! key server: one shared copy to many recipients per transaction, or with VERP one
//! transaction per recipient naming them in the envelope sender. Push mode is in `push`.

use hushlist_core::Address;
use hushlist_core::api::endpoints::{Endpoint as _, ReadArchive, Unsubscribe, UnsubscribeToken};
use hushlist_core::listmail::{
    Author, CopyFrom, ListCopy, ListHeaders, bounce_sender, verp_sender,
};
use hushlist_core::roster::DeliveryMode;
use hushlist_store::rosters::RosterStoreError;
use hushlist_store::{ClaimedDelivery, PostRow, StoreError};

use super::Outcome;
use super::push::GRANTS_PER_CALL;
use super::worker::Worker;

impl Worker {
    pub(super) async fn deliver_post(
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
        let author = match Author::of_post(&post.message, &roster) {
            Ok(author) => author,
            Err(e) => return self.unpreparable(post, deliveries, e.to_string()).await,
        };
        let from = match CopyFrom::by_rule(roster.policy().from_rewrite) {
            Some(from) => from,
            None => CopyFrom::for_author_domain(
                self.author_domains.dmarc_of(author.address.domain()).await,
            ),
        };
        let copy = match ListCopy::new(&post.message, &headers, &author, from) {
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
    pub(super) fn copy_for_one(
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
}
