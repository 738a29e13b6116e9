//! `hushlist-keyserver`: runs the key server over its data directory. Thin: it reads flags
//! and hands them to `hushlist_keyserver::daemon`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use hushlist_http::connections::{ConnectionCaps, HttpLimits, parse_cap};
use hushlist_keyserver::ServiceConfig;
use hushlist_keyserver::daemon::{self, KeyDaemonConfig};

#[derive(Parser)]
#[command(
    name = "hushlist-keyserver",
    version,
    about = "The hushlist key server"
)]
struct Args {
    /// Directory for the database, master key and tokens.
    #[arg(long, default_value = "hushlist-data/keys")]
    data_dir: PathBuf,
    /// Address to listen on (port 0 picks a free port; the chosen address is printed).
    #[arg(long, default_value = "127.0.0.1:8470")]
    listen: SocketAddr,
    /// Database URL (default: SQLite in the data directory).
    #[arg(long)]
    database: Option<String>,
    /// Domain for the server's own OpenPGP user id.
    #[arg(long, default_value = "localhost.localdomain")]
    domain: String,
    /// PEM certificate chain to serve HTTPS with (needs --tls-key).
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Write logs as JSON lines (for log collectors) instead of text.
    #[arg(long)]
    log_json: bool,
    /// Seconds between sweeps that destroy expired keys.
    #[arg(long, default_value_t = 60)]
    sweep_secs: u64,
    /// Signed requests each identity may make per second, on average.
    #[arg(long, default_value_t = ServiceConfig::default().rate_per_sec)]
    rate_per_sec: f64,
    /// Signed requests each identity may make at once.
    #[arg(long, default_value_t = ServiceConfig::default().rate_burst)]
    rate_burst: f64,
    /// Seconds a client has to send a request's headers (and to finish the TLS handshake).
    #[arg(long, default_value_t = HttpLimits::default().header_read_timeout.as_secs(), value_parser = clap::value_parser!(u64).range(1..))]
    http_header_timeout_secs: u64,
    /// HTTP connections held at once.
    #[arg(long, default_value_t = HttpLimits::default().connections.total, value_parser = parse_cap)]
    max_http_connections: usize,
    /// HTTP connections held at once from one client address.
    #[arg(long, default_value_t = HttpLimits::default().connections.per_client, value_parser = parse_cap)]
    max_http_connections_per_client: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    hushlist_http::init_logs(args.log_json);
    let running = daemon::start(KeyDaemonConfig {
        data_dir: args.data_dir,
        listen: args.listen,
        database: args.database,
        domain: args.domain,
        tls: args.tls_cert.zip(args.tls_key),
        sweep_every: Duration::from_secs(args.sweep_secs),
        rate_per_sec: args.rate_per_sec,
        rate_burst: args.rate_burst,
        http: HttpLimits {
            header_read_timeout: Duration::from_secs(args.http_header_timeout_secs),
            connections: ConnectionCaps {
                total: args.max_http_connections,
                per_client: args.max_http_connections_per_client,
            },
        },
    })
    .await?;
    hushlist_http::announce(&format!("listening on {}", running.url));
    tokio::select! {
        served = running.serving => served.context("the HTTP service stopped")??,
        _ = tokio::signal::ctrl_c() => {}
    }
    Ok(())
}
