//! The mapping between Socket.IO events and protocol frames (docs/socketio.md): a client's
//! event is the frame of the same `type` whose fields are the event's one object argument, its
//! ack id the frame's `id`; every server frame is emitted as an event of its `type` with the
//! other fields as the argument (a `room:event` under its own event name).

use serde_json::{Map, Value};

/// Why a client's event stands for no frame; answered on its ack with `INVALID_FIELD`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    #[error("an event is a JSON array whose first element is its name")]
    NotAnEvent,
    #[error(
        "an event carries at most one argument, an object: the frame's fields without type and id"
    )]
    NotAnObject,
}

/// The frame, as JSON, that the event `args` (`["message:send", {...}]`) stands for, numbered
/// `id`. Fields named `type` or `id` in the argument are overridden.
pub fn frame_of_event(args: &str, id: u64) -> Result<(String, Vec<u8>), EventError> {
    let Ok(Value::Array(mut args)) = serde_json::from_str::<Value>(args) else {
        return Err(EventError::NotAnEvent);
    };
    if args.is_empty() {
        return Err(EventError::NotAnEvent);
    }
    let Value::String(name) = args.remove(0) else {
        return Err(EventError::NotAnEvent);
    };
    let mut fields = match args.pop() {
        None => Map::new(),
        Some(Value::Object(fields)) if args.is_empty() => fields,
        Some(_) => return Err(EventError::NotAnObject),
    };
    fields.insert("type".into(), Value::String(name.clone()));
    fields.insert("id".into(), Value::from(id));
    let json = serde_json::to_vec(&Value::Object(fields)).map_err(|_| EventError::NotAnEvent)?;
    Ok((name, json))
}

/// The `auth` frame, as JSON, for a connect's auth payload (`{"token": "..."}`); an empty token
/// when there is none, which the session refuses like any bad token.
pub fn auth_frame(payload: &str) -> Vec<u8> {
    let token = serde_json::from_str::<Value>(payload)
        .ok()
        .and_then(|auth| auth.get("token").and_then(Value::as_str).map(str::to_owned))
        .unwrap_or_default();
    serde_json::json!({ "type": "auth", "token": token })
        .to_string()
        .into_bytes()
}

/// The event a server frame (its JSON, `type` first as serde writes it) is emitted as:
/// `(name, argument)`. `None` for text that is not such a frame.
pub fn event_of_frame(json: &str) -> Option<(String, String)> {
    const TYPE: &str = r#"{"type":""#;
    let rest = json.strip_prefix(TYPE)?;
    let end = rest.find('"')?;
    let name = &rest[..end];
    let after = &rest[end + 1..];
    if name == "room:event" {
        return room_event(json);
    }
    let argument = match after.strip_prefix(',') {
        Some(fields) => format!("{{{fields}"),
        None if after == "}" => "{}".to_owned(),
        None => return None,
    };
    Some((name.to_owned(), argument))
}

/// A `room:event` under its own event name, with `roomId`, `data` and `from`.
fn room_event(json: &str) -> Option<(String, String)> {
    let Ok(Value::Object(mut fields)) = serde_json::from_str::<Value>(json) else {
        return None;
    };
    fields.remove("type");
    let Some(Value::String(name)) = fields.remove("event") else {
        return None;
    };
    Some((name, Value::Object(fields).to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_becomes_the_frame_of_its_name_numbered_by_its_ack() {
        let (name, json) = frame_of_event(
            r#"["message:send",{"roomId":"general","content":"hi","clientMsgId":"c1","id":99}]"#,
            7,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(name, "message:send");
        let frame: Value = serde_json::from_slice(&json).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            frame,
            serde_json::json!({"type": "message:send", "id": 7, "roomId": "general", "content": "hi", "clientMsgId": "c1"})
        );
        let (_, json) = frame_of_event(r#"["friends:list"]"#, 1).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(json, br#"{"id":1,"type":"friends:list"}"#);
        assert_eq!(
            frame_of_event(r#"["x","y"]"#, 1),
            Err(EventError::NotAnObject)
        );
        assert_eq!(
            frame_of_event(r#"["x",{},{}]"#, 1),
            Err(EventError::NotAnObject)
        );
        assert_eq!(frame_of_event(r#"[]"#, 1), Err(EventError::NotAnEvent));
        assert_eq!(frame_of_event(r#"[1,{}]"#, 1), Err(EventError::NotAnEvent));
        assert_eq!(frame_of_event("nope", 1), Err(EventError::NotAnEvent));
    }

    #[test]
    fn a_frame_becomes_an_event_of_its_type() {
        assert_eq!(
            event_of_frame(r#"{"type":"message:new","message":{"seq":1}}"#),
            Some(("message:new".into(), r#"{"message":{"seq":1}}"#.into()))
        );
        assert_eq!(
            event_of_frame(r#"{"type":"pong"}"#),
            Some(("pong".into(), "{}".into()))
        );
        let (name, argument) = event_of_frame(
            r#"{"type":"room:event","roomId":"r","event":"cursor:move","data":[1],"from":{"id":"a","name":"A"}}"#,
        )
        .unwrap_or_else(|| panic!("a room event"));
        assert_eq!(name, "cursor:move");
        let argument: Value = serde_json::from_str(&argument).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            argument,
            serde_json::json!({"roomId": "r", "data": [1], "from": {"id": "a", "name": "A"}})
        );
        assert_eq!(event_of_frame("[1]"), None);
    }

    #[test]
    fn a_connect_payload_becomes_an_auth_frame() {
        assert_eq!(
            auth_frame(r#"{"token":"abc"}"#),
            br#"{"token":"abc","type":"auth"}"#
        );
        assert_eq!(auth_frame(""), br#"{"token":"","type":"auth"}"#);
        assert_eq!(
            auth_frame(r#"{"token":5}"#),
            br#"{"token":"","type":"auth"}"#
        );
    }
}
