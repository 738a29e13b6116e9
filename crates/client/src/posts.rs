//! Sending and opening posts: what `hushlist send` and `hushlist open` do.

use std::time::{SystemTime, UNIX_EPOCH};

use hushlist_core::listmail::HELD_REPLY;
use hushlist_core::outer::EncryptedPost;
use hushlist_core::roster::Roster;
use hushlist_core::{Address, SecretIdentity};
use hushlist_envelope::{OpenWith, Opened, Signature, open, seal};
use mail_builder::headers::Header as _;
use mail_builder::headers::date::Date;
use mail_parser::MessageParser;
use rand::rngs::OsRng;

use crate::Home;
use crate::lists::ListConfig;
use crate::pins::PinError;
use crate::remote::{RemoteError, submit};

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
    #[error("sealing failed: {0}")]
    Seal(String),
    #[error("this is not a hushlist post: {0}")]
    NotAPost(String),
    #[error(
        "cannot tell which list this post came from (no List-Post or To header naming a list you use)"
    )]
    UnknownList,
    #[error(
        "you ({address}) are not a member of {list}; ask an owner to add you with `hushlist list add`"
    )]
    NotAMember { list: Address, address: Address },
    #[error(
        "{list} knows {address} by key {on_roster}, but this home's key is {mine}; use the home with that key, or ask an owner to re-add you with this one"
    )]
    WrongKey {
        list: Address,
        address: Address,
        on_roster: String,
        mine: String,
    },
    #[error("the post could not be opened: {0}")]
    Open(String),
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
        Err(refusal @ RemoteError::Refused { .. }) => {
            let rosters = home.rosters(list).await?;
            return Err(explain_refusal(me, rosters.newest(), refusal));
        }
        Err(e) => return Err(e.into()),
    };
    let reply = submit(&list.smtp, &from, &list.list, &sealed.message).await?;
    Ok(Sent {
        key_id: sealed.key_id.to_string(),
        roster_seq: receipt.roster_seq,
        held: reply.contains(HELD_REPLY),
    })
}

/// Opens a delivered post as `me`: with the PKESK spliced into it (push mode) or with one
/// fetched from the list's key server (pull mode), checking the signature against the
/// list's roster as pinned in `home`. `lists` are the lists this home knows; the post names
/// which one.
pub async fn open_post(
    me: &SecretIdentity,
    home: &Home,
    lists: &[ListConfig],
    raw: &[u8],
) -> Result<(Opened, Option<Address>), PostError> {
    let post = EncryptedPost::parse(raw).map_err(|e| PostError::NotAPost(e.to_string()))?;
    let list = which_list(raw, lists).ok_or(PostError::UnknownList)?;
    let rosters = home.rosters(list).await?;
    let roster = rosters.newest();
    let signers: Vec<_> = roster.members().map(|m| m.cert.clone()).collect();
    let opened = match open(raw, OpenWith::Identity(me), &signers) {
        Ok(opened) => opened,
        Err(_) => {
            let pkesk = list
                .key_server()?
                .fetch_key(me, &list.list, &post.key_id)
                .await
                .map_err(|e| explain_refusal(me, roster, e))?;
            open(raw, OpenWith::Pkesk(&pkesk, me), &signers)
                .map_err(|e| PostError::Open(e.to_string()))?
        }
    };
    let signer = match &opened.signature {
        Signature::Valid(fingerprint) => roster
            .members()
            .find(|m| m.cert.fingerprint() == fingerprint)
            .map(|m| m.address.clone()),
        _ => None,
    };
    Ok((opened, signer))
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
    let rosters = home.rosters(list).await?;
    let pkesk = list
        .key_server()?
        .fetch_key(me, &list.list, &post.key_id)
        .await
        .map_err(|e| explain_refusal(me, rosters.newest(), e))?;
    Ok(post.splice(raw, &[pkesk]))
}

/// Says precisely why the key server refused me when the roster shows it: my address is
/// there under another key than this home's, or this key was never on the list. (A removed
/// member's refusal depends on the policy at posting time, which the key server explains.)
fn explain_refusal(me: &SecretIdentity, roster: &Roster, refusal: RemoteError) -> PostError {
    if !matches!(refusal, RemoteError::Refused { .. })
        || roster.known_cert(me.fingerprint()).is_some()
    {
        return refusal.into();
    }
    let Ok(address) = my_address(me) else {
        return refusal.into();
    };
    match roster.member(&address) {
        Some(member) => PostError::WrongKey {
            list: roster.list().clone(),
            address,
            on_roster: member.cert.fingerprint().to_string(),
            mine: me.fingerprint().to_string(),
        },
        None => PostError::NotAMember {
            list: roster.list().clone(),
            address,
        },
    }
}

/// The list a delivered post came from: its List-Post, else any To/Cc address that is a
/// list this home knows.
fn which_list<'a>(raw: &[u8], lists: &'a [ListConfig]) -> Option<&'a ListConfig> {
    let message = MessageParser::new().parse(raw)?;
    let named = |address: &str| {
        let address = Address::parse(address).ok()?;
        lists.iter().find(|l| l.list.same_mailbox(&address))
    };
    if let Some(post) = message.header_raw("List-Post") {
        let inner = post.trim().trim_start_matches('<').trim_end_matches('>');
        if let Some(found) = inner.strip_prefix("mailto:").and_then(named) {
            return Some(found);
        }
    }
    message
        .to()
        .into_iter()
        .chain(message.cc())
        .flat_map(|a| a.iter())
        .filter_map(|a| a.address())
        .find_map(named)
}

/// The mail address in my identity's user id.
pub fn my_address(me: &SecretIdentity) -> Result<Address, PostError> {
    me.cert()
        .addresses()
        .into_iter()
        .next()
        .ok_or(PostError::NoAddressInIdentity)
}
