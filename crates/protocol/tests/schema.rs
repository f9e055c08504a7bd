//! docs/protocol.schema.json is the schema the protocol crate generates from its types today.

mod schema_check;

use std::path::Path;

#[test]
fn the_committed_json_schema_is_current() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/protocol.schema.json");
    let committed = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let generated = serde_json::to_string_pretty(&switchboard_protocol::json_schema())
        .unwrap_or_else(|e| panic!("cannot print the schema: {e}"))
        + "\n";
    assert!(
        committed == generated,
        "docs/protocol.schema.json is stale; regenerate it with\n    \
         cargo run -q -p switchboard-protocol --example json-schema > docs/protocol.schema.json"
    );
}

#[test]
fn the_schema_refuses_what_the_protocol_refuses() {
    use serde_json::json;
    let refused = [
        ("ClientFrame", json!({"type": "room:join", "id": 1})),
        (
            "ClientFrame",
            json!({"type": "room:join", "id": 1, "roomId": "no spaces"}),
        ),
        (
            "ClientFrame",
            json!({"type": "room:join", "id": -1, "roomId": "general"}),
        ),
        (
            "ClientFrame",
            json!({"type": "message:send", "id": 1, "roomId": "general", "content": "hi", "clientMsgId": "c", "kind": "video"}),
        ),
        (
            "ClientFrame",
            json!({"type": "room:emit", "id": 1, "roomId": "dm:bob", "event": "x"}),
        ),
        ("ClientFrame", json!({"type": "nope"})),
        ("ServerFrame", json!({"type": "pong", "id": null})),
        (
            "ServerFrame",
            json!({"type": "ack", "id": 1, "error": {"code": "NO_SUCH_CODE", "message": "m"}}),
        ),
        (
            "ServerFrame",
            json!({"type": "user:online", "user": {"id": "a"}}),
        ),
    ];
    for (definition, frame) in refused {
        assert!(
            schema_check::schema_errors(definition, &frame).is_some(),
            "the {definition} schema accepts {frame}"
        );
    }
    let accepted = json!({"type": "room:join", "id": 1, "roomId": "dm:alice:bob", "sinceSeq": 3});
    assert_eq!(schema_check::schema_errors("ClientFrame", &accepted), None);
}
