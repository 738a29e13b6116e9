//! The key server's options, declared once (`hushlist_keyserver::options::KeyOptions`): the
//! same settings given as flags (real clap parsing, as the `hushlist-keyserver` binary and
//! `hushlist serve keys` do) and as TOML (real toml parsing, as `hushlist serve`'s `[keys]`
//! section) give the same daemon config; a bad set reports every problem at once, named as the
//! flag or the TOML key; an unknown key is refused by name.

use clap::{Args as _, Parser};
use hushlist_http::options::OptionSet as _;
use hushlist_keyserver::daemon::KeyDaemonConfig;
use hushlist_keyserver::options::KeyOptions;

#[derive(Parser)]
struct Flags {
    #[command(flatten)]
    options: KeyOptions,
}

fn from_flags(flags: &[&str]) -> KeyOptions {
    Flags::try_parse_from(std::iter::once("hushlist-keyserver").chain(flags.iter().copied()))
        .unwrap()
        .options
}

fn check(options: KeyOptions) -> KeyDaemonConfig {
    options
        .check("data/keys".into(), "keys.example.org")
        .unwrap()
}

#[test]
fn the_same_settings_as_flags_and_as_toml_give_the_same_config() {
    #[rustfmt::skip]
    let flags = [
        "--listen", "[::1]:9470",
        "--database", "postgres://db.internal/keys",
        "--tls-cert", "keys.pem",
        "--tls-key", "keys.key",
        "--sweep-secs", "5",
        "--rate-per-sec", "2.5",
        "--rate-burst", "10",
        "--http-header-timeout-secs", "4",
        "--max-http-connections", "11",
        "--max-http-connections-per-client", "2",
    ];
    let toml = r#"
        http = "[::1]:9470"
        database = "postgres://db.internal/keys"
        tls_cert = "keys.pem"
        tls_key = "keys.key"
        sweep_secs = 5
        rate_per_sec = 2.5
        rate_burst = 10.0
        http_header_timeout_secs = 4
        max_http_connections = 11
        max_http_connections_per_client = 2
    "#;
    // Every option is exercised both ways: a new one must be added here to pass.
    let table: toml::Table = toml.parse().unwrap();
    for arg in KeyOptions::augment_args(clap::Command::new("options")).get_arguments() {
        let id = arg.get_id().as_str();
        assert!(table.contains_key(id), "TOML key {id} not tested");
        let flag = format!("--{}", arg.get_long().unwrap());
        assert!(flags.contains(&flag.as_str()), "flag {flag} not tested");
    }

    let by_flags = check(from_flags(&flags));
    let by_toml = check(toml::from_str(toml).unwrap());
    assert_eq!(format!("{by_flags:#?}"), format!("{by_toml:#?}"));
    assert_ne!(
        format!("{by_flags:#?}"),
        format!("{:#?}", check(KeyOptions::default()))
    );
    assert_eq!(by_flags.listen.to_string(), "[::1]:9470");
    assert_eq!(by_flags.rate_burst, 10.0);
    assert_eq!(by_flags.domain, "keys.example.org");
}

#[test]
fn the_key_http_spelling_of_serve_keys_still_works() {
    let options = from_flags(&["--key-http", "127.0.0.2:9470"]);
    assert_eq!(check(options).listen.to_string(), "127.0.0.2:9470");
}

#[test]
fn flags_override_the_file_option_by_option() {
    let flags = from_flags(&["--sweep-secs", "5"]);
    let file: KeyOptions = toml::from_str("sweep_secs = 30\nrate_burst = 7.0\n").unwrap();
    let config = check(flags.over(file));
    assert_eq!(config.sweep_every.as_secs(), 5);
    assert_eq!(config.rate_burst, 7.0);
}

#[test]
fn every_problem_is_reported_at_once_named_as_flag_or_key() {
    let options = from_flags(&[
        "--listen",
        "nowhere",
        "--database",
        "mysql://db",
        "--tls-key",
        "keys.key",
        "--max-http-connections-per-client",
        "0",
    ]);
    let problems = options
        .check("data".into(), "keys.example.org")
        .unwrap_err();
    let as_flags = problems.to_string();
    for expected in [
        "4 problems with the options:",
        "--listen \"nowhere\" is not an IP:PORT address",
        "--database \"mysql://db\" is not a sqlite:// or postgres:// URL",
        "--tls-cert and --tls-key go together",
        "--http-header-timeout-secs, --max-http-connections and \
         --max-http-connections-per-client must be at least 1",
    ] {
        assert!(as_flags.contains(expected), "{expected:?} in {as_flags}");
    }
    let as_keys: Vec<String> = problems.0.iter().map(|p| p.named(Some("keys"))).collect();
    assert!(
        as_keys.contains(&"keys.http = \"nowhere\" is not an IP:PORT address".to_owned()),
        "{as_keys:#?}"
    );
}

#[test]
fn an_unknown_toml_key_is_refused_by_name() {
    let refused = toml::from_str::<KeyOptions>("sweep_secs = 5\nlisten = \"127.0.0.1:8470\"\n")
        .err()
        .unwrap()
        .to_string();
    assert!(refused.contains("unknown field `listen`"), "{refused}");
}
