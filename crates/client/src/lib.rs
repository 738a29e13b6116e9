//! The client side of hushlist: the member's home directory with their identity and lists,
//! talking to the servers, sending and opening posts. The `hushlist` command is a thin layer
//! over this crate.

pub mod addressing;
pub mod archive;
pub mod audits;
pub mod delivery;
pub mod joins;
pub mod lists;
pub mod pins;
pub mod posts;
pub mod rosters;
mod seen;

pub use hushlist_remote as remote;

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use hushlist_core::{Address, Cert, IdentityError, SecretIdentity};
use rand::{CryptoRng, Rng};

#[derive(Debug, thiserror::Error)]
pub enum HomeError {
    #[error(
        "no identity in {0}; create one with `hushlist init --email ADDRESS` or import a gpg key with `hushlist init --import FILE`"
    )]
    NoIdentity(PathBuf),
    #[error(
        "{0} already holds an identity; use another --home, or remove it if you mean to replace it"
    )]
    IdentityExists(PathBuf),
    #[error("{0} is not a mail address; give one like alice@example.org")]
    BadAddress(String),
    #[error(
        "the key in {path} is locked; put its passphrase in HUSHLIST_PASSPHRASE (or the variable --passphrase-env names)"
    )]
    Locked { path: PathBuf },
    #[error("the key in {path} is unusable")]
    Key {
        path: PathBuf,
        source: IdentityError,
    },
    #[error(
        "{0} is not a list this home knows; add it with `hushlist list create` (owners) or `hushlist list use`"
    )]
    UnknownList(Address),
    #[error("{path} is not a valid list file: {detail}")]
    BadListFile { path: PathBuf, detail: String },
    #[error(
        "{path} is not a valid record of an audit head this home saw: {detail}; move it aside (it may be evidence) to start again from what the key server shows now"
    )]
    BadAuditFile { path: PathBuf, detail: String },
    #[error("cannot read or write {path}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn key_error(path: &Path, source: IdentityError) -> HomeError {
    match source {
        IdentityError::Locked { .. } => HomeError::Locked {
            path: path.to_owned(),
        },
        source => HomeError::Key {
            path: path.to_owned(),
            source,
        },
    }
}

/// A client's state directory (`$HUSHLIST_HOME`, `--home`, or the platform config dir).
#[derive(Debug, Clone)]
pub struct Home {
    dir: PathBuf,
}

impl Home {
    pub fn at(dir: impl Into<PathBuf>) -> Self {
        Home { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The member's secret key, armored, readable by the owner only.
    pub fn identity_path(&self) -> PathBuf {
        self.dir.join("identity.asc")
    }

    /// Creates a new Ed25519/Cv25519 identity for `address` (optionally `Name <address>`).
    pub fn init_generate<R: Rng + CryptoRng>(
        &self,
        rng: R,
        address: &str,
        name: Option<&str>,
    ) -> Result<SecretIdentity, HomeError> {
        let address =
            Address::parse(address).map_err(|_| HomeError::BadAddress(address.to_owned()))?;
        let user_id = match name {
            Some(name) => format!("{name} <{address}>"),
            None => address.to_string(),
        };
        self.refuse_overwrite()?;
        let identity =
            SecretIdentity::generate(rng, &user_id).map_err(|source| HomeError::Key {
                path: self.identity_path(),
                source,
            })?;
        self.store(&identity)?;
        Ok(identity)
    }

    /// Imports a secret key exported by `gpg --export-secret-keys` (armored or binary).
    pub fn init_import(
        &self,
        key_file: &Path,
        passphrase: &str,
    ) -> Result<SecretIdentity, HomeError> {
        self.refuse_overwrite()?;
        let data = fs::read(key_file).map_err(|source| HomeError::Io {
            path: key_file.to_owned(),
            source,
        })?;
        let identity =
            SecretIdentity::from_bytes(&data, passphrase).map_err(|e| key_error(key_file, e))?;
        self.store(&identity)?;
        Ok(identity)
    }

    pub fn load_identity(&self, passphrase: &str) -> Result<SecretIdentity, HomeError> {
        let path = self.identity_path();
        let data = match fs::read(&path) {
            Ok(data) => data,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(HomeError::NoIdentity(self.dir.clone()));
            }
            Err(source) => return Err(HomeError::Io { path, source }),
        };
        SecretIdentity::from_bytes(&data, passphrase).map_err(|e| key_error(&path, e))
    }

    pub fn load_cert(&self, passphrase: &str) -> Result<Cert, HomeError> {
        Ok(self.load_identity(passphrase)?.cert().clone())
    }

    fn refuse_overwrite(&self) -> Result<(), HomeError> {
        if self.identity_path().exists() {
            return Err(HomeError::IdentityExists(self.identity_path()));
        }
        Ok(())
    }

    /// Writes the key with mode 0600, created fresh so an existing file is never truncated.
    fn store(&self, identity: &SecretIdentity) -> Result<(), HomeError> {
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| HomeError::Io { path, source }
        };
        private_dir(&self.dir).map_err(io(&self.dir))?;
        let path = self.identity_path();
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(io(&path))?;
        file.write_all(identity.to_armored_secret().as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(io(&path))
    }
}

/// Writes `path` (a file in `dir`) whole: a temporary file (0600, synced) renamed over the old
/// one, so a crash leaves either version, never half of one.
pub(crate) fn write_private_file(dir: &Path, path: &Path, bytes: &[u8]) -> Result<(), HomeError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| HomeError::Io { path, source }
    };
    private_dir(dir).map_err(io(dir))?;
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let partial = dir.join(format!(".{name}.part"));
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&partial)
        .map_err(io(&partial))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(io(&partial))?;
    fs::rename(&partial, path).map_err(io(path))?;
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir))
}

/// Creates `dir` (and any missing parent) with mode 0700, or tightens an existing one that
/// group or others may enter: a home holds the member's secret key.
pub(crate) fn private_dir(dir: &Path) -> std::io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let mode = fs::metadata(dir)?.permissions().mode();
    if mode & 0o077 != 0 {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {

    use rand::rngs::OsRng;

    use super::*;

    #[test]
    fn an_identity_is_created_once_stored_private_and_loaded_back() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::at(dir.path().join("home"));
        assert!(matches!(
            home.load_identity(""),
            Err(HomeError::NoIdentity(_))
        ));
        let made = home
            .init_generate(OsRng, "alice@example.org", Some("Alice"))
            .unwrap();
        let mode = fs::metadata(home.identity_path())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let mode = fs::metadata(home.dir()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        let loaded = home.load_identity("").unwrap();
        assert_eq!(loaded.fingerprint(), made.fingerprint());
        assert_eq!(loaded.cert().user_ids(), ["Alice <alice@example.org>"]);
        assert!(matches!(
            home.init_generate(OsRng, "alice@example.org", None),
            Err(HomeError::IdentityExists(_))
        ));
        assert!(matches!(
            Home::at(dir.path().join("other")).init_generate(OsRng, "not-an-address", None),
            Err(HomeError::BadAddress(_))
        ));
    }
}
