//! What every command but `serve` and `demo` starts from: the home directory, found once,
//! and the lookups of the identity and of a list in it that the commands share.

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::Context as _;
use hushlist_client::Home;
use hushlist_client::lists::ListConfig;
use hushlist_client::posts;
use hushlist_core::{Address, SecretIdentity};

/// The home a command works in.
pub struct Context {
    pub home: Home,
}

impl Context {
    /// `--home` (or `$HUSHLIST_HOME`) if given, else the platform's config directory.
    pub fn new(explicit: Option<PathBuf>) -> anyhow::Result<Self> {
        if let Some(dir) = explicit {
            return Ok(Context {
                home: Home::at(dir),
            });
        }
        let dirs = directories::ProjectDirs::from("org", "hushlist", "hushlist").context(
            "no home directory to keep hushlist state in; pass --home DIR or set HUSHLIST_HOME",
        )?;
        Ok(Context {
            home: Home::at(dirs.config_dir()),
        })
    }

    /// This home's secret key, unlocked with `$HUSHLIST_PASSPHRASE` if it is locked.
    pub fn identity(&self) -> anyhow::Result<SecretIdentity> {
        Ok(self.home.load_identity(&passphrase())?)
    }

    /// The list this home knows by the address `name`.
    pub fn list(&self, name: &str) -> anyhow::Result<ListConfig> {
        Ok(self.home.list(&address(name)?)?)
    }

    /// This home's identity, then (if it loads) the list `name`: what most commands start
    /// with.
    pub fn identity_and_list(&self, name: &str) -> anyhow::Result<(SecretIdentity, ListConfig)> {
        let me = self.identity()?;
        Ok((me, self.list(name)?))
    }

    /// The list named by `--list`, or else the only list this home knows.
    pub fn one_list(&self, name: Option<&str>) -> anyhow::Result<ListConfig> {
        let named = name.map(address).transpose()?;
        Ok(self.home.one_list(named.as_ref())?)
    }

    /// Opens a post as `me` and prints it with its verified signer, or refuses.
    pub async fn print_opened(
        &self,
        me: &SecretIdentity,
        lists: &[ListConfig],
        raw: &[u8],
    ) -> anyhow::Result<()> {
        let shown = posts::show_post(me, &self.home, lists, raw).await?;
        std::io::stdout().lock().write_all(&shown.message)?;
        Ok(())
    }
}

pub fn passphrase() -> String {
    std::env::var("HUSHLIST_PASSPHRASE").unwrap_or_default()
}

pub fn address(text: &str) -> anyhow::Result<Address> {
    Address::parse(text).map_err(|e| anyhow::anyhow!("{e}"))
}

pub fn my_address(me: &SecretIdentity) -> anyhow::Result<Address> {
    posts::my_address(me).context("your identity names no mail address")
}

pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
