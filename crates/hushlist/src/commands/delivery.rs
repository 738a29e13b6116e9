//! `hushlist delivery suspend/resume`.

use hushlist_client::delivery;

use crate::context::{Context, address};

/// Suspends (`suspended`) or resumes delivery of `list` to `member`, or to this identity.
pub async fn switch(
    cx: &Context,
    list: &str,
    member: Option<&str>,
    suspended: bool,
) -> anyhow::Result<()> {
    let (me, config) = cx.identity_and_list(list)?;
    let member = member.map(address).transpose()?;
    let status = delivery::switch(&me, &cx.home, &config, member, suspended).await?;
    println!(
        "delivery of {} to {} {}",
        status.list,
        status.address,
        if status.suspended {
            "suspended"
        } else {
            "resumed"
        }
    );
    Ok(())
}
