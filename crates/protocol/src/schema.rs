//! The protocol as one JSON Schema (draft-07), generated from the types themselves so that it
//! cannot drift from them: `docs/protocol.schema.json` is this document, and the TypeScript
//! client's types are checked against it.
//!
//! Client frames are described as the gateway reads them, server frames as it writes them
//! (schemars' deserialize and serialize contracts: a field with a default is optional in the
//! first, always present in the second). An optional field is absent when it has no value, never
//! `null`: the gateway never writes `null` for one, and clients should not send it.

use std::borrow::Cow;

use schemars::generate::{Contract, SchemaGenerator, SchemaSettings};
use schemars::{JsonSchema, Schema, json_schema};
use serde_json::{Map, Value};

use crate::ids::{MAX_ROLE_LEN, MAX_ROOM_ID_LEN, MAX_USER_ID_LEN};
use crate::{ClientFrame, PROTOCOL_VERSION, Role, RoomId, ServerFrame, UserId};

/// Characters of a user id, a plain room id or a role.
const ID_CHARS: &str = "[A-Za-z0-9_.@-]";

/// The protocol's JSON Schema: `anyOf` a client frame or a server frame, each type under
/// `definitions` by its Rust name (`ClientFrame`, `ServerFrame`, `Message`, ...).
pub fn json_schema() -> Value {
    let (client, mut definitions) = definitions_of::<ClientFrame>(Contract::Deserialize);
    let (server, server_definitions) = definitions_of::<ServerFrame>(Contract::Serialize);
    for (name, schema) in server_definitions {
        match definitions.get(&name) {
            // Types both directions use (ids, enums) have no defaults, so both contracts agree.
            Some(existing) => assert_eq!(
                existing, &schema,
                "{name} reads differently than it is written; give the two contracts distinct names"
            ),
            None => {
                definitions.insert(name, schema);
            }
        }
    }
    definitions.insert("ClientFrame".into(), client);
    definitions.insert("ServerFrame".into(), server);
    let mut document = serde_json::json!({
        "$schema": "http://json-schema.org/draft-07/schema#",
        "title": format!("Switchboard protocol v{PROTOCOL_VERSION}"),
        "description": "Every frame of docs/protocol.md, as JSON. Generated from crates/protocol; do not edit.",
        "anyOf": [
            { "$ref": "#/definitions/ClientFrame" },
            { "$ref": "#/definitions/ServerFrame" },
        ],
        "definitions": definitions,
    });
    drop_null_from_optional_fields(&mut document);
    document
}

/// The schema of `T` (its own definition, inlined) and the definitions it refers to.
fn definitions_of<T: JsonSchema>(contract: Contract) -> (Value, Map<String, Value>) {
    let mut generator: SchemaGenerator = SchemaSettings::draft07()
        .with(|s| s.contract = contract)
        .into_generator();
    let mut root = generator.root_schema_for::<T>().to_value();
    let definitions = generator.take_definitions(true);
    if let Some(object) = root.as_object_mut() {
        object.remove("$schema");
        object.remove("definitions");
    }
    (root, definitions)
}

/// Makes every property that is not `required` non-nullable: `Option<T>` reads as `T | null`,
/// but an absent field is how the protocol says "none".
fn drop_null_from_optional_fields(value: &mut Value) {
    match value {
        Value::Object(object) => {
            let required: Vec<String> = object
                .get("required")
                .and_then(Value::as_array)
                .map(|names| {
                    names
                        .iter()
                        .filter_map(|n| n.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            if let Some(Value::Object(properties)) = object.get_mut("properties") {
                for (name, property) in properties.iter_mut() {
                    if !required.contains(name) {
                        drop_null(property);
                    }
                }
            }
            object.values_mut().for_each(drop_null_from_optional_fields);
        }
        Value::Array(items) => items.iter_mut().for_each(drop_null_from_optional_fields),
        _ => {}
    }
}

/// `{"type": ["x", "null"]}` becomes `{"type": "x"}`; `{"anyOf": [S, {"type": "null"}]}` becomes S.
fn drop_null(property: &mut Value) {
    let Some(object) = property.as_object_mut() else {
        return;
    };
    if let Some(Value::Array(types)) = object.get_mut("type") {
        types.retain(|t| t != "null");
        if let [only] = types.as_slice() {
            let only = only.clone();
            object.insert("type".into(), only);
        }
    }
    if let Some(Value::Array(options)) = object.get_mut("anyOf") {
        options.retain(|o| o.get("type").is_none_or(|t| t != "null"));
        if let [only] = options.as_slice() {
            let only = only.clone();
            object.remove("anyOf");
            if let Value::Object(only) = only {
                object.extend(only);
            }
        }
    }
}

fn plain_id_pattern(max: usize) -> String {
    format!("^{ID_CHARS}{{1,{max}}}$")
}

impl JsonSchema for UserId {
    fn schema_name() -> Cow<'static, str> {
        "UserId".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "description": "A user id (the JWT `sub`): 1 to 64 characters from A-Z a-z 0-9 _ . - @.",
            "pattern": plain_id_pattern(MAX_USER_ID_LEN),
        })
    }
}

impl JsonSchema for RoomId {
    fn schema_name() -> Cow<'static, str> {
        "RoomId".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        let user = format!("{ID_CHARS}{{1,{MAX_USER_ID_LEN}}}");
        json_schema!({
            "type": "string",
            "description": "A room id: 1 to 64 characters from A-Z a-z 0-9 _ . - @, or a direct-message room `dm:<a>:<b>` with the two user ids sorted.",
            "pattern": format!("^({ID_CHARS}{{1,{}}}|dm:{user}:{user})$", MAX_ROOM_ID_LEN),
        })
    }
}

impl JsonSchema for Role {
    fn schema_name() -> Cow<'static, str> {
        "Role".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "description": "A member's role in a room, given by the app: 1 to 32 characters from A-Z a-z 0-9 _ . - @.",
            "pattern": plain_id_pattern(MAX_ROLE_LEN),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn optional_fields_are_absent_rather_than_null() {
        let mut property = serde_json::json!({
            "properties": {
                "a": { "type": ["integer", "null"] },
                "b": { "anyOf": [{ "$ref": "#/definitions/X" }, { "type": "null" }], "description": "d" },
                "c": { "type": ["string", "null"] },
            },
            "required": ["c"],
        });
        drop_null_from_optional_fields(&mut property);
        assert_eq!(
            property,
            serde_json::json!({
                "properties": {
                    "a": { "type": "integer" },
                    "b": { "$ref": "#/definitions/X", "description": "d" },
                    "c": { "type": ["string", "null"] },
                },
                "required": ["c"],
            })
        );
    }
}
