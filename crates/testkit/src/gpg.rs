//! gpg as a person's own tool, beyond what `hushlist_peers::Gpg` runs.

use hushlist_peers::Gpg;

/// Runs gpg as if its clock said `at` (unix seconds), with `input` on stdin; its stdout.
pub fn gpg_at(gpg: &Gpg, at: u64, args: &[&str], input: &[u8]) -> Vec<u8> {
    let clock = format!("{at}!");
    let mut all = vec!["--faked-system-time", clock.as_str()];
    all.extend_from_slice(args);
    gpg.run_ok(&all, input).stdout
}

/// The token a join confirmation carries, as its reader sees it after decrypting it with
/// gpg; `None` if this gpg home cannot decrypt it.
pub fn confirmation_token(gpg: &Gpg, confirmation: &[u8]) -> Option<String> {
    let out = gpg.decrypt_pgp_mime(confirmation);
    if !out.status.success() {
        return None;
    }
    let part = mail_parser::MessageParser::new()
        .parse(&out.stdout)
        .unwrap();
    let text = part.body_text(0).unwrap();
    let token = text.split("--confirm ").nth(1)?.split_whitespace().next()?;
    Some(token.to_owned())
}
