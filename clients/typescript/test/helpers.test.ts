// The helpers over the protocol, against the real gateway: typing that stops by itself, history
// pages, unread counts, custom events, friends and notifications, and typed errors.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import { SwitchboardClient, SwitchboardError, type ServerFrameOf } from "../src/index.js";
import { Gateway, mint, nodeWebSocket, until } from "./harness.js";

let gateway: Gateway;
let alice: SwitchboardClient;
let bob: SwitchboardClient;
const bobFrames: Array<ServerFrameOf<"typing:start" | "typing:stop" | "room:event" | "friend:request">> = [];

before(async () => {
  gateway = await Gateway.start();
  const make = (user: string) =>
    new SwitchboardClient({ url: gateway.url, token: () => mint(user), webSocket: nodeWebSocket });
  alice = make("alice");
  bob = make("bob");
  for (const type of ["typing:start", "typing:stop", "room:event", "friend:request"] as const) {
    bob.onFrame(type, (frame) => bobFrames.push(frame));
  }
  await alice.connect();
  await bob.connect();
  await alice.request({ type: "room:create", roomId: "lobby" });
  await bob.join("lobby");
});

after(async () => {
  alice.close();
  bob.close();
  await gateway.stop();
});

test("typing starts once and stops by itself", async () => {
  alice.typing("lobby");
  alice.typing("lobby");
  await until(() => bobFrames.some((f) => f.type === "typing:stop"), 10_000, "typing:stop");
  const typing = bobFrames.filter((f) => f.type === "typing:start" || f.type === "typing:stop");
  assert.deepEqual(
    typing.map((f) => f.type),
    ["typing:start", "typing:stop"],
  );
});

test("history pages backwards, unread counts follow messages and read receipts", async () => {
  for (let i = 1; i <= 5; i++) await alice.send("lobby", `m${i}`);
  await until(() => bob.unread().get("lobby") === 5, 10_000, "five unread");
  const latest = await bob.history("lobby", { limit: 2 });
  assert.deepEqual(
    latest.messages.map((m) => m.seq),
    [4, 5],
  );
  assert.equal(latest.hasMore, true);
  const older = await bob.history("lobby", { beforeSeq: 4, limit: 2 });
  assert.deepEqual(
    older.messages.map((m) => m.content),
    ["m2", "m3"],
  );
  await bob.markRead("lobby", 4);
  assert.equal(bob.unread().get("lobby"), 1);
});

test("custom events reach the room, unstored", async () => {
  await alice.emit("lobby", "cursor:move", { x: 3, y: 4 });
  await until(() => bobFrames.some((f) => f.type === "room:event"), 10_000, "room:event");
  const event = bobFrames.find((f) => f.type === "room:event");
  assert.deepEqual(event?.type === "room:event" ? [event.event, event.data, event.from.id] : [], [
    "cursor:move",
    { x: 3, y: 4 },
    "alice",
  ]);
});

test("friends and notifications", async () => {
  assert.equal((await alice.requestFriend("bob")).status, "outgoing");
  await until(() => bobFrames.some((f) => f.type === "friend:request"), 10_000, "friend:request");
  const { notifications } = await bob.notifications();
  assert.equal(notifications[0]?.kind, "friend:request");
  await bob.readNotifications(notifications.map((n) => n.id));
  assert.equal((await bob.acceptFriend("alice")).status, "accepted");
  assert.deepEqual(
    (await alice.friends()).map((f) => [f.user.id, f.status]),
    [["bob", "accepted"]],
  );
  await alice.removeFriend("bob");
  assert.deepEqual(await alice.friends(), []);
});

test("a refusal rejects with the protocol's code", async () => {
  await assert.rejects(alice.rpc("game:move", { from: "e2" }), (error: unknown) => {
    return error instanceof SwitchboardError && error.code === "NOT_SUPPORTED";
  });
  await assert.rejects(bob.join("nowhere"), (error: unknown) => {
    return error instanceof SwitchboardError && error.code === "ROOM_NOT_FOUND";
  });
  await alice.mute("lobby");
  await alice.setPresence("away");
});
