//! Loopback TCP connections from a chosen client address, for the connection-limit tests.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::{TcpSocket, TcpStream};

/// A connection to `server` from the loopback address `from` (all of 127/8 is this machine).
pub async fn connect_from(from: Ipv4Addr, server: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(from.into(), 0)).unwrap();
    socket.connect(server).await.unwrap()
}

/// What the server does with a connection that sends nothing, within `wait`: `None` if it
/// is still open, else what the server wrote before closing it.
pub async fn closed_within(stream: &mut TcpStream, wait: Duration) -> Option<String> {
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
pub async fn health_from(from: Ipv4Addr, server: SocketAddr) -> String {
    let mut stream = connect_from(from, server).await;
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let answer = closed_within(&mut stream, Duration::from_secs(10))
        .await
        .expect("a /healthz request is answered and the connection closed");
    answer.lines().next().unwrap_or_default().to_owned()
}

/// Writes `bytes` one at a time, `every` apart, as a slow-loris client does, until done or
/// the server closes the connection; the task's result is how many bytes were written.
pub fn drip(
    mut writer: impl AsyncWrite + Unpin + Send + 'static,
    bytes: &'static [u8],
    every: Duration,
) -> tokio::task::JoinHandle<usize> {
    tokio::spawn(async move {
        let mut sent = 0;
        for byte in bytes {
            if writer.write_all(&[*byte]).await.is_err() {
                break;
            }
            sent += 1;
            tokio::time::sleep(every).await;
        }
        sent
    })
}
