//! Key expiry at the real key server: keys are sealed only to an encryption subkey valid now,
//! an expired certificate is not added, and an expired key's requests are refused.
//! The certificates are made by gpg, some of it at past times (`--faked-system-time`), as a
//! person's key made years ago and let lapse would be.

mod common;

use common::*;
use hushlist_core::api::{Deposit, GrantRequest, Grants, KeyRelease, purpose};
use hushlist_core::identity::NotValid;
use hushlist_core::roster::{Change, MemberEntry, Role, Roster, RosterError, SignedOp};
use hushlist_core::{Address, Cert, KeyId, Pkesk, SecretIdentity, SessionKey};
use hushlist_peers::Gpg;
use hushlist_testkit::gpg::gpg_at;
use hushlist_testkit::http::error_code as code;
use rand::rngs::OsRng;
use serde_json::Value;

const DAY: u64 = 86_400;

/// A primary key for `uid` that only signs and certifies, made at `at` and never expiring
/// (encryption subkeys are added by each test); its fingerprint.
fn signing_key_made_at(gpg: &Gpg, uid: &str, at: u64) -> String {
    gpg_at(
        gpg,
        at,
        &["--quick-gen-key", uid, "ed25519", "sign,cert", "never"],
        b"",
    );
    primary_fingerprint(gpg, uid)
}

fn primary_fingerprint(gpg: &Gpg, uid: &str) -> String {
    let out = gpg.run_ok(&["--with-colons", "--list-keys", uid], b"");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("fpr:"))
        .map(|rest| rest.trim_matches(':').to_owned())
        .unwrap()
}

/// The key ids of a key's encryption subkeys with their expiry as gpg reads it.
fn encryption_subkeys(gpg: &Gpg, uid: &str) -> Vec<(String, Option<u64>)> {
    let out = gpg.run_ok(&["--with-colons", "--list-keys", uid], b"");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter(|l| l.starts_with("sub:"))
        .map(|l| l.split(':').collect::<Vec<_>>())
        .filter(|fields| fields[11].contains('e'))
        .map(|fields| (fields[4].to_owned(), fields[6].parse().ok()))
        .collect()
}

fn secret_identity(gpg: &Gpg, uid: &str) -> SecretIdentity {
    let out = gpg.run_ok(&["--armor", "--export-secret-keys", uid], b"");
    SecretIdentity::from_bytes(&out.stdout, "").unwrap()
}

/// The key id a PKESK is addressed to, as gpg reads the packet.
fn pkesk_recipient(gpg: &Gpg, pkesk: &[u8]) -> String {
    let out = gpg.run(&["--list-packets"], pkesk);
    let listing = String::from_utf8_lossy(&out.stdout).into_owned();
    listing
        .lines()
        .find_map(|l| l.split_once("keyid ").map(|(_, id)| id.trim().to_owned()))
        .unwrap_or_else(|| panic!("no PKESK recipient in {listing}"))
}

fn seal_to(cert: &Cert, session_key: &SessionKey) -> Vec<u8> {
    Pkesk::seal(OsRng, session_key, cert, now())
        .unwrap()
        .as_bytes()
        .to_vec()
}

struct KeyServerProcess {
    _dir: tempfile::TempDir,
    child: std::process::Child,
    base: String,
    admin: String,
    grants: String,
    http: reqwest::Client,
}

impl KeyServerProcess {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (child, base) = spawn_binary(dir.path(), &[]);
        let token = |name| std::fs::read_to_string(dir.path().join(name)).unwrap();
        KeyServerProcess {
            admin: token("admin.token"),
            grants: token("grants.token"),
            _dir: dir,
            child,
            base,
            http: reqwest::Client::new(),
        }
    }

    async fn post(
        &self,
        path: &str,
        body: &impl serde::Serialize,
        token: Option<&str>,
    ) -> (u16, Value) {
        post_json(&self.http, format!("{}{path}", self.base), body, token)
            .await
            .unwrap()
    }

    async fn send_op(&self, op: &SignedOp) -> (u16, Value) {
        self.post(&format!("/v1/lists/{LIST}/ops"), op, None).await
    }

    async fn server_cert(&self) -> Cert {
        let key = server_key_at(&self.http, &self.base).await;
        Cert::from_bytes(key.cert.as_bytes()).unwrap()
    }

    async fn fetch(&self, reader: &SecretIdentity, key_id: &KeyId) -> (u16, Value) {
        self.post(
            &format!("/v1/lists/{LIST}/keys/{key_id}"),
            &fetch_request(reader, key_id),
            None,
        )
        .await
    }

    async fn grants(&self, key_id: &KeyId, reader: &SecretIdentity) -> Grants {
        let request = GrantRequest {
            recipients: vec![reader.fingerprint().clone()],
        };
        let path = format!("/v1/lists/{LIST}/keys/{key_id}/grants");
        let (status, body) = self.post(&path, &request, Some(&self.grants)).await;
        assert_eq!(status, 200, "{body}");
        serde_json::from_value(body).unwrap()
    }
}

impl Drop for KeyServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Olivia's op adding `who` at `address` in `role`, stating it was signed at `signed_at`.
fn add_op(
    roster: &Roster,
    who: &SecretIdentity,
    address: &str,
    role: Role,
    signed_at: u64,
) -> SignedOp {
    let member = MemberEntry {
        address: Address::parse(address).unwrap(),
        cert: who.cert().to_armored(),
        role,
    };
    roster
        .sign_next(OsRng, &people().olivia, signed_at, Change::Add { member })
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_sealed_to_the_valid_encryption_subkey_not_a_newer_expired_one() {
    // Mia made her key ten days ago with an encryption subkey that never expires, and an
    // hour later a second one that expired a day after.
    let gpg = Gpg::new();
    let uid = "Mia <mia@example.org>";
    let made = now() - 10 * DAY;
    let fingerprint = signing_key_made_at(&gpg, uid, made);
    gpg_at(
        &gpg,
        made,
        &["--quick-add-key", &fingerprint, "cv25519", "encr", "never"],
        b"",
    );
    gpg_at(
        &gpg,
        made + 3600,
        &["--quick-add-key", &fingerprint, "cv25519", "encr", "1d"],
        b"",
    );
    let subkeys = encryption_subkeys(&gpg, uid);
    let valid = subkeys
        .iter()
        .find(|(_, expires)| expires.is_none())
        .unwrap();
    let expired = subkeys
        .iter()
        .find(|(_, expires)| expires.is_some())
        .unwrap();
    assert!(expired.1.unwrap() < now(), "{subkeys:?}");
    let mia = secret_identity(&gpg, uid);

    let server = KeyServerProcess::start();
    let mut roster = create_list_at(&server.http, &server.base, &server.base, &server.admin).await;
    let op = add_op(&roster, &mia, "mia@example.org", Role::Member, now());
    let (status, body) = server.send_op(&op).await;
    assert_eq!(status, 201, "{body}");
    roster.apply(op).unwrap();
    let (key_id, session_key) = deposit_at(
        &server.http,
        &server.base,
        &people().bob,
        &server.server_cert().await,
    )
    .await;

    let (status, body) = server.fetch(&mia, &key_id).await;
    assert_eq!(status, 200, "{body}");
    let release: KeyRelease = serde_json::from_value(body).unwrap();
    assert_eq!(
        pkesk_recipient(&gpg, &release.pkesk),
        valid.0,
        "the key server sealed to {}, not the valid subkey {} (expired one: {})",
        pkesk_recipient(&gpg, &release.pkesk),
        valid.0,
        expired.0
    );
    let pkesk = Pkesk::from_bytes(&release.pkesk).unwrap();
    assert_eq!(pkesk.unseal(&mia).unwrap(), session_key);

    // Push mode's grants choose the same subkey.
    let grants = server.grants(&key_id, &mia).await;
    assert_eq!(grants.refused.len(), 0, "{:?}", grants.refused);
    assert_eq!(pkesk_recipient(&gpg, &grants.granted[0].pkesk), valid.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_certificate_is_not_added_and_its_requests_and_ops_are_refused() {
    // Xena's key was made ten days ago to last two days.
    let gpg = Gpg::new();
    let uid = "Xena <xena@example.org>";
    let made = now() - 10 * DAY;
    gpg_at(
        &gpg,
        made,
        &["--quick-gen-key", uid, "future-default", "default", "2d"],
        b"",
    );
    let xena = secret_identity(&gpg, uid);

    let server = KeyServerProcess::start();
    let mut roster = create_list_at(&server.http, &server.base, &server.base, &server.admin).await;

    // An owner adding her now is refused, by the owner's own roster and by the key server.
    let now_op = add_op(&roster, &xena, "xena@example.org", Role::Owner, now());
    let refused = roster.clone().apply(now_op.clone()).unwrap_err();
    assert!(refused.to_string().contains("expired"), "{refused}");
    let (status, body) = server.send_op(&now_op).await;
    assert_eq!((status, code(&body)), (400, "cert_expired"), "{body}");

    // Added as an owner while her key was valid (an op signed back then), she stays on the
    // roster, but her key no longer signs: neither requests (deposits, fetches) nor ops.
    let then_op = add_op(&roster, &xena, "xena@example.org", Role::Owner, made + DAY);
    let (status, body) = server.send_op(&then_op).await;
    assert_eq!(status, 201, "{body}");
    roster.apply(then_op).unwrap();

    let server_cert = server.server_cert().await;
    let (own_key_id, own_session_key) = (KeyId::generate(OsRng), SessionKey::generate(OsRng));
    let deposit = Deposit {
        key_id: own_key_id,
        sealed_key: seal_to(&server_cert, &own_session_key),
    };
    let request = signed(&xena, &purpose::deposit(&list()), &deposit);
    let (status, body) = server
        .post(&format!("/v1/lists/{LIST}/keys"), &request, None)
        .await;
    assert_eq!((status, code(&body)), (403, "key_expired"), "{body}");

    let (key_id, _) = deposit_at(&server.http, &server.base, &people().bob, &server_cert).await;
    let (status, body) = server.fetch(&xena, &key_id).await;
    assert_eq!((status, code(&body)), (403, "key_expired"), "{body}");

    let remove_rita = Change::Remove {
        address: Address::parse("rita@example.org").unwrap(),
    };
    let op = roster.sign_next(OsRng, &xena, now(), remove_rita).unwrap();
    let refused = roster.clone().apply(op.clone()).unwrap_err();
    assert!(
        matches!(
            refused,
            RosterError::SignerKeyNotValid(NotValid::Expired { .. })
        ),
        "{refused:?}"
    );
    let (status, body) = server.send_op(&op).await;
    assert_eq!((status, code(&body)), (403, "signer_key_expired"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_whose_encryption_subkeys_all_expired_gets_no_key_and_is_told_why() {
    // Nell's primary key never expires; her one encryption subkey expired nine days ago.
    let gpg = Gpg::new();
    let uid = "Nell <nell@example.org>";
    let made = now() - 10 * DAY;
    let fingerprint = signing_key_made_at(&gpg, uid, made);
    gpg_at(
        &gpg,
        made,
        &["--quick-add-key", &fingerprint, "cv25519", "encr", "1d"],
        b"",
    );
    let nell = secret_identity(&gpg, uid);

    let server = KeyServerProcess::start();
    let roster = create_list_at(&server.http, &server.base, &server.base, &server.admin).await;
    let op = add_op(
        &roster,
        &nell,
        "nell@example.org",
        Role::Member,
        made + 3600,
    );
    let (status, body) = server.send_op(&op).await;
    assert_eq!(status, 201, "{body}");
    let (key_id, _) = deposit_at(
        &server.http,
        &server.base,
        &people().bob,
        &server.server_cert().await,
    )
    .await;

    let (status, body) = server.fetch(&nell, &key_id).await;
    assert_eq!((status, code(&body)), (422, "member_key_expired"), "{body}");
    let grants = server.grants(&key_id, &nell).await;
    assert_eq!(grants.granted.len(), 0);
    assert!(
        grants.refused[0].reason.contains("expired"),
        "{:?}",
        grants.refused
    );
}
