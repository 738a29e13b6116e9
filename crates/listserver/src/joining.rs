//! Asking to join a list. The would-be member sends their certificate with a request signed
//! by its key (proof that they hold it); the owners are told by mail, see the pending
//! requests, and approve with the usual signed add to both servers or reject. The requester
//! is told by mail either way. Requests lapse after [`JOIN_REQUEST_LIFETIME_SECS`].
//!
//! The list server only files and forwards requests: adding someone is a roster op only an
//! owner can sign, so a request can never make anyone a member by itself.

use axum::http::StatusCode;
use hushlist_core::Address;
use hushlist_core::api::{
    JoinAsk, JoinDecision, JoinReceipt, JoinRequest, PendingJoin, PendingJoins, purpose,
};
use hushlist_core::request::SignedRequest;
use hushlist_core::roster::{Role, Roster};
use hushlist_core::{Cert, Fingerprint};
use hushlist_http::ApiError;
use hushlist_http::requests::use_nonce;
use hushlist_store::membership::JoinRequestRow;

use crate::service::{ListServer, unix_now};

/// How long a join request waits for the owners.
pub const JOIN_REQUEST_LIFETIME_SECS: i64 = 14 * 24 * 3600;

/// Join requests a list holds at once: strangers cannot fill the store or the owners'
/// mailboxes beyond this.
pub const MAX_PENDING_JOINS: i64 = 100;

/// Longest note a requester may leave for the owners.
const MAX_NOTE_CHARS: usize = 500;

impl ListServer {
    /// Files a request to join `list`.
    pub async fn join(&self, list: &Address, join: &JoinRequest) -> Result<JoinReceipt, ApiError> {
        let roster = self.rosters().get(list).await?;
        let cert = Cert::from_bytes(join.cert.as_bytes()).map_err(|e| {
            ApiError::bad_request("bad_cert", format!("the certificate is not usable: {e}"))
        })?;
        cert.check_encryption_subkey().map_err(|e| {
            ApiError::bad_request(
                "bad_cert",
                format!("the certificate cannot receive posts: {e}"),
            )
        })?;
        let now = unix_now();
        let verified = join
            .request
            .verify_signature_and_clock(
                &purpose::join(list),
                &cert,
                u64::try_from(now).unwrap_or(0),
            )
            .map_err(ApiError::request)?;
        let ask: JoinAsk = serde_json::from_slice(&verified.body).map_err(ApiError::malformed)?;
        use_nonce(self.store(), &verified).await?;
        let address = &ask.address;
        let named = cert.addresses().iter().any(|a| a.same_mailbox(address));
        if !named {
            return Err(ApiError::bad_request(
                "address_not_in_cert",
                format!(
                    "the certificate's user ids do not name {address}; ask with the key made for that address"
                ),
            ));
        }
        if roster.member(address).is_some() {
            return Err(ApiError::conflict(
                "already_member",
                format!("{address} is already on {list}"),
            ));
        }
        // The owners' add would be refused; refusing now spares them the request.
        roster
            .check_cert_may_join(&cert)
            .map_err(ApiError::roster)?;
        let note = ask
            .note
            .as_deref()
            .map(clean_note)
            .filter(|n| !n.is_empty());
        let expires_at = now + JOIN_REQUEST_LIFETIME_SECS;
        let notices = self.owner_notices(
            &roster,
            &format!("{address} asks to join"),
            &format!(
                "{address} asks to join {list}, with the key {}.\n{}\n\
                 To see every pending request:\n\n    hushlist list pending {list}\n\n\
                 To let them in (signs the add on both servers, then tells them):\n\n    \
                 hushlist list approve {list} {address}\n\n\
                 To turn them away (they are told):\n\n    \
                 hushlist list reject {list} {address} --reason \"...\"\n\n\
                 Unless an owner decides, the request lapses in {} days.\n",
                cert.fingerprint(),
                note.as_deref()
                    .map(|n| format!("\nTheir note: {n}\n"))
                    .unwrap_or_default(),
                JOIN_REQUEST_LIFETIME_SECS / 86_400,
            ),
            now,
        );
        let row = JoinRequestRow {
            list: list.to_string(),
            address: address.to_string(),
            fingerprint: cert.fingerprint().to_string(),
            cert: cert.to_armored(),
            note,
            requested_at: now,
            expires_at,
        };
        match self
            .store()
            .file_join_request(&row, MAX_PENDING_JOINS, &notices)
            .await?
        {
            None => {
                return Err(ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "too_many_join_requests",
                    format!(
                        "{list} has {MAX_PENDING_JOINS} join requests waiting; try again once the owners have settled some"
                    ),
                ));
            }
            Some(true) => {
                tracing::info!(%list, %address, "join request filed");
                self.queued().notify_waiters();
            }
            Some(false) => tracing::info!(%list, %address, "join request already pending"),
        }
        let pending = self
            .store()
            .join_requests(list.as_str(), now)
            .await?
            .into_iter()
            .find(|r| r.address == address.as_str());
        Ok(JoinReceipt {
            list: list.clone(),
            address: address.clone(),
            expires_at: pending
                .map_or(expires_at, |r| r.expires_at)
                .try_into()
                .unwrap_or(0),
        })
    }

    /// The join requests waiting for `list`'s owners (owners only).
    pub async fn pending_joins(
        &self,
        list: &Address,
        request: &SignedRequest,
    ) -> Result<PendingJoins, ApiError> {
        let roster = self.rosters().get(list).await?;
        self.verify_owner(&roster, request, &purpose::join_requests(list))
            .await?;
        let rows = self
            .store()
            .join_requests(list.as_str(), unix_now())
            .await?;
        let requests = rows
            .into_iter()
            .filter_map(|r| {
                Some(PendingJoin {
                    address: Address::parse(&r.address).ok()?,
                    fingerprint: Fingerprint::try_from(r.fingerprint).ok()?,
                    cert: r.cert,
                    note: r.note,
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

    /// Settles a join request (owners only) and tells the requester.
    pub async fn settle_join(
        &self,
        list: &Address,
        request: &SignedRequest,
    ) -> Result<JoinDecision, ApiError> {
        let roster = self.rosters().get(list).await?;
        let body = self
            .verify_owner(&roster, request, &purpose::settle_join(list))
            .await?;
        let decision: JoinDecision = serde_json::from_slice(&body).map_err(ApiError::malformed)?;
        let address = &decision.address;
        let now = unix_now();
        let pending = self
            .store()
            .join_requests(list.as_str(), now)
            .await?
            .into_iter()
            .find(|r| r.address == address.as_str())
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::NOT_FOUND,
                    "no_join_request",
                    format!("{address} has no pending request to join {list}"),
                )
            })?;
        let (subject, body) = if decision.approved {
            let added = roster
                .member(address)
                .is_some_and(|m| m.cert.fingerprint().as_str() == pending.fingerprint);
            if !added {
                return Err(ApiError::conflict(
                    "not_added",
                    format!(
                        "{address} is not on {list} with the key they asked with; sign the add first \
                         (hushlist list approve does both)"
                    ),
                ));
            }
            (
                "welcome: you are on the list".to_owned(),
                format!(
                    "An owner of {list} approved your request: you are on the list, and posts\n\
                     from now on come to {address}. They open with the key you asked with.\n\n\
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
        let answer = self.notice_to(&roster, address, &subject, &body, now);
        let settled = self
            .store()
            .settle_join_request(list.as_str(), address.as_str(), now, &[answer])
            .await?;
        if settled {
            tracing::info!(%list, %address, approved = decision.approved, "join request settled");
            self.queued().notify_waiters();
        }
        Ok(decision)
    }

    /// Checks a signed request from an owner of `roster`; returns its body.
    pub(crate) async fn verify_owner(
        &self,
        roster: &Roster,
        request: &SignedRequest,
        purpose: &str,
    ) -> Result<Vec<u8>, ApiError> {
        let (verified, _) = self
            .verifier()
            .verify(self.store(), roster, request, purpose)
            .await?;
        let owner = roster
            .member_by_fingerprint(&verified.signer)
            .is_some_and(|m| m.role == Role::Owner);
        if !owner {
            return Err(ApiError::forbidden(
                "not_owner",
                format!("only an owner of {} may do this", roster.list()),
            ));
        }
        Ok(verified.body)
    }
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
