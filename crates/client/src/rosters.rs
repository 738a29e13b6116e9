//! Changing a list's roster on both servers, and bringing them back in step.
//!
//! Every op is signed here, by an owner, and sent to the key server first (it decides who
//! gets keys), then to the list server. If the second send fails, the servers disagree
//! until [`sync`] pushes the missing ops; neither server can make up an op to fill the gap.

use std::path::{Path, PathBuf};

use hushlist_core::roster::{Change, MemberEntry, Policy, Role, Roster, SignedOp, sign_genesis};
use hushlist_core::{Address, Cert, SecretIdentity};
use rand::rngs::OsRng;

use crate::lists::ListConfig;
use crate::remote::{RemoteError, Server};

#[derive(Debug, thiserror::Error)]
pub enum RosterError {
    #[error("signing the roster op failed: {0}")]
    Sign(String),
    #[error("the change to {list} was not sent, since both servers would refuse it")]
    Refused {
        list: Address,
        #[source]
        source: hushlist_core::roster::RosterError,
    },
    #[error(
        "{address} was not added to {list}, since both servers would refuse it (the members before it were added: fix or drop its line and run the command again)"
    )]
    MemberRefused {
        list: Address,
        address: Address,
        #[source]
        source: hushlist_core::roster::RosterError,
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
        "the servers' rosters of {list} diverge at seq {seq}: they hold different ops there, so neither can be brought up to date from the other; check both servers' logs"
    )]
    Diverged { list: Address, seq: u64 },
    #[error(
        "the {server} does not have {list} at all; run `hushlist list sync {list} --admin-token TOKEN` with the operators' admin token to create it there"
    )]
    MissingList { server: &'static str, list: Address },
    #[error(transparent)]
    Remote(#[from] RemoteError),
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
/// genesis op and hands it to each with the operators' admin token.
pub async fn create(
    me: &SecretIdentity,
    my_address: Address,
    list: &ListConfig,
    policy: Policy,
    admin_token: &str,
    now: u64,
) -> Result<(), RosterError> {
    let genesis = sign_genesis(OsRng, me, my_address, list.list.clone(), policy, now)
        .map_err(|e| RosterError::Sign(e.to_string()))?;
    Server::key_server(&list.key_server)
        .create_list(admin_token, &genesis)
        .await?;
    Server::list_server(&list.list_server)
        .create_list(admin_token, &genesis)
        .await
        .map_err(|source| RosterError::HalfApplied {
            list: list.list.clone(),
            seq: 0,
            source,
        })?;
    Ok(())
}

/// Signs `change` on top of the key server's roster and sends it to both servers. Returns
/// the new head seq.
pub async fn change(
    me: &SecretIdentity,
    list: &ListConfig,
    change: Change,
    now: u64,
) -> Result<u64, RosterError> {
    let keys = Server::key_server(&list.key_server);
    let mut roster = keys.roster(&list.list).await?;
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
            source,
        })?;
    append_to_both(list, &op).await
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
    list: &ListConfig,
    members: Vec<MemberEntry>,
    now: u64,
    mut progress: impl FnMut(&Address),
) -> Result<Added, RosterError> {
    let mut roster = Server::key_server(&list.key_server)
        .roster(&list.list)
        .await?;
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
                    source,
                })?;
            added.head_seq = append_to_both(list, &op).await?;
            added.added += 1;
        }
        progress(&address);
    }
    Ok(added)
}

/// Sends one already signed op to the key server, then the list server.
async fn append_to_both(list: &ListConfig, op: &SignedOp) -> Result<u64, RosterError> {
    let head = Server::key_server(&list.key_server)
        .append_op(&list.list, op)
        .await?;
    Server::list_server(&list.list_server)
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
/// lacks. Both logs are verified from their genesis; a server missing the list entirely gets
/// the genesis op with `admin_token`.
pub async fn sync(list: &ListConfig, admin_token: Option<&str>) -> Result<Synced, RosterError> {
    let keys = Server::key_server(&list.key_server);
    let lists = Server::list_server(&list.list_server);
    let key_roster = roster_if_present(&keys, &list.list).await?;
    let list_roster = roster_if_present(&lists, &list.list).await?;
    let (key_roster, list_roster) = match (key_roster, list_roster) {
        (Some(k), Some(l)) => (k, l),
        (None, None) => {
            return Err(RemoteError::Refused {
                server: "key server",
                status: 404,
                code: "unknown_list".into(),
                message: format!("neither server has {}", list.list),
            }
            .into());
        }
        (Some(k), None) => {
            let l = create_from(&lists, &k, list, admin_token).await?;
            (k, l)
        }
        (None, Some(l)) => {
            let k = create_from(&keys, &l, list, admin_token).await?;
            (k, l)
        }
    };
    let common = key_roster.head_seq().min(list_roster.head_seq());
    if key_roster.hash_at(common) != list_roster.hash_at(common) {
        return Err(RosterError::Diverged {
            list: list.list.clone(),
            seq: first_difference(&key_roster, &list_roster),
        });
    }
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

/// The server's roster, or None if it does not know the list.
async fn roster_if_present(server: &Server, list: &Address) -> Result<Option<Roster>, RosterError> {
    match server.roster(list).await {
        Ok(roster) => Ok(Some(roster)),
        Err(RemoteError::Refused { status: 404, .. }) => Ok(None),
        Err(e) => Err(e.into()),
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
    Ok(server.roster(&list.list).await?)
}

/// The first seq where the two logs differ (they agree on genesis if both verified for the
/// same list, but a forked owner could still sign two different ops for one seq).
fn first_difference(a: &Roster, b: &Roster) -> u64 {
    (0..=a.head_seq().min(b.head_seq()))
        .find(|&seq| a.hash_at(seq) != b.hash_at(seq))
        .unwrap_or(0)
}
