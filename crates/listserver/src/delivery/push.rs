//! Push mode: each member gets a copy of their own, with their PKESK (granted by the key
//! server) spliced in, so any OpenPGP client opens it without asking the key server.

use std::collections::HashMap;

use hushlist_core::listmail::{ListCopy, ListHeaders};
use hushlist_core::outer::EncryptedPost;
use hushlist_core::roster::Roster;
use hushlist_core::{Address, Fingerprint, Pkesk};
use hushlist_store::{ClaimedDelivery, PostRow, StoreError};

use super::Outcome;
use super::worker::Worker;

/// Members a push-mode grants call asks the key server for at most, whatever the claim
/// size (the key server refuses calls of more than 10,000 by default).
pub(super) const GRANTS_PER_CALL: usize = 1000;

impl Worker {
    /// Push mode: asks the key server for one PKESK per recipient and sends each member a
    /// copy of their own, spliced so that any OpenPGP client opens it with their key.
    pub(super) async fn deliver_pushed(
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
}
