//! Watching that the key server holds the same rosters as this list server. Owners sign each
//! roster op once and send it to both servers; if one of them missed an op (it was down, or
//! the owner's client stopped half-way), the servers disagree about who may read and post
//! until someone runs `hushlist list sync`. This task compares the two heads now and then and
//! tells the owners by mail when a difference outlasts one check (an owner's change reaches
//! the key server a moment before this server, which is not worth a notice).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use hushlist_core::Address;
use hushlist_core::api::endpoints::{ReadOps, Since};
use hushlist_core::roster::Roster;
use hushlist_remote::{RemoteError, Server};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::delivery::KeyServerAccess;
use crate::service::{ListServer, unix_now};

/// How the key server's roster of a list differs from ours.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Difference {
    /// The key server does not know the list.
    Unknown,
    /// Its head is at another seq than ours.
    Seq { ours: u64, theirs: u64 },
    /// Same seq, different last op: someone signed two different ops at that seq.
    Fork { seq: u64 },
}

/// What the watch last saw of a list.
struct Seen {
    difference: Difference,
    told: bool,
}

pub struct RosterWatch {
    server: Arc<ListServer>,
    key_server: Server,
    /// What the key server knows this list server by, to read its rosters.
    grants_token: String,
    every: Duration,
}

impl RosterWatch {
    pub fn new(server: &Arc<ListServer>, key_server: &KeyServerAccess, every: Duration) -> Self {
        RosterWatch {
            server: server.clone(),
            key_server: Server::key_server(&key_server.url),
            grants_token: key_server.grants_token.clone(),
            every,
        }
    }

    /// Runs until `shutdown` turns true.
    pub fn spawn(self, mut shutdown: watch::Receiver<bool>) -> JoinHandle<()> {
        tokio::spawn(async move {
            let mut seen: HashMap<String, Seen> = HashMap::new();
            while !*shutdown.borrow() {
                tokio::select! {
                    _ = tokio::time::sleep(self.every) => {}
                    _ = shutdown.changed() => continue,
                }
                self.check_all(&mut seen).await;
            }
        })
    }

    async fn check_all(&self, seen: &mut HashMap<String, Seen>) {
        let lists = match self.server.store().lists().await {
            Ok(lists) => lists,
            Err(e) => {
                tracing::warn!(error = %e, "roster watch: cannot list the lists");
                return;
            }
        };
        for name in lists {
            let Ok(list) = Address::parse(&name) else {
                continue;
            };
            let roster = match self.server.rosters().get(&list).await {
                Ok(roster) => roster,
                Err(e) => {
                    tracing::warn!(%list, error = %e, "roster watch: cannot read our roster");
                    continue;
                }
            };
            let difference = match self.compare(&roster).await {
                Ok(difference) => difference,
                Err(e) => {
                    tracing::warn!(%list, error = %e, "roster watch: cannot reach the key server");
                    continue;
                }
            };
            let Some(difference) = difference else {
                seen.remove(&name);
                continue;
            };
            match seen.get_mut(&name) {
                Some(earlier) if earlier.difference == difference => {
                    if !earlier.told {
                        earlier.told = self.tell_owners(&roster, &difference).await;
                    }
                }
                _ => {
                    seen.insert(
                        name,
                        Seen {
                            difference,
                            told: false,
                        },
                    );
                }
            }
        }
    }

    /// How the key server's roster differs from `ours`, if it does.
    async fn compare(&self, ours: &Roster) -> Result<Option<Difference>, RemoteError> {
        let head = ours.head_seq();
        // Ops after `since`, so that the answer ends with the op at our head (the whole
        // log when our head is the genesis op).
        let since = Since {
            since: head.checked_sub(1),
        };
        let theirs = match self
            .key_server
            .call::<ReadOps>(ours.list(), &since, Some(&self.grants_token))
            .await
        {
            Err(RemoteError::Refused { status: 404, .. }) => return Ok(Some(Difference::Unknown)),
            answer => answer?,
        };
        if theirs.head_seq != head {
            return Ok(Some(Difference::Seq {
                ours: head,
                theirs: theirs.head_seq,
            }));
        }
        let our_last = ours.ops().last().map(|op| &op.body);
        let their_last = theirs.ops.last().map(|op| &op.body);
        Ok((our_last != their_last).then_some(Difference::Fork { seq: head }))
    }

    /// Queues a notice to the owners; returns whether it was queued.
    async fn tell_owners(&self, roster: &Roster, difference: &Difference) -> bool {
        let list = roster.list();
        let what = match difference {
            Difference::Unknown => "the key server does not know this list at all".to_owned(),
            Difference::Seq { ours, theirs } => format!(
                "the key server's roster is at seq {theirs}, the list server's at seq {ours}"
            ),
            Difference::Fork { seq } => format!(
                "both rosters are at seq {seq} but end in different ops: two different changes were signed for the same seq"
            ),
        };
        tracing::warn!(%list, what, "rosters differ between the servers");
        let now = unix_now();
        let notices = self.server.owner_notices(
            roster,
            "the two servers' rosters differ",
            &format!(
                "The list server checked {list} against the key server ({}):\n\
                 {what}.\n\n\
                 Until they agree, the servers disagree about who may post and read. To push\n\
                 the ops one of them lacks (both logs are verified first):\n\n    \
                 hushlist list sync {list}\n",
                self.key_server.base()
            ),
            now,
        );
        match self.server.store().queue_messages(&notices, now).await {
            Ok(()) => {
                self.server.queued().notify_waiters();
                true
            }
            Err(e) => {
                tracing::error!(%list, error = %e, "cannot queue the owners' notice of differing rosters");
                false
            }
        }
    }
}
