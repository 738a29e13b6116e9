//! The `hushlist` command. Thin glue over the client library and the core; each subcommand
//! parses its arguments, calls a library function and prints the result.

mod demo;

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use hushlist_client::Home;
use rand::rngs::OsRng;

#[derive(Parser)]
#[command(
    name = "hushlist",
    version,
    about = "End-to-end encrypted mailing lists"
)]
struct Cli {
    /// Client state directory (default: $HUSHLIST_HOME, else the platform config directory).
    #[arg(long, global = true, env = "HUSHLIST_HOME")]
    home: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create your identity, or import a secret key exported by gpg.
    Init {
        /// Mail address the new identity is for.
        #[arg(long, required_unless_present = "import", conflicts_with = "import")]
        email: Option<String>,
        /// Display name for the new identity's user id.
        #[arg(long, requires = "email")]
        name: Option<String>,
        /// Secret key file from `gpg --export-secret-keys` (armored or binary).
        #[arg(long)]
        import: Option<PathBuf>,
        /// Environment variable holding the imported key's passphrase.
        #[arg(long, requires = "import", default_value = "HUSHLIST_PASSPHRASE")]
        passphrase_env: String,
    },
    /// Show or export your public key.
    Key {
        #[command(subcommand)]
        action: KeyAction,
    },
    /// Walk through one post from sender to members, showing what each server sees.
    Demo,
}

#[derive(Subcommand)]
enum KeyAction {
    /// Print your public certificate (armored), to give to list owners.
    Export {
        /// Write binary OpenPGP instead of armor.
        #[arg(long)]
        binary: bool,
    },
    /// Print your fingerprint.
    Fingerprint,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("hushlist: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Demo => demo::run(&mut std::io::stdout().lock()),
        Command::Init {
            email,
            name,
            import,
            passphrase_env,
        } => {
            let home = home(cli.home)?;
            let identity = match (email, import) {
                (Some(email), None) => home.init_generate(OsRng, &email, name.as_deref())?,
                (None, Some(file)) => {
                    let passphrase = std::env::var(&passphrase_env).unwrap_or_default();
                    home.init_import(&file, &passphrase)?
                }
                _ => unreachable!("clap requires exactly one of --email and --import"),
            };
            println!(
                "identity {} stored in {}",
                identity.fingerprint(),
                home.identity_path().display()
            );
            Ok(())
        }
        Command::Key { action } => {
            let home = home(cli.home)?;
            let cert = home.load_cert(&passphrase())?;
            let mut out = std::io::stdout().lock();
            match action {
                KeyAction::Export { binary: true } => out.write_all(&cert.to_binary())?,
                KeyAction::Export { binary: false } => {
                    out.write_all(cert.to_armored().as_bytes())?
                }
                KeyAction::Fingerprint => writeln!(out, "{}", cert.fingerprint())?,
            }
            Ok(())
        }
    }
}

fn passphrase() -> String {
    std::env::var("HUSHLIST_PASSPHRASE").unwrap_or_default()
}

fn home(explicit: Option<PathBuf>) -> anyhow::Result<Home> {
    if let Some(dir) = explicit {
        return Ok(Home::at(dir));
    }
    let dirs = directories::ProjectDirs::from("org", "hushlist", "hushlist").context(
        "no home directory to keep hushlist state in; pass --home DIR or set HUSHLIST_HOME",
    )?;
    Ok(Home::at(dirs.config_dir()))
}
