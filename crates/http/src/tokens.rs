//! Bearer tokens kept in files of the data directory, created on first start.

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;

use rand::RngCore as _;
use rand::rngs::OsRng;

/// Reads `DATA_DIR/NAME`, or creates it (mode 0600) holding a fresh 256-bit token.
pub fn load_or_create(data_dir: &Path, name: &str) -> std::io::Result<String> {
    let path = data_dir.join(name);
    match fs::read_to_string(&path) {
        Ok(token) => Ok(token.trim().to_owned()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut bytes = [0u8; 32];
            OsRng.fill_bytes(&mut bytes);
            let token = hex::encode(bytes);
            write_new(&path, &token)?;
            Ok(token)
        }
        Err(e) => Err(e),
    }
}

/// Writes `token` to `DATA_DIR/NAME` (mode 0600) unless that file exists already.
pub fn store_if_absent(data_dir: &Path, name: &str, token: &str) -> std::io::Result<()> {
    match write_new(&data_dir.join(name), token) {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        other => other,
    }
}

fn write_new(path: &Path, token: &str) -> std::io::Result<()> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(token.as_bytes())?;
    file.sync_all()
}
