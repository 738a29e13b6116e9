//! A policy change governs the posts made after it, as `hushlist list policy --help` says:
//! `hushlist serve` running both servers with Postfix's smtp-sink as everyone's mailbox, and
//! the `hushlist` command.

mod common;

use common::{
    Person, add_member, create_list, hushlist, ok, refused, served_to_mailboxes, use_list,
};

const LIST: &str = "team@lists.example.org";

impl Person {
    fn send(&self, subject: &str, text: &str) {
        ok(hushlist(
            &self.home,
            &["send", "--list", LIST, "--subject", subject],
            text.as_bytes(),
        ));
    }
}

#[test]
fn the_help_says_which_posts_a_policy_change_applies_to() {
    let home = tempfile::tempdir().unwrap();
    let help = ok(hushlist(home.path(), &["list", "policy", "--help"], b""));
    assert!(
        help.contains("A change governs the posts made after it"),
        "{help}"
    );
    assert!(help.contains("applies to posts made from now on"), "{help}");
    assert!(!help.contains("revokes every post"), "{help}");
}

#[test]
fn switching_to_current_roster_revokes_only_the_posts_made_after_the_switch() {
    let dir = tempfile::tempdir().unwrap();
    let (sink, served) = served_to_mailboxes(dir.path());
    let olivia = Person::new(dir.path(), "olivia@example.org");
    let bob = Person::new(dir.path(), "bob@example.org");
    create_list(&served, LIST, &olivia, &[]);
    ok(olivia.run(&["list", "policy", LIST, "--keys-follow", "posting-roster"]));
    add_member(LIST, &olivia, &bob, "member");
    use_list(&served, LIST, &bob);

    olivia.send("Before", "Posted under posting-roster.\n");
    ok(olivia.run(&["list", "policy", LIST, "--keys-follow", "current-roster"]));
    olivia.send("After", "Posted under current-roster.\n");
    let copies = sink.wait_for_copies(bob.address, 2);
    ok(olivia.run(&["list", "remove", LIST, bob.address]));

    // Bob, removed, still opens the post made before the switch and not the one after it.
    let mut opened = Vec::new();
    let mut refusals = Vec::new();
    for copy in &copies {
        let out = hushlist(&bob.home, &["open"], copy);
        if out.status.success() {
            opened.push(ok(out));
        } else {
            refusals.push(refused(out));
        }
    }
    assert_eq!(opened.len(), 1, "{opened:?} {refusals:?}");
    assert!(
        opened[0].contains("Posted under posting-roster."),
        "{}",
        opened[0]
    );
    assert_eq!(refusals.len(), 1, "{refusals:?}");
    assert!(
        refusals[0].contains("no longer a member and the list's keys follow the current roster"),
        "{}",
        refusals[0]
    );
}
