//! Certificates crafted to carry another person's public key: a new primary key of the
//! attacker's with its own encryption subkey, plus a copy of the victim's primary public key
//! packet bound as a subkey by the attacker's key. Only the victim's public certificate is
//! needed. Shared with the `hushlist` crate's tests (included there by path).

#![allow(dead_code)] // each including test binary uses its own part of this module

use hushlist_core::{Cert, SecretIdentity};
use pgp::composed::{
    ArmorOptions, Deserializable as _, EncryptionCaps, KeyType, SecretKeyParamsBuilder,
    SignedPublicKey, SignedPublicSubKey, SubkeyParamsBuilder,
};
use pgp::crypto::ecc_curve::ECCCurve;
use pgp::packet::{KeyFlags, PubKeyInner, PublicSubkey};
use pgp::types::{KeyDetails as _, Password};
use rand::rngs::OsRng;

/// How the copied key is bound into the crafted certificate.
#[derive(Debug, Clone, Copy)]
pub enum Binding {
    /// With no key flags: a valid binding that claims no use, which rpgp accepts.
    NoFlags,
    /// As a signing subkey, which needs the victim's back-signature the attacker cannot make.
    SigningWithoutBackSignature,
}

/// The crafted certificate, armored, and the attacker's secret key (without the copied
/// subkey, whose secret the attacker does not have), which signs as the certificate's
/// primary key.
pub struct Crafted {
    pub cert: String,
    pub attacker: SecretIdentity,
}

/// A certificate for `user_id` whose subkeys are a fresh encryption subkey and `victim`'s
/// primary key.
pub fn carrying_key_of(victim: &Cert, user_id: &str, binding: Binding) -> Crafted {
    let encryption = SubkeyParamsBuilder::default()
        .key_type(KeyType::ECDH(ECCCurve::Curve25519Legacy))
        .can_sign(false)
        .can_encrypt(EncryptionCaps::All)
        .can_authenticate(false)
        .build()
        .unwrap();
    let attacker = SecretKeyParamsBuilder::default()
        .key_type(KeyType::Ed25519Legacy)
        .can_certify(true)
        .can_sign(true)
        .can_encrypt(EncryptionCaps::None)
        .primary_user_id(user_id.to_owned())
        .subkeys(vec![encryption])
        .build()
        .unwrap()
        .generate(OsRng)
        .unwrap();
    let victim = SignedPublicKey::from_bytes(&victim.to_binary()[..]).unwrap();
    let victim_key = &victim.primary_key;
    let copied = PublicSubkey::from_inner(
        PubKeyInner::new(
            victim_key.version(),
            victim_key.algorithm(),
            victim_key.created_at(),
            None,
            victim_key.public_params().clone(),
        )
        .unwrap(),
    )
    .unwrap();
    let mut flags = KeyFlags::default();
    if let Binding::SigningWithoutBackSignature = binding {
        flags.set_sign(true);
    }
    let binding_signature = copied
        .sign(
            OsRng,
            &attacker.primary_key,
            attacker.primary_key.public_key(),
            &Password::empty(),
            flags,
            None,
        )
        .unwrap();
    let mut crafted = attacker.to_public_key();
    crafted
        .public_subkeys
        .push(SignedPublicSubKey::new(copied, vec![binding_signature]));
    let secret = attacker.to_armored_string(ArmorOptions::default()).unwrap();
    Crafted {
        cert: crafted.to_armored_string(ArmorOptions::default()).unwrap(),
        attacker: SecretIdentity::from_bytes(secret.as_bytes(), "").unwrap(),
    }
}
