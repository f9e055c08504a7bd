// switchboard-client: a Switchboard client that keeps the promise of docs/protocol.md —
// reconnect as the close codes say, resume every room, hand each message over once and in
// order, and send what was typed offline exactly once.

export {
  SwitchboardClient,
  SwitchboardError,
  type ClientEvents,
  type ClientErrorCode,
  type ClientOptions,
  type ConnectionState,
  type GapReason,
  type Ready,
  type Sent,
  type TokenSource,
  type WebSocketFactory,
  type WebSocketLike,
} from "./client.js";
export { jsonCodec, messageBytes, type Codec } from "./codec.js";
export { indexedDbStorage } from "./indexeddb.js";
export { Outbox, OutboxFullError, webStorage, type OutboxStorage, type PendingSend } from "./outbox.js";
export * from "./protocol.js";
