//! The `hushlist` command. Thin glue over the client library and the core: the arguments
//! are declared here and dispatched to one module per group of subcommands (`commands`),
//! each of which calls a library function and prints the result.

mod commands;
mod context;
mod demo;
mod serve;

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use hushlist_client::rosters::PolicyUpdate;
use hushlist_core::roster::{
    DeliveryMode, FromRewrite, KeyFollows, Moderation, OpHash, Posters, Role,
};

use commands::lists::Place;
use commands::{archive, delivery, identity, joins, keys, lists, moderation, posts};
use context::Context;

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
        /// Whose address the From of delivered copies carries.
        #[arg(long, value_enum)]
        from_rewrite: Option<FromRewriteArg>,
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
enum FromRewriteArg {
    /// "Name via list" only for authors whose domain publishes a DMARC policy of quarantine
    /// or reject (or when that cannot be looked up); otherwise the author's own From, which
    /// OpenPGP clients check the signature against.
    Dmarc,
    /// Always "Name via list", with Reply-To the author.
    Always,
    /// Always the author's own From (copies from DMARC-enforcing domains may be refused).
    Never,
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

/// `From` a clap value enum to the core enum it mirrors, variant for variant.
macro_rules! mirrors {
    ($arg:ident => $core:ident { $($variant:ident),+ }) => {
        impl From<$arg> for $core {
            fn from(value: $arg) -> Self {
                match value {
                    $($arg::$variant => $core::$variant),+
                }
            }
        }
    };
}

mirrors!(Mode => DeliveryMode { Pull, Push });
mirrors!(PostersArg => Posters { Members, Owners });
mirrors!(ModerationArg => Moderation { None, NonPosters, All });
mirrors!(FromRewriteArg => FromRewrite { Dmarc, Always, Never });
mirrors!(KeysFollowArg => KeyFollows { PostingRoster, CurrentRoster });
mirrors!(RoleArg => Role { Owner, Member, Reader });

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
    let command = match cli.command {
        Command::Serve { which, flags } => return serve::run(which, flags).await,
        Command::Demo => return demo::run(&mut std::io::stdout().lock()).await,
        command => command,
    };
    let cx = Context::new(cli.home)?;
    match command {
        Command::Init {
            email,
            name,
            import,
            passphrase_env,
        } => identity::init(
            &cx,
            email.as_deref(),
            name.as_deref(),
            import.as_deref(),
            &passphrase_env,
        ),
        Command::Key {
            action: KeyAction::Export { binary },
        } => identity::export(&cx, binary),
        Command::Key {
            action: KeyAction::Fingerprint,
        } => identity::fingerprint(&cx),
        Command::List { action } => list_command(&cx, action).await,
        Command::Join {
            list,
            note,
            confirm,
        } => joins::join(&cx, &list, note, confirm.as_deref()).await,
        Command::Delivery {
            action: DeliveryAction::Suspend { list, address },
        } => delivery::switch(&cx, &list, address.as_deref(), true).await,
        Command::Delivery {
            action: DeliveryAction::Resume { list, address },
        } => delivery::switch(&cx, &list, address.as_deref(), false).await,
        Command::Send { list, subject } => {
            posts::send(&cx, list.as_deref(), subject.as_deref()).await
        }
        Command::Sendmail {
            from_headers,
            ignore_dots: _,
            sender,
            options: _,
            recipients,
        } => posts::sendmail(&cx, from_headers, sender.as_deref(), &recipients).await,
        Command::Open { splice } => posts::open(&cx, splice).await,
        Command::Archive {
            list,
            open: _,
            download: Some(dir),
        } => archive::download(&cx, &list, &dir).await,
        Command::Archive {
            list,
            open: Some(id),
            download: None,
        } => archive::open(&cx, &list, id).await,
        Command::Archive {
            list,
            open: None,
            download: None,
        } => archive::list(&cx, &list).await,
        Command::Revoke { key_id, list } => keys::revoke(&cx, &key_id, list.as_deref()).await,
        Command::Audit { key_id, list } => keys::audit(&cx, &key_id, list.as_deref()).await,
        Command::Serve { .. } | Command::Demo => unreachable!("run before the home is found"),
    }
}

async fn list_command(cx: &Context, action: ListAction) -> anyhow::Result<()> {
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
            let place = Place {
                list,
                key_server,
                list_server,
                smtp,
                insecure_http,
            };
            lists::create(cx, place, mode.into(), &admin_token).await
        }
        ListAction::Use {
            list,
            key_server,
            list_server,
            smtp,
            genesis,
            insecure_http,
        } => {
            let place = Place {
                list,
                key_server,
                list_server,
                smtp,
                insecure_http,
            };
            lists::use_list(cx, place, genesis).await
        }
        ListAction::Add {
            list,
            from_file: Some(file),
            ..
        } => lists::add_from_file(cx, &list, &file).await,
        ListAction::Add {
            list,
            address: Some(member),
            key: Some(key),
            role,
            from_file: None,
        } => lists::add(cx, &list, &member, &key, role.into()).await,
        ListAction::Add { .. } => {
            unreachable!("clap requires ADDRESS and --key without --from-file")
        }
        ListAction::Remove { list, address } => lists::remove(cx, &list, &address).await,
        ListAction::Policy {
            list,
            mode,
            posters,
            keys_follow,
            new_members_read_old,
            key_lifetime_secs,
            moderation,
            from_rewrite,
        } => {
            let update = PolicyUpdate {
                delivery: mode.map(Into::into),
                posters: posters.map(Into::into),
                key_follows: keys_follow.map(Into::into),
                new_members_read_old,
                key_lifetime_secs,
                moderation: moderation.map(Into::into),
                from_rewrite: from_rewrite.map(Into::into),
            };
            lists::policy(cx, &list, update).await
        }
        ListAction::Show { list } => lists::show(cx, &list).await,
        ListAction::Sync { list, admin_token } => {
            lists::sync(cx, &list, admin_token.as_deref()).await
        }
        ListAction::Pending { list } => joins::pending(cx, &list).await,
        ListAction::Approve {
            list,
            address,
            fingerprint,
            role,
        } => joins::approve(cx, &list, &address, &fingerprint, role.into()).await,
        ListAction::Reject {
            list,
            address,
            fingerprint,
            reason,
        } => joins::reject(cx, &list, &address, fingerprint.as_deref(), reason).await,
        ListAction::Held { list, open } => moderation::held(cx, &list, open).await,
        ListAction::Release { list, id } => moderation::settle(cx, &list, id, true, None).await,
        ListAction::Discard { list, id, reason } => {
            moderation::settle(cx, &list, id, false, reason).await
        }
    }
}
