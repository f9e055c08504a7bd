//! `docs/protocol.md` is the reference client authors code against. This tidy test fails when the
//! protocol changes and the document does not.
//!
//! It checks that:
//! - every client and server frame type has a `###` heading naming it in backticks, in the right
//!   section, and no heading there names a frame type that does not exist;
//! - the error-code table has one row per [`ErrorCode`] with the right "Retryable" cell, and the
//!   close-code table one row per [`CloseCode`] with the right name, reason, "Reconnect" and
//!   "Resume" cells;
//! - every ```json block is exactly one valid frame: it decodes as a client or server frame (as its
//!   section says), is of the type its heading names, has no field the frame does not know, and
//!   survives MessagePack unchanged;
//! - every frame type, and every `ack` result kind plus an error `ack`, has at least one example;
//! - both subprotocol names appear.

mod kinds;

use std::collections::{BTreeSet, HashMap};
use std::fmt::Debug;

use kinds::{ACK_RESULT_KINDS, ack_result_kind};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use strum::IntoEnumIterator;
use switchboard_protocol::{
    ClientFrame, ClientFrameKind, CloseCode, Codec, ErrorCode, JOIN_HISTORY, MAX_HISTORY_PAGE,
    ServerFrame, ServerFrameKind,
};

const DOC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/protocol.md");
/// How failures name the file.
const DOC_NAME: &str = "docs/protocol.md";

/// The `##` headings whose `###` sections document one frame type each.
const CLIENT_SECTION: &str = "## Client → server frames";
const SERVER_SECTION: &str = "## Server → client frames";
/// The `##` headings holding the two code tables.
const ERROR_SECTION: &str = "## Error codes";
const CLOSE_SECTION: &str = "## Close codes";

// ---------------------------------------------------------------------------------------------
// A minimal Markdown reader: headings, table rows and fenced code blocks, each with its line
// number and the `##` section and `###` heading it sits under. Lines inside fences are code, never
// headings or rows.

#[derive(Debug)]
struct Heading {
    line: usize,
    level: usize,
    text: String,
    section: String,
}

#[derive(Debug)]
struct Row {
    line: usize,
    section: String,
    cells: Vec<String>,
}

#[derive(Debug)]
struct JsonBlock {
    line: usize,
    section: String,
    heading: String,
    text: String,
}

#[derive(Debug)]
struct Doc {
    text: String,
    headings: Vec<Heading>,
    rows: Vec<Row>,
    json_blocks: Vec<JsonBlock>,
}

impl Doc {
    fn load() -> Self {
        let text = std::fs::read_to_string(DOC)
            .unwrap_or_else(|e| panic!("cannot read {DOC_NAME} at {DOC}: {e}"));
        Self::parse(text)
    }

    fn parse(text: String) -> Self {
        let mut doc = Self {
            text: String::new(),
            headings: Vec::new(),
            rows: Vec::new(),
            json_blocks: Vec::new(),
        };
        let (mut section, mut heading) = (String::new(), String::new());
        // The open fence: its language, first line and body so far.
        let mut fence: Option<(String, usize, String)> = None;
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let trimmed = raw.trim_start();
            if let Some(info) = trimmed.strip_prefix("```") {
                match fence.take() {
                    Some((lang, start, body)) => {
                        if lang == "json" {
                            doc.json_blocks.push(JsonBlock {
                                line: start,
                                section: section.clone(),
                                heading: heading.clone(),
                                text: body,
                            });
                        }
                    }
                    None => fence = Some((info.trim().to_owned(), line, String::new())),
                }
                continue;
            }
            if let Some((_, _, body)) = fence.as_mut() {
                body.push_str(raw);
                body.push('\n');
                continue;
            }
            if trimmed.starts_with('#') {
                let level = trimmed.chars().take_while(|&c| c == '#').count();
                let text = trimmed.trim_end().to_owned();
                if level <= 2 {
                    section = text.clone();
                    heading.clear();
                } else if level == 3 {
                    heading = text.clone();
                }
                doc.headings.push(Heading {
                    line,
                    level,
                    text,
                    section: section.clone(),
                });
            } else if let Some(inner) = trimmed.trim_end().strip_prefix('|') {
                let inner = inner.strip_suffix('|').unwrap_or(inner);
                let cells: Vec<String> = inner.split('|').map(|c| c.trim().to_owned()).collect();
                let separator = cells
                    .iter()
                    .all(|c| !c.is_empty() && c.chars().all(|ch| matches!(ch, '-' | ':')));
                if !separator {
                    doc.rows.push(Row {
                        line,
                        section: section.clone(),
                        cells,
                    });
                }
            }
        }
        if let Some((lang, start, _)) = fence {
            panic!("{DOC_NAME}:{start}: the ```{lang} fence is never closed");
        }
        doc.text = text;
        doc
    }

    fn has_section(&self, title: &str) -> bool {
        self.headings
            .iter()
            .any(|h| h.level == 2 && h.text == title)
    }

    /// The `###` headings of one section.
    fn frame_headings<'a>(&'a self, section: &'a str) -> impl Iterator<Item = &'a Heading> + 'a {
        self.headings
            .iter()
            .filter(move |h| h.level == 3 && h.section == section)
    }

    /// The rows of the table in `section`, keyed by header name, so columns may move.
    fn table(&self, section: &str) -> Option<Table<'_>> {
        let mut rows = self.rows.iter().filter(|r| r.section == section);
        let header = rows.next()?;
        Some(Table {
            header: &header.cells,
            rows: rows.collect(),
        })
    }
}

#[derive(Debug)]
struct Table<'a> {
    header: &'a [String],
    rows: Vec<&'a Row>,
}

impl Table<'_> {
    fn column(&self, name: &str, problems: &mut Vec<String>) -> Option<usize> {
        let found = self.header.iter().position(|c| c == name);
        if found.is_none() {
            problems.push(format!(
                "the table has no column {name:?}; its header is {:?}",
                self.header
            ));
        }
        found
    }

    /// The row whose first cell is `first`.
    fn row(&self, first: &str) -> Option<&Row> {
        self.rows
            .iter()
            .copied()
            .find(|r| r.cells.first().is_some_and(|c| c == first))
    }
}

/// Backticked spans of a heading: "### `message:send`" gives ["message:send"].
fn code_spans(text: &str) -> Vec<&str> {
    text.split('`').skip(1).step_by(2).collect()
}

fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

fn fail_if_any(what: &str, problems: &[String]) {
    assert!(
        problems.is_empty(),
        "{DOC_NAME} is out of date ({what}):\n  - {}\n",
        problems.join("\n  - ")
    );
}

// ---------------------------------------------------------------------------------------------
// Frame sections

/// Checks that each wire name has a `###` heading in `section` and that each heading there names a
/// real frame type.
fn check_frame_headings(
    doc: &Doc,
    section: &str,
    side: &str,
    wire_names: &[&'static str],
    problems: &mut Vec<String>,
) {
    if !doc.has_section(section) {
        problems.push(format!(
            "there is no section {section:?}; it must hold one ### heading per {side} frame type"
        ));
        return;
    }
    for name in wire_names {
        let wanted = format!("`{name}`");
        if !doc
            .frame_headings(section)
            .any(|h| h.text.contains(&wanted))
        {
            problems.push(format!(
                "{side} frame type {wanted} has no heading containing {wanted} under {section:?} \
                 (add \"### {wanted}\" with a description, a fields table and a ```json example)"
            ));
        }
    }
    for h in doc.frame_headings(section) {
        if !code_spans(&h.text).iter().any(|s| wire_names.contains(s)) {
            problems.push(format!(
                "{DOC_NAME}:{}: heading {:?} names no {side} frame type; known types are {wire_names:?}",
                h.line, h.text
            ));
        }
    }
}

#[test]
fn every_frame_type_has_a_section() {
    let doc = Doc::load();
    let mut problems = Vec::new();
    let client: Vec<_> = ClientFrameKind::iter()
        .map(ClientFrameKind::wire_name)
        .collect();
    let server: Vec<_> = ServerFrameKind::iter()
        .map(ServerFrameKind::wire_name)
        .collect();
    check_frame_headings(&doc, CLIENT_SECTION, "client", &client, &mut problems);
    check_frame_headings(&doc, SERVER_SECTION, "server", &server, &mut problems);
    fail_if_any("frame sections", &problems);
}

// ---------------------------------------------------------------------------------------------
// Code tables

#[test]
fn error_code_table_lists_every_code() {
    let doc = Doc::load();
    let mut problems = Vec::new();
    let Some(table) = doc.table(ERROR_SECTION) else {
        panic!("{DOC_NAME} has no table under {ERROR_SECTION:?}");
    };
    let (Some(code_col), Some(retry_col)) = (
        table.column("Code", &mut problems),
        table.column("Retryable", &mut problems),
    ) else {
        fail_if_any("error code table", &problems);
        return;
    };
    assert_eq!(
        code_col, 0,
        "the error code table must start with its Code column"
    );
    for code in ErrorCode::all() {
        let first = format!("`{}`", code.as_str());
        let Some(row) = table.row(&first) else {
            problems.push(format!(
                "error code {code:?} has no row starting with \"| {first}\" under {ERROR_SECTION:?}"
            ));
            continue;
        };
        let want = yes_no(code.retryable());
        let got = row.cells.get(retry_col).map_or("", String::as_str);
        if got != want {
            problems.push(format!(
                "{DOC_NAME}:{}: {first} is retryable: {want} (ErrorCode::retryable), the table says {got:?}",
                row.line
            ));
        }
    }
    let known: BTreeSet<String> = ErrorCode::all()
        .map(|c| format!("`{}`", c.as_str()))
        .collect();
    for row in &table.rows {
        if !known.contains(&row.cells[0]) {
            problems.push(format!(
                "{DOC_NAME}:{}: {} is not an ErrorCode; remove the row or add the code",
                row.line, row.cells[0]
            ));
        }
    }
    fail_if_any("error code table", &problems);
}

#[test]
fn close_code_table_lists_every_code() {
    let doc = Doc::load();
    let mut problems = Vec::new();
    let Some(table) = doc.table(CLOSE_SECTION) else {
        panic!("{DOC_NAME} has no table under {CLOSE_SECTION:?}");
    };
    let columns = ["Code", "Name", "Reason", "Reconnect", "Resume"]
        .map(|name| table.column(name, &mut problems));
    let [
        Some(code_col),
        Some(name_col),
        Some(reason_col),
        Some(reconnect_col),
        Some(resume_col),
    ] = columns
    else {
        fail_if_any("close code table", &problems);
        return;
    };
    assert_eq!(
        code_col, 0,
        "the close code table must start with its Code column"
    );
    for code in CloseCode::all() {
        let first = code.code().to_string();
        let Some(row) = table.row(&first) else {
            problems.push(format!(
                "close code {first} ({code:?}) has no row starting with \"| {first}\" under {CLOSE_SECTION:?}"
            ));
            continue;
        };
        let expected = [
            ("Name", name_col, format!("`{code:?}`")),
            ("Reason", reason_col, format!("`{}`", code.reason())),
            (
                "Reconnect",
                reconnect_col,
                yes_no(code.reconnect()).to_owned(),
            ),
            ("Resume", resume_col, yes_no(code.resume()).to_owned()),
        ];
        for (column, index, want) in expected {
            let got = row.cells.get(index).map_or("", String::as_str);
            if got != want {
                problems.push(format!(
                    "{DOC_NAME}:{}: close code {first}: column {column} should be {want:?} \
                     (from CloseCode), the table says {got:?}",
                    row.line
                ));
            }
        }
    }
    let known: BTreeSet<String> = CloseCode::all().map(|c| c.code().to_string()).collect();
    for row in &table.rows {
        if !known.contains(&row.cells[0]) {
            problems.push(format!(
                "{DOC_NAME}:{}: {} is not a CloseCode; remove the row or add the code",
                row.line, row.cells[0]
            ));
        }
    }
    fail_if_any("close code table", &problems);
}

// ---------------------------------------------------------------------------------------------
// JSON examples

/// A ```json block decoded as exactly one frame.
#[derive(Debug)]
enum Example {
    Client(ClientFrame),
    Server(ServerFrame),
}

/// Decodes `text` as a `T` and checks that it is exactly one: every field of the example is a
/// field of the frame with the same value (so a misspelt optional field, which serde would
/// silently ignore, is caught), and MessagePack carries the frame unchanged.
fn decode_exactly<T>(text: &str) -> Result<T, String>
where
    T: Serialize + DeserializeOwned + PartialEq + Debug,
{
    let frame: T = Codec::Json.decode(text.as_bytes())?;
    let example: Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let canonical = serde_json::to_value(&frame).map_err(|e| e.to_string())?;
    let mut unknown = Vec::new();
    not_in_frame(&example, &canonical, "", &mut unknown);
    if !unknown.is_empty() {
        return Err(format!("decodes, but {}", unknown.join("; ")));
    }
    let packed = Codec::MsgPack.encode(&frame).map_err(|e| e.to_string())?;
    let unpacked: T = Codec::MsgPack.decode(&packed)?;
    if unpacked != frame {
        return Err(format!("changes in MessagePack: {unpacked:?}"));
    }
    Ok(frame)
}

/// Collects the parts of `example` that are not in `canonical`, the frame it decoded to.
fn not_in_frame(example: &Value, canonical: &Value, path: &str, out: &mut Vec<String>) {
    match (example, canonical) {
        (Value::Object(e), Value::Object(c)) => {
            for (key, value) in e {
                let at = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                match c.get(key) {
                    Some(c_value) => not_in_frame(value, c_value, &at, out),
                    None => out.push(format!("field `{at}` is not part of the frame")),
                }
            }
        }
        (Value::Array(e), Value::Array(c)) => {
            for (i, (value, c_value)) in e.iter().zip(c).enumerate() {
                not_in_frame(value, c_value, &format!("{path}[{i}]"), out);
            }
        }
        (e, c) if e != c => out.push(format!("`{path}` is {e} but decodes as {c}")),
        _ => {}
    }
}

/// Which frames a block may hold, from the section it sits in, and the type its heading names.
fn classify(block: &JsonBlock) -> Result<Example, String> {
    let (client_ok, server_ok) = match block.section.as_str() {
        CLIENT_SECTION => (true, false),
        SERVER_SECTION => (false, true),
        _ => (true, true),
    };
    let mut errors = Vec::new();
    let mut found = None;
    if client_ok {
        match decode_exactly::<ClientFrame>(&block.text) {
            Ok(frame) => found = Some(Example::Client(frame)),
            Err(e) => errors.push(format!("as a client frame: {e}")),
        }
    }
    if server_ok && found.is_none() {
        match decode_exactly::<ServerFrame>(&block.text) {
            Ok(frame) => found = Some(Example::Server(frame)),
            Err(e) => errors.push(format!("as a server frame: {e}")),
        }
    }
    let Some(example) = found else {
        return Err(errors.join("; "));
    };
    let wire_name = match &example {
        Example::Client(f) => f.kind().wire_name(),
        Example::Server(f) => f.kind().wire_name(),
    };
    let named = code_spans(&block.heading);
    if !named.is_empty() && !named.contains(&wire_name) {
        return Err(format!(
            "it is a `{wire_name}` frame but sits under {:?}",
            block.heading
        ));
    }
    if let Example::Server(ServerFrame::Ack { result, error, .. }) = &example
        && result.is_some() == error.is_some()
    {
        return Err("an `ack` holds exactly one of `result` and `error`".to_owned());
    }
    Ok(example)
}

#[test]
fn json_examples_are_exactly_valid_frames() {
    let doc = Doc::load();
    assert!(
        !doc.json_blocks.is_empty(),
        "{DOC_NAME} has no ```json examples"
    );
    let problems: Vec<String> = doc
        .json_blocks
        .iter()
        .filter_map(|block| {
            classify(block).err().map(|e| {
                format!(
                    "{DOC_NAME}:{}: the ```json block is not a valid frame: {e}\n{}",
                    block.line,
                    block.text.trim_end()
                )
            })
        })
        .collect();
    fail_if_any("```json examples", &problems);
}

#[test]
fn every_frame_type_has_an_example() {
    let doc = Doc::load();
    let mut client = HashMap::new();
    let mut server = HashMap::new();
    let mut ack_kinds = BTreeSet::new();
    for block in &doc.json_blocks {
        match classify(block) {
            Ok(Example::Client(frame)) => {
                client.entry(frame.kind()).or_insert(block.line);
            }
            Ok(Example::Server(frame)) => {
                if let ServerFrame::Ack { result, error, .. } = &frame {
                    if let Some(result) = result {
                        ack_kinds.insert(ack_result_kind(result));
                    }
                    if error.is_some() {
                        ack_kinds.insert("error");
                    }
                }
                server.entry(frame.kind()).or_insert(block.line);
            }
            // Reported by json_examples_are_exactly_valid_frames.
            Err(_) => {}
        }
    }
    let mut problems = Vec::new();
    for kind in ClientFrameKind::iter().filter(|k| !client.contains_key(k)) {
        problems.push(format!(
            "client frame `{}` has no ```json example",
            kind.wire_name()
        ));
    }
    for kind in ServerFrameKind::iter().filter(|k| !server.contains_key(k)) {
        problems.push(format!(
            "server frame `{}` has no ```json example",
            kind.wire_name()
        ));
    }
    for kind in ACK_RESULT_KINDS.into_iter().chain(["error"]) {
        if !ack_kinds.contains(kind) {
            let what = if kind == "error" {
                "an `error`".to_owned()
            } else {
                format!("result kind `{kind}`")
            };
            problems.push(format!("no ```json example of an `ack` with {what}"));
        }
    }
    fail_if_any("frame examples", &problems);
}

// ---------------------------------------------------------------------------------------------
// Constants

#[test]
fn subprotocols_and_limits_are_named() {
    let doc = Doc::load();
    let mut problems = Vec::new();
    for name in [Codec::JSON_SUBPROTOCOL, Codec::MSGPACK_SUBPROTOCOL] {
        if !doc.text.contains(&format!("`{name}`")) {
            problems.push(format!("the subprotocol `{name}` is never named"));
        }
    }
    for phrase in [
        format!("latest {JOIN_HISTORY}"),
        format!("at most {MAX_HISTORY_PAGE}"),
    ] {
        if !doc.text.contains(&phrase) {
            problems.push(format!(
                "{phrase:?} does not appear (JOIN_HISTORY / MAX_HISTORY_PAGE changed?)"
            ));
        }
    }
    fail_if_any("constants", &problems);
}
