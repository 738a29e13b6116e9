//! `hushlist archive`: a list's past posts on its list server, listed, opened or downloaded.

use std::io::Write as _;
use std::path::Path;

use hushlist_client::archive::{self, ArchivePages, DownloadStep};
use indicatif::{ProgressBar, ProgressStyle};

use crate::context::Context;
use crate::printable;

/// `archive LIST`: one line a post (id, time, key id, Message-ID).
pub async fn list(cx: &Context, list: &str) -> anyhow::Result<()> {
    let (me, config) = cx.identity_and_list(list)?;
    let mut pages = ArchivePages::new(&me, &config)?;
    let mut out = std::io::stdout().lock();
    while let Some(page) = pages.next_page().await? {
        for post in &page {
            writeln!(
                out,
                "{} {} {} {}",
                post.id,
                post.received_at,
                post.key_id,
                post.message_id.as_deref().unwrap_or("-")
            )?;
        }
    }
    Ok(())
}

/// `archive LIST --open ID`.
pub async fn open(cx: &Context, list: &str, id: i64) -> anyhow::Result<()> {
    let (me, config) = cx.identity_and_list(list)?;
    let post = archive::find_post(&me, &config, id).await?;
    cx.print_opened(&me, std::slice::from_ref(&config), &post.message)
        .await
}

/// `archive LIST --download DIR`, with a progress spinner on a terminal; the posts that
/// could not be opened are named on stderr.
pub async fn download(cx: &Context, list: &str, dir: &Path) -> anyhow::Result<()> {
    let (me, config) = cx.identity_and_list(list)?;
    let bar = ProgressBar::new_spinner().with_style(
        ProgressStyle::with_template("{spinner} {pos} posts, {per_sec}  {msg}")
            .expect("a valid progress template"),
    );
    let done = archive::download(&me, &cx.home, &config, dir, |step| {
        bar.inc(1);
        if let DownloadStep::Opening(id) = step {
            bar.set_message(format!("post {id}"));
        }
    })
    .await;
    bar.finish_and_clear();
    let done = done?;
    println!(
        "{}: saved {} post(s) to {}, {} already there, {} unreadable",
        config.list,
        done.saved,
        dir.display(),
        done.kept,
        done.unreadable.len()
    );
    for post in &done.unreadable {
        eprintln!(
            "  {}",
            printable(&format!("post {}: {:#}", post.id, post.error))
        );
    }
    Ok(())
}
