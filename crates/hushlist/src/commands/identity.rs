//! `hushlist init` and `hushlist key`: this home's identity.

use std::io::Write as _;
use std::path::Path;

use rand::rngs::OsRng;

use crate::context::{Context, passphrase};

/// `init`: a new identity for `email` (named `name`), or the secret key in `import`
/// unlocked with the passphrase in the environment variable `passphrase_env`.
pub fn init(
    cx: &Context,
    email: Option<&str>,
    name: Option<&str>,
    import: Option<&Path>,
    passphrase_env: &str,
) -> anyhow::Result<()> {
    let identity = match (email, import) {
        (Some(email), None) => cx.home.init_generate(OsRng, email, name)?,
        (None, Some(file)) => {
            let passphrase = std::env::var(passphrase_env).unwrap_or_default();
            cx.home.init_import(file, &passphrase)?
        }
        _ => unreachable!("clap requires exactly one of --email and --import"),
    };
    println!(
        "identity {} stored in {}",
        identity.fingerprint(),
        cx.home.identity_path().display()
    );
    Ok(())
}

/// `key export`: the public certificate, armored or (`binary`) not.
pub fn export(cx: &Context, binary: bool) -> anyhow::Result<()> {
    let cert = cx.home.load_cert(&passphrase())?;
    let mut out = std::io::stdout().lock();
    if binary {
        out.write_all(&cert.to_binary())?;
    } else {
        out.write_all(cert.to_armored().as_bytes())?;
    }
    Ok(())
}

/// `key fingerprint`.
pub fn fingerprint(cx: &Context) -> anyhow::Result<()> {
    let cert = cx.home.load_cert(&passphrase())?;
    writeln!(std::io::stdout().lock(), "{}", cert.fingerprint())?;
    Ok(())
}
