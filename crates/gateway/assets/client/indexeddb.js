// The outbox in IndexedDB: sends typed offline survive a reload or a closed tab, without
// localStorage's size limit and synchronous writes.
const STORE = "outbox";
const KEY = "pending";
/** An outbox in the IndexedDB database `name` (one per user if several share a browser). */
export function indexedDbStorage(name = "switchboard-outbox", factory) {
    let database;
    const open = () => (database ??= new Promise((resolve, reject) => {
        const idb = factory ?? globalThis.indexedDB;
        if (idb === undefined) {
            reject(new Error("no IndexedDB here"));
            return;
        }
        const request = idb.open(name, 1);
        request.onupgradeneeded = () => request.result.createObjectStore(STORE);
        request.onsuccess = () => resolve(request.result);
        request.onerror = () => reject(request.error ?? new Error(`cannot open ${name}`));
    }));
    // Transactions on one store run in the order they are created, and each save creates its own
    // once the database is open, in call order: the last save wins.
    const run = async (mode, work) => {
        const db = await open();
        return new Promise((resolve, reject) => {
            const transaction = db.transaction(STORE, mode);
            const request = work(transaction.objectStore(STORE));
            transaction.oncomplete = () => resolve(request.result);
            transaction.onabort = () => reject(transaction.error ?? new Error("IndexedDB transaction aborted"));
        });
    };
    return {
        async load() {
            const stored = await run("readonly", (store) => store.get(KEY));
            return Array.isArray(stored) ? stored : [];
        },
        async save(pending) {
            await run("readwrite", (store) => store.put([...pending], KEY));
        },
    };
}
//# sourceMappingURL=indexeddb.js.map