//! Issue 18, hole 8: what the servers and the command write is private to the user who runs
//! them. After a real `hushlist serve` (its data directory made beforehand with mode 0755, as
//! a careless operator might), a real `hushlist init` and a real `archive --download`: data
//! directories and homes are 0700; database files (with SQLite's -wal and -shm, and the key
//! server's keyring beside its database), the master key and the tokens 0600; the downloaded
//! directory 0700 and each opened post in it 0600.

mod common;

use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
use std::path::Path;

use common::{Person, Served, create_list, ok};
use hushlist_peers::SmtpSink;

const LIST: &str = "team@lists.example.org";
const OLIVIA: &str = "olivia@example.org";

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

fn assert_mode(path: &Path, expected: u32) {
    assert_eq!(
        mode(path),
        expected,
        "{} is {:o}, not {expected:o}",
        path.display(),
        mode(path)
    );
}

#[test]
fn data_directories_databases_keys_homes_and_downloads_are_private() {
    let dir = tempfile::tempdir().unwrap();
    let sink = SmtpSink::start(&dir.path().join("mailboxes"));
    let data = dir.path().join("hushlist-data");
    std::fs::DirBuilder::new()
        .mode(0o755)
        .create(&data)
        .unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    let served = Served::start(&data, sink.port, "lists.example.org");

    let olivia = Person::new(dir.path(), OLIVIA);
    let home = olivia.home.clone();
    create_list(&served, LIST, &olivia, &[]);
    ok(olivia.run_with(
        &["send", "--list", LIST, "--subject", "Plans"],
        b"Private plans.\n",
    ));
    let download = dir.path().join("download");
    ok(olivia.run(&["archive", LIST, "--download", download.to_str().unwrap()]));

    for private_dir in [
        data.clone(),
        data.join("keys"),
        data.join("lists"),
        home.clone(),
        home.join("lists"),
        download.clone(),
    ] {
        assert_mode(&private_dir, 0o700);
    }
    let mut private_files = vec![
        data.join("admin.token"),
        data.join("keys/master.key"),
        data.join("keys/admin.token"),
        data.join("keys/grants.token"),
        data.join("lists/admin.token"),
        data.join("lists/unsubscribe.key"),
    ];
    for db in [
        "keys/keyserver.db",
        "keys/keyserver.db.keyring",
        "lists/listserver.db",
    ] {
        for suffix in ["", "-wal", "-shm"] {
            private_files.push(data.join(format!("{db}{suffix}")));
        }
    }
    let posts: Vec<_> = std::fs::read_dir(&download)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect();
    assert_eq!(posts.len(), 1, "{posts:?}");
    private_files.extend(posts);
    for file in private_files {
        assert_mode(&file, 0o600);
    }
    drop(served);
}
