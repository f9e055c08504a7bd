// The Switchboard protocol for k6 scripts: tokens, a client with request/ack matching, and a
// per-room sequence tracker that counts gaps, duplicates and out-of-order deliveries.
//
// Frames are JSON text (the default codec, no subprotocol offered). See docs/protocol.md.

import { WebSocket } from 'k6/experimental/websockets';
import { setTimeout } from 'k6/timers';
import crypto from 'k6/crypto';
import encoding from 'k6/encoding';
import exec from 'k6/execution';
import { Counter, Trend } from 'k6/metrics';

// ---------------------------------------------------------------------------------------------
// Settings shared by every scenario (environment variables, see loadtest/README.md).

export const TARGET_URL = __ENV.TARGET_URL || 'ws://127.0.0.1:8080/ws';
/// `header` (Authorization: Bearer on the upgrade) or `frame` (a first `auth` frame, as browsers do).
export const AUTH_MODE = (__ENV.AUTH_MODE || 'header').toLowerCase();
/// Time one request may wait for its ack, and a connection for session:ready.
export const REQUEST_TIMEOUT_MS = int('REQUEST_TIMEOUT_MS', 10000);
/// Trend columns in the end-of-test summary (k6 leaves out p(99) by default).
export const SUMMARY_TREND_STATS = ['avg', 'min', 'med', 'max', 'p(90)', 'p(95)', 'p(99)'];
const SECRET = __ENV.SWITCHBOARD_JWT_SECRET || '';
const TOKEN_TTL_SECS = int('TOKEN_TTL_SECS', 3600);
// Tokens made by `gateway token`, one per line; VU n uses line n (mod the count). An absolute path:
// k6 resolves relative ones against this file. Only readable in the init context, so it is read
// here, once per VU.
const TOKENS = __ENV.TOKENS_FILE
  ? open(__ENV.TOKENS_FILE)
      .split('\n')
      .map((l) => l.trim())
      .filter((l) => l !== '')
  : [];

/// An integer environment variable, or `fallback`.
export function int(name, fallback) {
  const raw = __ENV[name];
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isFinite(n)) throw new Error(`${name}=${raw} is not a number`);
  return n;
}

/// A boolean environment variable (`1`, `true`, `yes`), or `fallback`.
export function flag(name, fallback) {
  const raw = __ENV[name];
  if (raw === undefined || raw === '') return fallback;
  return ['1', 'true', 'yes'].includes(raw.toLowerCase());
}

/// The http(s) base of TARGET_URL (`ws://h:p/ws` → `http://h:p`), for /metrics and /readyz.
export function httpBase(url = TARGET_URL) {
  return url.replace(/^ws/, 'http').replace(/\/ws\/?$/, '');
}

/// A short id for this run, the same in every VU: pass setup()'s result on. Room and user ids
/// carry it so runs against a long-lived (e.g. PostgreSQL-backed) gateway never collide.
export function runId() {
  return __ENV.RUN_ID || Date.now().toString(36);
}

// ---------------------------------------------------------------------------------------------
// Metrics every scenario shares. Scenarios put thresholds on them.

/// Time from opening the socket to `session:ready` (TCP + upgrade + auth).
export const handshakeTime = new Trend('sb_handshake_time', true);
/// Connections that did not reach `session:ready` (refused, closed, timed out).
export const handshakeFailures = new Counter('sb_handshake_failures');
/// Requests answered with an error, or not answered in time.
export const requestFailures = new Counter('sb_request_failures');
/// Connections the server closed on its own (any close code the client did not ask for).
export const unexpectedCloses = new Counter('sb_unexpected_closes');
/// End-to-end latency: from the timestamp a sender put in the content to its delivery.
export const deliveryLatency = new Trend('sb_delivery_latency', true);
/// `message:new` frames received.
export const deliveries = new Counter('sb_deliveries');
/// Messages stored (acked) but never delivered to a member that should have had them.
export const messagesLost = new Counter('sb_messages_lost');
/// A seq delivered twice to one client (live, replay or own ack).
export const duplicates = new Counter('sb_duplicates');
/// A `message:new` whose seq is below one already delivered live on the same connection.
export const outOfOrder = new Counter('sb_out_of_order');
/// Messages acknowledged to their sender.
export const messagesSent = new Counter('sb_messages_sent');

// ---------------------------------------------------------------------------------------------
// Tokens.

function b64url(text) {
  return encoding.b64encode(text, 'rawurl');
}

/// An HS256 JWT for `sub`, signed with SWITCHBOARD_JWT_SECRET, as `gateway token` makes them.
export function mintToken(sub, name, ttlSecs = TOKEN_TTL_SECS) {
  if (SECRET === '') {
    throw new Error('set SWITCHBOARD_JWT_SECRET (HS256) or TOKENS_FILE to connect');
  }
  const now = Math.floor(Date.now() / 1000);
  const header = b64url(JSON.stringify({ alg: 'HS256', typ: 'JWT' }));
  const claims = b64url(JSON.stringify({ sub, name: name || sub, iat: now, exp: now + ttlSecs }));
  const signature = crypto.hmac('sha256', SECRET, `${header}.${claims}`, 'base64rawurl');
  return `${header}.${claims}.${signature}`;
}

/// The `sub` of a token (no verification: the server does that).
export function tokenSubject(token) {
  const payload = token.split('.')[1] || '';
  return JSON.parse(encoding.b64decode(payload, 'rawurl', 's')).sub;
}

/// A user and a token for them: `userId` minted with the secret, or the TOKENS_FILE line of
/// `index` (whose `sub` then names the user).
export function credentials(userId, index) {
  if (TOKENS.length > 0) {
    const token = TOKENS[index % TOKENS.length];
    return { userId: tokenSubject(token), token };
  }
  return { userId, token: mintToken(userId, userId) };
}

// ---------------------------------------------------------------------------------------------
// Small async helpers.

/// Resolves after `ms` milliseconds.
export function sleepMs(ms) {
  return new Promise((resolve) => setTimeout(resolve, Math.max(0, ms)));
}

/// A random integer in [lo, hi].
export function randInt(lo, hi) {
  return lo + Math.floor(Math.random() * (hi - lo + 1));
}

/// The VU's 1-based number in the whole test.
export function vuId() {
  return exec.vu.idInTest;
}

/// Message content carrying its send time, so receivers measure end-to-end latency.
export function stampedContent(text) {
  return `t=${Date.now()} ${text}`;
}

/// The send time in content made by stampedContent, or undefined.
export function stampOf(content) {
  const m = /^t=(\d+) /.exec(content || '');
  return m ? Number(m[1]) : undefined;
}

// ---------------------------------------------------------------------------------------------
// The client.

/// Thrown (as a rejected promise) when a request gets an error ack or no ack in time.
export class RequestError extends Error {
  constructor(code, message, frame) {
    super(`${code}: ${message}`);
    this.code = code;
    this.frame = frame;
  }
}

/// Timeouts without `clearTimeout`: k6 1.1.0's clearTimeout, when it cancels the timer due
/// first, runs the next queued timer at that timer's time instead (grafana/k6#5199, fixed in a
/// release PyPI does not have), so a request's 10 s timeout could fire a second after it was
/// sent. A deadline here is an entry in a map; one timer chain, never cleared, looks at the map
/// every TICK_MS while it holds anything and stops once it is empty, so a finished VU is not
/// kept alive.
const TICK_MS = 100;

class Deadlines {
  constructor() {
    this.entries = new Map();
    this.nextKey = 1;
    this.ticking = false;
  }

  /// Calls `fn` once `ms` have passed, unless `cancel(key)` comes first. Returns the key.
  add(ms, fn) {
    const key = this.nextKey++;
    this.entries.set(key, { at: Date.now() + ms, fn });
    if (!this.ticking) {
      this.ticking = true;
      setTimeout(() => this.tick(), TICK_MS);
    }
    return key;
  }

  cancel(key) {
    this.entries.delete(key);
  }

  tick() {
    const now = Date.now();
    for (const [key, entry] of this.entries) {
      if (entry.at <= now) {
        this.entries.delete(key);
        entry.fn();
      }
    }
    if (this.entries.size > 0) {
      setTimeout(() => this.tick(), TICK_MS);
    } else {
      this.ticking = false;
    }
  }
}

/// One WebSocket session. `connect()` resolves with `session:ready`; `request()` with the ack's
/// `result`. Register event handlers with `on(type, fn)` before connecting; `on('*', fn)` sees
/// every frame, `onClose(fn)` a close the client did not ask for.
export class Client {
  constructor({ userId, token, url = TARGET_URL, authMode = AUTH_MODE, tags = {} }) {
    this.userId = userId;
    this.token = token;
    this.url = url;
    this.authMode = authMode;
    this.tags = tags;
    this.ws = null;
    this.ready = null;
    this.nextId = 1;
    this.pending = new Map();
    this.deadlines = new Deadlines();
    this.handlers = new Map();
    this.closeHandlers = [];
    this.closing = false;
    this.closed = false;
  }

  on(type, fn) {
    if (!this.handlers.has(type)) this.handlers.set(type, []);
    this.handlers.get(type).push(fn);
    return this;
  }

  onClose(fn) {
    this.closeHandlers.push(fn);
    return this;
  }

  /// Opens the socket and authenticates. Resolves with the `session:ready` frame; rejects (and
  /// counts a handshake failure) when the connection fails or is closed first, or on timeout.
  connect(timeoutMs = REQUEST_TIMEOUT_MS) {
    const started = Date.now();
    return new Promise((resolve, reject) => {
      let settled = false;
      const fail = (why) => {
        if (settled) return;
        settled = true;
        this.deadlines.cancel(timer);
        handshakeFailures.add(1, this.tags);
        this.closing = true;
        try {
          if (this.ws && this.ws.readyState <= 1) this.ws.close();
        } catch (_) {
          // Already closed.
        }
        reject(new Error(`connect ${this.userId}: ${why}`));
      };
      const timer = this.deadlines.add(timeoutMs, () =>
        fail(`no session:ready within ${timeoutMs} ms`),
      );
      const params = { tags: this.tags };
      if (this.authMode === 'header') {
        params.headers = { Authorization: `Bearer ${this.token}` };
      }
      const ws = new WebSocket(this.url, null, params);
      this.ws = ws;
      ws.onopen = () => {
        if (this.authMode !== 'header') this.sendFrame({ type: 'auth', token: this.token });
      };
      ws.onerror = (e) => {
        if (!settled) fail(`error: ${e && e.error}`);
      };
      ws.onclose = (e) => {
        this.closed = true;
        const code = e && e.code;
        if (!settled) {
          fail(`closed before session:ready (code ${code})`);
          return;
        }
        this.failPending(`connection closed (code ${code})`);
        if (!this.closing) {
          unexpectedCloses.add(1, Object.assign({ code: String(code) }, this.tags));
          for (const fn of this.closeHandlers) fn(code);
        }
      };
      ws.onmessage = (e) => {
        let frame;
        try {
          frame = JSON.parse(e.data);
        } catch (err) {
          console.error(`${this.userId}: unparsable frame: ${e.data}`);
          return;
        }
        if (frame.type === 'session:ready' && !settled) {
          settled = true;
          this.deadlines.cancel(timer);
          handshakeTime.add(Date.now() - started, this.tags);
          this.ready = frame;
          resolve(frame);
        }
        this.dispatch(frame);
      };
    });
  }

  dispatch(frame) {
    // Frames still arriving after close() belong to a connection the client has given up on: a
    // real client drops them too (and gets them again from the resume).
    if (this.closing) return;
    if ((frame.type === 'ack' || frame.type === 'pong') && frame.id !== undefined) {
      const waiter = this.pending.get(frame.id);
      if (waiter) {
        this.pending.delete(frame.id);
        this.deadlines.cancel(waiter.timer);
        if (frame.error) {
          waiter.reject(new RequestError(frame.error.code, frame.error.message, frame));
        } else {
          waiter.resolve(frame.result || frame);
        }
        return;
      }
    }
    if (frame.type === 'error') {
      requestFailures.add(1, Object.assign({ code: frame.code || 'error' }, this.tags));
      console.warn(`${this.userId}: error frame ${JSON.stringify(frame)}`);
    }
    for (const key of [frame.type, '*']) {
      const fns = this.handlers.get(key);
      if (fns) for (const fn of fns) fn(frame);
    }
  }

  sendFrame(frame) {
    this.ws.send(JSON.stringify(frame));
  }

  /// Sends `frame` with a fresh `id`; resolves with the ack's `result`, rejects with a
  /// RequestError on an error ack, a timeout, or a close. Every failure is counted in
  /// sb_request_failures, except error codes listed in `expected` and the client's own close.
  request(frame, { timeoutMs = REQUEST_TIMEOUT_MS, expected = [] } = {}) {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      const failWith = (err) => {
        if (!expected.includes(err.code) && !err.byClient) {
          requestFailures.add(1, Object.assign({ code: err.code || 'error' }, this.tags));
        }
        reject(err);
      };
      if (this.closed) {
        failWith(new RequestError('CLOSED', 'connection is closed'));
        return;
      }
      const timer = this.deadlines.add(timeoutMs, () => {
        this.pending.delete(id);
        failWith(new RequestError('TIMEOUT', `${frame.type} got no ack in ${timeoutMs} ms`));
      });
      this.pending.set(id, { resolve, reject: failWith, timer });
      this.sendFrame(Object.assign({}, frame, { id }));
    });
  }

  failPending(why, byClient = false) {
    for (const [, waiter] of this.pending) {
      this.deadlines.cancel(waiter.timer);
      const err = new RequestError('CLOSED', why);
      err.byClient = byClient;
      waiter.reject(err);
    }
    this.pending.clear();
  }

  /// Joins a room (with `sinceSeq`, a resume); resolves with the `room` result.
  join(roomId, sinceSeq, expected = []) {
    const frame = { type: 'room:join', roomId };
    if (sinceSeq !== undefined) frame.sinceSeq = sinceSeq;
    return this.request(frame, { expected });
  }

  /// Joins a room, creating it when it does not exist yet (another VU may race us to it).
  async ensureRoom(roomId) {
    try {
      return await this.join(roomId, undefined, ['ROOM_NOT_FOUND']);
    } catch (e) {
      if (e.code !== 'ROOM_NOT_FOUND') throw e;
    }
    try {
      return await this.request({ type: 'room:create', roomId }, { expected: ['ROOM_EXISTS'] });
    } catch (e) {
      if (e.code !== 'ROOM_EXISTS') throw e;
    }
    return this.join(roomId);
  }

  /// Sends a message; resolves with the `sent` result (seq, duplicate, ...).
  send(roomId, content, clientMsgId) {
    return this.request({ type: 'message:send', roomId, content, clientMsgId });
  }

  typing(roomId, start = true) {
    this.sendFrame({ type: start ? 'typing:start' : 'typing:stop', roomId });
  }

  /// A read receipt without an id: no reply on success.
  read(roomId, seq) {
    this.sendFrame({ type: 'message:read', roomId, seq });
  }

  /// Pages forward through history after `afterSeq`; resolves with every message.
  async historyAfter(roomId, afterSeq) {
    const all = [];
    let after = afterSeq;
    for (;;) {
      const page = await this.request({ type: 'history:fetch', roomId, afterSeq: after, limit: 100 });
      for (const m of page.messages) all.push(m);
      if (!page.hasMore || page.messages.length === 0) return all;
      after = page.messages[page.messages.length - 1].seq;
    }
  }

  /// Closes the socket normally (1000); the close is not counted as unexpected.
  close() {
    this.closing = true;
    this.failPending('closed by the client', true);
    if (this.ws && !this.closed) this.ws.close();
  }
}

// ---------------------------------------------------------------------------------------------
// Exactly-once, in-order accounting for one room as seen by one user.

/// Tracks which seqs of a room a client holds: everything up to `floor`, plus `above`.
/// Every seq the client gets (live `message:new`, replay in a join ack, history, its own sends'
/// acks) goes through `take`, which counts duplicates; live frames also go through `live`, which
/// counts out-of-order delivery. `settle` finally asks the server what was stored and counts
/// every message older than a grace period that never arrived as lost.
export class RoomTracker {
  constructor(roomId, floor, tags = {}) {
    this.roomId = roomId;
    this.floor = floor;
    this.above = new Set();
    this.lastLive = floor;
    // No room tag: one time series per room would swamp k6 in large runs.
    this.tags = tags;
    this.received = 0;
  }

  /// Records `seq`; returns false (and counts a duplicate) when it was held already.
  take(seq) {
    if (seq <= this.floor || this.above.has(seq)) {
      duplicates.add(1, this.tags);
      return false;
    }
    this.above.add(seq);
    while (this.above.has(this.floor + 1)) {
      this.floor += 1;
      this.above.delete(this.floor);
    }
    this.received += 1;
    return true;
  }

  /// A live `message:new`: in order (above every earlier live one) and not a duplicate.
  live(message) {
    if (message.seq <= this.lastLive) {
      outOfOrder.add(1, this.tags);
    } else {
      this.lastLive = message.seq;
    }
    return this.take(message.seq);
  }

  /// The latest seq held, for `room:join {sinceSeq}` after a reconnect: the gap-free floor.
  resumeFrom() {
    return this.floor;
  }

  /// A resume's join ack (`room:join {sinceSeq: since}`): the replay must be ascending and
  /// contiguous after `since`. It may repeat seqs held above the floor (we asked for everything
  /// after it), so those are not duplicates; a live frame repeating a replayed seq is.
  /// Returns how many messages were new to us.
  replay(result, since) {
    let expect = since + 1;
    let fresh = 0;
    for (const m of result.messages) {
      if (m.seq !== expect) outOfOrder.add(1, this.tags);
      expect = m.seq + 1;
      if (m.seq > this.floor && !this.above.has(m.seq)) {
        this.take(m.seq);
        fresh += 1;
      }
    }
    // Live delivery on this connection continues after the ack's lastSeq.
    this.lastLive = Math.max(this.lastLive, result.room.lastSeq);
    if (!result.recovered) {
      console.warn(`${this.roomId}: resume from ${since} not recovered (replay limit)`);
    }
    return fresh;
  }

  /// Counts as lost every stored message after our floor, older than `graceMs`, that we never
  /// received. Holes we are still missing (after a fetch) are filled so a later settle does not
  /// count them twice. Returns the number lost.
  async settle(client, graceMs) {
    const checkedAt = Date.now();
    const stored = await client.historyAfter(this.roomId, this.floor);
    let lost = 0;
    for (const m of stored) {
      if (this.above.has(m.seq)) continue;
      if (checkedAt - m.createdAt < graceMs) break;
      lost += 1;
      this.above.add(m.seq);
    }
    while (this.above.has(this.floor + 1)) {
      this.floor += 1;
      this.above.delete(this.floor);
    }
    if (lost > 0) {
      messagesLost.add(lost, this.tags);
      console.error(`${client.userId}: ${lost} message(s) lost in ${this.roomId}`);
    }
    return lost;
  }
}
