//! Issue 18, hole 2, through the command: an attacker on the plain-text path between
//! `hushlist send` and the list server learns the post's key id from its outer headers and,
//! before the post's end of data reaches the list server, posts other bytes under that key id
//! itself. `hushlist send` must report that the post was not delivered (not "posted"), the
//! archive keeps only the first post under that key id, and sending again (a new key id)
//! works.

mod common;

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

use common::{Served, hushlist, ok, refused};
use hushlist_client::remote::submit;
use hushlist_core::outer::{EncryptedPost, KEY_ID_HEADER};
use hushlist_core::{Address, SecretIdentity};
use hushlist_envelope::seal;
use hushlist_peers::SmtpSink;
use rand::rngs::OsRng;

const LIST: &str = "team@lists.example.org";
const OLIVIA: &str = "olivia@example.org";

/// A TCP relay in front of the list server's SMTP port that, the first time a post's key id
/// passes through it, posts a forgery under that key id to the list server before passing
/// on anything more. Returns its address and the forged posts' key ids.
fn forging_relay(list_smtp: String, key_server: String) -> (String, Arc<Mutex<Vec<String>>>) {
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
                    forge(&list_smtp, &key_server, &key_id);
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

/// Eve's garbage, sealed under her own key, with Olivia's address outside and `key_id`
/// written over its own key id, handed to the list server first.
fn forge(list_smtp: &str, key_server: &str, key_id: &str) {
    let eve = SecretIdentity::generate(OsRng, "eve@example.net").unwrap();
    let garbage = seal(
        OsRng,
        format!("From: {OLIVIA}\r\nTo: {LIST}\r\nSubject: garbage\r\n\r\nIgnore all that.\r\n")
            .as_bytes(),
        &eve,
        key_server,
    )
    .unwrap();
    let forged = String::from_utf8(garbage.message)
        .unwrap()
        .replace(&garbage.key_id.to_string(), key_id);
    assert_eq!(
        EncryptedPost::parse(forged.as_bytes())
            .unwrap()
            .key_id
            .to_string(),
        key_id
    );
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let reply = runtime
        .block_on(submit(
            list_smtp,
            &Address::parse(OLIVIA).unwrap(),
            &Address::parse(LIST).unwrap(),
            forged.as_bytes(),
        ))
        .unwrap();
    assert!(reply.starts_with("Queued as "), "{reply}");
}

#[test]
fn send_reports_a_post_whose_key_id_was_taken_first_as_not_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let sink = SmtpSink::start(&dir.path().join("mailboxes"));
    let served = Served::start(
        &dir.path().join("hushlist-data"),
        sink.port,
        "lists.example.org",
    );
    let (relay, forged) = forging_relay(served.smtp.clone(), served.key_url.clone());
    let home = dir.path().join(OLIVIA);
    let run = |args: &[&str], stdin: &[u8]| hushlist(&home, args, stdin);
    ok(run(&["init", "--email", OLIVIA], b""));
    ok(run(
        &[
            "list",
            "create",
            LIST,
            "--key-server",
            &served.key_url,
            "--list-server",
            &served.list_url,
            "--smtp",
            &relay,
            "--admin-token",
            &served.admin_token,
        ],
        b"",
    ));

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
