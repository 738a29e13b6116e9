//! Suspending and resuming delivery of a list's posts: what `hushlist delivery` does. Only
//! mail stops; reading rights live in the roster and do not change.

use hushlist_core::api::DeliveryStatus;
use hushlist_core::{Address, SecretIdentity};

use crate::Home;
use crate::lists::ListConfig;
use crate::pins::PinError;
use crate::remote::RemoteError;

#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error("you are not a member of {0}; name the member whose delivery to change")]
    NotAMember(Address),
    #[error(transparent)]
    Remote(#[from] RemoteError),
    #[error(transparent)]
    Pin(#[from] PinError),
}

/// Suspends (or, with `suspended` false, resumes) delivery of `list` to `member` at its list
/// server; with no member named, to `me`, found on the roster read through the home's pins
/// by this identity's fingerprint. Owners may name any member; the list server decides.
pub async fn switch(
    me: &SecretIdentity,
    home: &Home,
    list: &ListConfig,
    member: Option<Address>,
    suspended: bool,
) -> Result<DeliveryStatus, DeliveryError> {
    let server = list.list_server()?;
    let member = match member {
        Some(member) => member,
        None => home
            .rosters(me, list)
            .await?
            .newest()
            .member_by_fingerprint(me.fingerprint())
            .map(|m| m.address.clone())
            .ok_or_else(|| DeliveryError::NotAMember(list.list.clone()))?,
    };
    Ok(server
        .switch_delivery(me, &list.list, &member, suspended)
        .await?)
}
