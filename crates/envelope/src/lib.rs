//! Sealing and opening hushlist posts. This is the only crate that encrypts or decrypts a
//! message body; the key server and list server do not depend on it (a test over
//! `cargo metadata` keeps it so).
//!
//! A sealed post is an RFC 3156 PGP/MIME message. Inside the encryption is the original
//! message as an RFC 9788 protected-header part (its real Subject, From, To, Date and
//! Message-ID, Content-Type marked `hp="cipher"` and the legacy `protected-headers="v1"`),
//! signed by the sender. The encryption is a SEIPD v1 packet (AES-256 with MDC, which gpg 2.2
//! reads) under a fresh session key, with no recipient packets: members get the key from the
//! key server, or a list server in push mode splices in one PKESK per member.

use std::io::Read as _;
use std::time::{SystemTime, UNIX_EPOCH};

use hushlist_core::identity::{Cert, Fingerprint, SecretIdentity};
use hushlist_core::outer::{
    EXPOSED_HEADERS, EncryptedPost, KEY_ID_HEADER, KEY_SERVER_HEADER, MAX_PAYLOAD,
    OBSCURED_SUBJECT, OuterError, armor_message,
};
use hushlist_core::post_proof::{POST_PROOF_HEADER, PostProof};
use hushlist_core::session::{KeyId, POST_CIPHER, Pkesk, SessionError, SessionKey};
use hushlist_core::{Address, IdentityError};
use mail_parser::{HeaderName, MessageParser};
use pgp::composed::{Message, MessageBuilder, SubpacketConfig};
use pgp::crypto::hash::HashAlgorithm;
use pgp::packet::{Notation, Packet, PacketParser, SignatureType, Subpacket, SubpacketData};
use pgp::types::{KeyVersion, Timestamp};
use rand::{CryptoRng, Rng};

#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("the input is not an RFC 5322 message with headers")]
    NotAMessage,
    #[error("the message needs exactly one valid From address")]
    BadFrom,
    #[error("the message has no To header naming the list")]
    NoRecipient,
    #[error(
        "the key server URL {0:?} cannot go in a header (it must be one line of visible ASCII)"
    )]
    BadKeyServer(String),
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error("OpenPGP encryption failed: {0}")]
    Pgp(String),
}

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    Outer(#[from] OuterError),
    #[error(transparent)]
    Session(#[from] SessionError),
    #[error("no PKESK in the message is addressed to {0}")]
    NoPkeskForUs(Fingerprint),
    #[error("the message did not decrypt: {0}")]
    Undecryptable(String),
    #[error("the message was tampered with (integrity check failed): {0}")]
    Tampered(String),
    #[error("the decrypted content is not a signed OpenPGP literal message: {0}")]
    Unexpected(String),
    #[error(
        "the post's plaintext is larger than {limit} bytes (it was compressed); it is not opened"
    )]
    TooLarge { limit: usize },
}

/// The notation (in the hashed area of a post's signature) that marks it as a hushlist post
/// signature, so no other signature by the same key (a roster op's, a request's, a key's
/// certification, a document signed elsewhere) passes for one. Its value is
/// [`POST_MARKER_VALUE`].
pub const POST_MARKER_NOTATION: &str = "post@hushlist.org";
pub const POST_MARKER_VALUE: &str = "1";
/// The notation holding the post's key id: a signed post cannot be re-encrypted under
/// another key id (and deposited by someone else) without the signature saying so.
pub const KEY_ID_NOTATION: &str = "key-id@hushlist.org";
/// One notation per address the post's To and Cc name: the lists the signer posted to.
pub const LIST_NOTATION: &str = "list@hushlist.org";
/// How far in the future (by the opener's clock) a post's signature may be dated.
pub const SIGNATURE_SKEW_SECS: u64 = 10 * 60;

/// What a post's signature binds, read from its signed notations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedContext {
    /// The key id the signer sealed the post under.
    pub key_id: String,
    /// The addresses the signer's message named in To and Cc.
    pub lists: Vec<Address>,
}

/// Why a signature that verifies against a candidate's key is not taken as a post signature.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotAPostSignature {
    #[error("it is a {0:?} signature, not a signature over a binary document")]
    WrongType(Option<SignatureType>),
    #[error("it has no creation time")]
    Undated,
    #[error(
        "it is dated {created} (Unix time), more than {SIGNATURE_SKEW_SECS} seconds after now ({now})"
    )]
    Future { created: u64, now: u64 },
    /// Also what a post sealed before posts were bound to their context carries, and one
    /// signed by another OpenPGP program; `created` (Unix seconds) is when it says it was
    /// made.
    #[error(
        "it carries no hushlist post marker (the signed notation {POST_MARKER_NOTATION}), so it may have been made for something else"
    )]
    NoMarker { created: u64 },
    #[error("its signed notation {KEY_ID_NOTATION} is missing or given more than once")]
    KeyIdNotation,
    #[error("its signed notation {LIST_NOTATION} holds {0:?}, which is not a mail address")]
    ListNotation(String),
}

/// A sealed post: what the sender deposits at the key server and what it mails to the list.
#[derive(Debug)]
pub struct Sealed {
    pub session_key: SessionKey,
    pub key_id: KeyId,
    /// The outer PGP/MIME message, CRLF line ends.
    pub message: Vec<u8>,
}

/// Appended to the inner part's Content-Type: RFC 9788's `hp="cipher"`, after the legacy
/// `protected-headers="v1"` (draft-autocrypt-lamps-protected-headers) that Thunderbird and K-9
/// read instead, so they show the real Subject. Thunderbird writes the two in this order.
const PROTECTED_PART_PARAMETERS: &[u8] = b"; protected-headers=\"v1\"; hp=\"cipher\"";

/// Seals `message` (an RFC 5322 message addressed to a list) for the key server at
/// `key_server` (a URL, named in the outer header), signed by `sender`. The outer message
/// carries `sender`'s proof of origin for every address its To and Cc name (the list server
/// checks it for its own list), made at the system clock's time.
pub fn seal<R: Rng + CryptoRng>(
    mut rng: R,
    message: &[u8],
    sender: &SecretIdentity,
    key_server: &str,
) -> Result<Sealed, SealError> {
    if key_server.is_empty() || !key_server.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(SealError::BadKeyServer(key_server.to_owned()));
    }
    let parsed = MessageParser::new()
        .parse(message)
        .ok_or(SealError::NotAMessage)?;
    let from = parsed.from().ok_or(SealError::BadFrom)?;
    if from.iter().count() != 1 {
        return Err(SealError::BadFrom);
    }
    let from_address = from
        .first()
        .and_then(|a| a.address())
        .and_then(|a| Address::parse(a).ok())
        .ok_or(SealError::BadFrom)?;
    if parsed.to().is_none_or(|to| to.iter().next().is_none()) {
        return Err(SealError::NoRecipient);
    }
    let recipients: Vec<Address> = [parsed.to(), parsed.cc()]
        .into_iter()
        .flatten()
        .flat_map(|field| field.iter())
        .filter_map(|a| a.address().and_then(|a| Address::parse(a).ok()))
        .collect();

    let session_key = SessionKey::generate(&mut rng);
    let key_id = KeyId::generate(&mut rng);
    let root = parsed.root_part();
    let headers = root.headers();
    let eol: &[u8] = match headers.first() {
        Some(h) if message[..h.offset_end as usize].ends_with(b"\r\n") => b"\r\n",
        _ => b"\n",
    };
    let generated_message_id = parsed
        .message_id()
        .is_none()
        .then(|| format!("<{key_id}@{}>", from_address.domain()));

    // The protected part: every original header (Content-Type marked with
    // PROTECTED_PART_PARAMETERS), the HP-Outer record of what stays visible, then the original
    // body untouched.
    let mut inner = Vec::with_capacity(message.len() + 512);
    let mut outer_headers = Vec::with_capacity(1024);
    let mut has_content_type = false;
    for header in headers {
        let raw = &message[header.offset_field as usize..header.offset_end as usize];
        let value = &message[header.offset_start as usize..header.offset_end as usize];
        if header.name == HeaderName::ContentType {
            has_content_type = true;
            inner.extend_from_slice(raw.trim_ascii_end());
            inner.extend_from_slice(PROTECTED_PART_PARAMETERS);
            inner.extend_from_slice(eol);
        } else {
            inner.extend_from_slice(raw);
        }
        if is_exposed(header.name.as_str()) {
            push_crlf(&mut outer_headers, raw);
            inner.extend_from_slice(b"HP-Outer: ");
            inner.extend_from_slice(header.name.as_str().as_bytes());
            inner.extend_from_slice(b":");
            inner.extend_from_slice(value.trim_ascii_end());
            inner.extend_from_slice(eol);
        }
    }
    if let Some(id) = &generated_message_id {
        outer_headers.extend_from_slice(format!("Message-ID: {id}\r\n").as_bytes());
        for line in [
            format!("Message-ID: {id}"),
            format!("HP-Outer: Message-ID: {id}"),
        ] {
            inner.extend_from_slice(line.as_bytes());
            inner.extend_from_slice(eol);
        }
    }
    if !has_content_type {
        inner.extend_from_slice(b"Content-Type: text/plain; charset=us-ascii");
        inner.extend_from_slice(PROTECTED_PART_PARAMETERS);
        inner.extend_from_slice(eol);
    }
    inner.extend_from_slice(format!("HP-Outer: Subject: {OBSCURED_SUBJECT}").as_bytes());
    inner.extend_from_slice(eol);
    let headers_end = headers.last().map_or(0, |h| h.offset_end as usize);
    let body_start = (root.offset_body as usize).max(headers_end);
    let separator = &message[headers_end..body_start];
    inner.extend_from_slice(if separator.is_empty() { eol } else { separator });
    inner.extend_from_slice(&message[body_start..]);

    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let packets = sender.with_signing_key(|signing_key| {
        let subpackets = post_signature_subpackets(signing_key, now, &key_id, &recipients)
            .map_err(|e| SealError::Pgp(e.to_string()))?;
        let mut builder = MessageBuilder::from_bytes("", inner).seipd_v1(&mut rng, POST_CIPHER);
        builder
            .set_session_key(pgp::composed::RawSessionKey::from(
                &session_key.as_bytes()[..],
            ))
            .map_err(|e| SealError::Pgp(e.to_string()))?;
        builder.sign_with_subpackets(
            signing_key,
            sender.password(),
            HashAlgorithm::Sha256,
            subpackets,
        );
        builder
            .to_vec(&mut rng)
            .map_err(|e| SealError::Pgp(e.to_string()))
    })??;

    let proof =
        PostProof::sign(&mut rng, sender, &recipients, &key_id, &packets, now)?.to_header_value();
    let boundary = format!("hushlist-{key_id}");
    let mut outer = outer_headers;
    outer.extend_from_slice(
        format!(
            "Subject: {OBSCURED_SUBJECT}\r\n\
             MIME-Version: 1.0\r\n\
             Content-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\";\r\n \
             boundary=\"{boundary}\"\r\n\
             {KEY_ID_HEADER}: {key_id}\r\n\
             {KEY_SERVER_HEADER}: {key_server}\r\n\
             {POST_PROOF_HEADER}: {proof}\r\n\
             \r\n\
             This is an OpenPGP/MIME encrypted message (RFC 4880 and 3156)\r\n\
             --{boundary}\r\n\
             Content-Type: application/pgp-encrypted\r\n\
             Content-Description: PGP/MIME version identification\r\n\
             \r\n\
             Version: 1\r\n\
             \r\n\
             --{boundary}\r\n\
             Content-Type: application/octet-stream; name=\"encrypted.asc\"\r\n\
             Content-Description: OpenPGP encrypted message\r\n\
             Content-Disposition: inline; filename=\"encrypted.asc\"\r\n\
             \r\n"
        )
        .as_bytes(),
    );
    outer.extend_from_slice(&armor_message(&packets));
    outer.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    Ok(Sealed {
        session_key,
        key_id,
        message: outer,
    })
}

/// The subpackets of a post's signature: rPGP's defaults (issuer fingerprint and creation
/// time hashed, the issuer key id unhashed for v4 keys) plus the signed notations binding
/// the post marker, the key id and the lists. None is critical, so gpg still verifies the
/// signature (it reports notations it does not know, and fails only on critical ones).
pub fn post_signature_subpackets(
    signer: &dyn pgp::types::SigningKey,
    created: u64,
    key_id: &KeyId,
    lists: &[Address],
) -> pgp::errors::Result<SubpacketConfig> {
    let notation = |name: &'static str, value: String| {
        Subpacket::regular(SubpacketData::Notation(Notation {
            readable: true,
            name: name.into(),
            value: value.into(),
        }))
    };
    let mut hashed = vec![
        Subpacket::regular(SubpacketData::IssuerFingerprint(signer.fingerprint()))?,
        Subpacket::regular(SubpacketData::SignatureCreationTime(Timestamp::from_secs(
            u32::try_from(created).unwrap_or(u32::MAX),
        )))?,
        notation(POST_MARKER_NOTATION, POST_MARKER_VALUE.to_owned())?,
        notation(KEY_ID_NOTATION, key_id.to_string())?,
    ];
    for list in lists {
        hashed.push(notation(LIST_NOTATION, list.to_string())?);
    }
    let mut unhashed = Vec::new();
    if signer.version() <= KeyVersion::V4 {
        unhashed.push(Subpacket::regular(SubpacketData::IssuerKeyId(
            signer.legacy_key_id(),
        ))?);
    }
    Ok(SubpacketConfig::UserDefined { hashed, unhashed })
}

fn is_exposed(name: &str) -> bool {
    EXPOSED_HEADERS.iter().any(|h| h.eq_ignore_ascii_case(name))
}

/// Appends a raw header field with every line end as CRLF.
fn push_crlf(out: &mut Vec<u8>, raw: &[u8]) {
    for line in raw.split_inclusive(|&b| b == b'\n') {
        let content = line
            .strip_suffix(b"\n")
            .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
            .unwrap_or(line);
        out.extend_from_slice(content);
        out.extend_from_slice(b"\r\n");
    }
}

/// What opens a post.
#[derive(Clone, Copy)]
pub enum OpenWith<'a> {
    /// The session key, as the key server released it in clear to a trusted client or as
    /// `gpg --show-session-key` printed it.
    SessionKey(&'a SessionKey),
    /// A PKESK from the key server and the member's secret key.
    Pkesk(&'a Pkesk, &'a SecretIdentity),
    /// The member's secret key, for a message with the member's PKESK already spliced in.
    Identity(&'a SecretIdentity),
}

/// The outcome of checking the signature inside a post.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signature {
    /// A post signature made by the certificate `signer` (one of the candidates given),
    /// binding `context`.
    Valid {
        signer: Fingerprint,
        context: SignedContext,
    },
    /// Made by `signer`'s key, but not as a post signature.
    NotAPost {
        signer: Fingerprint,
        reason: NotAPostSignature,
    },
    /// Signed, but by none of the candidates, or the signature does not verify, or its key was
    /// not valid at the time the signature states.
    Invalid,
    /// Not signed at all.
    Unsigned,
}

impl Signature {
    /// The signer of a valid post signature.
    pub fn valid_signer(&self) -> Option<&Fingerprint> {
        match self {
            Signature::Valid { signer, .. } => Some(signer),
            _ => None,
        }
    }
}

#[derive(Debug)]
pub struct Opened {
    /// The inner RFC 5322 message with its protected headers.
    pub message: Vec<u8>,
    pub signature: Signature,
    pub key_id: KeyId,
}

/// Decrypts an outer post and checks its signature against `signers` (typically the list's
/// roster), as of the system clock. Returns nothing of the plaintext unless the integrity
/// check (MDC) passed.
pub fn open(outer: &[u8], with: OpenWith<'_>, signers: &[Cert]) -> Result<Opened, OpenError> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    open_at(outer, with, signers, now)
}

/// [`open`] as of `now` (Unix seconds): a signature dated more than
/// [`SIGNATURE_SKEW_SECS`] after it is not taken.
pub fn open_at(
    outer: &[u8],
    with: OpenWith<'_>,
    signers: &[Cert],
    now: u64,
) -> Result<Opened, OpenError> {
    let post = EncryptedPost::parse(outer)?;
    let session_key = match with {
        OpenWith::SessionKey(key) => key.clone(),
        OpenWith::Pkesk(pkesk, identity) => pkesk.unseal(identity)?,
        OpenWith::Identity(identity) => spliced_session_key(&post.packets, identity)?,
    };
    let (message, signature) = decrypt_packets(&post.packets, &session_key, signers, now)?;
    Ok(Opened {
        message,
        signature,
        key_id: post.key_id,
    })
}

/// Finds the PKESK addressed to `identity` among the packets and opens it.
fn spliced_session_key(packets: &[u8], identity: &SecretIdentity) -> Result<SessionKey, OpenError> {
    for packet in PacketParser::new(packets) {
        let Ok(Packet::PublicKeyEncryptedSessionKey(pkesk)) = packet else {
            break;
        };
        match Pkesk::from_packet(&pkesk)?.unseal(identity) {
            Ok(key) => return Ok(key),
            Err(SessionError::PkeskNotForUs { .. }) => continue,
            Err(other) => return Err(other.into()),
        }
    }
    Err(OpenError::NoPkeskForUs(identity.fingerprint().clone()))
}

/// The largest plaintext `open` reads: as large as the largest payload the outer parser
/// takes, so only compression could exceed it.
pub const MAX_PLAINTEXT: usize = MAX_PAYLOAD;

/// Refuses decrypted (and decompressed) content that is not one one-pass signature over one
/// literal packet, or a bare literal (which opens as unsigned), before a byte of it is read:
/// the OpenPGP library feeds every literal byte to one hash per one-pass signature, so
/// thousands of them stall a reader for minutes; and a second layer of compression would
/// escape the plaintext limit.
fn check_shape(message: &Message<'_>) -> Result<(), OpenError> {
    let inside = match message {
        Message::Literal { .. } => return Ok(()),
        Message::Signed { reader, .. } => {
            if reader.num_signatures() != 1 || reader.num_one_pass_signatures() != 1 {
                return Err(OpenError::Unexpected(format!(
                    "{} signatures ({} one-pass); a hushlist post has one one-pass signature",
                    reader.num_signatures(),
                    reader.num_one_pass_signatures()
                )));
            }
            reader.get_ref()
        }
        other => other,
    };
    match inside {
        Message::Literal { .. } => Ok(()),
        Message::Compressed { .. } => Err(OpenError::Unexpected(
            "compressed data inside compressed data; it is not opened".into(),
        )),
        Message::Signed { .. } => Err(OpenError::Unexpected(
            "nested signed messages; a hushlist post has one signature".into(),
        )),
        Message::Encrypted { .. } => Err(OpenError::Unexpected(
            "an encrypted message inside the encryption".into(),
        )),
    }
}

/// Decrypts binary OpenPGP packets (PKESKs, then a SEIPD packet) with a session key, reads the
/// whole plaintext (so the MDC is checked before anything is returned) and checks the
/// signature as a post signature as of `now` (Unix seconds).
pub fn decrypt_packets(
    packets: &[u8],
    session_key: &SessionKey,
    signers: &[Cert],
    now: u64,
) -> Result<(Vec<u8>, Signature), OpenError> {
    let message =
        Message::from_bytes(packets).map_err(|e| OpenError::Undecryptable(e.to_string()))?;
    let mut message = message
        .decrypt_with_session_key(session_key.to_plain())
        .map_err(|e| OpenError::Undecryptable(e.to_string()))?;
    // Other OpenPGP programs (gpg among them) compress by default; one layer is undone,
    // and the plaintext is read only up to the limit, so a few compressed megabytes cannot
    // become gigabytes in memory.
    if message.is_compressed() {
        message = message
            .decompress()
            .map_err(|e| OpenError::Unexpected(e.to_string()))?;
    }
    check_shape(&message)?;
    let mut plaintext = Vec::new();
    (&mut message)
        .take(MAX_PLAINTEXT as u64 + 1)
        .read_to_end(&mut plaintext)
        .map_err(|e| OpenError::Tampered(e.to_string()))?;
    if plaintext.len() > MAX_PLAINTEXT {
        return Err(OpenError::TooLarge {
            limit: MAX_PLAINTEXT,
        });
    }
    let signature = if !message.is_signed() {
        Signature::Unsigned
    } else {
        signers
            .iter()
            .find_map(|cert| {
                cert.verify_message_signature(|key| message.verify(key).ok())
                    .ok()
                    .map(|made| {
                        let signer = cert.fingerprint().clone();
                        match post_context(made, now) {
                            Ok(context) => Signature::Valid { signer, context },
                            Err(reason) => Signature::NotAPost { signer, reason },
                        }
                    })
            })
            .unwrap_or(Signature::Invalid)
    };
    Ok((plaintext, signature))
}

/// What a verified signature binds, if it is a post signature: over a binary document, dated
/// no later than `now` plus the skew, with the post marker and the key id among its hashed
/// notations.
fn post_context(
    signature: &pgp::packet::Signature,
    now: u64,
) -> Result<SignedContext, NotAPostSignature> {
    let typ = signature.typ();
    if typ != Some(SignatureType::Binary) {
        return Err(NotAPostSignature::WrongType(typ));
    }
    let created = u64::from(
        signature
            .created()
            .ok_or(NotAPostSignature::Undated)?
            .as_secs(),
    );
    if created > now.saturating_add(SIGNATURE_SKEW_SECS) {
        return Err(NotAPostSignature::Future { created, now });
    }
    let notations = signature.notations();
    let values = |name: &str| -> Vec<String> {
        notations
            .iter()
            .filter(|n| n.name.as_ref() == name.as_bytes())
            .map(|n| String::from_utf8_lossy(&n.value).into_owned())
            .collect()
    };
    if !values(POST_MARKER_NOTATION)
        .iter()
        .any(|v| v == POST_MARKER_VALUE)
    {
        return Err(NotAPostSignature::NoMarker { created });
    }
    let Ok([key_id]) = <[String; 1]>::try_from(values(KEY_ID_NOTATION)) else {
        return Err(NotAPostSignature::KeyIdNotation);
    };
    let lists = values(LIST_NOTATION)
        .into_iter()
        .map(|list| Address::parse(&list).map_err(|_| NotAPostSignature::ListNotation(list)))
        .collect::<Result<_, _>>()?;
    Ok(SignedContext { key_id, lists })
}
