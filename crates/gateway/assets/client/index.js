// switchboard-client: a Switchboard client that keeps the promise of docs/protocol.md —
// reconnect as the close codes say, resume every room, hand each message over once and in
// order, and send what was typed offline exactly once.
export { SwitchboardClient, SwitchboardError, } from "./client.js";
export { jsonCodec, messageBytes } from "./codec.js";
export { indexedDbStorage } from "./indexeddb.js";
export { Outbox, OutboxFullError, webStorage } from "./outbox.js";
export * from "./protocol.js";
//# sourceMappingURL=index.js.map