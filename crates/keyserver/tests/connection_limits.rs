//! Connection floods and slow-loris against the real `hushlist-keyserver` binary over
//! loopback sockets: one client address cannot take more than its share of connections,
//! all clients together cannot take more than the server's, and headers trickled in (or
//! never sent) lose the connection at the header deadline while others are served; over
//! TLS likewise, with the handshake under the same deadline.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use common::spawn_binary;
use hushlist_peers::test_ca_and_leaf;
use hushlist_testkit::net::{closed_within, connect_from, drip, health_from};
use tokio::io::AsyncReadExt as _;
use tokio::net::TcpStream;

const CLIENT: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);
const NEIGHBOUR: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
const STRANGER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 3);

/// A connection from `from` that the server holds open. A connection just closed may hold
/// its place for a moment more, so a refusal is retried for a while.
async fn hold_from(from: Ipv4Addr, server: SocketAddr) -> TcpStream {
    let started = Instant::now();
    loop {
        let mut stream = connect_from(from, server).await;
        match closed_within(&mut stream, Duration::from_millis(100)).await {
            None => return stream,
            Some(answer) => assert!(
                started.elapsed() < Duration::from_secs(5),
                "a connection from {from} was refused: {answer}"
            ),
        }
    }
}

fn address(base: &str) -> SocketAddr {
    base.split_once("://").unwrap().1.parse().unwrap()
}

/// A refused connection's whole answer: a 503 naming the limit, then the close.
fn assert_refused(answer: Option<String>, naming: &str) {
    let answer = answer.expect("a connection over the cap is closed at once");
    assert!(
        answer.starts_with("HTTP/1.1 503 ") && answer.contains(r#""code":"too_many_connections""#),
        "{answer}"
    );
    assert!(answer.contains(naming), "{answer}");
}

#[tokio::test]
async fn one_address_holds_no_more_than_its_share_and_others_are_still_served() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, base) = spawn_binary(
        &dir.path().join("data"),
        &[
            "--max-http-connections",
            "5",
            "--max-http-connections-per-client",
            "3",
        ],
    );
    let server = address(&base);

    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(hold_from(CLIENT, server).await);
    }
    let mut fourth = connect_from(CLIENT, server).await;
    assert_refused(
        closed_within(&mut fourth, Duration::from_secs(3)).await,
        "127.0.0.1 holds as many connections as one address may (3)",
    );
    for stream in &mut held {
        assert_eq!(
            closed_within(stream, Duration::from_millis(100)).await,
            None,
            "a connection within the share was closed"
        );
    }
    assert_eq!(health_from(NEIGHBOUR, server).await, "HTTP/1.1 200 OK");

    // Two more from a neighbour fill the server: a third address is refused as well.
    let _neighbours = [
        hold_from(NEIGHBOUR, server).await,
        hold_from(NEIGHBOUR, server).await,
    ];
    let mut stranger = connect_from(STRANGER, server).await;
    assert_refused(
        closed_within(&mut stranger, Duration::from_secs(3)).await,
        "the server holds as many connections as it takes (5)",
    );

    // A closed connection gives its place back, to its own address.
    drop(held.pop());
    let started = Instant::now();
    loop {
        let status = health_from(CLIENT, server).await;
        if status == "HTTP/1.1 200 OK" {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the place of a closed connection was not given back: {status}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
}

#[tokio::test]
async fn headers_trickled_in_or_never_sent_lose_the_connection_at_the_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, base) = spawn_binary(
        &dir.path().join("data"),
        &["--http-header-timeout-secs", "1"],
    );
    let server = address(&base);

    // One header byte a second: the whole request would take over half a minute.
    let request = b"GET /healthz HTTP/1.1\r\nhost: keys\r\nconnection: close\r\n\r\n";
    let (mut reader, writer) = connect_from(CLIENT, server).await.into_split();
    let dripping = drip(writer, request, Duration::from_secs(1));
    let mut silent = connect_from(CLIENT, server).await;
    let started = Instant::now();

    assert_eq!(health_from(NEIGHBOUR, server).await, "HTTP/1.1 200 OK");
    let mut answer = Vec::new();
    let cut = tokio::time::timeout(Duration::from_secs(5), reader.read_to_end(&mut answer)).await;
    assert!(
        cut.is_ok(),
        "the slow-drip connection was still open after {:?}",
        started.elapsed()
    );
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "cut off before the deadline"
    );
    assert!(
        !String::from_utf8_lossy(&answer).contains("200 OK"),
        "the trickled request was served"
    );
    assert!(
        closed_within(&mut silent, Duration::from_secs(2))
            .await
            .is_some(),
        "a connection that never sent a byte was still open after {:?}",
        started.elapsed()
    );
    let sent = dripping.await.unwrap();
    assert!(sent < request.len(), "the whole request went through");
    assert_eq!(health_from(CLIENT, server).await, "HTTP/1.1 200 OK");
    child.kill().unwrap();
    child.wait().unwrap();
}

#[tokio::test]
async fn over_tls_an_unfinished_handshake_is_cut_at_the_deadline_and_an_address_gets_its_share() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = test_ca_and_leaf(dir.path());
    let (mut child, base) = spawn_binary(
        &dir.path().join("data"),
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
            "--http-header-timeout-secs",
            "2",
            "--max-http-connections-per-client",
            "2",
        ],
    );
    let server = address(&base);
    let client_from = |from: Ipv4Addr| {
        reqwest::Client::builder()
            .add_root_certificate(
                reqwest::Certificate::from_pem(&std::fs::read(&ca).unwrap()).unwrap(),
            )
            .local_address(IpAddr::V4(from))
            .build()
            .unwrap()
    };

    // Two connections that never begin a handshake hold this address's share.
    let started = Instant::now();
    let mut held = [
        hold_from(CLIENT, server).await,
        hold_from(CLIENT, server).await,
    ];
    let mut third = connect_from(CLIENT, server).await;
    assert_eq!(
        closed_within(&mut third, Duration::from_secs(1)).await,
        Some(String::new()),
        "a third TLS connection from one address is closed at once, without a word"
    );
    let neighbour = client_from(NEIGHBOUR)
        .get(format!("{base}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(neighbour.status().as_u16(), 200);

    for stream in &mut held {
        assert!(
            closed_within(stream, Duration::from_secs(5))
                .await
                .is_some(),
            "a connection that never began a handshake was open after {:?}",
            started.elapsed()
        );
    }
    assert!(started.elapsed() >= Duration::from_millis(1900));
    let client = client_from(CLIENT);
    let started = Instant::now();
    loop {
        match client.get(format!("{base}/healthz")).send().await {
            Ok(response) => {
                assert_eq!(response.status().as_u16(), 200);
                break;
            }
            Err(e) => assert!(
                started.elapsed() < Duration::from_secs(5),
                "the places of the closed connections were not given back: {e}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
}
