//! Sealing and opening a 10 MiB post next to `gpg --symmetric` and `gpg --decrypt` of the
//! same bytes (AES-256, no compression, like ours).

use std::time::{Duration, Instant};

use base64::Engine as _;
use hushlist_core::SecretIdentity;
use hushlist_envelope::{OpenWith, open, seal};
use rand::RngCore as _;
use rand::rngs::OsRng;

use crate::Figure;
use crate::procs::run_command;

const MIB: f64 = 1024.0 * 1024.0;
const ROUNDS: usize = 3;

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

fn timed(mut f: impl FnMut() -> anyhow::Result<()>) -> anyhow::Result<Duration> {
    let mut times = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        let started = Instant::now();
        f()?;
        times.push(started.elapsed());
    }
    Ok(median(times))
}

pub fn run() -> anyhow::Result<Vec<Figure>> {
    // 10 MiB of message: headers and a base64 body in 76-column lines, as a mailed
    // attachment would be.
    let mut random = vec![0u8; 7_662_600];
    OsRng.fill_bytes(&mut random);
    let encoded = base64::engine::general_purpose::STANDARD.encode(&random);
    let body: String = encoded
        .as_bytes()
        .chunks(76)
        .map(|line| format!("{}\r\n", String::from_utf8_lossy(line)))
        .collect();
    let message = format!(
        "From: alice@example.org\r\nTo: team@lists.example.org\r\nSubject: 10 MiB\r\n\
         Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n{body}"
    )
    .into_bytes();
    let size = message.len() as f64 / MIB;
    let alice = SecretIdentity::generate(OsRng, "alice@example.org")?;
    let signers = [alice.cert().clone()];

    let mut sealed = None;
    let seal_time = timed(|| {
        sealed = Some(seal(OsRng, &message, &alice, "https://keys.example.org")?);
        Ok(())
    })?;
    let sealed = sealed.expect("sealed at least once");
    let open_time = timed(|| {
        open(
            &sealed.message,
            OpenWith::SessionKey(&sealed.session_key),
            &signers,
        )?;
        Ok(())
    })?;

    let dir = tempfile::tempdir()?;
    let plain = dir.path().join("post.eml");
    let encrypted = dir.path().join("post.gpg");
    let decrypted = dir.path().join("post.out");
    std::fs::write(&plain, &message)?;
    let home = hushlist_peers::Gpg::new();
    let gpg = |args: &[&str]| -> anyhow::Result<()> {
        let mut all = vec!["--batch", "--yes", "--pinentry-mode", "loopback"];
        all.extend_from_slice(&["--passphrase", "benchmark", "--homedir"]);
        all.push(home.dir().to_str().expect("a UTF-8 temp path"));
        all.extend_from_slice(args);
        run_command("gpg", &all).map(drop)
    };
    let (plain_s, encrypted_s, decrypted_s) = (
        plain.to_str().expect("UTF-8"),
        encrypted.to_str().expect("UTF-8"),
        decrypted.to_str().expect("UTF-8"),
    );
    let gpg_seal = timed(|| {
        gpg(&[
            "--cipher-algo",
            "AES256",
            "--compress-algo",
            "none",
            "-o",
            encrypted_s,
            "--symmetric",
            plain_s,
        ])
    })?;
    let gpg_open = timed(|| gpg(&["-o", decrypted_s, "--decrypt", encrypted_s]))?;
    anyhow::ensure!(
        std::fs::read(&decrypted)? == message,
        "gpg did not round-trip"
    );

    let rate = |d: Duration| size / d.as_secs_f64();
    Ok(vec![
        Figure {
            name: "seal 10 MiB (sign+encrypt+armor)".into(),
            ours: rate(seal_time),
            unit: "MiB/s".into(),
            peer_name: "gpg --symmetric (encrypt only)".into(),
            peer: rate(gpg_seal),
            ratio: gpg_seal.as_secs_f64() / seal_time.as_secs_f64(),
            target: ">= 1x gpg".into(),
        },
        Figure {
            name: "open 10 MiB (dearmor+decrypt+verify)".into(),
            ours: rate(open_time),
            unit: "MiB/s".into(),
            peer_name: "gpg --decrypt".into(),
            peer: rate(gpg_open),
            ratio: gpg_open.as_secs_f64() / open_time.as_secs_f64(),
            target: ">= 1x gpg".into(),
        },
    ])
}
