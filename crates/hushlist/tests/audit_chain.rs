//! Issue 18, hole 7: the key server's operator (or whoever can write its database) rewrites
//! a post key's audit trail, say to hide that someone fetched the key. Against real
//! processes: `hushlist serve` on a SQLite data directory, the `hushlist` command for every
//! person, and the key server's database rewritten with SQL between a stop and a restart on
//! the same ports. `hushlist audit` verifies the records as a hash chain under a head the
//! pinned key server signs, and remembers the head it saw: a changed or deleted record breaks
//! the chain for anyone; a chain rewritten whole, hashes recomputed (the operator holds the
//! server's key, so the new head is signed too), is refused by a home that saw the old head.

mod common;

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use common::{Person, Served, list_with, ok, refused};
use hushlist_core::audit::{AuditFields, AuditHash};
use hushlist_peers::SmtpSink;
use sqlx::{Connection as _, Row as _};

const LIST: &str = "team@lists.example.org";
const DOMAIN: &str = "lists.example.org";

/// A list with Olivia as owner and Bob as member, one post of Olivia's whose key Bob has
/// fetched twice (through the archive), and Olivia's home copied before she ever read the
/// post's audit log (the same person on another machine).
struct Audited {
    dir: tempfile::TempDir,
    _mail: SmtpSink,
    served: Option<Served>,
    relay_port: u16,
    key_http: String,
    list_http: String,
    olivia: Person,
    olivia_elsewhere: Person,
    bob_fingerprint: String,
    key_id: String,
}

impl Audited {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mail = SmtpSink::start(&dir.path().join("mailboxes"));
        let served = Served::start(&dir.path().join("served"), mail.port, DOMAIN);
        let olivia = Person::named(dir.path(), "olivia", "olivia@example.org");
        let bob = Person::named(dir.path(), "bob", "bob@example.org");
        list_with(&served, LIST, &olivia, &[(&bob, "member")]);
        let sent = olivia.run_with(
            &["send", "--list", LIST, "--subject", "Plans"],
            b"Secret plans.\n",
        );
        let report = String::from_utf8_lossy(&sent.stderr).into_owned();
        ok(sent);
        let key_id = report
            .split("(key ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("no key id in {report}"))
            .to_owned();
        for _ in 0..2 {
            let opened = ok(bob.run(&["archive", LIST, "--open", "1"]));
            assert!(opened.contains("Secret plans."), "{opened}");
        }
        let olivia_elsewhere = Person {
            address: olivia.address,
            home: dir.path().join("olivia-elsewhere"),
        };
        copy_dir(&olivia.home, &olivia_elsewhere.home);
        let authority = |url: &str| url.trim_start_matches("http://").to_owned();
        Audited {
            relay_port: mail.port,
            key_http: authority(&served.key_url),
            list_http: authority(&served.list_url),
            served: Some(served),
            _mail: mail,
            olivia,
            olivia_elsewhere,
            bob_fingerprint: bob.identity().fingerprint().to_string(),
            key_id,
            dir,
        }
    }

    fn database(&self) -> PathBuf {
        self.dir.path().join("served/keys/keyserver.db")
    }

    /// Stops the servers, runs `rewrite` on the key server's database, and starts them again
    /// at the same URLs.
    async fn rewrite<F>(&mut self, rewrite: F)
    where
        F: AsyncFnOnce(&mut sqlx::SqliteConnection, &str),
    {
        drop(self.served.take());
        let url = format!("sqlite://{}", self.database().display());
        let mut db = sqlx::SqliteConnection::connect(&url).await.unwrap();
        rewrite(&mut db, &self.key_id).await;
        db.close().await.unwrap();
        self.served = Some(Served::start_on(
            &self.dir.path().join("served"),
            self.relay_port,
            DOMAIN,
            &self.key_http,
            &self.list_http,
        ));
    }

    /// `hushlist audit` of the post's key, as `who`.
    fn audit(&self, who: &Person) -> std::process::Output {
        who.run(&["audit", &self.key_id])
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// Runs one statement binding the key id as `$1` and the seq as `$2`; it must change a row.
async fn change(db: &mut sqlx::SqliteConnection, sql: &str, key_id: &str, seq: i64) {
    let done = sqlx::query(sql)
        .bind(key_id)
        .bind(seq)
        .execute(&mut *db)
        .await
        .unwrap();
    assert_eq!(done.rows_affected(), 1, "{sql}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_changed_or_deleted_in_the_key_servers_database_breaks_the_chain_for_any_reader() {
    let mut audited = Audited::new();
    let log = ok(audited.audit(&audited.olivia));
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines.len(), 3, "{log}");
    assert!(lines[0].ends_with(" deposit stored"), "{log}");
    for line in &lines[1..] {
        assert!(
            line.contains(&format!(" {} release released", audited.bob_fingerprint)),
            "{log}"
        );
    }
    let seen = audited
        .olivia
        .home
        .join("audit")
        .join(LIST)
        .join(format!("{}.json", audited.key_id));
    let mode = std::fs::metadata(&seen).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "the seen head is kept private");

    // Bob's first fetch is made to look like someone else's.
    audited
        .rewrite(async |db, key_id| {
            change(
                db,
                "UPDATE audit SET actor = 'server' WHERE key_id = $1 AND seq = $2",
                key_id,
                2,
            )
            .await;
        })
        .await;
    for reader in [&audited.olivia, &audited.olivia_elsewhere] {
        let err = refused(audited.audit(reader));
        assert!(
            err.contains(&format!(
                "the key server's audit log of key {} does not verify: record 2 does not hash to",
                audited.key_id
            )),
            "{err}"
        );
        assert!(err.contains("tell the key server's operator"), "{err}");
    }

    // The record put back, and deleted instead.
    let bob = audited.bob_fingerprint.clone();
    audited
        .rewrite(async |db, key_id| {
            let sql = format!("UPDATE audit SET actor = '{bob}' WHERE key_id = $1 AND seq = $2");
            change(db, &sql, key_id, 2).await;
            change(
                db,
                "DELETE FROM audit WHERE key_id = $1 AND seq = $2",
                key_id,
                2,
            )
            .await;
        })
        .await;
    for reader in [&audited.olivia, &audited.olivia_elsewhere] {
        let err = refused(audited.audit(reader));
        assert!(
            err.contains("the record at position 1 has seq 3, not 2: a record was deleted"),
            "{err}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_history_rewritten_whole_is_refused_by_a_home_that_saw_an_earlier_head() {
    let mut audited = Audited::new();
    ok(audited.audit(&audited.olivia));
    let seen_path = audited
        .olivia
        .home
        .join("audit")
        .join(LIST)
        .join(format!("{}.json", audited.key_id));
    let seen = std::fs::read(&seen_path).unwrap();

    // The operator hides Bob's first fetch: the record now names the server, and every hash
    // from there on is recomputed, so the chain is whole again (and the server signs its head).
    audited
        .rewrite(async |db, key_id| {
            change(
                db,
                "UPDATE audit SET actor = 'server' WHERE key_id = $1 AND seq = $2",
                key_id,
                2,
            )
            .await;
            let rows = sqlx::query(
                "SELECT seq, list, at, actor, action, outcome, detail FROM audit WHERE key_id = $1 ORDER BY seq",
            )
            .bind(key_id)
            .fetch_all(&mut *db)
            .await
            .unwrap();
            let mut hash = AuditHash::START;
            for row in rows {
                let seq: i64 = row.get("seq");
                let (list, actor, action, outcome): (String, String, String, String) = (
                    row.get("list"),
                    row.get("actor"),
                    row.get("action"),
                    row.get("outcome"),
                );
                let detail: Option<String> = row.get("detail");
                hash = hash.next(
                    seq as u64,
                    &AuditFields {
                        key_id,
                        list: &list,
                        at: row.get::<i64, _>("at") as u64,
                        actor: &actor,
                        action: &action,
                        outcome: &outcome,
                        detail: detail.as_deref(),
                    },
                );
                sqlx::query("UPDATE audit SET hash = $3 WHERE key_id = $1 AND seq = $2")
                    .bind(key_id)
                    .bind(seq)
                    .bind(hash.as_bytes().to_vec())
                    .execute(&mut *db)
                    .await
                    .unwrap();
            }
        })
        .await;
    // A home that never read this log has nothing to hold it to: it sees the rewritten one.
    let fooled = ok(audited.audit(&audited.olivia_elsewhere));
    assert_eq!(fooled.matches(" release released").count(), 2, "{fooled}");
    assert_eq!(
        fooled.matches(&audited.bob_fingerprint).count(),
        1,
        "{fooled}"
    );
    // Olivia's home saw the old head and refuses the new history, keeping the evidence.
    let err = refused(audited.audit(&audited.olivia));
    assert!(
        err.contains(&format!(
            "the key server's audit log of key {} rewrites history this home saw: the server signed seq 3 as",
            audited.key_id
        )),
        "{err}"
    );
    assert!(
        err.contains("an earlier record was changed or removed"),
        "{err}"
    );
    assert!(err.contains(seen_path.to_str().unwrap()), "{err}");
    assert_eq!(
        std::fs::read(&seen_path).unwrap(),
        seen,
        "the old head is kept"
    );

    // The operator deletes the records after the deposit altogether.
    audited
        .rewrite(async |db, key_id| {
            change(
                db,
                "DELETE FROM audit WHERE key_id = $1 AND seq = $2",
                key_id,
                3,
            )
            .await;
            change(
                db,
                "DELETE FROM audit WHERE key_id = $1 AND seq = $2",
                key_id,
                2,
            )
            .await;
        })
        .await;
    let err = refused(audited.audit(&audited.olivia));
    assert!(
        err.contains("its log ends at seq 1: records were deleted"),
        "{err}"
    );
    // The other home saw seq 3 of the rewritten history: to it, that is a deletion too.
    let err = refused(audited.audit(&audited.olivia_elsewhere));
    assert!(
        err.contains("its log ends at seq 1: records were deleted"),
        "{err}"
    );
}
