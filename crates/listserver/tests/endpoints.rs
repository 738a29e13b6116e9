//! The routes of both servers are exactly the declared endpoints: every declaration is
//! answered on the server that serves it, with its method, and on no other server or
//! method (the fallbacks answer `no_such_endpoint` and `method_not_allowed`).

mod common;

use common::*;
use hushlist_core::api::endpoints::{ALL, Method, ServedBy};
use serde_json::Value;

/// A declared path with sample parameters: a list no server knows, a well-formed key id.
fn sample(path: &str) -> String {
    path.replace("{list}", "nobody@example.org")
        .replace("{key_id}", "0123456789abcdef0123456789abcdef")
        .replace("{token}", "not-a-token")
}

/// The error code a server answers `method` at `path` with, if it is one of the fallbacks'.
async fn fallback_code(
    http: &reqwest::Client,
    base: &str,
    method: Method,
    path: &str,
) -> Option<String> {
    let url = format!("{base}{}", sample(path));
    let request = match method {
        Method::Get => http.get(&url),
        Method::Post => http.post(&url).body("{}"),
    };
    let body: Value = request
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap_or_default();
    let code = body["error"]["code"].as_str().unwrap_or_default();
    ["no_such_endpoint", "method_not_allowed"]
        .contains(&code)
        .then(|| code.to_owned())
}

#[tokio::test]
async fn each_server_routes_exactly_its_declared_endpoints() {
    let dir = tempfile::tempdir().unwrap();
    let key_server_url = start_key_server(dir.path()).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let list_server_url = format!("http://{}", listener.local_addr().unwrap());
    let app = hushlist_listserver::http::router(list_server(dir.path()).await);
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let http = reqwest::Client::new();
    for (server, base) in [
        (ServedBy::KeyServer, &key_server_url),
        (ServedBy::ListServer, &list_server_url),
    ] {
        for declared in ALL {
            for method in [Method::Get, Method::Post] {
                let routed = declared.served_by.includes(server)
                    && ALL.iter().any(|d| {
                        d.path == declared.path
                            && d.method == method
                            && d.served_by.includes(server)
                    });
                let fallback = fallback_code(&http, base, method, declared.path).await;
                assert_eq!(
                    fallback.is_none(),
                    routed,
                    "{server:?} server, {} {} ({}): answered {fallback:?}",
                    method.as_str(),
                    declared.path,
                    declared.name,
                );
            }
        }
    }
}
