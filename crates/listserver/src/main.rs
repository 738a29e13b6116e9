//! `hushlist-listserver`: runs the list server over its data directory: SMTP in, fan-out
//! workers to the relay, and the HTTP interface. Thin: it reads flags (the list server's
//! options, `hushlist_listserver::options`) and wires the library.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Parser;
use hushlist_listserver::daemon;
use hushlist_listserver::options::ListOptions;

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
    /// Host name in the SMTP greeting and in EHLO to the relay.
    #[arg(long, default_value = "localhost")]
    hostname: String,
    /// Write logs as JSON lines (for log collectors) instead of text.
    #[arg(long)]
    log_json: bool,
    #[command(flatten)]
    options: ListOptions,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    hushlist_http::init_logs(args.log_json);
    let mut running = daemon::start(args.options.check(args.data_dir, &args.hostname)?).await?;
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
