//! The list server's state about members beyond the roster: bounce scores, suspensions and
//! join requests, and its outbox (mail it writes itself: notices and bounce probes). A change
//! and the mail that reports it are written in one transaction, so a notice is never lost to
//! a crash and never sent for a change not made.

use sqlx::Row as _;

use crate::{
    Backend, InsertedPost, ListStore, PostRow, StoreError,
    lists::{insert_deliveries, insert_post_row, post_row},
};

/// A message for the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxMessage {
    pub mail_from: String,
    pub recipient: String,
    pub message: Vec<u8>,
}

/// Refused posts kept per list for the owners' next digest; more are only logged, so a
/// sender repeating refused posts cannot grow the table or the digest without end.
pub const MAX_REFUSALS_WAITING: i64 = 1000;

/// A post refused because of who sent it, waiting for the owners' next digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefusedPost {
    pub sender: String,
    pub reason: String,
    pub refused_at: i64,
}

/// A claimed outbox message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedMessage {
    pub id: i64,
    pub mail_from: String,
    pub recipient: String,
    pub message: Vec<u8>,
    pub attempts: i64,
    pub created_at: i64,
}

/// A member's bounce record on one list.
#[derive(Debug, Clone, PartialEq)]
pub struct BounceRecord {
    pub score: f64,
    pub last_counted_at: i64,
    pub probe_token: Option<String>,
    pub probe_sent_at: Option<i64>,
}

/// The member a probe was sent to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentProbe {
    pub list: String,
    pub address: String,
    pub sent_at: i64,
}

impl ListStore {
    pub async fn bounce_record(
        &self,
        list: &str,
        address: &str,
    ) -> Result<Option<BounceRecord>, StoreError> {
        let row = sqlx::query(
            "SELECT score, last_counted_at, probe_token, probe_sent_at FROM bounce_scores \
             WHERE list = $1 AND address = $2",
        )
        .bind(list)
        .bind(address)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| BounceRecord {
            score: r.get("score"),
            last_counted_at: r.get("last_counted_at"),
            probe_token: r.get("probe_token"),
            probe_sent_at: r.get("probe_sent_at"),
        }))
    }

    /// Sets a member's score, if their record is still as read: `expected_last` is the
    /// `last_counted_at` read before (`None`: there was no record). Returns false when
    /// another bounce was counted meanwhile; the caller reads again and recomputes.
    pub async fn put_bounce_score(
        &self,
        list: &str,
        address: &str,
        score: f64,
        counted_at: i64,
        expected_last: Option<i64>,
    ) -> Result<bool, StoreError> {
        let done = match expected_last {
            None => {
                sqlx::query(
                    "INSERT INTO bounce_scores (list, address, score, last_counted_at) \
                     VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                )
                .bind(list)
                .bind(address)
                .bind(score)
                .bind(counted_at)
                .execute(&self.pool)
                .await?
            }
            Some(expected) => {
                sqlx::query(
                    "UPDATE bounce_scores SET score = $3, last_counted_at = $4 \
                     WHERE list = $1 AND address = $2 AND last_counted_at = $5",
                )
                .bind(list)
                .bind(address)
                .bind(score)
                .bind(counted_at)
                .bind(expected)
                .execute(&self.pool)
                .await?
            }
        };
        Ok(done.rows_affected() == 1)
    }

    /// Records a probe sent to a member and queues it, in one transaction. Returns false,
    /// queueing nothing, when the member has no bounce record or a probe sent after
    /// `unless_probed_since` (another instance sent one meanwhile).
    pub async fn send_probe(
        &self,
        list: &str,
        address: &str,
        token: &str,
        sent_at: i64,
        unless_probed_since: i64,
        probe: &OutboxMessage,
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query(
            "UPDATE bounce_scores SET probe_token = $3, probe_sent_at = $4 \
             WHERE list = $1 AND address = $2 \
             AND (probe_sent_at IS NULL OR probe_sent_at < $5)",
        )
        .bind(list)
        .bind(address)
        .bind(token)
        .bind(sent_at)
        .bind(unless_probed_since)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() != 1 {
            return Ok(false);
        }
        queue(&mut tx, std::slice::from_ref(probe), sent_at).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// The member a probe token was sent to.
    pub async fn probe(&self, token: &str) -> Result<Option<SentProbe>, StoreError> {
        let row = sqlx::query(
            "SELECT list, address, probe_sent_at FROM bounce_scores WHERE probe_token = $1",
        )
        .bind(token)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| SentProbe {
            list: r.get("list"),
            address: r.get("address"),
            sent_at: r.get("probe_sent_at"),
        }))
    }

    /// Stops delivery of `list`'s posts to `address` and queues `notices` about it, in one
    /// transaction; the member's bounce record is cleared, so they start afresh when
    /// resumed. Returns false, queueing nothing, when they were already suspended (the
    /// first suspension and its reason are kept).
    pub async fn suspend(
        &self,
        list: &str,
        address: &str,
        reason: &str,
        since: i64,
        notices: &[OutboxMessage],
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query(
            "INSERT INTO suspensions (list, address, reason, since) VALUES ($1, $2, $3, $4) \
             ON CONFLICT DO NOTHING",
        )
        .bind(list)
        .bind(address)
        .bind(reason)
        .bind(since)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() != 1 {
            return Ok(false);
        }
        sqlx::query("DELETE FROM bounce_scores WHERE list = $1 AND address = $2")
            .bind(list)
            .bind(address)
            .execute(&mut *tx)
            .await?;
        queue(&mut tx, notices, since).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Records a post refused because of who sent it, for the owners' next digest; at most
    /// [`MAX_REFUSALS_WAITING`] wait per list (returns false for one not kept).
    pub async fn record_refusal(
        &self,
        list: &str,
        refused: &RefusedPost,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "INSERT INTO refused_posts (list, sender, reason, refused_at) \
             SELECT $1, $2, $3, $4 \
             WHERE (SELECT COUNT(*) FROM refused_posts WHERE list = $1) < $5",
        )
        .bind(list)
        .bind(&refused.sender)
        .bind(&refused.reason)
        .bind(refused.refused_at)
        .bind(MAX_REFUSALS_WAITING)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Sends `list`'s owners one digest of every refusal waiting, unless they were sent one
    /// after `not_since`: takes the refusals and queues what `digest` writes about them in one
    /// transaction (so instances sending at once send one digest). Returns how many refusals
    /// it reported.
    pub async fn send_refusal_digest(
        &self,
        list: &str,
        now: i64,
        not_since: i64,
        digest: impl FnOnce(&[RefusedPost]) -> Vec<OutboxMessage>,
    ) -> Result<usize, StoreError> {
        let mut tx = self.pool.begin().await?;
        let due = sqlx::query(
            "INSERT INTO refusal_digests (list, last_sent_at) VALUES ($1, $2) \
             ON CONFLICT (list) DO UPDATE SET last_sent_at = excluded.last_sent_at \
             WHERE refusal_digests.last_sent_at <= $3",
        )
        .bind(list)
        .bind(now)
        .bind(not_since)
        .execute(&mut *tx)
        .await?;
        if due.rows_affected() == 0 {
            return Ok(0);
        }
        // Taken by the delete itself: a refusal committed meanwhile by another instance is
        // either taken here or left for the next digest, never deleted unreported.
        let rows = sqlx::query(
            "DELETE FROM refused_posts WHERE list = $1 RETURNING sender, reason, refused_at",
        )
        .bind(list)
        .fetch_all(&mut *tx)
        .await?;
        if rows.is_empty() {
            // Nothing to report: the digest's time is not used up.
            return Ok(0);
        }
        let mut refused: Vec<RefusedPost> = rows
            .iter()
            .map(|r| RefusedPost {
                sender: r.get("sender"),
                reason: r.get("reason"),
                refused_at: r.get("refused_at"),
            })
            .collect();
        refused.sort_by_key(|r| r.refused_at);
        queue(&mut tx, &digest(&refused), now).await?;
        tx.commit().await?;
        Ok(refused.len())
    }

    /// Lists with refusals waiting whose owners were last sent a digest at or before
    /// `not_since`, or never.
    pub async fn lists_due_a_refusal_digest(
        &self,
        not_since: i64,
    ) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query(
            "SELECT DISTINCT r.list FROM refused_posts r \
             LEFT JOIN refusal_digests d ON d.list = r.list \
             WHERE d.last_sent_at IS NULL OR d.last_sent_at <= $1 ORDER BY r.list",
        )
        .bind(not_since)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(|r| r.get("list")).collect())
    }

    /// Queues mail for the relay.
    pub async fn queue_messages(
        &self,
        messages: &[OutboxMessage],
        at: i64,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        queue(&mut tx, messages, at).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Claims up to `limit` due outbox messages, oldest first, until `lease_until` (as
    /// [`ListStore::claim_deliveries`] does for posts).
    pub async fn claim_outbox(
        &self,
        now: i64,
        lease_until: i64,
        limit: i64,
    ) -> Result<Vec<QueuedMessage>, StoreError> {
        let _turn = self.write_turn().await;
        let sql = match self.backend {
            Backend::Sqlite => {
                "UPDATE outbox SET next_attempt_at = $2 WHERE id IN ( \
                     SELECT id FROM outbox WHERE state = 'pending' AND next_attempt_at <= $1 \
                     ORDER BY next_attempt_at, id LIMIT $3) \
                 RETURNING id, mail_from, recipient, message, attempts, created_at"
            }
            Backend::Postgres => {
                "WITH due AS ( \
                     SELECT id FROM outbox WHERE state = 'pending' AND next_attempt_at <= $1 \
                     ORDER BY next_attempt_at, id LIMIT $3 FOR UPDATE SKIP LOCKED) \
                 UPDATE outbox AS o SET next_attempt_at = $2 FROM due WHERE o.id = due.id \
                 RETURNING o.id, o.mail_from, o.recipient, o.message, o.attempts, o.created_at"
            }
        };
        let rows = sqlx::query(sql)
            .bind(now)
            .bind(lease_until)
            .bind(limit)
            .fetch_all(&self.bookkeeping)
            .await?;
        let mut claimed: Vec<QueuedMessage> = rows.iter().map(queued_message).collect();
        claimed.sort_by_key(|m| m.id);
        Ok(claimed)
    }

    /// The relay took the message: it leaves the outbox.
    pub async fn outbox_sent(&self, id: i64) -> Result<(), StoreError> {
        let _turn = self.write_turn().await;
        sqlx::query("DELETE FROM outbox WHERE id = $1")
            .bind(id)
            .execute(&self.bookkeeping)
            .await?;
        Ok(())
    }

    /// A failed attempt: tried again at `next_attempt_at`, or never (`None`: refused for
    /// good or given up), with the error kept for the operator.
    pub async fn outbox_attempt_failed(
        &self,
        id: i64,
        next_attempt_at: Option<i64>,
        error: &str,
    ) -> Result<(), StoreError> {
        let _turn = self.write_turn().await;
        let (state, next) = match next_attempt_at {
            Some(at) => ("pending", at),
            None => ("failed", 0),
        };
        sqlx::query(
            "UPDATE outbox SET state = $2, attempts = attempts + 1, next_attempt_at = $3, \
             last_error = $4 WHERE id = $1",
        )
        .bind(id)
        .bind(state)
        .bind(next)
        .bind(error)
        .execute(&self.bookkeeping)
        .await?;
        Ok(())
    }

    /// Outbox messages not yet sent (pending or failed), for operators and tests.
    pub async fn unsent_outbox(&self) -> Result<Vec<(QueuedMessage, String)>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, mail_from, recipient, message, attempts, created_at, state FROM outbox \
             ORDER BY id",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| (queued_message(r), r.get("state")))
            .collect())
    }
}

fn queued_message(r: &sqlx::any::AnyRow) -> QueuedMessage {
    QueuedMessage {
        id: r.get("id"),
        mail_from: r.get("mail_from"),
        recipient: r.get("recipient"),
        message: r.get("message"),
        attempts: r.get("attempts"),
        created_at: r.get("created_at"),
    }
}

async fn queue(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    messages: &[OutboxMessage],
    at: i64,
) -> Result<(), StoreError> {
    for m in messages {
        sqlx::query(
            "INSERT INTO outbox (mail_from, recipient, message, created_at, next_attempt_at) \
             VALUES ($1, $2, $3, $4, $4)",
        )
        .bind(&m.mail_from)
        .bind(&m.recipient)
        .bind(&m.message)
        .bind(at)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// A request to join a list, as stored: one per list, address and key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinRequestRow {
    pub list: String,
    pub address: String,
    pub fingerprint: String,
    /// The join request exactly as the requester signed it (JSON, certificate included).
    pub request: String,
    pub note: Option<String>,
    /// SHA-256 (hex) of the token in the confirmation mailed to the address.
    pub confirm_token: String,
    /// When the address answered the confirmation; until then the owners do not see it.
    pub confirmed_at: Option<i64>,
    pub requested_at: i64,
    pub expires_at: i64,
}

/// How many join requests may wait at once, so that strangers can fill neither the store nor
/// a mailbox with confirmations.
#[derive(Debug, Clone, Copy)]
pub struct JoinLimits {
    pub per_list: i64,
    pub per_address: i64,
}

/// What filing a join request did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinFiling {
    Filed,
    /// The same address and key already asked; nothing was filed or queued.
    AlreadyPending,
    ListFull,
    AddressFull,
}

const JOIN_COLUMNS: &str = "list, address, fingerprint, request, note, confirm_token, \
                            confirmed_at, requested_at, expires_at";

fn join_request_row(r: &sqlx::any::AnyRow) -> JoinRequestRow {
    JoinRequestRow {
        list: r.get("list"),
        address: r.get("address"),
        fingerprint: r.get("fingerprint"),
        request: r.get("request"),
        note: r.get("note"),
        confirm_token: r.get("confirm_token"),
        confirmed_at: r.get("confirmed_at"),
        requested_at: r.get("requested_at"),
        expires_at: r.get("expires_at"),
    }
}

impl ListStore {
    /// Files a join request and queues `notices` (its confirmation) in one transaction,
    /// unless the same address and key already asked (lapsed requests are dropped first) or
    /// `limits` are reached.
    pub async fn file_join_request(
        &self,
        request: &JoinRequestRow,
        limits: JoinLimits,
        notices: &[OutboxMessage],
    ) -> Result<JoinFiling, StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM join_requests WHERE list = $1 AND expires_at < $2")
            .bind(&request.list)
            .bind(request.requested_at)
            .execute(&mut *tx)
            .await?;
        let count = sqlx::query(
            "SELECT COUNT(*) AS n, \
             COALESCE(SUM(CASE WHEN address = $2 THEN 1 ELSE 0 END), 0) AS same_address, \
             COALESCE(SUM(CASE WHEN address = $2 AND fingerprint = $3 THEN 1 ELSE 0 END), 0) \
             AS same_key FROM join_requests WHERE list = $1",
        )
        .bind(&request.list)
        .bind(&request.address)
        .bind(&request.fingerprint)
        .fetch_one(&mut *tx)
        .await?;
        let (n, same_address, same_key): (i64, i64, i64) = (
            count.get("n"),
            count.get("same_address"),
            count.get("same_key"),
        );
        let filing = if same_key > 0 {
            JoinFiling::AlreadyPending
        } else if n >= limits.per_list {
            JoinFiling::ListFull
        } else if same_address >= limits.per_address {
            JoinFiling::AddressFull
        } else {
            JoinFiling::Filed
        };
        if filing == JoinFiling::Filed {
            sqlx::query(&format!(
                "INSERT INTO join_requests ({JOIN_COLUMNS}) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
            ))
            .bind(&request.list)
            .bind(&request.address)
            .bind(&request.fingerprint)
            .bind(&request.request)
            .bind(&request.note)
            .bind(&request.confirm_token)
            .bind(request.confirmed_at)
            .bind(request.requested_at)
            .bind(request.expires_at)
            .execute(&mut *tx)
            .await?;
            queue(&mut tx, notices, request.requested_at).await?;
        }
        tx.commit().await?;
        Ok(filing)
    }

    /// The unconfirmed, unlapsed join request whose confirmation token hashes to
    /// `confirm_token`.
    pub async fn join_request_to_confirm(
        &self,
        confirm_token: &str,
        now: i64,
    ) -> Result<Option<JoinRequestRow>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {JOIN_COLUMNS} FROM join_requests \
             WHERE confirm_token = $1 AND confirmed_at IS NULL AND expires_at >= $2"
        ))
        .bind(confirm_token)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(join_request_row))
    }

    /// Marks the request with this confirmation token confirmed, to lapse at `expires_at`
    /// now that it waits for the owners, and queues `notices` (to the owners) in the same
    /// transaction. Returns false, queueing nothing, when it was confirmed meanwhile or lapsed.
    pub async fn confirm_join_request(
        &self,
        confirm_token: &str,
        now: i64,
        expires_at: i64,
        notices: &[OutboxMessage],
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query(
            "UPDATE join_requests SET confirmed_at = $2, expires_at = $3 \
             WHERE confirm_token = $1 AND confirmed_at IS NULL AND expires_at >= $2",
        )
        .bind(confirm_token)
        .bind(now)
        .bind(expires_at)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() != 1 {
            return Ok(false);
        }
        queue(&mut tx, notices, now).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// The join requests of `list` not lapsed at `now`, confirmed or not, oldest first.
    pub async fn join_requests(
        &self,
        list: &str,
        now: i64,
    ) -> Result<Vec<JoinRequestRow>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {JOIN_COLUMNS} FROM join_requests WHERE list = $1 AND expires_at >= $2 \
             ORDER BY requested_at, address, fingerprint"
        ))
        .bind(list)
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(join_request_row).collect())
    }

    /// Removes a confirmed join request once an owner decided, queueing `notices` (the
    /// requester's answer) in the same transaction; an approval also drops every other
    /// request for that address, which is then on the roster. Returns false, queueing
    /// nothing, when no such confirmed request was pending.
    pub async fn settle_join_request(
        &self,
        list: &str,
        address: &str,
        fingerprint: &str,
        approved: bool,
        now: i64,
        notices: &[OutboxMessage],
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query(
            "DELETE FROM join_requests WHERE list = $1 AND address = $2 AND fingerprint = $3 \
             AND confirmed_at IS NOT NULL AND expires_at >= $4",
        )
        .bind(list)
        .bind(address)
        .bind(fingerprint)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() != 1 {
            return Ok(false);
        }
        if approved {
            sqlx::query("DELETE FROM join_requests WHERE list = $1 AND address = $2")
                .bind(list)
                .bind(address)
                .execute(&mut *tx)
                .await?;
        }
        queue(&mut tx, notices, now).await?;
        tx.commit().await?;
        Ok(true)
    }
}

/// A post waiting for an owner's approval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldPost {
    pub post: PostRow,
    pub held_at: i64,
    pub reason: String,
}

impl ListStore {
    /// Stores a post without deliveries, held for an owner, and queues `notices` about it,
    /// in one transaction. A post already stored (same list and key id) is returned as a
    /// duplicate and nothing is queued.
    pub async fn insert_held_post(
        &self,
        post: &PostRow,
        reason: &str,
        notices: &[OutboxMessage],
    ) -> Result<InsertedPost, StoreError> {
        let mut tx = self.pool.begin().await?;
        let id = match insert_post_row(&mut tx, post).await? {
            InsertedPost {
                id,
                duplicate: false,
            } => id,
            duplicate => {
                tx.commit().await?;
                return Ok(duplicate);
            }
        };
        sqlx::query(
            "INSERT INTO held_posts (post_id, list, held_at, reason) VALUES ($1, $2, $3, $4)",
        )
        .bind(id)
        .bind(&post.list)
        .bind(post.received_at)
        .bind(reason)
        .execute(&mut *tx)
        .await?;
        queue(&mut tx, notices, post.received_at).await?;
        tx.commit().await?;
        Ok(InsertedPost {
            id,
            duplicate: false,
        })
    }

    /// The posts of `list` waiting for an owner, oldest first.
    pub async fn held_posts(&self, list: &str) -> Result<Vec<HeldPost>, StoreError> {
        let rows = sqlx::query(
            "SELECT p.id, p.list, p.mail_from, p.key_id, p.message_id, p.received_at, p.message, \
             p.digest, p.roster_seq, h.held_at, h.reason \
             FROM held_posts h JOIN posts p ON p.id = h.post_id \
             WHERE h.list = $1 ORDER BY h.post_id",
        )
        .bind(list)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| HeldPost {
                post: post_row(r),
                held_at: r.get("held_at"),
                reason: r.get("reason"),
            })
            .collect())
    }

    /// Releases a held post of `list` to `recipients` (due at `now`) and queues `notices`,
    /// in one transaction. Returns false, changing nothing, when it is not held.
    pub async fn release_held_post(
        &self,
        list: &str,
        id: i64,
        recipients: &[String],
        now: i64,
        notices: &[OutboxMessage],
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query("DELETE FROM held_posts WHERE post_id = $1 AND list = $2")
            .bind(id)
            .bind(list)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() != 1 {
            return Ok(false);
        }
        insert_deliveries(&mut tx, id, recipients, now).await?;
        queue(&mut tx, notices, now).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Deletes a held post of `list` and queues `notices`, in one transaction. Returns
    /// false, changing nothing, when it is not held.
    pub async fn discard_held_post(
        &self,
        list: &str,
        id: i64,
        now: i64,
        notices: &[OutboxMessage],
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query("DELETE FROM held_posts WHERE post_id = $1 AND list = $2")
            .bind(id)
            .bind(list)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() != 1 {
            return Ok(false);
        }
        sqlx::query("DELETE FROM posts WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        queue(&mut tx, notices, now).await?;
        tx.commit().await?;
        Ok(true)
    }
}
