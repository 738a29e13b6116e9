//! The lists a home knows: where each list's key server, list server and SMTP port are, and
//! what this home has pinned about the list ([`Pins`]). One JSON file per list under `lists/`
//! in the home directory, written whole (a temporary file renamed over it), mode 0600.

use std::fs;
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::PathBuf;

use hushlist_core::Address;
use serde::{Deserialize, Serialize};

use crate::pins::Pins;
use crate::remote::{RemoteError, Server};
use crate::{Home, HomeError};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListConfig {
    pub list: Address,
    /// Base URL of the key server.
    pub key_server: String,
    /// Base URL of the list server's HTTP interface.
    pub list_server: String,
    /// The list server's SMTP address, `host:port`.
    pub smtp: String,
    /// Plain `http://` to a host other than loopback was allowed (`--insecure-http`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub insecure_http: bool,
    /// What this home pinned when it first met the list; absent in files written before
    /// pinning existed (`hushlist list use` again sets them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pins: Option<Pins>,
}

impl ListConfig {
    /// The list's key server, if its URL is allowed (see [`check_url`]).
    pub fn key_server(&self) -> Result<Server, RemoteError> {
        check_url("key server", &self.key_server, self.insecure_http)?;
        Ok(Server::key_server(&self.key_server))
    }

    /// The list's list server, if its URL is allowed (see [`check_url`]).
    pub fn list_server(&self) -> Result<Server, RemoteError> {
        check_url("list server", &self.list_server, self.insecure_http)?;
        Ok(Server::list_server(&self.list_server))
    }
}

/// Refuses a server URL that is not http(s), and plain `http://` to anything but loopback
/// (127.0.0.0/8, ::1, localhost) unless `insecure_http`: on such a path anyone in between can
/// serve their own roster and server key, and only the pins would stand in their way.
pub fn check_url(server: &'static str, url: &str, insecure_http: bool) -> Result<(), RemoteError> {
    let bad = |detail: &str| RemoteError::BadUrl {
        server,
        url: url.to_owned(),
        detail: detail.to_owned(),
    };
    let parsed = hushlist_remote::Url::parse(url).map_err(|e| bad(&e.to_string()))?;
    let host = parsed
        .host_str()
        .ok_or_else(|| bad("it names no host"))?
        .trim_start_matches('[')
        .trim_end_matches(']');
    match parsed.scheme() {
        "https" => Ok(()),
        "http" => {
            let loopback = host.eq_ignore_ascii_case("localhost")
                || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
            if loopback || insecure_http {
                Ok(())
            } else {
                Err(RemoteError::InsecureHttp {
                    server,
                    url: url.to_owned(),
                })
            }
        }
        _ => Err(bad("only http:// and https:// are spoken")),
    }
}

impl Home {
    fn lists_dir(&self) -> PathBuf {
        self.dir().join("lists")
    }

    pub(crate) fn list_path(&self, list: &Address) -> PathBuf {
        self.lists_dir().join(format!("{list}.json"))
    }

    /// Writes the list's file whole: a temporary file (0600, synced) renamed over the old
    /// one, so a crash leaves either version, never half of one.
    pub fn save_list(&self, config: &ListConfig) -> Result<(), HomeError> {
        let text = serde_json::to_vec_pretty(config).expect("a list config serializes");
        crate::write_private_file(&self.lists_dir(), &self.list_path(&config.list), &text)
    }

    /// Holds an exclusive lock on the list's file until the returned handle drops, so two
    /// commands recording what they saw at once cannot undo each other's record.
    pub(crate) fn lock_list(&self, list: &Address) -> Result<fs::File, HomeError> {
        let dir = self.lists_dir();
        crate::private_dir(&dir).map_err(|source| HomeError::Io {
            path: dir.clone(),
            source,
        })?;
        let path = dir.join(format!(".{list}.lock"));
        let file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(|source| HomeError::Io {
                path: path.clone(),
                source,
            })?;
        file.lock()
            .map_err(|source| HomeError::Io { path, source })?;
        Ok(file)
    }

    /// Every list this home knows, in address order.
    pub fn lists(&self) -> Result<Vec<ListConfig>, HomeError> {
        let dir = self.lists_dir();
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => return Err(HomeError::Io { path: dir, source }),
        };
        let mut lists = Vec::new();
        for entry in entries {
            let path = entry
                .map_err(|source| HomeError::Io {
                    path: dir.clone(),
                    source,
                })?
                .path();
            // Locks and half-written files start with a dot.
            let is_list_file = path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| !n.starts_with('.') && n.ends_with(".json"));
            if !is_list_file {
                continue;
            }
            let text = fs::read(&path).map_err(|source| HomeError::Io {
                path: path.clone(),
                source,
            })?;
            let config = serde_json::from_slice(&text).map_err(|e| HomeError::BadListFile {
                path: path.clone(),
                detail: e.to_string(),
            })?;
            lists.push(config);
        }
        lists.sort_by(|a: &ListConfig, b| a.list.cmp(&b.list));
        Ok(lists)
    }

    pub fn list(&self, list: &Address) -> Result<ListConfig, HomeError> {
        self.lists()?
            .into_iter()
            .find(|l| l.list.same_mailbox(list))
            .ok_or_else(|| HomeError::UnknownList(list.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_is_allowed_to_loopback_only_unless_insecure_http() {
        for url in [
            "http://127.0.0.1:8470",
            "http://127.8.9.10/",
            "http://[::1]:8470",
            "http://localhost:8470",
            "https://keys.example.org",
            "https://203.0.113.7:8470",
        ] {
            assert!(check_url("key server", url, false).is_ok(), "{url}");
        }
        for url in [
            "http://keys.example.org",
            "http://203.0.113.7:8470",
            "http://[2001:db8::1]:8470",
            "http://localhost.example.org",
        ] {
            assert!(
                matches!(
                    check_url("key server", url, false),
                    Err(RemoteError::InsecureHttp { .. })
                ),
                "{url}"
            );
            assert!(check_url("key server", url, true).is_ok(), "{url}");
        }
        for url in ["ftp://keys.example.org", "keys.example.org:8470", "http://"] {
            assert!(
                matches!(
                    check_url("key server", url, true),
                    Err(RemoteError::BadUrl { .. })
                ),
                "{url}"
            );
        }
    }

    #[test]
    fn a_list_file_from_before_pinning_still_loads_without_pins() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::at(dir.path());
        fs::create_dir_all(dir.path().join("lists")).unwrap();
        fs::write(
            dir.path().join("lists/team@example.org.json"),
            r#"{"list":"team@example.org","key_server":"http://127.0.0.1:8470","list_server":"http://127.0.0.1:8471","smtp":"127.0.0.1:2525"}"#,
        )
        .unwrap();
        let config = home
            .list(&Address::parse("team@example.org").unwrap())
            .unwrap();
        assert_eq!(config.pins, None);
        assert!(!config.insecure_http);
    }
}
