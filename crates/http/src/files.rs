//! The data directory both servers keep their database, keys and tokens in: private to the
//! user the server runs as.

use std::fs;
use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
use std::path::Path;

/// Creates `dir` (and any missing parent) with mode 0700, or tightens an existing `dir` that
/// group or others may enter to 0700. Returns whether it tightened one, for the caller to log.
pub fn private_dir(dir: &Path) -> std::io::Result<bool> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    if fs::metadata(dir)?.permissions().mode() & 0o077 == 0 {
        return Ok(false);
    }
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
    Ok(true)
}

/// [`private_dir`] for a server's data directory, logging a directory it tightened.
pub fn private_data_dir(dir: &Path) -> std::io::Result<()> {
    if private_dir(dir)? {
        tracing::warn!(
            dir = %dir.display(),
            "the data directory was open to other users; its mode is now 0700"
        );
    }
    Ok(())
}
