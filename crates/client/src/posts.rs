//! Sending and opening posts: what `hushlist send` and `hushlist open` do.

use std::time::{SystemTime, UNIX_EPOCH};

use hushlist_core::listmail::{Author, HELD_REPLY, KEY_ID_TAKEN_REPLY};
use hushlist_core::outer::EncryptedPost;

use hushlist_core::roster::{Moderation, Refusal, Roster};
use hushlist_core::{Address, Cert, Fingerprint, KeyId, SecretIdentity};
use hushlist_envelope::{
    NotAPostSignature, OpenError, OpenWith, Opened, Signature, SignedContext, open, seal,
};
use mail_builder::headers::Header as _;
use mail_builder::headers::date::Date;
use mail_parser::{Header, HeaderName, MessageParser};
use rand::rngs::OsRng;

use crate::addressing::{known, to_and_cc};
use crate::lists::ListConfig;
use crate::pins::{PinError, Rosters};
use crate::remote::{ReleasedKey, RemoteError, submit};
use crate::seen::SeenIds;
use crate::{Home, HomeError};

#[derive(Debug, thiserror::Error)]
pub enum PostError {
    #[error("the message is not an RFC 5322 message with headers")]
    NotAMessage,
    #[error("your identity's user id names no mail address")]
    NoAddressInIdentity,
    #[error("the message has no From; sending needs one (your address: {0})")]
    NoFrom(Address),
    #[error("the message is From {from}, but your identity is {me}; send as yourself")]
    NotMe { from: Address, me: Address },
    #[error(
        "the message's To and Cc do not name {0}; a post names its list there (the proof of origin hushlist adds covers the addresses in To and Cc)"
    )]
    ListNotAddressed(Address),
    #[error("sealing failed: {0}")]
    Seal(String),
    #[error("this is not a hushlist post: {0}")]
    NotAPost(String),
    #[error(
        "cannot tell which list this post came from (no List-Post or To header naming a list you use)"
    )]
    UnknownList,
    #[error(
        "this home's key {key} is not on the roster of {list}: if you are a member with another key, use the home that holds it, or ask an owner to re-add you with this one (`hushlist key export`); otherwise ask to join with `hushlist join {list}`"
    )]
    NotOnRoster { list: Address, key: Fingerprint },
    #[error("the post could not be opened: {0}")]
    Open(String),
    #[error("refused: the post is not signed")]
    Unsigned,
    #[error(
        "refused: the post's signature does not verify against anyone on the list's roster (forged, tampered, signed by someone not on it, or signed with a key that was expired or revoked at the time)"
    )]
    BadSignature,
    #[error("refused: signed by {0}, who is not on the list's roster")]
    SignerNotOnRoster(Fingerprint),
    #[error(
        "refused: the post is signed by {signer}, but its message names {} {header} addresses ({}); a mail reader would show one of them as the author, so it is not shown; tell the list's owners",
        found.len(),
        listed(found)
    )]
    AuthorCount {
        header: &'static str,
        found: Vec<String>,
        signer: Address,
    },
    #[error(
        "refused: the post's message says {header}: {claimed}, but it is signed by {signer}; a member may be posing as {claimed}, so it is not shown; tell the list's owners"
    )]
    NotTheSigner {
        header: &'static str,
        claimed: String,
        signer: Address,
    },
    #[error(
        "refused: this copy's outer {header} names {claimed}, but the post is signed by {signer} and the list {list} writes only {expected} there; someone changed the copy on its way, and a mail reader shows or replies to that header, so it is not shown; tell the list's owners"
    )]
    OuterNotTheSigner {
        header: &'static str,
        claimed: String,
        signer: Address,
        list: Address,
        expected: String,
    },
    #[error(
        "refused: the post signed by {signer} has a bare CR or NUL in its message's headers, where mail readers disagree on where a header ends, so it is not shown"
    )]
    AmbiguousHeaders { signer: Address },
    #[error(
        "your post was NOT delivered: {list} already holds a different post under its key id {key_id}. Someone who learned the key id before your post arrived (the key server sees it at the deposit; anyone can on a path without TLS) posted under it first. Send it again (a new send uses a new key id) and tell the list's owners. The list server said: {reply}"
    )]
    KeyIdTaken {
        list: Address,
        key_id: String,
        reply: String,
    },
    #[error(
        "refused: the post's signature by {signer} is not a hushlist post signature: {reason}; someone may be passing off a signature made for something else as a post; tell the list's owners"
    )]
    NotAPostSignature {
        signer: String,
        reason: NotAPostSignature,
    },
    #[error(
        "refused: the post signed by {signer} was signed for key id {signed}, but it comes under key id {outer}: someone re-encrypted a post of theirs under another key; tell the list's owners"
    )]
    SignedForOtherKeyId {
        signer: Address,
        signed: String,
        outer: String,
    },
    #[error(
        "refused: the post signed by {signer} was addressed to {}, not for {list}: someone re-posted it to this list; tell the list's owners",
        listed(&signed.iter().map(ToString::to_string).collect::<Vec<_>>())
    )]
    NotSignedForList {
        signer: Address,
        list: Address,
        signed: Vec<Address>,
    },
    #[error(
        "refused: the post is signed by {signer}, but its key {key_id} was deposited by {depositor}: someone re-encrypted a post of {signer}'s as their own; tell the list's owners"
    )]
    NotTheDepositor {
        signer: Address,
        depositor: String,
        key_id: String,
    },
    #[error(
        "refused: the post is signed by {signer}, who may not post to this list at roster seq {seq} ({refusal}); it did not come through the list, so it is not shown as a list post"
    )]
    MayNotPost {
        signer: Address,
        seq: u64,
        refusal: Refusal,
    },
    #[error(
        "refused: the key server of {list} did not confirm key id {key_id}: {refusal}. {spliced} A list post is shown only when its key server says who deposited its key"
    )]
    KeyNotConfirmed {
        list: Address,
        key_id: String,
        refusal: Box<RemoteError>,
        spliced: String,
    },
    #[error(transparent)]
    Home(#[from] HomeError),
    #[error(transparent)]
    Remote(#[from] RemoteError),
    #[error(transparent)]
    Pin(#[from] PinError),
}

/// What happened to a sent post.
#[derive(Debug)]
pub struct Sent {
    pub key_id: String,
    pub roster_seq: u64,
    /// The list's moderation holds the post until an owner releases it.
    pub held: bool,
}

/// Seals `message` (To: the list), deposits its key with the list's key server and hands it
/// to the list server. A message without a Date gets one, since the envelope keeps Date
/// outside and the core reads no clock. The key is sealed only to the certificate pinned
/// for the key server in `home`.
pub async fn send(
    me: &SecretIdentity,
    home: &Home,
    list: &ListConfig,
    message: &[u8],
) -> Result<Sent, PostError> {
    let my_address = my_address(me)?;
    let parsed = MessageParser::new()
        .parse(message)
        .filter(|m| !m.headers().is_empty())
        .ok_or(PostError::NotAMessage)?;
    let from = parsed
        .from()
        .and_then(|f| f.first())
        .and_then(|a| a.address())
        .and_then(|a| Address::parse(a).ok())
        .ok_or_else(|| PostError::NoFrom(my_address.clone()))?;
    if !from.same_mailbox(&my_address) {
        return Err(PostError::NotMe {
            from,
            me: my_address,
        });
    }
    let addressed = to_and_cc(&parsed).any(|a| a.same_mailbox(&list.list));
    if !addressed {
        return Err(PostError::ListNotAddressed(list.list.clone()));
    }
    let mut message = message.to_vec();
    if parsed.date().is_none() {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let mut date = b"Date: ".to_vec();
        Date::new(now)
            .write_header(&mut date, 6)
            .expect("writing to a Vec cannot fail");
        date.extend_from_slice(&message);
        message = date;
    }
    let sealed =
        seal(OsRng, &message, me, &list.key_server).map_err(|e| PostError::Seal(e.to_string()))?;
    let server_cert = home.server_cert(list).await?;
    let receipt = match list
        .key_server()?
        .deposit(
            me,
            &list.list,
            &sealed.key_id,
            &sealed.session_key,
            &server_cert,
        )
        .await
    {
        Ok(receipt) => receipt,
        Err(e) => return Err(refusal_for(me, list, e)),
    };
    let reply = match submit(&list.smtp, &from, &list.list, &sealed.message).await {
        Ok(reply) => reply,
        Err(RemoteError::SmtpRefused { reply, .. }) if reply.contains(KEY_ID_TAKEN_REPLY) => {
            return Err(PostError::KeyIdTaken {
                list: list.list.clone(),
                key_id: sealed.key_id.to_string(),
                reply,
            });
        }
        Err(e) => return Err(e.into()),
    };
    Ok(Sent {
        key_id: sealed.key_id.to_string(),
        roster_seq: receipt.roster_seq,
        held: reply.contains(HELD_REPLY),
    })
}

/// The header a shown post starts with. Every header whose name begins `Hushlist-Verified`
/// or `Hushlist-Warning` is ours to write, so any the sender put inside the message is
/// removed before it is shown.
pub const VERIFIED_SIGNER_HEADER: &str = "Hushlist-Verified-Signer";
/// What `open` warns of in a post it shows, one header each, after the signer's.
pub const WARNING_HEADER: &str = "Hushlist-Warning";
const OUR_HEADER_PREFIXES: [&str; 2] = ["hushlist-verified", "hushlist-warning"];
/// The header a shown post carries for each way the outer headers of the copy opened differ
/// from what the signer signed (the `HP-Outer` records inside) or from what the list writes.
pub const OUTER_MISMATCH_HEADER: &str = "Hushlist-Verified-Outer-Mismatch";
/// The outer headers compared with the signer's `HP-Outer` records, besides From, whose
/// record the list rewrites.
const SIGNED_OUTER_HEADERS: [&str; 7] = [
    "To",
    "Cc",
    "Date",
    "Message-ID",
    "In-Reply-To",
    "References",
    "Subject",
];
/// The longest outer header value quoted in an [`OUTER_MISMATCH_HEADER`], in characters.
const MAX_QUOTED: usize = 200;

/// How far apart (seconds, either way) a signature without the post marker and the deposit
/// of its key may be for the post to be shown: sealing and depositing happen together, and
/// the two clocks (the signer's and the key server's) may differ a little.
pub const UNMARKED_DEPOSIT_WINDOW_SECS: u64 = 3_600;

/// A post as a member is shown it.
#[derive(Debug)]
pub struct Shown {
    /// The signer's roster address, which the message's From names.
    pub signer: Address,
    /// The inner message, starting with `Hushlist-Verified-Signer`.
    pub message: Vec<u8>,
}

/// Opens a delivered post as `me` and checks it as `shown` does, then its outer headers
/// against what the signer signed and the list writes (`flag_outer`): the one way a post is
/// opened for a person to read, so `open`, `archive --open`, `archive --download` and
/// `list held --open` cannot check differently.
pub async fn show_post(
    me: &SecretIdentity,
    home: &Home,
    lists: &[ListConfig],
    raw: &[u8],
) -> Result<Shown, PostError> {
    let (list, opened, signer, author, mut warnings) = open_post(me, home, lists, raw).await?;
    let message_id = MessageParser::new()
        .parse(&opened.message)
        .and_then(|m| m.message_id().map(str::to_owned));
    let seen = match &message_id {
        Some(message_id) => {
            let seen = SeenIds::load(home, &list.list)?;
            if let Some(earlier) = seen.other_key_id(message_id, opened.key_id.as_str()) {
                warnings.push(format!(
                    "this post's Message-ID <{message_id}> is that of another post you were shown, under key id {earlier}; a mail reader may take one for the other"
                ));
            }
            Some((seen, message_id))
        }
        None => None,
    };
    let key_id = opened.key_id.to_string();
    let mut shown = shown(opened, signer, &warnings)?;
    // `shown` refuses every post without a signer on the roster, so an author is known here.
    if let Some(author) = &author {
        flag_outer(&mut shown, raw, &list.list, author)?;
    }
    if let Some((seen, message_id)) = seen {
        seen.record(message_id, &key_id)?;
    }
    Ok(shown)
}

/// Checks the outer headers of `raw`, the copy `shown` was opened from, which nothing signs:
/// a relay on the way may have changed them, or whoever handed the post to the list server
/// (an archived or held post is shown as it arrived). A From or Sender naming anyone but the
/// list or the signer, or a Reply-To naming anyone but the signer, is refused, since a mail
/// reader shows or answers them. Every other difference from the signer's `HP-Outer` records
/// (To, Cc, Date, Message-ID, In-Reply-To, References, Subject `[...]`), and a From name
/// other than the one the list writes (for the list's address or the author's), is flagged in an [`OUTER_MISMATCH_HEADER`] after ours.
fn flag_outer(
    shown: &mut Shown,
    raw: &[u8],
    list: &Address,
    author: &Author,
) -> Result<(), PostError> {
    let signer = &author.address;
    let inner = MessageParser::new()
        .parse_headers(&shown.message)
        .ok_or(PostError::NotAMessage)?;
    let outer = MessageParser::new()
        .parse_headers(raw)
        .ok_or(PostError::NotAMessage)?;
    let signed = |name: &str| -> Vec<String> {
        inner
            .root_part()
            .headers()
            .iter()
            .filter(|h| h.name.as_str().eq_ignore_ascii_case("HP-Outer"))
            .filter_map(|h| {
                let record = &shown.message[h.offset_start as usize..h.offset_end as usize];
                let record = String::from_utf8_lossy(record);
                let (field, value) = record.split_once(':')?;
                field
                    .trim()
                    .eq_ignore_ascii_case(name)
                    .then(|| one_line(value.as_bytes()))
            })
            .collect()
    };
    let outer_headers = outer.root_part().headers();
    let named = |name: &'static str| named_in(outer_headers, name);
    let written = |name: &'static str| -> Vec<String> {
        named(name)
            .map(|h| one_line(&raw[h.offset_start as usize..h.offset_end as usize]))
            .collect()
    };
    let refuse = |header: &'static str, claimed: Vec<String>, expected: String| {
        PostError::OuterNotTheSigner {
            header,
            claimed: listed(&claimed),
            signer: signer.clone(),
            list: list.clone(),
            expected,
        }
    };
    let is =
        |claimed: &str, who: &Address| Address::parse(claimed).is_ok_and(|a| a.same_mailbox(who));

    let mut differences = Vec::new();
    let froms: Vec<String> = named("From").flat_map(|h| addresses_in(raw, h)).collect();
    let from_list = match froms.as_slice() {
        [from] if is(from, list) => {
            let expected = author.via(list);
            let name = named("From")
                .filter_map(|h| h.value.as_address()?.first()?.name().map(str::to_owned))
                .next()
                .unwrap_or_default();
            if name != expected {
                differences.push(format!(
                    "From: the outer name is {} but the list names {signer} {}",
                    quoted(&[name]),
                    quoted(&[expected])
                ));
            }
            true
        }
        [from] if is(from, signer) => {
            // A list that keeps the author's From (their domain lets it through DMARC)
            // writes the name the roster gives them; so does the author's own copy as signed.
            let name = named("From")
                .filter_map(|h| h.value.as_address()?.first()?.name().map(str::to_owned))
                .next();
            let listed = (author.name != author.address.as_str()).then(|| author.name.clone());
            let (written, signed) = (written("From"), signed("From"));
            if name != listed && written != signed {
                differences.push(difference("From", &written, signer, &signed));
            }
            false
        }
        _ => return Err(refuse("From", froms, format!("{list} or {signer}"))),
    };
    let senders: Vec<String> = named("Sender").flat_map(|h| addresses_in(raw, h)).collect();
    if senders.iter().any(|s| !is(s, list) && !is(s, signer)) {
        return Err(refuse("Sender", senders, format!("{list} or {signer}")));
    }
    let reply_to: Vec<String> = named("Reply-To")
        .flat_map(|h| addresses_in(raw, h))
        .collect();
    if reply_to.iter().any(|r| !is(r, signer)) {
        return Err(refuse("Reply-To", reply_to, signer.to_string()));
    }
    // Where mail readers send a reply or a follow-up besides Reply-To (mutt's list-reply
    // reads them): the list writes neither, so only the signer or the list may be named.
    for header in ["Mail-Reply-To", "Mail-Followup-To"] {
        let named: Vec<String> = named(header).flat_map(|h| addresses_in(raw, h)).collect();
        if named.iter().any(|a| !is(a, list) && !is(a, signer)) {
            return Err(refuse(header, named, format!("{list} or {signer}")));
        }
    }
    // A read receipt tells its address when the post was read; the list never asks for one.
    for header in ["Disposition-Notification-To", "Return-Receipt-To"] {
        let asked = written(header);
        if !asked.is_empty() {
            differences.push(format!(
                "{header}: the outer header asks for a read receipt to {}, which neither the list nor {signer} wrote",
                quoted(&asked)
            ));
        }
    }
    if from_list && reply_to.is_empty() {
        differences.push(format!(
            "Reply-To: the outer header is missing, so a reply goes to {list} and not to {signer}"
        ));
    }
    for name in SIGNED_OUTER_HEADERS {
        let (written, signed) = (written(name), signed(name));
        if written != signed {
            differences.push(difference(name, &written, signer, &signed));
        }
    }
    if differences.is_empty() {
        return Ok(());
    }
    let eol: &[u8] = if shown.message.windows(2).any(|w| w == b"\r\n") {
        b"\r\n"
    } else {
        b"\n"
    };
    let first_line_end = shown
        .message
        .iter()
        .position(|&b| b == b'\n')
        .map_or(shown.message.len(), |at| at + 1);
    let mut flags = Vec::new();
    for difference in differences {
        flags.extend_from_slice(format!("{OUTER_MISMATCH_HEADER}: {difference}").as_bytes());
        flags.extend_from_slice(eol);
    }
    shown.message.splice(first_line_end..first_line_end, flags);
    Ok(())
}

/// The fields of `headers` called `name`, in any case.
fn named_in<'a>(
    headers: &'a [Header<'a>],
    name: &'static str,
) -> impl Iterator<Item = &'a Header<'a>> {
    headers
        .iter()
        .filter(move |h| h.name.as_str().eq_ignore_ascii_case(name))
}

/// One outer header that is not what the signer signed, said as a header value.
fn difference(name: &str, written: &[String], signer: &Address, signed: &[String]) -> String {
    let outer = if written.is_empty() {
        "missing".to_owned()
    } else {
        quoted(written)
    };
    let signed = if signed.is_empty() {
        "none".to_owned()
    } else {
        quoted(signed)
    };
    format!("{name}: the outer header is {outer} but {signer} signed {signed}")
}

/// Header values quoted for an [`OUTER_MISMATCH_HEADER`], each cut at [`MAX_QUOTED`].
fn quoted(values: &[String]) -> String {
    values
        .iter()
        .map(|v| {
            // Decoded values (an RFC 2047 name) can hold line breaks: one line, always.
            let v = one_line(v.as_bytes());
            let cut: String = v.chars().take(MAX_QUOTED).collect();
            let more = if cut.len() < v.len() { "..." } else { "" };
            format!("\"{cut}{more}\"")
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// A header value as one line of text, to compare and to quote in a header of ours: folds
/// and control characters become spaces, runs of spaces one.
fn one_line(value: &[u8]) -> String {
    String::from_utf8_lossy(value)
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// The opened message as shown, or why it is not shown: it must be validly signed by a
/// roster member, and its headers must name that member as the author, since mail readers
/// show the From (and Sender) and not our header. So exactly one From address and at most
/// one Sender address, each the signer's; no bare CR or NUL in the headers, which readers
/// split differently. `warnings` follow our signer header. The header block is rebuilt from the fields mail-parser read (a line
/// it skipped cannot become a header to another reader), without any `Hushlist-Verified*`
/// field the sender wrote in whatever case or spacing, after ours.
fn shown(opened: Opened, signer: Option<Address>, warnings: &[String]) -> Result<Shown, PostError> {
    let (fingerprint, signer) = match (opened.signature, signer) {
        (
            Signature::Valid {
                signer: fingerprint,
                ..
            },
            Some(signer),
        ) => (fingerprint, signer),
        (
            Signature::Valid {
                signer: fingerprint,
                ..
            },
            None,
        ) => {
            return Err(PostError::SignerNotOnRoster(fingerprint));
        }
        (
            Signature::NotAPost {
                signer: fingerprint,
                reason,
            },
            signer,
        ) => {
            let signer = signer.map_or_else(
                || fingerprint.to_string(),
                |address| format!("{address} ({fingerprint})"),
            );
            return Err(PostError::NotAPostSignature { signer, reason });
        }
        (Signature::Invalid, _) => return Err(PostError::BadSignature),
        (Signature::Unsigned, _) => return Err(PostError::Unsigned),
    };
    let message = &opened.message;
    let Some(parsed) = MessageParser::new().parse(message) else {
        return Err(PostError::AuthorCount {
            header: "From",
            found: Vec::new(),
            signer,
        });
    };
    let headers = parsed.root_part().headers();
    let headers_end = headers.last().map_or(0, |h| h.offset_end as usize);
    let ambiguous = message[..headers_end]
        .iter()
        .enumerate()
        .any(|(i, &b)| b == 0 || (b == b'\r' && message.get(i + 1) != Some(&b'\n')));
    if ambiguous {
        return Err(PostError::AmbiguousHeaders { signer });
    }
    for (header, name, required) in [
        ("From", HeaderName::From, true),
        ("Sender", HeaderName::Sender, false),
    ] {
        let found: Vec<String> = headers
            .iter()
            .filter(|h| h.name == name)
            .flat_map(|h| addresses_in(message, h))
            .collect();
        match found.as_slice() {
            [] if !required => {}
            [claimed] => {
                if !Address::parse(claimed).is_ok_and(|a| a.same_mailbox(&signer)) {
                    return Err(PostError::NotTheSigner {
                        header,
                        claimed: claimed.clone(),
                        signer,
                    });
                }
            }
            _ => {
                return Err(PostError::AuthorCount {
                    header,
                    found,
                    signer,
                });
            }
        }
    }

    let eol: &[u8] = match headers.first() {
        Some(h) if message[..h.offset_end as usize].ends_with(b"\r\n") => b"\r\n",
        _ => b"\n",
    };
    let body_start = (parsed.root_part().offset_body as usize).max(headers_end);
    let mut shown = Vec::with_capacity(message.len() + 128);
    shown.extend_from_slice(
        format!("{VERIFIED_SIGNER_HEADER}: {signer} ({fingerprint})").as_bytes(),
    );
    shown.extend_from_slice(eol);
    for warning in warnings {
        shown.extend_from_slice(format!("{WARNING_HEADER}: {warning}").as_bytes());
        shown.extend_from_slice(eol);
    }
    for header in headers.iter().filter(|h| !is_ours(h.name.as_str())) {
        shown.extend_from_slice(&message[header.offset_field as usize..header.offset_end as usize]);
    }
    shown.extend_from_slice(eol);
    shown.extend_from_slice(&message[body_start..]);
    Ok(Shown {
        signer,
        message: shown,
    })
}

/// Every address a From or Sender field names; a field that names none by address counts
/// as one, in its own words, so it cannot pass as no author at all.
fn addresses_in(message: &[u8], header: &Header) -> Vec<String> {
    let named: Vec<String> = header
        .value
        .as_address()
        .into_iter()
        .flat_map(|a| a.iter())
        .map(|a| match a.address() {
            Some(address) => address.to_owned(),
            None => a.name().unwrap_or_default().to_owned(),
        })
        .collect();
    if named.is_empty() {
        let raw = &message[header.offset_start as usize..header.offset_end as usize];
        vec![String::from_utf8_lossy(raw).trim().to_owned()]
    } else {
        named
    }
}

/// Whether a header name is one of ours, ignoring case and the whitespace mail-parser
/// ignores in names.
fn is_ours(name: &str) -> bool {
    let name: String = name
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .map(|c| c.to_ascii_lowercase())
        .collect();
    OUR_HEADER_PREFIXES
        .iter()
        .any(|prefix| name.starts_with(prefix))
}

fn listed(addresses: &[String]) -> String {
    if addresses.is_empty() {
        "none".to_owned()
    } else {
        addresses.join(", ")
    }
}

/// Opens a delivered post as `me` and checks it against its list: the list's roster as
/// pinned in `home` gives the candidate signers; the list's key server must release the
/// post's key (a PKESK spliced into the post is not enough: it says nothing of who deposited
/// the key), and says who deposited it and when. The signature must bind the post's key id
/// and this list, its signer must be the depositor and must have been allowed to post then.
/// `lists` are the lists this home knows; the post names which one. Returns the list, the
/// opened post, the signer's roster address (if on the roster) and warnings to show. Private:
/// people are shown posts through `show_post`, which checks the rest.
async fn open_post<'a>(
    me: &SecretIdentity,
    home: &Home,
    lists: &'a [ListConfig],
    raw: &[u8],
) -> Result<
    (
        &'a ListConfig,
        Opened,
        Option<Address>,
        Option<Author>,
        Vec<String>,
    ),
    PostError,
> {
    let post = EncryptedPost::parse(raw).map_err(|e| PostError::NotAPost(e.to_string()))?;
    let list = which_list(raw, lists).ok_or(PostError::UnknownList)?;
    let rosters = readable_rosters(me, home, list).await?;
    let roster = rosters.newest();
    let signers: Vec<_> = roster.members().map(|m| m.cert.clone()).collect();
    let address_of = |fingerprint: &Fingerprint| {
        roster
            .members()
            .find(|m| m.cert.fingerprint() == fingerprint)
            .map(|m| m.address.clone())
    };
    let released = match list
        .key_server()?
        .fetch_key(me, &list.list, &post.key_id)
        .await
    {
        Ok(released) => released,
        Err(refusal) if refusal.is_not_on_roster() => return Err(refusal_for(me, list, refusal)),
        Err(refusal) => {
            return Err(unconfirmed(
                list,
                roster,
                (raw, &post.key_id),
                me,
                &signers,
                &address_of,
                refusal,
            ));
        }
    };
    let mut opened = open(raw, OpenWith::Pkesk(&released.pkesk, me), &signers)
        .map_err(|e| PostError::Open(e.to_string()))?;
    let mut warnings = Vec::new();
    // A post whose signature names no post (sealed before hushlist bound signatures to their
    // list and key id, as archives hold them, or signed by another OpenPGP program) is shown
    // with a warning if everything else holds: its signer deposited its key, within
    // UNMARKED_DEPOSIT_WINDOW_SECS of signing, and might post then. Nothing binds such a
    // signature to this key, so the window is what keeps a member from wrapping an older one
    // of the signer's in a key the signer deposited for another post.
    if let Signature::NotAPost {
        signer,
        reason: NotAPostSignature::NoMarker { created },
    } = &opened.signature
        && created.abs_diff(released.deposited_at) <= UNMARKED_DEPOSIT_WINDOW_SECS
    {
        warnings.push(
            "this post's signature does not name its list and key id (hushlist before December 2026 and other OpenPGP programs do not write them); it is shown because the key server says its signer deposited its key".to_owned(),
        );
        opened.signature = Signature::Valid {
            signer: signer.clone(),
            context: SignedContext {
                key_id: opened.key_id.to_string(),
                lists: vec![list.list.clone()],
            },
        };
    }
    let signer = match &opened.signature {
        Signature::Valid { signer, context } => match address_of(signer) {
            Some(address) => {
                check_binding(
                    list,
                    roster,
                    &opened.key_id,
                    &released,
                    (signer, &address),
                    context,
                )?;
                if let Some(warning) = held_warning(roster, signer, &released) {
                    warnings.push(warning);
                }
                Some(address)
            }
            None => None,
        },
        Signature::NotAPost { signer, .. } => address_of(signer),
        Signature::Invalid | Signature::Unsigned => None,
    };
    let author = match &opened.signature {
        Signature::Valid { signer, .. } => roster
            .members()
            .find(|m| m.cert.fingerprint() == signer)
            .map(Author::of_member),
        _ => None,
    };
    Ok((list, opened, signer, author, warnings))
}

/// Checks that what the signature binds is this post on this list, deposited by its
/// signer, who might post at the deposit's roster seq (or, under moderation of
/// non-posters, was on the roster then: their post was held for an owner).
fn check_binding(
    list: &ListConfig,
    roster: &Roster,
    key_id: &KeyId,
    released: &ReleasedKey,
    (fingerprint, signer): (&Fingerprint, &Address),
    context: &SignedContext,
) -> Result<(), PostError> {
    if context.key_id != key_id.as_str() {
        return Err(PostError::SignedForOtherKeyId {
            signer: signer.clone(),
            signed: context.key_id.clone(),
            outer: key_id.to_string(),
        });
    }
    if !context.lists.iter().any(|l| l.same_mailbox(&list.list)) {
        return Err(PostError::NotSignedForList {
            signer: signer.clone(),
            list: list.list.clone(),
            signed: context.lists.clone(),
        });
    }
    if &released.depositor != fingerprint {
        let depositor = roster
            .members()
            .find(|m| m.cert.fingerprint() == &released.depositor)
            .map_or_else(
                || released.depositor.to_string(),
                |m| format!("{} ({})", m.address, released.depositor),
            );
        return Err(PostError::NotTheDepositor {
            signer: signer.clone(),
            depositor,
            key_id: key_id.to_string(),
        });
    }
    match roster.may_post_at(fingerprint, released.roster_seq) {
        Ok(_) => Ok(()),
        Err(Refusal::MayNotPost { .. })
            if roster.policy_at(released.roster_seq).moderation == Moderation::NonPosters =>
        {
            Ok(())
        }
        Err(refusal) => Err(PostError::MayNotPost {
            signer: signer.clone(),
            seq: released.roster_seq,
            refusal,
        }),
    }
}

/// A post by someone who could not post on their own when its key was deposited, on a list
/// that holds such posts for an owner: shown, saying that only an owner's release lets it
/// reach the list, which a copy alone cannot prove.
fn held_warning(roster: &Roster, signer: &Fingerprint, released: &ReleasedKey) -> Option<String> {
    roster
        .may_post_at(signer, released.roster_seq)
        .err()
        .map(|refusal| {
            format!(
                "{refusal} at roster seq {}, so this post reached the list only if an owner released it from moderation; a copy mailed to you directly would look the same",
                released.roster_seq
            )
        })
}

/// Why a post whose key the key server did not release is not shown: the refusal, and what
/// a PKESK for me in the post gave (when its signer may not post now, that is the reason;
/// when there is none, the refusal alone).
fn unconfirmed(
    list: &ListConfig,
    roster: &Roster,
    (raw, key_id): (&[u8], &KeyId),
    me: &SecretIdentity,
    signers: &[Cert],
    address_of: &impl Fn(&Fingerprint) -> Option<Address>,
    refusal: RemoteError,
) -> PostError {
    let spliced = match open(raw, OpenWith::Identity(me), signers) {
        Ok(opened) => {
            if let Signature::Valid { signer, .. } = &opened.signature
                && let Some(address) = address_of(signer)
                && let Err(not_allowed) = roster.may_post_at(signer, roster.head_seq())
            {
                return PostError::MayNotPost {
                    signer: address,
                    seq: roster.head_seq(),
                    refusal: not_allowed,
                };
            }
            "The post carries a PKESK for your key, which opened it, but that says nothing of who deposited the key.".to_owned()
        }
        // No PKESK for me (a pull-mode copy): the refusal is the whole story.
        Err(OpenError::NoPkeskForUs(_)) => return refusal.into(),
        Err(e) => format!("Nor did the post's PKESK for your key open it: {e}."),
    };
    PostError::KeyNotConfirmed {
        list: list.list.clone(),
        key_id: key_id.to_string(),
        refusal: Box::new(refusal),
        spliced,
    }
}

/// A delivered post with my PKESK spliced in: a standard PGP/MIME message that any OpenPGP
/// client opens with my secret key alone.
pub async fn splice_post(
    me: &SecretIdentity,
    home: &Home,
    lists: &[ListConfig],
    raw: &[u8],
) -> Result<Vec<u8>, PostError> {
    let post = EncryptedPost::parse(raw).map_err(|e| PostError::NotAPost(e.to_string()))?;
    let list = which_list(raw, lists).ok_or(PostError::UnknownList)?;
    readable_rosters(me, home, list).await?;
    let released = list
        .key_server()?
        .fetch_key(me, &list.list, &post.key_id)
        .await
        .map_err(|e| refusal_for(me, list, e))?;
    Ok(post.splice(raw, &[released.pkesk]))
}

/// The list's roster as `me` may read it (checked against the pins); a refusal because this
/// home's key is not on it says so, and what to do.
async fn readable_rosters(
    me: &SecretIdentity,
    home: &Home,
    list: &ListConfig,
) -> Result<Rosters, PostError> {
    home.rosters(me, list).await.map_err(|e| match e {
        PinError::Remote(refusal) => refusal_for(me, list, refusal),
        other => other.into(),
    })
}

/// A server's refusal, said as "not on the roster" when that is why: a server tells nobody
/// off the roster who is on it, so whether the address is there under another key is not
/// known here. (A removed member's refusal depends on the policy at posting time, which the
/// key server explains.)
fn refusal_for(me: &SecretIdentity, list: &ListConfig, refusal: RemoteError) -> PostError {
    if refusal.is_not_on_roster() {
        PostError::NotOnRoster {
            list: list.list.clone(),
            key: me.fingerprint().clone(),
        }
    } else {
        refusal.into()
    }
}

/// The list a delivered post came from: its List-Post, else any To/Cc address that is a
/// list this home knows.
fn which_list<'a>(raw: &[u8], lists: &'a [ListConfig]) -> Option<&'a ListConfig> {
    let message = MessageParser::new().parse(raw)?;
    if let Some(post) = message.header_raw("List-Post") {
        let inner = post.trim().trim_start_matches('<').trim_end_matches('>');
        if let Some(found) = inner
            .strip_prefix("mailto:")
            .and_then(|a| Address::parse(a).ok())
            .and_then(|a| known(lists, &a))
        {
            return Some(found);
        }
    }
    to_and_cc(&message).find_map(|a| known(lists, &a))
}

/// A plain-text post from `from` to `list` with `body` (`send --list --subject`), line ends
/// as SMTP carries them.
pub fn compose(from: &Address, list: &Address, subject: &str, body: &[u8]) -> Vec<u8> {
    let mut message = format!(
        "From: {from}\r\nTo: {list}\r\nSubject: {subject}\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
    )
    .into_bytes();
    message.extend_from_slice(&crlf(body));
    message
}

/// `input` with line ends as SMTP carries them: every bare LF becomes CRLF.
pub fn crlf(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len() + input.len() / 40);
    let mut previous = 0u8;
    for &byte in input {
        if byte == b'\n' && previous != b'\r' {
            out.push(b'\r');
        }
        out.push(byte);
        previous = byte;
    }
    out
}

/// The mail address in my identity's user id.
pub fn my_address(me: &SecretIdentity) -> Result<Address, PostError> {
    me.cert()
        .addresses()
        .into_iter()
        .next()
        .ok_or(PostError::NoAddressInIdentity)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MALLORY: &str = "mallory@example.net";

    /// `message` as opened from a post validly signed by Mallory, a roster member.
    fn show(message: &str) -> Result<Shown, PostError> {
        let key_id = KeyId::generate(OsRng);
        let opened = Opened {
            message: message.as_bytes().to_vec(),
            signature: Signature::Valid {
                signer: Fingerprint::try_from("AB".repeat(20)).unwrap(),
                context: SignedContext {
                    key_id: key_id.to_string(),
                    lists: Vec::new(),
                },
            },
            key_id,
        };
        shown(opened, Some(Address::parse(MALLORY).unwrap()), &[])
    }

    fn author_count(message: &str) -> Vec<String> {
        match show(message) {
            Err(PostError::AuthorCount { found, .. }) => found,
            other => panic!("{other:?}"),
        }
    }

    fn claimed(message: &str) -> String {
        match show(message) {
            Err(PostError::NotTheSigner { claimed, .. }) => claimed,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn every_author_a_from_names_counts() {
        assert_eq!(
            author_count("From: mallory@example.net, ceo@example.org\r\n\r\nx\r\n"),
            ["mallory@example.net", "ceo@example.org"]
        );
        assert_eq!(
            author_count("To: team@lists.example.org\r\n\r\nx\r\n"),
            Vec::<String>::new()
        );
        assert_eq!(
            claimed("From: board: ceo@example.org;\r\n\r\nx\r\n"),
            "ceo@example.org"
        );
        assert_eq!(
            claimed("From: The Chief Executive\r\n\r\nx\r\n"),
            "The Chief Executive"
        );
        // mail-parser reads a name with spaces in it as the name without them; so do we.
        assert_eq!(
            claimed("F rom: ceo@example.org\r\n\r\nx\r\n"),
            "ceo@example.org"
        );
    }

    #[test]
    fn the_signer_may_write_their_address_in_any_case_and_name_themself_as_sender() {
        let shown =
            show("From: Mallory <MALLORY@example.net>\r\nSender: mallory@example.net\r\n\r\nx\r\n")
                .unwrap();
        assert!(
            shown
                .message
                .starts_with(b"Hushlist-Verified-Signer: mallory@example.net (ABAB")
        );
    }

    /// A line mail-parser skips inside the header block, then a line of spaces that ends the
    /// block for it but not for a reader that takes it as folding: the From after it is
    /// shown as body, below a blank line, not as a second author.
    #[test]
    fn lines_the_parser_skipped_do_not_reach_the_reader_as_headers() {
        let shown = show(
            "From: mallory@example.net\r\nnot a header\r\n \r\nFrom: ceo@example.org\r\n\r\nx\r\n",
        )
        .unwrap();
        let text = String::from_utf8(shown.message).unwrap();
        assert!(
            text.ends_with("From: mallory@example.net\r\n\r\nFrom: ceo@example.org\r\n\r\nx\r\n"),
            "{text}"
        );
        assert!(!text.contains("not a header"), "{text}");
    }

    #[test]
    fn a_nul_in_the_headers_is_refused() {
        assert!(matches!(
            show("From: mallory@example.net\r\nSubject: a\0From: ceo@example.org\r\n\r\nx\r\n"),
            Err(PostError::AmbiguousHeaders { .. })
        ));
    }

    #[test]
    fn a_composed_post_has_crlf_line_ends_and_names_its_list() {
        assert_eq!(crlf(b"a\nb\r\nc\n\n"), b"a\r\nb\r\nc\r\n\r\n");
        let from = Address::parse("alice@example.org").unwrap();
        let list = Address::parse("team@example.org").unwrap();
        let message = compose(&from, &list, "Q3", b"Revenue is up.\n");
        assert_eq!(
            String::from_utf8(message).unwrap(),
            "From: alice@example.org\r\nTo: team@example.org\r\nSubject: Q3\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nRevenue is up.\r\n"
        );
    }
}
