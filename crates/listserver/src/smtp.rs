//! The list server's SMTP receiver (RFC 5321 with PIPELINING, SIZE, 8BITMIME and enhanced
//! status codes). A session is generic over its stream, so tests drive it through an
//! in-memory pipe as well as over TCP. Command parsing and DATA unstuffing are smtp-proto's;
//! what to do with a finished message is the [`PostSink`]'s.

use std::future::Future;
use std::time::Duration;

use hushlist_core::Address;
use hushlist_http::connections::{ConnectionCaps, ConnectionSlots, Refusal};
use smtp_proto::Request;
use smtp_proto::request::receiver::{DataReceiver, RequestReceiver};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::time::Instant;

use crate::Rejection;

pub use hushlist_http::tls::{TlsSetupError, tls_acceptor};

/// Limits and names of the SMTP service.
#[derive(Debug, Clone)]
pub struct SmtpConfig {
    /// Name in the greeting and EHLO reply.
    pub hostname: String,
    /// Largest message accepted (advertised as SIZE).
    pub max_message_bytes: usize,
    pub max_recipients: usize,
    /// Time a client has for each command line from the end of the previous one, however
    /// it dribbles the bytes in (a per-line deadline, not a per-read timeout, so a
    /// slow-drip sender cannot hold a connection open); closed with 421 when it runs out.
    pub idle_timeout: Duration,
    /// Message content must arrive at least this fast (bytes per second, on top of one
    /// `idle_timeout` of grace), and no read may wait longer than `idle_timeout`.
    pub min_data_rate: u32,
    /// Protocol errors tolerated before the session is closed.
    pub max_errors: usize,
    /// NOOP, RSET, VRFY, EXPN and HELP allowed before each further one counts as an error,
    /// so a session cannot be kept alive by them forever.
    pub max_junk_commands: usize,
}

impl Default for SmtpConfig {
    fn default() -> Self {
        SmtpConfig {
            hostname: "localhost".into(),
            max_message_bytes: 25 * 1024 * 1024,
            max_recipients: 100,
            idle_timeout: Duration::from_secs(300),
            min_data_rate: 500,
            max_errors: 10,
            max_junk_commands: 100,
        }
    }
}

/// SMTP sessions held at once unless configured otherwise: in all, and from one client
/// address (as Postfix's anvil limits them, against one client taking every slot).
pub const DEFAULT_CONNECTIONS: ConnectionCaps = ConnectionCaps {
    total: 100,
    per_client: 20,
};

/// Why a finished message was not taken: a permanent rejection or a temporary failure.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error(transparent)]
    Rejected(#[from] Rejection),
    #[error("temporary failure: {0}")]
    Temporary(String),
}

/// What the session hands recipients and finished messages to.
pub trait PostSink: Send + Sync {
    /// Whether mail to `address` is taken here: a list, or one of a list's own mailboxes
    /// (bounces, probes, leave).
    fn takes_mail_for(
        &self,
        address: &Address,
    ) -> impl Future<Output = Result<bool, SinkError>> + Send;

    /// Takes a message for `recipients`; once it is durable, returns what the 250 reply says
    /// after its status code (`Queued as 12`).
    fn accept(
        &self,
        mail_from: Option<&Address>,
        recipients: &[Address],
        message: Vec<u8>,
    ) -> impl Future<Output = Result<String, SinkError>> + Send;
}

/// How a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionEnd {
    /// QUIT, timeout, too many errors or a closed stream.
    Closed,
    /// The client asked for TLS and was told to go ahead: the caller wraps the stream and
    /// runs [`run_session_after_tls`] on it.
    StartTls,
}

/// Runs one SMTP session to its end (QUIT, timeout, too many errors or a closed stream).
/// STARTTLS is not offered.
pub async fn run_session<S, K>(mut stream: S, config: &SmtpConfig, sink: &K) -> std::io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
    K: PostSink,
{
    greet(&mut stream, config).await?;
    drive(&mut stream, config, sink, false).await.map(|_| ())
}

/// Greets and runs a session that offers STARTTLS; ends with [`SessionEnd::StartTls`] when
/// the client takes it up. Anything the client pipelined after STARTTLS is discarded, so
/// commands sent in clear cannot be smuggled into the encrypted session.
pub async fn run_session_offering_tls<S, K>(
    stream: &mut S,
    config: &SmtpConfig,
    sink: &K,
) -> std::io::Result<SessionEnd>
where
    S: AsyncRead + AsyncWrite + Unpin,
    K: PostSink,
{
    greet(stream, config).await?;
    drive(stream, config, sink, true).await
}

/// The session after the TLS handshake: a fresh start without a greeting (RFC 3207); the
/// client says EHLO again.
pub async fn run_session_after_tls<S, K>(
    mut stream: S,
    config: &SmtpConfig,
    sink: &K,
) -> std::io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
    K: PostSink,
{
    drive(&mut stream, config, sink, false).await.map(|_| ())
}

async fn greet<S: AsyncWrite + Unpin>(stream: &mut S, config: &SmtpConfig) -> std::io::Result<()> {
    stream
        .write_all(format!("220 {} ESMTP hushlist\r\n", config.hostname).as_bytes())
        .await
}

async fn drive<S, K>(
    stream: &mut S,
    config: &SmtpConfig,
    sink: &K,
    offer_tls: bool,
) -> std::io::Result<SessionEnd>
where
    S: AsyncRead + AsyncWrite + Unpin,
    K: PostSink,
{
    let mut session = Session {
        offer_tls,
        ..Session::default()
    };
    let mut requests = RequestReceiver::default();
    let mut buf = vec![0u8; 8192];
    let mut pending: Vec<u8> = Vec::new();
    // When the command line being read must be complete.
    let mut line_deadline = Instant::now() + config.idle_timeout;
    loop {
        let deadline = match &session.data {
            Some(data) => data.deadline(config),
            None => line_deadline,
        };
        let read = match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => {
                let reply: &[u8] = if session.data.is_some() {
                    b"421 4.4.2 Message data arriving too slowly, closing connection\r\n"
                } else {
                    b"421 4.4.2 Timeout waiting for a command, closing connection\r\n"
                };
                stream.write_all(reply).await?;
                return Ok(SessionEnd::Closed);
            }
            Ok(result) => result?,
        };
        if read == 0 {
            return Ok(SessionEnd::Closed);
        }
        let now = Instant::now();
        if let Some(data) = session.data.as_mut() {
            data.received += read;
            data.last_read = now;
        }
        pending.extend_from_slice(&buf[..read]);
        let mut replies = Vec::new();
        let mut bytes = pending.iter();
        let mut close = false;
        let mut start_tls = false;
        while !close && !start_tls {
            let reply = if let Some(data) = session.data.as_mut() {
                let complete = data.receiver.ingest(&mut bytes, &mut data.message);
                if data.message.len() > config.max_message_bytes {
                    data.oversize = true;
                    data.message.clear();
                }
                if !complete {
                    break;
                }
                let data = session.data.take().expect("in DATA");
                line_deadline = Instant::now() + config.idle_timeout;
                // A refused post counts against the session's error limit like a bad
                // command, so one session cannot try post after post without end.
                session.finish_data(data, config, sink).await
            } else {
                match requests.ingest(&mut bytes) {
                    Ok(request) => {
                        line_deadline = Instant::now() + config.idle_timeout;
                        session.command(request.into_owned(), config, sink).await
                    }
                    Err(smtp_proto::Error::NeedsMoreData { .. }) => break,
                    Err(smtp_proto::Error::ResponseTooLong) => {
                        Reply::error("500 5.5.6 Line too long")
                    }
                    Err(smtp_proto::Error::UnknownCommand) => {
                        Reply::error("500 5.5.2 Command not recognized")
                    }
                    Err(smtp_proto::Error::InvalidSenderAddress) => {
                        Reply::error("501 5.1.7 Bad sender address syntax")
                    }
                    Err(smtp_proto::Error::InvalidRecipientAddress) => {
                        Reply::error("501 5.1.3 Bad recipient address syntax")
                    }
                    Err(e) => Reply::error(&format!("501 5.5.4 Syntax error: {e}")),
                }
            };
            if reply.is_error {
                session.errors += 1;
            }
            replies.extend_from_slice(reply.text.as_bytes());
            close = reply.close;
            start_tls = reply.start_tls;
            if session.errors >= config.max_errors {
                replies.extend_from_slice(b"421 4.7.0 Too many errors, closing connection\r\n");
                close = true;
            }
        }
        // Keep only what was not consumed (a partial command line or DATA still arriving).
        let consumed = pending.len() - bytes.as_slice().len();
        pending.drain(..consumed);
        stream.write_all(&replies).await?;
        if close || start_tls {
            stream.flush().await?;
            return Ok(if start_tls {
                SessionEnd::StartTls
            } else {
                SessionEnd::Closed
            });
        }
    }
}

struct Reply {
    text: String,
    is_error: bool,
    close: bool,
    start_tls: bool,
}

impl Reply {
    fn ok(text: &str) -> Self {
        Reply {
            text: format!("{text}\r\n"),
            is_error: false,
            close: false,
            start_tls: false,
        }
    }

    fn error(text: &str) -> Self {
        Reply {
            text: format!("{text}\r\n"),
            is_error: true,
            close: false,
            start_tls: false,
        }
    }
}

struct Data {
    receiver: DataReceiver,
    message: Vec<u8>,
    /// Set once the message passed the size limit; the rest is read and dropped.
    oversize: bool,
    started: Instant,
    last_read: Instant,
    /// Bytes read since DATA, including any dropped for being over the limit.
    received: usize,
}

impl Data {
    fn new() -> Self {
        let now = Instant::now();
        Data {
            receiver: DataReceiver::new(),
            message: Vec::new(),
            oversize: false,
            started: now,
            last_read: now,
            received: 0,
        }
    }

    /// The earlier of one idle timeout after the last read and the time the bytes so far
    /// allow at the minimum data rate.
    fn deadline(&self, config: &SmtpConfig) -> Instant {
        let earned =
            Duration::from_secs_f64(self.received as f64 / f64::from(config.min_data_rate.max(1)));
        (self.last_read + config.idle_timeout).min(self.started + config.idle_timeout + earned)
    }
}

#[derive(Default)]
struct Session {
    /// STARTTLS may still be taken up (offered, and not yet in TLS).
    offer_tls: bool,
    greeted: bool,
    mail_from: Option<Option<Address>>,
    recipients: Vec<Address>,
    data: Option<Data>,
    errors: usize,
    junk_commands: usize,
}

impl Session {
    fn reset(&mut self) {
        self.mail_from = None;
        self.recipients.clear();
    }

    async fn command<K: PostSink>(
        &mut self,
        request: Request<String>,
        config: &SmtpConfig,
        sink: &K,
    ) -> Reply {
        let junk = matches!(
            request,
            Request::Noop { .. }
                | Request::Rset
                | Request::Vrfy { .. }
                | Request::Expn { .. }
                | Request::Help { .. }
        );
        let mut reply = self.answer(request, config, sink).await;
        if junk {
            self.junk_commands += 1;
            reply.is_error |= self.junk_commands > config.max_junk_commands;
        }
        reply
    }

    async fn answer<K: PostSink>(
        &mut self,
        request: Request<String>,
        config: &SmtpConfig,
        sink: &K,
    ) -> Reply {
        match request {
            Request::Ehlo { host: _ } => {
                self.greeted = true;
                self.reset();
                Reply::ok(&format!(
                    "250-{}\r\n250-PIPELINING\r\n250-SIZE {}\r\n250-8BITMIME\r\n{}250 ENHANCEDSTATUSCODES",
                    config.hostname,
                    config.max_message_bytes,
                    if self.offer_tls {
                        "250-STARTTLS\r\n"
                    } else {
                        ""
                    }
                ))
            }
            Request::Helo { host: _ } => {
                self.greeted = true;
                self.reset();
                Reply::ok(&format!("250 {}", config.hostname))
            }
            Request::Mail { from } => {
                if !self.greeted {
                    return Reply::error("503 5.5.1 Say EHLO first");
                }
                if self.mail_from.is_some() {
                    return Reply::error("503 5.5.1 Nested MAIL command");
                }
                if from.size > config.max_message_bytes {
                    return Reply::error(&format!(
                        "552 5.3.4 Message size exceeds the limit of {} bytes",
                        config.max_message_bytes
                    ));
                }
                let sender = if from.address.is_empty() {
                    None
                } else {
                    match Address::parse(&from.address) {
                        Ok(address) => Some(address),
                        Err(_) => return Reply::error("501 5.1.7 Bad sender address syntax"),
                    }
                };
                self.mail_from = Some(sender);
                Reply::ok("250 2.1.0 Sender OK")
            }
            Request::Rcpt { to } => {
                if self.mail_from.is_none() {
                    return Reply::error("503 5.5.1 Need MAIL before RCPT");
                }
                if self.recipients.len() >= config.max_recipients {
                    return Reply::error("452 4.5.3 Too many recipients");
                }
                let Ok(address) = Address::parse(&to.address) else {
                    return Reply::error("501 5.1.3 Bad recipient address syntax");
                };
                match sink.takes_mail_for(&address).await {
                    Ok(true) => {
                        if !self.recipients.contains(&address) {
                            self.recipients.push(address);
                        }
                        Reply::ok("250 2.1.5 Recipient OK")
                    }
                    Ok(false) => Reply::error(&format!("550 5.1.1 No such list here: {address}")),
                    Err(e) => Reply::error(&format!("451 4.3.0 {e}")),
                }
            }
            Request::Data => {
                if self.mail_from.is_none() {
                    return Reply::error("503 5.5.1 Need MAIL before DATA");
                }
                if self.recipients.is_empty() {
                    return Reply::error("554 5.5.1 No valid recipients");
                }
                self.data = Some(Data::new());
                Reply::ok("354 Start mail input; end with <CRLF>.<CRLF>")
            }
            Request::Rset => {
                self.reset();
                Reply::ok("250 2.0.0 Reset")
            }
            Request::Noop { .. } => Reply::ok("250 2.0.0 OK"),
            Request::Quit => Reply {
                close: true,
                ..Reply::ok("221 2.0.0 Bye")
            },
            Request::Vrfy { .. } | Request::Expn { .. } => {
                Reply::error("502 5.5.1 VRFY and EXPN are disabled")
            }
            Request::StartTls if self.offer_tls => {
                if self.mail_from.is_some() {
                    return Reply::error("503 5.5.1 STARTTLS is not allowed inside a transaction");
                }
                Reply {
                    start_tls: true,
                    ..Reply::ok("220 2.0.0 Ready to start TLS")
                }
            }
            Request::StartTls => Reply::error("502 5.5.1 STARTTLS is not configured"),
            Request::Help { .. } => Reply::ok("214 2.0.0 See RFC 5321"),
            other => Reply::error(&format!("502 5.5.1 {} is not supported", other.name())),
        }
    }

    async fn finish_data<K: PostSink>(
        &mut self,
        data: Data,
        config: &SmtpConfig,
        sink: &K,
    ) -> Reply {
        let mail_from = self.mail_from.take().flatten();
        let recipients = std::mem::take(&mut self.recipients);
        if data.oversize {
            return Reply::error(&format!(
                "552 5.3.4 Message size exceeds the limit of {} bytes",
                config.max_message_bytes
            ));
        }
        match sink
            .accept(mail_from.as_ref(), &recipients, data.message)
            .await
        {
            Ok(taken) => Reply::ok(&format!("250 2.0.0 {}", one_line(&taken))),
            Err(SinkError::Rejected(rejection)) => {
                let (code, status) = rejection.smtp_status();
                Reply::error(&format!(
                    "{code} {status} {}",
                    one_line(&rejection.to_string())
                ))
            }
            // Our storage failing is not the client's error.
            Err(SinkError::Temporary(why)) => Reply::ok(&format!("451 4.3.0 {}", one_line(&why))),
        }
    }
}

fn one_line(text: &str) -> String {
    text.replace(['\r', '\n'], " ")
}

/// Accepts SMTP connections on `listener` until `shutdown` resolves (errors accepting one
/// connection are logged and the listener goes on), at most `connections.total` at once and
/// `connections.per_client` from one client address; one more is told 421 (`4.3.2`, or
/// `4.7.0` naming the address, as Postfix's anvil does) and closed. With `tls`, STARTTLS is
/// offered and the session continues over TLS once the client takes it up.
pub async fn serve<K: PostSink + 'static>(
    listener: tokio::net::TcpListener,
    config: std::sync::Arc<SmtpConfig>,
    sink: std::sync::Arc<K>,
    connections: ConnectionCaps,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let slots = ConnectionSlots::new(connections);
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => return Ok(()),
        };
        let (mut stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors or a connection reset before it was taken: the
                // listener itself is fine, so keep serving once the moment has passed.
                tracing::warn!(error = %e, "cannot accept an SMTP connection");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        // Replies must not wait for the client's delayed ACK (Nagle).
        let _ = stream.set_nodelay(true);
        let slot = match slots.take(peer.ip()) {
            Ok(slot) => slot,
            Err(refusal) => {
                tracing::debug!(%peer, %refusal, "SMTP connection refused");
                let reply = match refusal {
                    Refusal::Full { .. } => {
                        "421 4.3.2 Too many connections, try again later\r\n".to_owned()
                    }
                    Refusal::ClientFull { client, .. } => {
                        format!("421 4.7.0 Too many connections from {client}, try again later\r\n")
                    }
                };
                tokio::spawn(async move {
                    let _ = stream.write_all(reply.as_bytes()).await;
                });
                continue;
            }
        };
        let (config, sink, tls) = (config.clone(), sink.clone(), tls.clone());
        tokio::spawn(async move {
            let result = serve_connection(stream, &config, sink.as_ref(), tls).await;
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "SMTP session ended with an error");
            }
            drop(slot);
        });
    }
}

/// One connection: a session, with STARTTLS when `tls` is given, then a gentle close.
async fn serve_connection<K: PostSink>(
    mut stream: tokio::net::TcpStream,
    config: &SmtpConfig,
    sink: &K,
    tls: Option<tokio_rustls::TlsAcceptor>,
) -> std::io::Result<()> {
    let Some(acceptor) = tls else {
        run_session(&mut stream, config, sink).await?;
        close_gently(&mut stream).await;
        return Ok(());
    };
    if run_session_offering_tls(&mut stream, config, sink).await? == SessionEnd::Closed {
        close_gently(&mut stream).await;
        return Ok(());
    }
    let mut tls_stream = tokio::time::timeout(config.idle_timeout, acceptor.accept(stream))
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
    run_session_after_tls(&mut tls_stream, config, sink).await?;
    close_gently(&mut tls_stream).await;
    Ok(())
}

/// How long a closing session keeps reading after its last reply.
const LINGER: Duration = Duration::from_secs(2);

/// Ends a connection after the session's last reply: sends FIN, then reads and drops what
/// the client is still sending (a megabyte line, pipelined commands) for a moment. Closing
/// with unread input would make the kernel answer with a reset, which can destroy the
/// final reply (421) before the client reads it.
async fn close_gently<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S) {
    if stream.shutdown().await.is_err() {
        return;
    }
    let deadline = Instant::now() + LINGER;
    let mut discard = [0u8; 8192];
    while let Ok(Ok(read)) = tokio::time::timeout_at(deadline, stream.read(&mut discard)).await {
        if read == 0 {
            return;
        }
    }
}
