//! A real SMTP client (swaks) posts to the list server over TCP.

use std::process::Command;
use std::sync::Arc;

use hushlist_core::roster::{Policy, sign_genesis};
use hushlist_core::{Address, SecretIdentity};
use hushlist_envelope::seal;
use hushlist_listserver::service::ListServer;
use hushlist_listserver::smtp::{DEFAULT_CONNECTIONS, SmtpConfig, serve, tls_acceptor};
use rand::rngs::OsRng;

const LIST: &str = "team@lists.example.org";

fn swaks(port: u16, from: &str, data: &std::path::Path) -> std::process::Output {
    swaks_with(port, from, data, &[])
}

fn swaks_with(
    port: u16,
    from: &str,
    data: &std::path::Path,
    extra: &[&str],
) -> std::process::Output {
    Command::new("swaks")
        .args([
            "--server",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--from",
            from,
            "--to",
            LIST,
        ])
        .args(["--ehlo", "client.example.org", "--timeout", "20"])
        .args(extra)
        .arg("--data")
        .arg(data)
        .output()
        .expect("swaks must be installed (.ci/run installs it)")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swaks_posts_an_encrypted_message_and_a_plaintext_one_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = hushlist_store::ListStore::open(&format!(
        "sqlite://{}",
        dir.path().join("lists.db").display()
    ))
    .await
    .unwrap();
    let server = Arc::new(ListServer::new(store));
    let olivia = SecretIdentity::generate(OsRng, "olivia@example.org").unwrap();
    let genesis = sign_genesis(
        OsRng,
        &olivia,
        Address::parse("olivia@example.org").unwrap(),
        Address::parse(LIST).unwrap(),
        Policy::default(),
        0,
    )
    .unwrap();
    server.rosters().create(genesis).await.unwrap();

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

    let text =
        format!("From: olivia@example.org\r\nTo: {LIST}\r\nSubject: via swaks\r\n\r\nhello\r\n");
    let sealed = seal(OsRng, text.as_bytes(), &olivia, "https://keys.example.org").unwrap();
    let post = dir.path().join("post.eml");
    std::fs::write(&post, &sealed.message).unwrap();
    let out = tokio::task::spawn_blocking(move || swaks(port, "olivia@example.org", &post))
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
    let out = tokio::task::spawn_blocking(move || swaks(port, "olivia@example.org", &plain))
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
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .args(["-nodes", "-days", "1", "-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl must be installed (.ci/run installs it)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let acceptor = tls_acceptor(&cert, &key).unwrap();
    assert!(
        tls_acceptor(&key, &cert).is_err(),
        "a key is not a certificate"
    );

    let store = hushlist_store::ListStore::open(&format!(
        "sqlite://{}",
        dir.path().join("lists.db").display()
    ))
    .await
    .unwrap();
    let server = Arc::new(ListServer::new(store));
    let olivia = SecretIdentity::generate(OsRng, "olivia@example.org").unwrap();
    let genesis = sign_genesis(
        OsRng,
        &olivia,
        Address::parse("olivia@example.org").unwrap(),
        Address::parse(LIST).unwrap(),
        Policy::default(),
        0,
    )
    .unwrap();
    server.rosters().create(genesis).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(serve(
        listener,
        Arc::new(SmtpConfig::default()),
        server.clone(),
        DEFAULT_CONNECTIONS,
        Some(acceptor),
        std::future::pending(),
    ));

    let text = format!("From: olivia@example.org\r\nTo: {LIST}\r\nSubject: tls\r\n\r\nhello\r\n");
    let sealed = seal(OsRng, text.as_bytes(), &olivia, "https://keys.example.org").unwrap();
    let post = dir.path().join("post.eml");
    std::fs::write(&post, &sealed.message).unwrap();
    let out = tokio::task::spawn_blocking(move || {
        swaks_with(port, "olivia@example.org", &post, &["--tls"])
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
