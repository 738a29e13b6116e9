//! Posts held for an owner's approval, as the list's moderation policy says (signed by the
//! owners in the roster, so both servers apply the same one). A held post stays ciphertext
//! here, without deliveries and out of the archive; its key is at the key server like any
//! other, so owners open it to decide. Released, it goes to the members on the roster at
//! that moment; rejected, it is deleted and its sender told why.

use axum::http::StatusCode;
use hushlist_core::Address;
use hushlist_core::api::endpoints::{HeldPostList, SettleHeld};
use hushlist_core::api::{HeldDecision, HeldPost, HeldPosts};
use hushlist_core::outer::EncryptedPost;
use hushlist_core::roster::Roster;
use hushlist_http::ApiError;
use hushlist_http::endpoints::Signed;
use hushlist_store::membership::OutboxMessage;

use crate::joining::clean_note;
use crate::service::{ListServer, unix_now};

impl ListServer {
    /// The owners' notices that a post from `from` is held, and why.
    pub(crate) fn held_post_notices(
        &self,
        roster: &Roster,
        from: &Address,
        reason: &str,
        now: i64,
    ) -> Vec<OutboxMessage> {
        let list = roster.list();
        self.owner_notices(
            roster,
            &format!("a post from {from} waits for approval"),
            &format!(
                "A post from {from} to {list} is held: {reason}.\n\n\
                 To read the held posts:\n\n    hushlist list held {list}\n    \
                 hushlist list held {list} --open ID\n\n\
                 To send one to the list, or turn it away (its sender is told):\n\n    \
                 hushlist list release {list} ID\n    \
                 hushlist list discard {list} ID --reason \"...\"\n"
            ),
            now,
        )
    }

    /// The posts of `list` held for an owner (owners only).
    pub async fn held_posts(&self, request: &Signed<HeldPostList>) -> Result<HeldPosts, ApiError> {
        let list = request.list();
        let posts = self
            .store()
            .held_posts(list.as_str())
            .await?
            .into_iter()
            .filter_map(|held| {
                let from = EncryptedPost::parse(&held.post.message).ok()?.from;
                Some(HeldPost {
                    id: held.post.id,
                    from,
                    received_at: held.post.received_at.try_into().unwrap_or(0),
                    key_id: held.post.key_id,
                    reason: held.reason,
                    message: held.post.message,
                })
            })
            .collect();
        Ok(HeldPosts {
            list: list.clone(),
            posts,
        })
    }

    /// Releases a held post to the list or deletes it (owners only).
    pub async fn settle_held(
        &self,
        request: &Signed<SettleHeld>,
    ) -> Result<HeldDecision, ApiError> {
        let (list, roster) = (request.list(), &request.roster);
        let decision = request.body()?;
        let not_held = || {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not_held",
                format!(
                    "post {} of {list} is not held (released, discarded, or never held)",
                    decision.id
                ),
            )
        };
        let held = self
            .store()
            .held_posts(list.as_str())
            .await?
            .into_iter()
            .find(|h| h.post.id == decision.id)
            .ok_or_else(not_held)?;
        let now = unix_now();
        let settled = if decision.approved {
            let recipients = self.recipients(roster).await?;
            self.store()
                .release_held_post(list.as_str(), decision.id, &recipients, now, &[])
                .await?
        } else {
            let sender = EncryptedPost::parse(&held.post.message).map(|post| post.from);
            let answer = sender.ok().map(|sender| {
                let reason = decision
                    .reason
                    .as_deref()
                    .map(|r| format!("\nTheir reason: {}\n", clean_note(r)))
                    .unwrap_or_default();
                self.notice_to(
                    roster,
                    &sender,
                    "your post was not accepted",
                    &format!(
                        "Your post to {list} was held for the owners' approval, and an owner\n\
                         turned it away; it was not sent to the list.\n{reason}"
                    ),
                    now,
                )
            });
            self.store()
                .discard_held_post(list.as_str(), decision.id, now, answer.as_slice())
                .await?
        };
        if !settled {
            return Err(not_held());
        }
        tracing::info!(%list, id = decision.id, approved = decision.approved, "held post settled");
        self.queued().notify_waiters();
        Ok(decision)
    }
}
