//! The list server's SMTP receiver (RFC 5321 with PIPELINING, SIZE, 8BITMIME and enhanced
//! status codes). A session is generic over its stream, so tests drive it through an
//! in-memory pipe as well as over TCP. Command parsing and DATA unstuffing are smtp-proto's;
//! what to do with a finished message is the [`PostSink`]'s.

use std::future::Future;
use std::time::Duration;

use hushlist_core::Address;
use smtp_proto::Request;
use smtp_proto::request::receiver::{DataReceiver, RequestReceiver};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};

use crate::Rejection;

/// Limits and names of the SMTP service.
#[derive(Debug, Clone)]
pub struct SmtpConfig {
    /// Name in the greeting and EHLO reply.
    pub hostname: String,
    /// Largest message accepted (advertised as SIZE).
    pub max_message_bytes: usize,
    pub max_recipients: usize,
    /// A session silent for this long is closed with 421.
    pub idle_timeout: Duration,
    /// Protocol errors tolerated before the session is closed.
    pub max_errors: usize,
}

impl Default for SmtpConfig {
    fn default() -> Self {
        SmtpConfig {
            hostname: "localhost".into(),
            max_message_bytes: 25 * 1024 * 1024,
            max_recipients: 100,
            idle_timeout: Duration::from_secs(300),
            max_errors: 10,
        }
    }
}

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
    /// Whether `address` is a list this server serves.
    fn is_list(&self, address: &Address) -> impl Future<Output = Result<bool, SinkError>> + Send;

    /// Takes a message for `lists`; returns the queue id once it is durable.
    fn accept(
        &self,
        mail_from: Option<&Address>,
        lists: &[Address],
        message: Vec<u8>,
    ) -> impl Future<Output = Result<String, SinkError>> + Send;
}

/// Runs one SMTP session to its end (QUIT, timeout, too many errors or a closed stream).
pub async fn run_session<S, K>(mut stream: S, config: &SmtpConfig, sink: &K) -> std::io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
    K: PostSink,
{
    let mut session = Session::default();
    stream
        .write_all(format!("220 {} ESMTP hushlist\r\n", config.hostname).as_bytes())
        .await?;
    let mut requests = RequestReceiver::default();
    let mut buf = vec![0u8; 8192];
    let mut pending: Vec<u8> = Vec::new();
    loop {
        let read = match tokio::time::timeout(config.idle_timeout, stream.read(&mut buf)).await {
            Err(_) => {
                stream
                    .write_all(b"421 4.4.2 Idle too long, closing connection\r\n")
                    .await?;
                return Ok(());
            }
            Ok(result) => result?,
        };
        if read == 0 {
            return Ok(());
        }
        pending.extend_from_slice(&buf[..read]);
        let mut replies = Vec::new();
        let mut bytes = pending.iter();
        let mut close = false;
        while !close {
            if let Some(data) = session.data.as_mut() {
                let complete = data.receiver.ingest(&mut bytes, &mut data.message);
                if data.message.len() > config.max_message_bytes {
                    data.oversize = true;
                    data.message.clear();
                }
                if !complete {
                    break;
                }
                let data = session.data.take().expect("in DATA");
                replies.extend_from_slice(session.finish_data(data, config, sink).await.as_bytes());
                continue;
            }
            let reply = match requests.ingest(&mut bytes) {
                Ok(request) => session.command(request.into_owned(), config, sink).await,
                Err(smtp_proto::Error::NeedsMoreData { .. }) => break,
                Err(smtp_proto::Error::ResponseTooLong) => Reply::error("500 5.5.6 Line too long"),
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
            };
            if reply.is_error {
                session.errors += 1;
            }
            replies.extend_from_slice(reply.text.as_bytes());
            close = reply.close;
            if session.errors >= config.max_errors {
                replies.extend_from_slice(b"421 4.7.0 Too many errors, closing connection\r\n");
                close = true;
            }
        }
        // Keep only what was not consumed (a partial command line or DATA still arriving).
        let consumed = pending.len() - bytes.as_slice().len();
        pending.drain(..consumed);
        stream.write_all(&replies).await?;
        if close {
            stream.flush().await?;
            return Ok(());
        }
    }
}

struct Reply {
    text: String,
    is_error: bool,
    close: bool,
}

impl Reply {
    fn ok(text: &str) -> Self {
        Reply {
            text: format!("{text}\r\n"),
            is_error: false,
            close: false,
        }
    }

    fn error(text: &str) -> Self {
        Reply {
            text: format!("{text}\r\n"),
            is_error: true,
            close: false,
        }
    }
}

struct Data {
    receiver: DataReceiver,
    message: Vec<u8>,
    /// Set once the message passed the size limit; the rest is read and dropped.
    oversize: bool,
}

#[derive(Default)]
struct Session {
    greeted: bool,
    mail_from: Option<Option<Address>>,
    lists: Vec<Address>,
    data: Option<Data>,
    errors: usize,
}

impl Session {
    fn reset(&mut self) {
        self.mail_from = None;
        self.lists.clear();
    }

    async fn command<K: PostSink>(
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
                    "250-{}\r\n250-PIPELINING\r\n250-SIZE {}\r\n250-8BITMIME\r\n250 ENHANCEDSTATUSCODES",
                    config.hostname, config.max_message_bytes
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
                if self.lists.len() >= config.max_recipients {
                    return Reply::error("452 4.5.3 Too many recipients");
                }
                let Ok(address) = Address::parse(&to.address) else {
                    return Reply::error("501 5.1.3 Bad recipient address syntax");
                };
                match sink.is_list(&address).await {
                    Ok(true) => {
                        if !self.lists.contains(&address) {
                            self.lists.push(address);
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
                if self.lists.is_empty() {
                    return Reply::error("554 5.5.1 No valid recipients");
                }
                self.data = Some(Data {
                    receiver: DataReceiver::new(),
                    message: Vec::new(),
                    oversize: false,
                });
                Reply::ok("354 Start mail input; end with <CRLF>.<CRLF>")
            }
            Request::Rset => {
                self.reset();
                Reply::ok("250 2.0.0 Reset")
            }
            Request::Noop { .. } => Reply::ok("250 2.0.0 OK"),
            Request::Quit => Reply {
                text: "221 2.0.0 Bye\r\n".into(),
                is_error: false,
                close: true,
            },
            Request::Vrfy { .. } | Request::Expn { .. } => {
                Reply::error("502 5.5.1 VRFY and EXPN are disabled")
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
    ) -> String {
        let mail_from = self.mail_from.take().flatten();
        let lists = std::mem::take(&mut self.lists);
        if data.oversize {
            return format!(
                "552 5.3.4 Message size exceeds the limit of {} bytes\r\n",
                config.max_message_bytes
            );
        }
        match sink.accept(mail_from.as_ref(), &lists, data.message).await {
            Ok(id) => format!("250 2.0.0 Queued as {id}\r\n"),
            Err(SinkError::Rejected(rejection)) => {
                let (code, status) = rejection.smtp_status();
                format!("{code} {status} {}\r\n", one_line(&rejection.to_string()))
            }
            Err(SinkError::Temporary(why)) => format!("451 4.3.0 {}\r\n", one_line(&why)),
        }
    }
}

fn one_line(text: &str) -> String {
    text.replace(['\r', '\n'], " ")
}

/// Accepts SMTP connections on `listener` until `shutdown` resolves, at most
/// `max_connections` at once; one more is told 421 and closed.
pub async fn serve<K: PostSink + 'static>(
    listener: tokio::net::TcpListener,
    config: std::sync::Arc<SmtpConfig>,
    sink: std::sync::Arc<K>,
    max_connections: usize,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(max_connections));
    tokio::pin!(shutdown);
    loop {
        let (mut stream, peer) = tokio::select! {
            accepted = listener.accept() => accepted?,
            () = &mut shutdown => return Ok(()),
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tokio::spawn(async move {
                let _ = stream
                    .write_all(b"421 4.3.2 Too many connections, try again later\r\n")
                    .await;
            });
            continue;
        };
        let (config, sink) = (config.clone(), sink.clone());
        tokio::spawn(async move {
            if let Err(e) = run_session(stream, &config, sink.as_ref()).await {
                tracing::debug!(%peer, error = %e, "SMTP session ended with an error");
            }
            drop(slot);
        });
    }
}
