// The client's protocol types (src/protocol.ts) against the protocol crate's JSON Schema
// (docs/protocol.schema.json, generated from the Rust types): every frame, result and object
// must have the same fields with the same types and the same optionality. The comparison is done
// by the compiler: test/generated/schema.ts is generated from the schema by
// scripts/schema-types.mjs, and a mismatch fails `tsc`, naming the frame, result or type.

import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { test } from "node:test";

import type * as Ours from "../src/protocol.js";
import type * as Schema from "./generated/schema.js";

/** `A` and `B` accept the same values and name the same fields (so an optional field present on
 * one side only is a mismatch too, which assignability alone would let through). */
type Same<A, B> = [A] extends [B]
  ? [B] extends [A]
    ? [keyof A] extends [keyof B]
      ? [keyof B] extends [keyof A]
        ? true
        : false
      : false
    : false
  : false;

/** The tags `T` whose members differ between the two unions (absent on one side included). */
type Mismatched<Tag extends string, A extends Record<Tag, string>, B extends Record<Tag, string>> = {
  [T in A[Tag] | B[Tag]]: Same<Extract<A, Record<Tag, T>>, Extract<B, Record<Tag, T>>> extends true ? never : T;
}[A[Tag] | B[Tag]];

/** `true` when nothing is mismatched; otherwise the compiler shows what is. */
type NoneOf<M> = [M] extends [never] ? true : { mismatched: M };
type Holds<S> = S extends true ? true : { differs: S };

const clientFrames: NoneOf<Mismatched<"type", Ours.ClientFrame, Schema.ClientFrame>> = true;
const serverFrames: NoneOf<Mismatched<"type", Ours.ServerFrame, Schema.ServerFrame>> = true;
const ackResults: NoneOf<Mismatched<"kind", Ours.AckResult, Schema.AckResult>> = true;

/** Every definition of the schema, checked. The runtime test below fails when the schema gains
 * one that is not listed here. */
const checked = {
  ClientFrame: clientFrames,
  ServerFrame: serverFrames,
  AckResult: ackResults,
  ErrorBody: true as Holds<Same<Ours.ErrorBody, Schema.ErrorBody>>,
  ErrorCode: true as Holds<Same<Ours.ErrorCode, Schema.ErrorCode>>,
  Friend: true as Holds<Same<Ours.Friend, Schema.Friend>>,
  FriendStatus: true as Holds<Same<Ours.FriendStatus, Schema.FriendStatus>>,
  Member: true as Holds<Same<Ours.Member, Schema.Member>>,
  Message: true as Holds<Same<Ours.Message, Schema.Message>>,
  MessageKind: true as Holds<Same<Ours.MessageKind, Schema.MessageKind>>,
  Notification: true as Holds<Same<Ours.Notification, Schema.Notification>>,
  PresenceStatus: true as Holds<Same<Ours.PresenceStatus, Schema.PresenceStatus>>,
  Role: true as Holds<Same<Ours.Role, Schema.Role>>,
  RoomId: true as Holds<Same<Ours.RoomId, Schema.RoomId>>,
  RoomInfo: true as Holds<Same<Ours.RoomInfo, Schema.RoomInfo>>,
  RoomKind: true as Holds<Same<Ours.RoomKind, Schema.RoomKind>>,
  RoomSummary: true as Holds<Same<Ours.RoomSummary, Schema.RoomSummary>>,
  UserId: true as Holds<Same<Ours.UserId, Schema.UserId>>,
  UserRef: true as Holds<Same<Ours.UserRef, Schema.UserRef>>,
};

test("every type of the protocol's JSON Schema is checked against ours", async () => {
  const schema = JSON.parse(
    await readFile(new URL("../../../../docs/protocol.schema.json", import.meta.url), "utf8"),
  ) as { definitions: Record<string, unknown> };
  assert.deepEqual(Object.keys(schema.definitions).sort(), Object.keys(checked).sort());
  assert.ok(Object.values(checked).every((ok) => ok === true));
});
