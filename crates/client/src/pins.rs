//! What a home pins about a list when it first meets it, and the one way the client reads a
//! list's roster or its key server's certificate: checked against those pins.
//!
//! A roster log only proves it is consistent with itself (its genesis op is signed by the
//! owner certificate it carries), so whoever answers at a list's URLs (a compromised server,
//! anyone on a plain-HTTP path) could serve a look-alike list with themselves as owner, an
//! older prefix of the real log, or another branch of it. So at `list create` or `list use`
//! the home pins the genesis op's hash, the first owner's fingerprint and the key server's
//! certificate fingerprint, and from then on keeps the highest seq it has seen with the hash
//! at that seq. Every log read afterwards must start at the pinned genesis, reach the seen seq
//! and hold the seen hash there; the two servers' logs must agree wherever both have ops.

use hushlist_core::roster::{OpHash, Roster, SignedOp, parse_body};
use hushlist_core::{Address, Cert, Fingerprint, SecretIdentity};
use serde::{Deserialize, Serialize};

use crate::lists::ListConfig;
use crate::remote::RemoteError;
use crate::{Home, HomeError};

/// What a home holds fixed about one list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pins {
    /// Hash of the list's genesis op: which list this is, whatever address it goes by.
    pub genesis: OpHash,
    /// Who signed the genesis op.
    pub first_owner: Fingerprint,
    /// The key server's own certificate, which deposits are sealed to.
    pub server_key: Fingerprint,
    /// The highest seq this home has seen in the list's log, and the op hash there.
    pub seen_seq: u64,
    pub seen_hash: OpHash,
}

impl Pins {
    /// Pins for a list this home has just created from `genesis`.
    pub fn created(genesis: &SignedOp, first_owner: &Fingerprint, server_key: &Cert) -> Self {
        let hash = OpHash::of(&genesis.body);
        Pins {
            genesis: hash.clone(),
            first_owner: first_owner.clone(),
            server_key: server_key.fingerprint().clone(),
            seen_seq: 0,
            seen_hash: hash,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PinError {
    #[error(
        "{list} has nothing pinned in {path} (set up by an older hushlist); run `hushlist list use {list} --key-server {key_server} --list-server {list_server} --smtp {smtp}` again to pin it, with --genesis HASH from an owner's `hushlist list show` so as not to take the servers' word for it"
    )]
    Unpinned {
        list: Address,
        path: std::path::PathBuf,
        key_server: String,
        list_server: String,
        smtp: String,
    },
    #[error(
        "the {server}'s {list} is not the list this home pinned: its genesis op is {got} (first owner {got_owner}), but the genesis pinned here is {pinned}; another list is being served under this address (a substituted or compromised server), so it is refused"
    )]
    WrongGenesis {
        server: &'static str,
        list: Address,
        pinned: OpHash,
        got: OpHash,
        got_owner: Fingerprint,
    },
    #[error(
        "the {server}'s roster of {list} ends at seq {got}, but this home has already seen seq {seen}: a rolled-back or stale log, refused (if the server merely missed ops, `hushlist list sync {list}` brings it up to date)"
    )]
    Rollback {
        server: &'static str,
        list: Address,
        seen: u64,
        got: u64,
    },
    #[error(
        "the {server}'s roster of {list} forks from the history this home has seen: it holds a different op at seq {seq}, so it is refused"
    )]
    Forked {
        server: &'static str,
        list: Address,
        seq: u64,
    },
    #[error(
        "the key server and the list server hold different ops for {list} at seq {seq}, after seq {seen} which this home has seen: an owner signed two ops for one place in the log; neither log is used until the owners settle which stands"
    )]
    ServersDiverge { list: Address, seq: u64, seen: u64 },
    #[error(
        "{list} at the {server} has genesis {got}, not {given} as given with --genesis: it is not the list its owner described, so it is refused"
    )]
    NotGivenGenesis {
        server: &'static str,
        list: Address,
        given: OpHash,
        got: OpHash,
    },
    #[error(
        "the key server presents genesis {keys} for {list} but the list server {lists}: one of them serves another list, so neither is pinned; ask an owner for the genesis hash (`hushlist list show`) and give it with --genesis"
    )]
    GenesisDisagrees {
        list: Address,
        keys: OpHash,
        lists: OpHash,
    },
    #[error(
        "this home pinned {list} to genesis {pinned}, but --genesis says {given}; if the list really was created anew, remove {path} and run `hushlist list use` again"
    )]
    PinnedOtherwise {
        list: Address,
        pinned: OpHash,
        given: OpHash,
        path: std::path::PathBuf,
    },
    #[error(
        "the key server at {url} presents certificate {got}, but this home pinned {pinned} for it, so nothing is sealed to it; if its operator confirms the new key, remove {path} and run `hushlist list use` again"
    )]
    ServerKeyChanged {
        url: String,
        pinned: Fingerprint,
        got: Fingerprint,
        path: std::path::PathBuf,
    },
    #[error(transparent)]
    Remote(#[from] RemoteError),
    #[error(transparent)]
    Home(#[from] HomeError),
}

/// What one server answered for a list's log.
#[derive(Debug)]
pub enum ServerLog {
    /// Its log, checked against the pins and the other server's.
    Held(Box<Roster>),
    /// It does not have the list (404) or could not be asked.
    Absent(RemoteError),
}

impl ServerLog {
    pub fn roster(&self) -> Option<&Roster> {
        match self {
            ServerLog::Held(roster) => Some(roster),
            ServerLog::Absent(_) => None,
        }
    }
}

/// What `list use` pinned, and the logs it read: none when this home's identity is not on
/// the roster, so that only the public genesis op could be read.
#[derive(Debug)]
pub struct UsedList {
    pub pins: Pins,
    pub rosters: Option<Rosters>,
}

/// Both servers' logs of a list, checked: each starts at the pinned genesis, the longer
/// reaches the seen seq with the seen hash, and the shorter is a prefix of the longer.
#[derive(Debug)]
pub struct Rosters {
    pub key_server: ServerLog,
    pub list_server: ServerLog,
    /// The pins after this reading (the seen seq advanced to the newest head).
    pub pins: Pins,
}

impl Rosters {
    /// The longer log (the key server's when both are as long); at least one server holds
    /// the list, or the reading would have failed.
    pub fn newest(&self) -> &Roster {
        match (self.key_server.roster(), self.list_server.roster()) {
            (Some(keys), Some(lists)) if lists.head_seq() > keys.head_seq() => lists,
            (Some(keys), _) => keys,
            (None, Some(lists)) => lists,
            (None, None) => unreachable!("a reading without any log is an error"),
        }
    }

    /// How the two servers' logs differ, if they do: one lacks the list, or is behind the
    /// other (both logs were checked, so the shorter is a prefix of the longer).
    pub fn out_of_step(&self) -> Option<OutOfStep> {
        let list = self.newest().list().clone();
        match (self.key_server.roster(), self.list_server.roster()) {
            (Some(keys), Some(lists)) if keys.head_seq() == lists.head_seq() => None,
            (Some(keys), Some(lists)) => {
                let key_server = ("key server", keys.head_seq());
                let list_server = ("list server", lists.head_seq());
                let ((behind, at), (ahead, head)) = if keys.head_seq() < lists.head_seq() {
                    (key_server, list_server)
                } else {
                    (list_server, key_server)
                };
                Some(OutOfStep::Behind {
                    list,
                    behind,
                    at,
                    ahead,
                    head,
                })
            }
            (Some(_), None) => Some(OutOfStep::Lacking {
                list,
                server: "list server",
            }),
            (None, _) => Some(OutOfStep::Lacking {
                list,
                server: "key server",
            }),
        }
    }
}

/// Two servers' logs of a list that differ; its text tells the user what to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutOfStep {
    /// `behind` holds the log up to seq `at`; `ahead` holds it up to `head`.
    Behind {
        list: Address,
        behind: &'static str,
        at: u64,
        ahead: &'static str,
        head: u64,
    },
    /// `server` holds no roster of the list (or could not be asked).
    Lacking { list: Address, server: &'static str },
}

impl std::fmt::Display for OutOfStep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OutOfStep::Behind {
                list,
                behind,
                at,
                ahead,
                head,
            } => write!(
                f,
                "the servers DISAGREE: the {behind} is behind at seq {at} (the {ahead} is at {head}, and agrees up to there); run `hushlist list sync {list}`"
            ),
            OutOfStep::Lacking { list, server } => write!(
                f,
                "the servers DISAGREE: the {server} has no roster of {list}; run `hushlist list sync {list}` if it lacks the list"
            ),
        }
    }
}

impl Home {
    /// The one way the client reads a list's roster: both servers' logs, checked against the
    /// pins and each other, the newest head recorded as seen. The list server is a second
    /// opinion: if it cannot be reached the key server's log alone is used (and the reverse).
    pub async fn rosters(
        &self,
        me: &SecretIdentity,
        config: &ListConfig,
    ) -> Result<Rosters, PinError> {
        let (keys, lists) = fetch(me, config).await?;
        let _lock = self.lock_list(&config.list)?;
        let stored = self.list(&config.list)?;
        let pins = stored.pins.clone().ok_or_else(|| unpinned(self, &stored))?;
        let rosters = check(&stored.list, pins, keys, lists)?;
        self.save_if_advanced(stored, rosters.pins.clone())?;
        Ok(rosters)
    }

    /// The key server's certificate, if it is the one pinned for the list.
    pub async fn server_cert(&self, config: &ListConfig) -> Result<Cert, PinError> {
        let cert = config.key_server()?.server_cert().await?;
        let stored = self.list(&config.list)?;
        let pins = stored
            .pins
            .as_ref()
            .ok_or_else(|| unpinned(self, &stored))?;
        if cert.fingerprint() != &pins.server_key {
            return Err(PinError::ServerKeyChanged {
                url: stored.key_server.clone(),
                pinned: pins.server_key.clone(),
                got: cert.fingerprint().clone(),
                path: self.list_path(&stored.list),
            });
        }
        Ok(cert)
    }

    /// `hushlist list use`: remembers where `config.list` lives and pins it. Met for the
    /// first time, the list is pinned to `genesis` if given (the hash its owner handed out),
    /// which the servers must hold, or else to the key server's genesis (trust on first use),
    /// and to the key server's certificate as it presents it. A list already pinned keeps its
    /// pins, which the servers must match; only a new key server URL re-pins the certificate.
    ///
    /// Someone not on the roster (yet: about to ask to join) may not read the log; the list
    /// is then pinned from its public genesis op alone, and the log is read once they are on
    /// it.
    pub async fn use_list(
        &self,
        me: &SecretIdentity,
        config: ListConfig,
        genesis: Option<OpHash>,
    ) -> Result<UsedList, PinError> {
        let ((keys, lists), cert) = tokio::try_join!(fetch(me, &config), async {
            Ok::<_, PinError>(config.key_server()?.server_cert().await?)
        })?;
        let _lock = self.lock_list(&config.list)?;
        let known = match self.list(&config.list) {
            Ok(known) => Some(known),
            Err(HomeError::UnknownList(_)) => None,
            Err(e) => return Err(e.into()),
        };
        let path = self.list_path(&config.list);
        let pins = match known.and_then(|known| known.pins.map(|pins| (known.key_server, pins))) {
            Some((known_url, mut pins)) => {
                if let Some(given) = genesis
                    && given != pins.genesis
                {
                    return Err(PinError::PinnedOtherwise {
                        list: config.list,
                        pinned: pins.genesis,
                        given,
                        path,
                    });
                }
                if known_url != config.key_server {
                    pins.server_key = cert.fingerprint().clone();
                } else if cert.fingerprint() != &pins.server_key {
                    return Err(PinError::ServerKeyChanged {
                        url: config.key_server,
                        pinned: pins.server_key,
                        got: cert.fingerprint().clone(),
                        path,
                    });
                }
                pins
            }
            None => {
                let first = [("key server", &keys), ("list server", &lists)]
                    .into_iter()
                    .find_map(|(server, log)| Some((server, log.roster()?.clone())));
                let (server, roster) = match first {
                    Some(found) => found,
                    None if not_a_member(&keys) || not_a_member(&lists) => {
                        // Not on the roster yet: only the public genesis can be read. Both
                        // servers must present the same, so that one alone cannot hand a
                        // newcomer a look-alike list.
                        let from_keys = config.key_server()?.genesis(&config.list).await?;
                        if let Ok(from_lists) = config.list_server()?.genesis(&config.list).await
                            && from_lists.hash_at(0) != from_keys.hash_at(0)
                        {
                            return Err(PinError::GenesisDisagrees {
                                list: config.list,
                                keys: from_keys.head_hash().clone(),
                                lists: from_lists.head_hash().clone(),
                            });
                        }
                        ("key server", from_keys)
                    }
                    None => return Err(absent(&config.list, keys, lists).into()),
                };
                let genesis_hash = roster.hash_at(0).expect("a log holds its genesis").clone();
                if let Some(given) = genesis
                    && given != genesis_hash
                {
                    return Err(PinError::NotGivenGenesis {
                        server,
                        list: config.list,
                        given,
                        got: genesis_hash,
                    });
                }
                Pins {
                    first_owner: first_owner(&roster),
                    server_key: cert.fingerprint().clone(),
                    seen_seq: 0,
                    seen_hash: genesis_hash.clone(),
                    genesis: genesis_hash,
                }
            }
        };
        if keys.roster().is_none() && lists.roster().is_none() && not_a_member(&keys) {
            self.save_list(&ListConfig {
                pins: Some(pins.clone()),
                ..config
            })?;
            return Ok(UsedList {
                pins,
                rosters: None,
            });
        }
        let rosters = check(&config.list, pins, keys, lists)?;
        self.save_list(&ListConfig {
            pins: Some(rosters.pins.clone()),
            ..config
        })?;
        Ok(UsedList {
            pins: rosters.pins.clone(),
            rosters: Some(rosters),
        })
    }

    /// Records that the key server took `roster`'s head op from this home (an owner's own
    /// change), after the same checks as a reading.
    pub(crate) fn record_own(&self, config: &ListConfig, roster: &Roster) -> Result<(), PinError> {
        let _lock = self.lock_list(&config.list)?;
        let stored = self.list(&config.list)?;
        let pins = stored.pins.clone().ok_or_else(|| unpinned(self, &stored))?;
        // Only the key server's answer is at hand; the list server is not asked.
        let not_asked = ServerLog::Absent(RemoteError::Unexpected {
            server: "list server",
            detail: "not asked".into(),
        });
        let rosters = check(
            &stored.list,
            pins,
            ServerLog::Held(Box::new(roster.clone())),
            not_asked,
        )?;
        self.save_if_advanced(stored, rosters.pins)
    }

    fn save_if_advanced(&self, mut stored: ListConfig, pins: Pins) -> Result<(), PinError> {
        if stored.pins.as_ref() != Some(&pins) {
            stored.pins = Some(pins);
            self.save_list(&stored)?;
        }
        Ok(())
    }
}

/// The checks every log read goes through: each server's log starts at the pinned genesis,
/// the longer reaches the seen seq with the seen hash there, and the shorter is a prefix of
/// the longer. Returns the logs with the pins advanced to the newest head.
fn check(
    list: &Address,
    pins: Pins,
    keys: ServerLog,
    lists: ServerLog,
) -> Result<Rosters, PinError> {
    for (server, log) in [("key server", &keys), ("list server", &lists)] {
        if let Some(roster) = log.roster() {
            check_genesis(server, list, &pins, roster)?;
        }
    }
    let list_is_newest = match (keys.roster(), lists.roster()) {
        (Some(k), Some(l)) => l.head_seq() > k.head_seq(),
        (Some(_), None) => false,
        (None, Some(_)) => true,
        (None, None) => return Err(absent(list, keys, lists).into()),
    };
    let mut rosters = Rosters {
        key_server: keys,
        list_server: lists,
        pins,
    };
    let (newest_name, other_name, other) = if list_is_newest {
        ("list server", "key server", rosters.key_server.roster())
    } else {
        ("key server", "list server", rosters.list_server.roster())
    };
    let newest = rosters.newest();
    let seen = rosters.pins.seen_seq;
    if newest.head_seq() < seen {
        return Err(PinError::Rollback {
            server: newest_name,
            list: list.clone(),
            seen,
            got: newest.head_seq(),
        });
    }
    if newest.hash_at(seen) != Some(&rosters.pins.seen_hash) {
        return Err(PinError::Forked {
            server: newest_name,
            list: list.clone(),
            seq: seen,
        });
    }
    if let Some(other) = other
        && newest.hash_at(other.head_seq()) != Some(other.head_hash())
    {
        let seq = first_difference(newest, other);
        // At or before the seen seq the newest log is the history this home has seen, so the
        // other departs from it; after it, nothing seen here tells which is genuine.
        return Err(if seq <= seen {
            PinError::Forked {
                server: other_name,
                list: list.clone(),
                seq,
            }
        } else {
            PinError::ServersDiverge {
                list: list.clone(),
                seq,
                seen,
            }
        });
    }
    let (head_seq, head_hash) = (newest.head_seq(), newest.head_hash().clone());
    rosters.pins.seen_seq = head_seq;
    rosters.pins.seen_hash = head_hash;
    Ok(rosters)
}

/// Both servers' logs of the list, each verified from its genesis. A server that cannot be
/// reached or lacks the list is absent; one that serves a log that does not verify is an
/// error, since no honest server does.
async fn fetch(
    me: &SecretIdentity,
    config: &ListConfig,
) -> Result<(ServerLog, ServerLog), PinError> {
    let (keys, lists) = (config.key_server()?, config.list_server()?);
    let (keys, lists) = tokio::join!(
        keys.roster(me, &config.list),
        lists.roster(me, &config.list)
    );
    let log = |fetched: Result<Roster, RemoteError>| match fetched {
        Ok(roster) => Ok(ServerLog::Held(Box::new(roster))),
        Err(bad @ RemoteError::BadRoster { .. }) => Err(PinError::Remote(bad)),
        Err(other) => Ok(ServerLog::Absent(other)),
    };
    Ok((log(keys)?, log(lists)?))
}

fn check_genesis(
    server: &'static str,
    list: &Address,
    pins: &Pins,
    roster: &Roster,
) -> Result<(), PinError> {
    let got = roster.hash_at(0).expect("a log holds its genesis");
    let got_owner = first_owner(roster);
    if got != &pins.genesis || got_owner != pins.first_owner {
        return Err(PinError::WrongGenesis {
            server,
            list: list.clone(),
            pinned: pins.genesis.clone(),
            got: got.clone(),
            got_owner,
        });
    }
    Ok(())
}

/// The signer of a verified log's genesis op.
fn first_owner(roster: &Roster) -> Fingerprint {
    parse_body(&roster.ops()[0].body)
        .expect("a verified genesis op parses")
        .signer
}

/// Neither server holds the list: the key server's answer, else the list server's.
fn absent(list: &Address, keys: ServerLog, lists: ServerLog) -> RemoteError {
    match (keys, lists) {
        (ServerLog::Absent(e), _) if !is_missing(&e) => e,
        (_, ServerLog::Absent(e)) if !is_missing(&e) => e,
        _ => RemoteError::Refused {
            server: "key server",
            status: 404,
            code: "unknown_list".into(),
            message: format!("neither server has {list}"),
        },
    }
}

/// The server would not show the log to this home's identity, which is not on the roster.
fn not_a_member(log: &ServerLog) -> bool {
    matches!(log, ServerLog::Absent(refusal) if refusal.is_not_on_roster())
}

/// The server answered that it does not have the list.
pub fn is_missing(error: &RemoteError) -> bool {
    matches!(error, RemoteError::Refused { status: 404, .. })
}

fn unpinned(home: &Home, config: &ListConfig) -> PinError {
    PinError::Unpinned {
        list: config.list.clone(),
        path: home.list_path(&config.list),
        key_server: config.key_server.clone(),
        list_server: config.list_server.clone(),
        smtp: config.smtp.clone(),
    }
}

/// The first seq where two logs of one list differ (or the shorter's length, if one is a
/// prefix of the other).
pub(crate) fn first_difference(a: &Roster, b: &Roster) -> u64 {
    (0..=a.head_seq().min(b.head_seq()))
        .find(|&seq| a.hash_at(seq) != b.hash_at(seq))
        .unwrap_or(a.head_seq().min(b.head_seq()) + 1)
}
