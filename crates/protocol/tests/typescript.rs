//! The TypeScript client's protocol types (`clients/typescript/src/protocol.ts`) name every frame
//! `type`, result `kind` and error code of this crate, and nothing else: a frame added here and
//! not there fails this test.

mod kinds;

use std::collections::BTreeSet;

use kinds::ACK_RESULT_KINDS;
use strum::IntoEnumIterator as _;
use switchboard_protocol::{ClientFrameKind, ErrorCode, ServerFrameKind};

const TYPES: &str = include_str!("../../../clients/typescript/src/protocol.ts");

/// The text of `export type <name> =` up to the next blank line.
fn declaration(name: &str) -> &'static str {
    let start = TYPES
        .find(&format!("export type {name} ="))
        .unwrap_or_else(|| panic!("protocol.ts declares no type {name}"));
    let rest = &TYPES[start..];
    &rest[..rest.find("\n\n").unwrap_or(rest.len())]
}

/// Every `"…"` string following `prefix` in `text`.
fn literals_after(text: &str, prefix: &str) -> BTreeSet<String> {
    text.match_indices(prefix)
        .filter_map(|(at, _)| {
            let rest = &text[at + prefix.len()..];
            let rest = rest.strip_prefix('"')?;
            Some(rest[..rest.find('"')?].to_owned())
        })
        .collect()
}

#[test]
fn typescript_types_name_every_frame() {
    let client: BTreeSet<String> = ClientFrameKind::iter()
        .map(|k| k.wire_name().to_owned())
        .collect();
    assert_eq!(
        literals_after(declaration("ClientFrame"), "type: "),
        client,
        "ClientFrame"
    );
    let server: BTreeSet<String> = ServerFrameKind::iter()
        .map(|k| k.wire_name().to_owned())
        .collect();
    assert_eq!(
        literals_after(declaration("ServerFrame"), "type: "),
        server,
        "ServerFrame"
    );
    let codes: BTreeSet<String> = ErrorCode::all().map(|c| c.as_str().to_owned()).collect();
    assert_eq!(
        literals_after(declaration("ErrorCode"), "| "),
        codes,
        "ErrorCode"
    );
    let retryable: BTreeSet<String> = ErrorCode::all()
        .filter(|c| c.retryable())
        .map(|c| c.as_str().to_owned())
        .collect();
    let listed = &TYPES[TYPES.find("RETRYABLE_CODES").expect("RETRYABLE_CODES")..];
    let listed = &listed[..listed.find("]);").expect("the end of RETRYABLE_CODES")];
    assert_eq!(literals_after(listed, "  "), retryable, "RETRYABLE_CODES");
    let kinds: BTreeSet<String> = ACK_RESULT_KINDS.map(str::to_owned).into();
    assert_eq!(
        literals_after(declaration("AckResult"), "kind: "),
        kinds,
        "AckResult"
    );
}
