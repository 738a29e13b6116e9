//! Invariants of the crate graph, checked with `cargo metadata`:
//! - the servers cannot decrypt a post: `hushlist-envelope` (the only crate that decrypts a
//!   message body) is not among their runtime dependencies, direct or transitive;
//! - the core does no I/O: no async runtime, network, HTTP or database crate beneath it;
//! - only `hushlist-store` knows SQL, and only the server crates (and `hushlist-http`, the
//!   HTTP pieces they share) serve HTTP;
//! - the `hushlist` command is glue: no direct dependency on what the libraries wrap
//!   (OpenPGP, SQL, HTTP, SMTP submission);
//! - servers are called through `hushlist-remote` only (the load generator aside), which
//!   sits below the decrypting crate and the store, so the list server calls the key
//!   server with the same declared endpoints as the client.
//! - the test helpers (`hushlist-testkit`) are only ever a dev-dependency: no program ships them.

use std::collections::{BTreeSet, HashMap};
use std::process::Command;

use serde_json::Value;

/// Runtime (normal and build) dependencies of each workspace package, by package name.
fn runtime_graph() -> HashMap<String, Vec<String>> {
    let output = Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--locked"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo metadata runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let metadata: Value = serde_json::from_slice(&output.stdout).unwrap();
    let name_of: HashMap<&str, &str> = metadata["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["id"].as_str().unwrap(), p["name"].as_str().unwrap()))
        .collect();
    metadata["resolve"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|node| {
            let deps = node["deps"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|dep| {
                    dep["dep_kinds"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|k| k["kind"].is_null() || k["kind"] == "build")
                })
                .map(|dep| name_of[dep["pkg"].as_str().unwrap()].to_owned())
                .collect();
            (name_of[node["id"].as_str().unwrap()].to_owned(), deps)
        })
        .collect()
}

fn closure(graph: &HashMap<String, Vec<String>>, root: &str) -> BTreeSet<String> {
    assert!(graph.contains_key(root), "{root} is not in the workspace");
    let mut seen = BTreeSet::new();
    let mut stack = vec![root.to_owned()];
    while let Some(name) = stack.pop() {
        for dep in &graph[&name] {
            if seen.insert(dep.clone()) {
                stack.push(dep.clone());
            }
        }
    }
    seen
}

#[test]
fn servers_cannot_reach_the_decrypting_crate() {
    let graph = runtime_graph();
    for server in ["hushlist-keyserver", "hushlist-listserver", "hushlist-http"] {
        let deps = closure(&graph, server);
        assert!(
            deps.contains("hushlist-core"),
            "{server} should build on the core"
        );
        assert!(
            !deps.contains("hushlist-envelope"),
            "{server} must not depend on hushlist-envelope (it could decrypt posts)"
        );
    }
    // The check is not vacuous: the command does reach the decrypting crate.
    assert!(closure(&graph, "hushlist").contains("hushlist-envelope"));
}

/// Workspace crates that name `dependency` directly as a runtime dependency.
fn direct_users(graph: &HashMap<String, Vec<String>>, dependency: &str) -> BTreeSet<String> {
    graph
        .iter()
        .filter(|(name, deps)| name.starts_with("hushlist") && deps.iter().any(|d| d == dependency))
        .map(|(name, _)| name.clone())
        .collect()
}

#[test]
fn only_the_store_knows_sql_and_only_servers_speak_http() {
    let graph = runtime_graph();
    assert_eq!(
        direct_users(&graph, "sqlx"),
        BTreeSet::from(["hushlist-store".to_owned()])
    );
    let http_servers = direct_users(&graph, "axum");
    assert_eq!(
        http_servers,
        BTreeSet::from(
            ["hushlist-http", "hushlist-keyserver", "hushlist-listserver"].map(str::to_owned)
        )
    );
}

#[test]
fn servers_are_called_through_the_remote_crate_only() {
    let graph = runtime_graph();
    let remote = closure(&graph, "hushlist-remote");
    for above in [
        "hushlist-envelope",
        "hushlist-store",
        "hushlist-http",
        "axum",
    ] {
        assert!(
            !remote.contains(above),
            "hushlist-remote must not depend on {above}"
        );
    }
    for caller in ["hushlist-client", "hushlist-listserver"] {
        assert!(
            graph[caller].iter().any(|d| d == "hushlist-remote"),
            "{caller} should call the servers through hushlist-remote"
        );
    }
    // The testkit posts JSON in tests only; it is no crate's runtime dependency (checked
    // by the_testkit_is_no_runtime_dependency_of_any_crate).
    assert_eq!(
        direct_users(&graph, "reqwest"),
        BTreeSet::from(
            ["hushlist-bench", "hushlist-remote", "hushlist-testkit"].map(str::to_owned)
        )
    );
}

/// The `hushlist` command is glue: it reaches posts, keys and servers only through the client
/// library (and starts the servers through their own crates), never by itself.
#[test]
fn the_command_uses_the_libraries_not_what_they_wrap() {
    let graph = runtime_graph();
    for wrapped in [
        "hushlist-envelope",
        "hushlist-store",
        "hushlist-remote",
        "pgp",
        "sqlx",
        "reqwest",
        "axum",
        "mail-send",
    ] {
        assert!(
            !graph["hushlist"].iter().any(|d| d == wrapped),
            "the hushlist command depends on {wrapped} directly; go through hushlist-client or a server crate"
        );
    }
}

#[test]
fn the_core_pulls_in_no_io_crates() {
    let graph = runtime_graph();
    let deps = closure(&graph, "hushlist-core");
    let io_crates = [
        "tokio",
        "async-std",
        "mio",
        "hyper",
        "reqwest",
        "axum",
        "sqlx",
        "rusqlite",
        "lettre",
        "socket2",
    ];
    let found: Vec<_> = io_crates.iter().filter(|c| deps.contains(**c)).collect();
    assert!(
        found.is_empty(),
        "the core depends on I/O crates: {found:?}"
    );
}

#[test]
fn the_testkit_is_no_runtime_dependency_of_any_crate() {
    let graph = runtime_graph();
    assert!(
        graph.contains_key("hushlist-testkit"),
        "hushlist-testkit is not in the workspace"
    );
    let users: BTreeSet<_> = graph
        .iter()
        .filter(|(_, deps)| deps.iter().any(|d| d == "hushlist-testkit"))
        .map(|(name, _)| name.clone())
        .collect();
    assert!(
        users.is_empty(),
        "only [dev-dependencies] may name hushlist-testkit: {users:?}"
    );
}
