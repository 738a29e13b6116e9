//! The outer form of a post: an RFC 3156 PGP/MIME `multipart/encrypted` message whose second
//! part carries the armored OpenPGP packets, with RFC 9788 header protection (only the
//! routing headers stay outside; the Subject reads `[...]`).
//!
//! This module reads and rewrites that outer form without ever decrypting it: the list server
//! checks posts with [`EncryptedPost::parse`] and, in push mode, inserts each member's PKESK with
//! [`EncryptedPost::splice`].

use std::io::Read as _;
use std::ops::Range;

use mail_parser::{MessageParser, MimeHeaders as _};
use pgp::armor::{BlockType, Dearmor, DearmorOptions};
use pgp::packet::{Packet, PacketParser, PacketTrait as _};
use pgp::types::Tag;

use crate::address::Address;
use crate::post_proof::{POST_PROOF_HEADER, PostProof, ProofError};
use crate::session::{KeyId, Pkesk};

/// Header naming the key id the post's session key is filed under.
pub const KEY_ID_HEADER: &str = "Hushlist-Key-Id";
/// Header naming the key server (base URL) that holds the post's session key.
pub const KEY_SERVER_HEADER: &str = "Hushlist-Key-Server";
/// The outer Subject of every post (RFC 9788 hcp_baseline).
pub const OBSCURED_SUBJECT: &str = "[...]";
/// Headers that stay readable outside: what mail transport and threading need.
/// Everything else lives only inside the encrypted part.
pub const EXPOSED_HEADERS: [&str; 7] = [
    "From",
    "To",
    "Cc",
    "Date",
    "Message-ID",
    "In-Reply-To",
    "References",
];

/// The largest OpenPGP payload the parser dearmors (bounds memory on hostile input).
pub const MAX_PAYLOAD: usize = 64 * 1024 * 1024;

/// Why a message is not a well-formed encrypted post.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OuterError {
    #[error("the message could not be parsed as RFC 5322")]
    NotAMessage,
    #[error(
        "the message is not encrypted (Content-Type {0}); posts must be PGP/MIME multipart/encrypted"
    )]
    NotEncrypted(String),
    #[error("malformed PGP/MIME structure: {0}")]
    MalformedMime(&'static str),
    #[error("malformed OpenPGP payload: {0}")]
    MalformedPayload(String),
    #[error("the {KEY_ID_HEADER} header is missing or malformed")]
    MissingKeyId,
    #[error("the From header is missing or not a single valid address")]
    BadFrom,
}

/// A parsed outer message: where its payload lies and what its headers say.
#[derive(Debug, Clone)]
pub struct EncryptedPost {
    pub key_id: KeyId,
    pub key_server: Option<String>,
    pub from: Address,
    pub message_id: Option<String>,
    /// The sender's proof of origin ([`POST_PROOF_HEADER`]), read but not yet verified.
    pub proof: Result<PostProof, ProofError>,
    /// The binary OpenPGP packets (any PKESKs, then the SEIPD packet).
    pub packets: Vec<u8>,
    /// Byte range of the armored text inside the raw message.
    armor_range: Range<usize>,
}

impl EncryptedPost {
    pub fn parse(raw: &[u8]) -> Result<Self, OuterError> {
        let message = MessageParser::new()
            .parse(raw)
            .filter(|m| !m.headers().is_empty())
            .ok_or(OuterError::NotAMessage)?;
        let root = message.root_part();
        let content_type = root
            .content_type()
            .map(|ct| format!("{}/{}", ct.ctype(), ct.subtype().unwrap_or("")))
            .unwrap_or_else(|| "text/plain".into());
        if !content_type.eq_ignore_ascii_case("multipart/encrypted") {
            return Err(OuterError::NotEncrypted(content_type));
        }
        let protocol_ok = root
            .content_type()
            .and_then(|ct| ct.attribute("protocol"))
            .is_some_and(|p| p.eq_ignore_ascii_case("application/pgp-encrypted"));
        if !protocol_ok {
            return Err(OuterError::MalformedMime(
                "protocol is not application/pgp-encrypted",
            ));
        }
        let parts = root.sub_parts().unwrap_or_default();
        let [control, data] = parts else {
            return Err(OuterError::MalformedMime(
                "multipart/encrypted must have exactly two parts",
            ));
        };
        let part = |id: &u32| {
            message
                .part(*id)
                .ok_or(OuterError::MalformedMime("missing part"))
        };
        let (control, data) = (part(control)?, part(data)?);
        let is_type = |p: &mail_parser::MessagePart, want: &str| {
            p.content_type().is_some_and(|ct| {
                format!("{}/{}", ct.ctype(), ct.subtype().unwrap_or("")).eq_ignore_ascii_case(want)
            })
        };
        if !is_type(control, "application/pgp-encrypted") {
            return Err(OuterError::MalformedMime(
                "first part is not application/pgp-encrypted",
            ));
        }
        let version_one = String::from_utf8_lossy(control.contents())
            .lines()
            .any(|l| l.trim().eq_ignore_ascii_case("Version: 1"));
        if !version_one {
            return Err(OuterError::MalformedMime(
                "control part does not say Version: 1",
            ));
        }
        if !is_type(data, "application/octet-stream") {
            return Err(OuterError::MalformedMime(
                "second part is not application/octet-stream",
            ));
        }
        let armor_range = data.raw_body_offset() as usize..data.raw_end_offset() as usize;
        let packets = dearmor(&raw[armor_range.clone()])?;
        check_packet_sequence(&packets)?;

        let key_id = message
            .header_raw(KEY_ID_HEADER)
            .and_then(|v| v.trim().parse::<KeyId>().ok())
            .ok_or(OuterError::MissingKeyId)?;
        let key_server = message
            .header_raw(KEY_SERVER_HEADER)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty());
        let from = single_from(&message)?;
        let message_id = message.message_id().map(str::to_owned);
        let mut proofs = message
            .headers()
            .iter()
            .filter(|h| h.name.as_str().eq_ignore_ascii_case(POST_PROOF_HEADER));
        let proof = match (proofs.next(), proofs.next()) {
            (None, _) => Err(ProofError::Missing),
            (Some(_), Some(_)) => Err(ProofError::Repeated),
            (Some(header), None) => {
                std::str::from_utf8(&raw[header.offset_start as usize..header.offset_end as usize])
                    .map_err(|_| ProofError::Malformed("not ASCII".into()))
                    .and_then(PostProof::from_header_value)
            }
        };
        Ok(EncryptedPost {
            key_id,
            key_server,
            from,
            message_id,
            proof,
            packets,
            armor_range,
        })
    }

    /// Returns `raw` (the message this was parsed from) with `pkesks` placed before the
    /// encrypted data, so that any OpenPGP client holding one of the matching secret keys
    /// decrypts it directly. Everything outside the armored block is kept byte for byte.
    pub fn splice(&self, raw: &[u8], pkesks: &[Pkesk]) -> Vec<u8> {
        let mut packets = Vec::with_capacity(
            self.packets.len() + pkesks.iter().map(|p| p.as_bytes().len()).sum::<usize>(),
        );
        for pkesk in pkesks {
            packets.extend_from_slice(pkesk.as_bytes());
        }
        packets.extend_from_slice(&self.packets);
        let armored = armor_message(&packets);
        let mut out = Vec::with_capacity(raw.len() + armored.len());
        out.extend_from_slice(&raw[..self.armor_range.start]);
        out.extend_from_slice(&armored);
        out.extend_from_slice(&raw[self.armor_range.end..]);
        out
    }
}

/// ASCII-armors OpenPGP packets as a `PGP MESSAGE` block with CRLF line ends, as MIME wants.
pub fn armor_message(packets: &[u8]) -> Vec<u8> {
    let mut lf = Vec::with_capacity(packets.len() * 4 / 3 + 128);
    pgp::armor::write(
        &RawPackets(packets),
        BlockType::Message,
        &mut lf,
        None,
        // GnuPG 2.2 reads past an END line it did not expect when the base64 needs no
        // padding and no checksum line marks its end; the CRC line keeps every size readable.
        true,
    )
    .expect("armoring into memory cannot fail");
    let mut crlf = Vec::with_capacity(lf.len() + lf.len() / 64 + 8);
    for &b in &lf {
        if b == b'\n' {
            crlf.push(b'\r');
        }
        crlf.push(b);
    }
    crlf
}

/// Decodes one armored `PGP MESSAGE` block.
pub fn dearmor(armored: &[u8]) -> Result<Vec<u8>, OuterError> {
    let mut dearmor = Dearmor::with_options(armored, DearmorOptions::new().set_limit(MAX_PAYLOAD));
    let mut packets = Vec::new();
    dearmor
        .read_to_end(&mut packets)
        .map_err(|e| OuterError::MalformedPayload(format!("bad armor: {e}")))?;
    if dearmor.typ != Some(BlockType::Message) {
        return Err(OuterError::MalformedPayload(
            "armor is not a PGP MESSAGE block".into(),
        ));
    }
    Ok(packets)
}

/// An encrypted post is zero or more PKESK packets followed by exactly one SEIPD v1 packet.
/// Only headers are parsed here; the encrypted body is not touched.
fn check_packet_sequence(packets: &[u8]) -> Result<(), OuterError> {
    let mut seen_data = false;
    for packet in PacketParser::new(packets) {
        let packet = packet.map_err(|e| OuterError::MalformedPayload(e.to_string()))?;
        match (&packet, seen_data) {
            (Packet::PublicKeyEncryptedSessionKey(_), false) => {}
            (Packet::SymEncryptedProtectedData(_), false) => seen_data = true,
            (p, _) => {
                return Err(OuterError::MalformedPayload(format!(
                    "unexpected {:?} packet; expected PKESKs then one SEIPD packet",
                    p.tag()
                )));
            }
        }
    }
    if seen_data {
        Ok(())
    } else {
        Err(OuterError::MalformedPayload(format!(
            "no {:?} packet",
            Tag::SymEncryptedProtectedData
        )))
    }
}

/// The one address of the post's one From header: with two From headers, mail readers
/// disagree on which is the author, and the list server checks the proof against one.
fn single_from(message: &mail_parser::Message<'_>) -> Result<Address, OuterError> {
    let from_headers = message
        .headers()
        .iter()
        .filter(|h| h.name == mail_parser::HeaderName::From)
        .count();
    if from_headers != 1 {
        return Err(OuterError::BadFrom);
    }
    let from = message.from().ok_or(OuterError::BadFrom)?;
    let mut addresses = from.iter();
    match (addresses.next(), addresses.next()) {
        (Some(addr), None) => addr
            .address()
            .and_then(|a| Address::parse(a).ok())
            .ok_or(OuterError::BadFrom),
        _ => Err(OuterError::BadFrom),
    }
}

/// Already-serialized packets, for the armor writer.
struct RawPackets<'a>(&'a [u8]);

impl pgp::ser::Serialize for RawPackets<'_> {
    fn to_writer<W: std::io::Write>(&self, writer: &mut W) -> pgp::errors::Result<()> {
        writer.write_all(self.0)?;
        Ok(())
    }

    fn write_len(&self) -> usize {
        self.0.len()
    }
}
