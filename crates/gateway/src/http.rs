//! Plain HTTP routes: health, readiness, metrics and, in dev mode, the chat page, the client
//! modules it imports and its tokens.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Response, StatusCode, header};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use switchboard_protocol::{UserId, UserRef};

use crate::app::App;

/// A response body: whole (most routes) or streamed (`/sse` on a connection hyper serves).
pub type Body = BoxBody<Bytes, std::convert::Infallible>;

/// A whole body.
pub fn whole(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed()
}

/// The dev-mode chat page: HTML and a module script on top of [`CLIENT_MODULES`].
const CHAT_PAGE: &str = include_str!("../assets/index.html");

/// A file of `assets/client/` as its path under `/client/` and its text.
macro_rules! client_module {
    ($file:literal) => {
        (
            concat!("/client/", $file),
            include_str!(concat!("../assets/client/", $file)),
        )
    };
}

/// The TypeScript client's build (`switchboard-client`), which the chat page imports from
/// `/client/index.js`: committed copies of `clients/typescript/dist`, refreshed with
/// `npm run assets` there (scripts/typescript-test.sh fails when they are stale).
const CLIENT_MODULES: [(&str, &str); 6] = [
    client_module!("index.js"),
    client_module!("client.js"),
    client_module!("codec.js"),
    client_module!("indexeddb.js"),
    client_module!("outbox.js"),
    client_module!("protocol.js"),
];

/// Lifetime of tokens handed out by the dev-mode page.
const DEV_TOKEN_TTL: Duration = Duration::from_secs(24 * 3_600);

pub fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    respond(status, "text/plain; charset=utf-8", body)
}

pub fn json(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    respond(status, "application/json", value.to_string())
}

/// A JSON error body `{"error": {"code", "message"}}` for refused requests.
pub fn error(status: StatusCode, code: &str, message: &str) -> Response<Body> {
    respond(status, "application/json", error_body(code, message))
}

/// The JSON of [`error`].
pub fn error_body(code: &str, message: &str) -> String {
    serde_json::json!({ "error": { "code": code, "message": message } }).to_string()
}

pub fn respond(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Body> {
    let mut response = Response::new(whole(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    response
}

/// Health and metrics routes; `None` when the path is not one of them.
pub fn admin_route(app: &App, path: &str) -> Option<Response<Body>> {
    Some(match path {
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" => match app.not_ready() {
            Some(why) => text(StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")),
            None => text(StatusCode::OK, "ready\n"),
        },
        "/metrics" => match &app.metrics {
            Some(handle) => respond(StatusCode::OK, "text/plain; version=0.0.4", handle.render()),
            None => text(StatusCode::NOT_FOUND, "metrics disabled\n"),
        },
        _ => return None,
    })
}

/// Dev-mode routes; `None` when not in dev mode or the path is not one of them.
pub fn dev_route(app: &Arc<App>, path: &str, query: Option<&str>) -> Option<Response<Body>> {
    let signer = app.dev_signer.as_ref()?;
    match path {
        "/" | "/index.html" => Some(respond(
            StatusCode::OK,
            "text/html; charset=utf-8",
            CHAT_PAGE,
        )),
        "/dev/token" => {
            let params = parse_query(query.unwrap_or_default());
            let user = params
                .iter()
                .find(|(k, _)| k == "user")
                .map(|(_, v)| v.as_str())
                .unwrap_or_default();
            let Ok(id) = UserId::parse(user) else {
                return Some(error(
                    StatusCode::BAD_REQUEST,
                    "INVALID_IDENTIFIER",
                    "user must be 1-64 characters of A-Z a-z 0-9 _ . - @",
                ));
            };
            let name = params
                .iter()
                .find(|(k, _)| k == "name")
                .map(|(_, v)| v.trim().to_owned())
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| id.to_string());
            Some(match signer.sign(&UserRef { id, name }, DEV_TOKEN_TTL) {
                Ok(token) => json(StatusCode::OK, &serde_json::json!({ "token": token })),
                Err(e) => {
                    tracing::error!(error = %e, "cannot sign dev token");
                    error(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "INTERNAL",
                        "cannot sign token",
                    )
                }
            })
        }
        _ => CLIENT_MODULES
            .iter()
            .find(|(module, _)| *module == path)
            .map(|(_, source)| respond(StatusCode::OK, "text/javascript; charset=utf-8", *source)),
    }
}

/// Decodes `a=1&b=x%20y` (with `+` as space). Malformed escapes are kept literally.
pub(crate) fn parse_query(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

pub(crate) fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| bytes.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match (escaped, bytes[i]) {
            (Some(b), _) => {
                out.push(b);
                i += 3;
                continue;
            }
            (None, b'+') => out.push(b' '),
            (None, b) => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_strings_decode() {
        assert_eq!(
            parse_query("user=al%40ice&name=Alice+Smith&bad=%zz&x"),
            vec![
                ("user".into(), "al@ice".into()),
                ("name".into(), "Alice Smith".into()),
                ("bad".into(), "%zz".into()),
                ("x".into(), String::new()),
            ]
        );
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%4"), "%4");
    }
}
