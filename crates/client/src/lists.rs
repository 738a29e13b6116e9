//! The lists a home knows: where each list's key server, list server and SMTP port are.
//! One JSON file per list under `lists/` in the home directory.

use std::fs;

use hushlist_core::Address;
use serde::{Deserialize, Serialize};

use crate::{Home, HomeError};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListConfig {
    pub list: Address,
    /// Base URL of the key server.
    pub key_server: String,
    /// Base URL of the list server's HTTP interface.
    pub list_server: String,
    /// The list server's SMTP address, `host:port`.
    pub smtp: String,
}

impl Home {
    pub fn save_list(&self, config: &ListConfig) -> Result<(), HomeError> {
        let dir = self.dir().join("lists");
        let io = |source| HomeError::Io {
            path: dir.clone(),
            source,
        };
        crate::private_dir(&dir).map_err(io)?;
        let path = dir.join(format!("{}.json", config.list));
        let text = serde_json::to_vec_pretty(config).expect("a list config serializes");
        fs::write(&path, text).map_err(|source| HomeError::Io { path, source })
    }

    /// Every list this home knows, in address order.
    pub fn lists(&self) -> Result<Vec<ListConfig>, HomeError> {
        let dir = self.dir().join("lists");
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => return Err(HomeError::Io { path: dir, source }),
        };
        let mut lists = Vec::new();
        for entry in entries {
            let path = entry
                .map_err(|source| HomeError::Io {
                    path: dir.clone(),
                    source,
                })?
                .path();
            let text = fs::read(&path).map_err(|source| HomeError::Io {
                path: path.clone(),
                source,
            })?;
            let config = serde_json::from_slice(&text).map_err(|e| HomeError::BadListFile {
                path: path.clone(),
                detail: e.to_string(),
            })?;
            lists.push(config);
        }
        lists.sort_by(|a: &ListConfig, b| a.list.cmp(&b.list));
        Ok(lists)
    }

    pub fn list(&self, list: &Address) -> Result<ListConfig, HomeError> {
        self.lists()?
            .into_iter()
            .find(|l| l.list.same_mailbox(list))
            .ok_or_else(|| HomeError::UnknownList(list.clone()))
    }
}
