// The connection: authenticate, reconnect with backoff as the close codes say, resume every room
// from the last seq held, hand each message to the app once and in order, send from the outbox
// until acknowledged, refresh the token before it expires.
import { jsonCodec } from "./codec.js";
import { Outbox, OutboxFullError } from "./outbox.js";
import { closePolicy, RETRYABLE_CODES, } from "./protocol.js";
export class SwitchboardError extends Error {
    code;
    constructor(code, message) {
        super(message);
        this.name = "SwitchboardError";
        this.code = code;
    }
}
const OPEN = 1;
/** A typing indicator stops this long after the last `typing()` (the server's own is 3 s). */
const TYPING_IDLE_MS = 2_500;
/** While `typing()` keeps being called, `typing:start` is sent again this often. */
const TYPING_REPEAT_MS = 2_000;
/** Own message ids remembered, so a replay does not hand the app its own sends again. */
const OWN_IDS_KEPT = 10_000;
let fallbackCounter = 0;
function newClientMsgId() {
    const random = globalThis.crypto?.randomUUID?.();
    return random ?? `c-${Date.now().toString(36)}-${(fallbackCounter++).toString(36)}`;
}
export class SwitchboardClient {
    #options;
    #listeners = {
        state: new Set(),
        ready: new Set(),
        message: new Set(),
        gap: new Set(),
        frame: new Set(),
        sent: new Set(),
        closed: new Set(),
    };
    #outbox;
    #rooms = new Map();
    #waiting = new Map();
    /** Sends made in this run, by clientMsgId: their promises. */
    #sends = new Map();
    #webSocket;
    #codec;
    #ownIds = new Set();
    #typing = new Map();
    /** The user's read watermark per room, from every device. */
    #reads = new Map();
    /** Each member room's last seq as `session:ready` listed it. */
    #known = new Map();
    #ws;
    #state = "closed";
    #stopped = true;
    #attempt = 0;
    #prompt = false;
    #nextId = 1;
    #epoch;
    #ready;
    #reconnectTimer;
    #firstReady;
    /** Throws when there is no WebSocket to use: no `webSocket` option and no global one. */
    constructor(options) {
        this.#options = options;
        this.#webSocket = options.webSocket ?? defaultWebSocket();
        this.#codec = options.codec ?? jsonCodec;
        this.#outbox = new Outbox(options.outboxLimit ?? 1_000, options.storage);
    }
    get state() {
        return this.#state;
    }
    /** The last `session:ready`. */
    get session() {
        return this.#ready;
    }
    /** Messages waiting for their ack. */
    get unsent() {
        return this.#outbox.all();
    }
    on(event, listener) {
        const set = this.#listeners[event];
        set.add(listener);
        return () => set.delete(listener);
    }
    /** Connects (and keeps reconnecting); resolves with the first `session:ready`. */
    async connect() {
        if (!this.#stopped)
            throw new SwitchboardError("CLOSED", "already connecting or connected");
        this.#stopped = false;
        // Restored sends have no promise: their acks arrive as `sent` events.
        await this.#outbox.restore();
        const ready = new Promise((resolve, reject) => {
            this.#firstReady = { resolve, reject };
        });
        this.#open();
        return ready;
    }
    /** Closes for good (1000): no reconnect; unsent messages stay in the outbox (and storage). */
    close() {
        this.#stop(1000, "closed by the client");
        this.#ws?.close(1000, "normal");
    }
    // ---- Rooms and messages ----------------------------------------------------------------
    /** Joins a room; from then on it is resumed after every reconnect. */
    async join(roomId, options = {}) {
        const body = { type: "room:join", roomId };
        if (options.password !== undefined)
            body.password = options.password;
        const result = await this.#ask(body, "room");
        const room = this.#room(roomId);
        room.lastSeq = Math.max(room.lastSeq ?? 0, result.room.lastSeq);
        return result;
    }
    /** Leaves a room (on every device) and stops resuming it. */
    async leave(roomId) {
        await this.#ask({ type: "room:leave", roomId }, "ok");
        this.#rooms.delete(roomId);
    }
    /** Sends a message; resolves with its ack once, whatever reconnects happen in between. */
    send(roomId, content, options = {}) {
        return this.#enqueue({
            type: "message:send",
            roomId,
            content,
            kind: options.kind ?? "text",
            clientMsgId: options.clientMsgId ?? newClientMsgId(),
        });
    }
    /** Sends a direct message, as `send` does. */
    sendDirect(recipientId, content, options = {}) {
        return this.#enqueue({
            type: "dm:send",
            recipientId,
            content,
            kind: options.kind ?? "text",
            clientMsgId: options.clientMsgId ?? newClientMsgId(),
        });
    }
    /** Marks a room read up to `seq` on every device of the user. */
    async markRead(roomId, seq) {
        await this.#ask({ type: "message:read", roomId, seq }, "ok");
        this.#read(roomId, seq);
    }
    #read(roomId, seq) {
        this.#reads.set(roomId, Math.max(this.#reads.get(roomId) ?? 0, seq));
    }
    /** The latest `limit` messages before `beforeSeq` (the latest page without it), ascending. */
    async history(roomId, options = {}) {
        const body = { type: "history:fetch", roomId };
        if (options.beforeSeq !== undefined)
            body.beforeSeq = options.beforeSeq;
        if (options.limit !== undefined)
            body.limit = options.limit;
        return this.#ask(body, "history");
    }
    /** Shows the user typing in `roomId`; stops by itself `TYPING_IDLE_MS` after the last call. */
    typing(roomId) {
        const now = Date.now();
        const typing = this.#typing.get(roomId);
        if (typing !== undefined)
            clearTimeout(typing.timer);
        // The server's indicator lapses 3 s after the last start: repeat it while typing goes on.
        const startedAt = typing === undefined || now - typing.startedAt >= TYPING_REPEAT_MS
            ? (this.notify({ type: "typing:start", roomId }), now)
            : typing.startedAt;
        this.#typing.set(roomId, {
            startedAt,
            timer: setTimeout(() => this.stopTyping(roomId), TYPING_IDLE_MS),
        });
    }
    stopTyping(roomId) {
        const typing = this.#typing.get(roomId);
        if (typing === undefined)
            return;
        clearTimeout(typing.timer);
        this.#typing.delete(roomId);
        this.notify({ type: "typing:stop", roomId });
    }
    /** The user's unread messages per room (`lastSeq - lastReadSeq`, as `session:ready` counts):
     * from the last `session:ready`, the messages since and the read receipts of every device. */
    unread() {
        const counts = new Map();
        const rooms = new Set([...this.#known.keys(), ...this.#rooms.keys()]);
        for (const roomId of rooms) {
            const last = Math.max(this.#known.get(roomId) ?? 0, this.#rooms.get(roomId)?.lastSeq ?? 0);
            counts.set(roomId, Math.max(0, last - (this.#reads.get(roomId) ?? 0)));
        }
        return counts;
    }
    /** A custom event to everyone in the room (`room:event`), never stored. */
    async emit(roomId, event, data) {
        await this.#ask({ type: "room:emit", roomId, event, data }, "ok");
    }
    async setPresence(status) {
        await this.#ask({ type: "presence:update", status }, "ok");
    }
    /** Mutes a room for the user's pushes, on every device. */
    async mute(roomId, muted = true) {
        await this.#ask({ type: "room:mute", roomId, muted }, "ok");
    }
    async rpc(method, data) {
        return (await this.#ask({ type: "rpc", method, data }, "rpc")).data;
    }
    async notifications(options = {}) {
        const body = { type: "notifications:list" };
        if (options.limit !== undefined)
            body.limit = options.limit;
        if (options.before !== undefined)
            body.before = options.before;
        return this.#ask(body, "notifications");
    }
    async readNotifications(ids) {
        await this.#ask({ type: "notifications:read", ids }, "ok");
    }
    async friends() {
        return (await this.#ask({ type: "friends:list" }, "friends")).friends;
    }
    async requestFriend(userId) {
        return (await this.#ask({ type: "friend:request", userId }, "friend")).friend;
    }
    async acceptFriend(userId) {
        return (await this.#ask({ type: "friend:accept", userId }, "friend")).friend;
    }
    async removeFriend(userId) {
        await this.#ask({ type: "friend:remove", userId }, "ok");
    }
    /** Listens to one type of server frame, typed. */
    onFrame(type, listener) {
        return this.on("frame", (frame) => {
            if (frame.type === type)
                listener(frame);
        });
    }
    /** Any request of the protocol; rejects with its error code. */
    request(body) {
        return new Promise((resolve, reject) => {
            const ws = this.#ws;
            if (this.#state !== "connected" || ws === undefined) {
                reject(new SwitchboardError("DISCONNECTED", "not connected"));
                return;
            }
            const id = this.#nextId++;
            const timeout = this.#options.requestTimeoutMs ?? 30_000;
            const timer = setTimeout(() => {
                this.#waiting.delete(id);
                reject(new SwitchboardError("TIMEOUT", `no answer within ${timeout} ms`));
            }, timeout);
            this.#waiting.set(id, { resolve, reject, timer });
            this.#transmit(ws, { ...body, id });
        });
    }
    /** Sends a frame that has no answer (`typing:start`, `typing:stop`); false when not connected. */
    notify(frame) {
        const ws = this.#ws;
        if (this.#state !== "connected" || ws === undefined)
            return false;
        this.#transmit(ws, frame);
        return true;
    }
    async #ask(body, kind) {
        const result = await this.request(body);
        if (result.kind !== kind) {
            throw new SwitchboardError("INTERNAL", `expected a ${kind} result, got ${result.kind}`);
        }
        return result;
    }
    #room(roomId) {
        let room = this.#rooms.get(roomId);
        if (room === undefined) {
            room = { lastSeq: undefined, held: undefined };
            this.#rooms.set(roomId, room);
        }
        return room;
    }
    #enqueue(send) {
        // The same clientMsgId while it is pending: the same send, and the same answer.
        const pending = this.#sends.get(send.clientMsgId);
        if (pending !== undefined)
            return pending.promise;
        try {
            this.#outbox.add(send);
        }
        catch (error) {
            if (error instanceof OutboxFullError) {
                return Promise.reject(new SwitchboardError("OUTBOX_FULL", error.message));
            }
            throw error;
        }
        let settle;
        const promise = new Promise((resolve, reject) => {
            settle = { resolve, reject };
        });
        if (settle !== undefined)
            this.#sends.set(send.clientMsgId, { promise, ...settle });
        const ws = this.#ws;
        if (this.#state === "connected" && ws !== undefined)
            this.#sendNow(ws, send);
        return promise;
    }
    #sendNow(ws, send) {
        const id = this.#nextId++;
        this.#waiting.set(id, {
            resolve: (result) => this.#settleSend(send, result),
            reject: (error) => {
                // Not connected any more: it stays in the outbox and goes again on reconnect.
                if (error.code === "DISCONNECTED")
                    return;
                if (RETRYABLE_CODES.has(error.code)) {
                    setTimeout(() => {
                        const now = this.#ws;
                        if (this.#state === "connected" && now !== undefined && this.#outbox.get(send.clientMsgId)) {
                            this.#sendNow(now, send);
                        }
                    }, this.#backoff(1));
                    return;
                }
                this.#outbox.remove(send.clientMsgId);
                const waiter = this.#sends.get(send.clientMsgId);
                this.#sends.delete(send.clientMsgId);
                waiter?.reject(error);
            },
            timer: undefined,
        });
        this.#transmit(ws, { ...send, id });
    }
    #settleSend(send, result) {
        if (result.kind !== "sent")
            return;
        this.#outbox.remove(send.clientMsgId);
        this.#remember(result.messageId);
        const waiter = this.#sends.get(send.clientMsgId);
        this.#sends.delete(send.clientMsgId);
        if (waiter !== undefined)
            waiter.resolve(result);
        else
            this.#emit("sent", result, send);
    }
    #remember(messageId) {
        this.#ownIds.add(messageId);
        if (this.#ownIds.size > OWN_IDS_KEPT) {
            const oldest = this.#ownIds.values().next();
            if (!oldest.done)
                this.#ownIds.delete(oldest.value);
        }
    }
    // ---- The connection --------------------------------------------------------------------
    #open() {
        this.#setState(this.#attempt === 0 && this.#ready === undefined ? "connecting" : "reconnecting");
        void this.#token().then((token) => {
            if (this.#stopped)
                return;
            const ws = this.#webSocket(this.#options.url, [this.#codec.subprotocol]);
            if ("binaryType" in ws)
                ws.binaryType = "arraybuffer";
            this.#ws = ws;
            ws.onopen = () => this.#transmit(ws, { type: "auth", token });
            ws.onmessage = (event) => this.#onData(ws, event.data);
            ws.onclose = (event) => this.#onClose(ws, event.code, event.reason);
            ws.onerror = () => undefined;
        }, () => this.#retry());
    }
    async #token() {
        const source = this.#options.token;
        return typeof source === "string" ? source : await source();
    }
    #transmit(ws, frame) {
        if (ws.readyState === OPEN)
            ws.send(this.#codec.encode(frame));
    }
    #onData(ws, data) {
        if (ws !== this.#ws)
            return;
        const frame = this.#codec.decode(data);
        if (frame === undefined)
            return;
        this.#emit("frame", frame);
        switch (frame.type) {
            case "session:ready":
                this.#onReady(ws, frame);
                break;
            case "ack":
                this.#onAck(frame);
                break;
            case "message:new":
                this.#onMessage(frame.message);
                break;
            case "message:read":
                if (frame.userId === this.#ready?.user.id)
                    this.#read(frame.roomId, frame.seq);
                break;
            case "auth:expiring":
                this.#refresh(ws);
                break;
            case "server:shutdown":
                this.#prompt = true;
                break;
            default:
                break;
        }
    }
    #onReady(ws, ready) {
        const newEpoch = this.#epoch !== undefined && this.#epoch !== ready.epoch;
        this.#epoch = ready.epoch;
        this.#ready = ready;
        this.#attempt = 0;
        this.#prompt = false;
        this.#setState("connected");
        this.#emit("ready", ready);
        if (newEpoch) {
            // Seqs and read marks of the old history mean nothing in the new one.
            this.#known.clear();
            this.#reads.clear();
            for (const room of this.#rooms.values())
                room.lastSeq = undefined;
        }
        const member = new Set();
        for (const summary of ready.rooms) {
            member.add(summary.roomId);
            this.#read(summary.roomId, summary.lastReadSeq);
            this.#known.set(summary.roomId, Math.max(this.#known.get(summary.roomId) ?? 0, summary.lastSeq));
        }
        for (const [roomId, room] of this.#rooms) {
            // Not a member any more in the same history: left on another device. Joining again
            // would make the user a member again, so it is not resumed. (A new history remembers no
            // member: every room is joined again, and one that is gone is refused.)
            if (newEpoch || member.has(roomId))
                this.#resume(roomId, room, newEpoch);
            else
                this.#rooms.delete(roomId);
        }
        for (const send of this.#outbox.all())
            this.#sendNow(ws, send);
        const first = this.#firstReady;
        this.#firstReady = undefined;
        first?.resolve(ready);
    }
    /** Joins `roomId` again from the last seq handed to the app; live messages wait meanwhile. */
    #resume(roomId, room, newEpoch) {
        const since = newEpoch ? undefined : room.lastSeq;
        room.held = [];
        const body = { type: "room:join", roomId };
        if (since !== undefined)
            body.sinceSeq = since;
        this.request(body).then((result) => {
            const held = room.held ?? [];
            room.held = undefined;
            if (result.kind !== "room")
                return;
            if (since === undefined || !result.recovered) {
                room.lastSeq = result.room.lastSeq;
                this.#emit("gap", {
                    roomId,
                    reason: newEpoch ? "new-epoch" : "not-recovered",
                    messages: result.messages,
                });
            }
            else {
                for (const message of result.messages)
                    this.#deliver(room, message);
            }
            for (const message of held)
                this.#deliver(room, message);
        }, (error) => {
            const held = room.held ?? [];
            room.held = undefined;
            // Disconnected: the next ready resumes it again from the same seq.
            if (error instanceof SwitchboardError && error.code === "DISCONNECTED")
                return;
            // Refused (left meanwhile, banned, gone): stop resuming it; what arrived is still news.
            this.#rooms.delete(roomId);
            for (const message of held)
                this.#deliver(room, message);
        });
    }
    #onMessage(message) {
        const room = this.#room(message.roomId);
        if (room.held !== undefined) {
            room.held.push(message);
            return;
        }
        this.#deliver(room, message);
    }
    /** Hands `message` to the app unless it was handed before (or is one of its own sends). */
    #deliver(room, message) {
        if (room.lastSeq !== undefined && message.seq <= room.lastSeq)
            return;
        room.lastSeq = message.seq;
        if (this.#ownIds.has(message.messageId))
            return;
        this.#emit("message", message);
    }
    #onAck(frame) {
        const waiting = this.#waiting.get(frame.id);
        if (waiting === undefined)
            return;
        this.#waiting.delete(frame.id);
        if (waiting.timer !== undefined)
            clearTimeout(waiting.timer);
        if (frame.result !== undefined)
            waiting.resolve(frame.result);
        else {
            const error = frame.error ?? { code: "INTERNAL", message: "an ack without result" };
            waiting.reject(new SwitchboardError(error.code, error.message));
        }
    }
    #refresh(ws) {
        if (typeof this.#options.token === "string")
            return;
        void this.#token().then((token) => {
            if (ws !== this.#ws)
                return;
            const id = this.#nextId++;
            // Refused, the connection keeps its old token and closes with 4003 at its expiry; the
            // reconnect then asks for a token again.
            this.#waiting.set(id, { resolve: () => undefined, reject: () => undefined, timer: undefined });
            this.#transmit(ws, { type: "auth:refresh", id, token });
        }, () => undefined);
    }
    #onClose(ws, code, reason) {
        if (ws !== this.#ws)
            return;
        this.#ws = undefined;
        this.#failWaiting();
        if (this.#stopped)
            return;
        if (!closePolicy(code).reconnect) {
            this.#stop(code, reason);
            return;
        }
        this.#retry();
    }
    #retry() {
        if (this.#stopped)
            return;
        this.#setState("reconnecting");
        const delay = this.#prompt ? 0 : this.#backoff(this.#attempt);
        this.#prompt = false;
        this.#attempt += 1;
        this.#reconnectTimer = setTimeout(() => this.#open(), delay);
    }
    /** Full jitter: a random wait up to `min(maxMs, baseMs * 2^attempt)`. */
    #backoff(attempt) {
        const base = this.#options.reconnect?.baseMs ?? 500;
        const max = this.#options.reconnect?.maxMs ?? 30_000;
        return Math.random() * Math.min(max, base * 2 ** Math.min(attempt, 30));
    }
    #failWaiting() {
        const waiting = [...this.#waiting.values()];
        this.#waiting.clear();
        for (const w of waiting) {
            if (w.timer !== undefined)
                clearTimeout(w.timer);
            w.reject(new SwitchboardError("DISCONNECTED", "the connection closed before the answer"));
        }
        for (const room of this.#rooms.values())
            room.held = undefined;
    }
    #stop(code, reason) {
        if (this.#stopped)
            return;
        this.#stopped = true;
        if (this.#reconnectTimer !== undefined)
            clearTimeout(this.#reconnectTimer);
        this.#failWaiting();
        this.#setState("closed");
        const first = this.#firstReady;
        this.#firstReady = undefined;
        first?.reject(new SwitchboardError("CLOSED", `closed with ${code}: ${reason}`));
        this.#emit("closed", { code, reason });
    }
    #setState(state) {
        if (this.#state === state)
            return;
        this.#state = state;
        this.#emit("state", state);
    }
    #emit(event, ...args) {
        for (const listener of this.#listeners[event]) {
            try {
                listener(...args);
            }
            catch (error) {
                // The app's listener failed: report it, but keep the connection's bookkeeping going.
                queueMicrotask(() => {
                    throw error;
                });
            }
        }
    }
}
function defaultWebSocket() {
    const Ctor = globalThis.WebSocket;
    if (Ctor === undefined) {
        throw new SwitchboardError("CLOSED", "no global WebSocket: pass the `webSocket` option (e.g. the ws package)");
    }
    return (url, protocols) => new Ctor(url, protocols);
}
//# sourceMappingURL=client.js.map