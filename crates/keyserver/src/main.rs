//! `hushlist-keyserver`: runs the key server over its data directory. Thin: it reads flags,
//! loads secrets, and hands a listener to the library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use hushlist_keyserver::master::{MASTER_KEY_ENV, MasterKey};
use hushlist_keyserver::{KeyServer, ServiceConfig, router};
use hushlist_store::Store;
use rand::rngs::OsRng;

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
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if args.log_json {
        logs.json().init();
    } else {
        logs.init();
    }
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating data directory {}", args.data_dir.display()))?;
    let master = MasterKey::load_or_create(
        OsRng,
        &args.data_dir,
        std::env::var(MASTER_KEY_ENV).ok().as_deref(),
    )
    .context("loading the master key")?;
    let admin_token = hushlist_http::tokens::load_or_create(&args.data_dir, "admin.token")?;
    let grants_token = hushlist_http::tokens::load_or_create(&args.data_dir, "grants.token")?;
    let database = args
        .database
        .unwrap_or_else(|| format!("sqlite://{}", args.data_dir.join("keyserver.db").display()));
    let store = Store::open(&database)
        .await
        .with_context(|| format!("opening {database}"))?;
    let config = ServiceConfig {
        admin_token,
        grants_token,
        ..ServiceConfig::default()
    };
    let user_id = format!("hushlist key server <keys@{}>", args.domain);
    let server = Arc::new(KeyServer::start(store, master, config, &user_id).await?);
    tracing::info!(
        fingerprint = %server.server_key().fingerprint,
        admin_token_file = %args.data_dir.join("admin.token").display(),
        "key server ready"
    );

    let sweeper = server.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(args.sweep_secs.max(1)));
        loop {
            tick.tick().await;
            if let Err(e) = sweeper.expire_due().await {
                tracing::warn!(error = %e, "expiry sweep failed");
            }
        }
    });

    let listener = std::net::TcpListener::bind(args.listen)
        .with_context(|| format!("binding {}", args.listen))?;
    listener.set_nonblocking(true)?;
    let local = listener.local_addr()?;
    let app = router(server);
    match (args.tls_cert, args.tls_key) {
        (Some(cert), Some(key)) => {
            let tls = axum_server::tls_rustls::RustlsConfig::from_pem_file(&cert, &key)
                .await
                .with_context(|| {
                    format!(
                        "loading TLS certificate {} and key {}",
                        cert.display(),
                        key.display()
                    )
                })?;
            let handle = axum_server::Handle::new();
            let on_signal = handle.clone();
            tokio::spawn(async move {
                let _ = tokio::signal::ctrl_c().await;
                on_signal.graceful_shutdown(Some(Duration::from_secs(10)));
            });
            println!("listening on https://{local}");
            axum_server::from_tcp_rustls(listener, tls)?
                .handle(handle)
                .serve(app.into_make_service())
                .await?;
        }
        _ => {
            println!("listening on http://{local}");
            axum::serve(tokio::net::TcpListener::from_std(listener)?, app)
                .with_graceful_shutdown(async {
                    let _ = tokio::signal::ctrl_c().await;
                })
                .await?;
        }
    }
    Ok(())
}
