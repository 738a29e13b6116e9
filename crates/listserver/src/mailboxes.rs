//! Mail to a list's own mailboxes: bounces (`list-bounces`, VERP `list-bounces+user=host`),
//! returned probes (`list-probe+TOKEN`) and requests to stop receiving the list
//! (`list-leave`), and confirmations of join requests (`list-join+TOKEN`, see `joining`).
//! None of them changes who may read: delivery is suspended, and the owners
//! are told so that they can sign a removal (`hushlist list remove`) if that is what is meant.
//!
//! A member's bounces add up to a score (see `hushlist_core::bounce`); at the threshold a
//! probe goes out with a random token in its envelope sender, and only a bounce of that probe
//! suspends delivery. So a forged bounce, which anyone can send, cannot suspend anyone.

use hushlist_core::Address;
use hushlist_core::bounce::{BounceReading, BounceScore, FailedRecipient, Severity, read_bounce};
use hushlist_core::listmail::{
    ListMailbox, ListNotice, author, bounce_sender, leave_address, probe_sender,
};
use hushlist_core::roster::{Role, Roster};
use hushlist_store::StoreError;
use hushlist_store::membership::OutboxMessage;
use hushlist_store::rosters::RosterStoreError;
use rand::Rng as _;
use rand::distributions::Alphanumeric;

use crate::service::{ListServer, unix_now};

/// Why mail to a list mailbox could not be taken now (the sender retries).
#[derive(Debug, thiserror::Error)]
pub enum MailboxError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Roster(#[from] RosterStoreError),
    #[error(transparent)]
    Confirm(hushlist_http::ApiError),
}

impl From<MailboxError> for hushlist_http::ApiError {
    fn from(e: MailboxError) -> Self {
        match e {
            MailboxError::Store(e) => e.into(),
            MailboxError::Roster(e) => e.into(),
            MailboxError::Confirm(e) => e,
        }
    }
}

/// Times a bounce is recounted when another instance counts one for the same member at once.
const COUNT_ATTEMPTS: usize = 4;

impl ListServer {
    /// Takes mail sent to one of `list`'s mailboxes.
    pub async fn take_mailbox_mail(
        &self,
        list: &Address,
        mailbox: &ListMailbox,
        message: &[u8],
    ) -> Result<(), MailboxError> {
        let roster = self.rosters().get(list).await?;
        match mailbox {
            ListMailbox::Bounces(verp) => self.take_bounce(&roster, verp.as_ref(), message).await,
            ListMailbox::Probe(token) => self.take_probe_bounce(&roster, token, message).await,
            ListMailbox::Leave => self.take_leave(&roster, message).await,
            ListMailbox::Join(token) => {
                // Any mail to the address confirms; what it says is not read. A stale token
                // is not worth a bounce that could reach whoever the mail claims to be from.
                match self.confirm_join(list, token).await {
                    Ok(_) => Ok(()),
                    Err(refusal) if refusal.status.is_client_error() => {
                        tracing::info!(%list, reason = %refusal, "mail to a join confirmation address confirmed nothing");
                        Ok(())
                    }
                    Err(failure) => Err(MailboxError::Confirm(failure)),
                }
            }
        }
    }

    async fn take_bounce(
        &self,
        roster: &Roster,
        verp: Option<&Address>,
        message: &[u8],
    ) -> Result<(), MailboxError> {
        let list = roster.list();
        let failed = match read_bounce(message) {
            BounceReading::Failed(failed) => failed,
            BounceReading::NotAFailure(what) => {
                tracing::info!(%list, what, "mail to the bounce address is not a failure");
                return Ok(());
            }
        };
        // With VERP the address says whom the bounce is about, whatever the report names.
        let about: Vec<(Address, Severity, Option<String>)> = match verp {
            Some(member) => {
                let severity = if failed.iter().any(|f| f.severity == Severity::Hard) {
                    Severity::Hard
                } else {
                    Severity::Soft
                };
                vec![(member.clone(), severity, diagnostic(&failed))]
            }
            None => failed
                .iter()
                .filter_map(|f| {
                    let address = f.address.clone()?;
                    Some((address, f.severity, f.diagnostic.clone()))
                })
                .collect(),
        };
        for (address, severity, diagnostic) in about {
            if roster.member(&address).is_none() {
                tracing::info!(%list, %address, "a bounce about someone not on the list");
                continue;
            }
            self.count_bounce(roster, &address, severity, diagnostic.as_deref())
                .await?;
        }
        Ok(())
    }

    /// Counts one bounce for `member`; at the threshold, sends a probe.
    async fn count_bounce(
        &self,
        roster: &Roster,
        member: &Address,
        severity: Severity,
        diagnostic: Option<&str>,
    ) -> Result<(), MailboxError> {
        let list = roster.list();
        let store = self.store();
        let policy = self.bounce_policy();
        let now = unix_now();
        for _ in 0..COUNT_ATTEMPTS {
            let record = store.bounce_record(list.as_str(), member.as_str()).await?;
            let previous = record.as_ref().map(|r| BounceScore {
                score: r.score,
                last_counted_at: r.last_counted_at,
            });
            let Some(score) = policy.count(previous, severity, now) else {
                tracing::info!(%list, %member, "bounce not counted: one was counted recently");
                return Ok(());
            };
            let stored = store
                .put_bounce_score(
                    list.as_str(),
                    member.as_str(),
                    score.score,
                    now,
                    record.as_ref().map(|r| r.last_counted_at),
                )
                .await?;
            if !stored {
                continue;
            }
            tracing::info!(%list, %member, score = score.score, ?severity, diagnostic, "bounce counted");
            if policy.calls_for_probe(score) {
                self.send_probe(roster, member, now).await?;
            }
            return Ok(());
        }
        tracing::warn!(%list, %member, "bounce not counted: the score kept changing under it");
        Ok(())
    }

    async fn send_probe(
        &self,
        roster: &Roster,
        member: &Address,
        now: i64,
    ) -> Result<(), MailboxError> {
        let list = roster.list();
        let token = random_token();
        let body = format!(
            "This is a probe from the {list} mailing list.\n\n\
             Mail from the list to you, {member}, has been coming back undelivered. You need\n\
             not do anything: if this message reached you, delivery simply continues. If it\n\
             comes back too, delivery to you is suspended and the list's owners are told.\n"
        );
        let message = ListNotice {
            list,
            to: member,
            subject: "probe: is this address still reachable?",
            body: &body,
            date: now,
            unique: &format!("probe.{token}"),
        }
        .to_message();
        let probe = OutboxMessage {
            mail_from: probe_sender(list, &token),
            recipient: member.to_string(),
            message,
        };
        let sent = self
            .store()
            .send_probe(
                list.as_str(),
                member.as_str(),
                &token,
                now,
                now - self.bounce_policy().probe_valid_secs,
                &probe,
            )
            .await?;
        if sent {
            tracing::info!(%list, %member, "bounce probe queued");
            self.queued().notify_waiters();
        }
        Ok(())
    }

    async fn take_probe_bounce(
        &self,
        roster: &Roster,
        token: &str,
        message: &[u8],
    ) -> Result<(), MailboxError> {
        let list = roster.list();
        let Some(probe) = self.store().probe(token).await? else {
            tracing::info!(%list, "a bounce of an unknown or settled probe");
            return Ok(());
        };
        let now = unix_now();
        if probe.list != list.as_str()
            || now - probe.sent_at > self.bounce_policy().probe_valid_secs
        {
            tracing::info!(%list, address = %probe.address, "a bounce of an expired probe");
            return Ok(());
        }
        let failed = match read_bounce(message) {
            BounceReading::Failed(failed) => failed,
            BounceReading::NotAFailure(what) => {
                tracing::info!(%list, what, "mail to a probe address is not a failure");
                return Ok(());
            }
        };
        let Ok(member) = Address::parse(&probe.address) else {
            return Ok(());
        };
        let why = diagnostic(&failed).unwrap_or_else(|| "no reason given".into());
        let reason = format!("bouncing: the probe came back ({why})");
        let body = format!(
            "Delivery of {list} to {member} is suspended: mail to that address kept coming\n\
             back, and so did a probe sent to check it.\n\n\
             The last report said: {why}\n\n\
             {member} can still read every post they could read before; only delivery has\n\
             stopped. To remove them from the list, sign the removal:\n\n    \
             hushlist list remove {list} {member}\n\n\
             To deliver to them again once their mailbox works, an owner or the member runs:\n\n    \
             hushlist delivery resume {list} {member}\n"
        );
        let notices = self.owner_notices(
            roster,
            &format!("delivery to {member} suspended (bouncing)"),
            &body,
            now,
        );
        self.suspend_with_notices(list, &member, &reason, now, &notices)
            .await
    }

    /// A mail to `list-leave`: delivery to its author stops at once. The author is told as
    /// well as the owners, so a forged request is noticed and undone by the member.
    async fn take_leave(&self, roster: &Roster, message: &[u8]) -> Result<(), MailboxError> {
        let list = roster.list();
        let Some(author) = author(message) else {
            tracing::info!(%list, "a leave request without a readable From address");
            return Ok(());
        };
        let Some(member) = roster.member(&author) else {
            // Told nothing: whether an address is on a list is not for strangers to learn.
            tracing::info!(%list, %author, "a leave request from someone not on the list");
            return Ok(());
        };
        let member = member.address.clone();
        let now = unix_now();
        let mut notices = self.owner_notices(
            roster,
            &format!("{member} left (delivery suspended)"),
            &format!(
                "{member} asked to stop receiving {list} by mail to {}.\n\n\
                 Delivery to them is suspended; they can still read the posts they could read\n\
                 before. To remove them from the list, sign the removal:\n\n    \
                 hushlist list remove {list} {member}\n",
                leave_address(list)
            ),
            now,
        );
        notices.push(notice(
            roster,
            &member,
            "you will no longer receive this list",
            &format!(
                "A request to stop delivering {list} to {member} arrived at {}, so you\n\
                 will receive no more posts from it. The owners have been told.\n\n\
                 If you did not ask for this, or change your mind, run:\n\n    \
                 hushlist delivery resume {list}\n",
                leave_address(list)
            ),
            now,
        ));
        self.suspend_with_notices(list, &member, "asked to leave by mail", now, &notices)
            .await
    }

    /// Suspends delivery and queues the notices, once.
    pub(crate) async fn suspend_with_notices(
        &self,
        list: &Address,
        member: &Address,
        reason: &str,
        now: i64,
        notices: &[OutboxMessage],
    ) -> Result<(), MailboxError> {
        let suspended = self
            .store()
            .suspend(list.as_str(), member.as_str(), reason, now, notices)
            .await?;
        if suspended {
            tracing::info!(%list, %member, reason, "delivery suspended");
            self.queued().notify_waiters();
        } else {
            tracing::info!(%list, %member, reason, "delivery already suspended");
        }
        Ok(())
    }

    /// One notice to `to`.
    pub(crate) fn notice_to(
        &self,
        roster: &Roster,
        to: &Address,
        subject: &str,
        body: &str,
        now: i64,
    ) -> OutboxMessage {
        notice(roster, to, subject, body, now)
    }

    /// One notice to each owner of the list.
    pub(crate) fn owner_notices(
        &self,
        roster: &Roster,
        subject: &str,
        body: &str,
        now: i64,
    ) -> Vec<OutboxMessage> {
        roster
            .members()
            .filter(|m| m.role == Role::Owner)
            .map(|owner| notice(roster, &owner.address, subject, body, now))
            .collect()
    }
}

fn notice(roster: &Roster, to: &Address, subject: &str, body: &str, now: i64) -> OutboxMessage {
    let list = roster.list();
    OutboxMessage {
        mail_from: bounce_sender(list),
        recipient: to.to_string(),
        message: ListNotice {
            list,
            to,
            subject,
            body,
            date: now,
            unique: &format!("notice.{}", random_token()),
        }
        .to_message(),
    }
}

/// The first diagnostic a report gives, or its status.
fn diagnostic(failed: &[FailedRecipient]) -> Option<String> {
    failed
        .iter()
        .find_map(|f| f.diagnostic.clone().or_else(|| f.status.clone()))
}

/// 24 random letters and digits (143 bits): what makes a probe's address unguessable.
fn random_token() -> String {
    rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(24)
        .map(char::from)
        .collect()
}
