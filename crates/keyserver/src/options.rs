//! The key server's options, declared once: the `hushlist-keyserver` binary and
//! `hushlist serve keys` take them as flags, `hushlist serve` as the `[keys]` section of its
//! TOML config, and [`KeyOptions::check`] turns them into a [`KeyDaemonConfig`].

use std::path::PathBuf;
use std::time::Duration;

use hushlist_http::option_set;
use hushlist_http::options::{OptionProblems, Problems};
use serde::Deserialize;

use crate::ServiceConfig;
use crate::daemon::KeyDaemonConfig;

option_set! {
    /// How the key server runs, each setting optional (the default written where it is
    /// checked). The TOML key is the field's name.
    #[derive(Default, clap::Args, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct KeyOptions {
        /// Address to listen on (default 127.0.0.1:8470; port 0 picks a free port, and the
        /// chosen address is printed).
        #[arg(long = "listen", visible_alias = "key-http", value_name = "IP:PORT")]
        pub http: Option<String>,
        /// Database URL (default: SQLite in the data directory).
        #[arg(long)]
        pub database: Option<String>,
        /// PEM certificate chain to serve HTTPS with (needs --tls-key).
        #[arg(long)]
        pub tls_cert: Option<PathBuf>,
        /// PEM private key for --tls-cert.
        #[arg(long)]
        pub tls_key: Option<PathBuf>,
        /// Seconds between sweeps that destroy expired keys (default 60).
        #[arg(long)]
        pub sweep_secs: Option<u64>,
        /// Signed requests each identity may make per second, on average (default 50).
        #[arg(long)]
        pub rate_per_sec: Option<f64>,
        /// Signed requests each identity may make at once (default 200).
        #[arg(long)]
        pub rate_burst: Option<f64>,
        /// Seconds a client has to send a request's headers (and to finish the TLS
        /// handshake; default 10).
        #[arg(long)]
        pub http_header_timeout_secs: Option<u64>,
        /// HTTP connections held at once (default 1000).
        #[arg(long)]
        pub max_http_connections: Option<usize>,
        /// HTTP connections held at once from one client address (default 100).
        #[arg(long)]
        pub max_http_connections_per_client: Option<usize>,
    }
}

impl KeyOptions {
    /// The key server's config over `data_dir`, with `domain` in its own OpenPGP user id;
    /// every problem with the options at once if there are any.
    pub fn check(self, data_dir: PathBuf, domain: &str) -> Result<KeyDaemonConfig, OptionProblems> {
        let mut problems = Problems::<Self>::default();
        let service = ServiceConfig::default();
        let config = KeyDaemonConfig {
            data_dir,
            listen: problems.address("http", self.http, "127.0.0.1:8470"),
            database: problems.database(self.database),
            domain: domain.to_owned(),
            tls: problems.tls_pair(self.tls_cert, self.tls_key),
            sweep_every: Duration::from_secs(self.sweep_secs.unwrap_or(60)),
            rate_per_sec: self.rate_per_sec.unwrap_or(service.rate_per_sec),
            rate_burst: self.rate_burst.unwrap_or(service.rate_burst),
            http: problems.http_limits(
                self.http_header_timeout_secs,
                self.max_http_connections,
                self.max_http_connections_per_client,
            ),
        };
        problems.finish(config)
    }
}
