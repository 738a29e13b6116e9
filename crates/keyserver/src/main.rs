//! `hushlist-keyserver`: runs the key server over its data directory. Thin: it reads flags
//! (the key server's options, `hushlist_keyserver::options`) and hands them to
//! `hushlist_keyserver::daemon`.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Parser;
use hushlist_keyserver::daemon;
use hushlist_keyserver::options::KeyOptions;

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
    /// Domain for the server's own OpenPGP user id.
    #[arg(long, default_value = "localhost.localdomain")]
    domain: String,
    /// Write logs as JSON lines (for log collectors) instead of text.
    #[arg(long)]
    log_json: bool,
    #[command(flatten)]
    options: KeyOptions,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    hushlist_http::init_logs(args.log_json);
    let running = daemon::start(args.options.check(args.data_dir, &args.domain)?).await?;
    hushlist_http::announce(&format!("listening on {}", running.url));
    tokio::select! {
        served = running.serving => served.context("the HTTP service stopped")??,
        _ = tokio::signal::ctrl_c() => {}
    }
    Ok(())
}
