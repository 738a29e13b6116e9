//! `hushlist serve`: both servers in one process (or one of them), from flags and an
//! optional TOML config. The config is read raw, then checked as a whole, so every problem is
//! reported at once.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use hushlist_core::bounce::BouncePolicy;
use hushlist_http::connections::{ConnectionCaps, HttpLimits};
use hushlist_keyserver::ServiceConfig;
use hushlist_keyserver::daemon::{self as keys, KeyDaemonConfig};
use hushlist_listserver::daemon::{self as lists, ListDaemonConfig};
use hushlist_listserver::delivery::{DeliveryConfig, KeyServerAccess, RelayConfig};
use hushlist_listserver::smtp::{DEFAULT_CONNECTIONS, SmtpConfig};
use serde::Deserialize;

/// Which servers to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Which {
    /// The key server only.
    Keys,
    /// The list server only (give it the key server's URL for push-mode lists).
    Lists,
}

/// Settings from flags; each overrides the config file.
#[derive(Debug, Default, clap::Args)]
pub struct ServeFlags {
    /// TOML config file (see README).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Data directory (default ./hushlist-data): `keys/` and `lists/` beneath it.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// The key server's HTTP address (default 127.0.0.1:8470).
    #[arg(long)]
    pub key_http: Option<String>,
    /// The list server's HTTP address (default 127.0.0.1:8471).
    #[arg(long)]
    pub list_http: Option<String>,
    /// The list server's SMTP address (default 127.0.0.1:2525).
    #[arg(long)]
    pub smtp: Option<String>,
    /// The relay MTA copies are handed to (default localhost:25).
    #[arg(long)]
    pub relay: Option<String>,
    /// Mail domain of this installation (host name in SMTP, the key server's user id).
    #[arg(long)]
    pub domain: Option<String>,
    /// Write logs (to stderr) as JSON lines for log collectors instead of text.
    #[arg(long)]
    pub log_json: bool,
}

/// The config file as written: every field optional, unknown fields refused.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    data_dir: Option<PathBuf>,
    domain: Option<String>,
    #[serde(default)]
    keys: RawKeys,
    #[serde(default)]
    lists: RawLists,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKeys {
    http: Option<String>,
    database: Option<String>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    sweep_secs: Option<u64>,
    http_header_timeout_secs: Option<u64>,
    max_http_connections: Option<usize>,
    max_http_connections_per_client: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLists {
    http: Option<String>,
    smtp: Option<String>,
    database: Option<String>,
    relay: Option<String>,
    public_url: Option<String>,
    workers: Option<usize>,
    max_rcpts: Option<usize>,
    verp: Option<bool>,
    /// Bounce score at which a member is probed (see `hushlist-listserver --help`).
    bounce_threshold: Option<f64>,
    /// Seconds between comparisons of the two servers' rosters.
    roster_check_secs: Option<u64>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    http_header_timeout_secs: Option<u64>,
    max_http_connections: Option<usize>,
    max_http_connections_per_client: Option<usize>,
    /// SMTP sessions at once, in all and from one client address.
    max_connections: Option<usize>,
    max_connections_per_client: Option<usize>,
    /// For `serve lists` alone: where the key server is, and its grants token file.
    key_server: Option<String>,
    grants_token_file: Option<PathBuf>,
}

/// The checked settings.
struct Settings {
    data_dir: PathBuf,
    keys: KeyDaemonConfig,
    lists: ListDaemonConfig,
    key_server: Option<(String, PathBuf)>,
}

/// Merges flags over the file and checks everything, reporting every problem at once.
fn settings(flags: ServeFlags) -> anyhow::Result<Settings> {
    let raw: RawConfig = match &flags.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading config {}", path.display()))?;
            toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
        }
        None => RawConfig::default(),
    };
    let mut problems = Vec::new();
    let mut address = |what: &str, text: Option<String>, default: &str| -> SocketAddr {
        let text = text.unwrap_or_else(|| default.to_owned());
        text.parse().unwrap_or_else(|_| {
            problems.push(format!("{what} = {text:?} is not an IP:PORT address"));
            SocketAddr::from(([127, 0, 0, 1], 0))
        })
    };
    let key_http = address(
        "keys.http",
        flags.key_http.or(raw.keys.http),
        "127.0.0.1:8470",
    );
    let list_http = address(
        "lists.http",
        flags.list_http.or(raw.lists.http),
        "127.0.0.1:8471",
    );
    let smtp = address(
        "lists.smtp",
        flags.smtp.or(raw.lists.smtp),
        "127.0.0.1:2525",
    );
    let data_dir = flags
        .data_dir
        .or(raw.data_dir)
        .unwrap_or_else(|| PathBuf::from("hushlist-data"));
    let domain = flags
        .domain
        .or(raw.domain)
        .unwrap_or_else(|| "localhost.localdomain".to_owned());
    if hushlist_core::Address::parse(&format!("keys@{domain}")).is_err() {
        problems.push(format!(
            "domain = {domain:?} is not a mail domain (like lists.example.org)"
        ));
    }
    let relay_text = flags
        .relay
        .or(raw.lists.relay)
        .unwrap_or_else(|| "localhost:25".to_owned());
    let relay = match relay_text
        .rsplit_once(':')
        .map(|(h, p)| (h, p.parse::<u16>()))
    {
        Some((host, Ok(port))) if !host.is_empty() => Some((host.to_owned(), port)),
        _ => {
            problems.push(format!("lists.relay = {relay_text:?} is not HOST:PORT"));
            None
        }
    };
    let pair = |what: &str,
                cert: Option<PathBuf>,
                key: Option<PathBuf>,
                problems: &mut Vec<String>| match (cert, key) {
        (Some(cert), Some(key)) => Some((cert, key)),
        (None, None) => None,
        _ => {
            problems.push(format!("{what}.tls_cert and {what}.tls_key go together"));
            None
        }
    };
    let key_tls = pair("keys", raw.keys.tls_cert, raw.keys.tls_key, &mut problems);
    let list_tls = pair(
        "lists",
        raw.lists.tls_cert,
        raw.lists.tls_key,
        &mut problems,
    );
    if let Some(url) = &raw.lists.public_url
        && !(url.starts_with("https://") || url.starts_with("http://"))
    {
        problems.push(format!("lists.public_url = {url:?} must be an http(s) URL"));
    }
    for (what, url) in [
        ("keys.database", &raw.keys.database),
        ("lists.database", &raw.lists.database),
    ] {
        if let Some(url) = url
            && !["sqlite:", "postgres://", "postgresql://"]
                .iter()
                .any(|scheme| url.starts_with(scheme))
        {
            problems.push(format!(
                "{what} = {url:?} is not a sqlite:// or postgres:// URL"
            ));
        }
    }
    let mut bounces = BouncePolicy::default();
    match raw.lists.bounce_threshold {
        Some(score) if !(score.is_finite() && score > 0.0) => problems.push(format!(
            "lists.bounce_threshold = {score} must be a positive number (a hard bounce counts 1)"
        )),
        Some(score) => bounces.threshold = score,
        None => {}
    }
    let key_http_limits = http_limits(
        "keys",
        raw.keys.http_header_timeout_secs,
        raw.keys.max_http_connections,
        raw.keys.max_http_connections_per_client,
        &mut problems,
    );
    let list_http_limits = http_limits(
        "lists",
        raw.lists.http_header_timeout_secs,
        raw.lists.max_http_connections,
        raw.lists.max_http_connections_per_client,
        &mut problems,
    );
    if raw.lists.max_connections == Some(0) || raw.lists.max_connections_per_client == Some(0) {
        problems.push(
            "lists.max_connections and lists.max_connections_per_client must be at least 1".into(),
        );
    }
    let smtp_connections = ConnectionCaps {
        total: raw
            .lists
            .max_connections
            .unwrap_or(DEFAULT_CONNECTIONS.total),
        per_client: raw
            .lists
            .max_connections_per_client
            .unwrap_or(DEFAULT_CONNECTIONS.per_client),
    };
    if raw.lists.max_rcpts == Some(0) || raw.lists.workers == Some(0) {
        problems.push("lists.workers and lists.max_rcpts must be at least 1".into());
    }
    let key_server = match (raw.lists.key_server, raw.lists.grants_token_file) {
        (Some(url), Some(file)) => Some((url, file)),
        (None, None) => None,
        _ => {
            problems.push("lists.key_server and lists.grants_token_file go together".into());
            None
        }
    };
    let relay = RelayConfig {
        host: relay.as_ref().map(|r| r.0.clone()).unwrap_or_default(),
        port: relay.map_or(25, |r| r.1),
        helo_name: domain.clone(),
        timeout: Duration::from_secs(60),
        starttls: None,
    };
    let mut delivery = DeliveryConfig::new(relay);
    delivery.workers = raw.lists.workers.unwrap_or(delivery.workers);
    delivery.max_rcpts_per_transaction = raw
        .lists
        .max_rcpts
        .unwrap_or(delivery.max_rcpts_per_transaction);
    delivery.verp = raw.lists.verp.unwrap_or(false);
    delivery.public_url = raw.lists.public_url;
    match raw.lists.roster_check_secs {
        Some(0) => problems.push("lists.roster_check_secs must be at least 1".into()),
        Some(secs) => delivery.roster_check_every = Duration::from_secs(secs),
        None => {}
    }
    if !problems.is_empty() {
        anyhow::bail!(
            "the configuration has {} problem{}:\n  {}",
            problems.len(),
            if problems.len() == 1 { "" } else { "s" },
            problems.join("\n  ")
        );
    }
    Ok(Settings {
        keys: KeyDaemonConfig {
            data_dir: data_dir.join("keys"),
            listen: key_http,
            database: raw.keys.database,
            domain: domain.clone(),
            tls: key_tls,
            sweep_every: Duration::from_secs(raw.keys.sweep_secs.unwrap_or(60)),
            rate_per_sec: ServiceConfig::default().rate_per_sec,
            rate_burst: ServiceConfig::default().rate_burst,
            http: key_http_limits,
        },
        lists: ListDaemonConfig {
            data_dir: data_dir.join("lists"),
            database: raw.lists.database,
            smtp_listen: smtp,
            http_listen: list_http,
            smtp: SmtpConfig {
                hostname: domain,
                ..SmtpConfig::default()
            },
            smtp_connections,
            http: list_http_limits,
            tls: list_tls,
            delivery,
            bounces,
        },
        key_server,
        data_dir,
    })
}

/// A server's HTTP limits from its config section, the defaults for what it leaves out.
fn http_limits(
    section: &str,
    header_timeout_secs: Option<u64>,
    total: Option<usize>,
    per_client: Option<usize>,
    problems: &mut Vec<String>,
) -> HttpLimits {
    if header_timeout_secs == Some(0) || total == Some(0) || per_client == Some(0) {
        problems.push(format!(
            "{section}.http_header_timeout_secs, {section}.max_http_connections and \
             {section}.max_http_connections_per_client must be at least 1"
        ));
    }
    let defaults = HttpLimits::default();
    HttpLimits {
        header_read_timeout: header_timeout_secs
            .map_or(defaults.header_read_timeout, Duration::from_secs),
        connections: ConnectionCaps {
            total: total.unwrap_or(defaults.connections.total),
            per_client: per_client.unwrap_or(defaults.connections.per_client),
        },
    }
}

pub async fn run(which: Option<Which>, flags: ServeFlags) -> anyhow::Result<()> {
    hushlist_http::init_logs(flags.log_json);
    let mut settings = settings(flags)?;
    if which.is_none() {
        // One operator holds both servers: one admin token creates lists on both.
        shared_admin_token(&settings.data_dir)?;
    }
    let key_server = match which {
        Some(Which::Lists) => None,
        _ => {
            let running = keys::start(settings.keys).await?;
            hushlist_http::announce(&format!(
                "key server on {} (admin token in {})",
                running.url,
                running.admin_token_file.display()
            ));
            Some(running)
        }
    };
    let list_server = match which {
        Some(Which::Keys) => None,
        _ => {
            let access = match (&key_server, settings.key_server) {
                (Some(running), _) => {
                    Some((running.url.clone(), running.grants_token_file.clone()))
                }
                (None, configured) => configured,
            };
            if let Some((url, file)) = access {
                let grants_token = std::fs::read_to_string(&file)
                    .with_context(|| {
                        format!("reading the key server's grants token {}", file.display())
                    })?
                    .trim()
                    .to_owned();
                settings.lists.delivery.key_server = Some(KeyServerAccess { url, grants_token });
            }
            let running = lists::start(settings.lists).await?;
            hushlist_http::announce(&format!(
                "list server on {}, SMTP {} (admin token in {})",
                running.url,
                running.smtp_address,
                running.admin_token_file.display()
            ));
            Some(running)
        }
    };
    let mut list_server = list_server;
    let outcome = {
        let key_serving = async {
            match key_server {
                Some(running) => running.serving.await,
                None => std::future::pending().await,
            }
        };
        let list_serving = async {
            match list_server.as_mut() {
                Some(running) => (&mut running.serving).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            served = key_serving => served.context("the key server stopped")?.context("the key server failed"),
            served = list_serving => served.context("the list server stopped")?.context("the list server failed"),
            _ = tokio::signal::ctrl_c() => Ok(()),
        }
    };
    if let Some(running) = list_server {
        running.stop().await;
    }
    outcome
}

/// Writes `DATA/admin.token` (created on first start) as both servers' admin token, unless
/// a server already has its own.
pub(crate) fn shared_admin_token(data_dir: &Path) -> anyhow::Result<()> {
    hushlist_http::files::private_data_dir(data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;
    let token = hushlist_http::tokens::load_or_create(data_dir, "admin.token")
        .with_context(|| format!("creating {}", data_dir.join("admin.token").display()))?;
    for server in ["keys", "lists"] {
        let dir = data_dir.join(server);
        hushlist_http::files::private_data_dir(&dir)
            .with_context(|| format!("creating {}", dir.display()))?;
        hushlist_http::tokens::store_if_absent(&dir, "admin.token", &token)
            .with_context(|| format!("writing {}", dir.join("admin.token").display()))?;
    }
    Ok(())
}
