//! The grants call: the list server asks the key server for push-mode members' PKESKs,
//! with the grants token the key server gave it.

use hushlist_core::Address;
use hushlist_core::Fingerprint;
use hushlist_core::api::{GrantRequest, Grants};
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
        let Some(key_server) = &self.config.key_server else {
            tracing::error!(%list, "push-mode list but no key server configured");
            return Err(Outcome::Deferred(
                "push mode needs the key server's URL and grants token in the list server's configuration".into(),
            ));
        };
        let request = GrantRequest {
            recipients: wanted.iter().map(|(_, f)| f.clone()).collect(),
        };
        let url = format!(
            "{}/v1/lists/{list}/keys/{key_id}/grants",
            key_server.url.trim_end_matches('/')
        );
        let response = self
            .http
            .post(&url)
            .bearer_auth(&key_server.grants_token)
            .json(&request)
            .send()
            .await
            .map_err(|e| Outcome::Deferred(format!("key server unreachable: {e}")))?;
        let status = response.status();
        if status.is_success() {
            return response.json().await.map_err(|e| {
                Outcome::Deferred(format!("key server sent an unreadable answer: {e}"))
            });
        }
        let body = response.text().await.unwrap_or_default();
        let reason = format!("key server answered {status}: {}", body.trim());
        if status == reqwest::StatusCode::GONE {
            // The key was revoked or expired: no one will be able to read this post.
            Err(Outcome::Failed(reason))
        } else {
            Err(Outcome::Deferred(reason))
        }
    }
}
