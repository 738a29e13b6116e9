//! Session keys (the patent's "common key"), the ids they are filed under, and PKESK packets:
//! a session key encrypted to one certificate. Encrypting a session key to a member is the
//! key server's one cryptographic step; this module holds no code that decrypts a message.

use std::fmt;

use pgp::composed::{PlainSessionKey, RawSessionKey};
use pgp::crypto::sym::SymmetricKeyAlgorithm;
use pgp::packet::{Packet, PacketParser, PacketTrait as _, PublicKeyEncryptedSessionKey};
use pgp::ser::Serialize as _;
use pgp::types::{DecryptionKey as _, EskType, PkeskVersion};
use rand::{CryptoRng, Rng};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::identity::{Cert, IdentityError, SecretIdentity};

/// Every post is encrypted with AES-256 in a SEIPD v1 packet, which gpg 2.2 and later read.
pub const POST_CIPHER: SymmetricKeyAlgorithm = SymmetricKeyAlgorithm::AES256;
pub const SESSION_KEY_LEN: usize = 32;

/// Why a session key, key id or PKESK was refused.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("a session key must be {SESSION_KEY_LEN} bytes, got {0}")]
    BadLength(usize),
    #[error("key id {0:?} is not 32 lowercase hex digits")]
    BadKeyId(String),
    #[error("not a single OpenPGP PKESK packet: {0}")]
    BadPkesk(String),
    #[error("the PKESK is for key {pkesk_for}, which is not a key of {identity}")]
    PkeskNotForUs { pkesk_for: String, identity: String },
    #[error("the PKESK did not decrypt with this secret key: {0}")]
    Undecryptable(String),
    #[error("the PKESK holds a {0:?} key; posts use AES-256")]
    WrongCipher(SymmetricKeyAlgorithm),
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error("OpenPGP operation failed: {0}")]
    Pgp(String),
}

/// A post's AES-256 session key. Zeroized when dropped; its `Debug` never prints the bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionKey(Zeroizing<[u8; SESSION_KEY_LEN]>);

impl SessionKey {
    pub fn generate<R: Rng + CryptoRng>(mut rng: R) -> Self {
        let mut bytes = Zeroizing::new([0u8; SESSION_KEY_LEN]);
        rng.fill_bytes(bytes.as_mut());
        SessionKey(bytes)
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, SessionError> {
        let array: [u8; SESSION_KEY_LEN] = bytes
            .try_into()
            .map_err(|_| SessionError::BadLength(bytes.len()))?;
        Ok(SessionKey(Zeroizing::new(array)))
    }

    /// Parses the `9:HEX` form `gpg --show-session-key` prints (9 is AES-256).
    pub fn from_gpg_string(text: &str) -> Result<Self, SessionError> {
        let (algo, hex_key) = text
            .trim()
            .split_once(':')
            .ok_or(SessionError::BadLength(0))?;
        if algo != "9" {
            return Err(SessionError::WrongCipher(
                algo.parse::<u8>()
                    .map(SymmetricKeyAlgorithm::from)
                    .unwrap_or(SymmetricKeyAlgorithm::Plaintext),
            ));
        }
        let bytes = Zeroizing::new(
            hex::decode(hex_key).map_err(|_| SessionError::BadLength(hex_key.len() / 2))?,
        );
        Self::from_bytes(&bytes)
    }

    pub fn as_bytes(&self) -> &[u8; SESSION_KEY_LEN] {
        &self.0
    }

    pub(crate) fn to_raw(&self) -> RawSessionKey {
        RawSessionKey::from(&self.0[..])
    }

    /// The form the OpenPGP library takes to decrypt a SEIPD v1 packet.
    pub fn to_plain(&self) -> PlainSessionKey {
        PlainSessionKey::V3_4 {
            sym_alg: POST_CIPHER,
            key: self.to_raw(),
        }
    }
}

impl fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionKey(..)")
    }
}

/// The name a session key is filed under at the key server: 128 random bits, so ids reveal
/// nothing about the post and cannot be guessed.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct KeyId(String);

impl KeyId {
    pub fn generate<R: Rng + CryptoRng>(mut rng: R) -> Self {
        let mut bytes = [0u8; 16];
        rng.fill_bytes(&mut bytes);
        KeyId(hex::encode(bytes))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for KeyId {
    type Error = SessionError;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        let well_formed = value.len() == 32
            && value
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if well_formed {
            Ok(KeyId(value))
        } else {
            Err(SessionError::BadKeyId(value))
        }
    }
}

impl std::str::FromStr for KeyId {
    type Err = SessionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        KeyId::try_from(s.to_owned())
    }
}

impl From<KeyId> for String {
    fn from(value: KeyId) -> Self {
        value.0
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One serialized OpenPGP v3 PKESK packet (header included): a session key that only the
/// holder of one secret key can open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pkesk(Vec<u8>);

impl Pkesk {
    /// Encrypts `session_key` to the encryption subkey of `cert` valid at `at` (unix seconds).
    pub fn seal<R: Rng + CryptoRng>(
        rng: R,
        session_key: &SessionKey,
        cert: &Cert,
        at: u64,
    ) -> Result<Self, SessionError> {
        let subkey = cert.encryption_subkey_at(at)?;
        let packet = PublicKeyEncryptedSessionKey::from_session_key_v3(
            rng,
            &session_key.to_raw(),
            POST_CIPHER,
            subkey,
        )
        .map_err(|e| SessionError::Pgp(e.to_string()))?;
        Pkesk::from_packet(&packet)
    }

    /// Serializes a parsed packet, header included.
    pub fn from_packet(packet: &PublicKeyEncryptedSessionKey) -> Result<Self, SessionError> {
        let mut bytes = Vec::with_capacity(packet.write_len() + 6);
        packet
            .to_writer_with_header(&mut bytes)
            .map_err(|e| SessionError::Pgp(e.to_string()))?;
        Ok(Pkesk(bytes))
    }

    /// Accepts bytes only if they are exactly one v3 PKESK packet.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, SessionError> {
        Self::parse(bytes)?;
        Ok(Pkesk(bytes.to_vec()))
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    fn parse(bytes: &[u8]) -> Result<PublicKeyEncryptedSessionKey, SessionError> {
        let bad = |d: &dyn fmt::Display| SessionError::BadPkesk(d.to_string());
        let mut packets = PacketParser::new(bytes);
        let packet = match packets.next() {
            Some(Ok(Packet::PublicKeyEncryptedSessionKey(p))) => p,
            Some(Ok(other)) => return Err(bad(&format!("found a {:?} packet", other.tag()))),
            Some(Err(e)) => return Err(bad(&e)),
            None => return Err(bad(&"empty input")),
        };
        if packets.next().is_some() {
            return Err(bad(&"trailing data after the packet"));
        }
        if packet.version() != PkeskVersion::V3 {
            return Err(bad(&format!("version {:?}, expected 3", packet.version())));
        }
        Ok(packet)
    }

    /// Opens the session key with one of `identity`'s decryption subkeys: a member's PKESK
    /// sent to them.
    pub fn unseal(&self, identity: &SecretIdentity) -> Result<SessionKey, SessionError> {
        let packet = Self::parse(&self.0)?;
        let values = packet
            .values()
            .map_err(|e| SessionError::BadPkesk(e.to_string()))?;
        let subkey = identity
            .decryption_subkeys()
            .find(|sk| packet.match_identity(sk.key.public_key()))
            .ok_or_else(|| SessionError::PkeskNotForUs {
                pkesk_for: packet
                    .id()
                    .map(|id| id.to_string())
                    .unwrap_or_else(|_| "an unknown key".into()),
                identity: identity.fingerprint().to_string(),
            })?;
        let plain = subkey
            .key
            .decrypt(&identity.password(), values, EskType::V3_4)
            .map_err(|e| SessionError::Undecryptable(e.to_string()))?
            .map_err(|e| SessionError::Undecryptable(e.to_string()))?;
        match &plain {
            PlainSessionKey::V3_4 { sym_alg, key } if *sym_alg == POST_CIPHER => {
                SessionKey::from_bytes(key.as_ref())
            }
            PlainSessionKey::V3_4 { sym_alg, .. } => Err(SessionError::WrongCipher(*sym_alg)),
            _ => Err(SessionError::Undecryptable("not a v3 session key".into())),
        }
    }
}
