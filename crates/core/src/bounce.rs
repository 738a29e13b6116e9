//! Reading mail that comes back to a list's bounce address, and the bounce score that decides
//! when a member's delivery is suspended.
//!
//! A delivery status notification (RFC 3464: `multipart/report; report-type=delivery-status`)
//! names each recipient with its action and status. Older MTAs (qmail, old Exim, Sendmail's
//! "returned mail") send plain text instead; those are read by their well-known wording and the
//! status codes in them. Auto-replies (RFC 3834 `Auto-Submitted: auto-replied`, vacation
//! notices) and delay warnings are not failures and never count.
//!
//! The score works like Mailman's: at most one bounce per member is counted per
//! [`BouncePolicy::min_interval_secs`], a hard failure weighs more than a soft one, and the score
//! halves every [`BouncePolicy::half_life_secs`] without bounces, so a member whose mailbox was
//! full for a day is not suspended a month later.

use mail_parser::{MessageParser, MimeHeaders as _, PartType};

use crate::address::Address;

/// How bad a delivery failure is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// The receiving side gave up for good (a 5.x.x status): no such user, mailbox disabled.
    Hard,
    /// The message was given up after temporary failures (a 4.x.x status): mailbox full,
    /// host unreachable for days.
    Soft,
}

/// One recipient a bounce says could not be reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedRecipient {
    /// Who could not be reached, when the bounce names them in a form we read.
    pub address: Option<Address>,
    pub severity: Severity,
    /// The RFC 3463 status (`5.1.1`), when given.
    pub status: Option<String>,
    /// The remote server's words, for the owners' notice.
    pub diagnostic: Option<String>,
}

/// What a message to the bounce address turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BounceReading {
    /// A delivery failure for these recipients. The list may be empty: a failure report
    /// that names nobody readable (VERP still says who it is about).
    Failed(Vec<FailedRecipient>),
    /// Not a failure; the reason says what it was.
    NotAFailure(&'static str),
}

/// Reads a message sent to a bounce address.
pub fn read_bounce(raw: &[u8]) -> BounceReading {
    let Some(message) = MessageParser::new()
        .parse(raw)
        .filter(|m| !m.headers().is_empty())
    else {
        return BounceReading::NotAFailure("not a mail message");
    };
    let report = message.parts.iter().find(|part| {
        part.content_type().is_some_and(|ct| {
            ct.ctype().eq_ignore_ascii_case("message")
                && ct
                    .subtype()
                    .is_some_and(|s| s.eq_ignore_ascii_case("delivery-status"))
        })
    });
    if let Some(report) = report {
        let fields = match &report.body {
            PartType::Text(text) | PartType::Html(text) => text.as_bytes(),
            PartType::Binary(bytes) | PartType::InlineBinary(bytes) => bytes.as_ref(),
            _ => &[],
        };
        return read_delivery_status(fields);
    }
    let auto_submitted = message
        .header_raw("Auto-Submitted")
        .map(|v| v.trim().to_ascii_lowercase());
    if auto_submitted.is_some_and(|v| v.starts_with("auto-replied"))
        || message.header_raw("X-Autoreply").is_some()
        || message.header_raw("X-Autorespond").is_some()
    {
        return BounceReading::NotAFailure("an auto-reply (RFC 3834)");
    }
    let text: String = message
        .text_bodies()
        .filter_map(|part| part.text_contents())
        .collect::<Vec<_>>()
        .join("\n");
    read_plain_text_bounce(&text)
}

/// The per-recipient groups of a `message/delivery-status` part (RFC 3464 section 2): the
/// first group is about the message, each later one about a recipient. Groups are separated
/// by blank lines and each has the syntax of a header block, so mail-parser reads it.
fn read_delivery_status(fields: &[u8]) -> BounceReading {
    let text = String::from_utf8_lossy(fields).replace("\r\n", "\n");
    let mut recipients = Vec::new();
    let mut any_recipient_group = false;
    for group in text.split("\n\n") {
        let Some(group) = MessageParser::new().parse_headers(group.as_bytes()) else {
            continue;
        };
        let field = |name: &str| group.header_raw(name).map(|v| v.trim().to_owned());
        let Some(action) = field("Action") else {
            continue;
        };
        any_recipient_group = true;
        if !action.to_ascii_lowercase().starts_with("failed") {
            continue;
        }
        let status = field("Status").and_then(|s| s.split_whitespace().next().map(str::to_owned));
        let recipient = field("Final-Recipient").or_else(|| field("Original-Recipient"));
        recipients.push(FailedRecipient {
            address: recipient.as_deref().and_then(typed_address),
            severity: if status.as_deref().is_some_and(|s| s.starts_with('4')) {
                Severity::Soft
            } else {
                Severity::Hard
            },
            status,
            diagnostic: field("Diagnostic-Code").map(|d| one_line(&d)),
        });
    }
    if !recipients.is_empty() {
        BounceReading::Failed(recipients)
    } else if any_recipient_group {
        BounceReading::NotAFailure("a delivery report without failures (delayed or delivered)")
    } else {
        BounceReading::NotAFailure("a delivery report naming no recipient")
    }
}

/// `rfc822; user@host` (RFC 3464 address-type; address).
fn typed_address(field: &str) -> Option<Address> {
    let (kind, address) = field.split_once(';')?;
    if !kind.trim().eq_ignore_ascii_case("rfc822") {
        return None;
    }
    Address::parse(address.trim()).ok()
}

/// Phrases by which pre-DSN bounces announce a permanent failure.
const PERMANENT_PHRASES: [&str; 6] = [
    "this is a permanent error",
    "could not be delivered to one or more of its recipients",
    "returned mail: see transcript for details",
    "user unknown",
    "no such user",
    "mailbox unavailable",
];

/// Phrases of pre-DSN bounces that give up after temporary failures.
const TEMPORARY_PHRASES: [&str; 3] = ["this is a temporary error", "mailbox full", "over quota"];

/// Plain-text bounces (qmail, old Exim and Sendmail): a failure when the text says so in the
/// usual wording or carries an SMTP failure code; recipients are the addresses on the lines
/// that name a failed recipient (`<user@host>:` for qmail, an indented address for Exim).
fn read_plain_text_bounce(text: &str) -> BounceReading {
    let lower = text.to_ascii_lowercase();
    let permanent = PERMANENT_PHRASES.iter().any(|p| lower.contains(p));
    let temporary = TEMPORARY_PHRASES.iter().any(|p| lower.contains(p));
    let status = first_status_code(text);
    let severity = match (&status, permanent, temporary) {
        (Some(s), _, _) if s.starts_with('5') => Severity::Hard,
        (Some(s), _, _) if s.starts_with('4') => Severity::Soft,
        (_, true, _) => Severity::Hard,
        (_, false, true) => Severity::Soft,
        _ => return BounceReading::NotAFailure("no failure report in it"),
    };
    // Only the part before the returned message: it quotes the list's own headers.
    let report = text
        .split("--- Below this line is a copy of the message.")
        .next()
        .unwrap_or(text);
    let report = report
        .split("------ This is a copy of the message")
        .next()
        .unwrap_or(report);
    let mut addresses: Vec<Address> = Vec::new();
    for line in report.lines() {
        let trimmed = line.trim().trim_end_matches(':');
        if trimmed.contains(' ') {
            continue;
        }
        if let Ok(address) = Address::parse(trimmed)
            && !addresses.contains(&address)
        {
            addresses.push(address);
        }
    }
    let diagnostic = report
        .lines()
        .map(str::trim)
        .find(|l| status.as_deref().is_some_and(|s| l.contains(s)))
        .map(one_line);
    let recipient = |address: Option<Address>| FailedRecipient {
        address,
        severity,
        status: status.clone(),
        diagnostic: diagnostic.clone(),
    };
    if addresses.is_empty() {
        BounceReading::Failed(vec![recipient(None)])
    } else {
        BounceReading::Failed(addresses.into_iter().map(Some).map(recipient).collect())
    }
}

/// The first RFC 3463 enhanced status code (`5.1.1`) in the text.
fn first_status_code(text: &str) -> Option<String> {
    text.split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .find(|word| {
            let mut parts = word.split('.');
            let class = parts.next().unwrap_or_default();
            let rest: Vec<&str> = parts.collect();
            (class == "4" || class == "5")
                && rest.len() == 2
                && rest
                    .iter()
                    .all(|p| !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()))
        })
        .map(str::to_owned)
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// When a member's bounces add up to a suspension.
#[derive(Debug, Clone, PartialEq)]
pub struct BouncePolicy {
    /// Score at which a probe is sent; a bounce of the probe suspends delivery.
    pub threshold: f64,
    pub hard_weight: f64,
    pub soft_weight: f64,
    /// At most one bounce per member is counted in this many seconds (a dead mailbox bounces
    /// every post; a busy list must not suspend it within the hour).
    pub min_interval_secs: i64,
    /// The score halves after this many seconds without a counted bounce.
    pub half_life_secs: i64,
    /// How long a probe's bounce is waited for; a later bounce of it does not count.
    pub probe_valid_secs: i64,
}

impl Default for BouncePolicy {
    fn default() -> Self {
        BouncePolicy {
            threshold: 5.0,
            hard_weight: 1.0,
            soft_weight: 0.5,
            min_interval_secs: 24 * 3600,
            half_life_secs: 7 * 24 * 3600,
            probe_valid_secs: 7 * 24 * 3600,
        }
    }
}

/// A member's bounce record, as stored.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BounceScore {
    pub score: f64,
    /// When the last counted bounce arrived (unix seconds).
    pub last_counted_at: i64,
}

impl BouncePolicy {
    /// The score after a bounce of `severity` at `now`: `None` when it falls within
    /// `min_interval_secs` of the last counted one and is not counted.
    pub fn count(
        &self,
        previous: Option<BounceScore>,
        severity: Severity,
        now: i64,
    ) -> Option<BounceScore> {
        let weight = match severity {
            Severity::Hard => self.hard_weight,
            Severity::Soft => self.soft_weight,
        };
        let decayed = match previous {
            None => 0.0,
            Some(p) if now - p.last_counted_at < self.min_interval_secs => return None,
            Some(p) => self.decayed(p, now),
        };
        Some(BounceScore {
            score: decayed + weight,
            last_counted_at: now,
        })
    }

    /// `score` as it stands at `now`, after halving once per half-life since its last bounce.
    pub fn decayed(&self, score: BounceScore, now: i64) -> f64 {
        let elapsed = (now - score.last_counted_at).max(0) as f64;
        score.score * 0.5f64.powf(elapsed / self.half_life_secs.max(1) as f64)
    }

    /// Whether a score calls for a probe.
    pub fn calls_for_probe(&self, score: BounceScore) -> bool {
        score.score >= self.threshold
    }
}
