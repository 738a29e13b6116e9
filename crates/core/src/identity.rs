//! OpenPGP identities: public certificates of members and servers, and secret keys of the
//! people and servers that sign. Loads what `gpg --export` and `gpg --export-secret-keys`
//! write (armored or binary) and generates new Ed25519/Cv25519 identities that gpg 2.2 reads.

use std::sync::{Arc, OnceLock};

use std::fmt;

use pgp::composed::{
    ArmorOptions, Deserializable, DetachedSignature, EncryptionCaps, KeyType, MessageBuilder,
    SecretKeyParamsBuilder, SignedPublicKey, SignedPublicSubKey, SignedSecretKey,
    SignedSecretSubKey, SubkeyParamsBuilder,
};
use pgp::crypto::ecc_curve::ECCCurve;
use pgp::crypto::hash::HashAlgorithm;
use pgp::crypto::sym::SymmetricKeyAlgorithm;
use pgp::packet::{Signature, SignatureType};
use pgp::ser::Serialize as _;
use pgp::types::{KeyDetails, Password, SigningKey};
use rand::{CryptoRng, Rng};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

/// Why a certificate or secret key could not be used.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("not an OpenPGP {what}: {detail}")]
    Malformed { what: &'static str, detail: String },
    #[error("the OpenPGP data holds {found} keys; exactly one is expected")]
    NotSingle { found: usize },
    #[error("key {fingerprint} has invalid self-signatures: {detail}")]
    BadBinding {
        fingerprint: Fingerprint,
        detail: String,
    },
    #[error("key {fingerprint} has no usable {purpose} key (missing, revoked or wrong flags)")]
    NoUsableKey {
        fingerprint: Fingerprint,
        purpose: &'static str,
    },
    #[error(transparent)]
    NotValid(#[from] NotValid),
    #[error("key {fingerprint} is protected by a passphrase that did not unlock it")]
    Locked { fingerprint: Fingerprint },
    #[error("the user id {0:?} is not of the form `Name <address>` or `address`")]
    BadUserId(String),
    #[error("OpenPGP operation failed: {0}")]
    Pgp(String),
}

/// Why a certificate's key was not valid at a time (unix seconds): what makes a signature by
/// it worthless and forbids sealing to it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotValid {
    #[error(
        "a key of certificate {fingerprint} expired at {expired_at} (unix seconds), before {at}; its holder must extend it (gpg --quick-set-expire) and hand the list's owners the new certificate"
    )]
    Expired {
        fingerprint: Fingerprint,
        at: u64,
        expired_at: u64,
    },
    #[error(
        "a key of certificate {fingerprint} was created at {created} (unix seconds), after {at}"
    )]
    NotYetCreated {
        fingerprint: Fingerprint,
        at: u64,
        created: u64,
    },
    #[error("certificate {fingerprint} is revoked")]
    Revoked { fingerprint: Fingerprint },
}

/// Why a signature was not accepted as made by a certificate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureRefusal {
    #[error("the signature was not made by a signing key of {0}")]
    NotBy(Fingerprint),
    #[error("the signature is genuine but its key was not valid: {0}")]
    KeyNotValid(NotValid),
}

/// Uppercase hex fingerprint of an OpenPGP primary key: the stable name of a person or server
/// in rosters, requests and audit logs.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Fingerprint(String);

impl Fingerprint {
    pub(crate) fn of(key: &impl KeyDetails) -> Self {
        Self::from_pgp(&key.fingerprint())
    }

    pub(crate) fn from_pgp(fingerprint: &pgp::types::Fingerprint) -> Self {
        Fingerprint(hex::encode_upper(fingerprint.as_bytes()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Fingerprint {
    type Error = IdentityError;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        let valid_length = value.len() == 40 || value.len() == 64;
        if valid_length && value.bytes().all(|b| b.is_ascii_hexdigit()) {
            Ok(Fingerprint(value.to_ascii_uppercase()))
        } else {
            Err(IdentityError::Malformed {
                what: "fingerprint",
                detail: format!("{value:?} is not 40 or 64 hex digits"),
            })
        }
    }
}

impl From<Fingerprint> for String {
    fn from(value: Fingerprint) -> Self {
        value.0
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The 64-bit id of an OpenPGP key (for v4 keys the low 64 bits of the fingerprint): the
/// short name by which signatures and PKESKs may refer to a key, so two keys sharing one are
/// as confusable as two keys sharing a fingerprint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ShortKeyId([u8; 8]);

impl fmt::Display for ShortKeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode_upper(self.0))
    }
}

/// One key of a certificate, its primary key or a subkey, by both of its names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertKey {
    pub fingerprint: Fingerprint,
    pub key_id: ShortKeyId,
}

impl CertKey {
    fn of(key: &impl KeyDetails) -> Self {
        CertKey {
            fingerprint: Fingerprint::of(key),
            key_id: ShortKeyId(
                <[u8; 8]>::try_from(key.legacy_key_id().as_ref()).expect("a key id is 8 bytes"),
            ),
        }
    }
}

/// A public OpenPGP certificate whose self-signatures have been verified. Kept serialized
/// and parsed on first use: rpgp holds a parsed key in about 11 KB (some thirty times its
/// serialized size), and a list server with thousands of members needs few of them parsed.
/// Cheap to clone: rosters are copied on every change.
#[derive(Clone)]
pub struct Cert(Arc<CertInner>);

struct CertInner {
    binary: Vec<u8>,
    fingerprint: Fingerprint,
    keys: Vec<CertKey>,
    primary: Lifetime,
    /// The lifetimes of the subkeys that may receive session keys, found when the
    /// certificate was read.
    encryption: Vec<Lifetime>,
    parsed: OnceLock<SignedPublicKey>,
}

impl fmt::Debug for Cert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Cert").field(&self.0.fingerprint).finish()
    }
}

impl PartialEq for Cert {
    fn eq(&self, other: &Self) -> bool {
        self.0.binary == other.0.binary
    }
}

impl Cert {
    /// Parses one certificate, armored or binary, and verifies its self-signatures. rpgp's
    /// `verify_bindings` checks every binding signature of every subkey against the primary
    /// key and, for each binding that allows signing, the subkey's embedded back-signature
    /// (RFC 9580 5.2.1), so a certificate cannot claim another person's key as its signing
    /// subkey; `a_signing_subkey_without_back_signature_is_refused` pins that.
    pub fn from_bytes(data: &[u8]) -> Result<Self, IdentityError> {
        let key = parse_single::<SignedPublicKey>(data, "public key")?;
        Self::from_key(key)
    }

    fn from_key(key: SignedPublicKey) -> Result<Self, IdentityError> {
        let fingerprint = Fingerprint::of(&key);
        key.verify_bindings()
            .map_err(|e| IdentityError::BadBinding {
                fingerprint: fingerprint.clone(),
                detail: e.to_string(),
            })?;
        let keys = std::iter::once(CertKey::of(&key.primary_key))
            .chain(key.public_subkeys.iter().map(|sk| CertKey::of(&sk.key)))
            .collect();
        let binary = key
            .to_bytes()
            .expect("serializing a parsed certificate into memory cannot fail");
        let primary = Lifetime::of_primary(&key);
        let encryption = key
            .public_subkeys
            .iter()
            .filter(|sk| subkey_usable(&sk.signatures, can_encrypt))
            .map(|sk| Lifetime::of_subkey(sk, primary))
            .collect();
        Ok(Cert(Arc::new(CertInner {
            binary,
            fingerprint,
            keys,
            primary,
            encryption,
            parsed: OnceLock::new(),
        })))
    }

    /// The parsed key, parsed again from its verified serialization on first use.
    fn key(&self) -> &SignedPublicKey {
        self.0.parsed.get_or_init(|| {
            parse_single::<SignedPublicKey>(&self.0.binary, "public key")
                .expect("a certificate serialized after parsing parses again")
        })
    }

    pub fn fingerprint(&self) -> &Fingerprint {
        &self.0.fingerprint
    }

    /// The user ids the certificate names, as written (`Name <address>`).
    pub fn user_ids(&self) -> Vec<String> {
        self.key()
            .details
            .users
            .iter()
            .map(|u| String::from_utf8_lossy(u.id.id()).into_owned())
            .collect()
    }

    /// The mail addresses its user ids name (`Name <address>` or a bare address), in order.
    pub fn addresses(&self) -> Vec<crate::Address> {
        self.user_ids()
            .iter()
            .filter_map(|uid| {
                let inner = uid.rsplit_once('<').map_or(uid.as_str(), |(_, rest)| rest);
                crate::Address::parse(inner.trim_end_matches('>')).ok()
            })
            .collect()
    }

    /// Whether the primary key may be used at `at` (unix seconds): not expired by its newest
    /// self-signature, not revoked.
    fn check_valid_at(&self, at: u64) -> Result<(), NotValid> {
        self.0.primary.check(&self.0.fingerprint, at)
    }

    /// Fails as [`Cert::encryption_subkey_at`] would, without parsing the key.
    pub fn check_encryption_subkey_at(&self, at: u64) -> Result<(), IdentityError> {
        self.check_valid_at(at)?;
        let newest = self
            .0
            .encryption
            .iter()
            .max_by_key(|lifetime| lifetime.created)
            .ok_or_else(|| IdentityError::NoUsableKey {
                fingerprint: self.0.fingerprint.clone(),
                purpose: "encryption",
            })?;
        if self
            .0
            .encryption
            .iter()
            .any(|lifetime| lifetime.check(&self.0.fingerprint, at).is_ok())
        {
            return Ok(());
        }
        Err(newest.check(&self.0.fingerprint, at).err().map_or_else(
            || IdentityError::NoUsableKey {
                fingerprint: self.0.fingerprint.clone(),
                purpose: "encryption",
            },
            IdentityError::NotValid,
        ))
    }

    /// The subkey that should receive session keys at `at` (unix seconds): the newest one
    /// whose binding signature allows encryption, that has not been revoked and that is
    /// valid then (an expired subkey is passed over for an older one still valid).
    pub fn encryption_subkey_at(&self, at: u64) -> Result<&SignedPublicSubKey, IdentityError> {
        self.check_valid_at(at)?;
        self.key()
            .public_subkeys
            .iter()
            .filter(|sk| subkey_usable(&sk.signatures, can_encrypt))
            .filter(|sk| {
                Lifetime::of_subkey(sk, self.0.primary)
                    .check(&self.0.fingerprint, at)
                    .is_ok()
            })
            .max_by_key(|sk| sk.key.created_at())
            .ok_or_else(|| {
                self.check_encryption_subkey_at(at)
                    .err()
                    .unwrap_or_else(|| IdentityError::NoUsableKey {
                        fingerprint: self.0.fingerprint.clone(),
                        purpose: "encryption",
                    })
            })
    }

    /// Checks a binary detached signature over `data` made by this certificate's primary key
    /// or one of its signing subkeys, while that key was valid: at the signature's creation
    /// time and, if given, at `also_at` (a request's arrival).
    pub fn verify_detached(
        &self,
        signature: &DetachedSignature,
        data: &[u8],
        also_at: Option<u64>,
    ) -> Result<(), SignatureRefusal> {
        self.check_made_by(
            |key| {
                let verified = match key {
                    SignerKey::Primary(primary) => signature.verify(primary, data),
                    SignerKey::Subkey(subkey) => signature.verify(subkey, data),
                };
                verified.ok().map(|()| &signature.signature)
            },
            also_at,
        )
        .map(|_| ())
    }

    /// Checks a signature inside a message: `verify` checks it against one key and returns
    /// the verified signature packet, whose creation time the key must have been valid at.
    /// Returns that packet, for the caller to read what else it states.
    pub fn verify_message_signature<'s>(
        &self,
        verify: impl Fn(&dyn pgp::types::VerifyingKey) -> Option<&'s Signature>,
    ) -> Result<&'s Signature, SignatureRefusal> {
        self.check_made_by(
            |key| match key {
                SignerKey::Primary(primary) => verify(primary),
                SignerKey::Subkey(subkey) => verify(subkey),
            },
            None,
        )
    }

    /// Tries the primary key and each signing subkey with `verify`; a signature made when
    /// its key was not valid (per the time the signature states) is refused as such.
    fn check_made_by<'s>(
        &self,
        verify: impl Fn(SignerKey<'_>) -> Option<&'s Signature>,
        also_at: Option<u64>,
    ) -> Result<&'s Signature, SignatureRefusal> {
        let key = self.key();
        let candidates = std::iter::once((SignerKey::Primary(key), self.0.primary)).chain(
            key.public_subkeys
                .iter()
                .filter(|sk| subkey_usable(&sk.signatures, |s| s.key_flags().sign()))
                .map(|sk| {
                    (
                        SignerKey::Subkey(&sk.key),
                        Lifetime::of_subkey(sk, self.0.primary),
                    )
                }),
        );
        let mut refusal = SignatureRefusal::NotBy(self.0.fingerprint.clone());
        for (candidate, lifetime) in candidates {
            let Some(signature) = verify(candidate) else {
                continue;
            };
            let Some(created) = signature.created() else {
                continue;
            };
            let valid = lifetime
                .check_signed_at(&self.0.fingerprint, u64::from(created.as_secs()))
                .and_then(|()| {
                    also_at.map_or(Ok(()), |at| lifetime.check(&self.0.fingerprint, at))
                });
            match valid {
                Ok(()) => return Ok(signature),
                Err(not_valid) => refusal = SignatureRefusal::KeyNotValid(not_valid),
            }
        }
        Err(refusal)
    }

    /// The primary key and every subkey: to find the certificate a signature's issuer
    /// subpacket names, and to refuse a certificate that carries someone else's key.
    pub fn keys(&self) -> &[CertKey] {
        &self.0.keys
    }

    /// An armored OpenPGP message holding `data` that only this certificate's holder opens,
    /// encrypted to its subkey valid at `at` (SEIPD v1 with AES-256, which every OpenPGP
    /// client reads): how the list server writes to someone whose mailbox it must not trust
    /// yet.
    pub fn encrypt_to<R: Rng + CryptoRng>(
        &self,
        mut rng: R,
        data: Vec<u8>,
        at: u64,
    ) -> Result<String, IdentityError> {
        let pgp_err = |e: pgp::errors::Error| IdentityError::Pgp(e.to_string());
        let subkey = self.encryption_subkey_at(at)?;
        let mut builder =
            MessageBuilder::from_bytes("", data).seipd_v1(&mut rng, SymmetricKeyAlgorithm::AES256);
        builder.encrypt_to_key(&mut rng, subkey).map_err(pgp_err)?;
        builder
            .to_armored_string(&mut rng, ArmorOptions::default())
            .map_err(pgp_err)
    }

    pub fn to_armored(&self) -> String {
        self.key()
            .to_armored_string(ArmorOptions::default())
            .expect("serializing a parsed certificate into memory cannot fail")
    }

    pub fn to_binary(&self) -> Vec<u8> {
        self.0.binary.clone()
    }
}

/// A secret key able to sign (and, for members, to open session keys sent to it).
/// Secret material is zeroized by the OpenPGP library when dropped.
#[derive(Clone)]
pub struct SecretIdentity {
    key: SignedSecretKey,
    passphrase: Zeroizing<String>,
    cert: Cert,
}

impl fmt::Debug for SecretIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretIdentity")
            .field("fingerprint", self.fingerprint())
            .finish_non_exhaustive()
    }
}

impl SecretIdentity {
    /// Parses one secret key, armored or binary, as `gpg --export-secret-keys` writes it.
    /// `passphrase` unlocks a protected key (empty for an unprotected one); it is checked now
    /// so that a wrong passphrase is reported at load time, not at first use.
    pub fn from_bytes(data: &[u8], passphrase: &str) -> Result<Self, IdentityError> {
        let key = parse_single::<SignedSecretKey>(data, "secret key")?;
        let cert = Cert::from_key(key.to_public_key())?;
        let identity = SecretIdentity {
            key,
            passphrase: Zeroizing::new(passphrase.to_owned()),
            cert,
        };
        identity.check_unlocks()?;
        Ok(identity)
    }

    /// Generates a new identity: an Ed25519 primary key for certifying and signing and a
    /// Cv25519 subkey for encryption, the same shape `gpg --quick-gen-key` makes, in the v4
    /// format that gpg 2.2 reads. The self-signature states AES-256/AES-128, SHA-512/SHA-256
    /// and SEIPD v1 (MDC): without them gpg falls back to 3DES when encrypting to the key and
    /// warns on every decryption with it.
    pub fn generate<R: Rng + CryptoRng>(rng: R, user_id: &str) -> Result<Self, IdentityError> {
        if !valid_user_id(user_id) {
            return Err(IdentityError::BadUserId(user_id.to_owned()));
        }
        let pgp_err = |e: &dyn fmt::Display| IdentityError::Pgp(e.to_string());
        let encryption = SubkeyParamsBuilder::default()
            .key_type(KeyType::ECDH(ECCCurve::Curve25519Legacy))
            .can_sign(false)
            .can_encrypt(EncryptionCaps::All)
            .can_authenticate(false)
            .build()
            .map_err(|e| pgp_err(&e))?;
        let params = SecretKeyParamsBuilder::default()
            .key_type(KeyType::Ed25519Legacy)
            .can_certify(true)
            .can_sign(true)
            .can_encrypt(EncryptionCaps::None)
            .primary_user_id(user_id.to_owned())
            .preferred_symmetric_algorithms(
                [SymmetricKeyAlgorithm::AES256, SymmetricKeyAlgorithm::AES128]
                    .into_iter()
                    .collect(),
            )
            .preferred_hash_algorithms(
                [HashAlgorithm::Sha512, HashAlgorithm::Sha256]
                    .into_iter()
                    .collect(),
            )
            .feature_seipd_v1(true)
            .subkeys(vec![encryption])
            .build()
            .map_err(|e| pgp_err(&e))?;
        let key = params.generate(rng).map_err(|e| pgp_err(&e))?;
        let cert = Cert::from_key(key.to_public_key())?;
        Ok(SecretIdentity {
            key,
            passphrase: Zeroizing::new(String::new()),
            cert,
        })
    }

    pub fn cert(&self) -> &Cert {
        &self.cert
    }

    pub fn fingerprint(&self) -> &Fingerprint {
        self.cert.fingerprint()
    }

    /// The secret key, armored, for the owner's own key file. Never log this.
    pub fn to_armored_secret(&self) -> String {
        self.key
            .to_armored_string(ArmorOptions::default())
            .expect("serializing a parsed secret key into memory cannot fail")
    }

    /// A binary detached signature over `data` (SHA-256, the signing key of this identity).
    pub fn sign_detached<R: Rng + CryptoRng>(
        &self,
        rng: R,
        data: &[u8],
    ) -> Result<DetachedSignature, IdentityError> {
        self.with_signing_key(|key| {
            DetachedSignature::sign_binary_data(
                rng,
                &Box::new(key),
                &self.password(),
                HashAlgorithm::Sha256,
                data,
            )
            .map_err(|e| IdentityError::Pgp(e.to_string()))
        })?
    }

    /// Runs `work` with the key that makes this identity's signatures: the primary key when its
    /// self-signature allows signing, else the newest valid signing subkey.
    pub fn with_signing_key<T>(
        &self,
        work: impl FnOnce(&dyn SigningKey) -> T,
    ) -> Result<T, IdentityError> {
        if primary_can_sign(&self.key.details.users, &self.key.details.direct_signatures) {
            return Ok(work(&self.key.primary_key));
        }
        let subkey = self
            .key
            .secret_subkeys
            .iter()
            .filter(|sk| subkey_usable(&sk.signatures, |s| s.key_flags().sign()))
            .max_by_key(|sk| sk.key.created_at())
            .ok_or_else(|| IdentityError::NoUsableKey {
                fingerprint: self.fingerprint().clone(),
                purpose: "signing",
            })?;
        Ok(work(&subkey.key))
    }

    /// The secret subkeys that may hold session keys sent to this identity.
    pub(crate) fn decryption_subkeys(&self) -> impl Iterator<Item = &SignedSecretSubKey> {
        self.key
            .secret_subkeys
            .iter()
            .filter(|sk| subkey_usable(&sk.signatures, can_encrypt))
    }

    /// The secret key, to open messages encrypted to this identity (sealed deposits).
    pub(crate) fn secret_key(&self) -> &SignedSecretKey {
        &self.key
    }

    /// The passphrase in the form the OpenPGP library takes.
    pub fn password(&self) -> Password {
        Password::from(self.passphrase.as_str())
    }

    fn check_unlocks(&self) -> Result<(), IdentityError> {
        let locked = || IdentityError::Locked {
            fingerprint: self.fingerprint().clone(),
        };
        match self.key.primary_key.unlock(&self.password(), |_, _| Ok(())) {
            Ok(Ok(())) => Ok(()),
            _ => Err(locked()),
        }
    }
}

/// A key of a certificate that may have made a signature.
#[derive(Clone, Copy)]
enum SignerKey<'a> {
    Primary(&'a SignedPublicKey),
    Subkey(&'a pgp::packet::PublicSubkey),
}

/// A key's creation, its expiry (exclusive; `None`: never) and whether it is revoked. A
/// subkey's lifetime lies within its primary key's.
#[derive(Debug, Clone, Copy)]
struct Lifetime {
    created: u64,
    expires: Option<u64>,
    revoked: bool,
}

impl Lifetime {
    /// The primary key's lifetime: its expiry is the one its newest self-signature (user id
    /// certification or direct-key signature) states, counted from the key's creation.
    fn of_primary(key: &SignedPublicKey) -> Self {
        let created = u64::from(key.primary_key.created_at().as_secs());
        let newest_self_signature = key
            .details
            .users
            .iter()
            .flat_map(|user| user.signatures.iter())
            .filter(|s| s.is_certification() && s.typ() != Some(SignatureType::CertRevocation))
            .chain(
                key.details
                    .direct_signatures
                    .iter()
                    .filter(|s| s.typ() == Some(SignatureType::Key)),
            )
            .max_by_key(|s| s.created());
        Lifetime {
            created,
            expires: newest_self_signature.and_then(|s| expiry(created, s)),
            revoked: !key.details.revocation_signatures.is_empty(),
        }
    }

    /// A subkey's lifetime: its newest binding signature's expiry, counted from the subkey's
    /// creation, cut short by the primary key's.
    fn of_subkey(subkey: &SignedPublicSubKey, primary: Lifetime) -> Self {
        let created = u64::from(subkey.key.created_at().as_secs());
        let own_expiry = subkey
            .signatures
            .iter()
            .filter(|s| s.typ() == Some(SignatureType::SubkeyBinding))
            .max_by_key(|s| s.created())
            .and_then(|s| expiry(created, s));
        let expires = match (own_expiry, primary.expires) {
            (Some(own), Some(primary)) => Some(own.min(primary)),
            (own, primary) => own.or(primary),
        };
        Lifetime {
            created: created.max(primary.created),
            expires,
            revoked: primary.revoked
                || subkey
                    .signatures
                    .iter()
                    .any(|s| s.typ() == Some(SignatureType::SubkeyRevocation)),
        }
    }

    /// Whether the key may be used at `at`: not revoked, not expired. Its creation is not
    /// checked here: a time before it, such as a roster op's stated time, is the signer's
    /// claim, and a key made on a machine whose clock runs ahead is still the key to use.
    fn check(&self, fingerprint: &Fingerprint, at: u64) -> Result<(), NotValid> {
        if self.revoked {
            return Err(NotValid::Revoked {
                fingerprint: fingerprint.clone(),
            });
        }
        match self.expires {
            Some(expired_at) if at >= expired_at => Err(NotValid::Expired {
                fingerprint: fingerprint.clone(),
                at,
                expired_at,
            }),
            _ => Ok(()),
        }
    }

    /// Whether a signature stating it was made at `signed_at` is one the key could make: a
    /// signature made before its key existed is as bogus as one made after it expired.
    fn check_signed_at(&self, fingerprint: &Fingerprint, signed_at: u64) -> Result<(), NotValid> {
        if signed_at < self.created {
            return Err(NotValid::NotYetCreated {
                fingerprint: fingerprint.clone(),
                at: signed_at,
                created: self.created,
            });
        }
        self.check(fingerprint, signed_at)
    }
}

/// When a key created at `created` expires by `signature`'s key-expiration subpacket, which
/// counts seconds from the key's creation (zero or absent: never).
fn expiry(created: u64, signature: &Signature) -> Option<u64> {
    signature
        .key_expiration_time()
        .map(|lifetime| u64::from(lifetime.as_secs()))
        .filter(|&secs| secs > 0)
        .map(|secs| created.saturating_add(secs))
}

/// Parses the exactly one transferable key of type `K` from armored or binary data.
fn parse_single<K: Deserializable>(data: &[u8], what: &'static str) -> Result<K, IdentityError> {
    let malformed = |detail: String| IdentityError::Malformed { what, detail };
    let keys: Vec<K> = if looks_armored(data) {
        let (iter, _) = K::from_armor_many(data).map_err(|e| malformed(e.to_string()))?;
        iter.collect::<Result<_, _>>()
            .map_err(|e| malformed(e.to_string()))?
    } else {
        K::from_bytes_many(data)
            .map_err(|e| malformed(e.to_string()))?
            .collect::<Result<_, _>>()
            .map_err(|e| malformed(e.to_string()))?
    };
    let found = keys.len();
    let mut keys = keys.into_iter();
    match (keys.next(), found) {
        (Some(key), 1) => Ok(key),
        (_, 0) => Err(malformed("no key found".into())),
        _ => Err(IdentityError::NotSingle { found }),
    }
}

fn looks_armored(data: &[u8]) -> bool {
    let start = data
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(data.len());
    data[start..].starts_with(b"-----BEGIN PGP")
}

fn can_encrypt(sig: &Signature) -> bool {
    let flags = sig.key_flags();
    flags.encrypt_comms() || flags.encrypt_storage()
}

/// A subkey is usable when its newest binding signature has the wanted flags and no
/// revocation signature is attached.
fn subkey_usable(signatures: &[Signature], wanted: impl Fn(&Signature) -> bool) -> bool {
    let revoked = signatures
        .iter()
        .any(|s| s.typ() == Some(SignatureType::SubkeyRevocation));
    let newest_binding = signatures
        .iter()
        .filter(|s| s.typ() == Some(SignatureType::SubkeyBinding))
        .max_by_key(|s| s.created());
    !revoked && newest_binding.is_some_and(wanted)
}

fn primary_can_sign(users: &[pgp::types::SignedUser], direct: &[Signature]) -> bool {
    users
        .iter()
        .flat_map(|u| u.signatures.iter())
        .chain(direct.iter())
        .any(|s| s.key_flags().sign())
}

fn valid_user_id(user_id: &str) -> bool {
    let address = match (user_id.rfind('<'), user_id.strip_suffix('>')) {
        (Some(open), Some(inner)) => &inner[open + 1..],
        (None, None) => user_id,
        _ => return false,
    };
    crate::address::is_valid(address)
}
