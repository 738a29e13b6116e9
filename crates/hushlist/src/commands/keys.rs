//! `hushlist revoke` and `hushlist audit`: a post's key at the key server.

use std::io::Write as _;

use hushlist_core::KeyId;

use crate::context::Context;

fn key_id(text: &str) -> anyhow::Result<KeyId> {
    text.parse().map_err(|e| anyhow::anyhow!("{e}"))
}

/// `revoke KEYID`: the key destroyed, so nobody can open the post.
pub async fn revoke(cx: &Context, key_id_text: &str, list: Option<&str>) -> anyhow::Result<()> {
    let me = cx.identity()?;
    let config = cx.one_list(list)?;
    let key_id = key_id(key_id_text)?;
    config
        .key_server()?
        .revoke(&me, &config.list, &key_id)
        .await?;
    println!("key {key_id} destroyed: the post can no longer be opened");
    Ok(())
}

/// `audit KEYID`: the key's audit log, checked as a hash chain under a signed head.
pub async fn audit(cx: &Context, key_id_text: &str, list: Option<&str>) -> anyhow::Result<()> {
    let me = cx.identity()?;
    let config = cx.one_list(list)?;
    let key_id = key_id(key_id_text)?;
    let log = cx.home.audit(&me, &config, &key_id).await?;
    let mut out = std::io::stdout().lock();
    for entry in &log.entries {
        writeln!(
            out,
            "{} {} {} {}{}",
            entry.at,
            entry.actor,
            entry.action,
            entry.outcome,
            entry
                .detail
                .as_ref()
                .map(|d| format!(" ({d})"))
                .unwrap_or_default()
        )?;
    }
    eprintln!(
        "audit log verified: {} records chained up to a head signed by the pinned key server, extending any this home saw before",
        log.entries.len()
    );
    Ok(())
}
