//! `hushlist demo`: one post from sender to members, in process, printing at each step what
//! the list server and the key server saw. The servers here are their libraries' decision
//! functions; the networked servers replace them as they land.

use std::io::Write;

use anyhow::{Context as _, bail};
use hushlist_core::outer::EncryptedPost;
use hushlist_core::roster::{Change, MemberEntry, Policy, Role, Roster, sign_genesis};
use hushlist_core::{Address, Pkesk, SecretIdentity};
use hushlist_envelope::{OpenWith, Signature, open, seal};
use hushlist_keyserver::{ReleaseError, release};
use hushlist_listserver::check_post;
use rand::rngs::OsRng;

const LIST: &str = "team@lists.example.org";
const KEY_SERVER: &str = "https://keys.example.org";

pub fn run(out: &mut impl Write) -> anyhow::Result<()> {
    let person = |name: &str, address: &str| {
        SecretIdentity::generate(OsRng, &format!("{name} <{address}>"))
            .with_context(|| format!("generating a key for {address}"))
    };
    let olivia = person("Olivia", "olivia@example.org")?;
    let bob = person("Bob", "bob@example.org")?;
    let carol = person("Carol", "carol@example.org")?;
    let key_server = person("Key server", "keys@keys.example.org")?;
    writeln!(out, "1. Identities (Ed25519 + Cv25519, gpg-compatible):")?;
    for (who, id) in [
        ("olivia (owner)", &olivia),
        ("bob", &bob),
        ("carol", &carol),
        ("key server", &key_server),
    ] {
        writeln!(out, "   {who:<15} {}", id.fingerprint())?;
    }

    let list = Address::parse(LIST)?;
    let genesis = sign_genesis(
        OsRng,
        &olivia,
        Address::parse("olivia@example.org")?,
        list,
        Policy::default(),
        now(),
    )?;
    let mut roster = Roster::genesis(genesis)?;
    for (id, address) in [(&bob, "bob@example.org"), (&carol, "carol@example.org")] {
        let member = MemberEntry {
            address: Address::parse(address)?,
            cert: id.cert().to_armored(),
            role: Role::Member,
        };
        let op = roster.sign_next(OsRng, &olivia, now(), Change::Add { member })?;
        roster.apply(op)?;
    }
    writeln!(
        out,
        "\n2. Olivia signs the roster of {LIST}: {} members, head seq {} ({}).\n   Both servers verify every op; neither can add a reader on its own.",
        roster.members().count(),
        roster.head_seq(),
        &roster.head_hash().as_str()[..16]
    )?;

    let post = format!(
        "From: Olivia <olivia@example.org>\r\nTo: {LIST}\r\nSubject: Quarterly numbers\r\n\
         Date: Thu, 26 Nov 2026 10:00:00 +0000\r\n\r\nRevenue is up. Keep it to yourselves.\r\n"
    );
    let sealed = seal(OsRng, post.as_bytes(), &olivia, KEY_SERVER)?;
    let sealed_to_server = Pkesk::seal(OsRng, &sealed.session_key, key_server.cert())?;
    let posted_at = roster.head_seq();
    // What the key server holds: the deposit opened with its own key (kept encrypted at rest).
    let held_key = sealed_to_server.unseal(&key_server)?;
    writeln!(
        out,
        "\n3. Olivia seals the post under key id {}.",
        sealed.key_id
    )?;
    writeln!(
        out,
        "   Key server receives: key id, list, roster seq {}, and the session key sealed to its own key ({} bytes).\n   It never receives the message.",
        posted_at,
        sealed_to_server.as_bytes().len()
    )?;

    let accepted = check_post(&sealed.message, &roster)
        .map_err(|e| anyhow::anyhow!("list server refused the post: {e}"))?;
    let outer = String::from_utf8_lossy(&sealed.message);
    let header_end = outer.find("\r\n\r\n").unwrap_or(outer.len());
    writeln!(
        out,
        "\n4. List server accepts the post from {} and stores only this:",
        accepted.from
    )?;
    for line in outer[..header_end].lines() {
        writeln!(out, "   | {line}")?;
    }
    writeln!(
        out,
        "   | (+ {} bytes of OpenPGP ciphertext)",
        accepted.packets.len()
    )?;
    if outer.contains("Quarterly") || outer.contains("Revenue") {
        bail!("the outer message leaks the subject or body");
    }

    writeln!(
        out,
        "\n5. Each member asks the key server and opens the post:"
    )?;
    for (name, member) in [("olivia", &olivia), ("bob", &bob), ("carol", &carol)] {
        let pkesk = release(OsRng, &roster, posted_at, &held_key, member.fingerprint())?;
        let opened = open(
            &sealed.message,
            OpenWith::Pkesk(&pkesk, member),
            &[olivia.cert().clone()],
        )?;
        let Signature::Valid(signer) = opened.signature else {
            bail!("the signature inside the post did not verify");
        };
        let text = String::from_utf8_lossy(&opened.message);
        let subject = text
            .lines()
            .find(|l| l.starts_with("Subject:"))
            .unwrap_or("Subject: ?");
        writeln!(
            out,
            "   {name:<7} reads \"{subject}\", signed by {}",
            &signer.as_str()[..16]
        )?;
    }

    let removal = roster.sign_next(
        OsRng,
        &olivia,
        now(),
        Change::Remove {
            address: Address::parse("carol@example.org")?,
        },
    )?;
    roster.apply(removal)?;
    writeln!(
        out,
        "\n6. Olivia removes carol (roster seq {}). The list keeps keys to the current roster, so:",
        roster.head_seq()
    )?;
    match release(OsRng, &roster, posted_at, &held_key, carol.fingerprint()) {
        Err(ReleaseError::Refused(refusal)) => {
            writeln!(out, "   key server refuses carol: {refusal}")?
        }
        other => bail!("carol should have been refused, got {other:?}"),
    }
    let pkesk = release(OsRng, &roster, posted_at, &held_key, bob.fingerprint())?;
    writeln!(out, "   bob still gets the key.")?;

    let spliced = EncryptedPost::parse(&sealed.message)?.splice(&sealed.message, &[pkesk]);
    open(&spliced, OpenWith::Identity(&bob), &[])?;
    writeln!(
        out,
        "\n7. Push mode: the list server splices bob's PKESK into his copy ({} bytes), a standard\n   PGP/MIME message gpg or Thunderbird decrypt with bob's key alone. The list server still\n   holds no usable key: the PKESK opens only with bob's secret key.",
        spliced.len()
    )?;
    writeln!(
        out,
        "\nDone: the list server saw ciphertext only, the key server saw keys only."
    )?;
    Ok(())
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
