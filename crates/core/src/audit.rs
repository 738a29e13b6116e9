//! The key server's audit trail as a hash chain, one chain per key id: record `seq` (from 1)
//! has hash `SHA-256(prefix || hash of record seq-1 || record)`, the record before the first
//! being [`AuditHash::START`]. The server signs the chain's head with its own key when it is
//! read ([`AuditHead`], under [`Domain::AuditHead`]), so a client can check that the records
//! it is shown link up to a head the pinned key server vouches for, and remember that head: a
//! later log that does not hold the same hash at that seq was rewritten. The store (which
//! computes the hashes) and the client (which checks them) use this one definition.

use std::fmt;

use rand::{CryptoRng, Rng};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::address::Address;
use crate::api::{AuditLog, AuditRecord};
use crate::identity::{Cert, IdentityError, SecretIdentity};
use crate::session::KeyId;
use crate::signed::{Domain, Signed};

/// Domain prefix of every record hash, so no other SHA-256 in hushlist collides with one.
const RECORD_PREFIX: &[u8] = b"hushlist audit-record v1\n";

/// SHA-256 of an audit record and everything before it in its key id's chain.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct AuditHash([u8; 32]);

impl AuditHash {
    /// What the first record of a chain links to.
    pub const START: AuditHash = AuditHash([0; 32]);

    /// The hash of the record `fields` at `seq`, following the record whose hash is `self`.
    pub fn next(&self, seq: u64, fields: &AuditFields<'_>) -> AuditHash {
        let mut hasher = Sha256::new();
        hasher.update(RECORD_PREFIX);
        hasher.update(self.0);
        hasher.update(seq.to_be_bytes());
        for text in [
            fields.key_id,
            fields.list,
            fields.actor,
            fields.action,
            fields.outcome,
        ] {
            length_prefixed(&mut hasher, text);
        }
        hasher.update(fields.at.to_be_bytes());
        match fields.detail {
            None => hasher.update([0]),
            Some(detail) => {
                hasher.update([1]);
                length_prefixed(&mut hasher, detail);
            }
        }
        AuditHash(hasher.finalize().into())
    }

    pub fn from_bytes(bytes: &[u8]) -> Option<AuditHash> {
        bytes.try_into().ok().map(AuditHash)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

/// Each text field hashed with its length, so no two records share an encoding.
fn length_prefixed(hasher: &mut Sha256, text: &str) {
    hasher.update((text.len() as u64).to_be_bytes());
    hasher.update(text.as_bytes());
}

impl fmt::Display for AuditHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for AuditHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AuditHash({self})")
    }
}

impl Serialize for AuditHash {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for AuditHash {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        hex::decode(&text)
            .ok()
            .and_then(|bytes| AuditHash::from_bytes(&bytes))
            .ok_or_else(|| serde::de::Error::custom(format!("{text:?} is not 64 hex digits")))
    }
}

/// What a record's hash covers besides its seq and the previous hash.
#[derive(Debug, Clone, Copy)]
pub struct AuditFields<'a> {
    pub key_id: &'a str,
    pub list: &'a str,
    pub at: u64,
    pub actor: &'a str,
    pub action: &'a str,
    pub outcome: &'a str,
    pub detail: Option<&'a str>,
}

impl AuditRecord {
    pub fn fields<'a>(&'a self, key_id: &'a KeyId) -> AuditFields<'a> {
        AuditFields {
            key_id: key_id.as_str(),
            list: &self.list,
            at: self.at,
            actor: &self.actor,
            action: &self.action,
            outcome: &self.outcome,
            detail: self.detail.as_deref(),
        }
    }
}

/// The body the key server signs over a chain's head: the last record's seq and hash (seq 0
/// and [`AuditHash::START`] for a key id with no records).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditHead {
    pub list: Address,
    pub key_id: KeyId,
    pub seq: u64,
    pub hash: AuditHash,
}

impl AuditHead {
    pub fn to_body(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("an audit head serializes")
    }
}

impl fmt::Display for AuditHead {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} key {} at seq {} ({})",
            self.list, self.key_id, self.seq, self.hash
        )
    }
}

/// Why an audit log does not hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuditChainError {
    #[error(
        "the record at position {position} has seq {got}, not {expected}: a record was deleted or inserted"
    )]
    Gap {
        position: usize,
        expected: u64,
        got: u64,
    },
    #[error(
        "record {seq} does not hash to {claimed} (its fields and the chain before it give {computed}): it or an earlier record was changed"
    )]
    BrokenLink {
        seq: u64,
        claimed: AuditHash,
        computed: AuditHash,
    },
    #[error("the head is not signed by the key server's pinned certificate")]
    BadHeadSignature,
    #[error("the signed head is not an audit head: {0}")]
    MalformedHead(String),
    #[error("the signed head names {signed}, but the records shown are of {shown}")]
    HeadMismatch {
        signed: Box<AuditHead>,
        shown: Box<AuditHead>,
    },
}

/// Checks that `records` of `key_id` form a chain from its start: seqs 1, 2, … in order, each
/// hashing to what it claims. Returns the last seq and hash (0 and START for none).
pub fn verify_links(
    key_id: &KeyId,
    records: &[AuditRecord],
) -> Result<(u64, AuditHash), AuditChainError> {
    let mut head = (0, AuditHash::START);
    for (position, record) in records.iter().enumerate() {
        let expected = head.0 + 1;
        if record.seq != expected {
            return Err(AuditChainError::Gap {
                position,
                expected,
                got: record.seq,
            });
        }
        let computed = head.1.next(record.seq, &record.fields(key_id));
        if computed != record.hash {
            return Err(AuditChainError::BrokenLink {
                seq: record.seq,
                claimed: record.hash,
                computed,
            });
        }
        head = (record.seq, computed);
    }
    Ok(head)
}

/// Checks a whole audit log of `list` as a key server answers it: the records link up
/// ([`verify_links`]), and the head, signed by `server` (the pinned key server certificate),
/// names this list and key id at the last record's seq and hash. Returns the verified head.
pub fn verify_log(
    list: &Address,
    log: &AuditLog,
    server: &Cert,
) -> Result<AuditHead, AuditChainError> {
    let (seq, hash) = verify_links(&log.key_id, &log.entries)?;
    if !log.head.verify(Domain::AuditHead, server) {
        return Err(AuditChainError::BadHeadSignature);
    }
    let head: AuditHead = serde_json::from_slice(&log.head.body)
        .map_err(|e| AuditChainError::MalformedHead(e.to_string()))?;
    if !head.list.same_mailbox(list)
        || head.key_id != log.key_id
        || head.seq != seq
        || head.hash != hash
    {
        let shown = AuditHead {
            list: list.clone(),
            key_id: log.key_id.clone(),
            seq,
            hash,
        };
        return Err(AuditChainError::HeadMismatch {
            signed: Box::new(head),
            shown: Box::new(shown),
        });
    }
    Ok(head)
}

/// Signs `head` as the key server does when its log is read.
pub fn sign_head<R: Rng + CryptoRng>(
    rng: R,
    server: &SecretIdentity,
    head: &AuditHead,
) -> Result<Signed, IdentityError> {
    Signed::sign(rng, Domain::AuditHead, server, head.to_body())
}

#[cfg(test)]
mod tests {
    use rand::rngs::OsRng;

    use super::*;

    fn record(seq: u64, previous: &AuditHash, key_id: &KeyId, actor: &str) -> AuditRecord {
        let mut record = AuditRecord {
            seq,
            list: "team@example.org".into(),
            at: 1_700_000_000 + seq,
            actor: actor.into(),
            action: "release".into(),
            outcome: "released".into(),
            detail: None,
            hash: AuditHash::START,
        };
        record.hash = previous.next(seq, &record.fields(key_id));
        record
    }

    fn chain(key_id: &KeyId, actors: &[&str]) -> Vec<AuditRecord> {
        let mut previous = AuditHash::START;
        let mut records = Vec::new();
        for (i, actor) in actors.iter().enumerate() {
            let next = record(i as u64 + 1, &previous, key_id, actor);
            previous = next.hash;
            records.push(next);
        }
        records
    }

    #[test]
    fn a_chain_verifies_and_any_change_deletion_or_move_breaks_it() {
        let key_id = KeyId::generate(OsRng);
        let records = chain(&key_id, &["A", "B", "C", "D"]);
        assert_eq!(
            verify_links(&key_id, &records).unwrap(),
            (4, records[3].hash)
        );
        assert_eq!(verify_links(&key_id, &[]).unwrap(), (0, AuditHash::START));

        let mut changed = records.clone();
        changed[1].actor = "E".into();
        assert!(matches!(
            verify_links(&key_id, &changed),
            Err(AuditChainError::BrokenLink { seq: 2, .. })
        ));
        let mut detailed = records.clone();
        detailed[0].detail = Some(String::new());
        assert!(matches!(
            verify_links(&key_id, &detailed),
            Err(AuditChainError::BrokenLink { seq: 1, .. })
        ));
        let mut deleted = records.clone();
        deleted.remove(2);
        assert!(matches!(
            verify_links(&key_id, &deleted),
            Err(AuditChainError::Gap {
                expected: 3,
                got: 4,
                ..
            })
        ));
        // Renumbered after the deletion, the next record no longer links.
        deleted[2].seq = 3;
        assert!(matches!(
            verify_links(&key_id, &deleted),
            Err(AuditChainError::BrokenLink { seq: 3, .. })
        ));
        // The same records under another key id do not verify.
        assert!(matches!(
            verify_links(&KeyId::generate(OsRng), &records),
            Err(AuditChainError::BrokenLink { seq: 1, .. })
        ));
    }

    #[test]
    fn text_fields_cannot_trade_bytes() {
        let key_id = KeyId::generate(OsRng);
        let fields = |actor, action| AuditFields {
            key_id: key_id.as_str(),
            list: "l",
            at: 1,
            actor,
            action,
            outcome: "o",
            detail: None,
        };
        assert_ne!(
            AuditHash::START.next(1, &fields("ab", "c")),
            AuditHash::START.next(1, &fields("a", "bc"))
        );
    }

    #[test]
    fn the_head_must_be_signed_by_the_pinned_server_and_match_the_records() {
        let server = SecretIdentity::generate(OsRng, "keys@example.org").unwrap();
        let other = SecretIdentity::generate(OsRng, "other@example.org").unwrap();
        let list = Address::parse("team@example.org").unwrap();
        let key_id = KeyId::generate(OsRng);
        let entries = chain(&key_id, &["A", "B"]);
        let head = AuditHead {
            list: list.clone(),
            key_id: key_id.clone(),
            seq: 2,
            hash: entries[1].hash,
        };
        let log = |signer: &SecretIdentity, head: &AuditHead, entries: &[AuditRecord]| AuditLog {
            key_id: key_id.clone(),
            entries: entries.to_vec(),
            head: sign_head(OsRng, signer, head).unwrap(),
        };
        assert_eq!(
            verify_log(&list, &log(&server, &head, &entries), server.cert()).unwrap(),
            head
        );
        assert_eq!(
            verify_log(&list, &log(&other, &head, &entries), server.cert()),
            Err(AuditChainError::BadHeadSignature)
        );
        // The last record dropped, under the old head.
        assert!(matches!(
            verify_log(&list, &log(&server, &head, &entries[..1]), server.cert()),
            Err(AuditChainError::HeadMismatch { shown, .. }) if shown.seq == 1
        ));
        // A roster op's signature is not a head's.
        let mut as_op = log(&server, &head, &entries);
        as_op.head = Signed::sign(OsRng, Domain::RosterOp, &server, head.to_body()).unwrap();
        assert_eq!(
            verify_log(&list, &as_op, server.cert()),
            Err(AuditChainError::BadHeadSignature)
        );
        let elsewhere = Address::parse("other@example.org").unwrap();
        assert!(matches!(
            verify_log(&elsewhere, &log(&server, &head, &entries), server.cert()),
            Err(AuditChainError::HeadMismatch { .. })
        ));
    }
}
