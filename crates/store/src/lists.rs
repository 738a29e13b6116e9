//! The list server's store: posts and their delivery queue, suspensions (see also
//! [`crate::membership`] for bounces, the outbox, joins and held posts).

use std::ops::Deref;

use sqlx::Row as _;

use crate::{
    Backend, ClaimedDelivery, DeliveryCounts, DeliveryRow, DeliveryState, InsertedPost, PostRow,
    Role, Store, StoreError, Suspension,
};

/// The list server's store (see the crate's documentation); the shared part through `Deref`.
#[derive(Debug, Clone)]
pub struct ListStore {
    store: Store,
}

impl Deref for ListStore {
    type Target = Store;

    fn deref(&self) -> &Store {
        &self.store
    }
}

impl ListStore {
    /// Opens (creating or migrating) the list server's database at `url`; see [`Store`] for
    /// the URLs. Refuses a database that is, or was, the key server's.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        Ok(ListStore {
            store: Store::open_as(url, Role::ListServer).await?.store,
        })
    }
}
impl ListStore {
    /// Stores a post with one pending delivery per distinct recipient, in one transaction.
    /// A post whose list and key id are already stored is not stored again: the same bytes
    /// are returned as a duplicate of the stored post (no deliveries are added), other bytes
    /// are refused with [`StoreError::KeyIdTaken`].
    pub async fn insert_post(
        &self,
        post: &PostRow,
        recipients: &[String],
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
        insert_deliveries(&mut tx, id, recipients, post.received_at).await?;
        tx.commit().await?;
        Ok(InsertedPost {
            id,
            duplicate: false,
        })
    }

    /// Refuses with [`StoreError::KeyIdTaken`] a post whose list and key id are stored with
    /// other bytes, so that a post to several lists can be checked for all before it is
    /// stored for any. (Storing it checks again, against a post stored meanwhile.)
    pub async fn check_post_key(&self, post: &PostRow) -> Result<(), StoreError> {
        let mut conn = self.pool.acquire().await?;
        match post_under_key(&mut conn, post).await? {
            UnderKey::Free | UnderKey::Same(_) => Ok(()),
            UnderKey::Different => Err(key_id_taken(post)),
        }
    }

    /// The recipients of a post still waiting for delivery.
    pub async fn pending_deliveries(&self, post_id: i64) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query(
            "SELECT recipient FROM deliveries WHERE post_id = $1 AND state = 'pending' ORDER BY recipient",
        )
        .bind(post_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(|r| r.get("recipient")).collect())
    }

    /// Claims up to `limit` pending deliveries due at `now`, oldest post first, by moving
    /// their next attempt to `lease_until`: a worker that dies holding them only delays them
    /// until then, and another worker (in this process or another) picks them up.
    pub async fn claim_deliveries(
        &self,
        now: i64,
        lease_until: i64,
        limit: i64,
    ) -> Result<Vec<ClaimedDelivery>, StoreError> {
        let _turn = self.write_turn().await;
        // SQLite serializes writers, so the UPDATE alone is atomic; it finds the claimed rows
        // by rowid (conditions on the outer UPDATE made it walk every due row of the
        // claim-order index, O(queue) per claim: most of a fan-out's CPU). PostgreSQL runs
        // concurrent claims from many processes: each locks its rows in a CTE (evaluated
        // exactly once, unlike an IN subquery the planner may rescan) and skips rows another
        // claim has locked instead of waiting for them or taking them twice.
        let sql = match self.backend {
            Backend::Sqlite => {
                "UPDATE deliveries SET next_attempt_at = $2 WHERE rowid IN ( \
                     SELECT rowid FROM deliveries \
                     WHERE state = 'pending' AND next_attempt_at <= $1 \
                     ORDER BY next_attempt_at, post_id, recipient LIMIT $3) \
                 RETURNING post_id, recipient, attempts"
            }
            Backend::Postgres => {
                "WITH due AS ( \
                     SELECT post_id, recipient FROM deliveries \
                     WHERE state = 'pending' AND next_attempt_at <= $1 \
                     ORDER BY next_attempt_at, post_id, recipient LIMIT $3 \
                     FOR UPDATE SKIP LOCKED) \
                 UPDATE deliveries AS d SET next_attempt_at = $2 FROM due \
                 WHERE d.post_id = due.post_id AND d.recipient = due.recipient \
                 RETURNING d.post_id, d.recipient, d.attempts"
            }
        };
        let rows = sqlx::query(sql)
            .bind(now)
            .bind(lease_until)
            .bind(limit)
            .fetch_all(&self.bookkeeping)
            .await?;
        let mut claimed: Vec<ClaimedDelivery> = rows
            .iter()
            .map(|r| ClaimedDelivery {
                post_id: r.get("post_id"),
                recipient: r.get("recipient"),
                attempts: r.get("attempts"),
            })
            .collect();
        claimed.sort_by(|a, b| (a.post_id, &a.recipient).cmp(&(b.post_id, &b.recipient)));
        Ok(claimed)
    }

    /// Records that the relay took the post for these recipients; returns how many were
    /// still pending (and so are now delivered).
    pub async fn mark_delivered(
        &self,
        post_id: i64,
        recipients: &[String],
    ) -> Result<u64, StoreError> {
        self.update_pending(
            "state = 'delivered', attempts = attempts + 1, last_error = NULL",
            None,
            post_id,
            recipients,
        )
        .await
    }

    /// Hands claimed deliveries back unattempted, due again at `due_at`.
    pub async fn release_deliveries(
        &self,
        post_id: i64,
        recipients: &[String],
        due_at: i64,
    ) -> Result<(), StoreError> {
        self.update_pending("next_attempt_at = $2", Some(due_at), post_id, recipients)
            .await?;
        Ok(())
    }

    /// Applies `set` to the pending deliveries of `post_id` to `recipients`; `$2` in `set`
    /// is `value`. Returns how many deliveries were pending.
    async fn update_pending(
        &self,
        set: &str,
        value: Option<i64>,
        post_id: i64,
        recipients: &[String],
    ) -> Result<u64, StoreError> {
        let _turn = self.write_turn().await;
        // Recipients per UPDATE: well under SQLite's limit of bound parameters.
        const BATCH: usize = 400;
        let first = if value.is_some() { 3 } else { 2 };
        // Without statistics SQLite would look these rows up by `state` in the claim-order
        // index, walking every pending row; the unary plus leaves it the primary key.
        let pending = match self.backend {
            Backend::Sqlite => "+state = 'pending'",
            Backend::Postgres => "state = 'pending'",
        };
        let mut updated = 0;
        for chunk in recipients.chunks(BATCH) {
            let placeholders: Vec<String> = (0..chunk.len())
                .map(|i| format!("${}", i + first))
                .collect();
            let sql = format!(
                "UPDATE deliveries SET {set} \
                 WHERE post_id = $1 AND {pending} AND recipient IN ({})",
                placeholders.join(", ")
            );
            let mut query = sqlx::query(&sql).bind(post_id);
            if let Some(value) = value {
                query = query.bind(value);
            }
            for recipient in chunk {
                query = query.bind(recipient);
            }
            updated += query.execute(&self.bookkeeping).await?.rows_affected();
        }
        Ok(updated)
    }

    /// Records a failed attempt: the delivery is retried at `next_attempt_at`.
    pub async fn defer_delivery(
        &self,
        post_id: i64,
        recipient: &str,
        next_attempt_at: i64,
        error: &str,
    ) -> Result<(), StoreError> {
        let _turn = self.write_turn().await;
        sqlx::query(
            "UPDATE deliveries SET attempts = attempts + 1, next_attempt_at = $3, last_error = $4 \
             WHERE post_id = $1 AND recipient = $2 AND state = 'pending'",
        )
        .bind(post_id)
        .bind(recipient)
        .bind(next_attempt_at)
        .bind(error)
        .execute(&self.bookkeeping)
        .await?;
        Ok(())
    }

    /// Records that the delivery will not be tried again, and why; returns whether it was
    /// pending (and so is now failed).
    pub async fn fail_delivery(
        &self,
        post_id: i64,
        recipient: &str,
        error: &str,
    ) -> Result<bool, StoreError> {
        let _turn = self.write_turn().await;
        let done = sqlx::query(
            "UPDATE deliveries SET state = 'failed', attempts = attempts + 1, last_error = $3 \
             WHERE post_id = $1 AND recipient = $2 AND state = 'pending'",
        )
        .bind(post_id)
        .bind(recipient)
        .bind(error)
        .execute(&self.bookkeeping)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    pub async fn delivery(
        &self,
        post_id: i64,
        recipient: &str,
    ) -> Result<Option<DeliveryRow>, StoreError> {
        let row = sqlx::query(
            "SELECT state, attempts, next_attempt_at, last_error FROM deliveries \
             WHERE post_id = $1 AND recipient = $2",
        )
        .bind(post_id)
        .bind(recipient)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(DeliveryRow {
                state: DeliveryState::parse(&r.get::<String, _>("state"))?,
                attempts: r.get("attempts"),
                next_attempt_at: r.get("next_attempt_at"),
                last_error: r.get("last_error"),
            })
        })
        .transpose()
    }

    /// How many deliveries wait to be made: a range of the claim-order index, so it costs the
    /// backlog rather than every delivery ever made.
    pub async fn count_pending_deliveries(&self) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM deliveries WHERE state = 'pending'")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.get("n"))
    }

    /// How many deliveries are in each state, over all posts.
    pub async fn delivery_counts(&self) -> Result<DeliveryCounts, StoreError> {
        let rows = sqlx::query("SELECT state, COUNT(*) AS n FROM deliveries GROUP BY state")
            .fetch_all(&self.pool)
            .await?;
        let mut counts = DeliveryCounts::default();
        for row in rows {
            let n: i64 = row.get("n");
            match DeliveryState::parse(&row.get::<String, _>("state"))? {
                DeliveryState::Pending => counts.pending = n,
                DeliveryState::Delivered => counts.delivered = n,
                DeliveryState::Failed => counts.failed = n,
            }
        }
        Ok(counts)
    }

    /// Delivers `list`'s posts to `address` again, with a clean bounce record; returns
    /// whether it was suspended.
    pub async fn resume(&self, list: &str, address: &str) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query("DELETE FROM suspensions WHERE list = $1 AND address = $2")
            .bind(list)
            .bind(address)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM bounce_scores WHERE list = $1 AND address = $2")
            .bind(list)
            .bind(address)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(done.rows_affected() > 0)
    }

    pub async fn suspensions(&self, list: &str) -> Result<Vec<Suspension>, StoreError> {
        let rows = sqlx::query(
            "SELECT address, reason, since FROM suspensions WHERE list = $1 ORDER BY address",
        )
        .bind(list)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| Suspension {
                address: r.get("address"),
                reason: r.get("reason"),
                since: r.get("since"),
            })
            .collect())
    }

    /// One post by id.
    pub async fn post(&self, id: i64) -> Result<Option<PostRow>, StoreError> {
        let row = sqlx::query(
            "SELECT id, list, mail_from, key_id, message_id, received_at, message, digest, roster_seq \
             FROM posts WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(post_row))
    }

    /// Posts of `list` with ids above `after_id`, oldest first, at most `limit`; held posts
    /// are not among them until released.
    pub async fn posts(
        &self,
        list: &str,
        after_id: i64,
        limit: i64,
    ) -> Result<Vec<PostRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, list, mail_from, key_id, message_id, received_at, message, digest, roster_seq \
             FROM posts \
             WHERE list = $1 AND id > $2 \
             AND NOT EXISTS (SELECT 1 FROM held_posts h WHERE h.post_id = posts.id) \
             ORDER BY id LIMIT $3",
        )
        .bind(list)
        .bind(after_id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(post_row).collect())
    }
}

/// Inserts a post unless its list and key id are already stored: then returns that one as a
/// duplicate if it has the same bytes, and refuses it with [`StoreError::KeyIdTaken`] if not.
pub(crate) async fn insert_post_row(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    post: &PostRow,
) -> Result<InsertedPost, StoreError> {
    let inserted = sqlx::query(
        "INSERT INTO posts \
         (list, mail_from, key_id, message_id, received_at, message, digest, roster_seq) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (list, key_id) DO NOTHING RETURNING id",
    )
    .bind(&post.list)
    .bind(&post.mail_from)
    .bind(&post.key_id)
    .bind(&post.message_id)
    .bind(post.received_at)
    .bind(&post.message)
    .bind(&post.digest)
    .bind(post.roster_seq)
    .fetch_optional(&mut **tx)
    .await?;
    if let Some(row) = inserted {
        return Ok(InsertedPost {
            id: row.get("id"),
            duplicate: false,
        });
    }
    match post_under_key(tx, post).await? {
        UnderKey::Same(id) => Ok(InsertedPost {
            id,
            duplicate: true,
        }),
        UnderKey::Different => Err(key_id_taken(post)),
        // The conflicting row went between the two statements (a held post discarded).
        UnderKey::Free => Err(StoreError::Database(sqlx::Error::RowNotFound)),
    }
}

/// What is stored under a post's list and key id.
enum UnderKey {
    Free,
    /// A post with the same bytes, and its id.
    Same(i64),
    Different,
}

/// Compares `post` with the post stored under its list and key id, if any: by digest, or
/// byte for byte for posts stored without one.
async fn post_under_key(
    conn: &mut sqlx::AnyConnection,
    post: &PostRow,
) -> Result<UnderKey, StoreError> {
    let row = sqlx::query("SELECT id, digest FROM posts WHERE list = $1 AND key_id = $2")
        .bind(&post.list)
        .bind(&post.key_id)
        .fetch_optional(&mut *conn)
        .await?;
    let Some(row) = row else {
        return Ok(UnderKey::Free);
    };
    let id: i64 = row.get("id");
    let same = match row.get::<Option<Vec<u8>>, _>("digest") {
        Some(digest) => digest == post.digest,
        None => {
            let stored = sqlx::query("SELECT message FROM posts WHERE id = $1")
                .bind(id)
                .fetch_one(&mut *conn)
                .await?;
            stored.get::<Vec<u8>, _>("message") == post.message
        }
    };
    Ok(if same {
        UnderKey::Same(id)
    } else {
        UnderKey::Different
    })
}

fn key_id_taken(post: &PostRow) -> StoreError {
    StoreError::KeyIdTaken {
        list: post.list.clone(),
        key_id: post.key_id.clone(),
    }
}

/// One pending delivery of post `id` per recipient, due at `due_at`.
pub(crate) async fn insert_deliveries(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    id: i64,
    recipients: &[String],
    due_at: i64,
) -> Result<(), StoreError> {
    // Rows per INSERT statement: well under SQLite's limit of bound parameters.
    const BATCH: usize = 400;
    for chunk in recipients.chunks(BATCH) {
        let values: Vec<String> = (0..chunk.len())
            .map(|i| format!("($1, ${}, $2)", i + 3))
            .collect();
        let sql = format!(
            "INSERT INTO deliveries (post_id, recipient, next_attempt_at) VALUES {} ON CONFLICT DO NOTHING",
            values.join(", ")
        );
        let mut query = sqlx::query(&sql).bind(id).bind(due_at);
        for recipient in chunk {
            query = query.bind(recipient);
        }
        query.execute(&mut **tx).await?;
    }
    Ok(())
}

pub(crate) fn post_row(r: &sqlx::any::AnyRow) -> PostRow {
    PostRow {
        id: r.get("id"),
        list: r.get("list"),
        mail_from: r.get("mail_from"),
        key_id: r.get("key_id"),
        message_id: r.get("message_id"),
        received_at: r.get("received_at"),
        message: r.get("message"),
        digest: r.get::<Option<Vec<u8>>, _>("digest").unwrap_or_default(),
        roster_seq: r.get("roster_seq"),
    }
}
