//! One function per server API route. Each acts through [`crate::actions`], the rules a session
//! follows too, and answers JSON.

use bytes::Bytes;
use http::{Response, StatusCode};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use switchboard_protocol::{
    CloseCode, ErrorCode, MessageKind, Role, RoomId, RoomKind, ServerFrame, UserId, UserRef,
    is_event_name,
};

use super::routes::Route;
use super::{ApiError, OPENAPI};
use crate::actions;
use crate::app::App;
use crate::auth::display_name;
use crate::broker::{Envelope, Event, Topic};
use crate::http::{self as responses, Body};
use crate::metrics;
use crate::presence::{ClusterStats, NodeStats};
use crate::store::{Appended, Ban, NewMessage, NewNotification, RoomSettings};
use crate::wall_clock::now_millis;

/// Longest ban: a hundred years.
const MAX_BAN_MS: u64 = 100 * 366 * 24 * 3_600 * 1_000;

/// Longest notification title, in characters.
const MAX_TITLE_CHARS: usize = 200;

/// A request, checked up to its body.
pub struct Request {
    pub route: Route,
    pub query: String,
    pub idempotency_key: Option<String>,
    pub body: Bytes,
}

type Answer = Result<Response<Body>, ApiError>;

pub async fn answer(app: &App, req: Request) -> Answer {
    match req.route {
        Route::OpenApi => Ok(responses::respond(
            StatusCode::OK,
            "application/json",
            OPENAPI,
        )),
        Route::PutRoom(room) => put_room(app, room, json_body(&req.body)?).await,
        Route::PostMessage(room) => {
            post_message(app, room, json_body(&req.body)?, req.idempotency_key).await
        }
        Route::GetMessages(room) => get_messages(app, room, &req.query).await,
        Route::PostEvent(room) => post_event(app, room, json_body(&req.body)?).await,
        Route::Broadcast => broadcast(app, json_body(&req.body)?, req.idempotency_key).await,
        Route::Stats => stats(app).await,
        Route::RoomPresence(room) => room_presence(app, room).await,
        Route::PutMember(room, user) => {
            put_member(app, room, user, optional_body(&req.body)?).await
        }
        Route::DeleteMember(room, user) => delete_member(app, room, user).await,
        Route::PostNotification(user) => post_notification(app, user, json_body(&req.body)?).await,
        Route::UserPresence(user) => user_presence(app, user).await,
        Route::DeleteConnections(user) => disconnect(app, user, CloseCode::Disconnected).await,
        Route::PutBan(user) => put_ban(app, user, json_body(&req.body)?).await,
        Route::DeleteBan(user) => delete_ban(app, user).await,
        Route::FailedWebhooks => failed_webhooks(app, &req.query).await,
        Route::RetryWebhook(id) => retry_webhook(app, &id).await,
    }
}

/// Someone named by the app's backend: a user id and, optionally, a display name.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Sender {
    id: UserId,
    #[serde(default)]
    name: Option<String>,
}

impl Sender {
    /// The user, or the system when none is named. No token carries the system's id.
    fn or_system(sender: Option<Self>) -> Result<UserRef, ApiError> {
        match sender {
            None => Ok(actions::system_user()),
            Some(Sender { id, .. }) if id.as_str() == actions::SYSTEM_USER_ID => {
                Ok(actions::system_user())
            }
            Some(Sender { id, name }) => Ok(UserRef {
                name: display_name(name.as_deref(), &id),
                id,
            }),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct PutRoom {
    #[serde(default)]
    name: Option<String>,
    kind: RoomKind,
}

async fn put_room(app: &App, room: RoomId, body: PutRoom) -> Answer {
    if room.is_direct() {
        return Err(ApiError::refused(
            ErrorCode::InvalidIdentifier,
            "room ids starting with \"dm:\" are direct-message rooms, made by dm:send",
        ));
    }
    if !matches!(
        body.kind,
        RoomKind::Public | RoomKind::Private | RoomKind::Feed
    ) {
        return Err(ApiError::refused(
            ErrorCode::InvalidField,
            "kind must be \"public\", \"private\" or \"feed\"",
        ));
    }
    let name = actions::room_name(&room, body.name.as_deref())?;
    let (record, created) = app
        .store
        .put_room(RoomSettings {
            id: room.clone(),
            name,
            kind: body.kind,
            created_by: actions::system_user().id,
        })
        .await?;
    if !created {
        // Sessions following the room hear whether they may still publish there.
        app.publish(Envelope {
            topics: vec![Topic::Room(room.clone())],
            event: Event::RoomKind {
                room,
                feed: body.kind == RoomKind::Feed,
            },
        })
        .await;
    }
    let status = created_or_ok(created);
    Ok(responses::json(
        status,
        &json!({ "room": record.info, "created": created }),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct PostMessage {
    content: String,
    #[serde(default)]
    kind: MessageKind,
    #[serde(default)]
    from: Option<Sender>,
    #[serde(default)]
    idempotency_key: Option<String>,
}

/// A message the API was asked to publish, checked as a client's `message:send` is, to store
/// in one room or several.
struct CheckedMessage {
    sender: UserRef,
    kind: MessageKind,
    content: String,
    key: String,
}

impl PostMessage {
    fn check(self, app: &App, header_key: Option<String>) -> Result<CheckedMessage, ApiError> {
        let key = idempotency_key(self.idempotency_key, header_key)?;
        let content = actions::check_message(&app.config, self.content, &key)
            .map_err(|e| rename_client_msg_id(e.into()))?;
        Ok(CheckedMessage {
            sender: Sender::or_system(self.from)?,
            kind: self.kind,
            content,
            key,
        })
    }
}

impl CheckedMessage {
    fn for_room(&self, room: RoomId) -> NewMessage {
        NewMessage {
            room,
            sender: self.sender.clone(),
            kind: self.kind,
            content: self.content.clone(),
            client_msg_id: self.key.clone(),
        }
    }
}

async fn post_message(
    app: &App,
    room: RoomId,
    body: PostMessage,
    header_key: Option<String>,
) -> Answer {
    let message = body.check(app, header_key)?;
    let appended = app.store.append(message.for_room(room)).await?;
    let status = created_or_ok(!appended.duplicate);
    Ok(responses::json(status, &announce(app, appended).await))
}

/// The key a message is stored under: the body's or the header's (they must agree), or a new
/// one, so that a retry without a key is stored again.
fn idempotency_key(body: Option<String>, header: Option<String>) -> Result<String, ApiError> {
    match (body, header) {
        (Some(a), Some(b)) if a != b => Err(ApiError::refused(
            ErrorCode::InvalidField,
            "idempotencyKey and the Idempotency-Key header differ",
        )),
        (Some(key), _) | (None, Some(key)) => Ok(key),
        (None, None) => Ok(format!("api-{}", uuid::Uuid::now_v7())),
    }
}

/// Publishes a stored message and describes it for the answer.
async fn announce(app: &App, appended: Appended) -> Value {
    let message = appended.message;
    if !appended.duplicate {
        metrics::message_stored();
    }
    let answer = json!({
        "id": message.message_id,
        "roomId": message.room_id,
        "seq": message.seq,
        "createdAt": message.created_at,
        "duplicate": appended.duplicate,
    });
    // Published again when a duplicate, as for a client's retry: the first attempt may have
    // been stored without being published.
    actions::publish_message(app, message, None).await;
    answer
}

/// Most rooms and users one broadcast may name.
pub const MAX_BROADCAST_TARGETS: usize = 1_000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Broadcast {
    #[serde(default)]
    rooms: Vec<RoomId>,
    #[serde(default)]
    users: Vec<UserId>,
    #[serde(default)]
    message: Option<PostMessage>,
    #[serde(default)]
    event: Option<PostEvent>,
}

async fn broadcast(app: &App, mut body: Broadcast, header_key: Option<String>) -> Answer {
    body.rooms.sort_unstable();
    body.rooms.dedup();
    body.users.sort_unstable();
    body.users.dedup();
    let targets = body.rooms.len() + body.users.len();
    if targets == 0 || targets > MAX_BROADCAST_TARGETS {
        return Err(ApiError::refused(
            ErrorCode::InvalidField,
            format!("name 1-{MAX_BROADCAST_TARGETS} rooms and users in all"),
        ));
    }
    match (body.message, body.event) {
        (Some(message), None) if body.users.is_empty() => {
            broadcast_message(app, body.rooms, message, header_key).await
        }
        (Some(_), None) => Err(ApiError::refused(
            ErrorCode::InvalidField,
            "a message goes to rooms; send users an event or a notification",
        )),
        (None, Some(event)) => broadcast_event(app, body.rooms, body.users, event).await,
        _ => Err(ApiError::refused(
            ErrorCode::InvalidField,
            "give a message or an event, not both",
        )),
    }
}

/// One message into each room, stored together (one commit on PostgreSQL); answered per room.
async fn broadcast_message(
    app: &App,
    rooms: Vec<RoomId>,
    body: PostMessage,
    header_key: Option<String>,
) -> Answer {
    let message = body.check(app, header_key)?;
    let messages = rooms
        .iter()
        .map(|room| message.for_room(room.clone()))
        .collect();
    let mut results = Vec::with_capacity(rooms.len());
    for (room, answer) in rooms.iter().zip(app.store.append_many(messages).await) {
        results.push(match answer {
            Ok(appended) => announce(app, appended).await,
            Err(error) => {
                let error = ApiError::from(error);
                json!({
                    "roomId": room,
                    "error": { "code": error.code.as_str(), "message": error.message },
                })
            }
        });
    }
    Ok(responses::json(
        StatusCode::OK,
        &json!({ "messages": results }),
    ))
}

/// One event to each room's connections and each user's, at most once.
async fn broadcast_event(
    app: &App,
    rooms: Vec<RoomId>,
    users: Vec<UserId>,
    body: PostEvent,
) -> Answer {
    actions::check_event(&app.config, &body.event, &body.data)?;
    let from = Sender::or_system(body.from)?;
    let counts = json!({ "rooms": rooms.len(), "users": users.len() });
    for room in rooms {
        let frame = ServerFrame::RoomEvent {
            room_id: room.clone(),
            event: body.event.clone(),
            data: body.data.clone(),
            from: from.clone(),
        };
        actions::relay_to_room(app, room, frame, None).await;
    }
    if !users.is_empty() {
        // One envelope: a connection is reached once, whichever of the users it belongs to.
        let frame = ServerFrame::UserEvent {
            event: body.event,
            data: body.data,
            from,
        };
        app.publish(Envelope::frame(
            users.into_iter().map(Topic::User).collect(),
            frame,
        ))
        .await;
    }
    Ok(responses::json(StatusCode::ACCEPTED, &counts))
}

/// The message checks speak of `clientMsgId`; through the API it is the idempotency key.
fn rename_client_msg_id(mut error: ApiError) -> ApiError {
    error.message = error.message.replace("clientMsgId", "the idempotency key");
    error
}

async fn get_messages(app: &App, room: RoomId, query: &str) -> Answer {
    let (mut before, mut after, mut limit) = (None, None, None);
    for (name, value) in responses::parse_query(query) {
        let number = || {
            value.parse::<u64>().map_err(|_| {
                ApiError::refused(
                    ErrorCode::InvalidField,
                    format!("{name} must be a non-negative integer"),
                )
            })
        };
        match name.as_str() {
            "before" => before = Some(number()?),
            "after" => after = Some(number()?),
            "limit" => limit = Some(u32::try_from(number()?).unwrap_or(u32::MAX)),
            _ => {
                return Err(ApiError::refused(
                    ErrorCode::InvalidField,
                    format!("unknown query parameter {name}: use before, after or limit"),
                ));
            }
        }
    }
    if app.store.room(&room).await?.is_none() {
        return Err(room_not_found(&room));
    }
    let (messages, has_more) = actions::history_page(app, &room, before, after, limit)
        .await
        .map_err(|e| {
            let mut e = ApiError::from(e);
            e.message = e
                .message
                .replace("beforeSeq", "before")
                .replace("afterSeq", "after");
            e
        })?;
    Ok(responses::json(
        StatusCode::OK,
        &json!({ "roomId": room, "messages": messages, "hasMore": has_more }),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PostEvent {
    event: String,
    #[serde(default)]
    data: Value,
    #[serde(default)]
    from: Option<Sender>,
}

async fn post_event(app: &App, room: RoomId, body: PostEvent) -> Answer {
    actions::check_event(&app.config, &body.event, &body.data)?;
    if app.store.room(&room).await?.is_none() {
        return Err(room_not_found(&room));
    }
    let frame = ServerFrame::RoomEvent {
        room_id: room.clone(),
        event: body.event,
        data: body.data,
        from: Sender::or_system(body.from)?,
    };
    actions::relay_to_room(app, room, frame, None).await;
    Ok(responses::json(StatusCode::ACCEPTED, &json!({})))
}

async fn room_presence(app: &App, room: RoomId) -> Answer {
    if app.store.room(&room).await?.is_none() {
        return Err(room_not_found(&room));
    }
    let members = app.store.members(&room).await?;
    let online = actions::online_members(app, &members).await?;
    Ok(responses::json(
        StatusCode::OK,
        &json!({ "roomId": room, "members": members.len(), "online": online }),
    ))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PutMember {
    #[serde(default)]
    name: Option<String>,
    /// Mutes or unmutes the room for the member (as `room:mute`); absent leaves it as it is.
    #[serde(default)]
    muted: Option<bool>,
    /// The member's role; absent: `member` for a new member, unchanged for one already.
    #[serde(default)]
    role: Option<Role>,
}

async fn put_member(app: &App, room: RoomId, user: UserId, body: PutMember) -> Answer {
    let record = existing_room(app, &room).await?;
    let direct = record.info.kind == RoomKind::Direct;
    if direct && (body.muted.is_none() || body.role.is_some()) {
        return Err(direct_members_are_fixed());
    }
    let added = if direct {
        false
    } else {
        app.store
            .add_member(&room, &user, body.role.as_ref())
            .await?
    };
    if added {
        // Read after the add: the user's connections follow the room from its position now.
        let since = existing_room(app, &room).await?.info.last_seq;
        let member = UserRef {
            name: display_name(body.name.as_deref(), &user),
            id: user.clone(),
        };
        actions::member_joined(app, &room, record.info.kind, &member, since, None).await;
    }
    let mut answer = json!({ "roomId": room, "userId": user, "added": added });
    if let Some(role) = &body.role {
        answer["role"] = json!(role);
    }
    if let Some(muted) = body.muted {
        if !app.store.set_muted(&room, &user, muted).await? {
            // A direct room's member set is fixed: only its two members have a setting.
            return Err(ApiError::refused(
                ErrorCode::NotAMember,
                format!("{user} is not a member of room {room}"),
            ));
        }
        answer["muted"] = json!(muted);
    }
    Ok(responses::json(created_or_ok(added), &answer))
}

async fn delete_member(app: &App, room: RoomId, user: UserId) -> Answer {
    if existing_room(app, &room).await?.info.kind == RoomKind::Direct {
        return Err(direct_members_are_fixed());
    }
    if !app.store.remove_member(&room, &user).await? {
        return Err(ApiError::refused(
            ErrorCode::NotAMember,
            format!("{user} is not a member of room {room}"),
        ));
    }
    actions::member_left(app, &room, &user, None).await;
    Ok(responses::json(
        StatusCode::OK,
        &json!({ "roomId": room, "userId": user, "removed": true }),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PostNotification {
    kind: String,
    title: String,
    #[serde(default)]
    body: String,
    #[serde(default)]
    data: Value,
}

async fn post_notification(app: &App, user: UserId, body: PostNotification) -> Answer {
    if !is_event_name(&body.kind) {
        return Err(ApiError::refused(
            ErrorCode::InvalidField,
            format!(
                "kind must match {}",
                switchboard_protocol::EVENT_NAME_PATTERN
            ),
        ));
    }
    let title = body.title.trim();
    if title.is_empty() || title.chars().any(char::is_control) {
        return Err(ApiError::refused(
            ErrorCode::InvalidField,
            "title must be non-empty, without control characters",
        ));
    }
    if title.chars().count() > MAX_TITLE_CHARS {
        return Err(ApiError::refused(
            ErrorCode::ContentTooLong,
            format!("title is longer than {MAX_TITLE_CHARS} characters"),
        ));
    }
    let max = app.config.max_message_chars;
    if body.body.contains('\0') || body.body.chars().count() > max {
        return Err(ApiError::refused(
            ErrorCode::ContentTooLong,
            format!("body must be at most {max} characters, without NUL"),
        ));
    }
    actions::check_event(&app.config, &body.kind, &body.data)?;
    let notification = actions::notify(
        app,
        NewNotification {
            user,
            kind: body.kind,
            title: title.to_owned(),
            body: body.body,
            data: body.data,
        },
    )
    .await?;
    Ok(responses::json(
        StatusCode::CREATED,
        &json!({ "notification": notification }),
    ))
}

async fn user_presence(app: &App, user: UserId) -> Answer {
    let online = app.presence.online(std::slice::from_ref(&user)).await?;
    let answer = match online.into_iter().next() {
        Some((user, status)) => json!({ "userId": user.id, "online": true, "status": status }),
        None => json!({ "userId": user, "online": false }),
    };
    Ok(responses::json(StatusCode::OK, &answer))
}

async fn disconnect(app: &App, user: UserId, code: CloseCode) -> Answer {
    kick_everywhere(app, &user, code).await;
    tracing::info!(%user, "server API: disconnecting every connection of the user");
    Ok(responses::json(
        StatusCode::ACCEPTED,
        &json!({ "userId": user, "closeCode": code.code() }),
    ))
}

/// Closes every connection of `user`, on every node, with `code`.
async fn kick_everywhere(app: &App, user: &UserId, code: CloseCode) {
    app.publish(Envelope {
        topics: vec![Topic::User(user.clone())],
        event: Event::KickUser {
            user: user.clone(),
            code: code.code(),
        },
    })
    .await;
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct PutBan {
    /// Milliseconds since the epoch.
    #[serde(default)]
    until: Option<u64>,
    #[serde(default)]
    seconds: Option<u64>,
    #[serde(default)]
    reason: String,
}

async fn put_ban(app: &App, user: UserId, body: PutBan) -> Answer {
    let now = now_millis();
    let until = match (body.until, body.seconds) {
        (Some(until), None) => until,
        (None, Some(seconds)) => now.saturating_add(seconds.saturating_mul(1_000)),
        _ => {
            return Err(ApiError::refused(
                ErrorCode::InvalidField,
                "give until (milliseconds since the epoch) or seconds, not both",
            ));
        }
    };
    if until <= now || until - now > MAX_BAN_MS {
        return Err(ApiError::refused(
            ErrorCode::InvalidField,
            "a ban must end in the future, within 100 years",
        ));
    }
    if body.reason.chars().count() > MAX_TITLE_CHARS || body.reason.contains('\0') {
        return Err(ApiError::refused(
            ErrorCode::ContentTooLong,
            format!("reason must be at most {MAX_TITLE_CHARS} characters, without NUL"),
        ));
    }
    let ban = Ban {
        until,
        reason: body.reason,
    };
    app.store.ban(&user, &ban).await?;
    // Stored first: a connection that starts now reads it, one already open gets the kick.
    kick_everywhere(app, &user, CloseCode::Banned).await;
    tracing::info!(%user, until, "server API: user banned");
    Ok(responses::json(
        StatusCode::OK,
        &json!({ "userId": user, "until": until, "reason": ban.reason }),
    ))
}

async fn delete_ban(app: &App, user: UserId) -> Answer {
    let lifted = app.store.unban(&user).await?;
    if lifted {
        tracing::info!(%user, "server API: ban lifted");
    }
    Ok(responses::json(
        StatusCode::OK,
        &json!({ "userId": user, "lifted": lifted }),
    ))
}

/// This node's counts, fresh, and the cluster's: the other nodes as they last reported (every
/// `SWITCHBOARD_PRESENCE_REFRESH_MS`), users and rooms each counted once.
async fn stats(app: &App) -> Answer {
    let node = app.hub.stats();
    let (cluster, followed_rooms) = match &app.api {
        Some(api) => api.cluster_stats(app).await?,
        None => (ClusterStats::default(), None),
    };
    let this = (app.node_id.clone(), node);
    let nodes: Vec<(String, NodeStats)> = std::iter::once(this)
        .chain(
            cluster
                .nodes
                .into_iter()
                .filter(|(id, _)| *id != app.node_id),
        )
        .collect();
    let connections: u64 = nodes.iter().map(|(_, s)| s.connections).sum();
    let described = |(id, s): &(String, NodeStats)| json!({ "id": id, "connections": s.connections, "users": s.users, "rooms": s.rooms });
    Ok(responses::json(
        StatusCode::OK,
        &json!({
            "node": described(&nodes[0]),
            "cluster": {
                "connections": connections,
                "users": cluster.users.max(node.users),
                "rooms": followed_rooms.unwrap_or(node.rooms),
                "nodes": nodes.iter().map(described).collect::<Vec<_>>(),
            },
        }),
    ))
}

/// 201 for what a call made, 200 for what was there already.
fn created_or_ok(created: bool) -> StatusCode {
    if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    }
}

async fn existing_room(app: &App, room: &RoomId) -> Result<crate::store::RoomRecord, ApiError> {
    app.store
        .room(room)
        .await?
        .ok_or_else(|| room_not_found(room))
}

fn room_not_found(room: &RoomId) -> ApiError {
    ApiError::refused(
        ErrorCode::RoomNotFound,
        format!("room {room} does not exist"),
    )
}

fn direct_members_are_fixed() -> ApiError {
    ApiError::refused(
        ErrorCode::Forbidden,
        "a direct-message room's two members are fixed",
    )
}

/// The body as `T`: `MALFORMED_FRAME` when it is not JSON, `INVALID_FIELD` (naming the field)
/// when it is JSON of the wrong shape.
fn json_body<T: DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|error| {
        if error.is_data() {
            ApiError::refused(ErrorCode::InvalidField, error.to_string())
        } else {
            ApiError::refused(
                ErrorCode::MalformedFrame,
                format!("the body is not JSON: {error}"),
            )
        }
    })
}

/// Like [`json_body`], with an empty body meaning every field's default.
fn optional_body<T: DeserializeOwned + Default>(body: &Bytes) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        Ok(T::default())
    } else {
        json_body(body)
    }
}

/// The outbox of the webhooks this node sends; 404 when webhooks are off here.
fn webhook_outbox(app: &App) -> Result<&dyn crate::webhooks::WebhookOutbox, ApiError> {
    app.webhooks
        .as_ref()
        .map(|w| w.outbox.as_ref())
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                ErrorCode::NotFound,
                "webhooks are off on this node (no SWITCHBOARD_WEBHOOK_URL)",
            )
        })
}

async fn failed_webhooks(app: &App, query: &str) -> Answer {
    let mut limit = 100;
    for (name, value) in responses::parse_query(query) {
        match (name.as_str(), value.parse::<usize>()) {
            ("limit", Ok(n)) if (1..=1_000).contains(&n) => limit = n,
            _ => {
                return Err(ApiError::refused(
                    ErrorCode::InvalidField,
                    "the only query parameter is limit, 1 to 1000",
                ));
            }
        }
    }
    let failed = webhook_outbox(app)?.failed(limit).await?;
    let millis = |t: std::time::SystemTime| {
        t.duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    };
    let webhooks: Vec<Value> = failed
        .into_iter()
        .map(|w| {
            json!({
                "id": w.id,
                "type": w.kind,
                "attempts": w.attempts,
                "createdAt": millis(w.created_at),
                "failedAt": millis(w.failed_at),
                "lastError": w.last_error,
                // The payload as it was sent, parsed back; the string when it is not JSON.
                "payload": serde_json::from_str::<Value>(&w.body).unwrap_or(Value::String(w.body)),
            })
        })
        .collect();
    Ok(responses::json(
        StatusCode::OK,
        &json!({ "webhooks": webhooks }),
    ))
}

async fn retry_webhook(app: &App, id: &str) -> Answer {
    let deliveries = app.webhooks.as_ref();
    if !webhook_outbox(app)?.retry_failed(id).await? {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            ErrorCode::NotFound,
            format!("no failed webhook {id}"),
        ));
    }
    if let Some(deliveries) = deliveries {
        deliveries.wake.notify_one();
    }
    Ok(responses::json(
        StatusCode::OK,
        &json!({ "id": id, "retrying": true }),
    ))
}
