// The client against the real gateway binary: what an app would see.

import assert from "node:assert/strict";
import { after, test } from "node:test";

import { SwitchboardClient, type ClientOptions, type ConnectionState, type Message } from "../src/index.js";
import { msgpackCodec } from "../src/msgpack.js";
import { Gateway, Postgres, mint, nodeWebSocket, until } from "./harness.js";

const stops: Array<() => Promise<void>> = [];
after(async () => {
  for (const stop of stops.reverse()) await stop();
});

function client(
  gateway: Gateway,
  user: string,
  token: () => string = () => mint(user),
  options: Partial<ClientOptions> = {},
): SwitchboardClient {
  const c = new SwitchboardClient({
    url: gateway.url,
    token,
    webSocket: nodeWebSocket,
    reconnect: { baseMs: 50, maxMs: 500 },
    ...options,
  });
  stops.push(async () => c.close());
  return c;
}

/** Every message the app is handed, and every state it goes through. */
function watch(c: SwitchboardClient): { messages: Message[]; states: ConnectionState[] } {
  const seen = { messages: [] as Message[], states: [] as ConnectionState[] };
  c.on("message", (m) => seen.messages.push(m));
  c.on("state", (s) => seen.states.push(s));
  return seen;
}

test("two users chat: each message is handed over once, and each send resolves once", async () => {
  const gateway = await Gateway.start();
  stops.push(() => gateway.stop());
  const alice = client(gateway, "alice");
  const bob = client(gateway, "bob");
  const bobSees = watch(bob);
  await alice.connect();
  await bob.connect();
  await alice.request({ type: "room:create", roomId: "lobby" });
  await bob.join("lobby");
  const sent = await alice.send("lobby", "hello bob");
  assert.equal(sent.duplicate, false);
  assert.equal(sent.seq, 1);
  await until(() => bobSees.messages.length === 1, 10_000, "bob's message");
  assert.equal(bobSees.messages[0]?.content, "hello bob");
  assert.equal(bobSees.messages[0]?.sender.id, "alice");
  assert.deepEqual(bobSees.states, ["connecting", "connected"]);
});

test("after a gateway restart every room resumes and the outbox is sent: nothing missing, nothing twice", async () => {
  const postgres = await Postgres.start();
  stops.push(() => postgres.stop());
  const gateway = await Gateway.start({ DATABASE_URL: postgres.url });
  stops.push(() => gateway.stop());
  const alice = client(gateway, "alice");
  const bob = client(gateway, "bob");
  const bobSees = watch(bob);
  const aliceSees = watch(alice);
  await alice.connect();
  await bob.connect();
  await alice.request({ type: "room:create", roomId: "team" });
  await bob.join("team");
  for (const text of ["one", "two", "three"]) await alice.send("team", text);
  await until(() => bobSees.messages.length === 3, 10_000, "the first three");

  await gateway.kill();
  await until(() => alice.state === "reconnecting" && bob.state === "reconnecting", 10_000, "both reconnecting");
  // Typed while the server is gone: kept in the outbox, sent after the reconnect.
  const offline = ["four", "five", "six"].map((text) => alice.send("team", text));
  assert.equal(alice.unsent.length, 3);
  await gateway.restart();
  const acks = await Promise.all(offline);
  assert.deepEqual(
    acks.map((a) => a.seq),
    [4, 5, 6],
  );
  assert.equal(alice.unsent.length, 0);
  await until(() => bobSees.messages.length === 6, 20_000, "bob's six messages");
  await alice.send("team", "seven");
  await until(() => bobSees.messages.length === 7, 10_000, "the live one after");
  assert.deepEqual(
    bobSees.messages.map((m) => [m.seq, m.content]),
    [
      [1, "one"],
      [2, "two"],
      [3, "three"],
      [4, "four"],
      [5, "five"],
      [6, "six"],
      [7, "seven"],
    ],
  );
  assert.deepEqual(aliceSees.messages, [], "her own sends are not handed back to her");
  assert.ok(bobSees.states.includes("reconnecting"));
  assert.equal(bob.state, "connected");
});

test("a send whose ack was lost resolves once from the retry's duplicate answer", async () => {
  const gateway = await Gateway.start();
  stops.push(() => gateway.stop());
  const alice = client(gateway, "alice");
  await alice.connect();
  await alice.request({ type: "room:create", roomId: "notes" });
  const [first, same] = await Promise.all([
    alice.send("notes", "once", { clientMsgId: "note-1" }),
    alice.send("notes", "once", { clientMsgId: "note-1" }),
  ]);
  assert.deepEqual(same, first, "sent twice while pending: one send, one answer");
  // The same clientMsgId again, as after a lost ack: the original answer, nothing stored twice.
  const again = await alice.send("notes", "once", { clientMsgId: "note-1" });
  assert.equal(again.duplicate, true);
  assert.equal(again.messageId, first.messageId);
  assert.equal(again.seq, first.seq);
  const history = await alice.request({ type: "history:fetch", roomId: "notes" });
  assert.equal(history.kind, "history");
  assert.equal(history.kind === "history" ? history.messages.length : -1, 1);
});

test("the token is refreshed before it expires and the connection lives on", async () => {
  const gateway = await Gateway.start({ SWITCHBOARD_TOKEN_REFRESH_NOTICE_MS: "2000" });
  stops.push(() => gateway.stop());
  let minted = 0;
  const alice = client(gateway, "alice", () => {
    minted += 1;
    return mint("alice", 3);
  });
  const seen = watch(alice);
  let refreshed = 0;
  alice.on("frame", (frame) => {
    if (frame.type === "ack" && frame.result?.kind === "auth") refreshed += 1;
  });
  await alice.connect();
  const firstExpiry = (Math.floor(Date.now() / 1000) + 3) * 1000;
  await until(() => refreshed >= 2 && Date.now() > firstExpiry + 1_000, 15_000, "two refreshes");
  // Lived past its first token's expiry, refreshed twice, on one connection.
  assert.deepEqual(seen.states, ["connecting", "connected"]);
  assert.ok(minted >= 3, `minted ${minted}`);
});

test("a connection replaced by a newer one (4007) does not come back by itself", async () => {
  const gateway = await Gateway.start({ SWITCHBOARD_MAX_CONNECTIONS_PER_USER: "1" });
  stops.push(() => gateway.stop());
  const first = client(gateway, "alice");
  const closed: number[] = [];
  first.on("closed", ({ code }) => closed.push(code));
  await first.connect();
  const second = client(gateway, "alice");
  await second.connect();
  await until(() => closed.length === 1, 10_000, "the first connection's close");
  assert.deepEqual(closed, [4007]);
  assert.equal(first.state, "closed");
  assert.equal(second.state, "connected");
});

test("a MessagePack client and a JSON client chat, page history and relay events alike", async () => {
  const gateway = await Gateway.start();
  stops.push(() => gateway.stop());
  const protocols: string[][] = [];
  const alice = client(gateway, "alice", () => mint("alice"), {
    codec: msgpackCodec,
    webSocket: (url, offered) => {
      protocols.push(offered);
      return nodeWebSocket(url, offered);
    },
  });
  const bob = client(gateway, "bob");
  const aliceSees = watch(alice);
  const bobSees = watch(bob);
  const ready = await alice.connect();
  assert.equal(ready.user.id, "alice");
  assert.deepEqual(protocols, [["switchboard.v1.msgpack"]]);
  await bob.connect();
  await alice.request({ type: "room:create", roomId: "mixed" });
  await bob.join("mixed");
  assert.equal((await alice.send("mixed", "packed")).seq, 1);
  assert.equal((await bob.send("mixed", "texted")).seq, 2);
  await until(() => aliceSees.messages.length === 1 && bobSees.messages.length === 1, 10_000, "both messages");
  assert.deepEqual(
    [aliceSees.messages[0]?.content, aliceSees.messages[0]?.sender.id, aliceSees.messages[0]?.seq],
    ["texted", "bob", 2],
  );
  assert.equal(bobSees.messages[0]?.content, "packed");
  const page = await alice.history("mixed");
  assert.deepEqual(
    page.messages.map((m) => [m.seq, m.content]),
    [
      [1, "packed"],
      [2, "texted"],
    ],
  );
  const emitted: unknown[] = [];
  bob.on("frame", (f) => {
    if (f.type === "room:event") emitted.push(f.data);
  });
  await alice.emit("mixed", "cursor:move", { x: 3, y: [1, 2] });
  await until(() => emitted.length === 1, 10_000, "the custom event");
  assert.deepEqual(emitted, [{ x: 3, y: [1, 2] }]);
});
