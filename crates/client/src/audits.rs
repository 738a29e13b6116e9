//! Reading a post key's audit trail from the key server: the records must form a hash chain
//! up to a head signed by the key server's pinned certificate (`hushlist_core::audit`), and
//! must extend the highest head this home saw before for that key id. The server's operator
//! holds its key and can re-sign a rewritten chain, so the signature alone does not stop a
//! rewrite; the remembered head does, for every home that read the log before.
//!
//! Seen heads are kept one file per list and key id under `audit/LIST/` in the home (0600),
//! with the signed head itself, which is the server's own evidence against a later rewrite.

use std::fs;
use std::path::PathBuf;

use hushlist_core::api::AuditLog;
use hushlist_core::audit::{AuditChainError, AuditHash, AuditHead, verify_log};
use hushlist_core::signed::Signed;
use hushlist_core::{Address, KeyId, SecretIdentity};
use serde::{Deserialize, Serialize};

use crate::lists::ListConfig;
use crate::pins::PinError;
use crate::remote::RemoteError;
use crate::{Home, HomeError};

/// The highest audit head of one key id this home has seen, as the key server signed it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeenAuditHead {
    pub head: AuditHead,
    pub signed: Signed,
}

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error(
        "the key server's audit log of key {key_id} does not verify: {broken}. Its records were changed behind the server's back or the server misbehaves, so the log cannot be trusted; tell the key server's operator and the list's owners"
    )]
    Broken {
        key_id: KeyId,
        broken: AuditChainError,
    },
    #[error(
        "the key server's audit log of key {key_id} rewrites history this home saw: the server signed seq {seen_seq} as {seen_hash} before (kept in {path}), but now {now}. Keep that file as evidence and tell the list's owners and the key server's operator"
    )]
    Rewritten {
        key_id: KeyId,
        seen_seq: u64,
        seen_hash: AuditHash,
        now: String,
        path: PathBuf,
    },
    #[error(transparent)]
    Pin(#[from] PinError),
    #[error(transparent)]
    Remote(#[from] RemoteError),
    #[error(transparent)]
    Home(#[from] HomeError),
}

impl Home {
    /// Per list as well as per key id: senders choose key ids, so one list's sender could
    /// reuse another list's key id.
    fn seen_audit_dir(&self, list: &Address) -> PathBuf {
        self.dir().join("audit").join(list.to_string())
    }

    fn seen_audit_path(&self, list: &Address, key_id: &KeyId) -> PathBuf {
        self.seen_audit_dir(list).join(format!("{key_id}.json"))
    }

    /// The highest head of `key_id`'s audit chain on `list` this home has seen, if any.
    pub fn seen_audit_head(
        &self,
        list: &Address,
        key_id: &KeyId,
    ) -> Result<Option<SeenAuditHead>, HomeError> {
        let path = self.seen_audit_path(list, key_id);
        let text = match fs::read(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(HomeError::Io { path, source }),
        };
        serde_json::from_slice(&text)
            .map(Some)
            .map_err(|e| HomeError::BadAuditFile {
                path,
                detail: e.to_string(),
            })
    }

    /// `hushlist audit`: a post key's audit trail from the list's key server, verified as a
    /// chain under a head signed by the pinned server certificate and checked to extend the
    /// head this home saw last; that head then advances to this one.
    pub async fn audit(
        &self,
        me: &SecretIdentity,
        config: &ListConfig,
        key_id: &KeyId,
    ) -> Result<AuditLog, AuditError> {
        let keys = config.key_server()?;
        let (cert, log) = tokio::try_join!(
            async { Ok::<_, AuditError>(self.server_cert(config).await?) },
            async { Ok(keys.audit(me, &config.list, key_id).await?) },
        )?;
        if &log.key_id != key_id {
            return Err(AuditError::Remote(RemoteError::Unexpected {
                server: "key server",
                detail: format!(
                    "asked for the audit log of key {key_id}, got {}'s",
                    log.key_id
                ),
            }));
        }
        let head = verify_log(&config.list, &log, &cert).map_err(|broken| AuditError::Broken {
            key_id: key_id.clone(),
            broken,
        })?;
        let _lock = self.lock_list(&config.list)?;
        let path = self.seen_audit_path(&config.list, key_id);
        let seen = self.seen_audit_head(&config.list, key_id)?;
        if let Some(seen) = &seen {
            let rewritten = |now: String| AuditError::Rewritten {
                key_id: key_id.clone(),
                seen_seq: seen.head.seq,
                seen_hash: seen.head.hash,
                now,
                path: path.clone(),
            };
            if head.seq < seen.head.seq {
                return Err(rewritten(format!(
                    "its log ends at seq {}: records were deleted",
                    head.seq
                )));
            }
            let index = usize::try_from(seen.head.seq).unwrap_or(usize::MAX);
            if let Some(record) = index.checked_sub(1).and_then(|i| log.entries.get(i))
                && record.hash != seen.head.hash
            {
                return Err(rewritten(format!(
                    "it shows {} there: an earlier record was changed or removed",
                    record.hash
                )));
            }
        }
        if seen.is_none_or(|seen| head.seq > seen.head.seq) {
            let seen = SeenAuditHead {
                head,
                signed: log.head.clone(),
            };
            let text = serde_json::to_vec_pretty(&seen).expect("a seen head serializes");
            crate::write_private_file(&self.seen_audit_dir(&config.list), &path, &text)?;
        }
        Ok(log)
    }
}
