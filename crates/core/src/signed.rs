//! Exact signed bytes: a body and the binary detached OpenPGP signature over it, kept together
//! so that what is stored and forwarded is what was signed. Each use signs under its own
//! domain prefix, so a signature made for one purpose can never be presented for another.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use pgp::composed::{Deserializable as _, DetachedSignature};
use pgp::ser::Serialize as _;
use rand::{CryptoRng, Rng};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::identity::{Cert, Fingerprint, IdentityError, SecretIdentity, SignatureRefusal};

/// What a signature was made for; the prefix is part of the signed data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Domain {
    RosterOp,
    Request,
    /// A poster's proof of origin on a post.
    PostProof,
    /// The key server's signature over an audit chain's head.
    AuditHead,
    /// A sender's claim inside a sealed deposit: list, key id, sender and session key.
    Deposit,
}

impl Domain {
    fn prefix(self) -> &'static [u8] {
        match self {
            Domain::RosterOp => b"hushlist roster-op v1\n",
            Domain::Request => b"hushlist request v1\n",
            Domain::PostProof => b"hushlist post-proof v1\n",
            Domain::AuditHead => b"hushlist audit-head v1\n",
            Domain::Deposit => b"hushlist deposit v1\n",
        }
    }
}

/// A body and a detached signature over `domain prefix || body`, both base64 on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signed {
    #[serde(with = "b64")]
    pub body: Vec<u8>,
    #[serde(with = "b64")]
    pub signature: Vec<u8>,
}

impl Signed {
    pub fn sign<R: Rng + CryptoRng>(
        rng: R,
        domain: Domain,
        signer: &SecretIdentity,
        body: Vec<u8>,
    ) -> Result<Self, IdentityError> {
        let signature = signer.sign_detached(rng, &domain_data(domain, &body))?;
        let signature = signature
            .to_bytes()
            .map_err(|e| IdentityError::Pgp(e.to_string()))?;
        Ok(Signed { body, signature })
    }

    /// Parses the signature packet (not the body) so its issuer can be looked up.
    fn detached(&self) -> Option<DetachedSignature> {
        DetachedSignature::from_bytes(&self.signature[..]).ok()
    }

    /// Whether `cert` made the signature over this body under `domain` with a key valid at
    /// the time the signature states.
    pub fn verify(&self, domain: Domain, cert: &Cert) -> bool {
        self.check(domain, cert, None).is_ok()
    }

    /// Why `cert` did not make the signature over this body under `domain`, with a key valid
    /// at the time the signature states and, if given, at `also_at`.
    pub fn check(
        &self,
        domain: Domain,
        cert: &Cert,
        also_at: Option<u64>,
    ) -> Result<(), SignatureRefusal> {
        let signature = self
            .detached()
            .ok_or_else(|| SignatureRefusal::NotBy(cert.fingerprint().clone()))?;
        cert.verify_detached(&signature, &domain_data(domain, &self.body), also_at)
    }

    /// Fingerprints the signature names as its issuer (primary or subkey).
    pub fn issuer_fingerprints(&self) -> Vec<Fingerprint> {
        self.detached()
            .map(|sig| {
                sig.signature
                    .issuer_fingerprint()
                    .into_iter()
                    .map(Fingerprint::from_pgp)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Finds the certificate that made the signature: `holder` names the certificate holding
    /// a key (primary or subkey) by that key's fingerprint, and is asked for each issuer the
    /// signature names, so the search costs one verification.
    pub fn find_signer<'a>(
        &self,
        domain: Domain,
        holder: impl Fn(&Fingerprint) -> Option<&'a Cert>,
    ) -> Option<&'a Cert> {
        self.issuer_fingerprints()
            .iter()
            .filter_map(holder)
            .find(|cert| self.verify(domain, cert))
    }
}

/// The signed bytes. Zeroized when dropped: a deposit claim's body holds a session key.
fn domain_data(domain: Domain, body: &[u8]) -> Zeroizing<Vec<u8>> {
    let prefix = domain.prefix();
    let mut data = Zeroizing::new(Vec::with_capacity(prefix.len() + body.len()));
    data.extend_from_slice(prefix);
    data.extend_from_slice(body);
    data
}

/// Serde helper: bytes as standard base64 strings.
pub mod b64 {
    use super::*;

    pub fn serialize<S: serde::Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        // Zeroized when dropped, as the decoded bytes are by their owner.
        let text = Zeroizing::new(String::deserialize(d)?);
        STANDARD
            .decode(text.as_bytes())
            .map_err(serde::de::Error::custom)
    }
}
