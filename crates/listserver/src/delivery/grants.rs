//! The grants call: the list server asks the key server for push-mode members' PKESKs,
//! with the grants token the key server gave it.

use hushlist_core::api::endpoints::GrantKeys;
use hushlist_core::api::{GrantRequest, Grants};
use hushlist_core::{Address, Fingerprint, KeyId};
use hushlist_remote::RemoteError;
use hushlist_store::ClaimedDelivery;

use super::Outcome;
use super::worker::Worker;

impl Worker {
    /// One grants call to the key server; on failure, the outcome for every recipient.
    pub(super) async fn request_grants(
        &self,
        list: &Address,
        key_id: &str,
        wanted: &[(&ClaimedDelivery, Fingerprint)],
    ) -> Result<Grants, Outcome> {
        let (Some(access), Some(key_server)) = (&self.config.key_server, &self.key_server) else {
            tracing::error!(%list, "push-mode list but no key server configured");
            return Err(Outcome::Deferred(
                "push mode needs the key server's URL and grants token in the list server's configuration".into(),
            ));
        };
        let key_id: KeyId = key_id
            .parse()
            .map_err(|e| Outcome::Deferred(format!("the post's key id is malformed: {e}")))?;
        let request = GrantRequest {
            recipients: wanted.iter().map(|(_, f)| f.clone()).collect(),
        };
        key_server
            .call::<GrantKeys>(
                &(list.clone(), key_id),
                &request,
                Some(&access.grants_token),
            )
            .await
            .map_err(|e| match e {
                // The key was revoked or expired: no one will be able to read this post.
                RemoteError::Refused { status: 410, .. } => Outcome::Failed(e.to_string()),
                other => Outcome::Deferred(other.to_string()),
            })
    }
}
