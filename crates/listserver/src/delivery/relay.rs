//! The relay connection: one SMTP connection to the relay MTA (STARTTLS when configured),
//! kept open by a worker while there is work, and the transactions made on it.

use std::sync::Arc;
use std::time::Duration;

use mail_send::SmtpClient;
use smtp_proto::{EXT_PIPELINING, EXT_START_TLS, Response};
use tokio::io::BufStream;

use super::Outcome;

/// Where and how copies are handed over.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    pub host: String,
    pub port: u16,
    /// Name given in EHLO.
    pub helo_name: String,
    /// Limit on connecting and on each reply.
    pub timeout: Duration,
    /// When set, the relay must offer STARTTLS and prove its name with a certificate this
    /// connector trusts; nothing is sent in clear.
    pub starttls: Option<RelayTls>,
}

/// How the relay's certificate is checked for STARTTLS.
#[derive(Clone)]
pub struct RelayTls(tokio_rustls::TlsConnector);

impl RelayTls {
    /// Trusts the system's certificate authorities.
    pub fn system_roots() -> Result<Self, String> {
        mail_send::smtp::tls::build_tls_connector(false).map(RelayTls)
    }

    /// Trusts only the certificate authorities in a PEM file (a private CA for the relay).
    pub fn from_ca_file(path: &std::path::Path) -> Result<Self, String> {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject as _;
        let mut roots = rustls::RootCertStore::empty();
        let certs = CertificateDer::pem_file_iter(path)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|e| format!("cannot read CA certificates from {}: {e}", path.display()))?;
        for cert in certs {
            roots
                .add(cert)
                .map_err(|e| format!("bad CA certificate in {}: {e}", path.display()))?;
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
        Ok(RelayTls(tokio_rustls::TlsConnector::from(Arc::new(config))))
    }
}

impl std::fmt::Debug for RelayTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RelayTls")
    }
}

/// The relay connection's stream: TCP, or TLS over TCP after STARTTLS.
trait RelayStream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + Sync {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + Sync> RelayStream for T {}

/// An open SMTP connection to the relay and what it advertised.
pub(super) struct Relay {
    client: SmtpClient<Box<dyn RelayStream>>,
    pipelining: bool,
}

impl Relay {
    pub(super) async fn connect(config: &RelayConfig) -> Result<Self, mail_send::Error> {
        let address = tokio::time::timeout(
            config.timeout,
            tokio::net::lookup_host((config.host.as_str(), config.port)),
        )
        .await
        .map_err(|_| mail_send::Error::Timeout)??
        .next()
        .ok_or_else(|| {
            mail_send::Error::Io(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("{} has no address", config.host),
            ))
        })?;
        let mut client = SmtpClient::connect(address, config.timeout).await?;
        // A transaction ends in small writes (the message's last bytes and the final dot)
        // followed by a wait for the reply; with Nagle's algorithm each of them waited for the
        // relay's delayed ACK, about 40 ms a transaction.
        client.stream.set_nodelay(true)?;
        let greeting = tokio::time::timeout(config.timeout, client.read())
            .await
            .map_err(|_| mail_send::Error::Timeout)??;
        if greeting.code >= 300 {
            return Err(mail_send::Error::UnexpectedReply(greeting));
        }
        let ehlo = client.ehlo(&config.helo_name).await?;
        let Some(RelayTls(connector)) = &config.starttls else {
            return Ok(Relay {
                pipelining: ehlo.has_capability(EXT_PIPELINING),
                client: SmtpClient {
                    stream: Box::new(BufStream::new(client.stream)),
                    timeout: client.timeout,
                },
            });
        };
        if !ehlo.has_capability(EXT_START_TLS) {
            return Err(mail_send::Error::MissingStartTls);
        }
        let tls = client.start_tls(connector, &config.host).await?;
        let mut client: SmtpClient<Box<dyn RelayStream>> = SmtpClient {
            stream: Box::new(BufStream::new(tls.stream)),
            timeout: tls.timeout,
        };
        // RFC 3207: what the server said before TLS no longer counts; ask again.
        let ehlo = client.ehlo(&config.helo_name).await?;
        Ok(Relay {
            pipelining: ehlo.has_capability(EXT_PIPELINING),
            client,
        })
    }

    /// MAIL, the RCPTs (pipelined when offered), then DATA if any recipient was taken.
    /// Returns one outcome per recipient; an error means the connection is unusable.
    pub(super) async fn send(
        &mut self,
        sender: &str,
        recipients: &[String],
        message: &[u8],
    ) -> Result<Vec<Outcome>, mail_send::Error> {
        let mut commands = Vec::with_capacity(recipients.len() + 1);
        commands.push(format!("MAIL FROM:<{sender}>\r\n"));
        commands.extend(recipients.iter().map(|r| format!("RCPT TO:<{r}>\r\n")));
        let replies = if self.pipelining {
            self.client.cmds(commands.iter()).await?
        } else {
            let mut replies = Vec::with_capacity(commands.len());
            for command in &commands {
                let reply = self.client.cmd(command).await?;
                let refused_sender = replies.is_empty() && reply.code >= 400;
                replies.push(reply);
                if refused_sender {
                    break;
                }
            }
            replies
        };
        let mail_reply = &replies[0];
        if mail_reply.code >= 400 {
            // The relay refused the sender: the same answer for every recipient.
            self.client.rset().await?;
            return Ok(recipients.iter().map(|_| refusal(mail_reply)).collect());
        }
        let mut outcomes: Vec<Outcome> = replies[1..]
            .iter()
            .map(|reply| {
                if reply.code < 300 {
                    Outcome::Delivered
                } else {
                    refusal(reply)
                }
            })
            .collect();
        if !outcomes.iter().any(|o| matches!(o, Outcome::Delivered)) {
            self.client.rset().await?;
            return Ok(outcomes);
        }
        let data_reply = match self.client.data(message).await {
            Ok(reply) => reply,
            Err(mail_send::Error::UnexpectedReply(reply)) => reply,
            Err(e) => return Err(e),
        };
        if data_reply.code >= 300 {
            for outcome in &mut outcomes {
                if matches!(outcome, Outcome::Delivered) {
                    *outcome = refusal(&data_reply);
                }
            }
        }
        Ok(outcomes)
    }

    pub(super) async fn quit(self) {
        // The relay may already have closed the connection; nothing depends on its answer.
        let _ = self.client.quit().await;
    }
}

fn refusal(reply: &Response<String>) -> Outcome {
    let text = reply_text(reply);
    if reply.code >= 500 {
        Outcome::Failed(text)
    } else {
        Outcome::Deferred(text)
    }
}

/// A reply as the relay gave it, for the queue record.
fn reply_text(reply: &Response<String>) -> String {
    let message = reply.message.replace(['\r', '\n'], " ");
    if reply.esc[0] == 0 {
        format!("{} {}", reply.code, message.trim())
    } else {
        format!(
            "{} {}.{}.{} {}",
            reply.code,
            reply.esc[0],
            reply.esc[1],
            reply.esc[2],
            message.trim()
        )
    }
}
