//! The servers under test as real release-build processes, and what is read off them:
//! announced addresses, /metrics counters, peak resident memory.

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

/// A server binary from the same build as this harness; killed when dropped.
pub struct Server {
    child: Child,
    /// Lines it announced on stdout ("listening on URL", "smtp on ADDR").
    pub announced: Vec<String>,
}

impl Server {
    /// Starts `binary` with `args` and reads `lines` announcement lines.
    pub fn start(binary: &str, args: &[&str], lines: usize) -> anyhow::Result<Self> {
        let path = std::env::current_exe()?
            .parent()
            .context("the harness has a directory")?
            .join(binary);
        let mut child = Command::new(&path)
            .args(args)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {} (build it with bench/run)", path.display()))?;
        let mut out = BufReader::new(child.stdout.take().context("stdout")?).lines();
        let mut announced = Vec::new();
        for _ in 0..lines {
            match out.next() {
                Some(line) => announced.push(line?),
                None => bail!("{binary} exited before announcing where it listens"),
            }
        }
        // Keep draining stdout so the server never blocks on it.
        std::thread::spawn(move || for _ in out {});
        Ok(Server { child, announced })
    }

    /// The URL after "listening on ".
    pub fn url(&self) -> anyhow::Result<String> {
        self.announced
            .iter()
            .find_map(|l| l.strip_prefix("listening on "))
            .map(str::to_owned)
            .context("no \"listening on\" line")
    }

    /// Peak resident memory so far, in MiB (VmHWM).
    pub fn peak_rss_mib(&self) -> anyhow::Result<f64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))?;
        let kib: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .context("VmHWM in /proc/PID/status")?;
        Ok(kib / 1024.0)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A counter from a server's /metrics.
pub async fn metric(http: &reqwest::Client, base: &str, name: &str) -> anyhow::Result<i64> {
    let text = http
        .get(format!("{base}/metrics"))
        .send()
        .await?
        .text()
        .await?;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .with_context(|| format!("{name} in /metrics"))
}

/// Polls `done` every 100 ms until it holds or `limit` passes; returns when it held. Not
/// more often: a /metrics poll counts the delivery queue, and polling it every 20 ms took a
/// third of the list server's fan-out rate on two cores.
pub async fn wait_until<F, Fut>(limit: Duration, what: &str, mut done: F) -> anyhow::Result<Instant>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<bool>>,
{
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if done().await? {
            return Ok(Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("gave up waiting for {what} after {limit:?}")
}

/// Runs a command to completion, failing with its stderr; returns its stdout.
pub fn run_command(program: &str, args: &[&str]) -> anyhow::Result<Vec<u8>> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("running {program} (bench/run installs it)"))?;
    if !out.status.success() {
        bail!(
            "{program} {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(out.stdout)
}

/// Runs a command that should finish within `limit`; kills it and fails if it does not, so a
/// hung peer ends the run with an error instead of stalling it.
pub fn run_within(program: &str, args: &[&str], limit: Duration) -> anyhow::Result<()> {
    let mut child = Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("running {program} (bench/run installs it)"))?;
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait()? {
            if !status.success() {
                bail!("{program} {args:?} failed: {status}");
            }
            return Ok(());
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{program} {args:?} did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
