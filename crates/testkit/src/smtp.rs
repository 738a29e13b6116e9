//! The client side of SMTP as the tests speak it by hand: replies and DATA.

use std::time::Duration;

use tokio::io::{AsyncBufRead, AsyncBufReadExt as _};

/// Reads one reply, all its lines (a line "250-..." is continued by the next), and returns
/// what came: the whole reply, or what came before the stream ended ("" if nothing did). A
/// read error counts as the end (a server may reset a connection it refuses). Errs if a
/// line takes longer than `limit`.
pub async fn read_reply<R>(
    reader: &mut R,
    limit: Duration,
) -> Result<String, tokio::time::error::Elapsed>
where
    R: AsyncBufRead + Unpin,
{
    let mut text = String::new();
    loop {
        let mut line = Vec::new();
        let read = tokio::time::timeout(limit, reader.read_until(b'\n', &mut line))
            .await?
            .unwrap_or(0);
        if read == 0 {
            return Ok(text);
        }
        let line = String::from_utf8_lossy(&line);
        text.push_str(&line);
        if line.as_bytes().get(3) != Some(&b'-') {
            return Ok(text);
        }
    }
}

/// What a client sends after `354` for `message`: its lines with a leading dot doubled,
/// then the lone dot that ends it.
pub fn data_lines(message: &[u8]) -> Vec<u8> {
    let mut stuffed = Vec::with_capacity(message.len() + 3);
    for line in message.split_inclusive(|&b| b == b'\n') {
        if line.starts_with(b".") {
            stuffed.push(b'.');
        }
        stuffed.extend_from_slice(line);
    }
    stuffed.extend_from_slice(b".\r\n");
    stuffed
}
