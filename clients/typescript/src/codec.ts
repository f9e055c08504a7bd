// How frames travel: JSON in text messages by default, or another encoding the gateway speaks
// (docs/protocol.md, "Subprotocols and codecs"), named by its WebSocket subprotocol.

import type { ClientFrame, ServerFrame } from "./protocol.js";

export interface Codec {
  /** The subprotocol the client offers, e.g. `switchboard.v1.json`. */
  readonly subprotocol: string;
  /** A WebSocket message: text for a text codec, bytes for a binary one. */
  encode(frame: ClientFrame): string | Uint8Array;
  /** The frame in a received message; `undefined` when the message is not one (wrong kind,
   * undecodable), which the client ignores. */
  decode(data: unknown): ServerFrame | undefined;
}

/** JSON in text messages: the default, with no dependency. */
export const jsonCodec: Codec = {
  subprotocol: "switchboard.v1.json",
  encode: (frame) => JSON.stringify(frame),
  decode(data) {
    if (typeof data !== "string") return undefined;
    try {
      return JSON.parse(data) as ServerFrame;
    } catch {
      return undefined;
    }
  },
};

/** The bytes of a binary WebSocket message as browsers (`ArrayBuffer`) and `ws` (`Buffer`,
 * or an array of fragments) deliver them. */
export function messageBytes(data: unknown): Uint8Array | undefined {
  if (data instanceof Uint8Array) return data;
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  if (Array.isArray(data) && data.every((part) => part instanceof Uint8Array)) {
    const parts = data as Uint8Array[];
    const whole = new Uint8Array(parts.reduce((n, part) => n + part.length, 0));
    let at = 0;
    for (const part of parts) {
      whole.set(part, at);
      at += part.length;
    }
    return whole;
  }
  return undefined;
}
