//! `hushlist join` (asking to be let in) and `hushlist list pending/approve/reject` (the
//! owners' side).

use anyhow::Context as _;
use hushlist_client::joins;
use hushlist_core::Fingerprint;
use hushlist_core::roster::Role;

use crate::context::{Context, address, my_address, now};

/// `join LIST [--note NOTE]`, or `join LIST --confirm TOKEN`.
pub async fn join(
    cx: &Context,
    list: &str,
    note: Option<String>,
    confirm: Option<&str>,
) -> anyhow::Result<()> {
    let config = cx.home.list(&address(list)?).with_context(|| {
        format!("first tell this home where {list} lives: hushlist list use {list} --key-server URL --list-server URL --smtp HOST:PORT")
    })?;
    let server = config.list_server()?;
    if let Some(token) = confirm {
        let confirmed = server.confirm_join(&config.list, token.trim()).await?;
        println!(
            "confirmed: your request to join {} as {} with key {} waits for the owners until {} (unix time); you will hear by mail",
            confirmed.list, confirmed.address, confirmed.fingerprint, confirmed.expires_at
        );
        return Ok(());
    }
    let me = cx.identity()?;
    let mine = my_address(&me)?;
    let receipt = server.join(&me, &config.list, &mine, note).await?;
    println!(
        "asked to join {} as {} with key {}; a confirmation is on its way to {}, encrypted to this key: confirm by {} (unix time) as it says (hushlist join {} --confirm TOKEN), and the owners are told",
        receipt.list,
        receipt.address,
        receipt.fingerprint,
        receipt.address,
        receipt.confirm_by,
        receipt.list
    );
    Ok(())
}

/// `list pending`: each request as verified here, with what an owner may do about it.
pub async fn pending(cx: &Context, list: &str) -> anyhow::Result<()> {
    let (me, config) = cx.identity_and_list(list)?;
    let pending = joins::pending(&me, &config, now()).await?;
    if pending.is_empty() {
        println!("no pending requests to join {}", config.list);
    }
    for checked in &pending {
        let request = &checked.pending;
        let keys = pending
            .iter()
            .filter(|c| c.pending.address == request.address)
            .count();
        let state = match (&checked.verified, request.confirmed) {
            (Err(forgery), _) => format!(
                "DOES NOT VERIFY ({forgery}): do not approve; the list server may be compromised"
            ),
            (Ok(_), false) => "not confirmed from the mailbox: cannot be approved".to_owned(),
            (Ok(_), true) if keys > 1 => format!(
                "CONFLICT: {keys} keys asked for this address; approve only the one the person confirms to you"
            ),
            (Ok(_), true) => "confirmed".to_owned(),
        };
        let note = checked
            .verified
            .as_ref()
            .ok()
            .and_then(|v| v.ask.note.as_deref())
            .map(|n| {
                format!(
                    "; note: {}",
                    n.chars().filter(|c| !c.is_control()).collect::<String>()
                )
            })
            .unwrap_or_default();
        println!(
            "{} key {} asked at {}, lapses at {}: {state}{note}",
            request.address, request.fingerprint, request.requested_at, request.expires_at,
        );
    }
    Ok(())
}

/// `list approve`: the add signed for the key `fingerprint` names, and the requester told.
pub async fn approve(
    cx: &Context,
    list: &str,
    member: &str,
    fingerprint: &str,
    role: Role,
) -> anyhow::Result<()> {
    let (me, config) = cx.identity_and_list(list)?;
    let member = address(member)?;
    let fingerprint = fingerprint_arg(fingerprint)?;
    let head_seq =
        joins::approve(&me, &cx.home, &config, &member, &fingerprint, role, now()).await?;
    println!(
        "{member} added to {} with key {fingerprint} (seq {head_seq} on both servers) and told by mail",
        config.list
    );
    Ok(())
}

/// `list reject`: the request turned down and the requester told.
pub async fn reject(
    cx: &Context,
    list: &str,
    member: &str,
    fingerprint: Option<&str>,
    reason: Option<String>,
) -> anyhow::Result<()> {
    let (me, config) = cx.identity_and_list(list)?;
    let member = address(member)?;
    let fingerprint = fingerprint.map(fingerprint_arg).transpose()?;
    let rejected =
        joins::reject(&me, &config, &member, fingerprint.as_ref(), reason, now()).await?;
    println!(
        "{member}'s request to join {} with key {rejected} declined; they are told by mail",
        config.list
    );
    Ok(())
}

/// A fingerprint as people copy it: 40 or 64 hex digits, spaces (as gpg groups them) ignored.
fn fingerprint_arg(text: &str) -> anyhow::Result<Fingerprint> {
    let digits: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    Fingerprint::try_from(digits).map_err(|e| {
        anyhow::anyhow!("{e}; give the key's fingerprint as `hushlist list pending` shows it")
    })
}
