//! An owner cannot add an expired certificate: the `hushlist` command refuses it before
//! anything is sent to the servers (`hushlist serve`), and says what the holder must do.

mod common;

use common::{Person, Served, create_list, ok, refused};
use hushlist_peers::Gpg;
use hushlist_testkit::gpg::gpg_at;
use hushlist_testkit::now;

const LIST: &str = "team@lists.example.org";

#[test]
fn an_owner_adding_an_expired_certificate_is_refused_and_told_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let served = Served::start(&dir.path().join("data"), 1, "lists.example.org");
    let olivia = Person::new(dir.path(), "olivia@example.org");
    create_list(&served, LIST, &olivia, &[]);

    // Xena made her key with gpg ten days ago to last two days.
    let gpg = Gpg::new();
    let uid = "Xena <xena@example.org>";
    gpg_at(
        &gpg,
        now() - 10 * 86_400,
        &["--quick-gen-key", uid, "future-default", "default", "2d"],
        b"",
    );
    let cert_file = dir.path().join("xena.asc");
    std::fs::write(
        &cert_file,
        gpg.run_ok(&["--armor", "--export", uid], b"").stdout,
    )
    .unwrap();

    let err = refused(olivia.run(&[
        "list",
        "add",
        LIST,
        "xena@example.org",
        "--key",
        cert_file.to_str().unwrap(),
    ]));
    assert!(err.contains("was not sent"), "{err}");
    assert!(err.contains("expired"), "{err}");
    assert!(err.contains("gpg --quick-set-expire"), "{err}");
    let members = ok(olivia.run(&["list", "show", LIST]));
    assert!(!members.contains("xena@example.org"), "{members}");
}
