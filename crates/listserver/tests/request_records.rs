//! The real `hushlist-listserver` forgets request nonces past their expiry and rate-limit
//! windows that no longer matter, as the key server does in its sweep; without that, both
//! tables grow with every signed request for as long as the server runs.

mod common;

use std::time::Duration;

use common::*;
use hushlist_store::ListStore;

/// Whose signed requests the records are of.
const SIGNER: &str = "0123456789ABCDEF0123456789ABCDEF01234567";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_nonces_and_old_rate_limit_windows_are_pruned() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("lists");
    std::fs::create_dir_all(&data_dir).unwrap();
    let store = ListStore::open(&format!(
        "sqlite://{}",
        data_dir.join("listserver.db").display()
    ))
    .await
    .unwrap();
    let now = i64::try_from(hushlist_testkit::now()).unwrap();
    let (day_ago, hour_ago, in_an_hour) = (now - 86_400, now - 3600, now + 3600);
    // What earlier requests left: a nonce expired an hour ago, one still live, a rate-limit
    // window from a day ago and the current one.
    assert!(
        store
            .remember_nonce(SIGNER, "expired", hour_ago)
            .await
            .unwrap()
    );
    assert!(
        store
            .remember_nonce(SIGNER, "live", in_an_hour)
            .await
            .unwrap()
    );
    assert_eq!(store.count_request(SIGNER, day_ago).await.unwrap(), 1);
    assert_eq!(store.count_request(SIGNER, now).await.unwrap(), 1);

    let _server = ListServerProcess::start(&data_dir, &[]);
    // Probes: an expired nonce can be remembered afresh once pruned; a pruned window counts
    // from 1 again.
    wait_until(
        Duration::from_secs(30),
        "the expired nonce to be pruned",
        || async {
            store
                .remember_nonce(SIGNER, "expired", hour_ago)
                .await
                .unwrap()
        },
    )
    .await;
    wait_until(
        Duration::from_secs(30),
        "the day-old rate-limit window to be pruned",
        || async { store.count_request(SIGNER, day_ago).await.unwrap() == 1 },
    )
    .await;
    // What still matters stays: the live nonce is still a replay, the current window counts on.
    assert!(
        !store
            .remember_nonce(SIGNER, "live", in_an_hour)
            .await
            .unwrap()
    );
    assert_eq!(store.count_request(SIGNER, now).await.unwrap(), 2);
}
