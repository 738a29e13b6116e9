//! With a certificate configured, the key server speaks HTTPS (rustls) and nothing else.

mod common;

use common::spawn_binary;
use hushlist_peers::test_ca_and_leaf;

#[tokio::test]
async fn serves_https_with_the_configured_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = test_ca_and_leaf(dir.path());
    let data = dir.path().join("data");
    let (mut child, base) = spawn_binary(
        &data,
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
    );
    assert!(base.starts_with("https://127.0.0.1:"), "{base}");

    let trusted = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&std::fs::read(&ca).unwrap()).unwrap())
        .build()
        .unwrap();
    let response = trusted.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 200);

    // An untrusting client refuses the self-signed certificate; plain HTTP gets no answer.
    let untrusting = reqwest::get(format!("{base}/healthz")).await.unwrap_err();
    assert!(
        format!("{untrusting:?}").contains("UnknownIssuer"),
        "refused for its certificate: {untrusting:?}"
    );
    let plain = base.replace("https://", "http://");
    let plain = reqwest::Client::new()
        .get(format!("{plain}/healthz"))
        .timeout(std::time::Duration::from_secs(5))
        .send()
        .await
        .unwrap_err();
    assert!(
        !plain.is_timeout() && plain.status().is_none(),
        "plain HTTP is cut off, not answered or left hanging: {plain:?}"
    );

    child.kill().unwrap();
    child.wait().unwrap();
}
