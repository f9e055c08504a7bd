//! What the tests of the protocol's documentation and of the TypeScript types share.

// Each test crate that includes this uses part of it.
#![allow(dead_code)]

use switchboard_protocol::AckResult;

/// The `kind` of every [`AckResult`] variant. [`ack_result_kind`] stops compiling when a variant is
/// added, which is the reminder to extend this list.
pub const ACK_RESULT_KINDS: [&str; 9] = [
    "ok",
    "room",
    "sent",
    "history",
    "notifications",
    "friend",
    "friends",
    "rpc",
    "auth",
];

pub fn ack_result_kind(result: &AckResult) -> &'static str {
    match result {
        AckResult::Ok => "ok",
        AckResult::Room { .. } => "room",
        AckResult::Sent { .. } => "sent",
        AckResult::History { .. } => "history",
        AckResult::Notifications { .. } => "notifications",
        AckResult::Friend { .. } => "friend",
        AckResult::Friends { .. } => "friends",
        AckResult::Rpc { .. } => "rpc",
        AckResult::Auth { .. } => "auth",
    }
}
