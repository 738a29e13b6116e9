//! With a certificate configured, the key server speaks HTTPS (rustls) and nothing else.

mod common;

use std::process::Command;

use common::spawn_binary;

#[tokio::test]
async fn serves_https_with_the_configured_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
    std::fs::write(path("leaf.ext"), "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n").unwrap();
    let (ca_key, ca, key, csr, cert) = (
        path("ca.key"),
        path("ca.pem"),
        path("key.pem"),
        path("leaf.csr"),
        path("cert.pem"),
    );
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    openssl(
        &[
            &[
                "req",
                "-x509",
                "-days",
                "1",
                "-subj",
                "/CN=hushlist test CA",
                "-keyout",
                &ca_key,
                "-out",
                &ca,
            ][..],
            &ec,
        ]
        .concat(),
    );
    openssl(
        &[
            &[
                "req",
                "-subj",
                "/CN=localhost",
                "-keyout",
                &key,
                "-out",
                &csr,
            ][..],
            &ec,
        ]
        .concat(),
    );
    openssl(&[
        "x509",
        "-req",
        "-days",
        "1",
        "-CAcreateserial",
        "-in",
        &csr,
        "-CA",
        &ca,
        "-CAkey",
        &ca_key,
        "-out",
        &cert,
        "-extfile",
        &path("leaf.ext"),
    ]);

    let data = dir.path().join("data");
    let (mut child, base) = spawn_binary(&data, &["--tls-cert", &cert, "--tls-key", &key]);
    assert!(base.starts_with("https://127.0.0.1:"), "{base}");

    let trusted = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&std::fs::read(&ca).unwrap()).unwrap())
        .build()
        .unwrap();
    let response = trusted.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 200);

    // An untrusting client refuses the self-signed certificate; plain HTTP gets no answer.
    assert!(reqwest::get(format!("{base}/healthz")).await.is_err());
    let plain = base.replace("https://", "http://");
    assert!(
        reqwest::Client::new()
            .get(format!("{plain}/healthz"))
            .timeout(std::time::Duration::from_secs(5))
            .send()
            .await
            .is_err()
    );

    child.kill().unwrap();
    child.wait().unwrap();
}

/// Runs openssl (a test CA and a leaf certificate for 127.0.0.1).
fn openssl(args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl must be installed (.ci/run installs it)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
