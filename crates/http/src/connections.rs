//! Limits on the connections a server holds, so that no client, and no flood of slow ones,
//! can take every slot: at most so many at once, at most so many from any one client
//! address (as Postfix's anvil counts SMTP sessions), and for HTTP a deadline for each
//! request's headers. Both HTTP servers serve through [`serve`]; the list server's SMTP
//! receiver counts its sessions with [`ConnectionSlots`] too.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;

/// How many connections a server holds at once, in all and from one client address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionCaps {
    pub total: usize,
    pub per_client: usize,
}

/// Why a connection was turned away.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("the server holds as many connections as it takes ({limit})")]
    Full { limit: usize },
    #[error("{client} holds as many connections as one address may ({limit})")]
    ClientFull { client: IpAddr, limit: usize },
}

/// The connections a server holds: a count in all and one per client address.
#[derive(Debug, Clone)]
pub struct ConnectionSlots {
    total: Arc<Semaphore>,
    per_client: Arc<Mutex<HashMap<IpAddr, usize>>>,
    caps: ConnectionCaps,
}

impl ConnectionSlots {
    pub fn new(caps: ConnectionCaps) -> Self {
        ConnectionSlots {
            total: Arc::new(Semaphore::new(caps.total)),
            per_client: Arc::default(),
            caps,
        }
    }

    /// A slot for a connection from `client`, held until the [`Slot`] is dropped.
    pub fn take(&self, client: IpAddr) -> Result<Slot, Refusal> {
        // An IPv4 client reaching a dual-stack listener shows as ::ffff:a.b.c.d; it is one
        // client whichever way it came.
        let client = client.to_canonical();
        let mut counts = self
            .per_client
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let held = counts.get(&client).copied().unwrap_or(0);
        if held >= self.caps.per_client {
            return Err(Refusal::ClientFull {
                client,
                limit: self.caps.per_client,
            });
        }
        let permit = self
            .total
            .clone()
            .try_acquire_owned()
            .map_err(|_| Refusal::Full {
                limit: self.caps.total,
            })?;
        counts.insert(client, held + 1);
        Ok(Slot {
            _permit: permit,
            client,
            per_client: self.per_client.clone(),
        })
    }
}

/// One held connection; dropping it frees its place in both counts.
#[derive(Debug)]
pub struct Slot {
    _permit: OwnedSemaphorePermit,
    client: IpAddr,
    per_client: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut counts = self
            .per_client
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(held) = counts.get_mut(&self.client) {
            *held -= 1;
            if *held == 0 {
                // Forgotten at zero, so the map holds only addresses with connections open.
                counts.remove(&self.client);
            }
        }
    }
}

/// The limits of an HTTP server's connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// Time a client has to send a request's headers (and, over TLS, to finish the
    /// handshake), from the moment the server waits for them however the bytes dribble in;
    /// an idle kept-alive connection is closed when it runs out too.
    pub header_read_timeout: Duration,
    pub connections: ConnectionCaps,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            header_read_timeout: Duration::from_secs(10),
            connections: ConnectionCaps {
                total: 1000,
                per_client: 100,
            },
        }
    }
}

/// What a plain-HTTP connection over a cap is told before it is closed.
fn refusal_response(refusal: &Refusal) -> String {
    let body = serde_json::json!({
        "error": { "code": "too_many_connections", "message": refusal.to_string() }
    })
    .to_string();
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// Serves `app` over HTTP/1.1 on `listener` (over TLS with `tls`) within `limits`, until the
/// listener fails. A connection over a cap is closed at once: over plain HTTP after a
/// `503 too_many_connections` written without waiting (a client that is not reading loses
/// nothing but the answer), over TLS without a word (a handshake would cost more than the
/// refusal saves).
pub async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    app: Router,
    limits: HttpLimits,
) -> std::io::Result<()> {
    let slots = ConnectionSlots::new(limits.connections);
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors or a connection reset before it was taken: the
                // listener itself is fine, so keep serving once the moment has passed.
                tracing::warn!(error = %e, "cannot accept an HTTP connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let slot = match slots.take(peer.ip()) {
            Ok(slot) => slot,
            Err(refusal) => {
                tracing::debug!(%peer, %refusal, "HTTP connection refused");
                if tls.is_none() {
                    let _ = stream.try_write(refusal_response(&refusal).as_bytes());
                }
                continue;
            }
        };
        let (app, tls) = (app.clone(), tls.clone());
        tokio::spawn(async move {
            serve_connection(stream, peer, tls, app, limits.header_read_timeout).await;
            drop(slot);
        });
    }
}

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    tls: Option<TlsAcceptor>,
    app: Router,
    header_read_timeout: Duration,
) {
    let served = match tls {
        None => serve_http(stream, app, header_read_timeout).await,
        Some(acceptor) => {
            match tokio::time::timeout(header_read_timeout, acceptor.accept(stream)).await {
                Ok(Ok(stream)) => serve_http(stream, app, header_read_timeout).await,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake not finished in time");
                    return;
                }
            }
        }
    };
    if let Err(e) = served {
        tracing::debug!(%peer, error = %e, "HTTP connection ended with an error");
    }
}

async fn serve_http<S>(stream: S, app: Router, header_read_timeout: Duration) -> hyper::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout)
        .serve_connection(TokioIo::new(stream), TowerToHyperService::new(app))
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slot_is_counted_per_address_in_either_form_and_freed_when_dropped() {
        let slots = ConnectionSlots::new(ConnectionCaps {
            total: 3,
            per_client: 2,
        });
        let v4: IpAddr = "127.0.0.1".parse().unwrap();
        let mapped: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        let other: IpAddr = "::1".parse().unwrap();
        let first = slots.take(v4).unwrap();
        let _second = slots.take(mapped).unwrap();
        assert_eq!(
            slots.take(v4).unwrap_err(),
            Refusal::ClientFull {
                client: v4,
                limit: 2
            }
        );
        let _third = slots.take(other).unwrap();
        assert_eq!(
            slots.take("::2".parse().unwrap()).unwrap_err(),
            Refusal::Full { limit: 3 }
        );
        drop(first);
        let _again = slots.take(mapped).unwrap();
        assert_eq!(slots.per_client.lock().unwrap().len(), 2);
    }
}
