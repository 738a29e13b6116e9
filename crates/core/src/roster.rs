//! A list's membership: an append-only log of operations, each naming the hash of the one
//! before and signed by an owner valid at that point. Both servers replay the log and verify
//! every signature and link before acting, so neither can enrol a reader on its own.
//!
//! Ops are kept as the exact signed bytes ([`Signed`]); a body is parsed only once its
//! signature has been checked against an owner (the genesis op, which has no prior owner, is
//! checked against the owner certificate it carries).

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use rand::{CryptoRng, Rng};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::address::Address;
use crate::identity::{
    Cert, Fingerprint, IdentityError, NotValid, SecretIdentity, ShortKeyId, SignatureRefusal,
};
use crate::signed::{Domain, Signed};

/// What a member may do. Every role may read; owners sign roster changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Owner,
    Member,
    Reader,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Owner => "owner",
            Role::Member => "member",
            Role::Reader => "reader",
        })
    }
}

/// Who may post to the list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Posters {
    /// Owners and members (readers never post).
    Members,
    Owners,
}

/// Which posts wait for an owner's approval before they are delivered. A held post stays
/// ciphertext at the list server; its key is deposited as usual, so owners can read it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Moderation {
    /// Posts from those allowed to post go out at once; others are refused.
    #[default]
    None,
    /// Posts from people on the roster who may not post (readers, or members when only
    /// owners post) are held instead of refused.
    NonPosters,
    /// Every post is held.
    All,
}

/// What the list does with an acceptable post.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    Deliver,
    /// Held for an owner's approval, for this reason.
    Hold(String),
}

/// Which roster decides who may fetch a post's key. The policy in force when a post was made
/// decides for that post; a later change applies only to later posts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyFollows {
    /// Whoever was a member when the post was made keeps access after removal.
    PostingRoster,
    /// Only current members get keys, so removing someone revokes their access to every post
    /// made under this policy (posts made earlier under `PostingRoster` stay readable by
    /// whoever was a member then).
    CurrentRoster,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryMode {
    /// Ciphertext goes out as is; members fetch the key from the key server.
    Pull,
    /// The list server splices one PKESK per member, so any OpenPGP client reads the post.
    Push,
}

/// Whose address a delivered copy's From carries. The list changes what the author signed
/// with DKIM (Subject, headers), so a copy From the author's address fails DMARC at
/// receivers; the author's own From is what OpenPGP clients check the post's signer against.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FromRewrite {
    /// "Name via list" only when the author's domain publishes a DMARC policy of quarantine
    /// or reject, or when that cannot be looked up; otherwise the author's From.
    #[default]
    Dmarc,
    /// Always "Name via list".
    Always,
    /// Always the author's From, even where their domain asks receivers to refuse such mail.
    Never,
}

/// The rules a list's posts follow, set by its owners in the roster log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    pub posters: Posters,
    pub key_follows: KeyFollows,
    pub new_members_read_old: bool,
    pub delivery: DeliveryMode,
    /// Seconds after posting when the key server destroys a post's key; `None` keeps it.
    pub key_lifetime_secs: Option<u64>,
    /// Absent in rosters signed before moderation existed: none.
    #[serde(default)]
    pub moderation: Moderation,
    /// Absent in rosters signed before it existed: [`FromRewrite::Dmarc`].
    #[serde(default)]
    pub from_rewrite: FromRewrite,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            posters: Posters::Members,
            key_follows: KeyFollows::CurrentRoster,
            new_members_read_old: false,
            delivery: DeliveryMode::Pull,
            key_lifetime_secs: None,
            moderation: Moderation::None,
            from_rewrite: FromRewrite::Dmarc,
        }
    }
}

/// A member as a roster op names them: address, armored certificate, role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberEntry {
    pub address: Address,
    pub cert: String,
    pub role: Role,
}

/// The change one roster op makes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Change {
    Genesis { policy: Policy, owner: MemberEntry },
    Add { member: MemberEntry },
    Remove { address: Address },
    SetRole { address: Address, role: Role },
    SetPolicy { policy: Policy },
}

/// The signed body of a roster op.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpBody {
    pub list: Address,
    pub seq: u64,
    /// Hash of the previous op; `None` only for the genesis op (seq 0).
    pub prev: Option<OpHash>,
    pub signer: Fingerprint,
    /// Unix seconds when the owner signed the op: a certificate the op adds must be able to
    /// receive keys then (not expired), so replaying the log later still accepts it.
    pub signed_at: u64,
    pub change: Change,
}

/// SHA-256 of an op's exact body bytes, lowercase hex.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct OpHash(String);

impl OpHash {
    pub fn of(body: &[u8]) -> Self {
        OpHash(hex::encode(Sha256::digest(body)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for OpHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Text that is not an op hash (64 hex digits).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an op hash (64 hex digits)")]
pub struct BadOpHash(pub String);

impl std::str::FromStr for OpHash {
    type Err = BadOpHash;

    /// An op hash as printed (hex, either case), e.g. a list's genesis hash handed out by
    /// its owner.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            Ok(OpHash(text.to_ascii_lowercase()))
        } else {
            Err(BadOpHash(text.to_owned()))
        }
    }
}

/// A roster op as stored and sent: the exact signed body bytes and the signature.
pub type SignedOp = Signed;

/// Why a roster op was refused. Each refusal has its own variant so servers and clients can
/// tell a fork from a replay from a forged op.
#[derive(Debug, thiserror::Error)]
pub enum RosterError {
    #[error("op {seq} is already in the log (replayed)")]
    Replayed { seq: u64 },
    #[error("op {seq} conflicts with the op already at that position (fork)")]
    Fork { seq: u64 },
    #[error("op {seq} names a previous op that is not the head of the log")]
    WrongPrevious { seq: u64 },
    #[error("op {got} arrived but the log expects op {expected} next")]
    Gap { expected: u64, got: u64 },
    #[error("the signature is not valid for any owner of the list")]
    BadSignature,
    #[error("the op's signature is genuine but its key was not valid: {0}")]
    SignerKeyNotValid(NotValid),
    #[error("{signer} signed the op but is a {role}, not an owner")]
    NotOwner { signer: Fingerprint, role: Role },
    #[error("{signer} signed the op but is no longer an owner of the list")]
    FormerOwner { signer: Fingerprint },
    #[error("the op is signed by {actual} but names {claimed} as signer")]
    SignerMismatch {
        claimed: Fingerprint,
        actual: Fingerprint,
    },
    #[error("the op is for list {got}, not {expected}")]
    WrongList { expected: Address, got: Address },
    #[error("the first op of a list must be its genesis")]
    GenesisExpected,
    #[error("a list has only one genesis op")]
    SecondGenesis,
    #[error("the op would leave the list without an owner")]
    LastOwner,
    #[error("{0} is already on the roster")]
    AlreadyMember(Address),
    #[error("{0} is not on the roster")]
    UnknownMember(Address),
    #[error("certificate {0} is already on the roster under another address")]
    CertInUse(Fingerprint),
    #[error(
        "the certificate carries key {key}, a key of {holder_address}'s certificate {holder} on the roster; a certificate may not carry another member's key"
    )]
    KeyInUse {
        key: Fingerprint,
        holder: Fingerprint,
        holder_address: Address,
    },
    #[error(
        "the certificate carries key {key} with key id {key_id}, the id of a key of {holder_address}'s certificate {holder} on the roster; keys with one id are confused for each other"
    )]
    KeyIdInUse {
        key: Fingerprint,
        key_id: ShortKeyId,
        holder: Fingerprint,
        holder_address: Address,
    },
    #[error("the member certificate is unusable: {0}")]
    BadCert(#[from] IdentityError),
    #[error("the op body is not a valid roster op: {0}")]
    Malformed(String),
}

impl RosterError {
    fn unsigned(refusal: SignatureRefusal) -> Self {
        match refusal {
            SignatureRefusal::KeyNotValid(not_valid) => RosterError::SignerKeyNotValid(not_valid),
            SignatureRefusal::NotBy(_) => RosterError::BadSignature,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Member {
    pub address: Address,
    pub cert: Cert,
    pub role: Role,
    /// Seq of the op that added the member.
    pub since: u64,
}

/// One stretch of seqs during which a key held a role; `until` is the seq of the op that
/// ended it (exclusive), `None` while it lasts.
#[derive(Debug, Clone)]
struct Tenure {
    from: u64,
    until: Option<u64>,
    role: Role,
}

/// Why a reader or poster was refused under the roster and policy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("{0} is not a member of the list")]
    NotMember(Fingerprint),
    #[error("{fingerprint} is a {role} and the list lets only {posters:?} post")]
    MayNotPost {
        fingerprint: Fingerprint,
        role: Role,
        posters: Posters,
    },
    #[error("{0} is no longer a member and the list's keys follow the current roster")]
    RemovedSincePosting(Fingerprint),
    #[error("{0} joined after the post and the list does not let new members read older posts")]
    JoinedAfterPosting(Fingerprint),
    #[error("post was made at roster seq {posted_at}, but the roster head is {head}")]
    FuturePost { posted_at: u64, head: u64 },
}

/// A certificate ever on the roster, with the address it was last enrolled under.
#[derive(Debug, Clone)]
struct KnownCert {
    address: Address,
    cert: Cert,
}

/// A verified roster: the log and the state it leads to.
#[derive(Debug, Clone)]
pub struct Roster {
    list: Address,
    ops: Vec<SignedOp>,
    hashes: Vec<OpHash>,
    seq_of: HashMap<OpHash, u64>,
    members: BTreeMap<Address, Member>,
    /// Each member's address by its mailbox (lowercased): two members whose addresses differ
    /// only in case would be one mailbox to every mail server, so the second is refused.
    mailboxes: HashMap<String, Address>,
    address_of: HashMap<Fingerprint, Address>,
    /// Every certificate ever on the roster, by primary fingerprint (a member's identity),
    /// with the address it was last enrolled under, so ops and requests signed by removed
    /// members can be recognised (and refused as such, or honoured for old posts).
    known_certs: HashMap<Fingerprint, KnownCert>,
    /// The primary fingerprint holding each key (primary or subkey) of those certificates,
    /// by fingerprint and by key id. A key belongs to one certificate only: enrolment
    /// refuses a certificate carrying another's key, so a signature's issuer names one
    /// certificate and nobody can file a copy of someone's public key under their own name.
    key_holders: HashMap<Fingerprint, Fingerprint>,
    key_id_holders: HashMap<ShortKeyId, Fingerprint>,
    tenures: HashMap<Fingerprint, Vec<Tenure>>,
    /// Policy changes as (seq, policy), in seq order; the first is the genesis policy.
    policies: Vec<(u64, Policy)>,
}

impl Roster {
    /// Starts a roster from its genesis op, verified against the owner certificate it names.
    pub fn genesis(op: SignedOp) -> Result<Self, RosterError> {
        let body = parse_body(&op.body)?;
        let Change::Genesis { policy, owner } = &body.change else {
            return Err(RosterError::GenesisExpected);
        };
        if body.seq != 0 || body.prev.is_some() {
            return Err(RosterError::GenesisExpected);
        }
        let cert = Cert::from_bytes(owner.cert.as_bytes())?;
        cert.check_encryption_subkey_at(body.signed_at)?;
        if owner.role != Role::Owner {
            return Err(RosterError::LastOwner);
        }
        op.check(Domain::RosterOp, &cert, None)
            .map_err(RosterError::unsigned)?;
        if body.signer != *cert.fingerprint() {
            return Err(RosterError::SignerMismatch {
                claimed: body.signer,
                actual: cert.fingerprint().clone(),
            });
        }
        let mut roster = Roster {
            list: body.list.clone(),
            ops: Vec::new(),
            hashes: Vec::new(),
            seq_of: HashMap::new(),
            members: BTreeMap::new(),
            mailboxes: HashMap::new(),
            address_of: HashMap::new(),
            known_certs: HashMap::new(),
            key_holders: HashMap::new(),
            key_id_holders: HashMap::new(),
            tenures: HashMap::new(),
            policies: vec![(0, policy.clone())],
        };
        roster.enrol(owner.address.clone(), cert, Role::Owner, 0)?;
        roster.append(op);
        Ok(roster)
    }

    /// Replays a whole log, verifying every op.
    pub fn from_log(ops: impl IntoIterator<Item = SignedOp>) -> Result<Self, RosterError> {
        let mut ops = ops.into_iter();
        let mut roster = Roster::genesis(ops.next().ok_or(RosterError::GenesisExpected)?)?;
        for op in ops {
            roster.apply(op)?;
        }
        Ok(roster)
    }

    /// Verifies `op` against the current head and owners, then appends it.
    pub fn apply(&mut self, op: SignedOp) -> Result<(), RosterError> {
        if let Some(&seq) = self.seq_of.get(&OpHash::of(&op.body)) {
            return Err(RosterError::Replayed { seq });
        }
        let signer = self.verified_owner(&op)?;
        let body = parse_body(&op.body)?;
        if body.list != self.list {
            return Err(RosterError::WrongList {
                expected: self.list.clone(),
                got: body.list,
            });
        }
        let next = self.ops.len() as u64;
        if body.seq < next {
            return Err(RosterError::Fork { seq: body.seq });
        }
        if body.seq > next {
            return Err(RosterError::Gap {
                expected: next,
                got: body.seq,
            });
        }
        if body.prev.as_ref() != Some(self.head_hash()) {
            return Err(RosterError::WrongPrevious { seq: body.seq });
        }
        if body.signer != signer {
            return Err(RosterError::SignerMismatch {
                claimed: body.signer,
                actual: signer,
            });
        }
        self.change(body.seq, body.signed_at, body.change)?;
        self.append(op);
        Ok(())
    }

    fn append(&mut self, op: SignedOp) {
        let hash = OpHash::of(&op.body);
        self.seq_of.insert(hash.clone(), self.ops.len() as u64);
        self.hashes.push(hash);
        self.ops.push(op);
    }

    /// Which current owner made the op's signature, or the precise reason none did.
    fn verified_owner(&self, op: &SignedOp) -> Result<Fingerprint, RosterError> {
        let cert = op
            .find_signer(Domain::RosterOp, |issuer| self.holder_cert(issuer))
            .ok_or_else(|| self.why_unsigned(op))?;
        let fingerprint = cert.fingerprint().clone();
        match self.current_role(&fingerprint) {
            Some(Role::Owner) => Ok(fingerprint),
            Some(role) if !self.was_ever(&fingerprint, Role::Owner) => Err(RosterError::NotOwner {
                signer: fingerprint,
                role,
            }),
            _ if self.was_ever(&fingerprint, Role::Owner) => Err(RosterError::FormerOwner {
                signer: fingerprint,
            }),
            _ => Err(RosterError::BadSignature),
        }
    }

    /// Why no certificate on the roster made the op's signature: a genuine signature by a
    /// key that was not valid when it signed, or none at all.
    fn why_unsigned(&self, op: &SignedOp) -> RosterError {
        op.issuer_fingerprints()
            .iter()
            .filter_map(|issuer| self.holder_cert(issuer))
            .find_map(|cert| match op.check(Domain::RosterOp, cert, None) {
                Err(refusal @ SignatureRefusal::KeyNotValid(_)) => {
                    Some(RosterError::unsigned(refusal))
                }
                _ => None,
            })
            .unwrap_or(RosterError::BadSignature)
    }

    fn change(&mut self, seq: u64, signed_at: u64, change: Change) -> Result<(), RosterError> {
        match change {
            Change::Genesis { .. } => Err(RosterError::SecondGenesis),
            Change::Add { member } => {
                let cert = Cert::from_bytes(member.cert.as_bytes())?;
                cert.check_encryption_subkey_at(signed_at)?;
                self.enrol(member.address, cert, member.role, seq)
            }
            Change::Remove { address } => {
                let member = self
                    .members
                    .get(&address)
                    .ok_or_else(|| RosterError::UnknownMember(address.clone()))?;
                if member.role == Role::Owner && self.owner_count() == 1 {
                    return Err(RosterError::LastOwner);
                }
                let member = self.members.remove(&address).expect("checked above");
                self.mailboxes
                    .remove(&address.as_str().to_ascii_lowercase());
                let fingerprint = member.cert.fingerprint();
                self.address_of.remove(fingerprint);
                self.end_tenure(fingerprint, seq);
                Ok(())
            }
            Change::SetRole { address, role } => {
                let member = self
                    .members
                    .get(&address)
                    .ok_or_else(|| RosterError::UnknownMember(address.clone()))?;
                if member.role == Role::Owner && role != Role::Owner && self.owner_count() == 1 {
                    return Err(RosterError::LastOwner);
                }
                let fingerprint = member.cert.fingerprint().clone();
                self.end_tenure(&fingerprint, seq);
                self.tenures.entry(fingerprint).or_default().push(Tenure {
                    from: seq,
                    until: None,
                    role,
                });
                self.members.get_mut(&address).expect("checked above").role = role;
                Ok(())
            }
            Change::SetPolicy { policy } => {
                self.policies.push((seq, policy));
                Ok(())
            }
        }
    }

    fn enrol(
        &mut self,
        address: Address,
        cert: Cert,
        role: Role,
        seq: u64,
    ) -> Result<(), RosterError> {
        let mailbox = address.as_str().to_ascii_lowercase();
        if self.mailboxes.contains_key(&mailbox) {
            return Err(RosterError::AlreadyMember(address));
        }
        self.check_cert_may_join(&cert)?;
        self.mailboxes.insert(mailbox, address.clone());
        let fingerprint = cert.fingerprint().clone();
        for key in cert.keys() {
            self.key_holders
                .insert(key.fingerprint.clone(), fingerprint.clone());
            self.key_id_holders.insert(key.key_id, fingerprint.clone());
        }
        self.known_certs.insert(
            fingerprint.clone(),
            KnownCert {
                address: address.clone(),
                cert: cert.clone(),
            },
        );
        self.address_of.insert(fingerprint.clone(), address.clone());
        self.tenures.entry(fingerprint).or_default().push(Tenure {
            from: seq,
            until: None,
            role,
        });
        self.members.insert(
            address.clone(),
            Member {
                address,
                cert,
                role,
                since: seq,
            },
        );
        Ok(())
    }

    /// Whether `cert` may be enrolled: it is not a current member's, and none of its keys, by
    /// fingerprint or by key id, is a key of another certificate ever on the roster. The
    /// same certificate (a removed member re-added, or their updated certificate with the
    /// same primary key) holds its own keys and passes.
    pub fn check_cert_may_join(&self, cert: &Cert) -> Result<(), RosterError> {
        if self.address_of.contains_key(cert.fingerprint()) {
            return Err(RosterError::CertInUse(cert.fingerprint().clone()));
        }
        let another = |holder: Option<&Fingerprint>| {
            holder
                .filter(|holder| *holder != cert.fingerprint())
                .map(|holder| (holder.clone(), self.known_certs[holder].address.clone()))
        };
        for key in cert.keys() {
            if let Some((holder, holder_address)) = another(self.key_holders.get(&key.fingerprint))
            {
                return Err(RosterError::KeyInUse {
                    key: key.fingerprint.clone(),
                    holder,
                    holder_address,
                });
            }
            if let Some((holder, holder_address)) = another(self.key_id_holders.get(&key.key_id)) {
                return Err(RosterError::KeyIdInUse {
                    key: key.fingerprint.clone(),
                    key_id: key.key_id,
                    holder,
                    holder_address,
                });
            }
        }
        Ok(())
    }

    /// The certificate holding the key with this fingerprint (primary or subkey).
    fn holder_cert(&self, key: &Fingerprint) -> Option<&Cert> {
        self.known_cert(self.key_holders.get(key)?)
    }

    fn end_tenure(&mut self, fingerprint: &Fingerprint, seq: u64) {
        if let Some(open) = self
            .tenures
            .get_mut(fingerprint)
            .and_then(|t| t.last_mut())
            .filter(|t| t.until.is_none())
        {
            open.until = Some(seq);
        }
    }

    fn owner_count(&self) -> usize {
        self.members
            .values()
            .filter(|m| m.role == Role::Owner)
            .count()
    }

    fn current_role(&self, fingerprint: &Fingerprint) -> Option<Role> {
        let address = self.address_of.get(fingerprint)?;
        self.members.get(address).map(|m| m.role)
    }

    fn was_ever(&self, fingerprint: &Fingerprint, role: Role) -> bool {
        self.tenures
            .get(fingerprint)
            .is_some_and(|ts| ts.iter().any(|t| t.role == role))
    }

    /// The role `fingerprint` held in the state right after op `seq`.
    fn role_at(&self, fingerprint: &Fingerprint, seq: u64) -> Option<Role> {
        self.tenures.get(fingerprint)?.iter().find_map(|t| {
            (t.from <= seq && t.until.is_none_or(|until| seq < until)).then_some(t.role)
        })
    }

    pub fn list(&self) -> &Address {
        &self.list
    }

    /// Seq of the newest op.
    pub fn head_seq(&self) -> u64 {
        self.ops.len() as u64 - 1
    }

    pub fn head_hash(&self) -> &OpHash {
        self.hashes
            .last()
            .expect("a roster always holds its genesis")
    }

    /// Hash of the op at `seq`, if the log reaches it.
    pub fn hash_at(&self, seq: u64) -> Option<&OpHash> {
        self.hashes.get(usize::try_from(seq).ok()?)
    }

    pub fn ops(&self) -> &[SignedOp] {
        &self.ops
    }

    /// Ops after `seq`, for a peer that has the log up to `seq`.
    pub fn ops_since(&self, seq: u64) -> &[SignedOp] {
        let start = usize::try_from(seq.saturating_add(1)).unwrap_or(usize::MAX);
        self.ops.get(start..).unwrap_or(&[])
    }

    pub fn policy(&self) -> &Policy {
        self.policy_at(self.head_seq())
    }

    /// The policy in force right after op `seq`.
    pub fn policy_at(&self, seq: u64) -> &Policy {
        &self
            .policies
            .iter()
            .rev()
            .find(|(from, _)| *from <= seq)
            .expect("the genesis policy applies from seq 0")
            .1
    }

    pub fn members(&self) -> impl Iterator<Item = &Member> {
        self.members.values()
    }

    /// The current member with this address.
    pub fn member(&self, address: &Address) -> Option<&Member> {
        self.members.get(address)
    }

    /// The certificate of anyone ever on the roster (removed members included), by primary
    /// fingerprint: what a server verifies their signed requests with.
    pub fn known_cert(&self, fingerprint: &Fingerprint) -> Option<&Cert> {
        self.known_certs.get(fingerprint).map(|known| &known.cert)
    }

    /// The last seq of the log `fingerprint` may read: the head for a current member; for a
    /// former member, the op that removed them, so that they can still check who signed the
    /// posts they may read but learn nothing of later changes; `None` for anyone never on it.
    pub fn readable_by(&self, fingerprint: &Fingerprint) -> Option<u64> {
        if self.member_by_fingerprint(fingerprint).is_some() {
            return Some(self.head_seq());
        }
        self.tenures
            .get(fingerprint)?
            .iter()
            .filter_map(|t| t.until)
            .max()
    }

    pub fn member_by_fingerprint(&self, fingerprint: &Fingerprint) -> Option<&Member> {
        self.members.get(self.address_of.get(fingerprint)?)
    }

    /// Builds and signs the next op on top of this roster's head. The caller sends it to both
    /// servers; [`Roster::apply`] is what accepts it.
    pub fn sign_next<R: Rng + CryptoRng>(
        &self,
        rng: R,
        owner: &SecretIdentity,
        signed_at: u64,
        change: Change,
    ) -> Result<SignedOp, RosterError> {
        let body = OpBody {
            list: self.list.clone(),
            seq: self.head_seq() + 1,
            prev: Some(self.head_hash().clone()),
            signer: owner.fingerprint().clone(),
            signed_at,
            change,
        };
        sign_body(rng, owner, &body)
    }

    /// May the holder of `fingerprint` post now?
    pub fn may_post(&self, fingerprint: &Fingerprint) -> Result<&Member, Refusal> {
        let member = self
            .member_by_fingerprint(fingerprint)
            .ok_or_else(|| Refusal::NotMember(fingerprint.clone()))?;
        let posters = self.policy().posters;
        let allowed = match member.role {
            Role::Owner => true,
            Role::Member => posters == Posters::Members,
            Role::Reader => false,
        };
        if allowed {
            Ok(member)
        } else {
            Err(Refusal::MayNotPost {
                fingerprint: fingerprint.clone(),
                role: member.role,
                posters,
            })
        }
    }

    /// Might the holder of `fingerprint` post right after op `seq` (the roster head when a
    /// post's key was deposited)? The role they held then and the policy in force then
    /// decide; a reader checks a post by this, since the roster may have changed since.
    pub fn may_post_at(&self, fingerprint: &Fingerprint, seq: u64) -> Result<Role, Refusal> {
        if seq > self.head_seq() {
            return Err(Refusal::FuturePost {
                posted_at: seq,
                head: self.head_seq(),
            });
        }
        let role = self
            .role_at(fingerprint, seq)
            .ok_or_else(|| Refusal::NotMember(fingerprint.clone()))?;
        let posters = self.policy_at(seq).posters;
        match role {
            Role::Owner => Ok(role),
            Role::Member if posters == Posters::Members => Ok(role),
            _ => Err(Refusal::MayNotPost {
                fingerprint: fingerprint.clone(),
                role,
                posters,
            }),
        }
    }

    /// May the holder of `fingerprint` deposit a post's key? Whoever may post, and under
    /// [`Moderation::NonPosters`] anyone on the roster, since their post will be held.
    pub fn may_deposit(&self, fingerprint: &Fingerprint) -> Result<&Member, Refusal> {
        match self.may_post(fingerprint) {
            Err(Refusal::MayNotPost { .. })
                if self.policy().moderation == Moderation::NonPosters =>
            {
                self.member_by_fingerprint(fingerprint)
                    .ok_or_else(|| Refusal::NotMember(fingerprint.clone()))
            }
            other => other,
        }
    }

    /// What becomes of a post by the holder of `fingerprint` now: delivered, held for an
    /// owner (and why), or refused.
    pub fn admit_post(&self, fingerprint: &Fingerprint) -> Result<Admission, Refusal> {
        match (self.may_post(fingerprint), self.policy().moderation) {
            (Ok(_), Moderation::All) => Ok(Admission::Hold(
                "every post to this list waits for an owner's approval".into(),
            )),
            (Ok(_), _) => Ok(Admission::Deliver),
            (Err(refusal @ Refusal::MayNotPost { .. }), Moderation::NonPosters) => {
                Ok(Admission::Hold(refusal.to_string()))
            }
            (Err(refusal), _) => Err(refusal),
        }
    }

    /// The member whose roster address is `address`'s mailbox (what a post's From names; the
    /// list server then checks the post's proof with that member's certificate).
    pub fn member_by_mailbox(&self, address: &Address) -> Option<&Member> {
        self.mailboxes
            .get(&address.as_str().to_ascii_lowercase())
            .and_then(|address| self.members.get(address))
    }

    /// May the holder of `fingerprint` get the key of a post made when the roster head was
    /// `posted_at`? The policy in force at posting decides which roster counts. Returns the
    /// certificate to seal the key to (a removed member's is still known from the log).
    pub fn may_read(&self, fingerprint: &Fingerprint, posted_at: u64) -> Result<&Cert, Refusal> {
        if posted_at > self.head_seq() {
            return Err(Refusal::FuturePost {
                posted_at,
                head: self.head_seq(),
            });
        }
        let policy = self.policy_at(posted_at);
        let member_then = self.role_at(fingerprint, posted_at).is_some();
        let member_now = self.member_by_fingerprint(fingerprint);
        let refusal = match (policy.key_follows, member_then, member_now) {
            (KeyFollows::PostingRoster, true, _) | (KeyFollows::CurrentRoster, true, Some(_)) => {
                None
            }
            (_, false, Some(_)) if policy.new_members_read_old => None,
            (_, false, Some(_)) => Some(Refusal::JoinedAfterPosting(fingerprint.clone())),
            (KeyFollows::CurrentRoster, true, None) => {
                Some(Refusal::RemovedSincePosting(fingerprint.clone()))
            }
            (_, false, None) => Some(Refusal::NotMember(fingerprint.clone())),
        };
        match (refusal, self.known_cert(fingerprint)) {
            (Some(refusal), _) => Err(refusal),
            (None, Some(cert)) => Ok(cert),
            (None, None) => Err(Refusal::NotMember(fingerprint.clone())),
        }
    }
}

/// Signs the genesis op of a new list.
pub fn sign_genesis<R: Rng + CryptoRng>(
    rng: R,
    owner: &SecretIdentity,
    owner_address: Address,
    list: Address,
    policy: Policy,
    signed_at: u64,
) -> Result<SignedOp, RosterError> {
    let body = OpBody {
        list,
        seq: 0,
        prev: None,
        signer: owner.fingerprint().clone(),
        signed_at,
        change: Change::Genesis {
            policy,
            owner: MemberEntry {
                address: owner_address,
                cert: owner.cert().to_armored(),
                role: Role::Owner,
            },
        },
    };
    sign_body(rng, owner, &body)
}

fn sign_body<R: Rng + CryptoRng>(
    rng: R,
    owner: &SecretIdentity,
    body: &OpBody,
) -> Result<SignedOp, RosterError> {
    let bytes = serde_json::to_vec(body).expect("roster op bodies always serialize");
    Ok(Signed::sign(rng, Domain::RosterOp, owner, bytes)?)
}

/// Parses an op body; used only after its signature has been checked (or, for genesis, to
/// find the certificate to check it with).
pub fn parse_body(body: &[u8]) -> Result<OpBody, RosterError> {
    serde_json::from_slice(body).map_err(|e| RosterError::Malformed(e.to_string()))
}

#[cfg(test)]
mod tests {
    use rand::rngs::OsRng;

    use super::*;

    /// Two keys with one 64-bit key id but different fingerprints cost about 2^64 work to
    /// make, so the collision is planted in the roster's index: Bob's encryption subkey's id
    /// is filed as a key of Olivia's.
    #[test]
    fn a_key_sharing_a_key_id_with_a_roster_key_is_refused() {
        let olivia = SecretIdentity::generate(OsRng, "olivia@example.org").unwrap();
        let bob = SecretIdentity::generate(OsRng, "bob@example.org").unwrap();
        let address = |a: &str| Address::parse(a).unwrap();
        let genesis = sign_genesis(
            OsRng,
            &olivia,
            address("olivia@example.org"),
            address("team@lists.example.org"),
            Policy::default(),
            1,
        )
        .unwrap();
        let mut roster = Roster::genesis(genesis).unwrap();
        let subkey = bob.cert().keys()[1].clone();
        roster
            .key_id_holders
            .insert(subkey.key_id, olivia.fingerprint().clone());
        match roster.enrol(
            address("bob@example.org"),
            bob.cert().clone(),
            Role::Member,
            1,
        ) {
            Err(RosterError::KeyIdInUse {
                key,
                key_id,
                holder,
                holder_address,
            }) => {
                assert_eq!(key, subkey.fingerprint);
                assert_eq!(key_id, subkey.key_id);
                assert_eq!(&holder, olivia.fingerprint());
                assert_eq!(holder_address, address("olivia@example.org"));
            }
            other => panic!("expected KeyIdInUse, got {other:?}"),
        }
    }
}
