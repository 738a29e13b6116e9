//! Key validity over time, on a certificate gpg made at fixed times (`--faked-system-time`):
//! Mia's primary key, made at `MADE`, expires 30 days later; its encryption subkey A (made
//! at `MADE`) has no expiry of its own, and subkey B, made an hour later, expires a day after.

use hushlist_core::identity::NotValid;
use hushlist_core::roster::{Change, MemberEntry, Policy, Role, Roster, RosterError, sign_genesis};
use hushlist_core::{Address, Cert, IdentityError, SecretIdentity};
use pgp::types::KeyDetails as _;
use rand::rngs::OsRng;

const MADE: u64 = 1_700_000_000;
const HOUR: u64 = 3600;
const DAY: u64 = 86_400;
const PRIMARY_EXPIRES: u64 = MADE + 30 * DAY;
const SUBKEY_A: &str = "EBD101432B167007D5455A0CF8B4000BB71014D6";
const SUBKEY_B: &str = "292C0EAC95D19A27F66A2C88C696CB690AC63FD9";

fn mia() -> Cert {
    Cert::from_bytes(include_bytes!("golden/expiring.asc")).unwrap()
}

fn sealed_to_at(cert: &Cert, at: u64) -> Result<String, IdentityError> {
    let subkey = cert.encryption_subkey_at(at)?;
    Ok(hex::encode_upper(subkey.fingerprint().as_bytes()))
}

#[test]
fn the_newest_encryption_subkey_valid_at_the_time_receives_keys() {
    let mia = mia();
    assert_eq!(sealed_to_at(&mia, MADE + 2 * HOUR).unwrap(), SUBKEY_B);
    // B expired at MADE + HOUR + DAY: the older A, still valid, takes over.
    assert_eq!(sealed_to_at(&mia, MADE + HOUR + DAY - 1).unwrap(), SUBKEY_B);
    assert_eq!(sealed_to_at(&mia, MADE + HOUR + DAY).unwrap(), SUBKEY_A);
    assert_eq!(sealed_to_at(&mia, PRIMARY_EXPIRES - 1).unwrap(), SUBKEY_A);
    for at in [MADE + 2 * HOUR, MADE + 2 * DAY, PRIMARY_EXPIRES - 1] {
        mia.check_encryption_subkey_at(at).unwrap();
    }
}

#[test]
fn nothing_receives_keys_once_the_primary_key_expired() {
    let mia = mia();
    let at = PRIMARY_EXPIRES;
    for refused in [
        sealed_to_at(&mia, at).unwrap_err(),
        mia.check_encryption_subkey_at(at).unwrap_err(),
    ] {
        match refused {
            IdentityError::NotValid(NotValid::Expired {
                fingerprint,
                at: when,
                expired_at,
            }) => {
                assert_eq!(&fingerprint, mia.fingerprint());
                assert_eq!((when, expired_at), (at, PRIMARY_EXPIRES));
            }
            other => panic!("expected Expired, got {other:?}"),
        }
    }
}

#[test]
fn a_certificate_is_added_only_if_it_receives_keys_at_the_ops_time() {
    let owner = SecretIdentity::generate(OsRng, "Olivia <olivia@example.org>").unwrap();
    let genesis = sign_genesis(
        OsRng,
        &owner,
        Address::parse("olivia@example.org").unwrap(),
        Address::parse("team@lists.example.org").unwrap(),
        Policy::default(),
        PRIMARY_EXPIRES + DAY,
    )
    .unwrap();
    let roster = Roster::genesis(genesis).unwrap();
    let add = Change::Add {
        member: MemberEntry {
            address: Address::parse("mia@example.org").unwrap(),
            cert: mia().to_armored(),
            role: Role::Member,
        },
    };
    let late = roster
        .sign_next(OsRng, &owner, PRIMARY_EXPIRES + DAY, add.clone())
        .unwrap();
    let refused = roster.clone().apply(late).unwrap_err();
    assert!(
        matches!(
            refused,
            RosterError::BadCert(IdentityError::NotValid(NotValid::Expired { .. }))
        ),
        "{refused:?}"
    );
    // An op signed while the certificate was valid still replays once it has expired.
    let timely = roster.sign_next(OsRng, &owner, MADE + DAY, add).unwrap();
    roster.clone().apply(timely).unwrap();
}
