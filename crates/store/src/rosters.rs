//! Verified rosters over the store, shared by both servers: every op read from the database is
//! replayed through [`Roster::apply`], so a row written behind a server's back is refused, not
//! trusted. The cache is refreshed with the ops other instances stored since, on every read.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use hushlist_core::Address;
use hushlist_core::roster::{Roster, RosterError, SignedOp};

use crate::{Inserted, Store, StoreError, StoredOp};

#[derive(Debug, thiserror::Error)]
pub enum RosterStoreError {
    #[error("no list {0} here")]
    UnknownList(Address),
    #[error("list {0} already exists with another genesis")]
    ListExists(Address),
    #[error("the roster of {0} changed meanwhile; fetch it and sign again")]
    Moved(Address),
    #[error(transparent)]
    Refused(#[from] RosterError),
    #[error("the stored roster of {list} does not verify: {source}")]
    Corrupt { list: Address, source: RosterError },
    #[error("the stored list name {0:?} is not a mail address")]
    BadListName(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Roster ops read from the store at a time.
const OPS_PER_READ: i64 = 500;

pub struct RosterCache {
    store: Store,
    cache: Mutex<HashMap<Address, Arc<Roster>>>,
    /// Held while a list's roster is read or brought up to date, so that requests arriving
    /// together wait for one replay rather than each replaying the whole log (after a
    /// restart, 32 requests for a list of 1,000 members replayed it 32 times at once).
    updating: Mutex<HashMap<Address, Arc<tokio::sync::Mutex<()>>>>,
    /// Ops read from the store and verified, since this cache was made.
    ops_verified: AtomicU64,
}

impl RosterCache {
    pub fn new(store: Store) -> Self {
        RosterCache {
            store,
            cache: Mutex::new(HashMap::new()),
            updating: Mutex::new(HashMap::new()),
            ops_verified: AtomicU64::new(0),
        }
    }

    /// The list's roster, brought up to date with ops stored since it was cached.
    pub async fn get(&self, list: &Address) -> Result<Arc<Roster>, RosterStoreError> {
        if let Some(cached) = self.cached(list) {
            let head = i64::try_from(cached.head_seq()).unwrap_or(i64::MAX);
            if self
                .store
                .roster_ops(list.as_str(), head, 1)
                .await?
                .is_empty()
            {
                return Ok(cached);
            }
        }
        let _turn = self.update_turn(list).await;
        self.bring_up_to_date(list).await
    }

    /// Reads and verifies every stored list's roster into the cache; returns the lists whose
    /// roster could not be read, and why.
    pub async fn load_all(&self) -> Result<Vec<(String, RosterStoreError)>, StoreError> {
        let mut failed = Vec::new();
        for name in self.store.lists().await? {
            let loaded = match Address::parse(&name) {
                Ok(list) => self.get(&list).await.map(drop),
                Err(_) => Err(RosterStoreError::BadListName(name.clone())),
            };
            if let Err(e) = loaded {
                failed.push((name, e));
            }
        }
        Ok(failed)
    }

    fn cached(&self, list: &Address) -> Option<Arc<Roster>> {
        self.cache
            .lock()
            .expect("roster cache lock")
            .get(list)
            .cloned()
    }

    /// How many ops this cache has read from the store and verified: the work its replays
    /// cost (a list's whole log once after a start, then only new ops).
    pub fn ops_verified(&self) -> u64 {
        self.ops_verified.load(Ordering::Relaxed)
    }

    /// Waits for the turn to update `list`'s roster: one update of a list at a time.
    async fn update_turn(&self, list: &Address) -> UpdateTurn<'_> {
        let lock = self
            .updating
            .lock()
            .expect("roster update locks")
            .entry(list.clone())
            .or_default()
            .clone();
        UpdateTurn {
            cache: self,
            list: list.clone(),
            guard: Some(lock.lock_owned().await),
        }
    }

    /// Reads and verifies the ops stored since the cached roster's head (the whole log if
    /// none is cached); the caller holds the list's update lock.
    async fn bring_up_to_date(&self, list: &Address) -> Result<Arc<Roster>, RosterStoreError> {
        let cached = self.cached(list);
        let mut after = cached
            .as_ref()
            .map_or(-1, |r| i64::try_from(r.head_seq()).unwrap_or(i64::MAX));
        let mut newer = self
            .store
            .roster_ops(list.as_str(), after, OPS_PER_READ)
            .await?;
        if newer.is_empty() {
            return cached.ok_or_else(|| RosterStoreError::UnknownList(list.clone()));
        }
        let corrupt = |source| RosterStoreError::Corrupt {
            list: list.clone(),
            source,
        };
        // Take the cached roster out while it is brought up to date, so it is not copied
        // when nobody else holds it.
        if let Some(cached) = &cached {
            self.take_if_cached(list, cached);
        }
        let mut roster = match cached {
            Some(roster) => Arc::unwrap_or_clone(roster),
            None => {
                let genesis = newer.remove(0);
                after = genesis.seq;
                self.ops_verified.fetch_add(1, Ordering::Relaxed);
                Roster::genesis(SignedOp {
                    body: genesis.body,
                    signature: genesis.signature,
                })
                .map_err(corrupt)?
            }
        };
        // Read in pages: a list of many thousands of members is never all in memory twice.
        loop {
            for op in newer {
                after = op.seq;
                self.ops_verified.fetch_add(1, Ordering::Relaxed);
                roster
                    .apply(SignedOp {
                        body: op.body,
                        signature: op.signature,
                    })
                    .map_err(corrupt)?;
            }
            newer = self
                .store
                .roster_ops(list.as_str(), after, OPS_PER_READ)
                .await?;
            if newer.is_empty() {
                break;
            }
        }
        Ok(self.put(list, Arc::new(roster)))
    }

    /// Whether `list` has a roster here.
    pub async fn exists(&self, list: &Address) -> Result<bool, RosterStoreError> {
        match self.get(list).await {
            Ok(_) => Ok(true),
            Err(RosterStoreError::UnknownList(_)) => Ok(false),
            Err(other) => Err(other),
        }
    }

    /// Creates a list from its genesis op. The same genesis again is accepted (idempotent).
    pub async fn create(&self, genesis: SignedOp) -> Result<Arc<Roster>, RosterStoreError> {
        let roster = Roster::genesis(genesis.clone())?;
        let list = roster.list().clone();
        let stored = StoredOp {
            seq: 0,
            body: genesis.body,
            signature: genesis.signature,
        };
        if self.store.append_roster_op(list.as_str(), &stored).await? == Inserted::AlreadyPresent {
            let existing = self.get(&list).await?;
            if existing.ops()[0].body != stored.body {
                return Err(RosterStoreError::ListExists(list));
            }
        }
        self.get(&list).await
    }

    /// Verifies `op` against the current roster and stores it.
    pub async fn append(
        &self,
        list: &Address,
        op: SignedOp,
    ) -> Result<Arc<Roster>, RosterStoreError> {
        let _turn = self.update_turn(list).await;
        let current = self.bring_up_to_date(list).await?;
        // Work on the cached roster itself rather than a copy when no request holds it:
        // copying a roster of thousands of members on every op made bulk adds quadratic.
        self.take_if_cached(list, &current);
        let mut next = Arc::unwrap_or_clone(current);
        if let Err(refusal) = next.apply(op.clone()) {
            // `apply` changes nothing when it refuses an op, so the roster goes back as it was.
            self.put(list, Arc::new(next));
            return Err(refusal.into());
        }
        let stored = StoredOp {
            seq: i64::try_from(next.head_seq()).unwrap_or(i64::MAX),
            body: op.body,
            signature: op.signature,
        };
        if self.store.append_roster_op(list.as_str(), &stored).await? == Inserted::AlreadyPresent {
            // Another instance appended first: judge the op against that history.
            let mut current = Arc::unwrap_or_clone(self.bring_up_to_date(list).await?);
            current.apply(SignedOp {
                body: stored.body,
                signature: stored.signature,
            })?;
            return Err(RosterStoreError::Moved(list.clone()));
        }
        let next = Arc::new(next);
        self.put(list, next.clone());
        Ok(next)
    }

    /// Removes `roster` from the cache if it is still the cached one.
    fn take_if_cached(&self, list: &Address, roster: &Arc<Roster>) {
        let mut cache = self.cache.lock().expect("roster cache lock");
        if cache
            .get(list)
            .is_some_and(|current| Arc::ptr_eq(current, roster))
        {
            cache.remove(list);
        }
    }

    /// Caches `roster` unless a newer one is cached already; returns the cached one.
    fn put(&self, list: &Address, roster: Arc<Roster>) -> Arc<Roster> {
        let mut cache = self.cache.lock().expect("roster cache lock");
        let current = cache.entry(list.clone()).or_insert_with(|| roster.clone());
        if current.head_seq() < roster.head_seq() {
            *current = roster;
        }
        current.clone()
    }
}

/// A list's turn to be updated. When it ends, the list's lock is forgotten unless someone
/// else holds or awaits it, so addresses that name no list (anyone may try them over SMTP)
/// leave nothing behind.
struct UpdateTurn<'a> {
    cache: &'a RosterCache,
    list: Address,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl Drop for UpdateTurn<'_> {
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut locks = self.cache.updating.lock().expect("roster update locks");
        // Clones are taken only under this map's lock, so a count of one cannot rise now.
        if locks
            .get(&self.list)
            .is_some_and(|lock| Arc::strong_count(lock) == 1)
        {
            locks.remove(&self.list);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scratch::ScratchDb;

    #[tokio::test]
    async fn addresses_that_name_no_list_leave_no_update_lock_behind() {
        let db = ScratchDb::sqlite().unwrap();
        let cache = Arc::new(RosterCache::new(Store::clone(
            &db.open_lists().await.unwrap(),
        )));
        let lookups: Vec<_> = (0..50)
            .map(|i| {
                let cache = cache.clone();
                tokio::spawn(async move {
                    let list =
                        Address::parse(&format!("nolist{}@lists.example.org", i % 5)).unwrap();
                    cache.get(&list).await
                })
            })
            .collect();
        for lookup in lookups {
            assert!(matches!(
                lookup.await.unwrap(),
                Err(RosterStoreError::UnknownList(_))
            ));
        }
        assert!(cache.updating.lock().unwrap().is_empty());
    }
}
