//! Real peers for the `hushlist` tests: the binary itself (as a user and as `hushlist serve`),
//! a private Postfix instance as the relay, Postfix's smtp-sink as the mailboxes, and gpg.

#![allow(dead_code)] // each test binary uses its own part of this module

use std::io::{BufRead as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

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

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_for_port(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{what} did not start listening on port {port}");
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

/// Lets the unprivileged users Postfix and smtp-sink run as into a test directory.
fn open_up(dir: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// smtp-sink writing each transaction it takes to a file in `dir`; killed when dropped.
pub struct SmtpSink {
    child: Child,
    pub port: u16,
    pub dir: PathBuf,
}

impl SmtpSink {
    pub fn start(dir: &Path) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        open_up(dir, 0o777);
        let port = free_port();
        let mut command = Command::new("/usr/sbin/smtp-sink");
        if running_as_root() {
            command.args(["-u", "nobody"]);
        }
        let child = command
            .args(["-d", &format!("{}/%H%M%S.", dir.display())])
            .arg(format!("127.0.0.1:{port}"))
            .arg("16")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("smtp-sink must be installed (.ci/run installs postfix)");
        wait_for_port(port, "smtp-sink");
        SmtpSink {
            child,
            port,
            dir: dir.to_owned(),
        }
    }

    /// Every message delivered to `recipient` so far, with CRLF line ends restored.
    pub fn copies_for(&self, recipient: &str) -> Vec<Vec<u8>> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&self.dir)
            .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        // smtp-sink names files by the second, so order by modification time.
        files.sort_by_key(|file| std::fs::metadata(file).and_then(|m| m.modified()).ok());
        files
            .iter()
            .filter_map(|file| std::fs::read_to_string(file).ok())
            .filter(|text| text.contains(&format!("X-Rcpt-Args: <{recipient}>")))
            .map(|text| {
                text.lines()
                    .skip_while(|l| l.starts_with("X-"))
                    .map(|l| format!("{l}\r\n"))
                    .collect::<String>()
                    .into_bytes()
            })
            .collect()
    }

    /// Waits (boundedly) until `recipient` has `count` messages and returns them.
    pub fn wait_for_copies(&self, recipient: &str, count: usize) -> Vec<Vec<u8>> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let copies = self.copies_for(recipient);
            if copies.len() >= count {
                return copies;
            }
            assert!(
                Instant::now() < deadline,
                "{recipient} got {} of {count} messages",
                copies.len()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A private Postfix instance (its own config, queue and log in a temporary directory)
/// listening on loopback and relaying everything to `relayhost_port`; stopped when dropped.
/// Postfix's master must start as root, as it does in production.
pub struct Postfix {
    config_dir: PathBuf,
    pub port: u16,
    pub log: PathBuf,
}

impl Postfix {
    pub fn start(dir: &Path, relayhost_port: u16) -> Self {
        assert!(
            running_as_root(),
            "the Postfix relay tests start a private Postfix, whose master must run as root; run them as root (as .ci/run does)"
        );
        std::fs::create_dir_all(dir).unwrap();
        open_up(dir, 0o755);
        let config_dir = dir.join("conf");
        let queue = dir.join("queue");
        let data = dir.join("data");
        for d in [&config_dir, &queue, &data] {
            std::fs::create_dir_all(d).unwrap();
        }
        let chown = Command::new("chown")
            .arg("postfix")
            .arg(&data)
            .status()
            .unwrap();
        assert!(chown.success());
        let port = free_port();
        let log = dir.join("maillog");
        // The packaged master.cf, with smtpd on our port instead of 25, outside the chroot.
        let master = std::fs::read_to_string("/etc/postfix/master.cf")
            .expect("postfix must be installed (.ci/run installs it)");
        let master: String = master
            .lines()
            .map(|line| {
                if line.starts_with("smtp ") && line.contains(" inet ") {
                    format!("127.0.0.1:{port} inet n - n - - smtpd\n")
                } else {
                    format!("{line}\n")
                }
            })
            .collect();
        std::fs::write(config_dir.join("master.cf"), master).unwrap();
        std::fs::write(
            config_dir.join("main.cf"),
            format!(
                "compatibility_level = 3.6\n\
                 queue_directory = {queue}\n\
                 data_directory = {data}\n\
                 myhostname = relay.hushlist.test\n\
                 inet_interfaces = loopback-only\n\
                 inet_protocols = ipv4\n\
                 mynetworks = 127.0.0.0/8\n\
                 mydestination =\n\
                 relay_domains =\n\
                 relayhost = [127.0.0.1]:{relayhost_port}\n\
                 alias_maps =\n\
                 alias_database =\n\
                 smtputf8_enable = no\n\
                 maillog_file_prefixes = {dir}\n\
                 maillog_file = {log}\n",
                queue = queue.display(),
                data = data.display(),
                dir = dir.display(),
                log = log.display(),
            ),
        )
        .unwrap();
        let started = Command::new("/usr/sbin/postfix")
            .arg("-c")
            .arg(&config_dir)
            .arg("start")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        let postfix = Postfix {
            config_dir,
            port,
            log,
        };
        assert!(
            started.success(),
            "postfix did not start: {}",
            postfix.log_text()
        );
        wait_for_port(port, "postfix");
        postfix
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Postfix {
    fn drop(&mut self) {
        let _ = Command::new("/usr/sbin/postfix")
            .arg("-c")
            .arg(&self.config_dir)
            .arg("stop")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
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
        let mut child = Command::new(env!("CARGO_BIN_EXE_hushlist"))
            .args(["serve", "--data-dir", data_dir.to_str().unwrap()])
            .args(["--key-http", "127.0.0.1:0", "--list-http", "127.0.0.1:0"])
            .args(["--smtp", "127.0.0.1:0", "--domain", domain])
            .args(["--relay", &format!("127.0.0.1:{relay_port}")])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
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

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A gpg home directory of one's own.
pub struct Gpg {
    home: tempfile::TempDir,
}

impl Gpg {
    pub fn new() -> Self {
        let home = tempfile::tempdir().unwrap();
        open_up(home.path(), 0o700);
        Gpg { home }
    }

    pub fn run(&self, args: &[&str], input: &[u8]) -> Output {
        let mut child = Command::new("gpg")
            .arg("--homedir")
            .arg(self.home.path())
            .args(["--batch", "--no-tty", "--pinentry-mode", "loopback"])
            .args(["--passphrase", ""])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("gpg must be installed (.ci/run installs gnupg)");
        child.stdin.take().unwrap().write_all(input).unwrap();
        child.wait_with_output().unwrap()
    }

    /// Makes a key for `user_id` the way a person would (gpg's defaults: Ed25519 signing,
    /// Cv25519 encryption) and returns its armored secret key export.
    pub fn generate(&self, user_id: &str) -> Vec<u8> {
        ok_bytes(self.run(
            &[
                "--quick-gen-key",
                user_id,
                "future-default",
                "default",
                "never",
            ],
            b"",
        ));
        ok_bytes(self.run(&["--armor", "--export-secret-keys", user_id], b""))
    }

    /// `gpg --decrypt` of the armored block in a PGP/MIME message, as a mail client does;
    /// the exit code is checked, since gpg prints tampered plaintext before failing.
    pub fn decrypt_pgp_mime(&self, message: &[u8]) -> Output {
        let text = String::from_utf8_lossy(message);
        let begin = text
            .find("-----BEGIN PGP MESSAGE-----")
            .expect("an armored PGP message");
        let end =
            text.find("-----END PGP MESSAGE-----").unwrap() + "-----END PGP MESSAGE-----".len();
        self.run(&["--decrypt"], &text.as_bytes()[begin..end])
    }
}
