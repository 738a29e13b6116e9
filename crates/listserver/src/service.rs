//! The list server's acceptance path: a post to one or more lists is checked against each
//! list's verified roster and written to the store before the SMTP reply says 250.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hushlist_core::Address;
use hushlist_core::api::endpoints::{ReadArchive, SwitchDelivery, Token};
use hushlist_core::api::{ArchivePage, ArchivedPost, DeliveryStatus};
use hushlist_core::bounce::BouncePolicy;
use hushlist_core::listmail::{HELD_REPLY, ListMailbox, UnsubscribeKey};
use hushlist_core::roster::{Admission, Role, Roster};
use hushlist_http::endpoints::Signed;
use hushlist_http::requests::RequestVerifier;
use hushlist_http::rosters::RosterHost;
use hushlist_http::{ApiError, check_token};
use hushlist_store::membership::RefusedPost;
use hushlist_store::rosters::RosterCache;
use hushlist_store::{ListStore, PostRow, Store, StoreError};
use sha2::{Digest as _, Sha256};
use tokio::sync::Notify;

use crate::metrics::ListMetrics;
use crate::smtp::{PostSink, SinkError};
use crate::{Rejection, check_key_server, check_post, parse_post};

pub struct ListServer {
    store: ListStore,
    rosters: RosterCache,
    queued: Arc<Notify>,
    admin_token: String,
    key_server_url: Option<String>,
    unsubscribe_key: Option<UnsubscribeKey>,
    bounce_policy: BouncePolicy,
    refusal_digest_every: Duration,
    verifier: RequestVerifier,
    pub metrics: ListMetrics,
}

/// Owners of a list are told about refused posts at most this often: the first refusal at
/// once, later ones together in the next digest.
pub const DEFAULT_REFUSAL_DIGEST_EVERY: Duration = Duration::from_secs(3600);

/// Senders a refusal digest names one by one; the rest are counted.
const DIGEST_LINES: usize = 50;

/// Most posts one archive request returns.
pub const MAX_ARCHIVE_PAGE: u32 = 100;

impl ListServer {
    pub fn new(store: ListStore) -> Self {
        ListServer {
            rosters: RosterCache::new(Store::clone(&store)),
            store,
            queued: Arc::new(Notify::new()),
            admin_token: String::new(),
            key_server_url: None,
            unsubscribe_key: None,
            bounce_policy: BouncePolicy::default(),
            refusal_digest_every: DEFAULT_REFUSAL_DIGEST_EVERY,
            // Per signer: bursts of 100 archive pages, then 10 a second.
            verifier: RequestVerifier::new(10.0, 100.0),
            metrics: ListMetrics::default(),
        }
    }

    /// Sets the operator token that creating a list over HTTP needs (none: lists cannot be
    /// created over HTTP).
    pub fn with_admin_token(mut self, token: String) -> Self {
        self.admin_token = token;
        self
    }

    /// Sets the key server whose URL every post must name.
    pub fn with_key_server(mut self, url: String) -> Self {
        self.key_server_url = Some(url);
        self
    }

    /// Sets the secret of one-click unsubscribe links; without one, copies carry none.
    pub fn with_unsubscribe_key(mut self, key: UnsubscribeKey) -> Self {
        self.unsubscribe_key = Some(key);
        self
    }

    /// Sets when bounces add up to a probe and a suspension.
    pub fn with_bounce_policy(mut self, policy: BouncePolicy) -> Self {
        self.bounce_policy = policy;
        self
    }

    /// Sets how often owners may be told about refused posts at most.
    pub fn with_refusal_digest_every(mut self, every: Duration) -> Self {
        self.refusal_digest_every = every;
        self
    }

    pub fn refusal_digest_every(&self) -> Duration {
        self.refusal_digest_every
    }

    pub fn bounce_policy(&self) -> &BouncePolicy {
        &self.bounce_policy
    }

    pub fn unsubscribe_key(&self) -> Option<&UnsubscribeKey> {
        self.unsubscribe_key.as_ref()
    }

    /// Honours a one-click unsubscribe link (RFC 8058): delivery to the member it names stops
    /// at once. No owner needs to sign for that, since reading rights do not change.
    pub async fn unsubscribe(&self, token: &str) -> Result<DeliveryStatus, ApiError> {
        let (list, member) = self
            .unsubscribe_key
            .as_ref()
            .and_then(|key| key.verify(token))
            .ok_or_else(|| {
                ApiError::new(
                    axum::http::StatusCode::NOT_FOUND,
                    "unknown_link",
                    "this unsubscribe link was not made by this list server",
                )
            })?;
        let roster = self.rosters.get(&list).await?;
        let now = unix_now();
        let notices = self.owner_notices(
            &roster,
            &format!("{member} unsubscribed (delivery suspended)"),
            &format!(
                "{member} used the one-click unsubscribe link in a post from {list}.\n\n\
                 Delivery to them is suspended; they can still read the posts they could read\n\
                 before. To remove them from the list, sign the removal:\n\n    \
                 hushlist list remove {list} {member}\n"
            ),
            now,
        );
        self.suspend_with_notices(
            &list,
            &member,
            "unsubscribed with a one-click link",
            now,
            &notices,
        )
        .await?;
        Ok(DeliveryStatus {
            list,
            address: member,
            suspended: true,
        })
    }

    /// A page of the list's archive for a current member: the ciphertext of each post as it
    /// was posted. Keys stay with the key server, which decides what the member may read.
    pub async fn archive(&self, request: &Signed<ReadArchive>) -> Result<ArchivePage, ApiError> {
        let (list, roster) = (request.list(), &request.roster);
        let query = request.body()?;
        let limit = query.limit.clamp(1, MAX_ARCHIVE_PAGE);
        let rows = self
            .store
            .posts(list.as_str(), query.after, i64::from(limit))
            .await?;
        let next_after = (rows.len() == limit as usize)
            .then(|| rows.last().map(|p| p.id))
            .flatten();
        // Only what the policy lets this member read (the key server decides again at each
        // key request): a member who joined later does not see earlier posts listed unless
        // the policy lets new members read old posts. A page may hold fewer than asked.
        let readable = |post: &PostRow| {
            post.roster_seq
                .and_then(|seq| u64::try_from(seq).ok())
                .is_none_or(|seq| roster.may_read(request.signer(), seq).is_ok())
        };
        Ok(ArchivePage {
            list: list.clone(),
            next_after,
            posts: rows
                .into_iter()
                .filter(readable)
                .map(|p| ArchivedPost {
                    id: p.id,
                    received_at: u64::try_from(p.received_at).unwrap_or(0),
                    key_id: p.key_id,
                    message_id: p.message_id,
                    message: p.message,
                })
                .collect(),
        })
    }

    /// Suspends or resumes delivery to a member, asked by an owner or by the member. Only
    /// future posts are affected, and reading rights never are.
    pub async fn switch_delivery(
        &self,
        request: &Signed<SwitchDelivery>,
    ) -> Result<DeliveryStatus, ApiError> {
        let (list, roster) = (request.list(), &request.roster);
        let switch = request.body()?;
        let signer = roster.member_by_fingerprint(request.signer());
        let allowed = signer.is_some_and(|m| m.role == Role::Owner || m.address == switch.address);
        if !allowed {
            return Err(ApiError::forbidden(
                "not_owner",
                format!(
                    "only an owner of {list} or {} may change delivery to {}",
                    switch.address, switch.address
                ),
            ));
        }
        if roster.member(&switch.address).is_none() {
            return Err(ApiError::new(
                axum::http::StatusCode::NOT_FOUND,
                "unknown_member",
                format!("{} is not a member of {list}", switch.address),
            ));
        }
        if switch.suspended {
            let reason = format!("suspended by {}", request.signer());
            self.store
                .suspend(
                    list.as_str(),
                    switch.address.as_str(),
                    &reason,
                    unix_now(),
                    &[],
                )
                .await?;
        } else {
            self.store
                .resume(list.as_str(), switch.address.as_str())
                .await?;
        }
        tracing::info!(%list, address = %switch.address, suspended = switch.suspended, "delivery switched");
        Ok(DeliveryStatus {
            list: list.clone(),
            address: switch.address,
            suspended: switch.suspended,
        })
    }

    /// Signalled whenever a post is queued, for the delivery workers.
    pub fn queued(&self) -> Arc<Notify> {
        self.queued.clone()
    }

    pub fn store(&self) -> &ListStore {
        &self.store
    }

    pub fn rosters(&self) -> &RosterCache {
        &self.rosters
    }
}

fn temporary(e: impl std::fmt::Display) -> SinkError {
    tracing::error!(error = %e, "temporary failure while accepting mail");
    SinkError::Temporary("storage is unavailable; try again later".into())
}

impl PostSink for ListServer {
    async fn takes_mail_for(&self, address: &Address) -> Result<bool, SinkError> {
        if self.rosters.exists(address).await.map_err(temporary)? {
            return Ok(true);
        }
        match ListMailbox::parse(address) {
            Some((list, _)) => self.rosters.exists(&list).await.map_err(temporary),
            None => Ok(false),
        }
    }

    /// Posts to lists are checked and stored first (so a refused post takes nothing); then
    /// mail to list mailboxes (bounces, probes, leave) is acted on. Either is durable before
    /// the 250.
    async fn accept(
        &self,
        mail_from: Option<&Address>,
        recipients: &[Address],
        message: Vec<u8>,
    ) -> Result<String, SinkError> {
        let mut lists = Vec::new();
        let mut mailboxes = Vec::new();
        for recipient in recipients {
            if self.rosters.exists(recipient).await.map_err(temporary)? {
                lists.push(recipient.clone());
            } else if let Some(mailbox) = ListMailbox::parse(recipient) {
                mailboxes.push(mailbox);
            }
        }
        let queued = if lists.is_empty() {
            None
        } else {
            Some(self.accept_post(mail_from, &lists, &message).await?)
        };
        for (list, mailbox) in &mailboxes {
            self.take_mailbox_mail(list, mailbox, &message)
                .await
                .map_err(temporary)?;
        }
        Ok(match queued {
            Some(ids) => format!("Queued as {ids}"),
            None => "Taken".to_owned(),
        })
    }
}

impl ListServer {
    /// Checks the post against every addressed list before storing it for any, so a post
    /// is either taken for all its lists or refused. Each stored post carries one pending
    /// delivery per member of the roster it was accepted under, in the same transaction.
    async fn accept_post(
        &self,
        mail_from: Option<&Address>,
        lists: &[Address],
        message: &[u8],
    ) -> Result<String, SinkError> {
        let received_at = unix_now();
        let digest = Sha256::digest(message).to_vec();
        let now = u64::try_from(received_at).unwrap_or(0);
        // The form is the same for every list, so it is read once; the proof and the
        // poster's role are checked against each list's roster.
        let parsed = parse_post(message).and_then(|post| match &self.key_server_url {
            Some(expected) => check_key_server(&post, expected).map(|()| post),
            None => Ok(post),
        });
        let post = match parsed {
            Ok(post) => post,
            Err(rejection) => {
                let (code, status) = rejection.smtp_status();
                tracing::info!(?lists, code, status, reason = %rejection, "post refused");
                self.metrics.posts_refused.inc();
                return Err(rejection.into());
            }
        };
        let mut accepted = Vec::with_capacity(lists.len());
        for list in lists {
            let roster = self.rosters.get(list).await.map_err(temporary)?;
            let admission = match check_post(&post, &roster, now) {
                Ok(admission) => admission,
                Err(rejection) => {
                    let (code, status) = rejection.smtp_status();
                    tracing::info!(%list, code, status, reason = %rejection, "post refused");
                    self.metrics.posts_refused.inc();
                    self.report_refusal(&roster, &rejection).await;
                    return Err(rejection.into());
                }
            };
            let row = PostRow {
                id: 0,
                list: list.to_string(),
                mail_from: mail_from.map(Address::to_string),
                key_id: post.key_id.to_string(),
                message_id: post.message_id.clone(),
                received_at,
                message: message.to_vec(),
                digest: digest.clone(),
                roster_seq: i64::try_from(roster.head_seq()).ok(),
            };
            self.store
                .check_post_key(&row)
                .await
                .map_err(|e| self.refused_or_temporary(e))?;
            accepted.push((list, roster, admission, row));
        }
        let mut ids = Vec::with_capacity(accepted.len());
        let mut held = false;
        for (list, roster, admission, row) in accepted {
            let inserted = match admission {
                Admission::Deliver => {
                    let recipients = self.recipients(&roster).await.map_err(temporary)?;
                    let inserted = self
                        .store
                        .insert_post(&row, &recipients)
                        .await
                        .map_err(|e| self.refused_or_temporary(e))?;
                    tracing::info!(%list, queue_id = inserted.id, key_id = %post.key_id, recipients = recipients.len(), "post accepted");
                    inserted
                }
                Admission::Hold(reason) => {
                    held = true;
                    let notices = self.held_post_notices(&roster, &post.from, &reason, received_at);
                    let inserted = self
                        .store
                        .insert_held_post(&row, &reason, &notices)
                        .await
                        .map_err(|e| self.refused_or_temporary(e))?;
                    tracing::info!(%list, queue_id = inserted.id, key_id = %post.key_id, reason, "post held for an owner");
                    inserted
                }
            };
            if inserted.duplicate {
                // A client retrying after a lost 250, or a replay: the post is already
                // queued, so it is acknowledged again but not delivered twice.
                tracing::info!(list = %list, id = inserted.id, "post already stored");
            }
            ids.push(inserted.id.to_string());
        }
        self.metrics.posts_accepted.inc_by(ids.len() as u64);
        self.queued.notify_waiters();
        let ids = ids.join(",");
        Ok(if held {
            format!("{ids}; {HELD_REPLY}")
        } else {
            ids
        })
    }

    /// A post under a stored key id with other bytes is refused for good (the stored post
    /// stays); any other storage error is temporary.
    fn refused_or_temporary(&self, error: StoreError) -> SinkError {
        match error {
            StoreError::KeyIdTaken { list, key_id } => {
                self.metrics.posts_refused.inc();
                tracing::warn!(%list, %key_id, "refused a different post under a stored key id");
                Rejection::KeyIdTaken { list, key_id }.into()
            }
            other => temporary(other),
        }
    }

    /// Whom a post to `roster`'s list goes to now: every member whose delivery is not
    /// suspended.
    pub(crate) async fn recipients(&self, roster: &Roster) -> Result<Vec<String>, StoreError> {
        let suspended: HashSet<String> = self
            .store
            .suspensions(roster.list().as_str())
            .await?
            .into_iter()
            .map(|s| s.address)
            .collect();
        Ok(roster
            .members()
            .map(|m| m.address.to_string())
            .filter(|address| !suspended.contains(address))
            .collect())
    }

    /// Owners hear of posts refused because of who sent them (a reader, or a member on a
    /// list where only owners post): those are the refusals a roster change might be meant to
    /// fix. Posts refused for their form or their proof are not worth their attention. The
    /// refusal is recorded, and reported at once unless the owners had a digest within the
    /// interval; then it waits for the next one, so refused posts cannot flood their mailboxes.
    async fn report_refusal(&self, roster: &Roster, rejection: &Rejection) {
        let Rejection::NotAllowed(sender, refusal) = rejection else {
            return;
        };
        let list = roster.list();
        let refused = RefusedPost {
            sender: sender.clone(),
            reason: refusal.to_string(),
            refused_at: unix_now(),
        };
        let reported = match self.store.record_refusal(list.as_str(), &refused).await {
            Ok(kept) => {
                if !kept {
                    tracing::warn!(%list, sender = %refused.sender, "too many refused posts wait for the owners' digest; this one is not listed");
                }
                self.send_refusal_digest(roster, refused.refused_at).await
            }
            Err(e) => Err(e),
        };
        if let Err(e) = reported {
            tracing::error!(%list, error = %e, "cannot record a refused post for the owners");
        }
    }

    /// Sends the owners of `roster`'s list a digest of the refusals waiting, if they had none
    /// within the interval.
    async fn send_refusal_digest(&self, roster: &Roster, now: i64) -> Result<usize, StoreError> {
        let not_since = now - i64::try_from(self.refusal_digest_every.as_secs()).unwrap_or(0);
        let reported = self
            .store
            .send_refusal_digest(roster.list().as_str(), now, not_since, |refused| {
                let (subject, body) =
                    refusal_digest(roster.list(), refused, self.refusal_digest_every);
                self.owner_notices(roster, &subject, &body, now)
            })
            .await?;
        if reported > 0 {
            tracing::info!(list = %roster.list(), refused = reported, "owners sent a digest of refused posts");
            self.queued.notify_waiters();
        }
        Ok(reported)
    }

    /// Forgets request nonces past their expiry and rate-limit windows that no longer
    /// matter (the key server does the same in its sweep); otherwise both tables grow with
    /// every signed request for as long as the server runs.
    pub async fn prune_request_records(&self) -> Result<(), StoreError> {
        let now = unix_now();
        self.store.prune_nonces(now).await?;
        self.store
            .prune_request_counts(
                self.verifier
                    .prunable_before(u64::try_from(now).unwrap_or(0)),
            )
            .await?;
        Ok(())
    }

    /// Sends every digest that waited for its interval to pass (the first delivery worker
    /// calls this when idle).
    pub async fn send_due_refusal_digests(&self) -> Result<usize, StoreError> {
        let now = unix_now();
        let not_since = now - i64::try_from(self.refusal_digest_every.as_secs()).unwrap_or(0);
        let mut reported = 0;
        for list in self.store.lists_due_a_refusal_digest(not_since).await? {
            let Ok(list) = Address::parse(&list) else {
                continue;
            };
            match self.rosters.get(&list).await {
                Ok(roster) => reported += self.send_refusal_digest(&roster, now).await?,
                Err(e) => {
                    tracing::error!(%list, error = %e, "cannot read the roster to send the owners' digest of refused posts")
                }
            }
        }
        Ok(reported)
    }
}

/// The owners' notice of refused posts: each sender and reason once, with a count.
fn refusal_digest(list: &Address, refused: &[RefusedPost], every: Duration) -> (String, String) {
    let mut counted: Vec<((&str, &str), usize)> = Vec::new();
    for post in refused {
        let key = (post.sender.as_str(), post.reason.as_str());
        match counted.iter_mut().find(|(k, _)| *k == key) {
            Some((_, n)) => *n += 1,
            None => counted.push((key, 1)),
        }
    }
    let subject = match refused {
        [one] => format!("a post from {} was refused", one.sender),
        _ => format!("{} posts were refused", refused.len()),
    };
    let mut body = format!(
        "{} encrypted post{} to {list} {} refused because of who sent {}:\n\n",
        refused.len(),
        if refused.len() == 1 { "" } else { "s" },
        if refused.len() == 1 { "was" } else { "were" },
        if refused.len() == 1 { "it" } else { "them" },
    );
    for ((sender, reason), n) in counted.iter().take(DIGEST_LINES) {
        let times = if *n == 1 {
            String::new()
        } else {
            format!(" ({n} posts)")
        };
        body.push_str(&format!("    {sender}{times}: {reason}\n"));
    }
    if counted.len() > DIGEST_LINES {
        body.push_str(&format!(
            "    ... and {} more senders\n",
            counted.len() - DIGEST_LINES
        ));
    }
    body.push_str(&format!(
        "\nThe senders were told by their mail servers. If they should be able to post, add\n\
         them (or change their role) with `hushlist list add`. Notices like this one go out at\n\
         most once every {} minutes; refusals in between wait for the next.\n",
        every.as_secs().div_ceil(60)
    ));
    (subject, body)
}

impl RosterHost for ListServer {
    fn rosters(&self) -> &RosterCache {
        &self.rosters
    }

    fn store(&self) -> &Store {
        &self.store
    }

    fn verifier(&self) -> &RequestVerifier {
        &self.verifier
    }

    /// Only the operator reads every roster here; the list server's token is the key
    /// server's business.
    fn check_token(&self, token: Token, presented: Option<&str>) -> Result<(), ApiError> {
        match token {
            Token::Admin | Token::RosterReader => {
                check_token(&self.admin_token, presented, "the operator admin token")
            }
            Token::ListServer => Err(ApiError::unauthorized(
                "the list server takes no list server token",
            )),
        }
    }

    fn roster_op_accepted(&self) {
        self.metrics.roster_ops.inc();
    }
}

pub(crate) fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}
