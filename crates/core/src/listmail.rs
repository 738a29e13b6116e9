//! What a list does to a post's outer headers before delivering it: the list writes them
//! itself. From the author as the roster names them, or "Name via list" with Reply-To the
//! author where the author's domain would have receivers refuse the list's copy (DMARC; who
//! wrote the post is proven by the signature inside, not by this header), Subject `[...]`, only the addressing, threading and MIME headers of the post, and the list headers
//! of RFC 2369, 2919 and 8058 plus `Precedence: list`. The encrypted body is never touched.
//! Also the VERP envelope sender that lets a bounce name the member it is about, and the
//! one-click unsubscribe links (RFC 8058) only the list server that made them can honour.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac as _};
use mail_builder::MessageBuilder;
use mail_builder::headers::address::Address as HeaderAddress;
use mail_builder::headers::content_type::ContentType;
use mail_builder::headers::raw::Raw;
use mail_builder::headers::text::Text;
use mail_builder::headers::url::URL;
use mail_builder::mime::MimePart;
use mail_parser::MessageParser;

use rand::{CryptoRng, Rng};
use sha2::{Digest as _, Sha256};
use zeroize::Zeroizing;

use crate::address::Address;
use crate::identity::{Cert, IdentityError};
use crate::outer::{KEY_ID_HEADER, KEY_SERVER_HEADER, OBSCURED_SUBJECT, OuterError};
use crate::roster::{FromRewrite, Member, Roster};

/// The post's outer headers a delivered copy carries over, byte for byte: the addressing and
/// threading headers the sender signed (RFC 9788 `HP-Outer` records of the
/// [`EXPOSED_HEADERS`](crate::outer::EXPOSED_HEADERS) but From), the MIME structure of the
/// encrypted body, and what a member's client needs to fetch the post's key. Every other
/// header of the post is dropped, since nothing proves who wrote it: a Subject or Reply-To
/// written outside the encryption, any `X-` header, and the trace and authentication headers
/// of the post's way to the list (Received, DKIM-Signature, Authentication-Results, ARC-*),
/// which would show members the poster's network path and claims about it the list never
/// checked, and which the list's changes to the post break anyway; the list's own relay adds
/// its own. The proof of origin (`Hushlist-Post-Proof`) was for the list
/// server and stays with it.
const PASSED_HEADERS: [&str; 10] = [
    "To",
    "Cc",
    "Date",
    "Message-ID",
    "In-Reply-To",
    "References",
    "MIME-Version",
    "Content-Type",
    KEY_ID_HEADER,
    KEY_SERVER_HEADER,
];

/// Who wrote a post, as the list's roster knows them: the list writes this name and address
/// into every copy (From, or "Name via list" and Reply-To), never what the post's outer
/// headers say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Author {
    /// The author's address on the roster.
    pub address: Address,
    /// The name in the user id of the author's roster certificate, or the address when it
    /// names none; one line of printable text.
    pub name: String,
}

/// The longest author name a copy's From carries, in characters.
const MAX_AUTHOR_NAME: usize = 64;

impl Author {
    /// The roster member as the author: the name of the certificate's user id for their
    /// roster address (`Name <address>`), made one line of printable text.
    pub fn of_member(member: &Member) -> Self {
        let name = member
            .cert
            .user_ids()
            .iter()
            .find_map(|uid| {
                let (name, rest) = uid.rsplit_once('<')?;
                let address = Address::parse(rest.trim_end().strip_suffix('>')?).ok()?;
                address
                    .same_mailbox(&member.address)
                    .then(|| one_line(name))
            })
            .filter(|name| !name.is_empty())
            .unwrap_or_else(|| member.address.to_string());
        Author {
            address: member.address.clone(),
            name,
        }
    }

    /// The author of `raw`, an accepted post (whose From the list server checked against the
    /// post's proof of origin), as `roster` knows them; an author no longer on the roster is
    /// named by their address.
    pub fn of_post(raw: &[u8], roster: &Roster) -> Result<Self, OuterError> {
        let from = author(raw).ok_or(OuterError::BadFrom)?;
        Ok(match roster.member_by_mailbox(&from) {
            Some(member) => Author::of_member(member),
            None => Author {
                name: from.to_string(),
                address: from,
            },
        })
    }

    /// The display name of a copy's From: `Name via list`.
    pub fn via(&self, list: &Address) -> String {
        format!("{} via {}", self.name, list.local_part())
    }
}

/// A user id's name as one line of printable text: without the quotes around it, control
/// characters (a CR or LF would end the header) as spaces, runs of spaces as one, and at
/// most [`MAX_AUTHOR_NAME`] characters.
fn one_line(name: &str) -> String {
    let name = name.trim();
    let name = name
        .strip_prefix('"')
        .and_then(|n| n.strip_suffix('"'))
        .unwrap_or(name);
    let spaced: String = name
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    spaced
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .take(MAX_AUTHOR_NAME)
        .collect::<String>()
        .trim_end()
        .to_owned()
}

/// What the author's domain asks receivers to do with mail From it that fails DMARC, as far
/// as the list server could find out. A list's copy always fails DMARC when From is the
/// author's: the list changes what the author's DKIM signature covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthorDmarc {
    /// A policy of quarantine or reject applies to the author's domain.
    Enforced,
    /// A policy of none, or no DMARC record at all.
    NotEnforced,
    /// The lookup failed (the resolver answered SERVFAIL or not at all).
    Unknown,
}

/// Whose address a copy's From carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyFrom {
    /// `"Name via list" <list>`, with Reply-To the author so that a reply still reaches them.
    ViaList,
    /// The author as the roster names them, so an OpenPGP client finds the post's signer in
    /// From; no Reply-To, since a reply goes to From.
    Author,
}

impl CopyFrom {
    /// The From that `rule` settles without the author's domain, or `None` when it depends on
    /// the domain's DMARC policy ([`CopyFrom::for_author_domain`]).
    pub fn by_rule(rule: FromRewrite) -> Option<Self> {
        match rule {
            FromRewrite::Dmarc => None,
            FromRewrite::Always => Some(CopyFrom::ViaList),
            FromRewrite::Never => Some(CopyFrom::Author),
        }
    }

    /// The From under [`FromRewrite::Dmarc`] for an author whose domain publishes `dmarc`:
    /// the list's own address unless the domain surely lets the copy through, so that an
    /// unknown policy (a failed lookup) never gets the copy refused.
    pub fn for_author_domain(dmarc: AuthorDmarc) -> Self {
        match dmarc {
            AuthorDmarc::NotEnforced => CopyFrom::Author,
            AuthorDmarc::Enforced | AuthorDmarc::Unknown => CopyFrom::ViaList,
        }
    }
}

/// What the list says about itself in every copy.
#[derive(Debug, Clone)]
pub struct ListHeaders {
    pub list: Address,
    /// Human-readable name of the list, the phrase of List-Id.
    pub description: Option<String>,
    /// Where members fetch older posts (List-Archive).
    pub archive_url: Option<String>,
}

impl ListHeaders {
    /// The address that suspends delivery to whoever writes to it (List-Unsubscribe mailto).
    pub fn leave_address(&self) -> String {
        leave_address(&self.list)
    }

    /// RFC 2919 list identifier: the list's address with the `@` turned into a dot.
    pub fn list_id(&self) -> String {
        format!("{}.{}", self.list.local_part(), self.list.domain())
    }
}

/// A post rewritten for delivery, ready to be written per recipient.
#[derive(Debug, Clone)]
pub struct ListCopy {
    /// The rewritten header block without its final blank line.
    head: Vec<u8>,
    /// The body, byte for byte as posted.
    body: Vec<u8>,
}

impl ListCopy {
    /// The copy of `raw` (an accepted post) that `list` delivers: From as `from` says (the
    /// author as the roster names them, or "Name via list" and Reply-To the author), Subject
    /// `[...]`, the post's [`PASSED_HEADERS`] as they are, then the list's own headers.
    pub fn new(
        raw: &[u8],
        list: &ListHeaders,
        author: &Author,
        from: CopyFrom,
    ) -> Result<Self, OuterError> {
        let message = MessageParser::new()
            .parse(raw)
            .filter(|m| !m.headers().is_empty())
            .ok_or(OuterError::NotAMessage)?;
        let root = message.root_part();
        let header_end = root.offset_body as usize;

        let mut head = Vec::with_capacity(header_end + 512);
        let named_author = HeaderAddress::new_address(
            (author.name != author.address.as_str()).then_some(author.name.as_str()),
            author.address.as_str(),
        );
        match from {
            CopyFrom::ViaList => {
                write_header(
                    &mut head,
                    "From",
                    &HeaderAddress::new_address(Some(author.via(&list.list)), list.list.as_str()),
                );
                write_header(&mut head, "Reply-To", &named_author);
            }
            CopyFrom::Author => write_header(&mut head, "From", &named_author),
        }
        write_header(&mut head, "Subject", &Text::new(OBSCURED_SUBJECT));
        for header in &root.headers {
            let name = header.name.as_str();
            if PASSED_HEADERS.iter().any(|p| p.eq_ignore_ascii_case(name)) {
                head.extend_from_slice(
                    &raw[header.offset_field as usize..header.offset_end as usize],
                );
            }
        }
        // List-Id has the shape of a name-addr (RFC 2919: `[phrase] "<" list-id ">"`), so
        // the address writer gives the phrase the right quoting and RFC 2047 encoding.
        let list_id = list.list_id();
        write_header(
            &mut head,
            "List-Id",
            &HeaderAddress::new_address(list.description.as_deref(), list_id.as_str()),
        );
        write_header(
            &mut head,
            "List-Post",
            &URL::new(format!("mailto:{}", list.list)),
        );
        if let Some(archive) = &list.archive_url {
            write_header(&mut head, "List-Archive", &URL::new(archive.as_str()));
        }
        head.extend_from_slice(b"Precedence: list\r\n");
        let body = raw[header_end.min(raw.len())..].to_vec();
        Ok(ListCopy { head, body })
    }

    /// The copy for a batch of recipients: unsubscribing is by mail to the list's -leave
    /// address, since a copy shared by many recipients cannot carry a link for one of them.
    pub fn shared(&self, list: &ListHeaders) -> Vec<u8> {
        self.assemble(
            &URL::new(format!(
                "mailto:{}?subject=unsubscribe",
                list.leave_address()
            )),
            false,
        )
    }

    /// The copy for one recipient, with an RFC 8058 one-click unsubscribe link for them.
    pub fn for_one(&self, list: &ListHeaders, one_click_url: &str) -> Vec<u8> {
        self.assemble(
            &URL::new_list(
                [
                    one_click_url.to_owned(),
                    format!("mailto:{}?subject=unsubscribe", list.leave_address()),
                ]
                .into_iter(),
            ),
            true,
        )
    }

    fn assemble(&self, unsubscribe: &URL<'_>, one_click: bool) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.head.len() + self.body.len() + 256);
        out.extend_from_slice(&self.head);
        write_header(&mut out, "List-Unsubscribe", unsubscribe);
        if one_click {
            out.extend_from_slice(b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&self.body);
        out
    }
}

fn write_header(out: &mut Vec<u8>, name: &str, value: &impl mail_builder::headers::Header) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    value
        .write_header(&mut *out, name.len() + 2)
        .expect("writing to a Vec cannot fail");
}

/// The VERP envelope sender for a copy to `recipient`: `list-bounces+user=host@domain`, so
/// a bounce names the member it is about whatever the bouncing server puts in it.
pub fn verp_sender(list: &Address, recipient: &Address) -> String {
    format!(
        "{}-bounces+{}={}@{}",
        list.local_part(),
        recipient.local_part(),
        recipient.domain(),
        list.domain()
    )
}

/// The envelope sender for a copy shared by many recipients.
pub fn bounce_sender(list: &Address) -> String {
    format!("{}-bounces@{}", list.local_part(), list.domain())
}

/// What the list server's 250 reply to a post says when the post is held for an owner, so
/// that the sender's client can say so.
pub const HELD_REPLY: &str = "held for an owner's approval";

/// What the list server's refusal of a post says when the list already holds a different
/// post under the same key id, so that the sender's client can explain it.
pub const KEY_ID_TAKEN_REPLY: &str = "already holds a different post under key id";

/// The address that suspends delivery to whoever writes to it.
pub fn leave_address(list: &Address) -> String {
    format!("{}-leave@{}", list.local_part(), list.domain())
}

/// The envelope sender of a bounce probe: `list-probe+TOKEN@domain`. The token is random and
/// known only to the list server, so a forged bounce cannot suspend anyone.
pub fn probe_sender(list: &Address, token: &str) -> String {
    format!("{}-probe+{token}@{}", list.local_part(), list.domain())
}

/// Where a requester confirms a join request: `list-join+TOKEN@domain`. The token is
/// random and written only inside the confirmation, which is encrypted to the key the request
/// was made with, so writing here proves the mailbox and the key both.
pub fn join_confirm_address(list: &Address, token: &str) -> String {
    format!("{}-join+{token}@{}", list.local_part(), list.domain())
}

/// A new join confirmation token: 128 random bits in lowercase hex, which survives any MTA's
/// handling of case in the local part of [`join_confirm_address`].
pub fn new_join_token<R: Rng + CryptoRng>(mut rng: R) -> String {
    let mut token = [0u8; 16];
    rng.fill_bytes(&mut token);
    hex::encode(token)
}

/// What the list server keeps of a join token: its SHA-256, so that whoever reads the
/// database cannot confirm a request with it.
pub fn join_token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// The list's address for mail about the list rather than to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListMailbox {
    /// `list-bounces@`, or `list-bounces+user=host@` naming the member a bounce is about.
    Bounces(Option<Address>),
    /// `list-probe+TOKEN@`: a probe came back.
    Probe(String),
    /// `list-leave@`: whoever writes stops receiving the list.
    Leave,
    /// `list-join+TOKEN@`: someone confirms their request to join.
    Join(String),
}

impl ListMailbox {
    /// The list and mailbox an address names, if it has the shape of one; whether the list
    /// exists is for the caller to check.
    pub fn parse(address: &Address) -> Option<(Address, ListMailbox)> {
        let local = address.local_part();
        let list = |name: &str| Address::parse(&format!("{name}@{}", address.domain())).ok();
        if let Some((name, verp)) = local.split_once("-bounces+") {
            let (user, host) = verp.rsplit_once('=')?;
            let member = Address::parse(&format!("{user}@{host}")).ok()?;
            return Some((list(name)?, ListMailbox::Bounces(Some(member))));
        }
        if let Some((name, token)) = local.split_once("-probe+") {
            if !is_token(token) {
                return None;
            }
            return Some((list(name)?, ListMailbox::Probe(token.to_owned())));
        }
        if let Some((name, token)) = local.split_once("-join+") {
            if !is_token(token) {
                return None;
            }
            return Some((list(name)?, ListMailbox::Join(token.to_owned())));
        }
        if let Some(name) = local.strip_suffix("-bounces") {
            return Some((list(name)?, ListMailbox::Bounces(None)));
        }
        if let Some(name) = local.strip_suffix("-leave") {
            return Some((list(name)?, ListMailbox::Leave));
        }
        None
    }
}

fn is_token(token: &str) -> bool {
    !token.is_empty() && token.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// The secret behind one-click unsubscribe links. A link names the list and the member and
/// carries an HMAC-SHA256 over both, so nobody can make one for someone else.
pub struct UnsubscribeKey(Zeroizing<Vec<u8>>);

/// Domain separation for the link MAC.
const UNSUBSCRIBE_DOMAIN: &[u8] = b"hushlist one-click unsubscribe\0";

impl UnsubscribeKey {
    pub fn new(secret: &[u8]) -> Self {
        UnsubscribeKey(Zeroizing::new(secret.to_vec()))
    }

    /// The opaque, URL-safe token naming `member` of `list`.
    pub fn token(&self, list: &Address, member: &Address) -> String {
        let payload = format!("{list}\n{member}");
        let mac = self.mac(payload.as_bytes()).finalize().into_bytes();
        format!("{}.{}", URL_SAFE_NO_PAD.encode(payload), hex::encode(mac))
    }

    /// The list and member a token names, if this key made it.
    pub fn verify(&self, token: &str) -> Option<(Address, Address)> {
        let (payload, mac) = token.split_once('.')?;
        let payload = URL_SAFE_NO_PAD.decode(payload).ok()?;
        let mac = hex::decode(mac).ok()?;
        self.mac(&payload).verify_slice(&mac).ok()?;
        let text = String::from_utf8(payload).ok()?;
        let (list, member) = text.split_once('\n')?;
        Some((Address::parse(list).ok()?, Address::parse(member).ok()?))
    }

    fn mac(&self, payload: &[u8]) -> Hmac<Sha256> {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes keys of any length");
        mac.update(UNSUBSCRIBE_DOMAIN);
        mac.update(payload);
        mac
    }
}

impl std::fmt::Debug for UnsubscribeKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UnsubscribeKey(..)")
    }
}

/// A plain-text message the list server writes itself: a notice to owners or a member, or a
/// bounce probe. It comes from the list's bounce address, so a notice that cannot be
/// delivered counts against its recipient like any other copy, and it is marked
/// `Auto-Submitted: auto-generated` (RFC 3834) so that vacation programs do not answer it.
#[derive(Debug, Clone)]
pub struct ListNotice<'a> {
    pub list: &'a Address,
    pub to: &'a Address,
    pub subject: &'a str,
    pub body: &'a str,
    /// Unix seconds, for the Date header.
    pub date: i64,
    /// A unique left-hand side for the Message-ID (the domain is the list's).
    pub unique: &'a str,
}

impl ListNotice<'_> {
    pub fn to_message(&self) -> Vec<u8> {
        self.headers()
            .text_body(self.body)
            .write_to_vec()
            .expect("writing to a Vec cannot fail")
    }

    /// The notice as an RFC 3156 PGP/MIME message that only the holder of `cert` can read.
    /// Inside, the Subject and `reply_to` are protected headers (RFC 9788, with the
    /// `protected-headers="v1"` parameter older clients look for), so an address written in
    /// `reply_to` is seen only by whoever can decrypt. Sealed to the subkey valid at `at`.
    pub fn to_encrypted_message<R: Rng + CryptoRng>(
        &self,
        rng: R,
        cert: &Cert,
        reply_to: &str,
        at: u64,
    ) -> Result<Vec<u8>, IdentityError> {
        let subject = self.subject_line();
        let mut inner = Vec::new();
        MimePart::new(
            ContentType::new("text/plain")
                .attribute("charset", "utf-8")
                .attribute("protected-headers", "v1")
                .attribute("hp", "cipher"),
            self.body,
        )
        .header("Subject", Text::new(subject.as_str()))
        .header(
            "Reply-To",
            HeaderAddress::new_address(None::<&str>, reply_to),
        )
        .write_part(&mut inner)
        .expect("writing to a Vec cannot fail");
        let armored = cert.encrypt_to(rng, inner, at)?;
        Ok(self
            .headers()
            .body(MimePart::new(
                ContentType::new("multipart/encrypted")
                    .attribute("protocol", "application/pgp-encrypted"),
                vec![
                    MimePart::new("application/pgp-encrypted", "Version: 1\r\n"),
                    MimePart::new(
                        ContentType::new("application/octet-stream")
                            .attribute("name", "encrypted.asc"),
                        armored,
                    )
                    .inline(),
                ],
            ))
            .write_to_vec()
            .expect("writing to a Vec cannot fail"))
    }

    fn subject_line(&self) -> String {
        format!("[{}] {}", self.list.local_part(), self.subject)
    }

    fn headers(&self) -> MessageBuilder<'_> {
        MessageBuilder::new()
            .from(HeaderAddress::new_address(
                Some(format!("{} list", self.list.local_part())),
                bounce_sender(self.list),
            ))
            .to(HeaderAddress::new_address(None::<&str>, self.to.as_str()))
            .subject(self.subject_line())
            .date(self.date)
            .message_id(format!("{}@{}", self.unique, self.list.domain()))
            .header("Auto-Submitted", Raw::new("auto-generated"))
            .header("Precedence", Raw::new("list"))
            .header(
                "List-Id",
                HeaderAddress::new_address(
                    None::<&str>,
                    format!("{}.{}", self.list.local_part(), self.list.domain()),
                ),
            )
    }
}

/// The author of a message (its first From address), as a mail to the -leave address names
/// who wants to stop receiving the list.
pub fn author(raw: &[u8]) -> Option<Address> {
    let message = MessageParser::new().parse_headers(raw)?;
    let from = message.from()?.first()?.address()?;
    Address::parse(from).ok()
}
