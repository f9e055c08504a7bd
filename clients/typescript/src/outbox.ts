// Sends waiting for their ack: kept across disconnects (and, with a storage adapter, across page
// reloads) and sent again under their original `clientMsgId`, so a send is stored exactly once.

import type { MessageKind, RoomId, UserId } from "./protocol.js";

/** A send as the outbox keeps it: what `message:send` or `dm:send` carries, without an `id`. */
export type PendingSend =
  | { type: "message:send"; roomId: RoomId; content: string; kind: MessageKind; clientMsgId: string }
  | { type: "dm:send"; recipientId: UserId; content: string; kind: MessageKind; clientMsgId: string };

/** Where the outbox is kept between page loads (IndexedDB, localStorage, a file...). */
export interface OutboxStorage {
  load(): PendingSend[] | Promise<PendingSend[]>;
  save(pending: readonly PendingSend[]): void | Promise<void>;
}

/** An outbox in `localStorage` (or any Storage) under `key`. */
export function webStorage(storage: Storage, key = "switchboard-outbox"): OutboxStorage {
  return {
    load() {
      const raw = storage.getItem(key);
      if (raw === null) return [];
      try {
        const parsed: unknown = JSON.parse(raw);
        return Array.isArray(parsed) ? (parsed as PendingSend[]) : [];
      } catch {
        return [];
      }
    },
    save(pending) {
      storage.setItem(key, JSON.stringify(pending));
    },
  };
}

export class OutboxFullError extends Error {
  constructor(limit: number) {
    super(`the outbox holds ${limit} unsent messages already`);
    this.name = "OutboxFullError";
  }
}

/** Bounded, in send order; a full outbox refuses new sends rather than dropping old ones. */
export class Outbox {
  readonly #limit: number;
  readonly #storage: OutboxStorage | undefined;
  readonly #pending = new Map<string, PendingSend>();

  constructor(limit: number, storage?: OutboxStorage) {
    this.#limit = limit;
    this.#storage = storage;
  }

  /** Sends kept by an earlier run, in their order. */
  async restore(): Promise<PendingSend[]> {
    if (this.#storage === undefined) return [];
    const restored = await this.#storage.load();
    for (const send of restored.slice(0, this.#limit)) this.#pending.set(send.clientMsgId, send);
    return [...this.#pending.values()];
  }

  add(send: PendingSend): void {
    if (this.#pending.has(send.clientMsgId)) return;
    if (this.#pending.size >= this.#limit) throw new OutboxFullError(this.#limit);
    this.#pending.set(send.clientMsgId, send);
    this.#persist();
  }

  remove(clientMsgId: string): void {
    if (this.#pending.delete(clientMsgId)) this.#persist();
  }

  get(clientMsgId: string): PendingSend | undefined {
    return this.#pending.get(clientMsgId);
  }

  /** Everything not yet acknowledged, oldest first. */
  all(): PendingSend[] {
    return [...this.#pending.values()];
  }

  #persist(): void {
    if (this.#storage === undefined) return;
    // A storage that fails loses persistence, not the sends held in memory.
    void Promise.resolve(this.#storage.save(this.all())).catch(() => undefined);
  }
}
