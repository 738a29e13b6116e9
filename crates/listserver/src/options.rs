//! The list server's options, declared once: the `hushlist-listserver` binary and
//! `hushlist serve lists` take them as flags, `hushlist serve` as the `[lists]` section of its
//! TOML config, and [`ListOptions::check`] turns them into a [`ListDaemonConfig`].

use std::path::PathBuf;
use std::time::Duration;

use hushlist_core::bounce::BouncePolicy;
use hushlist_http::connections::ConnectionCaps;
use hushlist_http::option_set;
use hushlist_http::options::{OptionProblems, Problems};
use serde::Deserialize;

use crate::daemon::ListDaemonConfig;
use crate::delivery::{DeliveryConfig, DnsResolver, KeyServerAccess, RelayConfig, RelayTls};
use crate::smtp::{DEFAULT_CONNECTIONS, SmtpConfig};

option_set! {
    /// How the list server runs, each setting optional (the default written where it is
    /// checked). The TOML key is the field's name.
    #[derive(Default, clap::Args, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct ListOptions {
        /// HTTP address of the roster endpoints, the archive, /healthz and /metrics
        /// (default 127.0.0.1:8471).
        #[arg(long = "http-listen", visible_alias = "list-http", value_name = "IP:PORT")]
        pub http: Option<String>,
        /// SMTP address posts arrive on (default 127.0.0.1:2525; port 0 picks a free port,
        /// and the chosen address is printed).
        #[arg(long = "smtp-listen", visible_alias = "smtp", value_name = "IP:PORT")]
        pub smtp: Option<String>,
        /// Database URL (default: SQLite in the data directory).
        #[arg(long)]
        pub database: Option<String>,
        /// Relay MTA that copies are handed to, as HOST:PORT (default localhost:25; an IPv6
        /// host in brackets).
        #[arg(long)]
        pub relay: Option<String>,
        /// Seconds to wait for the relay to connect or answer a command (default 60).
        #[arg(long)]
        pub relay_timeout_secs: Option<u64>,
        /// Insist on STARTTLS to the relay, checking its certificate against the system's
        /// CAs (or --relay-ca-file).
        #[arg(long, num_args = 0..=1, default_missing_value = "true")]
        pub relay_starttls: Option<bool>,
        /// PEM file of the CAs that may vouch for the relay's certificate (implies
        /// --relay-starttls).
        #[arg(long)]
        pub relay_ca_file: Option<PathBuf>,
        /// Public base URL of the HTTP interface, for List-Archive headers and one-click
        /// unsubscribe links.
        #[arg(long)]
        pub public_url: Option<String>,
        /// Concurrent delivery workers, one relay connection each (default 4).
        #[arg(long)]
        pub workers: Option<usize>,
        /// Recipients per SMTP transaction to the relay (default 100).
        #[arg(long)]
        pub max_rcpts: Option<usize>,
        /// One transaction per recipient with a VERP bounce address naming them.
        #[arg(long, num_args = 0..=1, default_missing_value = "true")]
        pub verp: Option<bool>,
        /// Bounce score at which a member is probed, and suspended if the probe bounces too
        /// (a hard bounce counts 1, a soft one 0.5, at most one a day; the score halves
        /// weekly; default 5).
        #[arg(long)]
        pub bounce_threshold: Option<f64>,
        /// Seconds between comparisons of each list's roster with the key server's (with
        /// --key-server; default 600); owners are mailed when they differ for longer than one
        /// check.
        #[arg(long)]
        pub roster_check_secs: Option<u64>,
        /// Seconds a worker's claim on deliveries lasts (a crashed worker's deliveries are
        /// retried after this; default 300); must exceed 4 relay timeouts.
        #[arg(long)]
        pub lease_secs: Option<u64>,
        /// Seconds before the first retry of a deferred delivery (doubling up to an hour;
        /// default 60).
        #[arg(long)]
        pub retry_secs: Option<u64>,
        /// Simultaneous SMTP connections accepted (default 100).
        #[arg(long)]
        pub max_connections: Option<usize>,
        /// Simultaneous SMTP connections accepted from one client address (more are told
        /// 421 4.7.0; default 20).
        #[arg(long)]
        pub max_connections_per_client: Option<usize>,
        /// Seconds a client has to send an HTTP request's headers (default 10).
        #[arg(long)]
        pub http_header_timeout_secs: Option<u64>,
        /// HTTP connections held at once (default 1000).
        #[arg(long)]
        pub max_http_connections: Option<usize>,
        /// HTTP connections held at once from one client address (default 100).
        #[arg(long)]
        pub max_http_connections_per_client: Option<usize>,
        /// Largest post accepted, in bytes (default 26214400, 25 MiB).
        #[arg(long)]
        pub max_message_bytes: Option<usize>,
        /// Base URL of the key server, which grants push-mode lists their members' PKESKs
        /// (needs --grants-token-file).
        #[arg(long)]
        pub key_server: Option<String>,
        /// File holding the key server's grants token (its `grants.token`).
        #[arg(long)]
        pub grants_token_file: Option<PathBuf>,
        /// PEM certificate chain to offer STARTTLS with on the SMTP port (needs --tls-key).
        #[arg(long)]
        pub tls_cert: Option<PathBuf>,
        /// PEM private key for --tls-cert.
        #[arg(long)]
        pub tls_key: Option<PathBuf>,
        /// DNS server asked for the DMARC policy of authors' domains, which decides whether
        /// a copy's From is the author's or the list's (default: the servers in
        /// /etc/resolv.conf; `none`: no lookups, every such copy From the list).
        #[arg(long, value_name = "IP:PORT|none")]
        pub dns_resolver: Option<String>,
    }
}

impl ListOptions {
    /// The list server's config over `data_dir`, with `hostname` in its SMTP greeting and in
    /// EHLO to the relay; every problem with the options at once if there are any.
    pub fn check(
        self,
        data_dir: PathBuf,
        hostname: &str,
    ) -> Result<ListDaemonConfig, OptionProblems> {
        let mut problems = Problems::<Self>::default();
        let relay_text = self.relay.unwrap_or_else(|| "localhost:25".to_owned());
        // An IPv6 host is written in brackets ("[::1]:25") and connected to without them.
        let relay = relay_text.rsplit_once(':').and_then(|(host, port)| {
            let host = host.trim_start_matches('[').trim_end_matches(']');
            Some((host.to_owned(), port.parse::<u16>().ok()?)).filter(|_| !host.is_empty())
        });
        let (host, port) = relay.unwrap_or_else(|| {
            problems.push_value(
                "relay",
                format!("{relay_text:?}"),
                "is not HOST:PORT, for example localhost:25",
            );
            (String::new(), 0)
        });
        let mut delivery = DeliveryConfig::new(RelayConfig {
            host,
            port,
            helo_name: hostname.to_owned(),
            timeout: Duration::from_secs(self.relay_timeout_secs.unwrap_or(60)),
            starttls: match (self.relay_ca_file, self.relay_starttls) {
                (Some(file), _) => RelayTls::from_ca_file(&file)
                    .map_err(|e| problems.push(&["relay_ca_file"], e))
                    .ok(),
                (None, Some(true)) => RelayTls::system_roots()
                    .map_err(|e| problems.push(&["relay_starttls"], e))
                    .ok(),
                (None, _) => None,
            },
        });
        if self.workers == Some(0) || self.max_rcpts == Some(0) {
            problems.push(&["workers", "max_rcpts"], "must be at least 1");
        }
        delivery.workers = self.workers.unwrap_or(delivery.workers);
        delivery.max_rcpts_per_transaction =
            self.max_rcpts.unwrap_or(delivery.max_rcpts_per_transaction);
        delivery.verp = self.verp.unwrap_or(delivery.verp);
        delivery.lease = self.lease_secs.map_or(delivery.lease, Duration::from_secs);
        delivery.retry_first = self
            .retry_secs
            .map_or(delivery.retry_first, Duration::from_secs);
        match self.roster_check_secs {
            Some(0) => problems.push(&["roster_check_secs"], "must be at least 1"),
            Some(secs) => delivery.roster_check_every = Duration::from_secs(secs),
            None => {}
        }
        if let Some(url) = &self.public_url
            && !(url.starts_with("https://") || url.starts_with("http://"))
        {
            problems.push_value("public_url", format!("{url:?}"), "must be an http(s) URL");
        }
        delivery.public_url = self.public_url;
        delivery.dns_resolver = match self.dns_resolver.as_deref() {
            None => DnsResolver::System,
            Some("none") => DnsResolver::Off,
            Some(text) => text.parse().map(DnsResolver::At).unwrap_or_else(|_| {
                problems.push_value(
                    "dns_resolver",
                    format!("{text:?}"),
                    "is not an IP:PORT address (for example 127.0.0.1:53) or none",
                );
                DnsResolver::System
            }),
        };
        delivery.key_server = match (self.key_server, self.grants_token_file) {
            (Some(url), Some(file)) => match std::fs::read_to_string(&file) {
                Ok(token) => Some(KeyServerAccess {
                    url,
                    grants_token: token.trim().to_owned(),
                }),
                Err(e) => {
                    problems.push_value(
                        "grants_token_file",
                        file.display(),
                        &format!("cannot be read ({e}): copy the key server's grants.token"),
                    );
                    None
                }
            },
            (None, None) => None,
            _ => {
                problems.push(&["key_server", "grants_token_file"], "go together");
                None
            }
        };
        let mut bounces = BouncePolicy::default();
        match self.bounce_threshold {
            Some(score) if !(score.is_finite() && score > 0.0) => problems.push_value(
                "bounce_threshold",
                score,
                "must be a positive number (a hard bounce counts 1)",
            ),
            Some(score) => bounces.threshold = score,
            None => {}
        }
        if self.max_connections == Some(0) || self.max_connections_per_client == Some(0) {
            problems.push(
                &["max_connections", "max_connections_per_client"],
                "must be at least 1",
            );
        }
        let smtp = SmtpConfig::default();
        let config = ListDaemonConfig {
            data_dir,
            database: problems.database(self.database),
            smtp_listen: problems.address("smtp", self.smtp, "127.0.0.1:2525"),
            http_listen: problems.address("http", self.http, "127.0.0.1:8471"),
            smtp: SmtpConfig {
                hostname: hostname.to_owned(),
                max_message_bytes: self.max_message_bytes.unwrap_or(smtp.max_message_bytes),
                ..smtp
            },
            smtp_connections: ConnectionCaps {
                total: self.max_connections.unwrap_or(DEFAULT_CONNECTIONS.total),
                per_client: self
                    .max_connections_per_client
                    .unwrap_or(DEFAULT_CONNECTIONS.per_client),
            },
            http: problems.http_limits(
                self.http_header_timeout_secs,
                self.max_http_connections,
                self.max_http_connections_per_client,
            ),
            tls: problems.tls_pair(self.tls_cert, self.tls_key),
            delivery,
            bounces,
        };
        problems.finish(config)
    }
}
