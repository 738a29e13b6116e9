//! HTTP pieces both servers share: [`ApiError`] (an HTTP status, a stable code and a message
//! as a JSON body), request-body and path parsing, and the signed roster endpoints, which
//! the key server and the list server serve alike so that each verifies every op itself;
//! and how both serve HTTP: connection limits, a header deadline, TLS; and how both check
//! their options.

pub mod connections;
pub mod endpoints;
mod error;
pub mod files;
pub mod options;
pub mod requests;
pub mod rosters;
pub mod tls;
pub mod tokens;

use axum::Router;
use axum::body::Bytes;
use axum::extract::DefaultBodyLimit;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode, header};
use serde::de::DeserializeOwned;
use tower_http::timeout::TimeoutLayer;

pub use error::{ApiError, check_token};

/// Largest request body either server takes: a grants call for 10,000 recipients is about
/// 0.5 MB of JSON.
pub const MAX_BODY_BYTES: usize = 2 * 1024 * 1024;

/// Longest a request may take before it is answered 408.
pub const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// What every endpoint of both servers shares: a JSON 404 for unknown paths and 405 for
/// unknown methods, the body size limit (413) and the request timeout (408).
pub fn with_common_layers<S: Clone + Send + Sync + 'static>(routes: Router<S>) -> Router<S> {
    routes
        .fallback(|| async {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "no_such_endpoint",
                "no such endpoint",
            )
        })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this endpoint does not take that method",
            )
        })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            REQUEST_TIMEOUT,
        ))
}

/// Parses a JSON body, telling a too-large body (413) from a malformed one (400).
pub fn json<T: DeserializeOwned>(body: Result<Bytes, BytesRejection>) -> Result<T, ApiError> {
    let bytes = body.map_err(|rejection| match rejection.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::too_large(format!(
            "request bodies are limited to {MAX_BODY_BYTES} bytes"
        )),
        _ => ApiError::malformed(rejection.body_text()),
    })?;
    serde_json::from_slice(&bytes).map_err(ApiError::malformed)
}

/// The token of an `Authorization: Bearer` header.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
}

/// Sends every server's logs to stderr at `info` (or as `RUST_LOG` says): human-readable
/// text, or one JSON object a line with `json` (for log collectors). The standalone daemons
/// and `hushlist serve` all call this, so they log alike.
pub fn init_logs(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only for a person watching a terminal, not in a log file.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    if json {
        logs.json().init();
    } else {
        logs.init();
    }
}

/// Prints a line a supervisor or test reads to learn where a server listens. Errors are
/// ignored: a reader that stopped listening (a closed pipe) must not bring the server down.
pub fn announce(line: &str) {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{line}").and_then(|()| stdout.flush());
}
