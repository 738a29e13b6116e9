//! The `hushlist` binary itself for the tests (as a user and as `hushlist serve`), and the
//! real peers from `hushlist-peers`: a private Postfix instance as the relay, Postfix's
//! smtp-sink as the mailboxes, and gpg.

#![allow(dead_code)] // each test binary uses its own part of this module

use std::io::{BufRead as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

pub const ADMIN_ENV: &str = "HUSHLIST_ADMIN_TOKEN";

/// Runs the `hushlist` binary as the person whose home is `home`.
pub fn hushlist(home: &Path, args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_hushlist"))
        .env("HUSHLIST_HOME", home)
        .env_remove("HUSHLIST_PASSPHRASE")
        .env_remove(ADMIN_ENV)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

/// Someone using the `hushlist` command, with a home of their own made by `hushlist init`.
pub struct Person {
    pub address: &'static str,
    pub home: PathBuf,
}

impl Person {
    /// A new identity for `address`, in a home named after it under `dir`.
    pub fn new(dir: &Path, address: &'static str) -> Self {
        Self::named(dir, address, address)
    }

    /// A new identity for `address` in the home `dir/name` (for two homes of one address).
    pub fn named(dir: &Path, name: &str, address: &'static str) -> Self {
        let person = Person {
            address,
            home: dir.join(name),
        };
        ok(person.run(&["init", "--email", address]));
        person
    }

    pub fn run(&self, args: &[&str]) -> Output {
        hushlist(&self.home, args, b"")
    }

    pub fn run_with(&self, args: &[&str], stdin: &[u8]) -> Output {
        hushlist(&self.home, args, stdin)
    }

    /// The secret key `init` made, as the person's own programs would load it.
    pub fn identity(&self) -> hushlist_core::SecretIdentity {
        hushlist_core::SecretIdentity::from_bytes(
            &std::fs::read(self.home.join("identity.asc")).unwrap(),
            "",
        )
        .unwrap()
    }
}

/// Stdout of a command that must have succeeded.
pub fn ok(out: Output) -> String {
    String::from_utf8(ok_bytes(out)).unwrap()
}

pub fn ok_bytes(out: Output) -> Vec<u8> {
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Stderr of a command that must have failed without printing anything on stdout.
pub fn refused(out: Output) -> String {
    assert!(
        !out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        out.stdout.is_empty(),
        "a refusal prints nothing: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `hushlist serve`: both servers in one real process on free loopback ports; killed when
/// dropped.
pub struct Served {
    child: Child,
    pub key_url: String,
    pub list_url: String,
    pub smtp: String,
    pub admin_token: String,
}

impl Served {
    pub fn start(data_dir: &Path, relay_port: u16, domain: &str) -> Self {
        Self::start_on(data_dir, relay_port, domain, "127.0.0.1:0", "127.0.0.1:0")
    }

    /// Like [`Served::start`], with the key server's and list server's HTTP on the given
    /// addresses (to stand in for servers that were there before).
    pub fn start_on(
        data_dir: &Path,
        relay_port: u16,
        domain: &str,
        key_http: &str,
        list_http: &str,
    ) -> Self {
        let mut serve = Command::new(env!("CARGO_BIN_EXE_hushlist"));
        serve
            .arg("serve")
            .args(["--key-http", key_http, "--list-http", list_http])
            .stderr(Stdio::null());
        Self::spawn(serve, data_dir, relay_port, domain)
    }

    /// Like [`Served::start`], with the servers' logs (stderr) written to `log`, as JSON
    /// lines with `json`.
    pub fn start_logging(
        data_dir: &Path,
        relay_port: u16,
        domain: &str,
        log: &Path,
        json: bool,
    ) -> Self {
        let mut serve = Command::new(env!("CARGO_BIN_EXE_hushlist"));
        serve
            .arg("serve")
            .args(["--key-http", "127.0.0.1:0", "--list-http", "127.0.0.1:0"])
            .stderr(std::fs::File::create(log).unwrap());
        if json {
            serve.arg("--log-json");
        }
        Self::spawn(serve, data_dir, relay_port, domain)
    }

    fn spawn(mut serve: Command, data_dir: &Path, relay_port: u16, domain: &str) -> Self {
        // Tests stay on loopback: no DMARC lookups, so copies are From the list unless the
        // list's rule says never.
        let config = data_dir.with_extension("toml");
        std::fs::write(&config, "[lists]\ndns_resolver = \"none\"\n").unwrap();
        let mut child = serve
            .args(["--config", config.to_str().unwrap()])
            .args(["--data-dir", data_dir.to_str().unwrap()])
            .args(["--smtp", "127.0.0.1:0", "--domain", domain])
            .args(["--relay", &format!("127.0.0.1:{relay_port}")])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let mut next = || lines.next().and_then(Result::ok).unwrap_or_default();
        // "key server on URL (admin token in FILE)"
        let keys = next();
        // "list server on URL, SMTP ADDR (admin token in FILE)"
        let lists = next();
        let word = |line: &str, n: usize| {
            line.split_whitespace()
                .nth(n)
                .unwrap_or_else(|| panic!("unexpected serve output {line:?}"))
                .trim_end_matches(',')
                .to_owned()
        };
        let admin_token = std::fs::read_to_string(data_dir.join("admin.token"))
            .unwrap()
            .trim()
            .to_owned();
        Served {
            key_url: word(&keys, 3),
            list_url: word(&lists, 3),
            smtp: word(&lists, 5),
            admin_token,
            child,
        }
    }
}

impl Served {
    /// The options that name these servers to `list create` and `list use`.
    pub fn servers(&self) -> [&str; 6] {
        [
            "--key-server",
            &self.key_url,
            "--list-server",
            &self.list_url,
            "--smtp",
            &self.smtp,
        ]
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Mailboxes (Postfix's smtp-sink, under `dir`) and `hushlist serve` for lists.example.org
/// (its data in `dir`) relaying to them.
pub fn served_to_mailboxes(dir: &Path) -> (hushlist_peers::SmtpSink, Served) {
    let mailboxes = hushlist_peers::SmtpSink::start(&dir.join("mailboxes"));
    let served = Served::start(&dir.join("data"), mailboxes.port, "lists.example.org");
    (mailboxes, served)
}

/// `outer` with its proof of origin replaced by one `who` signs now for `list`, over the
/// key id and OpenPGP data `outer` carries: what a member's own posting program sends.
pub fn proved_by(outer: &[u8], who: &hushlist_core::SecretIdentity, list: &str) -> Vec<u8> {
    use hushlist_core::outer::EncryptedPost;
    use hushlist_core::post_proof::{POST_PROOF_HEADER, PostProof};
    let post = EncryptedPost::parse(outer).unwrap();
    let proof = PostProof::sign(
        rand::rngs::OsRng,
        who,
        &[hushlist_core::Address::parse(list).unwrap()],
        &post.key_id,
        &post.packets,
        hushlist_testkit::now(),
    )
    .unwrap();
    let text = String::from_utf8(outer.to_vec()).unwrap();
    let start = text.find(&format!("{POST_PROOF_HEADER}: ")).unwrap();
    let end = start
        + text[start..]
            .match_indices("\r\n")
            .map(|(i, _)| i + 2)
            .find(|&i| !text[start + i..].starts_with(' '))
            .unwrap();
    format!(
        "{}{POST_PROOF_HEADER}: {}\r\n{}",
        &text[..start],
        proof.to_header_value(),
        &text[end..]
    )
    .into_bytes()
}

/// `owner` creates `list` on `served`; each of `members` is added with its role and uses it.
pub fn list_with(served: &Served, list: &str, owner: &Person, members: &[(&Person, &str)]) {
    create_list(served, list, owner, &[]);
    for (member, role) in members {
        add_member(list, owner, member, role);
        use_list(served, list, member);
    }
}

/// `owner` creates `list` on `served` with the operator's admin token and `extra` options
/// (`--mode`, say); what the command printed.
pub fn create_list(served: &Served, list: &str, owner: &Person, extra: &[&str]) -> String {
    let admin = ["--admin-token", &served.admin_token];
    ok(owner.run(
        &[
            &["list", "create", list][..],
            &served.servers(),
            &admin,
            extra,
        ]
        .concat(),
    ))
}

/// `owner` adds `member` to `list` as `role`, with the certificate `member` exports.
pub fn add_member(list: &str, owner: &Person, member: &Person, role: &str) {
    let cert = member
        .home
        .parent()
        .unwrap()
        .join(format!("{}.asc", member.address));
    std::fs::write(&cert, ok_bytes(member.run(&["key", "export"]))).unwrap();
    ok(owner.run(&[
        "list",
        "add",
        list,
        member.address,
        "--key",
        cert.to_str().unwrap(),
        "--role",
        role,
    ]));
}

/// `member` points their home at `list` on `served` (what a member does once).
pub fn use_list(served: &Served, list: &str, member: &Person) {
    ok(member.run(&[&["list", "use", list][..], &served.servers()].concat()));
}
