//! Validation of frames against the protocol's JSON Schema (`switchboard_protocol::json_schema`),
//! shared by the round-trip and fuzz tests: whatever the gateway writes or reads must be what the
//! schema, and so docs/protocol.schema.json and the TypeScript types, say.

use std::sync::OnceLock;

use jsonschema::Validator;
use serde_json::Value;

/// A validator for one of the schema's definitions.
fn validator(definition: &'static str, cell: &'static OnceLock<Validator>) -> &'static Validator {
    cell.get_or_init(|| {
        let mut schema = switchboard_protocol::json_schema();
        let Some(object) = schema.as_object_mut() else {
            panic!("the schema is not an object");
        };
        object.remove("anyOf");
        object.insert(
            "allOf".into(),
            serde_json::json!([{ "$ref": format!("#/definitions/{definition}") }]),
        );
        match jsonschema::draft7::new(&schema) {
            Ok(validator) => validator,
            Err(e) => panic!("the protocol's JSON Schema does not compile: {e}"),
        }
    })
}

/// Why `frame` (as JSON) breaks the schema of `definition`, or `None` when it is valid.
pub fn schema_errors(definition: &'static str, frame: &Value) -> Option<String> {
    static CLIENT: OnceLock<Validator> = OnceLock::new();
    static SERVER: OnceLock<Validator> = OnceLock::new();
    let validator = match definition {
        "ClientFrame" => validator("ClientFrame", &CLIENT),
        "ServerFrame" => validator("ServerFrame", &SERVER),
        other => panic!("no validator for {other}"),
    };
    let errors: Vec<String> = validator
        .iter_errors(frame)
        .map(|e| format!("{} at {}", e, e.instance_path))
        .collect();
    (!errors.is_empty()).then(|| format!("{frame} breaks the {definition} schema: {errors:?}"))
}
