//! Asking to join a list. The would-be member sends their certificate with a request signed
//! by its key (proof that they hold it). The list server mails a confirmation to the address
//! asked for, encrypted to that certificate, with a random token; only an answer carrying the
//! token (`hushlist join --confirm`, or any mail to `list-join+TOKEN@`) proves that the
//! requester reads that mailbox with that key, and only then are the owners told. Owners see
//! confirmed requests (and any other key that asked for the same address, as a conflict),
//! check each request's signature in their own client, and approve one by its fingerprint
//! with the usual signed add to both servers, or reject it. The requester is told by mail
//! either way. Unconfirmed requests lapse after [`CONFIRM_LIFETIME_SECS`], confirmed ones
//! after [`JOIN_REQUEST_LIFETIME_SECS`].
//!
//! The list server only files and forwards requests: adding someone is a roster op only an
//! owner can sign, so a request can never make anyone a member by itself.

use std::collections::HashSet;

use axum::http::StatusCode;
use hushlist_core::Address;
use hushlist_core::api::endpoints::{PendingJoinRequests, SettleJoin};
use hushlist_core::api::{
    JoinConfirmed, JoinDecision, JoinReceipt, JoinRequest, PendingJoin, PendingJoins,
};
use hushlist_core::listmail::{
    ListNotice, bounce_sender, join_confirm_address, join_token_hash, new_join_token,
};
use hushlist_core::roster::Roster;
use hushlist_core::{Cert, Fingerprint};
use hushlist_http::ApiError;
use hushlist_http::endpoints::Signed;
use hushlist_http::requests::use_nonce;
use hushlist_store::membership::{JoinFiling, JoinLimits, JoinRequestRow, OutboxMessage};
use rand::rngs::OsRng;

use crate::service::{ListServer, unix_now};

/// How long a request waits for its confirmation.
pub const CONFIRM_LIFETIME_SECS: i64 = 2 * 24 * 3600;

/// How long a confirmed request waits for the owners.
pub const JOIN_REQUEST_LIFETIME_SECS: i64 = 14 * 24 * 3600;

/// Join requests a list holds at once, and requests for one address (each mails a
/// confirmation there): strangers can fill neither the store, nor the owners' mailboxes, nor
/// someone else's.
pub const JOIN_LIMITS: JoinLimits = JoinLimits {
    per_list: 100,
    per_address: 3,
};

/// Longest note a requester may leave for the owners.
const MAX_NOTE_CHARS: usize = 500;

impl ListServer {
    /// Files a request to join `list` and mails its confirmation, encrypted to the
    /// requester's certificate, to the address asked for.
    pub async fn join(&self, list: &Address, join: &JoinRequest) -> Result<JoinReceipt, ApiError> {
        let roster = self.rosters().get(list).await?;
        let now = unix_now();
        let verified = join.verify(list, u64::try_from(now).unwrap_or(0))?;
        verified
            .request
            .check_clock(u64::try_from(now).unwrap_or(0))
            .map_err(ApiError::request)?;
        use_nonce(self.store(), &verified.request).await?;
        let address = &verified.ask.address;
        let cert = &verified.cert;
        let confirm_by = now + CONFIRM_LIFETIME_SECS;
        let receipt = JoinReceipt {
            list: list.clone(),
            address: address.clone(),
            fingerprint: cert.fingerprint().clone(),
            confirm_by: confirm_by.try_into().unwrap_or(0),
        };
        // Someone on the list already, or a certificate the owners' add would refuse (it
        // carries a key on the roster): nothing to file. Answered as any request is, since the
        // asker may be a stranger finding out who is on the list.
        let on_roster = roster.members().any(|m| m.address.same_mailbox(address));
        if on_roster || roster.check_cert_may_join(cert).is_err() {
            tracing::info!(%list, "join request for an address or key on the roster: nothing filed");
            return Ok(receipt);
        }
        let note = verified
            .ask
            .note
            .as_deref()
            .map(clean_note)
            .filter(|n| !n.is_empty());
        let token = new_join_token(OsRng);
        let confirmation = confirmation(&roster, address, cert, &token, now)?;
        let row = JoinRequestRow {
            list: list.to_string(),
            // One spelling per mailbox, so that `Carol@` and `carol@` share the per-address
            // limit and show to owners as one address.
            address: mailbox_key(address),
            fingerprint: cert.fingerprint().to_string(),
            request: serde_json::to_string(join).expect("a join request serializes"),
            note,
            confirm_token: join_token_hash(&token),
            confirmed_at: None,
            requested_at: now,
            expires_at: confirm_by,
        };
        let full = |what: String| {
            ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_join_requests",
                what,
            )
        };
        match self
            .store()
            .file_join_request(&row, JOIN_LIMITS, &[confirmation])
            .await?
        {
            JoinFiling::Filed => {
                tracing::info!(%list, %address, fingerprint = %cert.fingerprint(), "join request filed; confirmation queued");
                self.queued().notify_waiters();
            }
            JoinFiling::AlreadyPending => {
                tracing::info!(%list, %address, "join request already pending");
            }
            JoinFiling::ListFull => {
                return Err(full(format!(
                    "{list} has {} join requests waiting; try again once they are settled or lapse",
                    JOIN_LIMITS.per_list
                )));
            }
            JoinFiling::AddressFull => {
                return Err(full(format!(
                    "{} keys already asked to join {list} as {address}; try again once they lapse",
                    JOIN_LIMITS.per_address
                )));
            }
        }
        let filed = self
            .store()
            .join_requests(list.as_str(), now)
            .await?
            .into_iter()
            .find(|r| r.address == row.address && r.fingerprint == row.fingerprint);
        Ok(JoinReceipt {
            confirm_by: filed
                .map_or(confirm_by, |r| r.expires_at)
                .try_into()
                .unwrap_or(0),
            ..receipt
        })
    }

    /// Confirms the join request whose confirmation carried `token`, and tells the owners.
    /// `list` is the list the answer came for; a token of another list's request is unknown.
    pub async fn confirm_join(
        &self,
        list: &Address,
        token: &str,
    ) -> Result<JoinConfirmed, ApiError> {
        let now = unix_now();
        // Mail systems may change the case of the address the token came in.
        let token_hash = join_token_hash(&token.to_ascii_lowercase());
        let unknown = || {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "no_join_request",
                format!(
                    "no request to join {list} waits for this confirmation: it was confirmed already, \
                     or it lapsed ({} days after asking); ask again with hushlist join {list}",
                    CONFIRM_LIFETIME_SECS / 86_400
                ),
            )
        };
        let row = self
            .store()
            .join_request_to_confirm(&token_hash, now)
            .await?
            .filter(|r| r.list == list.as_str())
            .ok_or_else(unknown)?;
        let roster = self.rosters().get(list).await?;
        let others = self
            .store()
            .join_requests(list.as_str(), now)
            .await?
            .into_iter()
            .filter(|r| r.address == row.address && r.fingerprint != row.fingerprint)
            .count();
        let expires_at = now + JOIN_REQUEST_LIFETIME_SECS;
        let address = &row.address;
        let fingerprint = &row.fingerprint;
        let conflict = if others > 0 {
            format!(
                "\nCAUTION: {others} other key(s) also asked to join as {address}. Approve only \
                 the key the person confirms to you themselves; `hushlist list pending {list}` \
                 shows them all.\n"
            )
        } else {
            String::new()
        };
        let notices = self.owner_notices(
            &roster,
            &format!("{address} asks to join"),
            &format!(
                "{address} asks to join {list}, with the key\n\n    {fingerprint}\n\n\
                 and confirmed the request from that mailbox with that key.\n{}{conflict}\n\
                 To see every pending request (your client checks each one's signature):\n\n    \
                 hushlist list pending {list}\n\n\
                 To let them in (signs the add on both servers, then tells them):\n\n    \
                 hushlist list approve {list} {address} --fingerprint {fingerprint}\n\n\
                 To turn them away (they are told):\n\n    \
                 hushlist list reject {list} {address} --fingerprint {fingerprint} --reason \"...\"\n\n\
                 Unless an owner decides, the request lapses in {} days.\n",
                row.note
                    .as_deref()
                    .map(|n| format!("\nTheir note: {n}\n"))
                    .unwrap_or_default(),
                JOIN_REQUEST_LIFETIME_SECS / 86_400,
            ),
            now,
        );
        if !self
            .store()
            .confirm_join_request(&token_hash, now, expires_at, &notices)
            .await?
        {
            return Err(unknown());
        }
        tracing::info!(%list, %address, %fingerprint, "join request confirmed; owners told");
        self.queued().notify_waiters();
        Ok(JoinConfirmed {
            list: list.clone(),
            address: Address::parse(address).map_err(ApiError::malformed)?,
            fingerprint: Fingerprint::try_from(row.fingerprint).map_err(ApiError::malformed)?,
            expires_at: expires_at.try_into().unwrap_or(0),
        })
    }

    /// The join requests waiting for `list`'s owners (owners only): every confirmed one, and
    /// beside it any unconfirmed request for the same address, so that owners see a conflict.
    pub async fn pending_joins(
        &self,
        request: &Signed<PendingJoinRequests>,
    ) -> Result<PendingJoins, ApiError> {
        let list = request.list();
        let rows = self
            .store()
            .join_requests(list.as_str(), unix_now())
            .await?;
        let confirmed: HashSet<&str> = rows
            .iter()
            .filter(|r| r.confirmed_at.is_some())
            .map(|r| r.address.as_str())
            .collect();
        let requests = rows
            .iter()
            .filter(|r| confirmed.contains(r.address.as_str()))
            .filter_map(|r| {
                Some(PendingJoin {
                    address: Address::parse(&r.address).ok()?,
                    fingerprint: Fingerprint::try_from(r.fingerprint.clone()).ok()?,
                    request: serde_json::from_str(&r.request).ok()?,
                    confirmed: r.confirmed_at.is_some(),
                    requested_at: r.requested_at.try_into().unwrap_or(0),
                    expires_at: r.expires_at.try_into().unwrap_or(0),
                })
            })
            .collect();
        Ok(PendingJoins {
            list: list.clone(),
            requests,
        })
    }

    /// Settles a confirmed join request (owners only) and tells the requester.
    pub async fn settle_join(
        &self,
        request: &Signed<SettleJoin>,
    ) -> Result<JoinDecision, ApiError> {
        let (list, roster) = (request.list(), &request.roster);
        let decision = request.body()?;
        let address = &decision.address;
        let fingerprint = &decision.fingerprint;
        let now = unix_now();
        let pending = self
            .store()
            .join_requests(list.as_str(), now)
            .await?
            .into_iter()
            .any(|r| {
                r.address == mailbox_key(address)
                    && r.fingerprint == fingerprint.as_str()
                    && r.confirmed_at.is_some()
            });
        if !pending {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "no_join_request",
                format!("{address} has no confirmed request to join {list} with key {fingerprint}"),
            ));
        }
        let (subject, body) = if decision.approved {
            let added = roster
                .member(address)
                .is_some_and(|m| m.cert.fingerprint() == fingerprint);
            if !added {
                return Err(ApiError::conflict(
                    "not_added",
                    format!(
                        "{address} is not on {list} with the key {fingerprint}; sign the add first \
                         (hushlist list approve does both)"
                    ),
                ));
            }
            (
                "welcome: you are on the list".to_owned(),
                format!(
                    "An owner of {list} approved your request: you are on the list, and posts\n\
                     from now on come to {address}. They open with the key you asked with\n\
                     ({fingerprint}).\n\n\
                     To post: hushlist send --list {list}\n\
                     To stop receiving the list: hushlist delivery suspend {list}\n"
                ),
            )
        } else {
            let reason = decision
                .reason
                .as_deref()
                .map(clean_note)
                .filter(|r| !r.is_empty());
            (
                "your request to join was declined".to_owned(),
                format!(
                    "An owner of {list} declined your request to join.\n{}",
                    reason
                        .map(|r| format!("\nTheir reason: {r}\n"))
                        .unwrap_or_default()
                ),
            )
        };
        let answer = self.notice_to(roster, address, &subject, &body, now);
        let settled = self
            .store()
            .settle_join_request(
                list.as_str(),
                &mailbox_key(address),
                fingerprint.as_str(),
                decision.approved,
                now,
                &[answer],
            )
            .await?;
        if settled {
            tracing::info!(%list, %address, %fingerprint, approved = decision.approved, "join request settled");
            self.queued().notify_waiters();
        }
        Ok(decision)
    }
}

/// How join requests file an address: one spelling for every case of it.
fn mailbox_key(address: &Address) -> String {
    address.as_str().to_ascii_lowercase()
}

/// The confirmation of a join request: mailed to the address asked for, readable only with
/// the key asked with, carrying the token in its body and its protected Reply-To.
fn confirmation(
    roster: &Roster,
    address: &Address,
    cert: &Cert,
    token: &str,
    now: i64,
) -> Result<OutboxMessage, ApiError> {
    let list = roster.list();
    let reply_to = join_confirm_address(list, token);
    let body = format!(
        "Someone, we hope you, asked to join {list} as {address} with the OpenPGP key\n\n    \
         {fingerprint}\n\n\
         To confirm, run\n\n    hushlist join {list} --confirm {token}\n\n\
         or send any message to\n\n    {reply_to}\n\n\
         (replying to this message does, in mail programs that read its encrypted headers).\n\
         The owners then decide. If you did not ask, do nothing: the request lapses in {} days.\n",
        CONFIRM_LIFETIME_SECS / 86_400,
        fingerprint = cert.fingerprint(),
    );
    let message = ListNotice {
        list,
        to: address,
        subject: "confirm your request to join",
        body: &body,
        date: now,
        unique: &format!("join.{}", new_join_token(OsRng)),
    }
    .to_encrypted_message(OsRng, cert, &reply_to, u64::try_from(now).unwrap_or(0))
    .map_err(|e| ApiError::bad_request("bad_cert", format!("cannot encrypt to the key: {e}")))?;
    Ok(OutboxMessage {
        mail_from: bounce_sender(list),
        recipient: address.to_string(),
        message,
    })
}

/// A requester's or owner's free text as it may go into a notice: one line, printable,
/// bounded.
pub(crate) fn clean_note(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_NOTE_CHARS)
        .collect::<String>()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}
