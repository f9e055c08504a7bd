// MessagePack in binary messages (`switchboard.v1.msgpack`): smaller frames, the same shape as
// JSON. A separate entry point, `switchboard-client/msgpack`, so that only apps that use it
// need its one dependency, `@msgpack/msgpack`.

import { decode, encode } from "@msgpack/msgpack";

import { messageBytes, type Codec } from "./codec.js";
import type { ServerFrame } from "./protocol.js";

export const msgpackCodec: Codec = {
  subprotocol: "switchboard.v1.msgpack",
  // Absent optional fields are left out, as the protocol asks, rather than sent as nil.
  encode: (frame) => encode(frame, { ignoreUndefined: true }),
  decode(data) {
    const bytes = messageBytes(data);
    if (bytes === undefined) return undefined;
    try {
      const frame = decode(bytes);
      return typeof frame === "object" && frame !== null ? (frame as ServerFrame) : undefined;
    } catch {
      return undefined;
    }
  },
};
