//! The master key that encrypts session keys and the server's own secret key at rest. It lives
//! outside the database (an environment variable or a file in the data dir), so a dump of the
//! database alone holds no usable key.

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;

use aes_gcm::aead::{Aead as _, KeyInit as _, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use rand::{CryptoRng, Rng};
use sha2::{Digest as _, Sha256};
use zeroize::Zeroizing;

/// Environment variable that may hold the master key (64 hex digits) instead of the file.
pub const MASTER_KEY_ENV: &str = "HUSHLIST_MASTER_KEY";
pub const MASTER_KEY_FILE: &str = "master.key";
/// Retired master keys, still used to read rows sealed under them until the sweep has
/// re-sealed those under the current key: comma-separated hex in this variable, or one a
/// line in the file of this name in the data directory.
pub const PREVIOUS_KEYS_ENV: &str = "HUSHLIST_MASTER_KEY_PREVIOUS";
pub const PREVIOUS_KEYS_FILE: &str = "master.key.previous";

#[derive(Debug, thiserror::Error)]
pub enum MasterKeyError {
    #[error("the master key must be 64 hex digits ({0})")]
    Malformed(&'static str),
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "data was sealed under master key {found}, but this server has {ours}; give the old key in HUSHLIST_MASTER_KEY_PREVIOUS to read it"
    )]
    WrongKey { found: String, ours: String },
    #[error("sealed data failed its integrity check (corrupted or tampered)")]
    Corrupt,
}

pub struct MasterKey {
    id: String,
    cipher: Aes256Gcm,
    /// Retired keys by id: they open, never seal.
    previous: Vec<(String, Aes256Gcm)>,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MasterKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// Ciphertext with the nonce and the id of the master key that made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedBlob {
    pub master_key_id: String,
    pub nonce: Vec<u8>,
    pub ciphertext: Vec<u8>,
}

impl MasterKey {
    pub fn from_bytes(bytes: &[u8; 32]) -> Self {
        let id = hex::encode(&Sha256::digest(bytes)[..8]);
        MasterKey {
            id,
            cipher: Aes256Gcm::new(bytes.into()),
            previous: Vec::new(),
        }
    }

    /// Adds retired keys that may still open what they sealed (rotation).
    pub fn with_previous(mut self, previous: Vec<MasterKey>) -> Self {
        self.previous.extend(
            previous
                .into_iter()
                .filter(|key| key.id != self.id)
                .map(|key| (key.id, key.cipher)),
        );
        self
    }

    /// Parses retired keys written as hex, separated by commas or line ends.
    pub fn parse_previous(text: &str) -> Result<Vec<MasterKey>, MasterKeyError> {
        text.split([',', '\n'])
            .map(str::trim)
            .filter(|key| !key.is_empty())
            .map(Self::from_hex)
            .collect()
    }

    /// Retired keys from `HUSHLIST_MASTER_KEY_PREVIOUS` if set, else from
    /// `DATA_DIR/master.key.previous` if it exists.
    pub fn load_previous(
        data_dir: &Path,
        from_env: Option<&str>,
    ) -> Result<Vec<MasterKey>, MasterKeyError> {
        if let Some(text) = from_env {
            return Self::parse_previous(text);
        }
        let path = data_dir.join(PREVIOUS_KEYS_FILE);
        match fs::read_to_string(&path) {
            Ok(text) => Self::parse_previous(&text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(source) => Err(MasterKeyError::Io {
                path: path.display().to_string(),
                source,
            }),
        }
    }

    pub fn from_hex(text: &str) -> Result<Self, MasterKeyError> {
        let bytes = Zeroizing::new(
            hex::decode(text.trim()).map_err(|_| MasterKeyError::Malformed("not hex"))?,
        );
        let array: &[u8; 32] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| MasterKeyError::Malformed("wrong length"))?;
        Ok(Self::from_bytes(array))
    }

    /// Takes the key from `HUSHLIST_MASTER_KEY` if set, else from `DATA_DIR/master.key`,
    /// creating that file (mode 0600) with a fresh random key on first start.
    pub fn load_or_create<R: Rng + CryptoRng>(
        mut rng: R,
        data_dir: &Path,
        from_env: Option<&str>,
    ) -> Result<Self, MasterKeyError> {
        if let Some(text) = from_env {
            return Self::from_hex(text);
        }
        let path = data_dir.join(MASTER_KEY_FILE);
        let io = |source| MasterKeyError::Io {
            path: path.display().to_string(),
            source,
        };
        match fs::read_to_string(&path) {
            Ok(text) => Self::from_hex(&text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut bytes = Zeroizing::new([0u8; 32]);
                rng.fill_bytes(bytes.as_mut());
                let mut file = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&path)
                    .map_err(io)?;
                let text = Zeroizing::new(hex::encode(bytes.as_ref()));
                file.write_all(text.as_bytes())
                    .and_then(|()| file.sync_all())
                    .map_err(io)?;
                Ok(Self::from_bytes(&bytes))
            }
            Err(e) => Err(io(e)),
        }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// Encrypts `plaintext`, bound to `context` (for example the key id) so a sealed value
    /// cannot be moved to another row.
    pub fn seal<R: Rng + CryptoRng>(
        &self,
        mut rng: R,
        plaintext: &[u8],
        context: &[u8],
    ) -> SealedBlob {
        let mut nonce = [0u8; 12];
        rng.fill_bytes(&mut nonce);
        let ciphertext = self
            .cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: context,
                },
            )
            .expect("AES-GCM encryption of in-memory data cannot fail");
        SealedBlob {
            master_key_id: self.id.clone(),
            nonce: nonce.to_vec(),
            ciphertext,
        }
    }

    pub fn open(
        &self,
        sealed: &SealedBlob,
        context: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, MasterKeyError> {
        let cipher = if sealed.master_key_id == self.id {
            &self.cipher
        } else {
            match self
                .previous
                .iter()
                .find(|(id, _)| *id == sealed.master_key_id)
            {
                Some((_, cipher)) => cipher,
                None => {
                    return Err(MasterKeyError::WrongKey {
                        found: sealed.master_key_id.clone(),
                        ours: self.id.clone(),
                    });
                }
            }
        };
        if sealed.nonce.len() != 12 {
            return Err(MasterKeyError::Corrupt);
        }
        cipher
            .decrypt(
                Nonce::from_slice(&sealed.nonce),
                Payload {
                    msg: &sealed.ciphertext,
                    aad: context,
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| MasterKeyError::Corrupt)
    }
}

#[cfg(test)]
mod tests {
    use rand::rngs::OsRng;

    use super::*;

    #[test]
    fn sealed_values_open_only_with_the_same_key_and_context() {
        let key = MasterKey::from_bytes(&[7; 32]);
        let sealed = key.seal(OsRng, b"session key", b"k1");
        assert_eq!(key.open(&sealed, b"k1").unwrap().as_slice(), b"session key");
        assert!(matches!(
            key.open(&sealed, b"k2"),
            Err(MasterKeyError::Corrupt)
        ));
        let other = MasterKey::from_bytes(&[8; 32]);
        assert!(matches!(
            other.open(&sealed, b"k1"),
            Err(MasterKeyError::WrongKey { .. })
        ));
    }

    #[test]
    fn the_key_file_is_created_once_with_private_permissions() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let first = MasterKey::load_or_create(OsRng, dir.path(), None).unwrap();
        let again = MasterKey::load_or_create(OsRng, dir.path(), None).unwrap();
        assert_eq!(first.id(), again.id());
        let mode = fs::metadata(dir.path().join(MASTER_KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(MasterKey::load_or_create(OsRng, dir.path(), Some("abcd")).is_err());
    }

    /// Invariant 6: the master key and the service's bearer tokens never reach a log
    /// through `Debug`.
    #[test]
    fn secrets_do_not_show_through_debug() {
        let key = MasterKey::from_bytes(&[0xA5; 32])
            .with_previous(vec![MasterKey::from_bytes(&[0x5A; 32])]);
        let shown = format!("{key:?}");
        assert_eq!(shown, format!("MasterKey {{ id: {:?}, .. }}", key.id()));

        let config = crate::service::ServiceConfig {
            admin_token: "admin-token-0123456789".into(),
            grants_token: "grants-token-0123456789".into(),
            ..Default::default()
        };
        let shown = format!("{config:?}");
        assert!(!shown.contains("token-0123456789"), "{shown}");
        assert!(shown.contains("max_grants_per_call: 10000"), "{shown}");
    }
}
