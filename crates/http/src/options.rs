//! What both servers' option sets share: laying flags over a config file's section, the
//! problems a check finds (named as flags or as TOML keys, all reported at once) and the
//! checks of the settings both servers take (addresses, database, TLS pair, HTTP limits).
//!
//! Each server declares its options once, as a struct every field of which is optional
//! (derived `clap::Args` and `serde::Deserialize`, wrapped in [`option_set!`](crate::option_set)),
//! and checks them once into its daemon config; the standalone binary and `hushlist serve`
//! both use that struct.

use std::fmt;
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::connections::{ConnectionCaps, HttpLimits};

/// A server's options, every one optional (see [`option_set!`](crate::option_set)).
pub trait OptionSet: Sized {
    /// These options, and `under`'s where these leave one out (flags over a config file).
    fn over(self, under: Self) -> Self;
    /// The command-line flag of the option whose TOML key is `key`.
    fn flag(key: &str) -> String;
}

/// Declares a server's option struct and implements [`OptionSet`] for it from the one list
/// of fields, so a new option is one field: its flag (clap), its TOML key (serde, the field
/// name) and its place in [`OptionSet::over`] all follow from it. Every field must be an
/// `Option`; the TOML key is the field's name, the flag whatever its `#[arg]` says.
#[macro_export]
macro_rules! option_set {
    (
        $(#[$meta:meta])*
        pub struct $name:ident {
            $( $(#[$field_meta:meta])* pub $field:ident: Option<$type:ty>, )*
        }
    ) => {
        $(#[$meta])*
        pub struct $name {
            $( $(#[$field_meta])* pub $field: Option<$type>, )*
        }

        impl $crate::options::OptionSet for $name {
            fn over(self, under: Self) -> Self {
                Self { $( $field: self.$field.or(under.$field), )* }
            }

            fn flag(key: &str) -> String {
                let command =
                    <Self as clap::Args>::augment_args(clap::Command::new(stringify!($name)));
                command
                    .get_arguments()
                    .find(|arg| arg.get_id() == key)
                    .and_then(|arg| arg.get_long())
                    .map_or_else(|| key.to_owned(), |long| format!("--{long}"))
            }
        }
    };
}

/// One thing wrong with a server's options.
#[derive(Debug, Clone, PartialEq)]
pub struct OptionProblem {
    /// The options at fault, as (flag, TOML key).
    options: Vec<(String, &'static str)>,
    /// The value at fault, as messages show it.
    value: Option<String>,
    /// What is wrong with it, and what to do.
    problem: String,
}

impl OptionProblem {
    /// This problem naming its options as TOML keys in `section` (`lists.relay = "x" ...`),
    /// or as flags without one (`--relay "x" ...`).
    pub fn named(&self, section: Option<&str>) -> String {
        let names: Vec<String> = self
            .options
            .iter()
            .map(|(flag, key)| match section {
                Some(section) => format!("{section}.{key}"),
                None => flag.clone(),
            })
            .collect();
        let names = match names.split_last() {
            Some((last, [])) => last.clone(),
            Some((last, rest)) => format!("{} and {last}", rest.join(", ")),
            None => String::new(),
        };
        match (&self.value, section) {
            (Some(value), Some(_)) => format!("{names} = {value} {}", self.problem),
            (Some(value), None) => format!("{names} {value} {}", self.problem),
            (None, _) => format!("{names} {}", self.problem),
        }
    }
}

/// Every problem a check of a server's options found.
#[derive(Debug, Clone, PartialEq)]
pub struct OptionProblems(pub Vec<OptionProblem>);

impl std::error::Error for OptionProblems {}

impl fmt::Display for OptionProblems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count = self.0.len();
        write!(
            f,
            "{count} problem{} with the options:",
            if count == 1 { "" } else { "s" }
        )?;
        for problem in &self.0 {
            write!(f, "\n  {}", problem.named(None))?;
        }
        Ok(())
    }
}

/// Collects the problems of one check of the option set `T`.
pub struct Problems<T> {
    found: Vec<OptionProblem>,
    options: PhantomData<T>,
}

impl<T: OptionSet> Default for Problems<T> {
    fn default() -> Self {
        Problems {
            found: Vec::new(),
            options: PhantomData,
        }
    }
}

impl<T: OptionSet> Problems<T> {
    /// The options with TOML keys `keys` are wrong together: `problem` says how.
    pub fn push(&mut self, keys: &[&'static str], problem: impl Into<String>) {
        self.found.push(OptionProblem {
            options: keys.iter().map(|key| (T::flag(key), *key)).collect(),
            value: None,
            problem: problem.into(),
        });
    }

    /// `key` has the value `value` (as messages show it), which `problem` says is wrong.
    pub fn push_value(&mut self, key: &'static str, value: impl fmt::Display, problem: &str) {
        self.found.push(OptionProblem {
            options: vec![(T::flag(key), key)],
            value: Some(value.to_string()),
            problem: problem.to_owned(),
        });
    }

    /// `config` if nothing was wrong, else every problem found.
    pub fn finish<C>(self, config: C) -> Result<C, OptionProblems> {
        if self.found.is_empty() {
            Ok(config)
        } else {
            Err(OptionProblems(self.found))
        }
    }

    /// The listening address under `key`, `default` when it is not given.
    pub fn address(
        &mut self,
        key: &'static str,
        text: Option<String>,
        default: &str,
    ) -> SocketAddr {
        let text = text.unwrap_or_else(|| default.to_owned());
        text.parse().unwrap_or_else(|_| {
            self.push_value(key, format!("{text:?}"), "is not an IP:PORT address");
            SocketAddr::from(([127, 0, 0, 1], 0))
        })
    }

    /// The `database` URL, if given: SQLite or PostgreSQL.
    pub fn database(&mut self, url: Option<String>) -> Option<String> {
        if let Some(url) = &url
            && !["sqlite:", "postgres://", "postgresql://"]
                .iter()
                .any(|scheme| url.starts_with(scheme))
        {
            self.push_value(
                "database",
                format!("{url:?}"),
                "is not a sqlite:// or postgres:// URL",
            );
        }
        url
    }

    /// The `tls_cert` and `tls_key` files, which come together or not at all.
    pub fn tls_pair(
        &mut self,
        cert: Option<PathBuf>,
        key: Option<PathBuf>,
    ) -> Option<(PathBuf, PathBuf)> {
        match (cert, key) {
            (Some(cert), Some(key)) => Some((cert, key)),
            (None, None) => None,
            _ => {
                self.push(&["tls_cert", "tls_key"], "go together");
                None
            }
        }
    }

    /// The HTTP limits from `http_header_timeout_secs`, `max_http_connections` and
    /// `max_http_connections_per_client`, the defaults for those left out.
    pub fn http_limits(
        &mut self,
        header_timeout_secs: Option<u64>,
        total: Option<usize>,
        per_client: Option<usize>,
    ) -> HttpLimits {
        if header_timeout_secs == Some(0) || total == Some(0) || per_client == Some(0) {
            self.push(
                &[
                    "http_header_timeout_secs",
                    "max_http_connections",
                    "max_http_connections_per_client",
                ],
                "must be at least 1",
            );
        }
        let defaults = HttpLimits::default();
        HttpLimits {
            header_read_timeout: header_timeout_secs
                .map_or(defaults.header_read_timeout, Duration::from_secs),
            connections: ConnectionCaps {
                total: total.unwrap_or(defaults.connections.total),
                per_client: per_client.unwrap_or(defaults.connections.per_client),
            },
        }
    }
}
