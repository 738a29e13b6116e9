//! Typed API errors: an HTTP status, a stable code and a message, sent as a JSON body.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use hushlist_core::api::{ErrorBody, ErrorDetail, JoinRequestError};
use hushlist_core::identity::{IdentityError, NotValid};
use hushlist_core::request::RequestError;
use hushlist_core::roster::RosterError;
use hushlist_core::{Address, Fingerprint, KeyId};
use hushlist_store::StoreError;
use hushlist_store::rosters::RosterStoreError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn malformed(e: impl std::fmt::Display) -> Self {
        Self::bad_request("malformed", format!("the request body is not valid: {e}"))
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    pub fn forbidden(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, code, message)
    }

    pub fn unknown_list(list: &Address) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "unknown_list",
            format!("no list {list} on this server"),
        )
    }

    pub fn unknown_key(key_id: &KeyId) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "unknown_key",
            format!("no key {key_id} for this list"),
        )
    }

    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, message)
    }

    pub fn gone(key_id: &KeyId, reason: &str) -> Self {
        Self::new(
            StatusCode::GONE,
            "key_destroyed",
            format!("key {key_id} was destroyed ({reason})"),
        )
    }

    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", message)
    }

    pub fn unprocessable(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
    }

    pub fn rate_limited(who: &Fingerprint) -> Self {
        Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!("too many requests from {who}; retry in a few seconds"),
        )
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }
}

impl From<JoinRequestError> for ApiError {
    fn from(e: JoinRequestError) -> Self {
        match e {
            JoinRequestError::BadCert(_) | JoinRequestError::CannotReceive(_) => {
                ApiError::bad_request("bad_cert", e.to_string())
            }
            JoinRequestError::BadRequest { source, .. } => ApiError::request(source),
            JoinRequestError::Malformed(detail) => ApiError::malformed(detail),
            JoinRequestError::AddressNotInCert(_) => {
                ApiError::bad_request("address_not_in_cert", e.to_string())
            }
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.code,
            self.message
        )
    }
}

impl std::error::Error for ApiError {}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.to_owned(),
                message: self.message,
            },
        };
        (self.status, Json(body)).into_response()
    }
}

impl From<RosterStoreError> for ApiError {
    fn from(e: RosterStoreError) -> Self {
        match e {
            RosterStoreError::UnknownList(list) => ApiError::unknown_list(&list),
            RosterStoreError::ListExists(_) => ApiError::conflict("list_exists", e.to_string()),
            RosterStoreError::Moved(_) => ApiError::conflict("roster_moved", e.to_string()),
            RosterStoreError::Refused(refusal) => ApiError::roster(refusal),
            RosterStoreError::Corrupt { .. } | RosterStoreError::BadListName(_) => {
                ApiError::internal(e.to_string())
            }
            RosterStoreError::Store(store) => store.into(),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        tracing::error!(error = %e, "store failure");
        ApiError::unavailable(format!("storage is unavailable: {e}"))
    }
}

impl ApiError {
    pub fn roster(e: RosterError) -> Self {
        use RosterError::*;
        let code = match &e {
            Replayed { .. } => "replayed_op",
            Fork { .. } => "fork",
            WrongPrevious { .. } => "wrong_previous",
            Gap { .. } => "gap",
            BadSignature => "bad_signature",
            SignerKeyNotValid(not_valid) => match not_valid {
                NotValid::Expired { .. } => "signer_key_expired",
                NotValid::NotYetCreated { .. } => "signer_key_not_yet_valid",
                NotValid::Revoked { .. } => "signer_key_revoked",
            },
            NotOwner { .. } => "not_owner",
            FormerOwner { .. } => "former_owner",
            SignerMismatch { .. } => "signer_mismatch",
            WrongList { .. } => "wrong_list",
            GenesisExpected => "genesis_expected",
            SecondGenesis => "second_genesis",
            LastOwner => "last_owner",
            AlreadyMember(_) => "already_member",
            UnknownMember(_) => "unknown_member",
            CertInUse(_) => "cert_in_use",
            KeyInUse { .. } => "key_in_use",
            KeyIdInUse { .. } => "key_id_in_use",
            BadCert(IdentityError::NotValid(not_valid)) => match not_valid {
                NotValid::Expired { .. } => "cert_expired",
                NotValid::NotYetCreated { .. } => "cert_not_yet_valid",
                NotValid::Revoked { .. } => "cert_revoked",
            },
            BadCert(_) => "bad_cert",
            Malformed(_) => "malformed",
        };
        let message = e.to_string();
        match e {
            Replayed { .. } | Fork { .. } | WrongPrevious { .. } | Gap { .. } => {
                ApiError::conflict(code, message)
            }
            BadSignature | SignerMismatch { .. } => {
                ApiError::new(axum::http::StatusCode::UNAUTHORIZED, code, message)
            }
            NotOwner { .. } | FormerOwner { .. } | SignerKeyNotValid(_) => {
                ApiError::forbidden(code, message)
            }
            LastOwner
            | AlreadyMember(_)
            | UnknownMember(_)
            | CertInUse(_)
            | KeyInUse { .. }
            | KeyIdInUse { .. } => ApiError::conflict(code, message),
            WrongList { .. } | GenesisExpected | SecondGenesis | BadCert(_) | Malformed(_) => {
                ApiError::bad_request(code, message)
            }
        }
    }

    pub fn request(e: RequestError) -> Self {
        let code = match &e {
            RequestError::Malformed(_) => return ApiError::bad_request("malformed", e.to_string()),
            RequestError::WrongPurpose { .. } => "wrong_purpose",
            RequestError::SignerMismatch { .. } | RequestError::BadSignature(_) => "bad_signature",
            RequestError::Stale { .. } => "stale_request",
            RequestError::Replayed => "replayed",
            // The signature is genuine: the signer is known, and refused for their key.
            RequestError::KeyNotValid(not_valid) => {
                let code = match not_valid {
                    NotValid::Expired { .. } => "key_expired",
                    NotValid::NotYetCreated { .. } => "key_not_yet_valid",
                    NotValid::Revoked { .. } => "key_revoked",
                };
                return ApiError::forbidden(code, e.to_string());
            }
        };
        ApiError::new(axum::http::StatusCode::UNAUTHORIZED, code, e.to_string())
    }
}

/// Checks a bearer token in constant time; `what` names the token in the 401 message.
pub fn check_token(expected: &str, presented: Option<&str>, what: &str) -> Result<(), ApiError> {
    let matches = presented.is_some_and(|p| {
        !expected.is_empty()
            && p.len() == expected.len()
            && p.bytes()
                .zip(expected.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    });
    if matches {
        Ok(())
    } else {
        Err(ApiError::unauthorized(format!(
            "this call needs {what} as `Authorization: Bearer TOKEN`"
        )))
    }
}
