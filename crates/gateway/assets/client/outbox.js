// Sends waiting for their ack: kept across disconnects (and, with a storage adapter, across page
// reloads) and sent again under their original `clientMsgId`, so a send is stored exactly once.
/** An outbox in `localStorage` (or any Storage) under `key`. */
export function webStorage(storage, key = "switchboard-outbox") {
    return {
        load() {
            const raw = storage.getItem(key);
            if (raw === null)
                return [];
            try {
                const parsed = JSON.parse(raw);
                return Array.isArray(parsed) ? parsed : [];
            }
            catch {
                return [];
            }
        },
        save(pending) {
            storage.setItem(key, JSON.stringify(pending));
        },
    };
}
export class OutboxFullError extends Error {
    constructor(limit) {
        super(`the outbox holds ${limit} unsent messages already`);
        this.name = "OutboxFullError";
    }
}
/** Bounded, in send order; a full outbox refuses new sends rather than dropping old ones. */
export class Outbox {
    #limit;
    #storage;
    #pending = new Map();
    constructor(limit, storage) {
        this.#limit = limit;
        this.#storage = storage;
    }
    /** Sends kept by an earlier run, in their order. */
    async restore() {
        if (this.#storage === undefined)
            return [];
        const restored = await this.#storage.load();
        for (const send of restored.slice(0, this.#limit))
            this.#pending.set(send.clientMsgId, send);
        return [...this.#pending.values()];
    }
    add(send) {
        if (this.#pending.has(send.clientMsgId))
            return;
        if (this.#pending.size >= this.#limit)
            throw new OutboxFullError(this.#limit);
        this.#pending.set(send.clientMsgId, send);
        this.#persist();
    }
    remove(clientMsgId) {
        if (this.#pending.delete(clientMsgId))
            this.#persist();
    }
    get(clientMsgId) {
        return this.#pending.get(clientMsgId);
    }
    /** Everything not yet acknowledged, oldest first. */
    all() {
        return [...this.#pending.values()];
    }
    #persist() {
        if (this.#storage === undefined)
            return;
        // A storage that fails loses persistence, not the sends held in memory.
        void Promise.resolve(this.#storage.save(this.all())).catch(() => undefined);
    }
}
//# sourceMappingURL=outbox.js.map