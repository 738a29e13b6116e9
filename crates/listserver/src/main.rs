//! `hushlist-listserver`: runs the list server over its data directory: SMTP in, fan-out
//! workers to the relay, and the HTTP interface. Thin: it reads flags and wires the library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::Parser;
use hushlist_core::bounce::BouncePolicy;
use hushlist_http::connections::{ConnectionCaps, HttpLimits, parse_cap};
use hushlist_listserver::daemon::{self, ListDaemonConfig};
use hushlist_listserver::delivery::{DeliveryConfig, KeyServerAccess, RelayConfig, RelayTls};
use hushlist_listserver::smtp::{DEFAULT_CONNECTIONS, SmtpConfig};

#[derive(Parser)]
#[command(
    name = "hushlist-listserver",
    version,
    about = "The hushlist list server"
)]
struct Args {
    /// Directory for the database and the admin token.
    #[arg(long, default_value = "hushlist-data/lists")]
    data_dir: PathBuf,
    /// Database URL (default: SQLite in the data directory).
    #[arg(long)]
    database: Option<String>,
    /// SMTP address posts arrive on (port 0 picks a free port; the chosen address is printed).
    #[arg(long, default_value = "127.0.0.1:2525")]
    smtp_listen: SocketAddr,
    /// HTTP address of the roster endpoints, /healthz and /metrics.
    #[arg(long, default_value = "127.0.0.1:8471")]
    http_listen: SocketAddr,
    /// Relay MTA that copies are handed to, as HOST:PORT.
    #[arg(long, default_value = "localhost:25")]
    relay: String,
    /// Host name in the SMTP greeting and in EHLO to the relay.
    #[arg(long, default_value = "localhost")]
    hostname: String,
    /// Public base URL of the HTTP interface, for List-Archive headers.
    #[arg(long)]
    public_url: Option<String>,
    /// Concurrent delivery workers (one relay connection each).
    #[arg(long, default_value_t = 4)]
    workers: usize,
    /// Recipients per SMTP transaction to the relay.
    #[arg(long, default_value_t = 100)]
    max_rcpts: usize,
    /// One transaction per recipient with a VERP bounce address naming them.
    #[arg(long)]
    verp: bool,
    /// Bounce score at which a member is probed, and suspended if the probe bounces too
    /// (a hard bounce counts 1, a soft one 0.5, at most one a day; the score halves weekly).
    #[arg(long, default_value_t = 5.0, value_parser = positive_score)]
    bounce_threshold: f64,
    /// Seconds between comparisons of each list's roster with the key server's (with
    /// --key-server); owners are mailed when they differ for longer than one check.
    #[arg(long, default_value_t = 600, value_parser = clap::value_parser!(u64).range(1..))]
    roster_check_secs: u64,
    /// Seconds a worker's claim on deliveries lasts (a crashed worker's deliveries are
    /// retried after this); must exceed 4 relay timeouts.
    #[arg(long, default_value_t = 300)]
    lease_secs: u64,
    /// Insist on STARTTLS to the relay, checking its certificate against the system's CAs
    /// (or --relay-ca-file).
    #[arg(long)]
    relay_starttls: bool,
    /// PEM file of the CAs that may vouch for the relay's certificate (implies
    /// --relay-starttls).
    #[arg(long)]
    relay_ca_file: Option<PathBuf>,
    /// Seconds to wait for the relay to connect or answer a command.
    #[arg(long, default_value_t = 60)]
    relay_timeout_secs: u64,
    /// Seconds before the first retry of a deferred delivery (doubling up to an hour).
    #[arg(long, default_value_t = 60)]
    retry_secs: u64,
    /// Simultaneous SMTP connections accepted.
    #[arg(long, default_value_t = DEFAULT_CONNECTIONS.total, value_parser = parse_cap)]
    max_connections: usize,
    /// Simultaneous SMTP connections accepted from one client address (more are told
    /// 421 4.7.0).
    #[arg(long, default_value_t = DEFAULT_CONNECTIONS.per_client, value_parser = parse_cap)]
    max_connections_per_client: usize,
    /// Seconds a client has to send an HTTP request's headers.
    #[arg(long, default_value_t = HttpLimits::default().header_read_timeout.as_secs(), value_parser = clap::value_parser!(u64).range(1..))]
    http_header_timeout_secs: u64,
    /// HTTP connections held at once.
    #[arg(long, default_value_t = HttpLimits::default().connections.total, value_parser = parse_cap)]
    max_http_connections: usize,
    /// HTTP connections held at once from one client address.
    #[arg(long, default_value_t = HttpLimits::default().connections.per_client, value_parser = parse_cap)]
    max_http_connections_per_client: usize,
    /// Largest post accepted, in bytes.
    #[arg(long, default_value_t = 25 * 1024 * 1024)]
    max_message_bytes: usize,
    /// Base URL of the key server, which grants push-mode lists their members' PKESKs.
    #[arg(long, requires = "grants_token_file")]
    key_server: Option<String>,
    /// File holding the key server's grants token (its `grants.token`).
    #[arg(long, requires = "key_server")]
    grants_token_file: Option<PathBuf>,
    /// PEM certificate chain to offer STARTTLS with on the SMTP port (needs --tls-key).
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Write logs as JSON lines (for log collectors) instead of text.
    #[arg(long)]
    log_json: bool,
}

fn relay(
    text: &str,
    helo_name: &str,
    timeout: Duration,
    starttls: Option<RelayTls>,
) -> anyhow::Result<RelayConfig> {
    let Some((host, port)) = text.rsplit_once(':') else {
        bail!("--relay {text:?} must be HOST:PORT, for example localhost:25");
    };
    let port = port
        .parse()
        .with_context(|| format!("--relay {text:?}: {port:?} is not a port number"))?;
    Ok(RelayConfig {
        host: host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned(),
        port,
        helo_name: helo_name.to_owned(),
        timeout,
        starttls,
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    hushlist_http::init_logs(args.log_json);
    let relay_tls = match (&args.relay_ca_file, args.relay_starttls) {
        (Some(ca_file), _) => Some(RelayTls::from_ca_file(ca_file).map_err(anyhow::Error::msg)?),
        (None, true) => Some(RelayTls::system_roots().map_err(anyhow::Error::msg)?),
        (None, false) => None,
    };
    let relay = relay(
        &args.relay,
        &args.hostname,
        Duration::from_secs(args.relay_timeout_secs),
        relay_tls,
    )?;
    let mut delivery = DeliveryConfig::new(relay);
    delivery.workers = args.workers;
    delivery.max_rcpts_per_transaction = args.max_rcpts;
    delivery.verp = args.verp;
    delivery.lease = Duration::from_secs(args.lease_secs);
    delivery.retry_first = Duration::from_secs(args.retry_secs);
    delivery.public_url = args.public_url;
    delivery.roster_check_every = Duration::from_secs(args.roster_check_secs);
    if let (Some(url), Some(token_file)) = (args.key_server, &args.grants_token_file) {
        let grants_token = std::fs::read_to_string(token_file)
            .with_context(|| {
                format!(
                    "reading the grants token from {} (copy the key server's grants.token)",
                    token_file.display()
                )
            })?
            .trim()
            .to_owned();
        delivery.key_server = Some(KeyServerAccess { url, grants_token });
    }
    let mut running = daemon::start(ListDaemonConfig {
        data_dir: args.data_dir,
        database: args.database,
        smtp_listen: args.smtp_listen,
        http_listen: args.http_listen,
        smtp: SmtpConfig {
            hostname: args.hostname,
            max_message_bytes: args.max_message_bytes,
            ..SmtpConfig::default()
        },
        smtp_connections: ConnectionCaps {
            total: args.max_connections,
            per_client: args.max_connections_per_client,
        },
        http: HttpLimits {
            header_read_timeout: Duration::from_secs(args.http_header_timeout_secs),
            connections: ConnectionCaps {
                total: args.max_http_connections,
                per_client: args.max_http_connections_per_client,
            },
        },
        tls: args.tls_cert.zip(args.tls_key),
        delivery,
        bounces: BouncePolicy {
            threshold: args.bounce_threshold,
            ..BouncePolicy::default()
        },
    })
    .await?;
    hushlist_http::announce(&format!("smtp on {}", running.smtp_address));
    hushlist_http::announce(&format!("listening on {}", running.url));
    let serving = async {
        (&mut running.serving)
            .await
            .context("the list server stopped")?
            .context("a listener failed")
    };
    let outcome = tokio::select! {
        served = serving => served,
        _ = tokio::signal::ctrl_c() => Ok(()),
    };
    running.stop().await;
    outcome
}

fn positive_score(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(score) if score.is_finite() && score > 0.0 => Ok(score),
        _ => Err(format!(
            "{text:?} is not a positive number (a hard bounce counts 1; the default is 5)"
        )),
    }
}
