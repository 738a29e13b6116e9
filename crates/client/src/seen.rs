//! The Message-IDs of the posts this home was shown, per list, with each post's key id. A
//! post that reuses a Message-ID under another key id is shown with a warning: mail readers
//! thread and deduplicate by Message-ID, so one post could pass for, or hide, the other.
//! The signature binds each post to its own key id, so the second post is its signer's own
//! (a sender writing the same message twice does this too, which is why it is a warning and
//! not a refusal).

use std::path::PathBuf;

use hushlist_core::Address;

use crate::{Home, HomeError, write_private_file};

/// How many Message-IDs are kept per list; the oldest go first.
pub const MAX_SEEN_PER_LIST: usize = 10_000;

/// The record for one list: `MESSAGE-ID TAB KEY-ID` lines, oldest first.
pub(crate) struct SeenIds {
    dir: PathBuf,
    path: PathBuf,
    entries: Vec<(String, String)>,
}

impl SeenIds {
    pub(crate) fn load(home: &Home, list: &Address) -> Result<Self, HomeError> {
        let dir = home.dir().join("seen");
        let path = dir.join(list.as_str());
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(source) => return Err(HomeError::Io { path, source }),
        };
        let entries = text
            .lines()
            .filter_map(|line| line.split_once('\t'))
            .map(|(id, key)| (id.to_owned(), key.to_owned()))
            .collect();
        Ok(SeenIds { dir, path, entries })
    }

    /// The key id a post with `message_id` was shown under before, if not `key_id`.
    pub(crate) fn other_key_id(&self, message_id: &str, key_id: &str) -> Option<&str> {
        self.entries
            .iter()
            .rev()
            .find(|(id, key)| id == message_id && key != key_id)
            .map(|(_, key)| key.as_str())
    }

    /// Records that the post under `key_id` with `message_id` was shown. A Message-ID with a
    /// tab or line end in it (which mail-parser would not give) is not recorded.
    pub(crate) fn record(mut self, message_id: &str, key_id: &str) -> Result<(), HomeError> {
        if message_id.contains(['\t', '\r', '\n'])
            || self
                .entries
                .iter()
                .any(|(id, key)| id == message_id && key == key_id)
        {
            return Ok(());
        }
        self.entries
            .push((message_id.to_owned(), key_id.to_owned()));
        let keep = self.entries.len().saturating_sub(MAX_SEEN_PER_LIST);
        let mut text = String::new();
        for (id, key) in &self.entries[keep..] {
            text.push_str(id);
            text.push('\t');
            text.push_str(key);
            text.push('\n');
        }
        write_private_file(&self.dir, &self.path, text.as_bytes())
    }
}
