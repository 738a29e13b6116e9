//! JSON over HTTP as the tests send it to the servers.

use serde_json::Value;

/// POSTs `body` as JSON (with `token` as bearer token), returning the status and the JSON
/// body (null if there is none); an error only if no answer came.
pub async fn post_json(
    http: &reqwest::Client,
    url: String,
    body: &impl serde::Serialize,
    token: Option<&str>,
) -> Result<(u16, Value), reqwest::Error> {
    let mut request = http.post(url).json(body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await?;
    let status = response.status().as_u16();
    Ok((status, response.json().await.unwrap_or(Value::Null)))
}

/// The code of a JSON error answer (`{"error": {"code": ...}}`).
pub fn error_code(body: &Value) -> &str {
    body["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("not an error body: {body}"))
}
