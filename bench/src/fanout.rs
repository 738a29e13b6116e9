//! Fan-out through the real list server to Postfix's smtp-sink, next to Postfix doing the
//! same job: expanding a `:include:` alias (pull mode: one ciphertext, many recipients per
//! transaction) and relaying distinct messages (push mode: a message per member), plus gpg
//! encrypting a post to each member in turn (what a re-encrypting list does per post).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use hushlist_client::remote::{Server as Remote, submit};
use hushlist_core::roster::{DeliveryMode, Policy};
use hushlist_envelope::{Sealed, seal};
use hushlist_listserver::service::ListServer;
use hushlist_peers::{Gpg, Postfix, SmtpSink, open_up};
use mail_send::smtp::AssertReply as _;
use mail_send::smtp::message::Parameters;
use rand::rngs::OsRng;

use crate::procs::{Server, metric, run_command, run_within, wait_until};
use crate::{BenchList, Figure, bench_list};

const POST_BYTES: usize = 5 * 1024;
const DELIVERED: &str = "hushlist_listserver_queue{state=\"delivered\"}";

/// A 5 KiB post by the list's owner, sealed.
fn sealed_post(list: &BenchList, n: usize, key_server: &str) -> anyhow::Result<Sealed> {
    let text = format!(
        "From: owner@example.org\r\nTo: {}\r\nSubject: post {n}\r\nMessage-ID: <bench-{n}@example.org>\r\n\r\n{}\r\n",
        list.address,
        "All the news that fits. ".repeat(POST_BYTES / 24)
    );
    Ok(seal(OsRng, text.as_bytes(), &list.owner, key_server)?)
}

/// Starts the list server binary on `data`, relaying to `relay_port`; returns it with its
/// SMTP address and HTTP base URL.
fn start_list_server(
    data: &Path,
    relay_port: u16,
    extra: &[&str],
) -> anyhow::Result<(Server, String, String)> {
    let relay = format!("127.0.0.1:{relay_port}");
    let mut args = vec![
        "--data-dir",
        data.to_str().context("UTF-8 path")?,
        "--smtp-listen",
        "127.0.0.1:0",
        "--http-listen",
        "127.0.0.1:0",
        "--relay",
        &relay,
        // No DMARC lookups: the benchmark measures the fan-out, on loopback.
        "--dns-resolver",
        "none",
    ];
    args.extend_from_slice(extra);
    let server = Server::start("hushlist-listserver", &args, 2)?;
    let smtp = server.announced[0]
        .strip_prefix("smtp on ")
        .context("an \"smtp on\" line")?
        .to_owned();
    let url = server.url()?;
    Ok((server, smtp, url))
}

/// Asks the list server, over SMTP, whether it takes mail for the list (MAIL, RCPT, QUIT);
/// its first answer for a list reads and verifies the whole roster, which is then held in
/// memory. Returns how long that took, so that it is reported apart from the fan-out.
async fn load_roster(smtp: &str, list: &BenchList) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let address = smtp.parse()?;
    let mut client = mail_send::SmtpClient::connect(address, Duration::from_secs(600)).await?;
    client.read().await?.assert_positive_completion()?;
    client.ehlo("bench.test").await?;
    let no_parameters = Parameters::default();
    client
        .mail_from("owner@example.org", &no_parameters)
        .await?;
    client
        .rcpt_to(list.address.as_str(), &no_parameters)
        .await?;
    let loaded = started.elapsed();
    client.quit().await?;
    Ok(loaded)
}

/// Hands `posts` to the list server and waits until `deliveries` copies are out; returns
/// the elapsed time.
async fn fan_out(
    list: &BenchList,
    smtp: &str,
    http_base: &str,
    posts: &[Vec<u8>],
    deliveries: i64,
) -> anyhow::Result<Duration> {
    let http = reqwest::Client::new();
    let owner = hushlist_core::Address::parse("owner@example.org")?;
    let started = Instant::now();
    for post in posts {
        submit(smtp, &owner, &list.address, post).await?;
    }
    let finished = wait_until(Duration::from_secs(600), "the fan-out", || async {
        Ok(metric(&http, http_base, DELIVERED).await? >= deliveries)
    })
    .await?;
    Ok(finished - started)
}

/// Starts Postfix, runs smtp-source against it, and waits until its queue is empty; returns
/// the elapsed time and the number of deliveries to the sink in its log.
fn postfix_run(
    postfix: &Postfix,
    sink_port: u16,
    messages: usize,
    to: &str,
) -> anyhow::Result<(Duration, usize)> {
    let started = Instant::now();
    run_within(
        "/usr/sbin/smtp-source",
        &[
            "-s",
            "4",
            "-m",
            &messages.to_string(),
            "-l",
            &POST_BYTES.to_string(),
            "-f",
            "owner@example.org",
            "-t",
            to,
            &format!("127.0.0.1:{}", postfix.port),
        ],
        // Injecting takes seconds; expanding and relaying happen after, in Postfix's queue.
        Duration::from_secs(120),
    )?;
    let deadline = started + Duration::from_secs(600);
    while !postfix.queue_is_empty() {
        ensure!(Instant::now() < deadline, "Postfix did not empty its queue");
        std::thread::sleep(Duration::from_millis(50));
    }
    let elapsed = started.elapsed();
    let relayed = format!("relay=127.0.0.1[127.0.0.1]:{sink_port},");
    let sent = postfix
        .log_text()
        .lines()
        .filter(|l| l.contains(&relayed) && l.contains("status=sent"))
        .count();
    Ok((elapsed, sent))
}

/// Creates the list in a list server store before the server runs.
async fn prepare_list_server(data: &Path, list: &BenchList) -> anyhow::Result<()> {
    std::fs::create_dir_all(data)?;
    let store = hushlist_store::ListStore::open(&format!(
        "sqlite://{}",
        data.join("listserver.db").display()
    ))
    .await?;
    let server = ListServer::new(store);
    server.rosters().create(list.ops[0].clone()).await?;
    for op in &list.ops[1..] {
        server.rosters().append(&list.address, op.clone()).await?;
    }
    Ok(())
}

pub async fn pull(members: usize, posts: usize) -> anyhow::Result<Vec<Figure>> {
    let dir = tempfile::tempdir()?;
    open_up(dir.path(), 0o755);
    let list = bench_list(members, Policy::default())?;
    let data = dir.path().join("lists");
    prepare_list_server(&data, &list).await?;
    let sealed: Vec<Vec<u8>> = (0..posts)
        .map(|n| Ok(sealed_post(&list, n, "https://keys.bench.test")?.message))
        .collect::<anyhow::Result<_>>()?;

    let sink = SmtpSink::start_discarding(1024);
    let (server, smtp, http) = start_list_server(&data, sink.port, &[])?;
    let roster_load = load_roster(&smtp, &list).await?;
    let deliveries = (posts * (members + 1)) as i64;
    let ours = fan_out(&list, &smtp, &http, &sealed, deliveries).await?;
    let rss = server.peak_rss_mib()?;
    drop(server);

    // Postfix: the same members behind an :include: alias, the same number of posts.
    let postfix_dir = dir.path().join("postfix");
    std::fs::create_dir_all(&postfix_dir)?;
    let include = postfix_dir.join("members.txt");
    let addresses: String = (0..members)
        .map(|i| format!("member{i:06}@example.net\n"))
        .collect();
    std::fs::write(&include, addresses)?;
    let aliases = postfix_dir.join("aliases");
    std::fs::write(&aliases, format!("team: :include:{}\n", include.display()))?;
    // The alias map must exist before Postfix starts (smtpd opens it to know its local
    // recipients); postalias needs a configuration, and there may be no /etc/postfix/main.cf.
    let postalias_conf = postfix_dir.join("postalias");
    std::fs::create_dir_all(&postalias_conf)?;
    std::fs::write(postalias_conf.join("main.cf"), "")?;
    run_command(
        "/usr/sbin/postalias",
        &[
            "-c",
            postalias_conf.to_str().context("UTF-8")?,
            aliases.to_str().context("UTF-8")?,
        ],
    )?;
    let postfix = Postfix::start_with(
        &postfix_dir,
        sink.port,
        &format!(
            "mydestination = lists.bench.test\nalias_maps = hash:{0}\nalias_database = hash:{0}\n",
            aliases.display()
        ),
    );
    let (theirs, sent) = postfix_run(&postfix, sink.port, posts, "team@lists.bench.test")?;
    ensure!(
        sent == posts * members,
        "Postfix delivered {sent} of {} (see {})",
        posts * members,
        postfix.log.display()
    );

    let our_rate = deliveries as f64 / ours.as_secs_f64();
    let their_rate = (posts * members) as f64 / theirs.as_secs_f64();
    Ok(vec![
        Figure {
            name: format!("pull fan-out, {posts} x {members} members"),
            ours: our_rate,
            unit: "deliveries/s".into(),
            peer_name: "Postfix :include: alias expansion".into(),
            peer: their_rate,
            ratio: our_rate / their_rate,
            target: ">= 5x Postfix".into(),
        },
        Figure {
            name: format!("roster load, {members} members"),
            ours: roster_load.as_secs_f64(),
            unit: "s (once)".into(),
            peer_name: "(none: Postfix trusts its alias file)".into(),
            peer: f64::NAN,
            ratio: f64::NAN,
            target: "(once, after a start)".into(),
        },
        Figure {
            name: format!("list server peak RSS, {members} members"),
            ours: rss,
            unit: "MiB".into(),
            peer_name: "target at 100,000 members".into(),
            peer: 100.0,
            ratio: 100.0 / rss,
            target: "< 100 MB, flat".into(),
        },
    ])
}

pub async fn push(members: usize) -> anyhow::Result<Vec<Figure>> {
    const POSTS: usize = 5;
    const GPG_MEMBERS: usize = 50;
    const POSTFIX_MESSAGES: usize = 2000;
    let dir = tempfile::tempdir()?;
    open_up(dir.path(), 0o755);
    let list = bench_list(
        members,
        Policy {
            delivery: DeliveryMode::Push,
            ..Policy::default()
        },
    )?;

    let key_data = dir.path().join("keys");
    let keys = Server::start(
        "hushlist-keyserver",
        &[
            "--data-dir",
            key_data.to_str().context("UTF-8")?,
            "--listen",
            "127.0.0.1:0",
        ],
        1,
    )?;
    let key_url = keys.url()?;
    let key_server = Remote::key_server(&key_url);
    let admin = std::fs::read_to_string(key_data.join("admin.token"))?;
    key_server.create_list(admin.trim(), &list.ops[0]).await?;
    for op in &list.ops[1..] {
        key_server.append_op(&list.address, op).await?;
    }
    let data = dir.path().join("lists");
    prepare_list_server(&data, &list).await?;
    let sink = SmtpSink::start_discarding(1024);
    let grants_file = key_data.join("grants.token");
    let (server, smtp, http) = start_list_server(
        &data,
        sink.port,
        &[
            "--key-server",
            &key_url,
            "--grants-token-file",
            grants_file.to_str().context("UTF-8")?,
        ],
    )?;
    let mut sealed = Vec::new();
    let server_cert = key_server.server_cert().await?;
    for n in 0..POSTS {
        let post = sealed_post(&list, n, &key_url)?;
        key_server
            .deposit(
                &list.owner,
                &list.address,
                &post.key_id,
                &post.session_key,
                &server_cert,
            )
            .await?;
        sealed.push(post.message);
    }
    let deliveries = (POSTS * (members + 1)) as i64;
    let ours = fan_out(&list, &smtp, &http, &sealed, deliveries).await?;
    drop((server, keys));
    let our_rate = deliveries as f64 / ours.as_secs_f64();

    // gpg: one post encrypted to each member in turn.
    let gpg = Gpg::new();
    for member in &list.members[..GPG_MEMBERS] {
        gpg.import(member.cert().to_armored().as_bytes());
    }
    let post = dir.path().join("post.txt");
    std::fs::write(&post, "All the news that fits. ".repeat(POST_BYTES / 24))?;
    let post_s = post.to_str().context("UTF-8")?;
    let started = Instant::now();
    for (i, member) in list.members[..GPG_MEMBERS].iter().enumerate() {
        let out = dir.path().join(format!("post.{i}.asc"));
        let recipient = member.fingerprint().to_string();
        gpg.run_ok(
            &[
                "--trust-model",
                "always",
                "--armor",
                "-o",
                out.to_str().context("UTF-8")?,
                "-r",
                &recipient,
                "--encrypt",
                post_s,
            ],
            b"",
        );
    }
    let gpg_rate = GPG_MEMBERS as f64 / started.elapsed().as_secs_f64();

    // Postfix relaying distinct messages, one recipient each.
    let postfix = Postfix::start(&dir.path().join("postfix"), sink.port);
    let (theirs, sent) = postfix_run(
        &postfix,
        sink.port,
        POSTFIX_MESSAGES,
        "member000000@example.net",
    )?;
    ensure!(
        sent == POSTFIX_MESSAGES,
        "Postfix relayed {sent} of {POSTFIX_MESSAGES}"
    );
    let postfix_rate = POSTFIX_MESSAGES as f64 / theirs.as_secs_f64();

    Ok(vec![
        Figure {
            name: format!("push fan-out, {POSTS} x {members} members"),
            ours: our_rate,
            unit: "deliveries/s".into(),
            peer_name: "Postfix relaying distinct messages".into(),
            peer: postfix_rate,
            ratio: our_rate / postfix_rate,
            target: ">= 4x Postfix".into(),
        },
        Figure {
            name: "push fan-out, per member".into(),
            ours: our_rate,
            unit: "members/s".into(),
            peer_name: "gpg --encrypt once per member".into(),
            peer: gpg_rate,
            ratio: our_rate / gpg_rate,
            target: ">= 100x gpg".into(),
        },
    ])
}
