// The Switchboard protocol's frames and objects (docs/protocol.md), as JSON carries them.
// Checked field by field against docs/protocol.schema.json, which the Rust protocol crate
// generates from its types (test/schema.test.ts), and by name by the crate's test
// `typescript_types_name_every_frame`.
/** The codes after which the same request may succeed later, unchanged. */
export const RETRYABLE_CODES = new Set([
    "RATE_LIMITED",
    "STORE_UNAVAILABLE",
    "OUTCOME_UNKNOWN",
    "INTERNAL",
    "HOOK_UNAVAILABLE",
]);
const CLOSE_POLICIES = {
    1000: { reconnect: false, resume: false },
    1001: { reconnect: true, resume: true },
    1002: { reconnect: true, resume: true },
    1007: { reconnect: true, resume: true },
    1009: { reconnect: true, resume: true },
    1011: { reconnect: true, resume: true },
    1013: { reconnect: true, resume: true },
    4001: { reconnect: false, resume: false },
    4002: { reconnect: true, resume: false },
    4003: { reconnect: true, resume: true },
    4004: { reconnect: true, resume: true },
    4005: { reconnect: true, resume: true },
    4006: { reconnect: true, resume: true },
    4007: { reconnect: false, resume: false },
    4008: { reconnect: false, resume: false },
    4009: { reconnect: false, resume: false },
    4010: { reconnect: false, resume: false },
};
/** The policy of `code`; a drop without a close frame (1006) or an unknown code is like 1011. */
export function closePolicy(code) {
    return CLOSE_POLICIES[code] ?? { reconnect: true, resume: true };
}
//# sourceMappingURL=protocol.js.map