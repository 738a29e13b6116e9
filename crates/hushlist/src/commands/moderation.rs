//! `hushlist list held/release/discard`: posts the list's moderation holds for its owners.

use anyhow::Context as _;
use hushlist_core::api::HeldDecision;

use crate::context::Context;

/// `list held`: the held posts, or (`open`) one of them opened.
pub async fn held(cx: &Context, list: &str, open: Option<i64>) -> anyhow::Result<()> {
    let (me, config) = cx.identity_and_list(list)?;
    let held = config.list_server()?.held_posts(&me, &config.list).await?;
    if let Some(id) = open {
        let post = held
            .posts
            .iter()
            .find(|p| p.id == id)
            .with_context(|| format!("no post {id} is held for {list}"))?;
        return cx
            .print_opened(&me, std::slice::from_ref(&config), &post.message)
            .await;
    }
    if held.posts.is_empty() {
        println!("no posts held for {}", held.list);
    }
    for post in held.posts {
        println!(
            "{} from {} at {} (key {}): {}",
            post.id, post.from, post.received_at, post.key_id, post.reason
        );
    }
    Ok(())
}

/// `list release` (`approved`) or `list discard`: an owner's signed decision on a held post.
pub async fn settle(
    cx: &Context,
    list: &str,
    id: i64,
    approved: bool,
    reason: Option<String>,
) -> anyhow::Result<()> {
    let (me, config) = cx.identity_and_list(list)?;
    let decision = HeldDecision {
        id,
        approved,
        reason,
    };
    config
        .list_server()?
        .settle_held(&me, &config.list, &decision)
        .await?;
    if approved {
        println!("post {id} released to {list}");
    } else {
        println!("post {id} discarded; its sender is told by mail");
    }
    Ok(())
}
