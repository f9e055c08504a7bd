// A chat user for the scenarios: one Client plus a RoomTracker per room it is in. Every
// `message:new` is checked (order, duplicates), timed (latency from the stamp in its content) and
// counted; `settle()` finally counts what never arrived as lost.

import { Counter } from 'k6/metrics';
import {
  Client,
  RoomTracker,
  credentials,
  deliveries,
  deliveryLatency,
  messagesSent,
  sleepMs,
  stampOf,
  stampedContent,
} from './switchboard.js';

/// `typing:start` frames received from others.
export const typingReceived = new Counter('sb_typing_received');
/// `message:read` receipts received.
export const readsReceived = new Counter('sb_reads_received');

export class Member {
  /// `readEvery`: send a read receipt after every that many deliveries in a room (0: never).
  constructor(userId, index, { readEvery = 0, tags = {} } = {}) {
    const { userId: id, token } = credentials(userId, index);
    this.userId = id;
    this.token = token;
    this.tags = tags;
    this.readEvery = readEvery;
    this.rooms = new Map();
    this.sendCount = 0;
    this.epoch = undefined;
    this.client = this.newClient();
  }

  newClient() {
    const client = new Client({ userId: this.userId, token: this.token, tags: this.tags });
    client.on('message:new', (f) => this.onMessage(f.message));
    client.on('typing:start', () => typingReceived.add(1, this.tags));
    client.on('message:read', () => readsReceived.add(1, this.tags));
    return client;
  }

  async connect() {
    const ready = await this.client.connect();
    this.epoch = ready.epoch;
    return ready;
  }

  /// Closes the connection (normally), opens a new one and resumes every room from the last seq
  /// held. Resolves with `{ sameEpoch, recovered, replayed }`.
  async reconnect(awayMs = 0) {
    this.client.close();
    await sleepMs(awayMs);
    const previousEpoch = this.epoch;
    this.client = this.newClient();
    await this.connect();
    const sameEpoch = this.epoch === previousEpoch;
    let recovered = true;
    let replayed = 0;
    for (const tracker of this.rooms.values()) {
      const since = tracker.resumeFrom();
      const result = await this.client.join(tracker.roomId, since);
      recovered = recovered && result.recovered;
      replayed += tracker.replay(result, since);
    }
    return { sameEpoch, recovered, replayed };
  }

  /// Joins (or creates) a room and starts tracking it from where live delivery begins.
  async join(roomId) {
    const result = await this.client.ensureRoom(roomId);
    this.rooms.set(roomId, new RoomTracker(roomId, result.room.lastSeq, this.tags));
    return result;
  }

  onMessage(message) {
    const tracker = this.rooms.get(message.roomId);
    if (!tracker) return;
    if (!tracker.live(message)) return;
    deliveries.add(1, this.tags);
    const stamp = stampOf(message.content);
    if (stamp !== undefined) deliveryLatency.add(Date.now() - stamp, this.tags);
    if (this.readEvery > 0 && tracker.received % this.readEvery === 0) {
      this.client.read(message.roomId, tracker.floor);
    }
  }

  /// Sends a stamped message and records its seq as held. `again` (`{content, clientMsgId}` of
  /// an earlier send) repeats that send, as a client does after a lost ack.
  async send(roomId, text, again) {
    let content;
    let clientMsgId;
    if (again) {
      ({ content, clientMsgId } = again);
    } else {
      this.sendCount += 1;
      clientMsgId = `${this.userId}-${this.sendCount}`;
      content = stampedContent(text);
    }
    const sent = await this.client.send(roomId, content, clientMsgId);
    if (!again) this.lastSend = { roomId, content, clientMsgId, seq: sent.seq };
    if (sent.duplicate) return sent;
    messagesSent.add(1, this.tags);
    const tracker = this.rooms.get(roomId);
    if (tracker) tracker.take(sent.seq);
    return sent;
  }

  /// Counts lost messages in every room (see RoomTracker.settle); returns the total.
  async settle(graceMs) {
    let lost = 0;
    for (const tracker of this.rooms.values()) lost += await tracker.settle(this.client, graceMs);
    return lost;
  }

  close() {
    this.client.close();
  }
}
