// The official socket.io-client (npm) against the gateway's Socket.IO endpoint, written the way
// a Socket.IO app's client service is: io(url, { auth: { token } }), emit with an ack callback,
// socket.on(event). Everything is real: the gateway binary on a free port of 127.0.0.1.
//
// Env: GATEWAY_BIN, TESTKIT_POSTGRES_BIN (default target/debug/..., relative to the repo root).

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHmac } from 'node:crypto';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

import { io } from 'socket.io-client';

import { freePort } from '../lib/procs.mjs';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const GATEWAY_BIN = path.resolve(REPO, process.env.GATEWAY_BIN ?? 'target/debug/gateway');
const TESTKIT_POSTGRES_BIN = path.resolve(REPO, process.env.TESTKIT_POSTGRES_BIN ?? 'target/debug/testkit-postgres');
const SECRET = 'switchboard-socketio-test-secret-0123456789abcdef';
const WAIT_MS = 10_000;

const fixture = { gateways: [], log: [], url: null, sockets: [], postgres: [] };

function mint(user, ttlSecs = 3600) {
  const now = Math.floor(Date.now() / 1000);
  const part = (value) => Buffer.from(JSON.stringify(value)).toString('base64url');
  const head = `${part({ alg: 'HS256', typ: 'JWT' })}.${part({ sub: user, name: user.toUpperCase(), iat: now, exp: now + ttlSecs })}`;
  return `${head}.${createHmac('sha256', SECRET).update(head).digest('base64url')}`;
}

/** Resolves with the first `event` the socket emits (its first argument), within WAIT_MS. */
function next(socket, event) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no ${event} within ${WAIT_MS} ms`)), WAIT_MS);
    socket.once(event, (value) => {
      clearTimeout(timer);
      resolve(value);
    });
  });
}

/** A socket of `user`, over WebSocket, as an app opens it. */
function connect(user, options = {}, url = fixture.url) {
  const socket = io(url, {
    transports: ['websocket'],
    auth: { token: mint(user) },
    reconnection: false,
    ...options,
  });
  fixture.sockets.push(socket);
  return socket;
}

async function connected(user) {
  const socket = connect(user);
  const ready = next(socket, 'session:ready');
  await next(socket, 'connect');
  return { socket, ready: await ready };
}

/** Starts the gateway binary with `extra` settings (on `port`, else a free one); resolves with
 *  its URL once /readyz answers. */
async function startGateway(extra = {}, port = undefined) {
  port ??= await freePort();
  const url = `http://127.0.0.1:${port}`;
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('SWITCHBOARD_')));
  Object.assign(env, {
    SWITCHBOARD_LISTEN: `127.0.0.1:${port}`,
    SWITCHBOARD_JWT_SECRET: SECRET,
    SWITCHBOARD_LOG: 'info,switchboard_gateway=debug',
    ...extra,
  });
  const child = spawn(GATEWAY_BIN, [], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  for (const stream of [child.stdout, child.stderr]) {
    stream.on('data', (chunk) => fixture.log.push(chunk.toString()));
  }
  process.on('exit', () => child.kill('SIGKILL'));
  fixture.gateways.push(child);
  fixture.last = child;
  const deadline = Date.now() + 20_000;
  for (;;) {
    try {
      if ((await fetch(`${url}/readyz`)).status === 200) return url;
    } catch {
      // Not listening yet.
    }
    if (Date.now() > deadline) throw new Error(`the gateway was not ready:\n${fixture.log.join('')}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

before(async () => {
  fixture.url = await startGateway();
});

after(async () => {
  for (const socket of fixture.sockets) socket.disconnect();
  for (const child of fixture.gateways) {
    if (child.exitCode !== null || child.signalCode !== null) continue;
    const exited = new Promise((resolve) => child.once('exit', resolve));
    child.kill('SIGTERM');
    await exited;
  }
  for (const child of fixture.postgres) child.stdin.end();
});

/** A private PostgreSQL from testkit-postgres (it stops when its stdin closes): its URL. */
async function startPostgres() {
  const child = spawn(TESTKIT_POSTGRES_BIN, [], { stdio: ['pipe', 'pipe', 'pipe'] });
  child.stderr.on('data', (chunk) => fixture.log.push(chunk.toString()));
  fixture.postgres.push(child);
  return new Promise((resolve, reject) => {
    createInterface({ input: child.stdout }).once('line', resolve);
    child.once('exit', (code) => reject(new Error(`testkit-postgres exited with ${code}`)));
  });
}

/** kill -9 of a gateway: no goodbye. */
async function killHard(child) {
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill('SIGKILL');
  await exited;
}

/** Fails with the gateway's log attached. */
function scenario(name, body) {
  test(name, { timeout: 60_000 }, async () => {
    try {
      await body();
    } catch (e) {
      console.error(`--- gateway log (tail) ---\n${fixture.log.join('').slice(-10_000)}`);
      throw e;
    }
  });
}

scenario('an app connects with its token; its events are requests and their acks the replies', async () => {
  const { socket: alice, ready } = await connected('alice');
  assert.equal(ready.user.id, 'alice');
  assert.equal(alice.id, ready.connId, "the socket's id is the connection's");
  const created = await alice.emitWithAck('room:create', { roomId: 'sio-lobby' });
  assert.equal(created.kind, 'room');
  assert.equal(created.room.roomId, 'sio-lobby');

  const { socket: bob } = await connected('bob');
  const joined = await bob.emitWithAck('room:join', { roomId: 'sio-lobby' });
  assert.equal(joined.kind, 'room');

  // As a seed's chat service writes it: emit with an ack callback, listen with on().
  const delivered = next(bob, 'message:new');
  const sent = await new Promise((resolve) => {
    alice.emit('message:send', { roomId: 'sio-lobby', content: 'hello over socket.io', clientMsgId: 'sio-1' }, resolve);
  });
  assert.deepEqual([sent.kind, sent.seq, sent.duplicate], ['sent', 1, false]);
  const { message } = await delivered;
  assert.deepEqual(
    [message.seq, message.content, message.sender.id, message.roomId],
    [1, 'hello over socket.io', 'alice', 'sio-lobby'],
  );

  const typing = next(bob, 'typing:start');
  alice.emit('typing:start', { roomId: 'sio-lobby' });
  assert.deepEqual(await typing, { roomId: 'sio-lobby', user: { id: 'alice', name: 'ALICE' } });

  // A refusal reaches the ack as { error: { code, message } }.
  const refused = await alice.emitWithAck('message:send', { roomId: 'elsewhere', content: 'x', clientMsgId: 'sio-2' });
  assert.equal(refused.error.code, 'NOT_A_MEMBER');
  const invalid = await alice.emitWithAck('message:send', 'not an object');
  assert.equal(invalid.error.code, 'INVALID_FIELD');
  const unknown = await alice.emitWithAck('no:such:event', {});
  assert.equal(unknown.error.code, 'UNKNOWN_TYPE');
});

scenario('custom room events arrive under their own names', async () => {
  const { socket: alice } = await connected('carol');
  await alice.emitWithAck('room:create', { roomId: 'sio-game' });
  const { socket: bob } = await connected('dave');
  await bob.emitWithAck('room:join', { roomId: 'sio-game' });
  const moved = next(bob, 'piece:move');
  const ack = await alice.emitWithAck('room:emit', { roomId: 'sio-game', event: 'piece:move', data: { from: 'e2', to: 'e4' } });
  assert.equal(ack.kind, 'ok');
  assert.deepEqual(await moved, {
    roomId: 'sio-game',
    data: { from: 'e2', to: 'e4' },
    from: { id: 'carol', name: 'CAROL' },
  });
});

scenario('a bad token is refused with connect_error, and so is another namespace', async () => {
  const bad = connect('mallory', { auth: { token: 'not-a-jwt' } });
  const refused = await next(bad, 'connect_error');
  assert.equal(refused.message, 'authentication failed');
  assert.equal(refused.data.code, 4001);
  assert.equal(bad.connected, false);

  const none = connect('mallory', { auth: {} });
  assert.equal((await next(none, 'connect_error')).data.code, 4001);

  const admin = io(`${fixture.url}/admin`, { transports: ['websocket'], auth: { token: mint('eve') }, reconnection: false });
  fixture.sockets.push(admin);
  assert.equal((await next(admin, 'connect_error')).message, 'Invalid namespace');
});

scenario('a connection replaced by a newer one (4007) is disconnected and stays away', async () => {
  // Eight connections per user by default: the ninth replaces the oldest.
  const first = await connected('frank');
  const reason = next(first.socket, 'disconnect');
  for (let i = 0; i < 8; i++) await connected('frank');
  assert.equal(await reason, 'io server disconnect');
  assert.equal(first.socket.active, false, 'the client does not reconnect by itself');
});

scenario('Engine.IO pings keep a quiet socket alive, answered by the client', async () => {
  const url = await startGateway({ SWITCHBOARD_HEARTBEAT_INTERVAL_MS: '100', SWITCHBOARD_HEARTBEAT_TIMEOUT_MS: '300' });
  const socket = connect('grace', {}, url);
  await next(socket, 'connect');
  let pings = 0;
  socket.io.on('ping', () => { pings += 1; });
  const disconnected = [];
  socket.on('disconnect', (reason) => disconnected.push(reason));
  // Ten pings is ten heartbeat intervals, three times past the server's silence limit.
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${pings} pings within ${WAIT_MS} ms`)), WAIT_MS);
    socket.io.on('ping', () => {
      if (pings >= 10) { clearTimeout(timer); resolve(); }
    });
  });
  assert.deepEqual(disconnected, []);
  assert.equal(socket.connected, true);
  assert.equal((await socket.emitWithAck('friends:list', {})).kind, 'friends');
});

scenario('a socket back after a kill -9 is recovered: every missed event once, in order, then live', async () => {
  const postgres = await startPostgres();
  const port = await freePort();
  const url = await startGateway({ DATABASE_URL: postgres }, port);
  const node = fixture.last;
  const alice = connect('henry', { reconnection: true, reconnectionDelay: 50, reconnectionDelayMax: 200 }, url);
  await next(alice, 'connect');
  await alice.emitWithAck('room:create', { roomId: 'sio-recover' });
  const bob = connect('ivy', {}, url);
  await next(bob, 'connect');
  assert.equal(bob.recovered, false, 'a first connect recovers nothing');
  await bob.emitWithAck('room:join', { roomId: 'sio-recover' });
  const seen = [];
  bob.on('message:new', ({ message }) => seen.push([message.seq, message.content]));
  const say = async (content) => {
    const sent = await alice.emitWithAck('message:send', { roomId: 'sio-recover', content, clientMsgId: `rec-${content}` });
    assert.equal(sent.kind, 'sent', JSON.stringify(sent));
  };
  const saw = (count) => new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`bob saw ${JSON.stringify(seen)}`)), WAIT_MS);
    const check = () => {
      if (seen.length >= count) { clearTimeout(timer); resolve(); } else setTimeout(check, 20);
    };
    check();
  });
  await say('one');
  await saw(1);
  // Bob's own message gets no message:new back, and must not come back with his recovery.
  const own = await bob.emitWithAck('message:send', { roomId: 'sio-recover', content: 'from bob', clientMsgId: 'rec-bob' });
  assert.equal(own.seq, 2);

  const bobDropped = next(bob, 'disconnect');
  const aliceDropped = next(alice, 'disconnect');
  await killHard(node);
  assert.equal(await bobDropped, 'transport close');
  await aliceDropped;
  // Listening before the restart: alice may be back before the restart is seen ready.
  const aliceBack = next(alice, 'connect');
  await startGateway({ DATABASE_URL: postgres }, port);
  // Alice comes back by herself and talks while bob is away.
  await aliceBack;
  await say('two');
  await say('three');

  const bobBack = next(bob, 'connect');
  bob.connect();
  await bobBack;
  assert.equal(bob.recovered, true, 'bob is recovered');
  await saw(3);
  await say('four');
  await saw(4);
  assert.deepEqual(seen, [[1, 'one'], [3, 'two'], [4, 'three'], [5, 'four']]);
});

scenario("a pid presented with another user's token recovers nothing", async () => {
  const { socket: carol } = await connected('jack');
  const pid = carol._pid;
  assert.equal(typeof pid, 'string');
  // Kate's client holds jack's pid, as if she had copied it: it presents it on connect.
  const thief = connect('kate', { autoConnect: false });
  thief._pid = pid;
  thief._lastOffset = '';
  thief.connect();
  await next(thief, 'connect');
  assert.equal(thief.recovered, false);
  assert.notEqual(thief._pid, pid, 'a new pid, not the one presented');

  // Past the window: the claim's age is checked by the unit tests of socketio/recovery.rs.
});
