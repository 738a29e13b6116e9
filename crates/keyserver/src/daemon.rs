//! Running the key server as a service: the data directory (database, master key, tokens),
//! the expiry sweep and the HTTP(S) listener (within the limits of
//! `hushlist_http::connections`). Used by the `hushlist-keyserver` binary and by
//! `hushlist serve`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hushlist_http::connections::{HttpLimits, serve};
use hushlist_http::rosters::spawn_roster_loading;
use hushlist_http::tls::{TlsSetupError, tls_acceptor};
use hushlist_store::KeyStore;
use rand::rngs::OsRng;
use tokio::task::JoinHandle;

use crate::master::{MASTER_KEY_ENV, MasterKey, MasterKeyError, PREVIOUS_KEYS_ENV};
use crate::{ApiError, KeyServer, ServiceConfig, router};

/// Where and how the key server runs.
#[derive(Debug, Clone)]
pub struct KeyDaemonConfig {
    /// Database, master key and tokens live here.
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    /// Database URL; SQLite in the data directory when `None`.
    pub database: Option<String>,
    /// Domain for the server's own OpenPGP user id.
    pub domain: String,
    /// PEM certificate chain and key to serve HTTPS with.
    pub tls: Option<(PathBuf, PathBuf)>,
    pub sweep_every: Duration,
    /// Signed requests allowed per identity: on average per second, and at once.
    pub rate_per_sec: f64,
    pub rate_burst: f64,
    pub http: HttpLimits,
}

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the master key: {0}")]
    MasterKey(#[from] MasterKeyError),
    #[error("opening {url}: {source}")]
    Store {
        url: String,
        source: hushlist_store::StoreError,
    },
    #[error("starting the service: {0}")]
    Service(ApiError),
    #[error("cannot listen on {address}: {source}")]
    Bind {
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Tls(#[from] TlsSetupError),
}

/// A started key server.
pub struct RunningKeyServer {
    /// Base URL it answers on.
    pub url: String,
    pub admin_token_file: PathBuf,
    pub grants_token_file: PathBuf,
    pub fingerprint: String,
    /// Ends when the HTTP service stops.
    pub serving: JoinHandle<std::io::Result<()>>,
}

/// Opens the data directory and starts serving; returns once the listener is bound.
pub async fn start(config: KeyDaemonConfig) -> Result<RunningKeyServer, DaemonError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| DaemonError::Io { path, source }
    };
    hushlist_http::files::private_data_dir(&config.data_dir).map_err(io(&config.data_dir))?;
    let master = MasterKey::load_or_create(
        OsRng,
        &config.data_dir,
        std::env::var(MASTER_KEY_ENV).ok().as_deref(),
    )?
    .with_previous(MasterKey::load_previous(
        &config.data_dir,
        std::env::var(PREVIOUS_KEYS_ENV).ok().as_deref(),
    )?);
    let admin_token_file = config.data_dir.join("admin.token");
    let grants_token_file = config.data_dir.join("grants.token");
    let admin_token = hushlist_http::tokens::load_or_create(&config.data_dir, "admin.token")
        .map_err(io(&admin_token_file))?;
    let grants_token = hushlist_http::tokens::load_or_create(&config.data_dir, "grants.token")
        .map_err(io(&grants_token_file))?;
    let url = config.database.clone().unwrap_or_else(|| {
        format!(
            "sqlite://{}",
            config.data_dir.join("keyserver.db").display()
        )
    });
    let store = KeyStore::open(&url)
        .await
        .map_err(|source| DaemonError::Store {
            url: hushlist_store::without_password(&url),
            source,
        })?;
    let service = ServiceConfig {
        admin_token,
        grants_token,
        rate_per_sec: config.rate_per_sec,
        rate_burst: config.rate_burst,
        ..ServiceConfig::default()
    };
    let user_id = format!("hushlist key server <keys@{}>", config.domain);
    let server = Arc::new(
        KeyServer::start(store, master, service, &user_id)
            .await
            .map_err(DaemonError::Service)?,
    );
    let fingerprint = server.server_key().fingerprint.to_string();

    spawn_roster_loading(server.clone());
    let sweeper = server.clone();
    let every = config.sweep_every.max(Duration::from_secs(1));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            if let Err(e) = sweeper.expire_due().await {
                tracing::warn!(error = %e, "expiry sweep failed");
            }
            match sweeper.reseal_under_current_master(1000).await {
                Ok(0) => {}
                Ok(n) => {
                    tracing::info!(resealed = n, "re-sealed keys under the current master key")
                }
                Err(e) => {
                    tracing::warn!(error = %e, "re-sealing under the current master key failed")
                }
            }
        }
    });

    let tls = match &config.tls {
        Some((cert, key)) => Some(tls_acceptor(cert, key)?),
        None => None,
    };
    let bind = |source| DaemonError::Bind {
        address: config.listen,
        source,
    };
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(bind)?;
    let local = listener.local_addr().map_err(bind)?;
    let url = match tls {
        Some(_) => format!("https://{local}"),
        None => format!("http://{local}"),
    };
    let serving = tokio::spawn(serve(listener, tls, router(server), config.http));
    tracing::info!(%url, %fingerprint, admin_token_file = %admin_token_file.display(), "key server ready");
    Ok(RunningKeyServer {
        url,
        admin_token_file,
        grants_token_file,
        fingerprint,
        serving,
    })
}
