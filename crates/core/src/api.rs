//! The JSON shapes of the servers' HTTP APIs, shared by servers and client, and the purpose
//! strings signed requests cover (method and path, so a signature fits one endpoint only);
//! [`endpoints`] declares every endpoint.

pub mod endpoints;

use rand::{CryptoRng, Rng};
use serde::{Deserialize, Serialize};

use crate::address::Address;
use crate::audit::AuditHash;
use crate::deposit::{DepositError, seal_deposit};
use crate::identity::{Cert, Fingerprint, IdentityError, SecretIdentity};
use crate::request::{RequestError, SignedRequest, VerifiedRequest};
use crate::session::{KeyId, SessionKey};
use crate::signed::{Signed, b64};

/// The body of every error response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// Stable machine-readable code, e.g. `not_allowed`, `replayed`, `revoked`.
    pub code: String,
    /// What happened and, where possible, what to do.
    pub message: String,
}

/// The key server's own certificate, which senders seal deposits to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerKey {
    pub fingerprint: Fingerprint,
    pub cert: String,
}

/// Where a list's roster stands on a server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RosterHead {
    pub list: Address,
    pub head_seq: u64,
    pub head_hash: String,
}

/// A list's genesis op, which anyone may read: it names the list, its first policy and its
/// first owner, so a would-be member can pin the list before being on it, but no member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListGenesis {
    pub list: Address,
    pub genesis: Signed,
}

/// What a member asks for when reading a roster (the body of a signed request): the ops after
/// `since`, or the whole log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RosterRead {
    #[serde(default)]
    pub since: Option<u64>,
}

/// Roster ops after a given seq.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RosterOps {
    pub list: Address,
    pub head_seq: u64,
    pub ops: Vec<Signed>,
}

/// A sender's deposit: the post's session key in a sealed deposit (see [`crate::deposit`]):
/// signed by the sender for this list and key id, encrypted to the key server's key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Deposit {
    pub key_id: KeyId,
    #[serde(with = "b64")]
    pub sealed_key: Vec<u8>,
}

impl Deposit {
    /// `sender`'s deposit of `session_key` under `key_id` at `list`, sealed to the key
    /// server certificate `server`.
    pub fn seal<R: Rng + CryptoRng>(
        rng: R,
        sender: &SecretIdentity,
        server: &Cert,
        list: &Address,
        key_id: &KeyId,
        session_key: &SessionKey,
        at: u64,
    ) -> Result<Self, DepositError> {
        Ok(Deposit {
            key_id: key_id.clone(),
            sealed_key: seal_deposit(rng, sender, server, list, key_id, session_key, at)?,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DepositReceipt {
    pub key_id: KeyId,
    /// The roster head the post's readers are judged against.
    pub roster_seq: u64,
    /// Unix seconds when the key will be destroyed, if the list sets a key lifetime.
    pub expires_at: Option<u64>,
}

/// A key released to one member: the session key as a PKESK to their encryption subkey,
/// with who deposited it and the roster head then, so the member's client can check that
/// the post's signer made the deposit and might post at that point of the roster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRelease {
    pub key_id: KeyId,
    #[serde(with = "b64")]
    pub pkesk: Vec<u8>,
    /// The primary fingerprint of the member who deposited the key.
    pub depositor: Fingerprint,
    /// The roster seq of the head when the key was deposited.
    pub roster_seq: u64,
    /// Unix seconds when the key was deposited (0 from a key server that does not say).
    #[serde(default)]
    pub deposited_at: u64,
}

/// The list server's request for one PKESK per recipient of a push-mode post.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantRequest {
    pub recipients: Vec<Fingerprint>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    pub fingerprint: Fingerprint,
    #[serde(with = "b64")]
    pub pkesk: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantRefusal {
    pub fingerprint: Fingerprint,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grants {
    pub key_id: KeyId,
    pub granted: Vec<Grant>,
    pub refused: Vec<GrantRefusal>,
}

/// One record of a key's audit trail, a link of its hash chain (see [`crate::audit`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Its place in the key id's chain, from 1.
    pub seq: u64,
    /// The list the request named.
    pub list: String,
    pub at: u64,
    pub actor: String,
    pub action: String,
    pub outcome: String,
    pub detail: Option<String>,
    /// The chain's hash up to and including this record.
    pub hash: AuditHash,
}

/// A key's whole audit trail, and the key server's signature over its head (an
/// [`AuditHead`](crate::audit::AuditHead) body under its own domain).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditLog {
    pub key_id: KeyId,
    pub entries: Vec<AuditRecord>,
    pub head: Signed,
}

/// What a member asks the list server's archive for (the body of a signed request): posts
/// with ids above `after`, oldest first, at most `limit`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchiveQuery {
    pub after: i64,
    pub limit: u32,
}

/// One archived post: the ciphertext message exactly as it was posted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchivedPost {
    pub id: i64,
    pub received_at: u64,
    pub key_id: String,
    pub message_id: Option<String>,
    #[serde(with = "b64")]
    pub message: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchivePage {
    pub list: Address,
    pub posts: Vec<ArchivedPost>,
    /// Where the next page starts (`after`), when there may be more.
    pub next_after: Option<i64>,
}

/// Suspends or resumes delivery to a member (the body of a signed request from an owner or
/// from that member). Reading rights do not change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliverySwitch {
    pub address: Address,
    pub suspended: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryStatus {
    pub list: Address,
    pub address: Address,
    pub suspended: bool,
}

/// Someone asks to join a list: their certificate, and a request signed with its key (the
/// proof that they hold it) whose body is a [`JoinAsk`]. The list server keeps it exactly as
/// sent, so that owners check the signature themselves before signing an add.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinRequest {
    /// The would-be member's certificate, armored.
    pub cert: String,
    pub request: SignedRequest,
}

/// Why a join request does not hold.
#[derive(Debug, thiserror::Error)]
pub enum JoinRequestError {
    #[error("the certificate is not usable: {0}")]
    BadCert(IdentityError),
    #[error("the certificate cannot receive posts: {0}")]
    CannotReceive(IdentityError),
    #[error("the request is not signed by the certificate it carries for {list}: {source}")]
    BadRequest { list: Address, source: RequestError },
    #[error("the request's body is not a join request: {0}")]
    Malformed(String),
    #[error("the certificate's user ids do not name {0}; ask with the key made for that address")]
    AddressNotInCert(Address),
}

/// A join request whose certificate signed it, for the address one of its user ids names.
#[derive(Debug, Clone)]
pub struct VerifiedJoin {
    pub cert: Cert,
    pub ask: JoinAsk,
    pub request: VerifiedRequest,
}

impl JoinRequest {
    /// Checks everything a join request claims except its age: the certificate is usable and
    /// can receive posts at `at` (unix seconds, now), it signed the request for joining
    /// `list`, and it names the address asked for. The list server checks this when the
    /// request arrives, and each owner's client again before signing an add, trusting
    /// nothing the list server says about it.
    pub fn verify(&self, list: &Address, at: u64) -> Result<VerifiedJoin, JoinRequestError> {
        let cert = Cert::from_bytes(self.cert.as_bytes()).map_err(JoinRequestError::BadCert)?;
        cert.check_encryption_subkey_at(at)
            .map_err(JoinRequestError::CannotReceive)?;
        let request = self
            .request
            .verify_signature(&purpose::join(list), &cert)
            .map_err(|source| JoinRequestError::BadRequest {
                list: list.clone(),
                source,
            })?;
        let ask: JoinAsk = serde_json::from_slice(&request.body)
            .map_err(|e| JoinRequestError::Malformed(e.to_string()))?;
        if !cert
            .addresses()
            .iter()
            .any(|a| a.same_mailbox(&ask.address))
        {
            return Err(JoinRequestError::AddressNotInCert(ask.address));
        }
        Ok(VerifiedJoin { cert, ask, request })
    }
}

/// What a join request asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinAsk {
    pub address: Address,
    /// A few words for the owners.
    #[serde(default)]
    pub note: Option<String>,
}

/// The answer to a join request: filed, and a confirmation mailed to the address, encrypted
/// to the certificate. Only a confirmed request reaches the owners.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinReceipt {
    pub list: Address,
    pub address: Address,
    pub fingerprint: Fingerprint,
    /// Unix seconds after which the request lapses unless it is confirmed.
    pub confirm_by: u64,
}

/// The body of a join confirmation: the token from the mail sent to the address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinConfirmation {
    pub token: String,
}

/// The answer to a confirmation: the request now waits for the owners.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinConfirmed {
    pub list: Address,
    pub address: Address,
    pub fingerprint: Fingerprint,
    /// Unix seconds after which the request lapses unless an owner settles it.
    pub expires_at: u64,
}

/// A join request as the list server shows it to owners. Everything an owner acts on is in
/// `request`, which the owner's client verifies; the other fields are the list server's
/// word (when it was asked, whether the address confirmed it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingJoin {
    pub address: Address,
    pub fingerprint: Fingerprint,
    pub request: JoinRequest,
    /// Whether the requester answered the confirmation mailed to the address. Unconfirmed
    /// requests are shown only beside a confirmed one for the same address, as a conflict.
    pub confirmed: bool,
    pub requested_at: u64,
    pub expires_at: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingJoins {
    pub list: Address,
    pub requests: Vec<PendingJoin>,
}

/// An owner's decision on a join request (the body of a signed request), naming the request
/// by address and key. Approving needs the signed add first: the list server checks that the
/// requester is now on the roster with that key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinDecision {
    pub address: Address,
    pub fingerprint: Fingerprint,
    pub approved: bool,
    /// Told to the requester when rejecting.
    #[serde(default)]
    pub reason: Option<String>,
}

/// A post held for an owner's approval: the ciphertext as posted (owners open it with the
/// key server like any post).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldPost {
    pub id: i64,
    pub from: Address,
    pub received_at: u64,
    pub key_id: String,
    /// Why it was held.
    pub reason: String,
    #[serde(with = "b64")]
    pub message: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldPosts {
    pub list: Address,
    pub posts: Vec<HeldPost>,
}

/// An owner's decision on a held post (the body of a signed request): approved, it goes to
/// the members on the roster at that moment; rejected, it is deleted and its sender told.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeldDecision {
    pub id: i64,
    pub approved: bool,
    /// Told to the sender when rejecting.
    #[serde(default)]
    pub reason: Option<String>,
}

/// Purposes (method and path) that signed requests are bound to, from the endpoints'
/// declarations.
pub mod purpose {
    use super::endpoints::{
        AuditKey, DepositKey, Endpoint, FetchKey, HeldPostList, Join, PendingJoinRequests,
        ReadArchive, ReadRoster, RevokeKey, SettleHeld, SettleJoin, SwitchDelivery,
    };
    use super::*;

    pub fn read_roster(list: &Address) -> String {
        ReadRoster::purpose(list)
    }

    pub fn archive(list: &Address) -> String {
        ReadArchive::purpose(list)
    }

    pub fn delivery(list: &Address) -> String {
        SwitchDelivery::purpose(list)
    }

    pub fn join(list: &Address) -> String {
        Join::purpose(list)
    }

    pub fn join_requests(list: &Address) -> String {
        PendingJoinRequests::purpose(list)
    }

    pub fn settle_join(list: &Address) -> String {
        SettleJoin::purpose(list)
    }

    pub fn held(list: &Address) -> String {
        HeldPostList::purpose(list)
    }

    pub fn settle_held(list: &Address) -> String {
        SettleHeld::purpose(list)
    }

    pub fn deposit(list: &Address) -> String {
        DepositKey::purpose(list)
    }

    pub fn fetch_key(list: &Address, key_id: &KeyId) -> String {
        FetchKey::purpose(&(list.clone(), key_id.clone()))
    }

    pub fn revoke(list: &Address, key_id: &KeyId) -> String {
        RevokeKey::purpose(&(list.clone(), key_id.clone()))
    }

    pub fn audit(list: &Address, key_id: &KeyId) -> String {
        AuditKey::purpose(&(list.clone(), key_id.clone()))
    }
}
