//! What the test suites of several crates share: the clock, loopback connections from a
//! chosen address, JSON posted over HTTP, SMTP replies read off the wire, and gpg run at a
//! past time. Each crate's
//! own set-up (its servers, lists and people) stays in its `tests/common`.
//!
//! A dev-dependency only (`tests/architecture.rs` in the `hushlist` crate checks it): it
//! builds on no hushlist crate but `hushlist-peers`, so every crate's tests can use it.

pub mod gpg;
pub mod http;
pub mod net;
pub mod smtp;

/// Now, in unix seconds (the time every signed thing carries).
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}
