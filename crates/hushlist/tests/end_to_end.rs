//! A list used the way people use it: the `hushlist` command (real processes, one home per
//! person) against a key server and a list server (served on loopback in this process) with
//! Postfix's smtp-sink as the relay. The owner creates the list, adds two members, posts;
//! each member opens their copy; a removed member is refused.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

use hushlist_keyserver::master::MasterKey;
use hushlist_keyserver::{KeyServer, ServiceConfig};
use hushlist_listserver::delivery::{Deliverer, DeliveryConfig, RelayConfig};
use hushlist_listserver::service::ListServer;
use hushlist_listserver::smtp::{SmtpConfig, serve};
use hushlist_store::Store;
use tokio::sync::watch;

const LIST: &str = "team@lists.example.org";
const ADMIN: &str = "operators-admin-token";

fn hushlist(home: &Path, args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_hushlist"))
        .env("HUSHLIST_HOME", home)
        .env_remove("HUSHLIST_PASSPHRASE")
        .env_remove("HUSHLIST_ADMIN_TOKEN")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

fn ok(out: Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn ok_bytes(out: Output) -> Vec<u8> {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// smtp-sink, killed when dropped.
struct Sink(Child);

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// smtp-sink writing each transaction to a file in `dir`.
fn smtp_sink(port: u16, dir: &Path) -> Sink {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::create_dir_all(dir).unwrap();
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let mut command = Command::new("/usr/sbin/smtp-sink");
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0");
    if root {
        command.args(["-u", "nobody"]);
    }
    let sink = Sink(
        command
            .args(["-d", &format!("{}/%H%M%S.", dir.display())])
            .arg(format!("127.0.0.1:{port}"))
            .arg("16")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("smtp-sink must be installed (.ci/run installs postfix)"),
    );
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return sink;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("smtp-sink did not start");
}

/// The message smtp-sink took for `recipient`, with CRLF line ends restored.
fn copy_for(dir: &Path, recipient: &str) -> Option<Vec<u8>> {
    for entry in std::fs::read_dir(dir).ok()? {
        let text = std::fs::read_to_string(entry.ok()?.path()).ok()?;
        if !text.contains(&format!("X-Rcpt-Args: <{recipient}>")) {
            continue;
        }
        let message: String = text
            .lines()
            .skip_while(|l| l.starts_with("X-"))
            .map(|l| format!("{l}\r\n"))
            .collect();
        return Some(message.into_bytes());
    }
    None
}

async fn start_servers(dir: &Path, relay_port: u16) -> (String, String, u16, watch::Sender<bool>) {
    let open = |name: &str| format!("sqlite://{}", dir.join(name).display());
    let keys = KeyServer::start(
        Store::open(&open("keys.db")).await.unwrap(),
        MasterKey::from_bytes(&[3; 32]),
        ServiceConfig {
            admin_token: ADMIN.into(),
            grants_token: "grants".into(),
            ..ServiceConfig::default()
        },
        "keys <keys@example.org>",
    )
    .await
    .unwrap();
    let key_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let key_url = format!("http://{}", key_listener.local_addr().unwrap());
    let key_app = hushlist_keyserver::router(Arc::new(keys));
    tokio::spawn(async move { axum::serve(key_listener, key_app).await.unwrap() });

    let lists = Arc::new(
        ListServer::new(Store::open(&open("lists.db")).await.unwrap())
            .with_admin_token(ADMIN.into())
            .with_key_server(key_url.clone()),
    );
    let http_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let list_url = format!("http://{}", http_listener.local_addr().unwrap());
    let list_app = hushlist_listserver::http::router(lists.clone());
    tokio::spawn(async move { axum::serve(http_listener, list_app).await.unwrap() });
    let smtp_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let smtp_port = smtp_listener.local_addr().unwrap().port();
    tokio::spawn(serve(
        smtp_listener,
        Arc::new(SmtpConfig::default()),
        lists.clone(),
        16,
        None,
        std::future::pending(),
    ));
    let mut delivery = DeliveryConfig::new(RelayConfig {
        host: "127.0.0.1".into(),
        port: relay_port,
        helo_name: "lists.example.org".into(),
        timeout: Duration::from_secs(10),
        starttls: None,
    });
    delivery.poll_interval = Duration::from_millis(100);
    let (stop, stopped) = watch::channel(false);
    Deliverer::new(&lists, delivery).spawn(stopped);
    (key_url, list_url, smtp_port, stop)
}

struct Person {
    address: &'static str,
    home: PathBuf,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owner_creates_a_list_posts_and_members_open_it_until_removed() {
    let dir = tempfile::tempdir().unwrap();
    let relay_port = free_port();
    let sink_dir = dir.path().join("sink");
    let _sink = smtp_sink(relay_port, &sink_dir);
    let (key_url, list_url, smtp_port, _stop) = start_servers(dir.path(), relay_port).await;
    let smtp = format!("127.0.0.1:{smtp_port}");

    let people: Vec<Person> = ["olivia@example.org", "alice@example.net", "bob@example.net"]
        .into_iter()
        .map(|address| Person {
            address,
            home: dir.path().join(address),
        })
        .collect();
    let [olivia, alice, bob] = &people[..] else {
        unreachable!()
    };
    let run = |person: &Person, args: Vec<String>, stdin: Vec<u8>| {
        let home = person.home.clone();
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            hushlist(&home, &args, &stdin)
        })
    };
    let args = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    for person in &people {
        ok(
            run(person, args(&["init", "--email", person.address]), vec![])
                .await
                .unwrap(),
        );
    }

    // No list yet: a clear error.
    let out = run(
        olivia,
        args(&["send", "--list", LIST, "--subject", "x"]),
        b"x".to_vec(),
    )
    .await
    .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not a list this home knows"));

    ok(run(
        olivia,
        args(&[
            "list",
            "create",
            LIST,
            "--key-server",
            &key_url,
            "--list-server",
            &list_url,
            "--smtp",
            &smtp,
            "--admin-token",
            ADMIN,
        ]),
        vec![],
    )
    .await
    .unwrap());
    for member in [alice, bob] {
        let cert = ok(run(member, args(&["key", "export"]), vec![]).await.unwrap());
        let cert_file = dir.path().join(format!("{}.asc", member.address));
        std::fs::write(&cert_file, cert).unwrap();
        ok(run(
            olivia,
            args(&[
                "list",
                "add",
                LIST,
                member.address,
                "--key",
                cert_file.to_str().unwrap(),
            ]),
            vec![],
        )
        .await
        .unwrap());
        ok(run(
            member,
            args(&[
                "list",
                "use",
                LIST,
                "--key-server",
                &key_url,
                "--list-server",
                &list_url,
                "--smtp",
                &smtp,
            ]),
            vec![],
        )
        .await
        .unwrap());
    }
    let shown = ok(run(olivia, args(&["list", "show", LIST]), vec![])
        .await
        .unwrap());
    assert!(shown.contains("both servers agree"), "{shown}");
    assert!(shown.contains("alice@example.net"), "{shown}");

    let sent = run(
        olivia,
        args(&["send", "--list", LIST, "--subject", "Quarterly numbers"]),
        b"Revenue is up.\n".to_vec(),
    )
    .await
    .unwrap();
    let report = String::from_utf8_lossy(&sent.stderr).into_owned();
    ok(sent);
    let key_id = report
        .split("(key ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no key id in {report}"))
        .to_owned();

    let mut copies = Vec::new();
    for member in [alice, bob] {
        let mut copy = None;
        for _ in 0..200 {
            copy = copy_for(&sink_dir, member.address);
            if copy.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let copy = copy.unwrap_or_else(|| panic!("no copy for {}", member.address));
        assert!(String::from_utf8_lossy(&copy).contains("Subject: [...]"));
        let opened = ok(run(member, args(&["open"]), copy.clone()).await.unwrap());
        assert!(
            opened.starts_with("Hushlist-Verified-Signer: olivia@example.org ("),
            "{opened}"
        );
        assert!(opened.contains("Subject: Quarterly numbers"), "{opened}");
        assert!(opened.contains("Revenue is up."), "{opened}");
        copies.push(copy);
    }

    // A tampered copy is refused, never printed.
    let mut tampered = copies[0].clone();
    let at = tampered.len() - 200;
    tampered[at] = if tampered[at] == b'A' { b'B' } else { b'A' };
    let out = run(alice, args(&["open"]), tampered).await.unwrap();
    assert!(!out.status.success());
    assert!(
        out.stdout.is_empty(),
        "nothing of a tampered post is printed"
    );

    // --splice gives a standard PGP/MIME message that gpg opens with Alice's key alone.
    let spliced = run(alice, args(&["open", "--splice"]), copies[0].clone())
        .await
        .unwrap();
    let spliced = ok_bytes(spliced);
    let gpg_home = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        gpg_home.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    let gpg = |args: &[&str], input: &[u8]| {
        let mut child = Command::new("gpg")
            .arg("--homedir")
            .arg(gpg_home.path())
            .args([
                "--batch",
                "--no-tty",
                "--pinentry-mode",
                "loopback",
                "--passphrase",
                "",
            ])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("gpg must be installed (.ci/run installs gnupg)");
        child.stdin.take().unwrap().write_all(input).unwrap();
        child.wait_with_output().unwrap()
    };
    let olivia_cert = ok_bytes(run(olivia, args(&["key", "export"]), vec![]).await.unwrap());
    for key in [
        std::fs::read(alice.home.join("identity.asc")).unwrap(),
        olivia_cert,
    ] {
        assert!(gpg(&["--import"], &key).status.success());
    }
    // As a PGP/MIME client does: the second part's armored block goes to gpg.
    let text = String::from_utf8(spliced).unwrap();
    let begin = text.find("-----BEGIN PGP MESSAGE-----").unwrap();
    let end = text.find("-----END PGP MESSAGE-----").unwrap() + "-----END PGP MESSAGE-----".len();
    let decrypted = gpg(&["--decrypt"], &text.as_bytes()[begin..end]);
    assert!(
        decrypted.status.success(),
        "{}",
        String::from_utf8_lossy(&decrypted.stderr)
    );
    assert!(String::from_utf8_lossy(&decrypted.stdout).contains("Revenue is up."));

    // Alice posts the way mutt or git send-email would, through `hushlist sendmail`.
    let from_alice = format!(
        "From: Alice <{}>\nTo: {LIST}\nSubject: Re: Quarterly numbers\n\nAnd costs are down.\n",
        alice.address
    );
    ok(run(
        alice,
        args(&["sendmail", "-oi", "-oem", "-f", alice.address, LIST]),
        from_alice.into_bytes(),
    )
    .await
    .unwrap());
    let out = run(
        alice,
        args(&["sendmail", "-oi", "somebody@example.com"]),
        b"From: alice@example.net\n\nx\n".to_vec(),
    )
    .await
    .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not a list this home knows"));

    // The archive holds both posts; a member opens the second from it.
    let listing = ok(run(bob, args(&["archive", LIST]), vec![]).await.unwrap());
    let ids: Vec<&str> = listing
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(ids.len(), 2, "{listing}");
    let opened = ok(run(bob, args(&["archive", LIST, "--open", ids[1]]), vec![])
        .await
        .unwrap());
    assert!(
        opened.starts_with("Hushlist-Verified-Signer: alice@example.net ("),
        "{opened}"
    );
    assert!(opened.contains("And costs are down."), "{opened}");

    // The owner lets only owners post from now on: Alice's next post is refused (by the key
    // server, which will not take its key, before the list server would refuse it at DATA).
    ok(run(
        olivia,
        args(&["list", "policy", LIST, "--posters", "owners"]),
        vec![],
    )
    .await
    .unwrap());
    let shown = ok(run(olivia, args(&["list", "show", LIST]), vec![])
        .await
        .unwrap());
    assert!(shown.contains("posters: Owners"), "{shown}");
    assert!(shown.contains("both servers agree"), "{shown}");
    let out = run(
        alice,
        args(&["send", "--list", LIST, "--subject", "refused"]),
        b"x".to_vec(),
    )
    .await
    .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("lets only Owners post"), "{err}");

    // Bob is removed; his old copy no longer opens.
    ok(
        run(olivia, args(&["list", "remove", LIST, bob.address]), vec![])
            .await
            .unwrap(),
    );
    let out = run(bob, args(&["open"]), copies[1].clone()).await.unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("key server refused"), "{err}");
    assert!(out.stdout.is_empty());

    // The sender sees who fetched the key, then destroys it: nobody can open the post now.
    let audit = ok(run(olivia, args(&["audit", &key_id]), vec![])
        .await
        .unwrap());
    assert_eq!(audit.matches(" deposit stored").count(), 1, "{audit}");
    // Alice opened it twice (once the tampered copy) and spliced it once; Bob opened it once,
    // then was refused.
    assert_eq!(audit.matches(" release released").count(), 4, "{audit}");
    assert_eq!(audit.matches(" release refused").count(), 1, "{audit}");
    ok(run(olivia, args(&["revoke", &key_id]), vec![])
        .await
        .unwrap());
    let out = run(alice, args(&["open"]), copies[0].clone())
        .await
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("destroyed"), "{err}");

    // A home pointed at servers that are not running says so.
    let dead = format!("http://127.0.0.1:{}", free_port());
    ok(run(
        alice,
        args(&[
            "list",
            "use",
            "other@lists.example.org",
            "--key-server",
            &dead,
            "--list-server",
            &dead,
            "--smtp",
            &smtp,
        ]),
        vec![],
    )
    .await
    .unwrap());
    let out = run(
        alice,
        args(&[
            "send",
            "--list",
            "other@lists.example.org",
            "--subject",
            "x",
        ]),
        b"x".to_vec(),
    )
    .await
    .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot reach the key server"), "{err}");
}
