//! Posts that are not what their sender sent, through `hushlist serve` and the command.
//!
//! Issue 18, hole 1: a stranger posting in a member's name over SMTP is refused, and nothing
//! reaches the relay or the archive.
//!
//! Issue 18, hole 2: an attacker on the plain-text path between `hushlist send` and the list
//! server learns the post's key id from its outer headers and, before the post's end of data
//! reaches the list server, posts other bytes under that key id itself. Since hole 1 that
//! takes someone who may post (here Eve, a member). `hushlist send` must report that the post
//! was not delivered (not "posted"), the archive keeps only the first post under that key id,
//! and sending again (a new key id) works.

mod common;

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

use common::{Served, hushlist, ok, proved_by, refused, served_to_mailboxes};
use hushlist_client::remote::submit;
use hushlist_core::outer::{EncryptedPost, KEY_ID_HEADER};
use hushlist_core::post_proof::POST_PROOF_HEADER;
use hushlist_core::{Address, Cert, SecretIdentity};
use hushlist_envelope::seal;
use rand::rngs::OsRng;

const LIST: &str = "team@lists.example.org";
const OLIVIA: &str = "olivia@example.org";
const EVE: &str = "eve@example.net";

/// A TCP relay in front of the list server's SMTP port that, the first time a post's key id
/// passes through it, posts a forgery under that key id to the list server before passing
/// on anything more. Returns its address and the forged posts' key ids.
fn forging_relay(
    list_smtp: String,
    key_server: String,
    eve: SecretIdentity,
) -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let forged = Arc::new(Mutex::new(Vec::new()));
    let forged_ids = forged.clone();
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let mut client = client.unwrap();
            let mut upstream = TcpStream::connect(&list_smtp).unwrap();
            let (mut from_upstream, mut to_client) =
                (upstream.try_clone().unwrap(), client.try_clone().unwrap());
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut from_upstream, &mut to_client);
            });
            let mut seen = Vec::new();
            let mut chunk = [0u8; 4096];
            loop {
                let n = client.read(&mut chunk).unwrap_or(0);
                if n == 0 {
                    let _ = upstream.shutdown(std::net::Shutdown::Write);
                    break;
                }
                seen.extend_from_slice(&chunk[..n]);
                if forged_ids.lock().unwrap().is_empty()
                    && let Some(key_id) = key_id_in(&seen)
                {
                    forge(&list_smtp, &key_server, &eve, &key_id);
                    forged_ids.lock().unwrap().push(key_id);
                }
                upstream.write_all(&chunk[..n]).unwrap();
            }
        }
    });
    (address, forged)
}

/// The key id of the post in an SMTP stream, once its header line is complete.
fn key_id_in(stream: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(stream);
    let start = text.find(&format!("{KEY_ID_HEADER}: "))? + KEY_ID_HEADER.len() + 2;
    let end = text[start..].find("\r\n")?;
    Some(text[start..start + end].to_owned())
}

/// Eve's garbage, sealed under her own key, with `key_id` written over its own key id and
/// a proof of origin she signs for it, handed to the list server first.
fn forge(list_smtp: &str, key_server: &str, eve: &SecretIdentity, key_id: &str) {
    let garbage = seal(
        OsRng,
        format!("From: {EVE}\r\nTo: {LIST}\r\nSubject: garbage\r\n\r\nIgnore all that.\r\n")
            .as_bytes(),
        eve,
        key_server,
    )
    .unwrap();
    let moved = String::from_utf8(garbage.message)
        .unwrap()
        .replace(garbage.key_id.as_str(), key_id);
    let forged = proved_by(moved.as_bytes(), eve, LIST);
    assert_eq!(
        EncryptedPost::parse(&forged).unwrap().key_id.to_string(),
        key_id
    );
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let reply = runtime
        .block_on(submit(
            list_smtp,
            &Address::parse(EVE).unwrap(),
            &Address::parse(LIST).unwrap(),
            &forged,
        ))
        .unwrap();
    assert!(reply.starts_with("Queued as "), "{reply}");
}

/// Olivia's home with the list created on `served`, posting through `smtp`, and Eve, a
/// member who may post, added with a key the test holds.
fn olivia_adding_eve(
    dir: &std::path::Path,
    served: &Served,
    smtp: &str,
    eve: &Cert,
) -> std::path::PathBuf {
    let home = dir.join(OLIVIA);
    let run = |args: &[&str]| hushlist(&home, args, b"");
    ok(run(&["init", "--email", OLIVIA]));
    ok(run(&[
        "list",
        "create",
        LIST,
        "--key-server",
        &served.key_url,
        "--list-server",
        &served.list_url,
        "--smtp",
        smtp,
        "--admin-token",
        &served.admin_token,
    ]));
    let eve_cert = dir.join("eve.asc");
    std::fs::write(&eve_cert, eve.to_armored()).unwrap();
    ok(run(&[
        "list",
        "add",
        LIST,
        EVE,
        "--key",
        eve_cert.to_str().unwrap(),
    ]));
    home
}

/// Issue 18, hole 1, against `hushlist serve` with a real relay: a stranger's post in Olivia's
/// name (her own proof, or none) is refused 550 5.7.1, and the relay and the archive never
/// see it. Olivia's own post still goes out.
#[test]
fn a_strangers_post_in_a_members_name_is_refused_and_never_relayed() {
    let dir = tempfile::tempdir().unwrap();
    let (sink, served) = served_to_mailboxes(dir.path());
    let eve = SecretIdentity::generate(OsRng, EVE).unwrap();
    let home = olivia_adding_eve(dir.path(), &served, &served.smtp, eve.cert());
    let mallory = SecretIdentity::generate(OsRng, "mallory@example.net").unwrap();
    let forged = seal(
        OsRng,
        format!("From: {OLIVIA}\r\nTo: {LIST}\r\nSubject: urgent\r\n\r\nWire the money.\r\n")
            .as_bytes(),
        &mallory,
        &served.key_url,
    )
    .unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let submit_as_olivia = |message: &[u8]| {
        runtime
            .block_on(submit(
                &served.smtp,
                &Address::parse(OLIVIA).unwrap(),
                &Address::parse(LIST).unwrap(),
                message,
            ))
            .unwrap_err()
            .to_string()
    };
    let signed_by_mallory = submit_as_olivia(&forged.message);
    assert!(
        signed_by_mallory.contains("550 5.7.1"),
        "{signed_by_mallory}"
    );
    let text = String::from_utf8(forged.message).unwrap();
    let proof_at = text.find(POST_PROOF_HEADER).unwrap();
    let body_at = text.find("\r\n\r\n").unwrap();
    let unproven = format!("{}{}", &text[..proof_at], &text[body_at + 2..]);
    assert!(EncryptedPost::parse(unproven.as_bytes()).is_ok());
    let unproven = submit_as_olivia(unproven.as_bytes());
    assert!(unproven.contains("550 5.7.1"), "{unproven}");

    let run = |args: &[&str], stdin: &[u8]| hushlist(&home, args, stdin);
    ok(run(
        &["send", "--list", LIST, "--subject", "Real"],
        b"Hello.\n",
    ));
    let archive = ok(run(&["archive", LIST], b""));
    assert_eq!(archive.lines().count(), 1, "only Olivia's post: {archive}");
    sink.wait_for_copies(EVE, 1);
    let relayed: Vec<Vec<u8>> = [OLIVIA, EVE]
        .iter()
        .flat_map(|member| sink.copies_for(member))
        .collect();
    assert!(
        relayed
            .iter()
            .all(|copy| !String::from_utf8_lossy(copy).contains(forged.key_id.as_str())),
        "no forged post reached the relay"
    );
}

#[test]
fn send_reports_a_post_whose_key_id_was_taken_first_as_not_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let (_sink, served) = served_to_mailboxes(dir.path());
    let eve = SecretIdentity::generate(OsRng, EVE).unwrap();
    let eve_cert = eve.cert().clone();
    let (relay, forged) = forging_relay(served.smtp.clone(), served.key_url.clone(), eve);
    let home = olivia_adding_eve(dir.path(), &served, &relay, &eve_cert);
    let run = |args: &[&str], stdin: &[u8]| hushlist(&home, args, stdin);
    let err = refused(run(
        &["send", "--list", LIST, "--subject", "Meeting"],
        b"Meet at ten.\n",
    ));
    let key_id = forged.lock().unwrap().first().cloned().expect("a forgery");
    assert!(err.contains("NOT delivered"), "{err}");
    assert!(err.contains(&key_id), "the report names the key id: {err}");
    assert!(err.contains("554 5.7.0"), "with the server's reply: {err}");

    let archive = ok(run(&["archive", LIST], b""));
    assert_eq!(archive.lines().count(), 1, "only the first post: {archive}");
    assert!(archive.contains(&key_id), "{archive}");

    // Sent again, the post gets a new key id and goes through.
    ok(run(
        &["send", "--list", LIST, "--subject", "Meeting"],
        b"Meet at ten.\n",
    ));
    assert_eq!(ok(run(&["archive", LIST], b"")).lines().count(), 2);
}
