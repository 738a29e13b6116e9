//! `hushlist send`, `sendmail` and `open`: posting and reading delivered posts.

use std::io::{Read as _, Write as _};

use hushlist_client::addressing;
use hushlist_client::posts;

use crate::context::{Context, address, my_address};

fn read_stdin() -> anyhow::Result<Vec<u8>> {
    let mut input = Vec::new();
    std::io::stdin().read_to_end(&mut input)?;
    Ok(input)
}

/// `send`: a whole message from stdin, or (with `list` and `subject`) just its body.
pub async fn send(cx: &Context, list: Option<&str>, subject: Option<&str>) -> anyhow::Result<()> {
    let me = cx.identity()?;
    let input = read_stdin()?;
    let (config, message) = match (list, subject) {
        (Some(list), Some(subject)) => {
            let config = cx.list(list)?;
            let message = posts::compose(&my_address(&me)?, &config.list, subject, &input);
            (config, message)
        }
        _ => {
            let message = posts::crlf(&input);
            let config = addressing::list_addressed(&cx.home.lists()?, &message)?;
            (config, message)
        }
    };
    let sent = posts::send(&me, &cx.home, &config, &message).await?;
    eprintln!(
        "posted to {} (key {} deposited at {}, roster at seq {}){}",
        config.list,
        sent.key_id,
        config.key_server,
        sent.roster_seq,
        if sent.held {
            "; the list holds it until an owner approves it"
        } else {
            ""
        }
    );
    Ok(())
}

/// `sendmail`: the message on stdin posted to the list among `recipients`, or (with
/// `from_headers` or no recipients) the list its To or Cc names. An envelope `sender` must
/// be this identity.
pub async fn sendmail(
    cx: &Context,
    from_headers: bool,
    sender: Option<&str>,
    recipients: &[String],
) -> anyhow::Result<()> {
    let me = cx.identity()?;
    if let Some(sender) = sender
        && !address(sender)?.same_mailbox(&my_address(&me)?)
    {
        anyhow::bail!("-f {sender}: you can only send as {}", my_address(&me)?);
    }
    let message = posts::crlf(&read_stdin()?);
    let lists = cx.home.lists()?;
    let config = if from_headers || recipients.is_empty() {
        addressing::list_addressed(&lists, &message)?
    } else {
        addressing::list_among(&lists, recipients)?
    };
    posts::send(&me, &cx.home, &config, &message).await?;
    Ok(())
}

/// `open`: the delivered post on stdin shown with its verified signer, or (`splice`) with
/// this identity's PKESK spliced in.
pub async fn open(cx: &Context, splice: bool) -> anyhow::Result<()> {
    let me = cx.identity()?;
    let input = read_stdin()?;
    let lists = cx.home.lists()?;
    if splice {
        let spliced = posts::splice_post(&me, &cx.home, &lists, &input).await?;
        std::io::stdout().lock().write_all(&spliced)?;
        return Ok(());
    }
    cx.print_opened(&me, &lists, &input).await
}
