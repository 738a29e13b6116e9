//! Running the list server as a service: the data directory (database, tokens), the SMTP and
//! HTTP listeners and the delivery workers. Used by the `hushlist-listserver` binary and by
//! `hushlist serve`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hushlist_core::bounce::BouncePolicy;
use hushlist_core::listmail::UnsubscribeKey;
use hushlist_http::connections::{ConnectionCaps, HttpLimits};
use hushlist_http::rosters::spawn_roster_loading;
use hushlist_store::ListStore;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::delivery::{Deliverer, DeliveryConfig};
use crate::http::router;
use crate::roster_watch::RosterWatch;
use crate::service::ListServer;
use crate::smtp::{SmtpConfig, TlsSetupError, serve, tls_acceptor};

/// Where and how the list server runs.
#[derive(Debug, Clone)]
pub struct ListDaemonConfig {
    /// Database and tokens live here.
    pub data_dir: PathBuf,
    /// Database URL; SQLite in the data directory when `None`.
    pub database: Option<String>,
    pub smtp_listen: SocketAddr,
    pub http_listen: SocketAddr,
    pub smtp: SmtpConfig,
    /// SMTP sessions held at once, in all and from one client address.
    pub smtp_connections: ConnectionCaps,
    pub http: HttpLimits,
    /// PEM certificate chain and key to offer STARTTLS with.
    pub tls: Option<(PathBuf, PathBuf)>,
    pub delivery: DeliveryConfig,
    /// When bounces add up to a probe and a suspension.
    pub bounces: BouncePolicy,
}

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("opening {url}: {source}")]
    Store {
        url: String,
        source: hushlist_store::StoreError,
    },
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Tls(#[from] TlsSetupError),
    #[error("cannot listen on {address}: {source}")]
    Bind {
        address: SocketAddr,
        source: std::io::Error,
    },
}

/// A started list server.
pub struct RunningListServer {
    pub smtp_address: SocketAddr,
    /// Base URL of the HTTP interface.
    pub url: String,
    pub admin_token_file: PathBuf,
    /// Ends when a listener stops.
    pub serving: JoinHandle<std::io::Result<()>>,
    stop_workers: watch::Sender<bool>,
    workers: Vec<JoinHandle<()>>,
}

impl RunningListServer {
    /// Lets the delivery workers finish their current transaction and stop.
    pub async fn stop(self) {
        let _ = self.stop_workers.send(true);
        for worker in self.workers {
            let _ = worker.await;
        }
    }
}

/// How often spent request nonces and old rate-limit windows are pruned: a nonce lives
/// five minutes.
const PRUNE_REQUEST_RECORDS_EVERY: Duration = Duration::from_secs(300);

/// Prunes request nonces and rate-limit windows at start and then every
/// [`PRUNE_REQUEST_RECORDS_EVERY`] until `shutdown` turns true.
fn spawn_request_record_pruning(
    server: Arc<ListServer>,
    mut shutdown: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(PRUNE_REQUEST_RECORDS_EVERY);
        while !*shutdown.borrow() {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => continue,
            }
            if let Err(e) = server.prune_request_records().await {
                tracing::warn!(error = %e, "pruning request nonces and rate-limit windows failed");
            }
        }
    })
}

/// Opens the data directory and starts serving; returns once both listeners are bound.
pub async fn start(config: ListDaemonConfig) -> Result<RunningListServer, DaemonError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| DaemonError::Io { path, source }
    };
    config.delivery.validate().map_err(DaemonError::Config)?;
    hushlist_http::files::private_data_dir(&config.data_dir).map_err(io(&config.data_dir))?;
    let admin_token_file = config.data_dir.join("admin.token");
    let admin_token = hushlist_http::tokens::load_or_create(&config.data_dir, "admin.token")
        .map_err(io(&admin_token_file))?;
    let unsubscribe_secret =
        hushlist_http::tokens::load_or_create(&config.data_dir, "unsubscribe.key")
            .map_err(io(&config.data_dir.join("unsubscribe.key")))?;
    let url = config.database.clone().unwrap_or_else(|| {
        format!(
            "sqlite://{}",
            config.data_dir.join("listserver.db").display()
        )
    });
    let store = ListStore::open(&url)
        .await
        .map_err(|source| DaemonError::Store {
            url: hushlist_store::without_password(&url),
            source,
        })?;
    let mut server = ListServer::new(store)
        .with_admin_token(admin_token)
        .with_unsubscribe_key(UnsubscribeKey::new(unsubscribe_secret.as_bytes()))
        .with_bounce_policy(config.bounces.clone());
    if let Some(key_server) = &config.delivery.key_server {
        server = server.with_key_server(key_server.url.clone());
    }
    let server = Arc::new(server);
    server
        .metrics
        .count_queue(server.store())
        .await
        .map_err(|source| DaemonError::Store {
            url: hushlist_store::without_password(&url),
            source,
        })?;
    let tls = match &config.tls {
        Some((cert, key)) => Some(tls_acceptor(cert, key)?),
        None => None,
    };
    let bind = |address: SocketAddr| move |source| DaemonError::Bind { address, source };
    let smtp_listener = tokio::net::TcpListener::bind(config.smtp_listen)
        .await
        .map_err(bind(config.smtp_listen))?;
    let http_listener = tokio::net::TcpListener::bind(config.http_listen)
        .await
        .map_err(bind(config.http_listen))?;
    let smtp_address = smtp_listener
        .local_addr()
        .map_err(bind(config.smtp_listen))?;
    let url = format!(
        "http://{}",
        http_listener
            .local_addr()
            .map_err(bind(config.http_listen))?
    );

    spawn_roster_loading(server.clone());
    let (stop_workers, stopped) = watch::channel(false);
    let mut workers = match &config.delivery.key_server {
        Some(key_server) => vec![
            RosterWatch::new(&server, key_server, config.delivery.roster_check_every)
                .spawn(stopped.clone()),
        ],
        None => Vec::new(),
    };
    workers.push(spawn_request_record_pruning(
        server.clone(),
        stopped.clone(),
    ));
    workers.extend(Deliverer::new(&server, config.delivery).spawn(stopped));
    let app = router(server.clone());
    let smtp = Arc::new(config.smtp);
    let smtp_connections = config.smtp_connections;
    let serving = tokio::spawn(async move {
        tokio::select! {
            served = serve(smtp_listener, smtp, server, smtp_connections, tls, std::future::pending()) => served,
            served = hushlist_http::connections::serve(http_listener, None, app, config.http) => served,
        }
    });
    tracing::info!(%smtp_address, %url, admin_token_file = %admin_token_file.display(), "list server ready");
    Ok(RunningListServer {
        smtp_address,
        url,
        admin_token_file,
        serving,
        stop_workers,
        workers,
    })
}
