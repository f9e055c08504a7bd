// End to end in headless Chromium, on the TypeScript client the gateway serves: alice and bob
// chat through nginx in front of three gateway nodes sharing PostgreSQL and Redis. While both
// keep typing, the node alice is on is killed with SIGKILL; what she types meanwhile waits in her
// outbox (IndexedDB) and is sent after her client reconnects through nginx to another node. At
// the end both transcripts are identical, complete, in order, and nothing was handed over twice.
//
// Everything is real and on 127.0.0.1: redis-server, PostgreSQL (testkit-postgres), the gateway
// binary three times, nginx (serving the page and the client too), Chromium. Waits are on what
// the pages show or the nodes report, never on timers.
//
// Builds nothing: scripts/browser-test.sh builds the binaries and installs Chromium first.
// Env: GATEWAY_BIN, TESTKIT_POSTGRES_BIN (default target/debug/...), CHROMIUM_BIN,
// CLIENT_DIR (default crates/gateway/assets/client, the build the gateway serves).

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHmac } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';

import { chromium } from 'playwright-core';

import { freePort, stopProcess } from '../lib/procs.mjs';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const bin = (name, fallback) => path.resolve(REPO, process.env[name] ?? fallback);
const GATEWAY_BIN = bin('GATEWAY_BIN', 'target/debug/gateway');
const TESTKIT_POSTGRES_BIN = bin('TESTKIT_POSTGRES_BIN', 'target/debug/testkit-postgres');
const CLIENT_DIR = bin('CLIENT_DIR', 'crates/gateway/assets/client');
const CHROMIUM_BIN = process.env.CHROMIUM_BIN ?? '/usr/bin/chromium';
/** socket.io-client's own browser build, from this directory's npm packages. */
const SOCKETIO_BUNDLE = path.join(REPO, 'scripts/browser-test/node_modules/socket.io-client/dist/socket.io.esm.min.js');
const CHROMIUM_ARGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-quic',
  '--no-first-run', '--disable-component-update', '--disable-sync',
];
const SECRET = 'switchboard-browser-cluster-test-secret-0123456789';
const ROOM = 'cluster-e2e';
/** Messages each user types: the kill comes after KILL_AFTER of them. */
const TYPED = 12;
const KILL_AFTER = 4;
const STEP_TIMEOUT_MS = 30_000;

/** Everything to tear down (in reverse), and the logs to print when the test fails. */
const fixture = { stops: [], logs: new Map(), pages: [], failed: false };

/** An HS256 token for `user`, valid for an hour. */
function mint(user) {
  const now = Math.floor(Date.now() / 1000);
  const part = (value) => Buffer.from(JSON.stringify(value)).toString('base64url');
  const head = `${part({ alg: 'HS256', typ: 'JWT' })}.${part({ sub: user, name: user, iat: now, exp: now + 3600 })}`;
  return `${head}.${createHmac('sha256', SECRET).update(head).digest('base64url')}`;
}

/** Starts `command`, keeping the tail of its output under `name`; stopped in `after`. */
function run(name, command, args, { env = process.env, stdin = 'ignore' } = {}) {
  const child = spawn(command, args, { env, stdio: [stdin, 'pipe', 'pipe'] });
  const log = [];
  fixture.logs.set(name, log);
  const keep = (chunk) => {
    log.push(chunk.toString());
    if (log.length > 2000) log.splice(0, 1000);
  };
  child.stdout.on('data', keep);
  child.stderr.on('data', keep);
  child.on('exit', (code, signal) => log.push(`\n[${name} exited: ${code ?? signal}]\n`));
  process.on('exit', () => child.kill('SIGKILL'));
  fixture.stops.push(() => stopProcess(child));
  return child;
}

/** Polls `probe` until it returns a value other than undefined; fails after `ms`. */
async function eventually(what, probe, ms = STEP_TIMEOUT_MS) {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await probe().catch(() => undefined);
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`${what}: not within ${ms} ms`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

async function startRedis() {
  const port = await freePort();
  const redis = run('redis', 'redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no']);
  await eventually('redis-server listening', () => new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1', () => { socket.end(); resolve(true); });
    socket.on('error', () => resolve(undefined));
  }));
  return { url: `redis://127.0.0.1:${port}`, redis };
}

/** testkit-postgres prints the URL of a private PostgreSQL and stops it when stdin closes. */
async function startPostgres() {
  const child = run('postgres', TESTKIT_POSTGRES_BIN, [], { stdin: 'pipe' });
  const url = await new Promise((resolve, reject) => {
    const lines = createInterface({ input: child.stdout });
    lines.once('line', resolve);
    child.once('exit', () => reject(new Error(`testkit-postgres exited: ${fixture.logs.get('postgres').join('')}`)));
  });
  fixture.stops.push(async () => child.stdin.end());
  return url;
}

/** One gateway node; resolves when its /readyz says so. */
async function startNode(name, backends) {
  const port = await freePort();
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('SWITCHBOARD_')));
  Object.assign(env, {
    SWITCHBOARD_LISTEN: `127.0.0.1:${port}`,
    SWITCHBOARD_NODE_ID: name,
    SWITCHBOARD_JWT_SECRET: SECRET,
    SWITCHBOARD_LOG: 'info',
    REDIS_URL: backends.redis,
    DATABASE_URL: backends.postgres,
  });
  const child = run(name, GATEWAY_BIN, [], { env });
  const base = `http://127.0.0.1:${port}`;
  await eventually(`${name} ready`, async () => {
    if (child.exitCode !== null) throw new Error(`${name} exited`);
    const res = await fetch(`${base}/readyz`, { signal: AbortSignal.timeout(1000) });
    return res.status === 200 ? true : undefined;
  });
  return { name, port, base, child };
}

/** The node's `switchboard_connections` gauge. */
async function connections(node) {
  const text = await (await fetch(`${node.base}/metrics`, { signal: AbortSignal.timeout(2000) })).text();
  const line = text.split('\n').find((l) => l.startsWith('switchboard_connections '));
  return line === undefined ? 0 : Number(line.split(' ')[1]);
}

/**
 * nginx as the repository's nginx/nginx.conf proxies /ws, but balancing round robin: both
 * browsers connect from 127.0.0.1, so the address hash of the shipped config would put them on
 * one node, and this test wants them on two (their chat then crosses Redis). It also serves the
 * page and the client build.
 */
/** An nginx location that proxies WebSocket upgrades on `path` to the gateways. */
function websocketLocation(path) {
  return `    location = ${path} {
      proxy_pass http://switchboard;
      proxy_http_version 1.1;
      proxy_set_header Upgrade $http_upgrade;
      proxy_set_header Connection $connection_upgrade;
      proxy_set_header Host $host;
      proxy_connect_timeout 2s;
      proxy_read_timeout 120s;
      proxy_next_upstream error timeout;
    }
`;
}

async function startNginx(nodes) {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'switchboard-nginx-'));
  fixture.stops.push(() => rm(dir, { recursive: true, force: true }));
  const port = await freePort();
  const servers = nodes.map((n) => `server 127.0.0.1:${n.port} max_fails=1 fail_timeout=30s;`).join('\n    ');
  const conf = `
${process.getuid?.() === 0 ? 'user root;' : ''}
daemon off;
worker_processes 1;
pid ${dir}/nginx.pid;
error_log stderr warn;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path ${dir}/body;
  proxy_temp_path ${dir}/proxy;
  fastcgi_temp_path ${dir}/fastcgi;
  uwsgi_temp_path ${dir}/uwsgi;
  scgi_temp_path ${dir}/scgi;
  types { text/html html; text/javascript js; application/json map; }
  map $http_upgrade $connection_upgrade { default upgrade; '' ''; }
  upstream switchboard {
    ${servers}
  }
  server {
    listen 127.0.0.1:${port};
${['/ws', '/socket.io/'].map(websocketLocation).join('')}    location = /chat.html { alias ${REPO}/scripts/browser-test/cluster.html; }
    location = /socketio.html { alias ${REPO}/scripts/browser-test/socketio.html; }
    location = /vendor/socket.io.esm.min.js { alias ${SOCKETIO_BUNDLE}; }
    location /client/ { alias ${CLIENT_DIR}/; }
  }
}
`;
  await writeFile(path.join(dir, 'nginx.conf'), conf);
  run('nginx', existsSync('/usr/sbin/nginx') ? '/usr/sbin/nginx' : 'nginx', ['-p', dir, '-c', path.join(dir, 'nginx.conf')]);
  const base = `http://127.0.0.1:${port}`;
  await eventually('nginx serving the page', async () => ((await fetch(`${base}/chat.html`)).status === 200 ? true : undefined));
  return base;
}

/** A new page of `user`, its console and errors kept for the failure report. */
async function openPage(context, user) {
  const page = await context.newPage();
  page.setDefaultTimeout(STEP_TIMEOUT_MS);
  const entry = { who: user, page, logs: [], errors: [] };
  page.on('console', (m) => entry.logs.push(`[${m.type()}] ${m.text()}`));
  page.on('pageerror', (e) => entry.errors.push(String(e)));
  fixture.pages.push(entry);
  await page.exposeFunction('mintToken', (id) => mint(id));
  return page;
}

/** A page of `user` in room ROOM, connected and joined. */
async function openChat(context, base, user, { create = false } = {}) {
  const page = await openPage(context, user);
  await page.goto(`${base}/chat.html?user=${user}&room=${ROOM}${create ? '&create=1' : ''}`);
  await page.locator('#joined', { hasText: 'yes' }).waitFor();
  return page;
}

/** Types `text` and presses Enter, as a person does. */
async function type(page, text) {
  await page.locator('#text').fill(text);
  await page.locator('#text').press('Enter');
}

const transcript = (page) => page.locator('#transcript li').evaluateAll((items) =>
  items.map((li) => ({ seq: Number(li.dataset.seq), text: li.textContent })));

after(async () => {
  if (fixture.failed) {
    for (const { who, logs, errors } of fixture.pages) {
      console.error(`--- ${who}'s console ---\n${logs.join('\n')}\n${errors.join('\n')}`);
    }
    for (const [name, log] of fixture.logs) console.error(`--- ${name} (tail) ---\n${log.join('').slice(-8_000)}`);
  }
  for (const stopIt of fixture.stops.reverse()) {
    await Promise.race([stopIt(), new Promise((r) => setTimeout(r, 15_000).unref())]).catch(() => {});
  }
});

before(() => {
  for (const [what, file] of [['gateway', GATEWAY_BIN], ['testkit-postgres', TESTKIT_POSTGRES_BIN], ['Chromium', CHROMIUM_BIN]]) {
    assert.ok(existsSync(file), `no ${what} at ${file}: run scripts/browser-test.sh`);
  }
  assert.ok(existsSync(path.join(CLIENT_DIR, 'index.js')), `no client build in ${CLIENT_DIR}`);
});

/** redis-server, PostgreSQL, three nodes (`<prefix>-a`..`-c`) and nginx, and a Chromium. */
async function startCluster(prefix) {
  const { url: redis } = await startRedis();
  const postgres = await startPostgres();
  // One first: it migrates the schema; the others find it done.
  const nodes = [await startNode(`${prefix}-a`, { redis, postgres })];
  nodes.push(...(await Promise.all(['b', 'c'].map((n) => startNode(`${prefix}-${n}`, { redis, postgres })))));
  const base = await startNginx(nodes);
  const userDataDir = await mkdtemp(path.join(os.tmpdir(), 'switchboard-chromium-'));
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: CHROMIUM_BIN, headless: true, args: CHROMIUM_ARGS, timeout: 30_000,
  });
  fixture.stops.push(async () => {
    await Promise.race([context.close(), new Promise((r) => setTimeout(r, 10_000).unref())]).catch(() => {});
    await rm(userDataDir, { recursive: true, force: true });
  });
  return { nodes, base, context };
}

test('kill -9 of a node while two users type through nginx: identical, complete, ordered transcripts', { timeout: 240_000 }, async () => {
  try {
    const { nodes, base, context } = await startCluster('e2e');

    // Which node each user is on, from the nodes' own connection gauges.
    const nodeWith = async (count) => eventually('a node with the new connection', async () => {
      const counts = await Promise.all(nodes.map(connections));
      const i = counts.findIndex((c) => c === count);
      return i >= 0 && counts.reduce((a, b) => a + b, 0) === count ? nodes[i] : undefined;
    });
    const alice = await openChat(context, base, 'alice', { create: true });
    const aliceNode = await nodeWith(1);
    const bob = await openChat(context, base, 'bob');
    const counts = await Promise.all(nodes.map(connections));
    assert.equal(counts.reduce((a, b) => a + b, 0), 2, `connections per node: ${counts}`);
    assert.equal(await connections(aliceNode), 1, 'alice and bob are on different nodes');

    const typed = { alice: [], bob: [] };
    for (let i = 1; i <= TYPED; i++) {
      for (const [user, page] of [['alice', alice], ['bob', bob]]) {
        const text = `${user} ${i}`;
        typed[user].push(text);
        await type(page, text);
      }
      if (i === KILL_AFTER) {
        aliceNode.child.kill('SIGKILL');
        // What alice types from now on waits in her outbox until she is back.
        await alice.locator('#state', { hasText: 'reconnecting' }).waitFor();
      }
      if (i === KILL_AFTER + 1) {
        await alice.locator('#pending li', { hasText: `alice ${i}` }).waitFor();
      }
    }

    const total = 2 * TYPED;
    const done = async (page) => {
      await page.locator('#state', { hasText: 'connected' }).waitFor();
      await eventually('the whole transcript', async () => ((await transcript(page)).length === total ? true : undefined), 60_000);
      await page.locator('#pending li').first().waitFor({ state: 'detached' });
    };
    await Promise.all([done(alice), done(bob)]);

    const seen = { alice: await transcript(alice), bob: await transcript(bob) };
    assert.deepEqual(seen.alice, seen.bob, 'both transcripts are identical');
    assert.deepEqual(seen.alice.map((m) => m.seq), Array.from({ length: total }, (_, i) => i + 1), 'seqs 1..n, no gap');
    for (const user of ['alice', 'bob']) {
      const own = seen.alice.map((m) => m.text).filter((t) => t.startsWith(`${user}: `)).map((t) => t.slice(user.length + 2));
      assert.deepEqual(own, typed[user], `${user}'s messages, each once, in the order typed`);
    }
    for (const [user, page] of [['alice', alice], ['bob', bob]]) {
      const { handed, gaps } = await page.evaluate(() => ({ handed: window.chat.handed, gaps: window.chat.gaps }));
      assert.deepEqual(gaps, [], `${user}'s client reported no gap`);
      const seqs = handed.map((m) => m.seq);
      assert.equal(new Set(seqs).size, seqs.length, `${user}'s page was handed no message twice: ${seqs}`);
    }
    // Alice really moved: she is connected to one of the two nodes left.
    const left = nodes.filter((n) => n !== aliceNode);
    const after = await Promise.all(left.map(connections));
    assert.equal(after.reduce((a, b) => a + b, 0), 2, `connections on the nodes left: ${after}`);
    for (const { who, errors } of fixture.pages) assert.deepEqual(errors, [], `uncaught errors on ${who}'s page`);
  } catch (e) {
    fixture.failed = true;
    throw e;
  }
});

test('socket.io-client in Chromium, through nginx: after a kill -9 of its node the socket is recovered on another', { timeout: 240_000 }, async () => {
  try {
    const { nodes, base, context } = await startCluster('sio');
    const open = async (user) => {
      const page = await openPage(context, user);
      await page.goto(`${base}/socketio.html?user=${user}`);
      await page.locator('#state', { hasText: 'connected' }).waitFor();
      return page;
    };
    const emit = (page, event, data) => page.evaluate(([e, d]) => window.sio.socket.emitWithAck(e, d), [event, data]);
    const seen = (page) => page.evaluate(() => window.sio.seen);
    const seenCount = async (page, count) => eventually(`${count} messages`, async () => ((await seen(page)).length >= count ? true : undefined));

    const alice = await open('alice');
    assert.equal((await emit(alice, 'room:create', { roomId: 'sio-e2e' })).kind, 'room');
    const counts = await Promise.all(nodes.map(connections));
    const bob = await open('bob');
    const after = await Promise.all(nodes.map(connections));
    const bobNode = nodes[after.findIndex((c, i) => c > counts[i])];
    assert.ok(bobNode, `bob's node from the gauges ${counts} -> ${after}`);
    assert.equal(counts[nodes.indexOf(bobNode)], 0, 'alice is on another node than bob');
    assert.equal((await emit(bob, 'room:join', { roomId: 'sio-e2e' })).kind, 'room');
    const say = async (content) => {
      const sent = await emit(alice, 'message:send', { roomId: 'sio-e2e', content, clientMsgId: `sio-${content}` });
      assert.equal(sent.kind, 'sent', JSON.stringify(sent));
    };
    await say('one');
    await seenCount(bob, 1);

    bobNode.child.kill('SIGKILL');
    await bob.locator('#state', { hasText: 'disconnected' }).waitFor();
    // While bob's socket waits to reconnect (1 s), alice, on another node, goes on.
    await say('two');
    await say('three');
    await bob.locator('#state', { hasText: 'connected' }).waitFor();
    await seenCount(bob, 3);
    await say('four');
    await seenCount(bob, 4);

    const sio = await bob.evaluate(() => ({ recovered: window.sio.recovered, seenAtConnect: window.sio.seenAtConnect }));
    assert.deepEqual(sio.recovered, [false, true], 'the first connect is new, the second recovered');
    assert.deepEqual(sio.seenAtConnect, [0, 1], 'two and three came after the reconnect');
    assert.deepEqual(await seen(bob), [[1, 'alice', 'one'], [2, 'alice', 'two'], [3, 'alice', 'three'], [4, 'alice', 'four']]);
    const left = await Promise.all(nodes.filter((n) => n !== bobNode).map(connections));
    assert.equal(left.reduce((a, b) => a + b, 0), 2, `both sockets on the nodes left: ${left}`);
    for (const { who, errors } of fixture.pages) assert.deepEqual(errors, [], `uncaught errors on ${who}'s page`);
  } catch (e) {
    fixture.failed = true;
    throw e;
  }
});
