//! `hushlist list create/use/add/remove/policy/show/sync`: where a list lives and who is on
//! it.

use std::io::Write as _;
use std::path::Path;

use anyhow::Context as _;
use hushlist_client::lists::ListConfig;
use hushlist_client::pins::ServerLog;
use hushlist_client::rosters::{self, PolicyUpdate};
use hushlist_core::Cert;
use hushlist_core::roster::{Change, DeliveryMode, MemberEntry, OpHash, Policy, Role};
use indicatif::{ProgressBar, ProgressStyle};

use crate::context::{Context, address, my_address, now};

/// Where a list lives, as `list create` and `list use` are told.
pub struct Place {
    pub list: String,
    pub key_server: String,
    pub list_server: String,
    pub smtp: String,
    pub insecure_http: bool,
}

impl Place {
    fn config(self) -> anyhow::Result<ListConfig> {
        Ok(ListConfig {
            list: address(&self.list)?,
            key_server: self.key_server,
            list_server: self.list_server,
            smtp: self.smtp,
            insecure_http: self.insecure_http,
            pins: None,
        })
    }
}

/// `list create`: the list on both servers with this identity as its owner.
pub async fn create(
    cx: &Context,
    place: Place,
    delivery: DeliveryMode,
    admin_token: &str,
) -> anyhow::Result<()> {
    let me = cx.identity()?;
    let config = place.config()?;
    let policy = Policy {
        delivery,
        ..Policy::default()
    };
    rosters::create(
        &me,
        my_address(&me)?,
        &cx.home,
        &config,
        policy,
        admin_token,
        now(),
    )
    .await?;
    let pins = cx
        .home
        .list(&config.list)?
        .pins
        .context("the new list is pinned")?;
    println!(
        "created {} with you as owner on both servers; its genesis is {} (members give it to `hushlist list use --genesis`)",
        config.list, pins.genesis
    );
    Ok(())
}

/// `list use`: remember where the list lives and pin it (to `genesis` if given).
pub async fn use_list(cx: &Context, place: Place, genesis: Option<OpHash>) -> anyhow::Result<()> {
    let config = place.config()?;
    let given = genesis.is_some();
    let me = cx.identity()?;
    let used = cx.home.use_list(&me, config.clone(), genesis).await?;
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
            if let Some(lag) = rosters.out_of_step() {
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

/// `list add LIST ADDRESS --key FILE`.
pub async fn add(
    cx: &Context,
    list: &str,
    member: &str,
    key: &Path,
    role: Role,
) -> anyhow::Result<()> {
    let cert = std::fs::read(key).with_context(|| format!("reading {}", key.display()))?;
    let cert = Cert::from_bytes(&cert)
        .with_context(|| format!("{} is not a usable certificate", key.display()))?;
    let member = MemberEntry {
        address: address(member)?,
        cert: cert.to_armored(),
        role,
    };
    change(cx, list, Change::Add { member }).await
}

/// `list add --from-file`: every line checked first, then one signed op a member, with a
/// progress bar on a terminal.
pub async fn add_from_file(cx: &Context, list: &str, file: &Path) -> anyhow::Result<()> {
    let (me, config) = cx.identity_and_list(list)?;
    let members = rosters::read_member_file(file)?;
    let bar = ProgressBar::new(members.len() as u64).with_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} members, {eta} left  {msg}")
            .expect("a valid progress template"),
    );
    let added = rosters::add_many(&me, &cx.home, &config, members, now(), |member| {
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

/// `list remove`.
pub async fn remove(cx: &Context, list: &str, member: &str) -> anyhow::Result<()> {
    let address = address(member)?;
    change(cx, list, Change::Remove { address }).await
}

/// Signs `change` on the list's roster and sends it to both servers.
async fn change(cx: &Context, list: &str, change: Change) -> anyhow::Result<()> {
    let (me, config) = cx.identity_and_list(list)?;
    let head_seq = rosters::change(&me, &cx.home, &config, change, now()).await?;
    print_head(&config, head_seq);
    Ok(())
}

/// `list policy`: the settings given changed, the rest kept.
pub async fn policy(cx: &Context, list: &str, update: PolicyUpdate) -> anyhow::Result<()> {
    let (me, config) = cx.identity_and_list(list)?;
    let head_seq = rosters::set_policy(&me, &cx.home, &config, &update, now()).await?;
    print_head(&config, head_seq);
    Ok(())
}

fn print_head(config: &ListConfig, head_seq: u64) {
    println!("{} is at seq {head_seq} on both servers", config.list);
}

/// `list show`: members, policy, pins and both servers' heads.
pub async fn show(cx: &Context, list: &str) -> anyhow::Result<()> {
    let (me, config) = cx.identity_and_list(list)?;
    let rosters = cx.home.rosters(&me, &config).await?;
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
    match rosters.out_of_step() {
        None => writeln!(out, "both servers agree")?,
        Some(lag) => writeln!(out, "{lag}")?,
    }
    Ok(())
}

/// `list sync`: the ops one server lacks pushed to it.
pub async fn sync(cx: &Context, list: &str, admin_token: Option<&str>) -> anyhow::Result<()> {
    let config = cx.list(list)?;
    let synced = rosters::sync(&cx.identity()?, &cx.home, &config, admin_token).await?;
    println!(
        "{}: sent {} op(s) to the key server and {} to the list server; both at seq {}",
        config.list, synced.to_key_server, synced.to_list_server, synced.head_seq
    );
    Ok(())
}
