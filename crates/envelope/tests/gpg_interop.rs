//! Interoperability with real GnuPG: gpg-made keys load, gpg decrypts and verifies what we
//! seal and splice, and we open what gpg encrypts given the session key it prints.

use hushlist_core::outer::{EncryptedPost, KEY_ID_HEADER};
use hushlist_core::{Cert, Pkesk, SecretIdentity, SessionKey};
use hushlist_envelope::{OpenWith, open, seal};
use hushlist_peers::Gpg;
use hushlist_testkit::now;
use rand::rngs::OsRng;

/// What these tests ask of a GnuPG home beyond running it.
trait GpgKeys {
    fn gen_key(&self, email: &str, algo: &str) -> String;
    fn export(&self, uid: &str, armor: bool) -> Vec<u8>;
    fn export_secret(&self, uid: &str, armor: bool) -> Vec<u8>;
}

impl GpgKeys for Gpg {
    /// `gpg --quick-gen-key` with the given algorithm spec (`default`: RSA-3072 with an RSA
    /// encryption subkey; `future-default`: Ed25519 with a Cv25519 subkey); returns the user id.
    fn gen_key(&self, email: &str, algo: &str) -> String {
        let uid = format!("Member <{email}>");
        self.run_ok(&["--quick-gen-key", &uid, algo, "default", "never"], b"");
        uid
    }

    fn export(&self, uid: &str, armor: bool) -> Vec<u8> {
        let mut args = vec!["--export"];
        if armor {
            args.push("--armor");
        }
        args.push(uid);
        self.run_ok(&args, b"").stdout
    }

    fn export_secret(&self, uid: &str, armor: bool) -> Vec<u8> {
        let mut args = vec!["--export-secret-keys"];
        if armor {
            args.push("--armor");
        }
        args.push(uid);
        self.run_ok(&args, b"").stdout
    }
}

const POST: &str = "From: Sender <sender@example.org>\r\n\
To: team@lists.example.org\r\n\
Subject: interop été\r\n\
Date: Thu, 26 Nov 2026 10:00:00 +0000\r\n\
Message-ID: <interop@example.org>\r\n\
Content-Type: text/plain; charset=utf-8\r\n\
Content-Transfer-Encoding: 8bit\r\n\
\r\n\
Read by gpg without hushlist.\r\n";

#[test]
fn gpg_made_keys_load_armored_and_binary() {
    let gpg = Gpg::new();
    for (email, algo) in [
        ("ed@example.org", "future-default"),
        ("rsa@example.org", "default"),
    ] {
        let uid = gpg.gen_key(email, algo);
        for armor in [true, false] {
            let cert = Cert::from_bytes(&gpg.export(&uid, armor)).unwrap();
            cert.encryption_subkey_at(now()).unwrap();
            let secret = SecretIdentity::from_bytes(&gpg.export_secret(&uid, armor), "").unwrap();
            assert_eq!(secret.fingerprint(), cert.fingerprint());
            assert!(cert.user_ids().contains(&uid));
        }
    }
}

/// A member whose key gpg made (in the returned home) and a sender whose certificate that
/// gpg home knows; the member's certificate and the sender.
fn member_in_gpg_and_sender() -> (Gpg, Cert, SecretIdentity) {
    let gpg = Gpg::new();
    let uid = gpg.gen_key("member@example.org", "future-default");
    let member = Cert::from_bytes(&gpg.export(&uid, true)).unwrap();
    let sender = SecretIdentity::generate(OsRng, "Sender <sender@example.org>").unwrap();
    gpg.import(sender.cert().to_armored().as_bytes());
    (gpg, member, sender)
}

#[test]
fn gpg_decrypts_and_verifies_a_sealed_post_with_a_spliced_pkesk() {
    let (gpg, member, sender) = member_in_gpg_and_sender();

    let sealed = seal(OsRng, POST.as_bytes(), &sender, "https://keys.example.org").unwrap();
    let post = EncryptedPost::parse(&sealed.message).unwrap();
    let pkesk = Pkesk::seal(OsRng, &sealed.session_key, &member, now()).unwrap();
    let spliced = post.splice(&sealed.message, &[pkesk]);

    let out = gpg.run(&["--status-fd", "2", "--decrypt"], &spliced);
    let status = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "gpg exit {:?}: {status}", out.status);
    assert!(status.contains("[GNUPG:] DECRYPTION_OKAY"), "{status}");
    assert!(
        status.contains(&format!("[GNUPG:] VALIDSIG {}", sender.fingerprint())),
        "{status}"
    );
    assert!(status.contains("[GNUPG:] GOODSIG"), "{status}");
    assert!(
        status.contains("[GNUPG:] NOTATION_NAME post@hushlist.org"),
        "gpg reads the post marker (and fails on nothing, as it is not critical): {status}"
    );
    let ours = open(
        &sealed.message,
        OpenWith::SessionKey(&sealed.session_key),
        &[],
    )
    .unwrap();
    assert_eq!(
        out.stdout, ours.message,
        "gpg and hushlist see the same inner message"
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("Subject: interop été"));
}

#[test]
fn gpg_reads_the_armor_of_posts_of_every_length_modulo_three() {
    // Base64 of a length divisible by three has no padding; without the armor checksum line
    // GnuPG 2.2 then reads the END line as data. Three consecutive body lengths cover every
    // remainder of the packet length.
    let (gpg, member, sender) = member_in_gpg_and_sender();
    for extra in 0..3 {
        let post = format!("{POST}{}", "x".repeat(extra));
        let sealed = seal(OsRng, post.as_bytes(), &sender, "https://keys.example.org").unwrap();
        let parsed = EncryptedPost::parse(&sealed.message).unwrap();
        let pkesk = Pkesk::seal(OsRng, &sealed.session_key, &member, now()).unwrap();
        let spliced = parsed.splice(&sealed.message, &[pkesk]);
        let text = String::from_utf8(spliced).unwrap();
        let begin = text.find("-----BEGIN PGP MESSAGE-----").unwrap();
        let end = text.find("-----END PGP MESSAGE-----").unwrap() + 25;
        let out = gpg.run(&["--decrypt"], &text.as_bytes()[begin..end]);
        assert!(
            out.status.success(),
            "{extra} extra bytes: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// A spliced post with one bit of its encrypted data flipped: gpg, which knows the sender,
/// must report the integrity failure (`BADMDC` or `DECRYPTION_FAILED` in its status lines)
/// and exit non-zero, while the same post untouched decrypts with a good signature (so the
/// refusal is the flip's doing, not a missing key).
#[test]
fn gpg_rejects_a_tampered_spliced_post() {
    let (gpg, member, sender) = member_in_gpg_and_sender();
    let sealed = seal(OsRng, POST.as_bytes(), &sender, "https://keys.example.org").unwrap();
    let post = EncryptedPost::parse(&sealed.message).unwrap();
    let spliced = |tamper: bool| {
        let mut packets = Pkesk::seal(OsRng, &sealed.session_key, &member, now())
            .unwrap()
            .as_bytes()
            .to_vec();
        let mut data = post.packets.clone();
        if tamper {
            // In the last bytes: the MDC's own hash, after the signature, so the signature
            // still verifies and only the integrity check can catch the change.
            let target = data.len() - 5;
            data[target] ^= 0x80;
        }
        packets.extend_from_slice(&data);
        hushlist_core::outer::armor_message(&packets)
    };
    let decrypt = |armored: &[u8]| {
        let out = gpg.run(&["--status-fd", "2", "--decrypt"], armored);
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };

    let (ok, status) = decrypt(&spliced(false));
    assert!(ok, "{status}");
    assert!(status.contains("[GNUPG:] GOODSIG"), "{status}");
    assert!(status.contains("[GNUPG:] DECRYPTION_OKAY"), "{status}");

    let (ok, status) = decrypt(&spliced(true));
    // gpg may print plaintext before it finds the MDC failure; the exit code is what counts.
    assert!(!ok, "gpg accepted a tampered post: {status}");
    assert!(
        status.contains("[GNUPG:] BADMDC") || status.contains("[GNUPG:] DECRYPTION_FAILED"),
        "gpg must name the integrity failure: {status}"
    );
}

#[test]
fn we_open_what_gpg_encrypts_and_signs_given_its_session_key() {
    let gpg = Gpg::new();
    let sender_uid = gpg.gen_key("gpgsender@example.org", "future-default");
    let member_uid = gpg.gen_key("member@example.org", "future-default");
    let sender_cert = Cert::from_bytes(&gpg.export(&sender_uid, false)).unwrap();
    let inner = POST.replace(
        "Sender <sender@example.org>",
        "Sender <gpgsender@example.org>",
    );
    // A gpg user's post carries the post marker, key id and list as signed notations.
    let key_id = "0123456789abcdef0123456789abcdef";
    let sign_and_encrypt = |notations: &[String]| {
        let mut args: Vec<&str> = vec![
            "--armor",
            "--cipher-algo",
            "AES256",
            "--sign",
            "--local-user",
            &sender_uid,
            "--encrypt",
            "--recipient",
            &member_uid,
        ];
        for notation in notations {
            args.extend(["--sig-notation", notation]);
        }
        gpg.run_ok(&args, inner.as_bytes())
    };
    let out = sign_and_encrypt(&[
        "post@hushlist.org=1".to_owned(),
        format!("key-id@hushlist.org={key_id}"),
        "list@hushlist.org=team@lists.example.org".to_owned(),
    ]);
    let shown = gpg.run_ok(
        &["--status-fd", "2", "--show-session-key", "--decrypt"],
        &out.stdout,
    );
    let stderr = String::from_utf8_lossy(&shown.stderr);
    let session_text = stderr
        .lines()
        .find_map(|l| l.strip_prefix("[GNUPG:] SESSION_KEY "))
        .unwrap_or_else(|| panic!("no SESSION_KEY in {stderr}"));
    let session_key = SessionKey::from_gpg_string(session_text).unwrap();

    // Wrap gpg's output as an RFC 3156 message, as Thunderbird or mutt would send it.
    let mut outer = format!(
        "From: gpgsender@example.org\r\nTo: team@lists.example.org\r\nSubject: [...]\r\n\
         {KEY_ID_HEADER}: {key_id}\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=\"b\"\r\n\r\n\
         --b\r\nContent-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n\r\n\
         --b\r\nContent-Type: application/octet-stream\r\n\r\n"
    )
    .into_bytes();
    outer.extend_from_slice(&out.stdout);
    outer.extend_from_slice(b"\r\n--b--\r\n");

    let opened = open(
        &outer,
        OpenWith::SessionKey(&session_key),
        std::slice::from_ref(&sender_cert),
    )
    .unwrap();
    assert_eq!(opened.message, inner.as_bytes());
    assert_eq!(
        opened.signature.valid_signer(),
        Some(sender_cert.fingerprint())
    );

    // The same works from the member's gpg-made secret key, through gpg's own PKESK.
    let member = SecretIdentity::from_bytes(&gpg.export_secret(&member_uid, true), "").unwrap();
    let via_key = open(&outer, OpenWith::Identity(&member), &[sender_cert]).unwrap();
    assert_eq!(via_key.message, inner.as_bytes());
}
