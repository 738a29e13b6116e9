//! Sealed deposits: how a sender hands a post's session key to the key server. The sender
//! signs a claim naming the list, the key id, itself and the session key (under its own
//! signature domain) and encrypts the signed claim to the key server's certificate as an
//! OpenPGP message (SEIPD v1, AES-256). The key server stores the key only for the deposit
//! request the claim names: nobody but the key server can open a captured deposit to sign it
//! again, so it cannot be presented by anyone else, for another list or under another key id.
//!
//! Opening is the core's one message decryption: only of a message encrypted to the key
//! server's own key, and it yields only a session key bound to the request in hand.

use std::fmt;
use std::io::Read as _;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use pgp::composed::{Message, MessageBuilder};
use rand::{CryptoRng, Rng};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use zeroize::{Zeroize as _, Zeroizing};

use crate::address::Address;
use crate::identity::{Cert, Fingerprint, IdentityError, SecretIdentity};
use crate::session::{KeyId, POST_CIPHER, Pkesk, SESSION_KEY_LEN, SessionKey};
use crate::signed::{Domain, Signed};

/// Largest sealed deposit opened at all; one is about 1 KiB.
pub const MAX_SEALED_DEPOSIT: usize = 16 * 1024;

/// Largest plaintext read from a sealed deposit (a signed claim is under 1 KiB).
const MAX_SIGNED_CLAIM: usize = 8 * 1024;

/// Why a sealed deposit was refused.
#[derive(Debug, thiserror::Error)]
pub enum DepositError {
    #[error(
        "the sealed key is a bare PKESK, as hushlist clients sent before deposits were sealed for their list and key id; upgrade the client"
    )]
    Outdated,
    #[error("the sealed deposit is larger than {MAX_SEALED_DEPOSIT} bytes")]
    TooLarge,
    #[error("the sealed deposit does not open with this key server's key: {0}")]
    NotForThisServer(String),
    #[error("the sealed deposit is not a signed deposit claim: {0}")]
    Malformed(String),
    #[error("the sealed deposit names another {0} than the deposit request")]
    NotBound(Bound),
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error("OpenPGP encryption failed: {0}")]
    Pgp(String),
}

/// What a sealed deposit is bound to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bound {
    /// The signer of the claim, who must be the signer of the request.
    Sender,
    List,
    KeyId,
}

impl fmt::Display for Bound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Bound::Sender => "sender",
            Bound::List => "list",
            Bound::KeyId => "key id",
        })
    }
}

/// What the sender signs.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Claim {
    list: Address,
    key_id: KeyId,
    sender: Fingerprint,
    session_key: ClaimedKey,
}

/// The session key in a claim, as base64 text that is zeroized too.
struct ClaimedKey(SessionKey);

impl Serialize for ClaimedKey {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let text = Zeroizing::new(STANDARD.encode(self.0.as_bytes()));
        s.serialize_str(&text)
    }
}

impl<'de> Deserialize<'de> for ClaimedKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = Zeroizing::new(String::deserialize(d)?);
        let mut bytes = Zeroizing::new([0u8; SESSION_KEY_LEN + 3]);
        let len = STANDARD
            .decode_slice(text.as_bytes(), bytes.as_mut())
            .map_err(serde::de::Error::custom)?;
        SessionKey::from_bytes(&bytes[..len])
            .map(ClaimedKey)
            .map_err(serde::de::Error::custom)
    }
}

/// The deposit request a sealed deposit is checked against: the list and key id it names and
/// the certificate of its signer.
#[derive(Debug, Clone, Copy)]
pub struct DepositRequest<'a> {
    pub list: &'a Address,
    pub key_id: &'a KeyId,
    pub sender: &'a Cert,
}

/// Seals `session_key` for the key server `server`, bound to `list`, `key_id` and `sender`
/// (who signs it), to the server's newest encryption subkey valid at `at` (Unix seconds).
pub fn seal_deposit<R: Rng + CryptoRng>(
    mut rng: R,
    sender: &SecretIdentity,
    server: &Cert,
    list: &Address,
    key_id: &KeyId,
    session_key: &SessionKey,
    at: u64,
) -> Result<Vec<u8>, DepositError> {
    let pgp_err = |e: pgp::errors::Error| DepositError::Pgp(e.to_string());
    let claim = Claim {
        list: list.clone(),
        key_id: key_id.clone(),
        sender: sender.fingerprint().clone(),
        session_key: ClaimedKey(session_key.clone()),
    };
    let body = serde_json::to_vec(&claim).expect("a claim always serializes");
    let mut signed = Signed::sign(&mut rng, Domain::Deposit, sender, body)?;
    // The OpenPGP library takes the plaintext and keeps its own copy, which it does not zeroize.
    let literal = serde_json::to_vec(&signed).expect("signed bytes always serialize");
    signed.body.zeroize();
    let subkey = server.encryption_subkey_at(at)?;
    let mut builder = MessageBuilder::from_bytes("", literal).seipd_v1(&mut rng, POST_CIPHER);
    builder.encrypt_to_key(&mut rng, subkey).map_err(pgp_err)?;
    builder.to_vec(&mut rng).map_err(pgp_err)
}

/// Opens a sealed deposit with the key server's identity and returns its session key, if the
/// claim inside was signed by the request's signer and names that signer, the request's list
/// and its key id.
pub fn open_deposit(
    sealed: &[u8],
    server: &SecretIdentity,
    request: DepositRequest<'_>,
) -> Result<SessionKey, DepositError> {
    if sealed.len() > MAX_SEALED_DEPOSIT {
        return Err(DepositError::TooLarge);
    }
    if Pkesk::from_bytes(sealed).is_ok() {
        return Err(DepositError::Outdated);
    }
    let message =
        Message::from_bytes(sealed).map_err(|e| DepositError::Malformed(e.to_string()))?;
    if !message.is_encrypted() {
        return Err(DepositError::Malformed("not an encrypted message".into()));
    }
    let mut message = message
        .decrypt(&server.password(), server.secret_key())
        .map_err(|e| DepositError::NotForThisServer(e.to_string()))?;
    // A signed or compressed layer is no claim: only a literal is read, and only so far.
    if !message.is_literal() {
        return Err(DepositError::Malformed(
            "the encrypted content is not a literal".into(),
        ));
    }
    let mut literal = Zeroizing::new(Vec::new());
    (&mut message)
        .take(MAX_SIGNED_CLAIM as u64 + 1)
        .read_to_end(&mut literal)
        .map_err(|e| DepositError::NotForThisServer(e.to_string()))?;
    if literal.len() > MAX_SIGNED_CLAIM {
        return Err(DepositError::TooLarge);
    }
    let mut signed: Signed =
        serde_json::from_slice(&literal).map_err(|e| DepositError::Malformed(e.to_string()))?;
    let verified = signed.verify(Domain::Deposit, request.sender);
    let claim = serde_json::from_slice::<Claim>(&signed.body);
    signed.body.zeroize();
    if !verified {
        return Err(DepositError::NotBound(Bound::Sender));
    }
    let claim = claim.map_err(|e| DepositError::Malformed(e.to_string()))?;
    if &claim.sender != request.sender.fingerprint() {
        return Err(DepositError::NotBound(Bound::Sender));
    }
    if &claim.list != request.list {
        return Err(DepositError::NotBound(Bound::List));
    }
    if &claim.key_id != request.key_id {
        return Err(DepositError::NotBound(Bound::KeyId));
    }
    Ok(claim.session_key.0)
}

#[cfg(test)]
mod tests {
    use rand::rngs::OsRng;

    use super::*;

    struct Parties {
        server: SecretIdentity,
        alice: SecretIdentity,
        mallory: SecretIdentity,
        list: Address,
        key_id: KeyId,
        session_key: SessionKey,
    }

    fn now() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    fn parties() -> Parties {
        Parties {
            server: SecretIdentity::generate(OsRng, "keys@keys.example.org").unwrap(),
            alice: SecretIdentity::generate(OsRng, "alice@example.org").unwrap(),
            mallory: SecretIdentity::generate(OsRng, "mallory@example.org").unwrap(),
            list: Address::parse("team@lists.example.org").unwrap(),
            key_id: KeyId::generate(OsRng),
            session_key: SessionKey::generate(OsRng),
        }
    }

    fn sealed_by_alice(p: &Parties) -> Vec<u8> {
        seal_deposit(
            OsRng,
            &p.alice,
            p.server.cert(),
            &p.list,
            &p.key_id,
            &p.session_key,
            now(),
        )
        .unwrap()
    }

    #[test]
    fn a_deposit_opens_only_for_the_request_it_was_sealed_for() {
        let p = parties();
        let sealed = sealed_by_alice(&p);
        let request = DepositRequest {
            list: &p.list,
            key_id: &p.key_id,
            sender: p.alice.cert(),
        };
        assert_eq!(
            open_deposit(&sealed, &p.server, request).unwrap(),
            p.session_key
        );

        let other_list = Address::parse("other@lists.example.org").unwrap();
        let other_key_id = KeyId::generate(OsRng);
        for (request, bound) in [
            (
                DepositRequest {
                    sender: p.mallory.cert(),
                    ..request
                },
                Bound::Sender,
            ),
            (
                DepositRequest {
                    list: &other_list,
                    ..request
                },
                Bound::List,
            ),
            (
                DepositRequest {
                    key_id: &other_key_id,
                    ..request
                },
                Bound::KeyId,
            ),
        ] {
            match open_deposit(&sealed, &p.server, request) {
                Err(DepositError::NotBound(named)) => assert_eq!(named, bound),
                other => panic!("{bound}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_bare_pkesk_a_foreign_deposit_and_junk_are_refused() {
        let p = parties();
        let request = DepositRequest {
            list: &p.list,
            key_id: &p.key_id,
            sender: p.alice.cert(),
        };
        let bare = Pkesk::seal(OsRng, &p.session_key, p.server.cert(), now()).unwrap();
        assert!(matches!(
            open_deposit(bare.as_bytes(), &p.server, request),
            Err(DepositError::Outdated)
        ));
        let to_mallory = seal_deposit(
            OsRng,
            &p.alice,
            p.mallory.cert(),
            &p.list,
            &p.key_id,
            &p.session_key,
            now(),
        )
        .unwrap();
        assert!(matches!(
            open_deposit(&to_mallory, &p.server, request),
            Err(DepositError::NotForThisServer(_))
        ));
        let mut flipped = sealed_by_alice(&p);
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert!(open_deposit(&flipped, &p.server, request).is_err());
        assert!(matches!(
            open_deposit(b"not openpgp", &p.server, request),
            Err(DepositError::Malformed(_))
        ));
        assert!(matches!(
            open_deposit(&vec![0; MAX_SEALED_DEPOSIT + 1], &p.server, request),
            Err(DepositError::TooLarge)
        ));
    }
}
