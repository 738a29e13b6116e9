//! STARTTLS to the relay checks the relay's certificate: the real `hushlist-listserver` with
//! `--relay-ca-file`, relaying to aiosmtpd (which requires STARTTLS) on loopback, hands over
//! nothing when the relay's certificate is from a CA it does not trust or for another host
//! name. The deliveries wait, deferred and retried (neither delivered nor failed), and the
//! log names the TLS error.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use hushlist_peers::{test_ca_and_leaf, test_ca_and_leaf_for};
use hushlist_store::{DeliveryState, ListStore};

/// Posts to a list of two readers through a list server trusting only `trusted_ca` for a
/// relay with `relay_cert`; checks that nothing is handed over, that the copies wait, and
/// that the log says why: the relay's certificate is refused with `tls_error`.
async fn nothing_reaches_a_relay_whose_certificate_is_refused(
    dir: &Path,
    trusted_ca: &Path,
    (relay_cert, relay_key): (&Path, &Path),
    tls_error: &str,
) {
    let data_dir = dir.join("lists");
    let owner = create_list_in(&data_dir, 2).await;
    let relay = StarttlsRelay::start(dir, relay_cert, relay_key).await;
    let log = dir.join("listserver.log");
    let server = ListServerProcess::start_logging(
        &data_dir,
        &[
            "--relay",
            &format!("127.0.0.1:{}", relay.port),
            "--relay-ca-file",
            trusted_ca.to_str().unwrap(),
            "--retry-secs",
            "1",
        ],
        std::fs::File::create(&log).unwrap(),
    );
    let post = dir.join("post.eml");
    std::fs::write(&post, sealed_post(OWNER, &owner)).unwrap();
    let transcript = swaks_ok(server.smtp.port(), OWNER, LIST, &post, &[]);
    let id = queue_id(
        transcript
            .lines()
            .find_map(|l| l.strip_prefix("<-  250 2.0.0 "))
            .unwrap_or_else(|| panic!("the post was not taken: {transcript}")),
    );

    // Each delivery is tried, refused for the certificate, and tried again after its retry
    // delay: deferred each time, never given up on.
    let store = ListStore::open(&format!(
        "sqlite://{}",
        data_dir.join("listserver.db").display()
    ))
    .await
    .unwrap();
    let recipients = [OWNER.to_owned(), member_address(0), member_address(1)];
    wait_until(
        Duration::from_secs(30),
        "two attempts at each delivery, or its end",
        || async {
            let mut settled = 0;
            for recipient in &recipients {
                let row = store.delivery(id, recipient).await.unwrap().unwrap();
                settled += usize::from(row.attempts >= 2 || row.state != DeliveryState::Pending);
            }
            settled == recipients.len()
        },
    )
    .await;
    for recipient in &recipients {
        let row = store.delivery(id, recipient).await.unwrap().unwrap();
        assert_eq!(row.state, DeliveryState::Pending, "{recipient}: {row:?}");
        let error = row.last_error.unwrap_or_default();
        assert!(error.contains(tls_error), "{recipient}: {error}");
    }
    let counts = store.delivery_counts().await.unwrap();
    assert_eq!((counts.delivered, counts.failed), (0, 0), "{counts:?}");
    let received = relay.received();
    assert!(!received.contains("MESSAGE FOLLOWS"), "{received}");

    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(
        logged
            .lines()
            .any(|line| line.contains("deferring deliveries")
                && line.contains(&format!(
                    "relay 127.0.0.1:{} unreachable: TLS error",
                    relay.port
                ))
                && line.contains(tls_error)),
        "no log line names the TLS error {tls_error:?}:\n{logged}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_certificate_from_an_untrusted_ca_gets_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (trusted, relay, stranger) = (
        dir.path().join("trusted"),
        dir.path().join("relay"),
        dir.path().join("stranger"),
    );
    for d in [&trusted, &relay, &stranger] {
        std::fs::create_dir_all(d).unwrap();
    }
    let (trusted_ca, _, _) = test_ca_and_leaf(&trusted);
    // A certificate for the right name (127.0.0.1) from a CA of its own, which even bears
    // the trusted CA's name: the signature gives it away.
    let (_, cert, key) = test_ca_and_leaf(&stranger);
    nothing_reaches_a_relay_whose_certificate_is_refused(
        &relay,
        &trusted_ca,
        (&cert, &key),
        "invalid peer certificate: BadSignature",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_certificate_for_another_host_name_gets_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (certs, relay) = (dir.path().join("certs"), dir.path().join("relay"));
    for d in [&certs, &relay] {
        std::fs::create_dir_all(d).unwrap();
    }
    // From the CA the list server trusts, but for another host than 127.0.0.1.
    let (trusted_ca, cert, key) = test_ca_and_leaf_for(&certs, "DNS:mail.elsewhere.example");
    nothing_reaches_a_relay_whose_certificate_is_refused(
        &relay,
        &trusted_ca,
        (&cert, &key),
        "certificate not valid for name \"127.0.0.1\"",
    )
    .await;
}
