//! The list server's SMTP session reads whatever a client sends: no input may panic it, hang
//! it, or get a message accepted that was not a complete transaction.
#![no_main]

use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use hushlist_core::Address;
use hushlist_listserver::smtp::{PostSink, SinkError, SmtpConfig, run_session};
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// Takes every message for list@example.org and counts them.
struct CountingSink(AtomicUsize);

impl PostSink for CountingSink {
    async fn takes_mail_for(&self, address: &Address) -> Result<bool, SinkError> {
        Ok(address.as_str() == "list@example.org")
    }

    async fn accept(
        &self,
        _mail_from: Option<&Address>,
        lists: &[Address],
        message: Vec<u8>,
    ) -> Result<String, SinkError> {
        assert!(!lists.is_empty(), "a message was accepted without recipients");
        assert!(message.len() <= 64 * 1024, "a message over SIZE was accepted");
        Ok(format!("Queued as {}", self.0.fetch_add(1, Ordering::Relaxed)))
    }
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime")
    })
}

fuzz_target!(|data: &[u8]| {
    let config = SmtpConfig {
        max_message_bytes: 64 * 1024,
        max_recipients: 5,
        idle_timeout: Duration::from_secs(2),
        ..SmtpConfig::default()
    };
    let sink = CountingSink(AtomicUsize::new(0));
    runtime().block_on(async {
        let (mut client, server) = tokio::io::duplex(16 * 1024);
        let input = data.to_vec();
        let session = run_session(server, &config, &sink);
        let talk = async move {
            // Write everything, then hang up, while draining the replies.
            let (mut read, mut write) = tokio::io::split(&mut client);
            let writer = async {
                let _ = write.write_all(&input).await;
                let _ = write.shutdown().await;
            };
            let reader = async {
                let mut replies = Vec::new();
                let _ = read.read_to_end(&mut replies).await;
                replies
            };
            tokio::join!(writer, reader).1
        };
        let (ended, replies) = tokio::time::timeout(Duration::from_secs(10), async {
            tokio::join!(session, talk)
        })
        .await
        .expect("the session neither hangs nor outlives its idle timeout");
        let _ = ended;
        assert!(replies.starts_with(b"220 "), "every session starts with a greeting");
    });
});
