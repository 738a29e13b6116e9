//! Changing a list's roster on both servers, and bringing them back in step.
//!
//! Every op is signed here, by an owner, and sent to the key server first (it decides who
//! gets keys), then to the list server. If the second send fails, the servers disagree
//! until [`sync`] pushes the missing ops; neither server can make up an op to fill the gap.

use std::path::{Path, PathBuf};

use hushlist_core::roster::{
    Change, DeliveryMode, FromRewrite, KeyFollows, MemberEntry, Moderation, Policy, Posters, Role,
    Roster, SignedOp, sign_genesis,
};
use hushlist_core::{Address, Cert, SecretIdentity};
use rand::rngs::OsRng;

use crate::Home;
use crate::lists::ListConfig;
use crate::pins::{PinError, Pins, Rosters, ServerLog, is_missing};
use crate::remote::{RemoteError, Server};

#[derive(Debug, thiserror::Error)]
pub enum RosterError {
    #[error("signing the roster op failed: {0}")]
    Sign(String),
    #[error("the change to {list} was not sent, since both servers would refuse it")]
    Refused {
        list: Address,
        #[source]
        source: Box<hushlist_core::roster::RosterError>,
    },
    #[error(
        "{address} was not added to {list}, since both servers would refuse it (the members before it were added: fix or drop its line and run the command again)"
    )]
    MemberRefused {
        list: Address,
        address: Address,
        #[source]
        source: Box<hushlist_core::roster::RosterError>,
    },
    #[error(
        "the key server took the change (seq {seq}) but the list server did not; run `hushlist list sync {list}` (with --admin-token if this was the list's creation)"
    )]
    HalfApplied {
        list: Address,
        seq: u64,
        #[source]
        source: RemoteError,
    },
    #[error(
        "the key server's roster of {list} is at seq {key_seq} but the list server's at {list_seq}; run `hushlist list sync {list}` first, so the change follows the newest op"
    )]
    KeyServerBehind {
        list: Address,
        key_seq: u64,
        list_seq: u64,
    },
    #[error(
        "the {server} does not have {list} at all; run `hushlist list sync {list} --admin-token TOKEN` with the operators' admin token to create it there"
    )]
    MissingList { server: &'static str, list: Address },
    #[error(transparent)]
    Remote(#[from] RemoteError),
    #[error(transparent)]
    Pin(#[from] PinError),
}

/// A member file with problems, all of them listed.
#[derive(Debug, thiserror::Error)]
#[error("{path} has {} problem(s):\n  {}", problems.len(), problems.join("\n  "))]
pub struct MemberFileError {
    pub path: PathBuf,
    pub problems: Vec<String>,
}

/// Reads a member file for bulk adds: one member a line, `ADDRESS CERTFILE [ROLE]` with
/// ROLE `owner`, `member` (the default) or `reader`; certificate paths are relative to the
/// file; blank lines and `#` comments are skipped. Every bad line is reported at once.
pub fn read_member_file(path: &Path) -> Result<Vec<MemberEntry>, MemberFileError> {
    let fail = |problems| MemberFileError {
        path: path.to_owned(),
        problems,
    };
    let text = std::fs::read_to_string(path).map_err(|e| fail(vec![e.to_string()]))?;
    let base = path.parent().unwrap_or(Path::new("."));
    let mut members = Vec::new();
    let mut problems = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (index, line) in text.lines().enumerate() {
        let line_no = index + 1;
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (address, cert_file, role) = match fields[..] {
            [address, cert] => (address, cert, "member"),
            [address, cert, role] => (address, cert, role),
            _ => {
                problems.push(format!(
                    "line {line_no}: expected `ADDRESS CERTFILE [ROLE]`, found {line:?}"
                ));
                continue;
            }
        };
        let address = match Address::parse(address) {
            Ok(address) => address,
            Err(e) => {
                problems.push(format!("line {line_no}: {e}"));
                continue;
            }
        };
        if !seen.insert(address.clone()) {
            problems.push(format!("line {line_no}: {address} is listed twice"));
        }
        let role = match role {
            "owner" => Role::Owner,
            "member" => Role::Member,
            "reader" => Role::Reader,
            other => {
                problems.push(format!(
                    "line {line_no}: role {other:?} is not owner, member or reader"
                ));
                continue;
            }
        };
        let cert_path = base.join(cert_file);
        let cert = match std::fs::read(&cert_path) {
            Ok(bytes) => Cert::from_bytes(&bytes),
            Err(e) => {
                problems.push(format!("line {line_no}: {}: {e}", cert_path.display()));
                continue;
            }
        };
        match cert {
            Ok(cert) => members.push(MemberEntry {
                address,
                cert: cert.to_armored(),
                role,
            }),
            Err(e) => problems.push(format!(
                "line {line_no}: {} is not a usable certificate: {e}",
                cert_path.display()
            )),
        }
    }
    if problems.is_empty() {
        Ok(members)
    } else {
        Err(fail(problems))
    }
}

/// Creates `list` on both servers with `me` (at `my_address`) as its first owner: signs the
/// genesis op and hands it to each with the operators' admin token. Once the key server has
/// the list, `home` remembers it, pinned to this genesis and the key server's certificate
/// (so that `list sync` can finish a creation the list server missed).
pub async fn create(
    me: &SecretIdentity,
    my_address: Address,
    home: &Home,
    list: &ListConfig,
    policy: Policy,
    admin_token: &str,
    now: u64,
) -> Result<(), RosterError> {
    let (keys, lists) = (list.key_server()?, list.list_server()?);
    let server_cert = keys.server_cert().await?;
    let genesis = sign_genesis(OsRng, me, my_address, list.list.clone(), policy, now)
        .map_err(|e| RosterError::Sign(e.to_string()))?;
    keys.create_list(admin_token, &genesis).await?;
    let lock = home.lock_list(&list.list).map_err(PinError::from)?;
    home.save_list(&ListConfig {
        pins: Some(Pins::created(&genesis, me.fingerprint(), &server_cert)),
        ..list.clone()
    })
    .map_err(PinError::from)?;
    drop(lock);
    lists
        .create_list(admin_token, &genesis)
        .await
        .map_err(|source| RosterError::HalfApplied {
            list: list.list.clone(),
            seq: 0,
            source,
        })?;
    Ok(())
}

/// Signs `change` on top of the key server's roster (read through the home's pins, and
/// refused if the list server is ahead of it) and sends it to both servers. Returns the new
/// head seq.
pub async fn change(
    me: &SecretIdentity,
    home: &Home,
    list: &ListConfig,
    change: Change,
    now: u64,
) -> Result<u64, RosterError> {
    let roster = key_server_head(list, home.rosters(me, list).await?)?;
    sign_and_send(me, home, list, roster, change, now).await
}

/// The settings of a list's policy to change; those left `None` stay as they are.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicyUpdate {
    pub delivery: Option<DeliveryMode>,
    pub posters: Option<Posters>,
    pub key_follows: Option<KeyFollows>,
    pub new_members_read_old: Option<bool>,
    /// Seconds a post's key lives; 0 keeps keys.
    pub key_lifetime_secs: Option<u64>,
    pub moderation: Option<Moderation>,
    pub from_rewrite: Option<FromRewrite>,
}

impl PolicyUpdate {
    /// `policy` with the settings given here changed.
    pub fn applied_to(&self, policy: &Policy) -> Policy {
        Policy {
            delivery: self.delivery.unwrap_or(policy.delivery),
            posters: self.posters.unwrap_or(policy.posters),
            key_follows: self.key_follows.unwrap_or(policy.key_follows),
            new_members_read_old: self
                .new_members_read_old
                .unwrap_or(policy.new_members_read_old),
            key_lifetime_secs: match self.key_lifetime_secs {
                Some(secs) => (secs > 0).then_some(secs),
                None => policy.key_lifetime_secs,
            },
            moderation: self.moderation.unwrap_or(policy.moderation),
            from_rewrite: self.from_rewrite.unwrap_or(policy.from_rewrite),
        }
    }
}

/// Changes the list's policy by `update`, merged into the policy of the roster the op is
/// signed on (the key server's, as [`change`] signs), and sends the op to both servers.
/// Returns the new head seq.
pub async fn set_policy(
    me: &SecretIdentity,
    home: &Home,
    list: &ListConfig,
    update: &PolicyUpdate,
    now: u64,
) -> Result<u64, RosterError> {
    let roster = key_server_head(list, home.rosters(me, list).await?)?;
    let policy = update.applied_to(roster.policy());
    sign_and_send(me, home, list, roster, Change::SetPolicy { policy }, now).await
}

/// Signs `change` as the op after `roster`'s head and sends it to both servers.
async fn sign_and_send(
    me: &SecretIdentity,
    home: &Home,
    list: &ListConfig,
    mut roster: Roster,
    change: Change,
    now: u64,
) -> Result<u64, RosterError> {
    let op = roster
        .sign_next(OsRng, me, now, change)
        .map_err(|e| RosterError::Sign(e.to_string()))?;
    // Applied to the verified roster it was signed on first, so a change the servers would
    // refuse (a certificate carrying a member's key, a duplicate address, the last owner's
    // removal) is refused here, with the reason, before anything is sent.
    roster
        .apply(op.clone())
        .map_err(|source| RosterError::Refused {
            list: list.list.clone(),
            source: Box::new(source),
        })?;
    append_to_both(home, list, &roster, &op).await
}

/// The key server's log, to sign the next op on: it must hold the newest head, or the op
/// would take a place the list server has already filled.
fn key_server_head(list: &ListConfig, rosters: Rosters) -> Result<Roster, RosterError> {
    let list_seq = rosters.list_server.roster().map(Roster::head_seq);
    match rosters.key_server {
        ServerLog::Absent(e) => Err(e.into()),
        ServerLog::Held(roster) => match list_seq {
            Some(list_seq) if list_seq > roster.head_seq() => Err(RosterError::KeyServerBehind {
                list: list.list.clone(),
                key_seq: roster.head_seq(),
                list_seq,
            }),
            _ => Ok(*roster),
        },
    }
}

/// What [`add_many`] did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Added {
    pub added: usize,
    /// Already on the roster (a re-run after an interruption skips them).
    pub present: usize,
    pub head_seq: u64,
}

/// Adds `members` one signed op each, skipping addresses already on the roster, and calls
/// `progress` after each. Ops are chained locally on the roster fetched once, so a thousand
/// members cost two thousand requests and no refetching.
pub async fn add_many(
    me: &SecretIdentity,
    home: &Home,
    list: &ListConfig,
    members: Vec<MemberEntry>,
    now: u64,
    mut progress: impl FnMut(&Address),
) -> Result<Added, RosterError> {
    let mut roster = key_server_head(list, home.rosters(me, list).await?)?;
    let mut added = Added {
        head_seq: roster.head_seq(),
        ..Added::default()
    };
    for member in members {
        let address = member.address.clone();
        if roster.member(&address).is_some() {
            added.present += 1;
        } else {
            let op = roster
                .sign_next(OsRng, me, now, Change::Add { member })
                .map_err(|e| RosterError::Sign(e.to_string()))?;
            roster
                .apply(op.clone())
                .map_err(|source| RosterError::MemberRefused {
                    list: list.list.clone(),
                    address: address.clone(),
                    source: Box::new(source),
                })?;
            added.head_seq = append_to_both(home, list, &roster, &op).await?;
            added.added += 1;
        }
        progress(&address);
    }
    Ok(added)
}

/// Sends `op`, already applied to `roster`, to the key server, then the list server; once the
/// key server has it, the home records `roster`'s head as seen.
async fn append_to_both(
    home: &Home,
    list: &ListConfig,
    roster: &Roster,
    op: &SignedOp,
) -> Result<u64, RosterError> {
    let head = list.key_server()?.append_op(&list.list, op).await?;
    home.record_own(list, roster)?;
    list.list_server()?
        .append_op(&list.list, op)
        .await
        .map_err(|source| RosterError::HalfApplied {
            list: list.list.clone(),
            seq: head.head_seq,
            source,
        })?;
    Ok(head.head_seq)
}

/// What [`sync`] did.
#[derive(Debug, PartialEq, Eq)]
pub struct Synced {
    /// Ops sent to the key server and to the list server.
    pub to_key_server: usize,
    pub to_list_server: usize,
    /// The head both servers now share.
    pub head_seq: u64,
}

/// Brings both servers' rosters of `list` to the longer of the two, pushing the ops one
/// lacks. Both logs are read through the home's pins (so a server serving another list, a
/// rolled-back log or a fork gets nothing); a server missing the list entirely gets the
/// genesis op with `admin_token`.
pub async fn sync(
    me: &SecretIdentity,
    home: &Home,
    list: &ListConfig,
    admin_token: Option<&str>,
) -> Result<Synced, RosterError> {
    let keys = list.key_server()?;
    let lists = list.list_server()?;
    let rosters = home.rosters(me, list).await?;
    let (key_roster, list_roster) =
        match (present(rosters.key_server)?, present(rosters.list_server)?) {
            (Some(k), Some(l)) => (k, l),
            (Some(k), None) => {
                let l = create_from(&lists, &k, list, admin_token).await?;
                (k, l)
            }
            (None, Some(l)) => {
                let k = create_from(&keys, &l, list, admin_token).await?;
                (k, l)
            }
            (None, None) => unreachable!("a reading without any log is an error"),
        };
    let common = key_roster.head_seq().min(list_roster.head_seq());
    let mut synced = Synced {
        to_key_server: 0,
        to_list_server: 0,
        head_seq: key_roster.head_seq().max(list_roster.head_seq()),
    };
    for op in list_roster.ops_since(common) {
        keys.append_op(&list.list, op).await?;
        synced.to_key_server += 1;
    }
    for op in key_roster.ops_since(common) {
        lists.append_op(&list.list, op).await?;
        synced.to_list_server += 1;
    }
    Ok(synced)
}

/// The server's roster, or None if it does not have the list; an error if it could not say.
fn present(log: ServerLog) -> Result<Option<Roster>, RosterError> {
    match log {
        ServerLog::Held(roster) => Ok(Some(*roster)),
        ServerLog::Absent(e) if is_missing(&e) => Ok(None),
        ServerLog::Absent(e) => Err(e.into()),
    }
}

/// Creates the list on `server` from the other server's genesis op.
async fn create_from(
    server: &Server,
    other: &Roster,
    list: &ListConfig,
    admin_token: Option<&str>,
) -> Result<Roster, RosterError> {
    let missing = || RosterError::MissingList {
        server: server.name(),
        list: list.list.clone(),
    };
    let token = admin_token.ok_or_else(missing)?;
    let genesis = other.ops().first().ok_or_else(missing)?;
    server.create_list(token, genesis).await?;
    Ok(Roster::genesis(genesis.clone()).expect("the genesis of a verified log verifies"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_policy_update_changes_only_the_settings_it_gives() {
        let before = Policy {
            key_lifetime_secs: Some(3_600),
            ..Policy::default()
        };
        assert_eq!(PolicyUpdate::default().applied_to(&before), before);
        let update = PolicyUpdate {
            posters: Some(Posters::Owners),
            moderation: Some(Moderation::All),
            ..PolicyUpdate::default()
        };
        assert_eq!(
            update.applied_to(&before),
            Policy {
                posters: Posters::Owners,
                moderation: Moderation::All,
                ..before.clone()
            }
        );
        let every = PolicyUpdate {
            delivery: Some(DeliveryMode::Push),
            posters: Some(Posters::Owners),
            key_follows: Some(KeyFollows::PostingRoster),
            new_members_read_old: Some(true),
            key_lifetime_secs: Some(60),
            moderation: Some(Moderation::NonPosters),
            from_rewrite: Some(FromRewrite::Never),
        };
        assert_eq!(
            every.applied_to(&before),
            Policy {
                posters: Posters::Owners,
                key_follows: KeyFollows::PostingRoster,
                new_members_read_old: true,
                delivery: DeliveryMode::Push,
                key_lifetime_secs: Some(60),
                moderation: Moderation::NonPosters,
                from_rewrite: FromRewrite::Never,
            }
        );
        let keep_keys = PolicyUpdate {
            key_lifetime_secs: Some(0),
            ..PolicyUpdate::default()
        };
        assert_eq!(keep_keys.applied_to(&before).key_lifetime_secs, None);
    }
}
