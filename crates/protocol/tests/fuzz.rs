//! Property tests of the client-frame decoder: it never panics, accepts every valid frame, and
//! refuses everything else with the precise error code and the request id when one was there.
//!
//! The generators and the oracle are in `generate/` (shared with the gateway's live-session
//! fuzz). Cases: 4,096 per property by default; `SWITCHBOARD_FUZZ_CASES=100000` for a longer
//! run. A failing case's seed is saved in `fuzz.proptest-regressions` next to this file (commit
//! it) and replayed first from then on; each finding also gets a named test next to the code.

mod generate;
mod schema_check;

use generate::*;
use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence};
use switchboard_protocol::{ClientFrame, Codec, ErrorCode};

fn config() -> Config {
    Config {
        cases: cases(4_096),
        rng_seed: seed(),
        // `fuzz.proptest-regressions`, next to this file.
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource(
            "proptest-regressions",
        ))),
        ..Config::default()
    }
}

/// The frame a refused document would have been, for the failure message.
fn describe(doc: &Doc, codec: Codec) -> String {
    let bytes = doc.encode(codec);
    match codec {
        Codec::Json => String::from_utf8_lossy(&bytes)
            .chars()
            .take(2_000)
            .collect(),
        Codec::MsgPack => format!("{:02x?}", &bytes[..bytes.len().min(600)]),
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn every_valid_frame_decodes_to_itself_in_both_codecs(frame in valid_frame()) {
        let json = serde_json::to_value(&frame).unwrap();
        prop_assert_eq!(schema_check::schema_errors("ClientFrame", &json), None);
        for codec in [Codec::Json, Codec::MsgPack] {
            let bytes = codec.encode(&frame).unwrap();
            prop_assert_eq!(codec.decode_client(&bytes), Ok(frame.clone()), "{:?}", codec);
        }
    }

    #[test]
    fn a_mutated_frame_is_accepted_or_refused_exactly_as_the_protocol_says(
        doc in structured(),
        codec in codec(),
    ) {
        let bytes = doc.encode(codec);
        let got = codec.decode_client(&bytes);
        match (expected(&doc, codec), &got) {
            (Expected::Accepted, Ok(frame)) => {
                // What was accepted is a frame that survives both codecs.
                for other in [Codec::Json, Codec::MsgPack] {
                    let again = other.decode_client(&other.encode(frame).unwrap());
                    prop_assert_eq!(again.as_ref(), Ok(frame));
                }
            }
            (Expected::Refused(code, id), Err(e)) => {
                prop_assert_eq!(
                    (code, id),
                    (e.code, e.id),
                    "{:?} {}: {}",
                    codec,
                    describe(&doc, codec),
                    e.message
                );
            }
            (want, got) => prop_assert!(
                false,
                "{:?} {}: expected {:?}, decoded {:?}",
                codec,
                describe(&doc, codec),
                want,
                got
            ),
        }
    }

    #[test]
    fn damaged_bytes_never_panic_and_are_refused_sanely(
        (codec, bytes) in codec().prop_flat_map(|c| (Just(c), raw_bytes(c))),
    ) {
        match codec.decode_client(&bytes) {
            Ok(frame) => {
                // Only an object can be a frame, and what was accepted must re-encode.
                let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
                match codec {
                    Codec::Json => prop_assert_eq!(first, Some(&b'{')),
                    Codec::MsgPack => prop_assert!(matches!(bytes[0], 0x80..=0x8f | 0xde | 0xdf)),
                }
                let again: ClientFrame = codec.decode(&codec.encode(&frame).unwrap()).unwrap();
                prop_assert_eq!(again, frame);
            }
            Err(e) => {
                prop_assert!(
                    matches!(
                        e.code,
                        ErrorCode::MalformedFrame
                            | ErrorCode::UnknownType
                            | ErrorCode::InvalidField
                            | ErrorCode::InvalidIdentifier
                    ),
                    "{:?}",
                    e
                );
                prop_assert!(!e.message.is_empty());
                // An id is only ever read from a whole, well-formed frame whose one `id` is
                // that number.
                let whole_json = || serde_json::from_slice::<serde::de::IgnoredAny>(&bytes).is_ok();
                if let Some(id) = e.id {
                    let doc = Doc::decode(&bytes, codec);
                    // serde_json refuses a number beyond f64 (`1e400`) only where it keeps it:
                    // the frame is whole, its id readable, and the field out of range.
                    if doc.is_none() && codec == Codec::Json && whole_json() {
                        // Refused for the number where serde keeps it, or first for a missing
                        // or bad `type` (`{"id":0,"limit":1e613935}` has none).
                        prop_assert!(
                            matches!(
                                e.code,
                                ErrorCode::InvalidField
                                    | ErrorCode::MalformedFrame
                                    | ErrorCode::UnknownType
                            ),
                            "{:?}",
                            e
                        );
                        if e.code == ErrorCode::InvalidField {
                            prop_assert!(e.message.contains("number out of range"), "{:?}", e);
                        }
                        return Ok(());
                    }
                    let entries = match &doc {
                        Some(Doc::Map(entries)) => entries,
                        other => return Err(TestCaseError::fail(format!(
                            "id {id} read from {other:?}"
                        ))),
                    };
                    let ids: Vec<_> = entries
                        .iter()
                        .filter(|(k, _)| *k == Doc::Str("id".into()))
                        .map(|(_, v)| v.clone())
                        .collect();
                    prop_assert_eq!(ids, vec![Doc::UInt(id)]);
                    prop_assert!(entries.iter().all(|(k, _)| matches!(k, Doc::Str(_))));
                    prop_assert!(doc.as_ref().map_or(0, Doc::depth) <= MAX_NESTING);
                }
            }
        }
    }
}
