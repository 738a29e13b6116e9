//! What the test suites of several crates share: the clock, a bounded wait for a condition,
//! loopback connections from a chosen address, JSON posted over HTTP, SMTP replies read off
//! the wire, and gpg run at a past time. Each crate's own set-up (its servers, lists and
//! people) stays in its `tests/common`.
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

/// Polls `done` every 100 ms for at most `limit`; panics with `what` if it never holds.
pub async fn wait_until<F, Fut>(limit: std::time::Duration, what: &str, mut done: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if done().await {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}");
}
