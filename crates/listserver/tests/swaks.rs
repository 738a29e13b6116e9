//! A real SMTP client (swaks) posts to the list server over TCP.

mod common;

use std::sync::Arc;

use common::{LIST, OWNER, create_list, list_server, serve_smtp, swaks};
use hushlist_envelope::seal;
use hushlist_listserver::smtp::{DEFAULT_CONNECTIONS, SmtpConfig, serve, tls_acceptor};
use hushlist_peers::test_ca_and_leaf;
use rand::rngs::OsRng;

/// swaks's options in these tests besides the server's: a client's name and a timeout.
const CLIENT: [&str; 4] = ["--ehlo", "client.example.org", "--timeout", "20"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swaks_posts_an_encrypted_message_and_a_plaintext_one_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let server = list_server(dir.path()).await;
    let olivia = create_list(&server, 0).await;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(serve(
        listener,
        Arc::new(SmtpConfig::default()),
        server.clone(),
        DEFAULT_CONNECTIONS,
        None,
        async {
            let _ = stopped.await;
        },
    ));

    let text = format!("From: {OWNER}\r\nTo: {LIST}\r\nSubject: via swaks\r\n\r\nhello\r\n");
    let sealed = seal(OsRng, text.as_bytes(), &olivia, "https://keys.example.org").unwrap();
    let post = dir.path().join("post.eml");
    std::fs::write(&post, &sealed.message).unwrap();
    let out = tokio::task::spawn_blocking(move || swaks(port, OWNER, LIST, &post, &CLIENT))
        .await
        .unwrap();
    let transcript = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{transcript}");
    assert!(
        transcript.contains("<-  250 2.0.0 Queued as"),
        "{transcript}"
    );
    let stored = server.store().posts(LIST, 0, 10).await.unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].key_id, sealed.key_id.as_str());
    // swaks ends DATA with one more CRLF than the file has; everything else arrives as sent.
    assert_eq!(
        stored[0].message.strip_suffix(b"\r\n"),
        Some(&sealed.message[..])
    );

    let plain = dir.path().join("plain.eml");
    std::fs::write(&plain, text).unwrap();
    let out = tokio::task::spawn_blocking(move || swaks(port, OWNER, LIST, &plain, &CLIENT))
        .await
        .unwrap();
    let transcript = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{transcript}");
    assert!(
        transcript.contains("<** 550 5.7.1 this list only accepts encrypted posts"),
        "{transcript}"
    );
    assert_eq!(server.store().posts(LIST, 0, 10).await.unwrap().len(), 1);

    stop.send(()).unwrap();
    serving.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swaks_posts_over_starttls_when_a_certificate_is_configured() {
    let dir = tempfile::tempdir().unwrap();
    let (_ca, cert, key) = test_ca_and_leaf(dir.path());
    let acceptor = tls_acceptor(&cert, &key).unwrap();
    assert!(
        tls_acceptor(&key, &cert).is_err(),
        "a key is not a certificate"
    );

    let server = list_server(dir.path()).await;
    let olivia = create_list(&server, 0).await;
    let port = serve_smtp(&server, Some(acceptor)).await;

    let text = format!("From: {OWNER}\r\nTo: {LIST}\r\nSubject: tls\r\n\r\nhello\r\n");
    let sealed = seal(OsRng, text.as_bytes(), &olivia, "https://keys.example.org").unwrap();
    let post = dir.path().join("post.eml");
    std::fs::write(&post, &sealed.message).unwrap();
    let out = tokio::task::spawn_blocking(move || {
        swaks(
            port,
            OWNER,
            LIST,
            &post,
            &[&CLIENT[..], &["--tls"]].concat(),
        )
    })
    .await
    .unwrap();
    let transcript = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{transcript}");
    assert!(transcript.contains("<-  250-STARTTLS"), "{transcript}");
    assert!(
        transcript.contains("<-  220 2.0.0 Ready to start TLS"),
        "{transcript}"
    );
    // After the handshake the session runs over TLS (swaks marks those lines with ~).
    assert!(
        transcript.contains("<~  250 2.0.0 Queued as"),
        "{transcript}"
    );
    assert!(
        !transcript.contains("<~  250-STARTTLS"),
        "not offered twice: {transcript}"
    );
    assert_eq!(server.store().posts(LIST, 0, 10).await.unwrap().len(), 1);
}
