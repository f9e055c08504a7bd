// How frames travel: JSON in text messages by default, or another encoding the gateway speaks
// (docs/protocol.md, "Subprotocols and codecs"), named by its WebSocket subprotocol.
/** JSON in text messages: the default, with no dependency. */
export const jsonCodec = {
    subprotocol: "switchboard.v1.json",
    encode: (frame) => JSON.stringify(frame),
    decode(data) {
        if (typeof data !== "string")
            return undefined;
        try {
            return JSON.parse(data);
        }
        catch {
            return undefined;
        }
    },
};
/** The bytes of a binary WebSocket message as browsers (`ArrayBuffer`) and `ws` (`Buffer`,
 * or an array of fragments) deliver them. */
export function messageBytes(data) {
    if (data instanceof Uint8Array)
        return data;
    if (data instanceof ArrayBuffer)
        return new Uint8Array(data);
    if (Array.isArray(data) && data.every((part) => part instanceof Uint8Array)) {
        const parts = data;
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
//# sourceMappingURL=codec.js.map