//! The `hushlist` command. Thin glue over the client library and the core; each subcommand
//! parses its arguments, calls a library function and prints the result.

mod demo;
mod serve;

use std::io::{Read as _, Write as _};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use hushlist_client::Home;
use hushlist_client::joins;
use hushlist_client::lists::ListConfig;
use hushlist_client::pins::{Rosters, ServerLog};
use hushlist_client::posts;
use hushlist_client::rosters;
use hushlist_core::api::HeldDecision;
use hushlist_core::roster::{
    Change, DeliveryMode, KeyFollows, MemberEntry, Moderation, OpHash, Policy, Posters, Role,
};
use hushlist_core::{Cert, SecretIdentity};
use indicatif::{ProgressBar, ProgressStyle};
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
    /// Create lists, manage their rosters, and tell this home where lists live.
    List {
        #[command(subcommand)]
        action: ListAction,
    },
    /// Ask a list's owners to let you in: sends your certificate, signed, to the list server
    /// (tell this home where the list lives first, with `hushlist list use`). A confirmation
    /// comes to your address, encrypted to your key; confirm with `--confirm TOKEN` (or by
    /// mail, as it says), and only then are the owners told. You hear by mail once they decide.
    Join {
        list: String,
        /// A few words for the owners.
        #[arg(long, conflicts_with = "confirm")]
        note: Option<String>,
        /// Confirm your request with the token from the confirmation mailed to you.
        #[arg(long, value_name = "TOKEN")]
        confirm: Option<String>,
    },
    /// Stop or restart delivery of a list's posts to you (or, for owners, to a member).
    /// Reading rights do not change: a suspended member still opens every post they could.
    Delivery {
        #[command(subcommand)]
        action: DeliveryAction,
    },
    /// Seal a message, deposit its key and post it to its list. Reads the message (To: the
    /// list) from stdin, or just the body with --list and --subject.
    Send {
        /// The list to post to (then stdin is the body only).
        #[arg(long, requires = "subject")]
        list: Option<String>,
        /// Subject of the post (with --list).
        #[arg(long, requires = "list")]
        subject: Option<String>,
    },
    /// Decrypt a delivered post read from stdin and print it with the verified signer in a
    /// Hushlist-Verified-Signer header; refuses tampered or unsigned posts, posts whose From
    /// (or Sender) is not their signer, posts their signer did not sign for this list and
    /// key id or whose key someone else deposited, and posts by someone the list did not
    /// let post. Asks the list's key server for every post's key, even one with your PKESK
    /// in it. (So do `archive --open`, `archive --download` and `list held --open`.)
    Open {
        /// Print the post with your PKESK spliced in instead: a standard PGP/MIME message any
        /// OpenPGP client decrypts with your key.
        #[arg(long)]
        splice: bool,
    },
    /// Drop-in for `sendmail` in mutt, git send-email and the like: posts the message on stdin
    /// to the list it is addressed to. Takes and ignores sendmail's usual options.
    Sendmail {
        /// Take recipients from the message's To/Cc (they must include a list you use).
        #[arg(short = 't')]
        from_headers: bool,
        /// Accepted for compatibility (a lone dot does not end the message here anyway).
        #[arg(short = 'i')]
        ignore_dots: bool,
        /// Envelope sender; it must be you.
        #[arg(short = 'f')]
        sender: Option<String>,
        /// sendmail -o options (-oi, -oem): accepted and ignored.
        #[arg(short = 'o', value_name = "OPTION")]
        options: Vec<String>,
        /// Recipients; one must be a list you use.
        recipients: Vec<String>,
    },
    /// List a list's past posts on its list server, open one of them, or download them all.
    Archive {
        list: String,
        /// Open the post with this id (from the listing) instead of listing.
        #[arg(long, conflicts_with = "download")]
        open: Option<i64>,
        /// Open every post you may read and write each to DIR/ID.eml (kept files are skipped,
        /// so an interrupted download resumes).
        #[arg(long, value_name = "DIR")]
        download: Option<PathBuf>,
    },
    /// Destroy a post's key at the key server (its sender or an owner): nobody can open the
    /// post afterwards.
    Revoke {
        /// The post's key id (its Hushlist-Key-Id header; `hushlist send` prints it).
        key_id: String,
        /// The list the post went to (needed when this home knows several).
        #[arg(long)]
        list: Option<String>,
    },
    /// Show who deposited, fetched, was refused or destroyed a post's key (sender or owner),
    /// verified as a hash chain under the key server's signed head; refused if it rewrites
    /// history this home saw before.
    Audit {
        key_id: String,
        #[arg(long)]
        list: Option<String>,
    },
    /// Run both servers in one process on the embedded SQLite default (or one of them).
    Serve {
        /// Run only this server.
        #[command(subcommand)]
        which: Option<serve::Which>,
        #[command(flatten)]
        flags: serve::ServeFlags,
    },
    /// Walk through one post from sender to members, showing what each server sees.
    Demo,
}

#[derive(Subcommand)]
enum DeliveryAction {
    /// Stop delivering the list's posts to you, or to ADDRESS (owners).
    Suspend {
        list: String,
        address: Option<String>,
    },
    /// Deliver the list's posts again (after a suspension for bounces, unsubscribing or a
    /// leave request), to you or to ADDRESS (owners).
    Resume {
        list: String,
        address: Option<String>,
    },
}

#[derive(Subcommand)]
enum ListAction {
    /// Create a list with you as its owner, on both servers.
    Create {
        /// The list's address.
        list: String,
        #[arg(long)]
        key_server: String,
        /// Base URL of the list server's HTTP interface.
        #[arg(long)]
        list_server: String,
        /// The list server's SMTP address (host:port) that posts are sent to.
        #[arg(long)]
        smtp: String,
        /// pull: members fetch each post's key; push: each copy carries the member's key.
        #[arg(long, value_enum, default_value = "pull")]
        mode: Mode,
        /// The operators' admin token (both servers').
        #[arg(long, env = "HUSHLIST_ADMIN_TOKEN", hide_env_values = true)]
        admin_token: String,
        /// Allow plain http:// to servers that are not on this machine (anyone on the path
        /// could then answer for them).
        #[arg(long)]
        insecure_http: bool,
    },
    /// Remember where an existing list lives (for members), and pin it: its genesis op, first
    /// owner and the key server's certificate. Later rosters must start at that genesis and
    /// never go back or fork from what this home has seen.
    Use {
        list: String,
        /// Base URL of the key server (https://, or http:// on this machine).
        #[arg(long)]
        key_server: String,
        /// Base URL of the list server's HTTP interface.
        #[arg(long)]
        list_server: String,
        #[arg(long)]
        smtp: String,
        /// The list's genesis hash as an owner's `hushlist list show` prints it; without it
        /// the servers' first answer is trusted.
        #[arg(long, value_name = "HASH")]
        genesis: Option<OpHash>,
        /// Allow plain http:// to servers that are not on this machine (anyone on the path
        /// could then answer for them).
        #[arg(long)]
        insecure_http: bool,
    },
    /// Requests to join, waiting for an owner (owners only).
    Pending { list: String },
    /// Let in someone who asked to join (owners only): checks their request's signature,
    /// signs their add with the key you name on both servers, and has the list server tell
    /// them. Refuses if the list server offers any other key.
    Approve {
        list: String,
        address: String,
        /// The key you approve, as `hushlist list pending` shows it (check it with the person).
        #[arg(long, value_name = "FPR")]
        fingerprint: String,
        #[arg(long, value_enum, default_value = "member")]
        role: RoleArg,
    },
    /// Turn down a request to join (owners only); the list server tells the requester.
    Reject {
        list: String,
        address: String,
        /// The key whose request you turn down; needed when the address asked with several.
        #[arg(long, value_name = "FPR")]
        fingerprint: Option<String>,
        /// Told to the requester.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Add a member (owners only): signs the op and sends it to both servers.
    Add {
        list: String,
        #[arg(required_unless_present = "from_file", conflicts_with = "from_file")]
        address: Option<String>,
        /// The member's public certificate (from `hushlist key export` or `gpg --export`).
        #[arg(
            long,
            required_unless_present = "from_file",
            conflicts_with = "from_file"
        )]
        key: Option<PathBuf>,
        #[arg(
            long,
            value_enum,
            default_value = "member",
            conflicts_with = "from_file"
        )]
        role: RoleArg,
        /// Add many: one `ADDRESS CERTFILE [owner|member|reader]` a line (paths relative to
        /// the file, `#` comments). Members already on the list are skipped, so a re-run
        /// after an interruption finishes the job.
        #[arg(long, value_name = "FILE")]
        from_file: Option<PathBuf>,
    },
    /// Remove a member (owners only). They lose the keys of posts made under current-roster
    /// (the default) and keep those of posts made under posting-roster while they were a
    /// member.
    Remove { list: String, address: String },
    /// Change the list's policy (owners only); settings not given stay as they are. A change
    /// governs the posts made after it: each post keeps the policy in force when it was
    /// posted (who may read it, how long its key lives). To cut access to an earlier post,
    /// destroy its key with `hushlist revoke KEYID`.
    Policy {
        list: String,
        /// pull: members fetch each post's key; push: each copy carries the member's key.
        #[arg(long, value_enum)]
        mode: Option<Mode>,
        /// Who may post.
        #[arg(long, value_enum)]
        posters: Option<PostersArg>,
        /// Whether a removed member keeps the keys of posts made while they were a member;
        /// applies to posts made from now on.
        #[arg(long, value_enum)]
        keys_follow: Option<KeysFollowArg>,
        /// Whether members added later may read posts from before they joined; applies to
        /// posts made from now on.
        #[arg(long)]
        new_members_read_old: Option<bool>,
        /// Seconds after posting when the key server destroys a post's key (0: keep keys).
        #[arg(long)]
        key_lifetime_secs: Option<u64>,
        /// Which posts wait for an owner's approval.
        #[arg(long, value_enum)]
        moderation: Option<ModerationArg>,
    },
    /// Posts held for an owner's approval (owners only), or one of them opened.
    Held {
        list: String,
        /// Open the held post with this id (from the listing) instead of listing.
        #[arg(long)]
        open: Option<i64>,
    },
    /// Send a held post to the list (owners only).
    Release { list: String, id: i64 },
    /// Turn a held post away (owners only): it is deleted and its sender told.
    Discard {
        list: String,
        id: i64,
        /// Told to the sender.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Members, roles, policy and roster head, and whether both servers agree.
    Show { list: String },
    /// Bring both servers' rosters in step: pushes the signed ops one of them lacks.
    Sync {
        list: String,
        /// The operators' admin token, needed only if one server lacks the list entirely.
        #[arg(long, env = "HUSHLIST_ADMIN_TOKEN", hide_env_values = true)]
        admin_token: Option<String>,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Mode {
    Pull,
    Push,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum PostersArg {
    /// Owners and members (readers never post).
    Members,
    Owners,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum ModerationArg {
    /// Posts from those allowed to post go out at once; others are refused.
    None,
    /// Posts from readers (or from members when only owners post) wait for an owner
    /// instead of being refused.
    NonPosters,
    /// Every post waits for an owner.
    All,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum KeysFollowArg {
    /// Whoever was a member when a post was made keeps its key, even after removal.
    PostingRoster,
    /// Only current members get keys: removing someone revokes, for them, every post made
    /// under this setting (posts made earlier under posting-roster stay readable by whoever
    /// was a member then).
    CurrentRoster,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum RoleArg {
    Owner,
    Member,
    Reader,
}

impl From<RoleArg> for Role {
    fn from(role: RoleArg) -> Self {
        match role {
            RoleArg::Owner => Role::Owner,
            RoleArg::Member => Role::Member,
            RoleArg::Reader => Role::Reader,
        }
    }
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
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("hushlist: cannot start: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("hushlist: {}", printable(&format!("{err:#}")));
            std::process::ExitCode::FAILURE
        }
    }
}

/// `text` with every control character but newline and tab written as an escape: refusals
/// quote what a post or a server said, and a terminal must not take an escape sequence in
/// them for a command (to erase the refusal, retitle the window or set the clipboard).
fn printable(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() && c != '\n' && c != '\t' {
                c.escape_unicode().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::List { action } => list_command(&home(cli.home)?, action).await,
        Command::Join {
            list,
            note,
            confirm,
        } => {
            let home = home(cli.home)?;
            let config = home.list(&address(&list)?).with_context(|| {
                format!("first tell this home where {list} lives: hushlist list use {list} --key-server URL --list-server URL --smtp HOST:PORT")
            })?;
            let server = config.list_server()?;
            if let Some(token) = confirm {
                let confirmed = server.confirm_join(&config.list, token.trim()).await?;
                println!(
                    "confirmed: your request to join {} as {} with key {} waits for the owners until {} (unix time); you will hear by mail",
                    confirmed.list, confirmed.address, confirmed.fingerprint, confirmed.expires_at
                );
                return Ok(());
            }
            let me = home.load_identity(&passphrase())?;
            let mine = my_address(&me)?;
            let receipt = server.join(&me, &config.list, &mine, note).await?;
            println!(
                "asked to join {} as {} with key {}; a confirmation is on its way to {}, encrypted to this key: confirm by {} (unix time) as it says (hushlist join {} --confirm TOKEN), and the owners are told",
                receipt.list,
                receipt.address,
                receipt.fingerprint,
                receipt.address,
                receipt.confirm_by,
                receipt.list
            );
            Ok(())
        }
        Command::Delivery { action } => {
            let (list, member, suspended) = match action {
                DeliveryAction::Suspend { list, address } => (list, address, true),
                DeliveryAction::Resume { list, address } => (list, address, false),
            };
            let home = home(cli.home)?;
            let me = home.load_identity(&passphrase())?;
            let config = home.list(&address(&list)?)?;
            let server = config.list_server()?;
            let member = match member {
                Some(text) => address(&text)?,
                None => home
                    .rosters(&me, &config)
                    .await?
                    .newest()
                    .member_by_fingerprint(me.fingerprint())
                    .map(|m| m.address.clone())
                    .with_context(|| {
                        format!(
                            "you are not a member of {}; name the member whose delivery to change",
                            config.list
                        )
                    })?,
            };
            let status = server
                .switch_delivery(&me, &config.list, &member, suspended)
                .await?;
            println!(
                "delivery of {} to {} {}",
                status.list,
                status.address,
                if status.suspended {
                    "suspended"
                } else {
                    "resumed"
                }
            );
            Ok(())
        }
        Command::Serve { which, flags } => serve::run(which, flags).await,
        Command::Send { list, subject } => {
            let home = home(cli.home)?;
            let me = home.load_identity(&passphrase())?;
            let mut input = Vec::new();
            std::io::stdin().read_to_end(&mut input)?;
            let (config, message) = match (list, subject) {
                (Some(list), Some(subject)) => {
                    let config = home.list(&address(&list)?)?;
                    let mut message = format!(
                        "From: {}\r\nTo: {}\r\nSubject: {subject}\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n",
                        my_address(&me)?,
                        config.list
                    )
                    .into_bytes();
                    message.extend_from_slice(&crlf(&input));
                    (config, message)
                }
                _ => {
                    let message = crlf(&input);
                    let config = list_named_in(&home, &message)?;
                    (config, message)
                }
            };
            let sent = posts::send(&me, &home, &config, &message).await?;
            eprintln!(
                "posted to {} (key {} deposited at {}, roster at seq {}){}",
                config.list,
                sent.key_id,
                config.key_server,
                sent.roster_seq,
                if sent.held {
                    "; the list holds it until an owner approves it"
                } else {
                    ""
                }
            );
            Ok(())
        }
        Command::Revoke { key_id, list } => {
            let home = home(cli.home)?;
            let me = home.load_identity(&passphrase())?;
            let config = one_list(&home, list.as_deref())?;
            let key_id = key_id.parse().map_err(|e| anyhow::anyhow!("{e}"))?;
            config
                .key_server()?
                .revoke(&me, &config.list, &key_id)
                .await?;
            println!("key {key_id} destroyed: the post can no longer be opened");
            Ok(())
        }
        Command::Audit { key_id, list } => {
            let home = home(cli.home)?;
            let me = home.load_identity(&passphrase())?;
            let config = one_list(&home, list.as_deref())?;
            let key_id = key_id.parse().map_err(|e| anyhow::anyhow!("{e}"))?;
            let log = home.audit(&me, &config, &key_id).await?;
            let mut out = std::io::stdout().lock();
            for entry in &log.entries {
                writeln!(
                    out,
                    "{} {} {} {}{}",
                    entry.at,
                    entry.actor,
                    entry.action,
                    entry.outcome,
                    entry
                        .detail
                        .as_ref()
                        .map(|d| format!(" ({d})"))
                        .unwrap_or_default()
                )?;
            }
            eprintln!(
                "audit log verified: {} records chained up to a head signed by the pinned key server, extending any this home saw before",
                log.entries.len()
            );
            Ok(())
        }
        Command::Open { splice } => {
            let home = home(cli.home)?;
            let me = home.load_identity(&passphrase())?;
            let mut input = Vec::new();
            std::io::stdin().read_to_end(&mut input)?;
            let lists = home.lists()?;
            if splice {
                let spliced = posts::splice_post(&me, &home, &lists, &input).await?;
                std::io::stdout().lock().write_all(&spliced)?;
                return Ok(());
            }
            print_opened(&me, &home, &lists, &input).await
        }
        Command::Sendmail {
            from_headers,
            ignore_dots: _,
            sender,
            options: _,
            recipients,
        } => {
            let home = home(cli.home)?;
            let me = home.load_identity(&passphrase())?;
            if let Some(sender) = sender
                && !address(&sender)?.same_mailbox(&my_address(&me)?)
            {
                anyhow::bail!("-f {sender}: you can only send as {}", my_address(&me)?);
            }
            let mut input = Vec::new();
            std::io::stdin().read_to_end(&mut input)?;
            let message = crlf(&input);
            let lists = home.lists()?;
            let config = if from_headers || recipients.is_empty() {
                list_named_in(&home, &message)?
            } else {
                let mut named = Vec::new();
                for recipient in &recipients {
                    let recipient = address(recipient)?;
                    match lists.iter().find(|l| l.list.same_mailbox(&recipient)) {
                        Some(list) => named.push(list.clone()),
                        None => anyhow::bail!(
                            "{recipient} is not a list this home knows; hushlist only posts to lists"
                        ),
                    }
                }
                match named.len() {
                    1 => named.remove(0),
                    _ => anyhow::bail!("name exactly one list as the recipient"),
                }
            };
            posts::send(&me, &home, &config, &message).await?;
            Ok(())
        }
        Command::Archive {
            list,
            open: _,
            download: Some(dir),
        } => {
            let home = home(cli.home)?;
            let me = home.load_identity(&passphrase())?;
            let config = home.list(&address(&list)?)?;
            download_archive(&me, &home, &config, &dir).await
        }
        Command::Archive {
            list,
            open,
            download: None,
        } => {
            let home = home(cli.home)?;
            let me = home.load_identity(&passphrase())?;
            let config = home.list(&address(&list)?)?;
            let server = config.list_server()?;
            let mut after = 0;
            let mut out = std::io::stdout().lock();
            loop {
                let page = server.archive(&me, &config.list, after, 100).await?;
                for post in &page.posts {
                    match open {
                        Some(id) if id == post.id => {
                            drop(out);
                            return print_opened(
                                &me,
                                &home,
                                std::slice::from_ref(&config),
                                &post.message,
                            )
                            .await;
                        }
                        Some(_) => {}
                        None => writeln!(
                            out,
                            "{} {} {} {}",
                            post.id,
                            post.received_at,
                            post.key_id,
                            post.message_id.as_deref().unwrap_or("-")
                        )?,
                    }
                }
                match page.next_after {
                    Some(next) => after = next,
                    None => break,
                }
            }
            match open {
                Some(id) => anyhow::bail!("no post {id} in the archive of {}", config.list),
                None => Ok(()),
            }
        }
        Command::Demo => demo::run(&mut std::io::stdout().lock()).await,
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

async fn list_command(home: &Home, action: ListAction) -> anyhow::Result<()> {
    match action {
        ListAction::Create {
            list,
            key_server,
            list_server,
            smtp,
            mode,
            admin_token,
            insecure_http,
        } => {
            let me = home.load_identity(&passphrase())?;
            let config = ListConfig {
                list: address(&list)?,
                key_server,
                list_server,
                smtp,
                insecure_http,
                pins: None,
            };
            let policy = Policy {
                delivery: match mode {
                    Mode::Pull => DeliveryMode::Pull,
                    Mode::Push => DeliveryMode::Push,
                },
                ..Policy::default()
            };
            rosters::create(
                &me,
                my_address(&me)?,
                home,
                &config,
                policy,
                &admin_token,
                now(),
            )
            .await?;
            let pins = home
                .list(&config.list)?
                .pins
                .context("the new list is pinned")?;
            println!(
                "created {} with you as owner on both servers; its genesis is {} (members give it to `hushlist list use --genesis`)",
                config.list, pins.genesis
            );
            Ok(())
        }
        ListAction::Use {
            list,
            key_server,
            list_server,
            smtp,
            genesis,
            insecure_http,
        } => {
            let config = ListConfig {
                list: address(&list)?,
                key_server,
                list_server,
                smtp,
                insecure_http,
                pins: None,
            };
            let given = genesis.is_some();
            let me = home.load_identity(&passphrase())?;
            let used = home.use_list(&me, config.clone(), genesis).await?;
            let pins = &used.pins;
            println!(
                "{} will be reached at {}; pinned: genesis {} (first owner {}), key server key {}, seen up to seq {}",
                config.list,
                config.list_server,
                pins.genesis,
                pins.first_owner,
                pins.server_key,
                pins.seen_seq
            );
            if !given {
                println!(
                    "the genesis was taken on the servers' word; check it against what an owner's `hushlist list show {}` prints",
                    config.list
                );
            }
            match &used.rosters {
                Some(rosters) => {
                    if let Some(lag) = servers_out_of_step(rosters) {
                        println!("{lag}");
                    }
                }
                None => println!(
                    "you are not on its roster yet, so only its public genesis was read; ask to join with `hushlist join {}`",
                    config.list
                ),
            }
            Ok(())
        }
        ListAction::Held { list, open } => {
            let me = home.load_identity(&passphrase())?;
            let config = home.list(&address(&list)?)?;
            let held = config.list_server()?.held_posts(&me, &config.list).await?;
            if let Some(id) = open {
                let post = held
                    .posts
                    .iter()
                    .find(|p| p.id == id)
                    .with_context(|| format!("no post {id} is held for {list}"))?;
                return print_opened(&me, home, std::slice::from_ref(&config), &post.message).await;
            }
            if held.posts.is_empty() {
                println!("no posts held for {}", held.list);
            }
            for post in held.posts {
                println!(
                    "{} from {} at {} (key {}): {}",
                    post.id, post.from, post.received_at, post.key_id, post.reason
                );
            }
            Ok(())
        }
        ListAction::Release { list, id } => {
            settle_held(home, &list, id, true, None).await?;
            println!("post {id} released to {list}");
            Ok(())
        }
        ListAction::Discard { list, id, reason } => {
            settle_held(home, &list, id, false, reason).await?;
            println!("post {id} discarded; its sender is told by mail");
            Ok(())
        }
        ListAction::Pending { list } => {
            let me = home.load_identity(&passphrase())?;
            let config = home.list(&address(&list)?)?;
            let pending = joins::pending(&me, &config, now()).await?;
            if pending.is_empty() {
                println!("no pending requests to join {}", config.list);
            }
            for checked in &pending {
                let request = &checked.pending;
                let keys = pending
                    .iter()
                    .filter(|c| c.pending.address == request.address)
                    .count();
                let state = match (&checked.verified, request.confirmed) {
                    (Err(forgery), _) => format!(
                        "DOES NOT VERIFY ({forgery}): do not approve; the list server may be compromised"
                    ),
                    (Ok(_), false) => {
                        "not confirmed from the mailbox: cannot be approved".to_owned()
                    }
                    (Ok(_), true) if keys > 1 => format!(
                        "CONFLICT: {keys} keys asked for this address; approve only the one the person confirms to you"
                    ),
                    (Ok(_), true) => "confirmed".to_owned(),
                };
                let note = checked
                    .verified
                    .as_ref()
                    .ok()
                    .and_then(|v| v.ask.note.as_deref())
                    .map(|n| {
                        format!(
                            "; note: {}",
                            n.chars().filter(|c| !c.is_control()).collect::<String>()
                        )
                    })
                    .unwrap_or_default();
                println!(
                    "{} key {} asked at {}, lapses at {}: {state}{note}",
                    request.address, request.fingerprint, request.requested_at, request.expires_at,
                );
            }
            Ok(())
        }
        ListAction::Approve {
            list,
            address: member,
            fingerprint,
            role,
        } => {
            let me = home.load_identity(&passphrase())?;
            let config = home.list(&address(&list)?)?;
            let member = address(&member)?;
            let fingerprint = fingerprint_arg(&fingerprint)?;
            let head_seq = joins::approve(
                &me,
                home,
                &config,
                &member,
                &fingerprint,
                role.into(),
                now(),
            )
            .await?;
            println!(
                "{member} added to {} with key {fingerprint} (seq {head_seq} on both servers) and told by mail",
                config.list
            );
            Ok(())
        }
        ListAction::Reject {
            list,
            address: member,
            fingerprint,
            reason,
        } => {
            let me = home.load_identity(&passphrase())?;
            let config = home.list(&address(&list)?)?;
            let member = address(&member)?;
            let fingerprint = fingerprint.as_deref().map(fingerprint_arg).transpose()?;
            let rejected =
                joins::reject(&me, &config, &member, fingerprint.as_ref(), reason, now()).await?;
            println!(
                "{member}'s request to join {} with key {rejected} declined; they are told by mail",
                config.list
            );
            Ok(())
        }
        ListAction::Add {
            list,
            address: member,
            key,
            role,
            from_file,
        } => {
            if let Some(file) = from_file {
                return add_from_file(home, &list, &file).await;
            }
            let (Some(member), Some(key)) = (member, key) else {
                unreachable!("clap requires ADDRESS and --key without --from-file")
            };
            let cert = std::fs::read(&key).with_context(|| format!("reading {}", key.display()))?;
            let cert = Cert::from_bytes(&cert)
                .with_context(|| format!("{} is not a usable certificate", key.display()))?;
            let member = MemberEntry {
                address: address(&member)?,
                cert: cert.to_armored(),
                role: role.into(),
            };
            change_roster(home, &list, Change::Add { member }).await
        }
        ListAction::Remove {
            list,
            address: member,
        } => {
            change_roster(
                home,
                &list,
                Change::Remove {
                    address: address(&member)?,
                },
            )
            .await
        }
        ListAction::Policy {
            list,
            mode,
            posters,
            keys_follow,
            new_members_read_old,
            key_lifetime_secs,
            moderation,
        } => {
            let me = home.load_identity(&passphrase())?;
            let config = home.list(&address(&list)?)?;
            let mut policy = home.rosters(&me, &config).await?.newest().policy().clone();
            if let Some(mode) = mode {
                policy.delivery = match mode {
                    Mode::Pull => DeliveryMode::Pull,
                    Mode::Push => DeliveryMode::Push,
                };
            }
            if let Some(posters) = posters {
                policy.posters = match posters {
                    PostersArg::Members => Posters::Members,
                    PostersArg::Owners => Posters::Owners,
                };
            }
            if let Some(follow) = keys_follow {
                policy.key_follows = match follow {
                    KeysFollowArg::PostingRoster => KeyFollows::PostingRoster,
                    KeysFollowArg::CurrentRoster => KeyFollows::CurrentRoster,
                };
            }
            if let Some(read_old) = new_members_read_old {
                policy.new_members_read_old = read_old;
            }
            if let Some(secs) = key_lifetime_secs {
                policy.key_lifetime_secs = (secs > 0).then_some(secs);
            }
            if let Some(moderation) = moderation {
                policy.moderation = match moderation {
                    ModerationArg::None => Moderation::None,
                    ModerationArg::NonPosters => Moderation::NonPosters,
                    ModerationArg::All => Moderation::All,
                };
            }
            change_roster(home, &list, Change::SetPolicy { policy }).await
        }
        ListAction::Show { list } => {
            let me = home.load_identity(&passphrase())?;
            let config = home.list(&address(&list)?)?;
            let rosters = home.rosters(&me, &config).await?;
            let newest = rosters.newest();
            let mut out = std::io::stdout().lock();
            writeln!(out, "list {}", config.list)?;
            for member in newest.members() {
                writeln!(
                    out,
                    "  {:<8} {} {}",
                    member.role.to_string(),
                    member.address,
                    member.cert.fingerprint()
                )?;
            }
            writeln!(out, "policy {:?}", newest.policy())?;
            let pins = &rosters.pins;
            writeln!(
                out,
                "genesis {} (first owner {}): give members `hushlist list use {} ... --genesis {}`",
                pins.genesis, pins.first_owner, config.list, pins.genesis
            )?;
            writeln!(out, "key server key {} (pinned)", pins.server_key)?;
            for (name, log) in [
                ("key server ", &rosters.key_server),
                ("list server", &rosters.list_server),
            ] {
                match log {
                    ServerLog::Held(roster) => writeln!(
                        out,
                        "{name} head {} {}",
                        roster.head_seq(),
                        roster.head_hash()
                    )?,
                    ServerLog::Absent(e) => writeln!(out, "{name} no roster: {e}")?,
                }
            }
            match servers_out_of_step(&rosters) {
                None => writeln!(out, "both servers agree")?,
                Some(lag) => writeln!(out, "{lag}")?,
            }
            Ok(())
        }
        ListAction::Sync { list, admin_token } => {
            let config = home.list(&address(&list)?)?;
            let synced = rosters::sync(
                &home.load_identity(&passphrase())?,
                home,
                &config,
                admin_token.as_deref(),
            )
            .await?;
            println!(
                "{}: sent {} op(s) to the key server and {} to the list server; both at seq {}",
                config.list, synced.to_key_server, synced.to_list_server, synced.head_seq
            );
            Ok(())
        }
    }
}

/// What to tell the user when one server lacks ops the other has (both logs checked: the
/// shorter is a prefix of the longer), or lacks the list; None when they agree.
fn servers_out_of_step(rosters: &Rosters) -> Option<String> {
    let list = rosters.newest().list();
    match (rosters.key_server.roster(), rosters.list_server.roster()) {
        (Some(keys), Some(lists)) if keys.head_seq() == lists.head_seq() => None,
        (Some(keys), Some(lists)) => {
            let (behind, at, ahead, head) = if keys.head_seq() < lists.head_seq() {
                (
                    "key server",
                    keys.head_seq(),
                    "list server",
                    lists.head_seq(),
                )
            } else {
                (
                    "list server",
                    lists.head_seq(),
                    "key server",
                    keys.head_seq(),
                )
            };
            Some(format!(
                "the servers DISAGREE: the {behind} is behind at seq {at} (the {ahead} is at {head}, and agrees up to there); run `hushlist list sync {list}`"
            ))
        }
        (Some(_), None) => Some(format!(
            "the servers DISAGREE: the list server has no roster of {list}; run `hushlist list sync {list}` if it lacks the list"
        )),
        (None, _) => Some(format!(
            "the servers DISAGREE: the key server has no roster of {list}; run `hushlist list sync {list}` if it lacks the list"
        )),
    }
}

/// Opens a post and prints it with its verified signer, or refuses.
async fn print_opened(
    me: &SecretIdentity,
    home: &Home,
    lists: &[ListConfig],
    raw: &[u8],
) -> anyhow::Result<()> {
    let shown = posts::show_post(me, home, lists, raw).await?;
    std::io::stdout().lock().write_all(&shown.message)?;
    Ok(())
}

/// Signs `change` against the key server's roster and sends it to both servers.
async fn settle_held(
    home: &Home,
    list: &str,
    id: i64,
    approved: bool,
    reason: Option<String>,
) -> anyhow::Result<()> {
    let me = home.load_identity(&passphrase())?;
    let config = home.list(&address(list)?)?;
    config
        .list_server()?
        .settle_held(
            &me,
            &config.list,
            &HeldDecision {
                id,
                approved,
                reason,
            },
        )
        .await?;
    Ok(())
}

async fn change_roster(home: &Home, list: &str, change: Change) -> anyhow::Result<()> {
    let me = home.load_identity(&passphrase())?;
    let config = home.list(&address(list)?)?;
    let head_seq = rosters::change(&me, home, &config, change, now()).await?;
    println!("{} is at seq {head_seq} on both servers", config.list);
    Ok(())
}

/// `list add --from-file`: every line checked first, then one signed op a member, with a
/// progress bar on a terminal.
async fn add_from_file(home: &Home, list: &str, file: &Path) -> anyhow::Result<()> {
    let me = home.load_identity(&passphrase())?;
    let config = home.list(&address(list)?)?;
    let members = rosters::read_member_file(file)?;
    let bar = ProgressBar::new(members.len() as u64).with_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} members, {eta} left  {msg}")
            .expect("a valid progress template"),
    );
    let added = rosters::add_many(&me, home, &config, members, now(), |member| {
        bar.set_message(member.to_string());
        bar.inc(1);
    })
    .await;
    bar.finish_and_clear();
    let added = added?;
    println!(
        "{}: added {}, {} already members; at seq {} on both servers",
        config.list, added.added, added.present, added.head_seq
    );
    Ok(())
}

/// `archive --download DIR`: every post this member may read, opened, one file each, with a
/// progress spinner on a terminal. Posts that cannot be opened (key destroyed, not readable
/// by this member) are counted and named, and the rest still downloaded.
async fn download_archive(
    me: &SecretIdentity,
    home: &Home,
    config: &ListConfig,
    dir: &Path,
) -> anyhow::Result<()> {
    // Opened posts are plaintext: a new directory and every file in it are the member's alone.
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    let server = config.list_server()?;
    let bar = ProgressBar::new_spinner().with_style(
        ProgressStyle::with_template("{spinner} {pos} posts, {per_sec}  {msg}")
            .expect("a valid progress template"),
    );
    let (mut saved, mut kept) = (0, 0);
    let mut unreadable = Vec::new();
    let mut after = 0;
    loop {
        let page = server.archive(me, &config.list, after, 100).await?;
        for post in &page.posts {
            bar.inc(1);
            let file = dir.join(format!("{}.eml", post.id));
            if file.exists() {
                kept += 1;
                continue;
            }
            bar.set_message(format!("post {}", post.id));
            match posts::show_post(me, home, std::slice::from_ref(config), &post.message).await {
                Ok(shown) => {
                    let partial = dir.join(format!(".{}.eml.part", post.id));
                    std::fs::OpenOptions::new()
                        .write(true)
                        .create(true)
                        .truncate(true)
                        .mode(0o600)
                        .open(&partial)
                        .and_then(|mut out| out.write_all(&shown.message))
                        .and_then(|()| std::fs::rename(&partial, &file))
                        .with_context(|| format!("writing {}", file.display()))?;
                    saved += 1;
                }
                Err(e) => unreadable.push(format!("post {}: {e:#}", post.id)),
            }
        }
        match page.next_after {
            Some(next) => after = next,
            None => break,
        }
    }
    bar.finish_and_clear();
    println!(
        "{}: saved {saved} post(s) to {}, {kept} already there, {} unreadable",
        config.list,
        dir.display(),
        unreadable.len()
    );
    for problem in &unreadable {
        eprintln!("  {}", printable(problem));
    }
    Ok(())
}

/// The known list a full message is addressed to (its To or Cc).
fn list_named_in(home: &Home, message: &[u8]) -> anyhow::Result<ListConfig> {
    let lists = home.lists()?;
    let parsed = mail_parser::MessageParser::new()
        .parse(message)
        .context("stdin is not a mail message")?;
    parsed
        .to()
        .into_iter()
        .chain(parsed.cc())
        .flat_map(|a| a.iter())
        .filter_map(|a| a.address())
        .filter_map(|a| hushlist_core::Address::parse(a).ok())
        .find_map(|a| lists.iter().find(|l| l.list.same_mailbox(&a)).cloned())
        .context("the message is not addressed to a list this home knows; use `hushlist list use` first, or --list")
}

/// The list named by `--list`, or the only list this home knows.
fn one_list(home: &Home, list: Option<&str>) -> anyhow::Result<ListConfig> {
    if let Some(list) = list {
        return Ok(home.list(&address(list)?)?);
    }
    let mut lists = home.lists()?;
    match lists.len() {
        1 => Ok(lists.remove(0)),
        0 => anyhow::bail!("this home knows no list; add one with `hushlist list use`"),
        _ => anyhow::bail!("this home knows several lists; say which with --list"),
    }
}

/// Line ends as SMTP carries them.
fn crlf(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len() + input.len() / 40);
    let mut previous = 0u8;
    for &byte in input {
        if byte == b'\n' && previous != b'\r' {
            out.push(b'\r');
        }
        out.push(byte);
        previous = byte;
    }
    out
}

fn address(text: &str) -> anyhow::Result<hushlist_core::Address> {
    hushlist_core::Address::parse(text).map_err(|e| anyhow::anyhow!("{e}"))
}

/// A fingerprint as people copy it: 40 or 64 hex digits, spaces (as gpg groups them) ignored.
fn fingerprint_arg(text: &str) -> anyhow::Result<hushlist_core::Fingerprint> {
    let digits: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    hushlist_core::Fingerprint::try_from(digits).map_err(|e| {
        anyhow::anyhow!("{e}; give the key's fingerprint as `hushlist list pending` shows it")
    })
}

fn my_address(me: &SecretIdentity) -> anyhow::Result<hushlist_core::Address> {
    posts::my_address(me).context("your identity names no mail address")
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
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
