//! The real programs hushlist is tested and measured against, each run privately on loopback
//! and stopped when dropped: a Postfix instance of its own (config, queue and log in a
//! directory), Postfix's smtp-sink as a mailbox, and a gpg home. Used by the test suites and
//! the benchmark harness; a missing program or a failed start panics with what to install.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits (up to 20 s) until something listens on the loopback `port`.
pub fn wait_for_port(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{what} did not start listening on port {port}");
}

pub fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

/// Lets the unprivileged users Postfix and smtp-sink run as into a test directory.
pub fn open_up(dir: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Postfix's smtp-sink on a free loopback port; killed when dropped.
pub struct SmtpSink {
    child: Child,
    pub port: u16,
    dir: Option<PathBuf>,
}

impl SmtpSink {
    /// A sink writing each transaction it takes to a file in `dir`.
    pub fn start(dir: &Path) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        open_up(dir, 0o777);
        Self::spawn(Some(dir), 16)
    }

    /// A sink that takes everything and keeps nothing, with room for `backlog` connections
    /// waiting to be accepted (a relay measured at full speed).
    pub fn start_discarding(backlog: u32) -> Self {
        Self::spawn(None, backlog)
    }

    fn spawn(dir: Option<&Path>, backlog: u32) -> Self {
        let port = free_port();
        let mut command = Command::new("/usr/sbin/smtp-sink");
        if running_as_root() {
            command.args(["-u", "nobody"]);
        }
        if let Some(dir) = dir {
            command.args(["-d", &format!("{}/%H%M%S.", dir.display())]);
        }
        let child = command
            .arg(format!("127.0.0.1:{port}"))
            .arg(backlog.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("smtp-sink must be installed (apt install postfix)");
        wait_for_port(port, "smtp-sink");
        SmtpSink {
            child,
            port,
            dir: dir.map(Path::to_owned),
        }
    }

    /// Every message delivered to `recipient` so far, with CRLF line ends restored.
    pub fn copies_for(&self, recipient: &str) -> Vec<Vec<u8>> {
        let dir = self.dir.as_ref().expect("a sink that keeps what it takes");
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
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

    /// Waits (boundedly) until `recipient` has `count` messages and returns them. smtp-sink
    /// writes a dump as the data arrives, so the copies are read again until they stop
    /// changing.
    pub fn wait_for_copies(&self, recipient: &str, count: usize) -> Vec<Vec<u8>> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let copies = self.copies_for(recipient);
            if copies.len() >= count {
                std::thread::sleep(Duration::from_millis(300));
                if self.copies_for(recipient) == copies {
                    return copies;
                }
                continue;
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
        Self::start_with(dir, relayhost_port, "")
    }

    /// Starts with `extra_main_cf` appended to the generated main.cf (later settings win).
    pub fn start_with(dir: &Path, relayhost_port: u16, extra_main_cf: &str) -> Self {
        assert!(
            running_as_root(),
            "a private Postfix instance needs root (its master starts as root); run as root, as .ci/run does"
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
        check_datagram_queue();
        let port = free_port();
        let log = dir.join("maillog");
        // The packaged master.cf, with smtpd on our port instead of 25, outside the chroot.
        let master = std::fs::read_to_string("/etc/postfix/master.cf")
            .expect("postfix must be installed (apt install postfix)");
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
                 maillog_file = {log}\n\
                 {extra_main_cf}",
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

    /// Whether the instance's queue holds no mail (`postqueue -p`).
    pub fn queue_is_empty(&self) -> bool {
        let out = Command::new("/usr/sbin/postqueue")
            .arg("-c")
            .arg(&self.config_dir)
            .arg("-p")
            .output()
            .expect("postqueue runs");
        String::from_utf8_lossy(&out.stdout).contains("Mail queue is empty")
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

/// A gpg home directory of one's own.
pub struct Gpg {
    home: tempfile::TempDir,
}

impl Default for Gpg {
    fn default() -> Self {
        Self::new()
    }
}

impl Gpg {
    pub fn new() -> Self {
        let home = tempfile::tempdir().unwrap();
        open_up(home.path(), 0o700);
        Gpg { home }
    }

    /// The home directory (`--homedir`).
    pub fn dir(&self) -> &Path {
        self.home.path()
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
            .expect("gpg must be installed (apt install gnupg)");
        child.stdin.take().unwrap().write_all(input).unwrap();
        child.wait_with_output().unwrap()
    }

    /// Runs gpg and checks that it succeeded (gpg prints tampered plaintext before failing,
    /// so its output means nothing without the exit code).
    pub fn run_ok(&self, args: &[&str], input: &[u8]) -> Output {
        let out = self.run(args, input);
        assert!(
            out.status.success(),
            "gpg {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    pub fn import(&self, keys: &[u8]) {
        self.run_ok(&["--import"], keys);
    }

    /// Makes a key for `user_id` the way a person would (gpg's defaults: Ed25519 signing,
    /// Cv25519 encryption) and returns its armored secret key export.
    pub fn generate(&self, user_id: &str) -> Vec<u8> {
        succeeded(self.run(
            &[
                "--quick-gen-key",
                user_id,
                "future-default",
                "default",
                "never",
            ],
            b"",
        ));
        succeeded(self.run(&["--armor", "--export-secret-keys", user_id], b""))
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

/// Stdout of a command that must have succeeded.
fn succeeded(out: Output) -> Vec<u8> {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Shortest Unix datagram queue with which a private Postfix's logging cannot deadlock.
const MIN_DATAGRAM_QUEUE: u64 = 512;

/// Postfix logs through postlogd over a Unix datagram socket. With the kernel's default queue
/// of 10 datagrams, postlogd can block sending its own message to its own full socket, and
/// every Postfix process then hangs on logging; fail with the remedy instead.
fn check_datagram_queue() {
    let setting = "/proc/sys/net/unix/max_dgram_qlen";
    let Some(queue) = std::fs::read_to_string(setting)
        .ok()
        .and_then(|text| text.trim().parse::<u64>().ok())
    else {
        return;
    };
    assert!(
        queue >= MIN_DATAGRAM_QUEUE,
        "{setting} is {queue}: a private Postfix's log daemon can deadlock on its own messages; \
         run `sysctl -w net.unix.max_dgram_qlen={MIN_DATAGRAM_QUEUE}` (.ci/run and bench/run do)"
    );
}

/// Runs openssl, panicking with its stderr on failure.
fn openssl(args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl must be installed (.ci/run installs it)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A test CA and a certificate it signed for localhost and 127.0.0.1, made by openssl in
/// `dir`: returns (CA certificate, leaf certificate, leaf key) paths.
pub fn test_ca_and_leaf(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    test_ca_and_leaf_for(dir, "IP:127.0.0.1,DNS:localhost")
}

/// [`test_ca_and_leaf`] with the leaf certificate valid for `subject_alt_names` (openssl's
/// syntax: `DNS:mail.example.org,IP:192.0.2.1`) instead.
pub fn test_ca_and_leaf_for(dir: &Path, subject_alt_names: &str) -> (PathBuf, PathBuf, PathBuf) {
    let path = |name: &str| dir.join(name).to_str().unwrap().to_owned();
    std::fs::write(
        path("leaf.ext"),
        format!(
            "subjectAltName={subject_alt_names}\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n"
        ),
    )
    .unwrap();
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    let (ca_key, ca, key, csr, cert) = (
        path("ca.key"),
        path("ca.pem"),
        path("leaf.key"),
        path("leaf.csr"),
        path("leaf.pem"),
    );
    openssl(
        &[
            &[
                "req",
                "-x509",
                "-days",
                "1",
                "-subj",
                "/CN=hushlist test CA",
            ][..],
            &["-keyout", &ca_key, "-out", &ca],
            &ec,
        ]
        .concat(),
    );
    openssl(
        &[
            &[
                "req",
                "-subj",
                "/CN=hushlist test server",
                "-keyout",
                &key,
                "-out",
                &csr,
            ][..],
            &ec,
        ]
        .concat(),
    );
    openssl(&[
        "x509",
        "-req",
        "-days",
        "1",
        "-CAcreateserial",
        "-in",
        &csr,
        "-CA",
        &ca,
        "-CAkey",
        &ca_key,
        "-extfile",
        &path("leaf.ext"),
        "-out",
        &cert,
    ]);
    (ca.into(), cert.into(), key.into())
}
