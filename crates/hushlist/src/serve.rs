//! `hushlist serve`: both servers in one process (or one of them), from flags and an
//! optional TOML config. Each server's options are its own crate's (`KeyOptions`,
//! `ListOptions`: flags of `serve keys` / `serve lists`, the `[keys]` / `[lists]` sections);
//! what is `serve`'s is the one data directory with `keys/` and `lists/` beneath it and the one
//! domain. Flags are laid over the file, then every section that runs is checked, so every
//! problem is reported at once.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use hushlist_http::options::{OptionProblems, OptionSet as _};
use hushlist_keyserver::daemon::{self as keys, KeyDaemonConfig};
use hushlist_keyserver::options::KeyOptions;
use hushlist_listserver::daemon::{self as lists, ListDaemonConfig};
use hushlist_listserver::delivery::KeyServerAccess;
use hushlist_listserver::options::ListOptions;
use serde::Deserialize;

/// Which server to run alone, with that server's options as flags.
#[derive(clap::Subcommand)]
pub enum Which {
    /// The key server only.
    Keys(Box<KeyOptions>),
    /// The list server only (give it the key server's URL for push-mode lists).
    Lists(Box<ListOptions>),
}

/// What both servers of one installation share; each flag overrides the config file, and is
/// taken before or after `keys` / `lists`.
#[derive(clap::Args)]
pub struct SiteFlags {
    /// TOML config file: `data_dir`, `domain`, and each server's options under `[keys]` and
    /// `[lists]` (see README).
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    /// Data directory (default ./hushlist-data): `keys/` and `lists/` beneath it.
    #[arg(long, global = true)]
    pub data_dir: Option<PathBuf>,
    /// Mail domain of this installation (host name in SMTP, the key server's user id).
    #[arg(long, global = true)]
    pub domain: Option<String>,
    /// Write logs (to stderr) as JSON lines for log collectors instead of text.
    #[arg(long, global = true)]
    pub log_json: bool,
}

/// Flags of plain `serve` (both servers); each overrides the config file.
#[derive(clap::Args)]
pub struct ServeFlags {
    #[command(flatten)]
    pub site: SiteFlags,
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
}

/// The config file as written: every field optional, unknown fields refused.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    data_dir: Option<PathBuf>,
    domain: Option<String>,
    #[serde(default)]
    keys: KeyOptions,
    #[serde(default)]
    lists: ListOptions,
}

/// The checked settings: a config for each server that runs.
struct Settings {
    data_dir: PathBuf,
    keys: Option<KeyDaemonConfig>,
    lists: Option<ListDaemonConfig>,
}

/// Lays the flags over the config file and checks the sections of the servers that run,
/// reporting every problem at once.
fn settings(
    site: SiteFlags,
    keys: Option<KeyOptions>,
    lists: Option<ListOptions>,
) -> anyhow::Result<Settings> {
    let file: ConfigFile = match &site.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading config {}", path.display()))?;
            toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
        }
        None => ConfigFile::default(),
    };
    let data_dir = site
        .data_dir
        .or(file.data_dir)
        .unwrap_or_else(|| PathBuf::from("hushlist-data"));
    let domain = site
        .domain
        .or(file.domain)
        .unwrap_or_else(|| "localhost.localdomain".to_owned());
    let mut problems = Vec::new();
    if hushlist_core::Address::parse(&format!("keys@{domain}")).is_err() {
        problems.push(format!(
            "domain = {domain:?} is not a mail domain (like lists.example.org)"
        ));
    }
    let keys = keys
        .map(|flags| flags.over(file.keys).check(data_dir.join("keys"), &domain))
        .and_then(|checked| section("keys", checked, &mut problems));
    let both = keys.is_some() && lists.is_some();
    let lists = lists
        .map(|flags| {
            let mut options = flags.over(file.lists);
            if both {
                // The key server running beside it is the one the list server asks, with the
                // grants token it writes at its first start (maybe not yet there).
                options.key_server = None;
                options.grants_token_file = None;
            }
            options.check(data_dir.join("lists"), &domain)
        })
        .and_then(|checked| section("lists", checked, &mut problems));
    if !problems.is_empty() {
        anyhow::bail!(
            "the configuration has {} problem{}:\n  {}",
            problems.len(),
            if problems.len() == 1 { "" } else { "s" },
            problems.join("\n  ")
        );
    }
    Ok(Settings {
        data_dir,
        keys,
        lists,
    })
}

/// A section's checked config, or its problems, named as its TOML keys, added to `problems`.
fn section<C>(
    name: &str,
    checked: Result<C, OptionProblems>,
    problems: &mut Vec<String>,
) -> Option<C> {
    checked
        .map_err(|found| problems.extend(found.0.iter().map(|problem| problem.named(Some(name)))))
        .ok()
}

pub async fn run(which: Option<Which>, flags: ServeFlags) -> anyhow::Result<()> {
    let both = which.is_none();
    // The addresses plain `serve` takes as flags, under a server's own flags when one runs.
    let key_flags = KeyOptions {
        http: flags.key_http,
        ..KeyOptions::default()
    };
    let list_flags = ListOptions {
        http: flags.list_http,
        smtp: flags.smtp,
        relay: flags.relay,
        ..ListOptions::default()
    };
    let (keys, lists) = match which {
        None => (Some(key_flags), Some(list_flags)),
        Some(Which::Keys(options)) => (Some(options.over(key_flags)), None),
        Some(Which::Lists(options)) => (None, Some(options.over(list_flags))),
    };
    let site = flags.site;
    hushlist_http::init_logs(site.log_json);
    let settings = settings(site, keys, lists)?;
    if both {
        // One operator holds both servers: one admin token creates lists on both.
        shared_admin_token(&settings.data_dir)?;
    }
    let key_server = match settings.keys {
        None => None,
        Some(config) => {
            let running = keys::start(config).await?;
            hushlist_http::announce(&format!(
                "key server on {} (admin token in {})",
                running.url,
                running.admin_token_file.display()
            ));
            Some(running)
        }
    };
    let list_server = match settings.lists {
        None => None,
        Some(mut config) => {
            if let Some(running) = &key_server {
                let file = &running.grants_token_file;
                let grants_token = std::fs::read_to_string(file)
                    .with_context(|| {
                        format!("reading the key server's grants token {}", file.display())
                    })?
                    .trim()
                    .to_owned();
                config.delivery.key_server = Some(KeyServerAccess {
                    url: running.url.clone(),
                    grants_token,
                });
            }
            let running = lists::start(config).await?;
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
