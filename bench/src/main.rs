//! The benchmark harness: each hushlist figure next to its peer (Postfix, gpg, openssl)
//! measured in the same run on the same machine, printed as a table and written as JSON.
//! `bench/run` builds it in release mode and installs the peers; docs/BENCHMARKS.md has a
//! run and what limits each figure.

mod fanout;
mod keys;
mod procs;
mod seal;

use std::path::PathBuf;

use clap::Parser;
use serde::Serialize;

#[derive(Parser)]
#[command(about = "hushlist next to Postfix, gpg and openssl, in one run")]
struct Args {
    /// Members of the list for the pull-mode fan-out.
    #[arg(long, default_value_t = 10_000)]
    members: usize,
    /// Posts fanned out in pull mode.
    #[arg(long, default_value_t = 20)]
    posts: usize,
    /// Members of the push-mode list (a distinct message per member).
    #[arg(long, default_value_t = 1_000)]
    push_members: usize,
    /// Seconds each throughput measurement runs for.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Seconds spent depositing keys to measure the key server's memory as it fills.
    #[arg(long, default_value_t = 45)]
    fill_seconds: u64,
    /// Keys the key server holds when its memory is measured full (deposited keys, the rest
    /// copies added with SQL while it is stopped).
    #[arg(long, default_value_t = 1_000_000)]
    keys: u64,
    /// Run only these benchmarks (comma-separated: seal, keys, pull, push).
    #[arg(long, value_delimiter = ',', default_values_t = ["seal".to_owned(), "keys".to_owned(), "pull".to_owned(), "push".to_owned()])]
    only: Vec<String>,
    /// Where to write the results as JSON.
    #[arg(long, default_value = "target/bench-results.json")]
    json: PathBuf,
}

/// One measured figure and its peer from the same run.
#[derive(Debug, Serialize)]
pub struct Figure {
    pub name: String,
    pub ours: f64,
    pub unit: String,
    pub peer_name: String,
    pub peer: f64,
    /// ours / peer, in the direction where more is better for us; NaN for a figure that
    /// has no peer (then `peer` is NaN too, and JSON shows both as null).
    pub ratio: f64,
    pub target: String,
}

impl Figure {
    fn row(&self) -> String {
        // A figure without a peer (NaN) shows dashes rather than NaN.
        let or_dash = |value: f64, text: String| {
            if value.is_finite() { text } else { "-".into() }
        };
        format!(
            "{:<38} {:>12.1} {:<14} {:<40} {:>12} {:>9}  {}",
            self.name,
            self.ours,
            self.unit,
            self.peer_name,
            or_dash(self.peer, format!("{:.1}", self.peer)),
            or_dash(self.ratio, format!("{:.2}x", self.ratio)),
            self.target
        )
    }
}

/// Keeps new figures and shows them at once (a long run is not silent until the end).
fn measured(figures: &mut Vec<Figure>, new: Vec<Figure>) {
    for figure in &new {
        eprintln!("  {}", figure.row());
    }
    figures.extend(new);
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let started = std::time::Instant::now();
    let mut figures = Vec::new();
    let wanted = |name: &str| args.only.iter().any(|o| o == name);
    if wanted("seal") {
        eprintln!("seal/open 10 MiB, against gpg …");
        measured(&mut figures, seal::run()?);
    }
    if wanted("keys") {
        eprintln!("key requests and grants, against openssl speed x25519 …");
        measured(
            &mut figures,
            keys::run(args.seconds, args.fill_seconds, args.keys).await?,
        );
    }
    if wanted("pull") {
        eprintln!(
            "pull-mode fan-out ({} posts to {} members), against Postfix :include: …",
            args.posts, args.members
        );
        measured(&mut figures, fanout::pull(args.members, args.posts).await?);
    }
    if wanted("push") {
        eprintln!(
            "push-mode fan-out ({} members), against gpg per member and Postfix relaying …",
            args.push_members
        );
        measured(&mut figures, fanout::push(args.push_members).await?);
    }
    println!(
        "\n{:<38} {:>12} {:<14} {:<40} {:>12} {:>9}  target",
        "figure", "ours", "unit", "peer", "peer", "ratio"
    );
    for figure in &figures {
        println!("{}", figure.row());
    }
    println!("\nwhole run: {:.0} s", started.elapsed().as_secs_f64());
    if let Some(dir) = args.json.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&args.json, serde_json::to_vec_pretty(&figures)?)?;
    println!("written to {}", args.json.display());
    Ok(())
}

/// A list's owner, its members' keys, and the signed ops that create it: genesis first.
pub struct BenchList {
    pub address: hushlist_core::Address,
    pub owner: hushlist_core::SecretIdentity,
    pub members: Vec<hushlist_core::SecretIdentity>,
    pub ops: Vec<hushlist_core::roster::SignedOp>,
}

/// Makes a list with `members` readers (member00000@example.net, …) under `policy`.
pub fn bench_list(
    members: usize,
    policy: hushlist_core::roster::Policy,
) -> anyhow::Result<BenchList> {
    use hushlist_core::roster::{Change, MemberEntry, Role, Roster, sign_genesis};
    use hushlist_core::{Address, SecretIdentity};
    use rand::rngs::OsRng;
    let address = Address::parse("team@lists.bench.test")?;
    let owner_address = Address::parse("owner@example.org")?;
    let owner = SecretIdentity::generate(OsRng, owner_address.as_str())?;
    let genesis = sign_genesis(OsRng, &owner, owner_address, address.clone(), policy, 0)?;
    let mut roster = Roster::genesis(genesis.clone())?;
    let mut ops = vec![genesis];
    let mut keys = Vec::with_capacity(members);
    for i in 0..members {
        let member = format!("member{i:06}@example.net");
        let key = SecretIdentity::generate(OsRng, &member)?;
        let entry = MemberEntry {
            address: Address::parse(&member)?,
            cert: key.cert().to_armored(),
            role: Role::Reader,
        };
        let op = roster.sign_next(OsRng, &owner, 0, Change::Add { member: entry })?;
        roster.apply(op.clone())?;
        ops.push(op);
        keys.push(key);
    }
    Ok(BenchList {
        address,
        owner,
        members: keys,
        ops,
    })
}
