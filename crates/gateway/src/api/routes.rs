//! The server API's routes: a request's method and path to a [`Route`] with its ids checked.
//! [`ROUTES`] lists them for the OpenAPI document, which a test holds to this table.

use http::Method;
use switchboard_protocol::{ErrorCode, RoomId, UserId};

use super::ApiError;
use crate::http::percent_decode;

/// Every route, as the OpenAPI document names it.
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/api/v1/openapi.json"),
    ("PUT", "/api/v1/rooms/{roomId}"),
    ("POST", "/api/v1/rooms/{roomId}/messages"),
    ("GET", "/api/v1/rooms/{roomId}/messages"),
    ("POST", "/api/v1/rooms/{roomId}/events"),
    ("GET", "/api/v1/rooms/{roomId}/presence"),
    ("PUT", "/api/v1/rooms/{roomId}/members/{userId}"),
    ("DELETE", "/api/v1/rooms/{roomId}/members/{userId}"),
    ("POST", "/api/v1/users/{userId}/notifications"),
    ("GET", "/api/v1/users/{userId}/presence"),
    ("DELETE", "/api/v1/users/{userId}/connections"),
    ("POST", "/api/v1/broadcast"),
    ("GET", "/api/v1/stats"),
    ("PUT", "/api/v1/bans/{userId}"),
    ("DELETE", "/api/v1/bans/{userId}"),
    ("GET", "/api/v1/webhooks/failed"),
    ("POST", "/api/v1/webhooks/failed/{webhookId}/retry"),
];

/// A request the API understands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    OpenApi,
    PutRoom(RoomId),
    PostMessage(RoomId),
    GetMessages(RoomId),
    PostEvent(RoomId),
    RoomPresence(RoomId),
    PutMember(RoomId, UserId),
    DeleteMember(RoomId, UserId),
    PostNotification(UserId),
    UserPresence(UserId),
    DeleteConnections(UserId),
    Broadcast,
    Stats,
    PutBan(UserId),
    DeleteBan(UserId),
    FailedWebhooks,
    /// A failed webhook's id (`webhook-id`).
    RetryWebhook(String),
}

impl Route {
    /// The route's `operationId` in the OpenAPI document; it labels the request metric.
    pub fn operation(&self) -> &'static str {
        match self {
            Route::OpenApi => "openapi",
            Route::PutRoom(_) => "putRoom",
            Route::PostMessage(_) => "postMessage",
            Route::GetMessages(_) => "getMessages",
            Route::PostEvent(_) => "postEvent",
            Route::RoomPresence(_) => "roomPresence",
            Route::PutMember(..) => "putMember",
            Route::DeleteMember(..) => "deleteMember",
            Route::PostNotification(_) => "postNotification",
            Route::UserPresence(_) => "userPresence",
            Route::DeleteConnections(_) => "disconnectUser",
            Route::Broadcast => "broadcast",
            Route::Stats => "stats",
            Route::PutBan(_) => "putBan",
            Route::DeleteBan(_) => "deleteBan",
            Route::FailedWebhooks => "failedWebhooks",
            Route::RetryWebhook(_) => "retryWebhook",
        }
    }
}

/// The route for `method` and `path` (which starts with `/api/v1/`): 404 for a path the API
/// does not have, 405 for a method it does not take there, 400 for an id that breaks the
/// identifier rules.
pub fn route(method: &Method, path: &str) -> Result<Route, ApiError> {
    let rest = path.strip_prefix("/api/v1/").ok_or_else(not_found)?;
    let segments: Vec<String> = rest.split('/').map(percent_decode).collect();
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    let (get, put, post, delete) = (
        method == Method::GET,
        method == Method::PUT,
        method == Method::POST,
        method == Method::DELETE,
    );
    let found = match segments.as_slice() {
        ["openapi.json"] => get.then_some(Ok(Route::OpenApi)),
        ["broadcast"] => post.then_some(Ok(Route::Broadcast)),
        ["stats"] => get.then_some(Ok(Route::Stats)),
        ["rooms", room] => put.then(|| Ok(Route::PutRoom(room_id(room)?))),
        ["rooms", room, "messages"] => match () {
            () if post => Some(room_id(room).map(Route::PostMessage)),
            () if get => Some(room_id(room).map(Route::GetMessages)),
            () => None,
        },
        ["rooms", room, "events"] => post.then(|| room_id(room).map(Route::PostEvent)),
        ["rooms", room, "presence"] => get.then(|| room_id(room).map(Route::RoomPresence)),
        ["rooms", room, "members", user] => match () {
            () if put => Some(room_id(room).and_then(|r| Ok(Route::PutMember(r, user_id(user)?)))),
            () if delete => {
                Some(room_id(room).and_then(|r| Ok(Route::DeleteMember(r, user_id(user)?))))
            }
            () => None,
        },
        ["users", user, "notifications"] => {
            post.then(|| user_id(user).map(Route::PostNotification))
        }
        ["users", user, "presence"] => get.then(|| user_id(user).map(Route::UserPresence)),
        ["users", user, "connections"] => {
            delete.then(|| user_id(user).map(Route::DeleteConnections))
        }
        ["webhooks", "failed"] => get.then_some(Ok(Route::FailedWebhooks)),
        ["webhooks", "failed", id, "retry"] => {
            post.then(|| webhook_id(id).map(Route::RetryWebhook))
        }
        ["bans", user] => match () {
            () if put => Some(user_id(user).map(Route::PutBan)),
            () if delete => Some(user_id(user).map(Route::DeleteBan)),
            () => None,
        },
        _ => return Err(not_found()),
    };
    found.unwrap_or_else(|| {
        Err(ApiError::new(
            http::StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::NotFound,
            format!("{path} does not take {method}"),
        ))
    })
}

fn not_found() -> ApiError {
    ApiError::new(
        http::StatusCode::NOT_FOUND,
        ErrorCode::NotFound,
        "no such server API route (see /api/v1/openapi.json)",
    )
}

fn room_id(segment: &str) -> Result<RoomId, ApiError> {
    RoomId::parse(segment)
        .map_err(|e| ApiError::refused(ErrorCode::InvalidIdentifier, e.to_string()))
}

/// A webhook id as Switchboard makes them: `evt_` and 32 hex digits.
fn webhook_id(segment: &str) -> Result<String, ApiError> {
    let valid = segment
        .strip_prefix("evt_")
        .is_some_and(|hex| hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_hexdigit()));
    if valid {
        Ok(segment.to_owned())
    } else {
        Err(ApiError::refused(
            ErrorCode::InvalidIdentifier,
            "a webhook id is evt_ and 32 hex digits",
        ))
    }
}

fn user_id(segment: &str) -> Result<UserId, ApiError> {
    UserId::parse(segment)
        .map_err(|e| ApiError::refused(ErrorCode::InvalidIdentifier, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A concrete path for a template: sample ids in place of its parameters.
    fn example(template: &str) -> String {
        template
            .replace("{roomId}", "general")
            .replace("{userId}", "alice")
            .replace("{webhookId}", "evt_0192f0c1a2b37c4d8e9f0a1b2c3d4e5f")
    }

    #[test]
    fn every_listed_route_is_served_and_only_with_its_method() {
        for (method, template) in ROUTES {
            let method: Method = method.parse().unwrap();
            let path = example(template);
            assert!(route(&method, &path).is_ok(), "{method} {path}");
            for other in [Method::GET, Method::PUT, Method::POST, Method::DELETE] {
                if other != method && !ROUTES.iter().any(|(m, t)| *m == other && *t == *template) {
                    let refused = route(&other, &path).unwrap_err();
                    assert_eq!(refused.status, http::StatusCode::METHOD_NOT_ALLOWED);
                }
            }
        }
    }

    #[test]
    fn each_route_is_named_by_its_operation_id() {
        let doc: serde_json::Value = serde_json::from_str(super::super::OPENAPI).unwrap();
        for (method, template) in ROUTES {
            let route = route(&method.parse().unwrap(), &example(template)).unwrap();
            assert_eq!(
                doc["paths"][template][method.to_lowercase()]["operationId"],
                route.operation(),
                "{method} {template}"
            );
        }
    }

    #[test]
    fn ids_are_decoded_and_checked() {
        assert_eq!(
            route(&Method::PUT, "/api/v1/rooms/general/members/al%40ice").unwrap(),
            Route::PutMember(
                RoomId::parse("general").unwrap(),
                UserId::parse("al@ice").unwrap()
            )
        );
        let refused = route(&Method::PUT, "/api/v1/rooms/bad%20id").unwrap_err();
        assert_eq!(
            (refused.status, refused.code),
            (http::StatusCode::BAD_REQUEST, ErrorCode::InvalidIdentifier)
        );
        for missing in [
            "/api/v1/",
            "/api/v1/rooms",
            "/api/v1/rooms/a/b",
            "/api/v2/rooms/a",
        ] {
            let refused = route(&Method::GET, missing).unwrap_err();
            assert_eq!(refused.status, http::StatusCode::NOT_FOUND, "{missing}");
        }
    }
}
