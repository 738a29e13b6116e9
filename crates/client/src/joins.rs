//! Settling requests to join: what `hushlist list pending`, `approve` and `reject` do.
//!
//! The list server keeps each request exactly as its requester signed it, but an owner's
//! client believes nothing else it says: every request is verified here (the certificate
//! signed the request to join this list, for an address its user ids name), and an add is
//! signed only for the key the owner named by fingerprint. So a list server that shows one
//! key and hands over another at approval cannot get its own key onto the roster.

use hushlist_core::api::{JoinDecision, JoinRequestError, PendingJoin, VerifiedJoin};
use hushlist_core::roster::{Change, MemberEntry, Role};
use hushlist_core::{Address, Fingerprint, SecretIdentity};

use crate::Home;
use crate::lists::ListConfig;
use crate::remote::RemoteError;
use crate::rosters::{self, RosterError};

/// Why a request shown by the list server is not what it claims.
#[derive(Debug, thiserror::Error)]
pub enum Forgery {
    #[error(transparent)]
    Invalid(#[from] JoinRequestError),
    #[error("it is labelled as key {labelled} but signed by key {signed}")]
    WrongKey {
        labelled: Fingerprint,
        signed: Fingerprint,
    },
    #[error("it is labelled as {labelled} but asks to join as {asked}")]
    WrongAddress { labelled: Address, asked: Address },
}

#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error("{address} has no pending request to join {list}; see hushlist list pending {list}")]
    NoRequest { list: Address, address: Address },
    #[error(
        "the list server offers key {offered} for {address}, not the key {approved} you approved; nothing was signed. Check the key with {address} directly; if the list server changed it, it may be compromised"
    )]
    KeyMismatch {
        address: Address,
        approved: Fingerprint,
        offered: String,
    },
    #[error(
        "the list server's request for {address} does not hold: {forgery}; nothing was signed (the list server may be compromised)"
    )]
    Forged { address: Address, forgery: Forgery },
    #[error(
        "{address} has not confirmed the request with key {fingerprint} from their mailbox; only a confirmed request can be settled"
    )]
    Unconfirmed {
        address: Address,
        fingerprint: Fingerprint,
    },
    #[error("{address} asked to join with {keys}; name one with --fingerprint")]
    Ambiguous { address: Address, keys: String },
    #[error(transparent)]
    Roster(#[from] RosterError),
    #[error(transparent)]
    Remote(#[from] RemoteError),
}

/// A request as the list server showed it, and what this client found when verifying it.
#[derive(Debug)]
pub struct CheckedJoin {
    pub pending: PendingJoin,
    pub verified: Result<VerifiedJoin, Forgery>,
}

/// Verifies a request the list server shows: its certificate signed it for `list` and can
/// receive keys `now`, and it is for the address and key it is labelled with.
pub fn verify_pending(
    list: &Address,
    pending: &PendingJoin,
    now: u64,
) -> Result<VerifiedJoin, Forgery> {
    let verified = pending.request.verify(list, now)?;
    if verified.cert.fingerprint() != &pending.fingerprint {
        return Err(Forgery::WrongKey {
            labelled: pending.fingerprint.clone(),
            signed: verified.cert.fingerprint().clone(),
        });
    }
    if !verified.ask.address.same_mailbox(&pending.address) {
        return Err(Forgery::WrongAddress {
            labelled: pending.address.clone(),
            asked: verified.ask.address.clone(),
        });
    }
    Ok(verified)
}

/// The join requests waiting for the owners of `list`, each verified here at `now`.
pub async fn pending(
    me: &SecretIdentity,
    list: &ListConfig,
    now: u64,
) -> Result<Vec<CheckedJoin>, JoinError> {
    let pending = list.list_server()?.pending_joins(me, &list.list).await?;
    Ok(pending
        .requests
        .into_iter()
        .map(|pending| CheckedJoin {
            verified: verify_pending(&list.list, &pending, now),
            pending,
        })
        .collect())
}

/// The requests the list server shows for `address`.
async fn requests_for(
    me: &SecretIdentity,
    list: &ListConfig,
    address: &Address,
    now: u64,
) -> Result<Vec<CheckedJoin>, JoinError> {
    let found: Vec<CheckedJoin> = pending(me, list, now)
        .await?
        .into_iter()
        .filter(|c| c.pending.address.same_mailbox(address))
        .collect();
    if found.is_empty() {
        return Err(JoinError::NoRequest {
            list: list.list.clone(),
            address: address.clone(),
        });
    }
    Ok(found)
}

/// Lets `address` in with the key `fingerprint`, which must be the key of a confirmed
/// request that verifies: signs the add on both servers, then has the list server tell them.
/// Returns the roster's new head seq.
pub async fn approve(
    me: &SecretIdentity,
    home: &Home,
    list: &ListConfig,
    address: &Address,
    fingerprint: &Fingerprint,
    role: Role,
    now: u64,
) -> Result<u64, JoinError> {
    let requests = requests_for(me, list, address, now).await?;
    let mut offered = Vec::new();
    let mut chosen = None;
    for checked in requests {
        match checked.verified {
            Ok(verified) if verified.cert.fingerprint() == fingerprint => {
                chosen = Some((checked.pending.confirmed, verified));
                break;
            }
            Ok(verified) => offered.push(verified.cert.fingerprint().to_string()),
            Err(forgery) if &checked.pending.fingerprint == fingerprint => {
                return Err(JoinError::Forged {
                    address: address.clone(),
                    forgery,
                });
            }
            Err(_) => offered.push(format!("{} (not verifying)", checked.pending.fingerprint)),
        }
    }
    let Some((confirmed, verified)) = chosen else {
        return Err(JoinError::KeyMismatch {
            address: address.clone(),
            approved: fingerprint.clone(),
            offered: offered.join(", "),
        });
    };
    if !confirmed {
        return Err(JoinError::Unconfirmed {
            address: address.clone(),
            fingerprint: fingerprint.clone(),
        });
    }
    let entry = MemberEntry {
        address: verified.ask.address.clone(),
        cert: verified.cert.to_armored(),
        role,
    };
    let head_seq = rosters::change(me, home, list, Change::Add { member: entry }, now).await?;
    list.list_server()?
        .settle_join(
            me,
            &list.list,
            &JoinDecision {
                address: verified.ask.address,
                fingerprint: fingerprint.clone(),
                approved: true,
                reason: None,
            },
        )
        .await?;
    Ok(head_seq)
}

/// Turns away `address`'s request with the key `fingerprint`, or with their only confirmed
/// request when no key is named; the list server tells them, with `reason`.
pub async fn reject(
    me: &SecretIdentity,
    list: &ListConfig,
    address: &Address,
    fingerprint: Option<&Fingerprint>,
    reason: Option<String>,
    now: u64,
) -> Result<Fingerprint, JoinError> {
    let fingerprint = match fingerprint {
        Some(fingerprint) => fingerprint.clone(),
        None => {
            let confirmed: Vec<Fingerprint> = requests_for(me, list, address, now)
                .await?
                .into_iter()
                .filter(|c| c.pending.confirmed)
                .map(|c| c.pending.fingerprint)
                .collect();
            match &confirmed[..] {
                [] => {
                    return Err(JoinError::NoRequest {
                        list: list.list.clone(),
                        address: address.clone(),
                    });
                }
                [only] => only.clone(),
                keys => {
                    return Err(JoinError::Ambiguous {
                        address: address.clone(),
                        keys: keys
                            .iter()
                            .map(Fingerprint::to_string)
                            .collect::<Vec<_>>()
                            .join(", "),
                    });
                }
            }
        }
    };
    list.list_server()?
        .settle_join(
            me,
            &list.list,
            &JoinDecision {
                address: address.clone(),
                fingerprint: fingerprint.clone(),
                approved: false,
                reason,
            },
        )
        .await?;
    Ok(fingerprint)
}
