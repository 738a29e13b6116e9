//! The list server (the patent's broadcast mail server). It accepts only encrypted posts from
//! allowed posters and fans them out; it only ever holds ciphertext, and the code that
//! decrypts a post (`hushlist-envelope`) is not in its dependency graph.
//!
//! The acceptance decision with the SMTP reply each refusal gets (`parse_post`, `check_post`), the SMTP
//! receiver (`smtp`), mail to a list's own mailboxes: bounces, probes, leave (`mailboxes`), the durable acceptance path over the store (`service`), the fan-out
//! workers (`delivery`) and their DMARC lookups of authors' domains (`dmarc`), the counters behind `/metrics` (`metrics`) and the HTTP interface (`http`).

pub mod daemon;
pub mod delivery;
pub mod dmarc;
pub mod http;
pub mod joining;
pub mod mailboxes;
pub mod metrics;
pub mod moderation;
pub mod options;
pub mod roster_watch;
pub mod service;
pub mod smtp;

use hushlist_core::listmail::KEY_ID_TAKEN_REPLY;
use hushlist_core::outer::{EncryptedPost, OuterError};
use hushlist_core::post_proof::ProofError;
use hushlist_core::roster::{Admission, Refusal, Roster};

/// Why a post was refused at the end of DATA. Refusals are SMTP rejections (the sender's MTA
/// tells the sender), never bounces sent later.
#[derive(Debug, thiserror::Error)]
pub enum Rejection {
    #[error("this list only accepts encrypted posts; send it with `hushlist send` ({0})")]
    NotEncrypted(OuterError),
    #[error("the post is not a well-formed encrypted post: {0}")]
    Malformed(OuterError),
    /// No proof, or one that does not hold for the member the From names: anyone can write a
    /// From, so without the proof the post could be anyone's.
    #[error("{0}")]
    Unproven(ProofError),
    #[error("{0} may not post to this list: {1}")]
    NotAllowed(String, Refusal),
    #[error(
        "this list's keys are held by {expected}, but the post names {named}; send it with `hushlist send`"
    )]
    WrongKeyServer { expected: String, named: String },
    /// Someone who learned the key id first (the key server sees it at the deposit, anyone
    /// on a plain-text path in transit) posted other bytes under it; the stored post stays.
    #[error(
        "{list} {KEY_ID_TAKEN_REPLY} {key_id}; this post was not stored: send it again with `hushlist send`, which uses a new key id"
    )]
    KeyIdTaken { list: String, key_id: String },
}

impl Rejection {
    /// The SMTP reply code and RFC 3463 enhanced status for this refusal.
    pub fn smtp_status(&self) -> (u16, &'static str) {
        match self {
            Rejection::NotEncrypted(_) => (550, "5.7.1"),
            Rejection::Malformed(_) => (554, "5.6.0"),
            Rejection::Unproven(_) => (550, "5.7.1"),
            Rejection::NotAllowed(..) => (550, "5.7.1"),
            Rejection::WrongKeyServer { .. } => (550, "5.7.1"),
            Rejection::KeyIdTaken { .. } => (554, "5.7.0"),
        }
    }
}

/// Reads a post's outer form: PGP/MIME-encrypted, naming its key id, with one From.
pub fn parse_post(raw: &[u8]) -> Result<EncryptedPost, Rejection> {
    EncryptedPost::parse(raw).map_err(|e| match e {
        OuterError::NotEncrypted(_) => Rejection::NotEncrypted(e),
        other => Rejection::Malformed(other),
    })
}

/// Checks a parsed post for `roster`'s list at time `now` (unix seconds): a proof signed for
/// this list, key id and payload by the roster key of the member its From names, who may
/// post now (or whose post the list's moderation holds for an owner). What the proof says
/// (list, key id, data, time) is checked before whose signature it is, and a From naming
/// nobody on the roster is refused as a proof that does not verify is, so the reply tells
/// nothing about who is a member, even to someone holding a member's proof from another post.
pub fn check_post(post: &EncryptedPost, roster: &Roster, now: u64) -> Result<Admission, Rejection> {
    let proof = post
        .proof
        .as_ref()
        .map_err(|e| Rejection::Unproven(e.clone()))?;
    let poster = roster.member_by_mailbox(&post.from);
    proof
        .verify(
            poster.map(|member| &member.cert),
            roster.list(),
            &post.key_id,
            &post.packets,
            now,
        )
        .map_err(Rejection::Unproven)?;
    let poster = poster.ok_or(Rejection::Unproven(ProofError::BadSignature))?;
    roster
        .admit_post(poster.cert.fingerprint())
        .map_err(|refusal| Rejection::NotAllowed(post.from.to_string(), refusal))
}

/// Checks that the post's key is filed with `expected`, the key server this list server works
/// with: members could not get a key deposited anywhere else, and push delivery asks only it.
pub fn check_key_server(post: &EncryptedPost, expected: &str) -> Result<(), Rejection> {
    let named = post.key_server.as_deref().unwrap_or("no key server");
    if named.trim_end_matches('/') == expected.trim_end_matches('/') {
        Ok(())
    } else {
        Err(Rejection::WrongKeyServer {
            expected: expected.to_owned(),
            named: named.to_owned(),
        })
    }
}
