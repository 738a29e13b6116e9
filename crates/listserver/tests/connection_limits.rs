//! Connection floods and slow-loris against the real `hushlist-listserver` binary over
//! loopback sockets: on its HTTP port one client address cannot take more than its share
//! and headers trickled in lose the connection at the header deadline; on its SMTP port one
//! client address gets no more than its share of sessions (`421 4.7.0`, as from Postfix's
//! anvil), while other addresses are served.

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use common::ListServerProcess;
use hushlist_testkit::net::{closed_within, connect_from, health_from};
use tokio::io::AsyncReadExt as _;
use tokio::net::TcpStream;

const CLIENT: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);
const NEIGHBOUR: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);

/// The list server binary on free loopback ports with `limits` given as flags.
fn start(data_dir: &std::path::Path, limits: &[&str]) -> ListServerProcess {
    // Nothing is posted, so nothing is relayed.
    ListServerProcess::start(
        data_dir,
        &[&["--relay", "127.0.0.1:9"][..], limits].concat(),
    )
}

/// An SMTP session from `from` and the server's first line (greeting or refusal).
async fn greeting_from(from: Ipv4Addr, server: SocketAddr) -> (TcpStream, String) {
    let mut stream = connect_from(from, server).await;
    let mut got = Vec::new();
    while !got.ends_with(b"\r\n") {
        let read = tokio::time::timeout(Duration::from_secs(5), stream.read_buf(&mut got))
            .await
            .expect("the SMTP server says something at once")
            .unwrap();
        if read == 0 {
            break;
        }
    }
    (stream, String::from_utf8_lossy(&got).trim_end().to_owned())
}

#[tokio::test]
async fn one_address_gets_its_share_of_http_connections_and_silent_ones_are_cut() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(
        dir.path(),
        &[
            "--max-http-connections-per-client",
            "3",
            "--http-header-timeout-secs",
            "2",
        ],
    );

    // Three held from one address, a fourth refused, a neighbour served.
    let started = Instant::now();
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(connect_from(CLIENT, server.http_addr()).await);
    }
    let mut fourth = connect_from(CLIENT, server.http_addr()).await;
    let refused = closed_within(&mut fourth, Duration::from_millis(1500))
        .await
        .expect("a fourth HTTP connection from one address is closed at once");
    assert!(
        refused.starts_with("HTTP/1.1 503 ")
            && refused.contains(r#""code":"too_many_connections""#)
            && refused.contains("127.0.0.1 holds as many connections as one address may (3)"),
        "{refused}"
    );
    assert_eq!(
        health_from(NEIGHBOUR, server.http_addr()).await,
        "HTTP/1.1 200 OK"
    );

    // The held connections sent no header: each is cut at the deadline, freeing its place.
    for stream in &mut held {
        assert!(
            closed_within(stream, Duration::from_secs(5))
                .await
                .is_some(),
            "an HTTP connection that sent nothing was open after {:?}",
            started.elapsed()
        );
    }
    assert!(started.elapsed() >= Duration::from_millis(1900));
    assert_eq!(
        health_from(CLIENT, server.http_addr()).await,
        "HTTP/1.1 200 OK"
    );
}

#[tokio::test]
async fn one_address_gets_its_share_of_smtp_sessions_and_more_are_told_421() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &["--max-connections-per-client", "2"]);

    // Two sessions from one address, a third told 421 4.7.0 and closed, a neighbour greeted.
    let (_first, greeting) = greeting_from(CLIENT, server.smtp).await;
    assert!(greeting.starts_with("220 "), "{greeting}");
    let (_second, greeting) = greeting_from(CLIENT, server.smtp).await;
    assert!(greeting.starts_with("220 "), "{greeting}");
    let (mut third, refusal) = greeting_from(CLIENT, server.smtp).await;
    assert_eq!(
        refusal,
        "421 4.7.0 Too many connections from 127.0.0.1, try again later"
    );
    assert_eq!(
        closed_within(&mut third, Duration::from_secs(3)).await,
        Some(String::new()),
        "the refused session is closed"
    );
    let (_neighbour, greeting) = greeting_from(NEIGHBOUR, server.smtp).await;
    assert!(greeting.starts_with("220 "), "{greeting}");
}
