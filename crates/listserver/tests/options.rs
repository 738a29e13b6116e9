//! The list server's options, declared once (`hushlist_listserver::options::ListOptions`):
//! the same settings given as flags (real clap parsing, as the `hushlist-listserver` binary and
//! `hushlist serve lists` do) and as TOML (real toml parsing, as `hushlist serve`'s `[lists]`
//! section) give the same daemon config; a bad set reports every problem at once, named as the
//! flag or the TOML key; an unknown key is refused by name.

use clap::{Args as _, Parser};
use hushlist_http::options::OptionSet as _;
use hushlist_listserver::daemon::ListDaemonConfig;
use hushlist_listserver::delivery::DnsResolver;
use hushlist_listserver::options::ListOptions;

#[derive(Parser)]
struct Flags {
    #[command(flatten)]
    options: ListOptions,
}

fn from_flags(flags: &[&str]) -> ListOptions {
    Flags::try_parse_from(std::iter::once("hushlist-listserver").chain(flags.iter().copied()))
        .unwrap()
        .options
}

fn check(options: ListOptions) -> ListDaemonConfig {
    options
        .check("data/lists".into(), "lists.example.org")
        .unwrap()
}

#[test]
fn the_same_settings_as_flags_and_as_toml_give_the_same_config() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("grants.token");
    std::fs::write(&token_file, "grants-secret\n").unwrap();
    let token_file = token_file.to_str().unwrap();
    let (relay_ca, _, _) = hushlist_peers::test_ca_and_leaf(dir.path());
    let relay_ca = relay_ca.to_str().unwrap();
    #[rustfmt::skip]
    let flags = [
        "--http-listen", "127.0.0.2:9471",
        "--smtp-listen", "[::1]:2600",
        "--database", "postgres://db.internal/lists",
        "--relay", "[::1]:2526",
        "--relay-timeout-secs", "20",
        "--relay-starttls",
        "--relay-ca-file", relay_ca,
        "--public-url", "https://lists.example.org",
        "--workers", "7",
        "--max-rcpts", "50",
        "--verp",
        "--bounce-threshold", "2.5",
        "--roster-check-secs", "30",
        "--lease-secs", "100",
        "--retry-secs", "5",
        "--max-connections", "9",
        "--max-connections-per-client", "3",
        "--http-header-timeout-secs", "4",
        "--max-http-connections", "11",
        "--max-http-connections-per-client", "2",
        "--max-message-bytes", "1000",
        "--key-server", "https://keys.example.org",
        "--grants-token-file", token_file,
        "--tls-cert", "lists.pem",
        "--tls-key", "lists.key",
        "--dns-resolver", "[::1]:5353",
    ];
    let toml = format!(
        r#"
        http = "127.0.0.2:9471"
        smtp = "[::1]:2600"
        database = "postgres://db.internal/lists"
        relay = "[::1]:2526"
        relay_timeout_secs = 20
        relay_starttls = true
        relay_ca_file = "{relay_ca}"
        public_url = "https://lists.example.org"
        workers = 7
        max_rcpts = 50
        verp = true
        bounce_threshold = 2.5
        roster_check_secs = 30
        lease_secs = 100
        retry_secs = 5
        max_connections = 9
        max_connections_per_client = 3
        http_header_timeout_secs = 4
        max_http_connections = 11
        max_http_connections_per_client = 2
        max_message_bytes = 1000
        key_server = "https://keys.example.org"
        grants_token_file = "{token_file}"
        tls_cert = "lists.pem"
        tls_key = "lists.key"
        dns_resolver = "[::1]:5353"
        "#
    );
    // Every option is exercised both ways: a new one must be added here to pass.
    let table: toml::Table = toml.parse().unwrap();
    for arg in ListOptions::augment_args(clap::Command::new("options")).get_arguments() {
        let id = arg.get_id().as_str();
        assert!(table.contains_key(id), "TOML key {id} not tested");
        let flag = format!("--{}", arg.get_long().unwrap());
        assert!(flags.contains(&flag.as_str()), "flag {flag} not tested");
    }

    let by_flags = check(from_flags(&flags));
    let by_toml = check(toml::from_str(&toml).unwrap());
    assert_eq!(format!("{by_flags:#?}"), format!("{by_toml:#?}"));
    assert_ne!(
        format!("{by_flags:#?}"),
        format!("{:#?}", check(ListOptions::default()))
    );
    // The settings arrived (and what Debug leaves out is equal too).
    for config in [&by_flags, &by_toml] {
        assert_eq!(config.delivery.workers, 7);
        assert_eq!(config.delivery.relay.host, "::1");
        assert_eq!(config.delivery.relay.port, 2526);
        assert_eq!(config.delivery.relay.helo_name, "lists.example.org");
        assert!(config.delivery.verp);
        assert!(config.delivery.relay.starttls.is_some());
        assert_eq!(config.smtp_listen.to_string(), "[::1]:2600");
        assert_eq!(config.smtp.max_message_bytes, 1000);
        assert_eq!(config.bounces.threshold, 2.5);
        let key_server = config.delivery.key_server.as_ref().unwrap();
        assert_eq!(key_server.grants_token, "grants-secret");
        assert_eq!(
            config.delivery.dns_resolver,
            DnsResolver::At("[::1]:5353".parse().unwrap())
        );
    }
}

/// DMARC lookups go to the system's resolver unless told otherwise; `none` turns them off
/// (every copy of a `dmarc`-rule list From the list), for machines without DNS.
#[test]
fn dmarc_lookups_can_be_pointed_elsewhere_or_turned_off() {
    let resolver = |flags: &[&str]| check(from_flags(flags)).delivery.dns_resolver;
    assert_eq!(resolver(&[]), DnsResolver::System);
    assert_eq!(resolver(&["--dns-resolver", "none"]), DnsResolver::Off);
    assert_eq!(
        resolver(&["--dns-resolver", "127.0.0.1:5353"]),
        DnsResolver::At("127.0.0.1:5353".parse().unwrap())
    );
    let refused = from_flags(&["--dns-resolver", "ns.example.org"])
        .check("data/lists".into(), "lists.example.org")
        .unwrap_err()
        .to_string();
    assert!(refused.contains("--dns-resolver \"ns.example.org\" is not an IP:PORT address (for example 127.0.0.1:53) or none"), "{refused}");
}

#[test]
fn flags_override_the_file_option_by_option() {
    let flags = from_flags(&["--workers", "7", "--verp=false"]);
    let file: ListOptions = toml::from_str("workers = 3\nmax_rcpts = 9\nverp = true\n").unwrap();
    let config = check(flags.over(file));
    assert_eq!(config.delivery.workers, 7);
    assert_eq!(config.delivery.max_rcpts_per_transaction, 9);
    assert!(!config.delivery.verp);
}

#[test]
fn every_problem_is_reported_at_once_named_as_flag_or_key() {
    let options = from_flags(&[
        "--relay",
        "[]:25",
        "--smtp-listen",
        "nowhere",
        "--workers",
        "0",
        "--tls-cert",
        "lists.pem",
        "--bounce-threshold=-1",
        "--database",
        "mysql://db",
        "--public-url",
        "ftp://lists.example.org",
        "--key-server",
        "https://keys.example.org",
        "--roster-check-secs",
        "0",
        "--max-connections-per-client",
        "0",
        "--max-http-connections",
        "0",
        "--dns-resolver",
        "ns.example.org",
    ]);
    let problems = options
        .check("data".into(), "lists.example.org")
        .unwrap_err();
    let as_flags = problems.to_string();
    for expected in [
        "12 problems with the options:",
        "--relay \"[]:25\" is not HOST:PORT, for example localhost:25",
        "--smtp-listen \"nowhere\" is not an IP:PORT address",
        "--workers and --max-rcpts must be at least 1",
        "--tls-cert and --tls-key go together",
        "--bounce-threshold -1 must be a positive number",
        "--database \"mysql://db\" is not a sqlite:// or postgres:// URL",
        "--public-url \"ftp://lists.example.org\" must be an http(s) URL",
        "--key-server and --grants-token-file go together",
        "--roster-check-secs must be at least 1",
        "--max-connections and --max-connections-per-client must be at least 1",
        "--http-header-timeout-secs, --max-http-connections and \
         --max-http-connections-per-client must be at least 1",
        "--dns-resolver \"ns.example.org\" is not an IP:PORT address (for example 127.0.0.1:53) or none",
    ] {
        assert!(as_flags.contains(expected), "{expected:?} in {as_flags}");
    }
    let as_keys: Vec<String> = problems.0.iter().map(|p| p.named(Some("lists"))).collect();
    for expected in [
        "lists.relay = \"[]:25\" is not HOST:PORT, for example localhost:25",
        "lists.smtp = \"nowhere\" is not an IP:PORT address",
        "lists.workers and lists.max_rcpts must be at least 1",
    ] {
        assert!(
            as_keys.iter().any(|line| line == expected),
            "{expected:?} in {as_keys:#?}"
        );
    }
}

#[test]
fn a_missing_grants_token_file_is_named_with_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("grants.token");
    let options = from_flags(&[
        "--key-server",
        "https://keys.example.org",
        "--grants-token-file",
        missing.to_str().unwrap(),
    ]);
    let problems = options
        .check("data".into(), "lists.example.org")
        .unwrap_err();
    let text = problems.to_string();
    assert!(text.contains("--grants-token-file"), "{text}");
    assert!(
        text.contains("copy the key server's grants.token"),
        "{text}"
    );
}

#[test]
fn an_unreadable_relay_ca_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("relay-ca.pem");
    let options = from_flags(&["--relay-ca-file", missing.to_str().unwrap()]);
    let problems = options
        .check("data".into(), "lists.example.org")
        .unwrap_err();
    let line = problems.0[0].named(Some("lists"));
    assert!(
        line.starts_with("lists.relay_ca_file cannot read CA certificates from"),
        "{line}"
    );
    assert!(
        problems.to_string().contains("--relay-ca-file"),
        "{problems}"
    );
}

#[test]
fn an_unknown_toml_key_is_refused_by_name() {
    let refused = toml::from_str::<ListOptions>("relay = \"localhost:25\"\nrelya = \"typo:25\"\n")
        .err()
        .unwrap()
        .to_string();
    assert!(refused.contains("unknown field `relya`"), "{refused}");
}

/// Drift fixed: the binary used to start with `--workers 0` and never deliver a copy.
#[test]
fn the_binary_refuses_zero_workers_naming_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_hushlist-listserver"))
        .arg("--data-dir")
        .arg(dir.path())
        .args([
            "--smtp-listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
        ])
        .args(["--relay", "127.0.0.1:1", "--workers", "0"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("hushlist-listserver started with --workers 0");
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(!status.success());
    assert!(
        err.contains("--workers and --max-rcpts must be at least 1"),
        "{err}"
    );
}
