//! Prints the protocol's JSON Schema, the source of `docs/protocol.schema.json`:
//!
//! ```sh
//! cargo run -q -p switchboard-protocol --example json-schema > docs/protocol.schema.json
//! ```

use std::io::Write as _;

fn main() -> std::io::Result<()> {
    let text = serde_json::to_string_pretty(&switchboard_protocol::json_schema())?;
    writeln!(std::io::stdout().lock(), "{text}")
}
