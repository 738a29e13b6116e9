//! Connection floods and slow-loris against the real `hushlist-listserver` binary over
//! loopback sockets: on its HTTP port one client address cannot take more than its share
//! and headers trickled in lose the connection at the header deadline; on its SMTP port one
//! client address gets no more than its share of sessions (`421 4.7.0`, as from Postfix's
//! anvil), while other addresses are served.

use std::io::{BufRead as _, BufReader};
use std::net::{Ipv4Addr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpSocket, TcpStream};

const CLIENT: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);
const NEIGHBOUR: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);

struct Running {
    child: Child,
    smtp: SocketAddr,
    http: SocketAddr,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The list server binary on free loopback ports with `limits` given as flags.
fn start(data_dir: &std::path::Path, limits: &[&str]) -> Running {
    let mut child = Command::new(env!("CARGO_BIN_EXE_hushlist-listserver"))
        .args(["--data-dir", data_dir.to_str().unwrap()])
        .args([
            "--smtp-listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
        ])
        // Nothing is posted, so nothing is relayed.
        .args(["--relay", "127.0.0.1:9"])
        .args(limits)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let smtp = lines.next().unwrap().unwrap();
    let http = lines.next().unwrap().unwrap();
    Running {
        child,
        smtp: smtp.strip_prefix("smtp on ").unwrap().parse().unwrap(),
        http: http
            .strip_prefix("listening on http://")
            .unwrap()
            .parse()
            .unwrap(),
    }
}

/// A connection to `server` from the loopback address `from` (all of 127/8 is this machine).
async fn connect_from(from: Ipv4Addr, server: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(from.into(), 0)).unwrap();
    socket.connect(server).await.unwrap()
}

/// What the server does with a connection that sends nothing, within `wait`: `None` if it
/// is still open, else what the server wrote before closing it.
async fn closed_within(stream: &mut TcpStream, wait: Duration) -> Option<String> {
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, stream.read_buf(&mut got)).await {
            Err(_) => return None,
            Ok(Ok(0) | Err(_)) => return Some(String::from_utf8_lossy(&got).into_owned()),
            Ok(Ok(_)) => {}
        }
    }
}

/// `GET /healthz` from `from` on a connection of its own; the status line.
async fn health_from(from: Ipv4Addr, server: SocketAddr) -> String {
    let mut stream = connect_from(from, server).await;
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: lists\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let answer = closed_within(&mut stream, Duration::from_secs(10))
        .await
        .expect("a /healthz request is answered and the connection closed");
    answer.lines().next().unwrap_or_default().to_owned()
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
        held.push(connect_from(CLIENT, server.http).await);
    }
    let mut fourth = connect_from(CLIENT, server.http).await;
    let refused = closed_within(&mut fourth, Duration::from_millis(1500))
        .await
        .expect("a fourth HTTP connection from one address is closed at once");
    assert!(
        refused.starts_with("HTTP/1.1 503 ")
            && refused.contains(r#""code":"too_many_connections""#)
            && refused.contains("127.0.0.1 holds as many connections as one address may (3)"),
        "{refused}"
    );
    assert_eq!(health_from(NEIGHBOUR, server.http).await, "HTTP/1.1 200 OK");

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
    assert_eq!(health_from(CLIENT, server.http).await, "HTTP/1.1 200 OK");
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
