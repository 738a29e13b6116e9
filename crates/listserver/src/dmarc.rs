//! The DMARC policy of a post author's domain, which decides under the list's
//! [`FromRewrite::Dmarc`](hushlist_core::roster::FromRewrite) rule whose address a copy's From
//! carries. Looked up with mail-auth (its DMARC record parser) over a real resolver: the DNS
//! server given by `--dns-resolver`, or the system's (/etc/resolv.conf). One answer per
//! author domain is kept for a while, so a fan-out asks once whatever its batches.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hushlist_core::listmail::AuthorDmarc;

use crate::delivery::DnsResolver;
use mail_auth::common::cache::NoCache;
use mail_auth::dmarc::{Dmarc, Policy};
use mail_auth::hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ResolverConfig, ResolverOpts,
};
use mail_auth::hickory_resolver::proto::op::ResponseCode;
use mail_auth::hickory_resolver::system_conf::read_system_conf;
use mail_auth::{DnsError, Error, MessageAuthenticator, Txt};

/// How long a domain's policy is kept once found (or found absent).
const ANSWER_KEPT: Duration = Duration::from_secs(600);
/// How long a failed lookup is kept: long enough that one fan-out does not wait on the
/// resolver again, short enough that the domain's real policy soon counts.
const FAILURE_KEPT: Duration = Duration::from_secs(60);
/// The longest the resolver is waited for per query, and for one domain's whole lookup.
const QUERY_TIMEOUT: Duration = Duration::from_secs(2);
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(8);
/// Author domains remembered at once; past this, what has expired is forgotten, then all.
const DOMAINS_KEPT: usize = 10_000;
/// Names asked at most for one domain, as the tree walk of RFC 9989 section 4.10 caps it.
const MAX_QUERIES: usize = 8;

/// The DMARC lookups of one list server process, shared by its delivery workers.
pub struct AuthorDomains {
    /// `None` when lookups are off or the system's resolver configuration could not be read:
    /// every lookup then fails, so every From is rewritten (what the list did before it looked).
    resolver: Option<MessageAuthenticator>,
    known: Mutex<HashMap<String, (AuthorDmarc, Instant)>>,
}

impl AuthorDomains {
    /// Lookups through `resolver`.
    pub fn new(resolver: DnsResolver) -> Self {
        let mut options = ResolverOpts::default();
        options.timeout = QUERY_TIMEOUT;
        options.attempts = 1;
        let config = match resolver {
            DnsResolver::At(server) => Ok(resolver_at(server)),
            DnsResolver::System => read_system_conf().map(|(config, _)| config),
            DnsResolver::Off => {
                return AuthorDomains {
                    resolver: None,
                    known: Mutex::new(HashMap::new()),
                };
            }
        };
        let resolver = config
            .and_then(|config| MessageAuthenticator::new(config, options))
            .inspect_err(|e| {
                tracing::warn!(
                    error = %e,
                    "no DNS resolver for DMARC lookups: every copy's From is the list's"
                )
            })
            .ok();
        AuthorDomains {
            resolver,
            known: Mutex::new(HashMap::new()),
        }
    }

    /// The DMARC policy that applies to mail From `domain`.
    pub async fn dmarc_of(&self, domain: &str) -> AuthorDmarc {
        let domain = domain.trim_end_matches('.').to_ascii_lowercase();
        let now = Instant::now();
        if let Some(&(dmarc, until)) = self.known().get(&domain)
            && until > now
        {
            return dmarc;
        }
        let dmarc = match &self.resolver {
            Some(resolver) => tokio::time::timeout(LOOKUP_TIMEOUT, discover(resolver, &domain))
                .await
                .unwrap_or(AuthorDmarc::Unknown),
            None => AuthorDmarc::Unknown,
        };
        if dmarc == AuthorDmarc::Unknown && self.resolver.is_some() {
            tracing::warn!(%domain, "DMARC lookup failed: the copy's From is the list's");
        }
        let kept = match dmarc {
            AuthorDmarc::Unknown => FAILURE_KEPT,
            AuthorDmarc::Enforced | AuthorDmarc::NotEnforced => ANSWER_KEPT,
        };
        let mut known = self.known();
        if known.len() >= DOMAINS_KEPT {
            known.retain(|_, (_, until)| *until > now);
            if known.len() >= DOMAINS_KEPT {
                known.clear();
            }
        }
        known.insert(domain, (dmarc, now + kept));
        dmarc
    }

    fn known(&self) -> std::sync::MutexGuard<'_, HashMap<String, (AuthorDmarc, Instant)>> {
        // A panic elsewhere while holding the lock leaves only a cache behind.
        self.known
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A resolver configuration that asks only `server`, over UDP and then TCP.
fn resolver_at(server: SocketAddr) -> ResolverConfig {
    let connections = [ConnectionConfig::udp(), ConnectionConfig::tcp()]
        .into_iter()
        .map(|mut connection| {
            connection.port = server.port();
            connection
        })
        .collect();
    ResolverConfig::from_parts(
        None,
        Vec::new(),
        vec![NameServerConfig::new(server.ip(), true, connections)],
    )
}

/// DMARC policy discovery (RFC 9989 section 4.10): the author domain's own record and its
/// `p`, else the nearest parent's record and its `sp` (which is `p` when absent). A record
/// in test mode (`t=y`) counts one level milder. A name that does not exist or has no DMARC
/// record is passed over; any other answer, or none, leaves the policy unknown.
async fn discover(resolver: &MessageAuthenticator, domain: &str) -> AuthorDmarc {
    for (step, name) in tree_walk(domain).into_iter().enumerate() {
        let record = resolver
            .txt_lookup::<Dmarc>(format!("_dmarc.{name}."), None::<&NoCache<Box<str>, Txt>>)
            .await;
        match record {
            Ok(record) => {
                let policy = if step == 0 { record.p } else { record.sp };
                return enforcement(policy, record.t);
            }
            Err(Error::Dns(DnsError::RecordNotFound(
                ResponseCode::NXDomain | ResponseCode::NoError,
            ))) => {}
            // Resolver failures, and answers such as SERVFAIL or REFUSED.
            Err(Error::Dns(DnsError::Resolver(_) | DnsError::RecordNotFound(_))) => {
                return AuthorDmarc::Unknown;
            }
            // TXT records none of which is a valid DMARC record: receivers ignore them.
            Err(_) => {}
        }
    }
    AuthorDmarc::NotEnforced
}

fn enforcement(policy: Policy, testing: bool) -> AuthorDmarc {
    match (policy, testing) {
        (Policy::Reject, _) | (Policy::Quarantine, false) => AuthorDmarc::Enforced,
        _ => AuthorDmarc::NotEnforced,
    }
}

/// The names whose `_dmarc` record applies to `domain`, nearest first: the domain itself,
/// then (past 8 labels, from its last 7) each parent down to the top-level domain.
fn tree_walk(domain: &str) -> Vec<&str> {
    let labels = domain.split('.').filter(|l| !l.is_empty()).count();
    if labels < 2 {
        return Vec::new();
    }
    let suffix = |keep: usize| {
        domain
            .match_indices('.')
            .nth(labels - keep - 1)
            .map_or(domain, |(at, _)| &domain[at + 1..])
    };
    let mut names = vec![domain];
    names.extend((1..labels.min(MAX_QUERIES)).rev().map(suffix));
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_walk_goes_from_the_domain_up_to_its_top_level_at_most_eight_names() {
        assert_eq!(
            tree_walk("mail.example.co.uk"),
            ["mail.example.co.uk", "example.co.uk", "co.uk", "uk"]
        );
        assert_eq!(tree_walk("example.org"), ["example.org", "org"]);
        assert!(tree_walk("localhost").is_empty());
        let deep = "a.b.c.d.e.f.g.h.i.example";
        assert_eq!(
            tree_walk(deep),
            [
                deep,
                "d.e.f.g.h.i.example",
                "e.f.g.h.i.example",
                "f.g.h.i.example",
                "g.h.i.example",
                "h.i.example",
                "i.example",
                "example"
            ]
        );
    }

    #[test]
    fn only_quarantine_and_reject_are_enforced_and_test_mode_is_one_level_milder() {
        assert_eq!(enforcement(Policy::Reject, false), AuthorDmarc::Enforced);
        assert_eq!(
            enforcement(Policy::Quarantine, false),
            AuthorDmarc::Enforced
        );
        assert_eq!(enforcement(Policy::Reject, true), AuthorDmarc::Enforced);
        assert_eq!(
            enforcement(Policy::Quarantine, true),
            AuthorDmarc::NotEnforced
        );
        assert_eq!(enforcement(Policy::None, false), AuthorDmarc::NotEnforced);
        assert_eq!(
            enforcement(Policy::Unspecified, false),
            AuthorDmarc::NotEnforced
        );
    }
}
