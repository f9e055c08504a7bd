// End-to-end tests of the dev chat page served by the real gateway binary, in headless Chromium:
// what alice and bob see in their pages while they chat, start a direct message, load older
// messages, leave a room, change their status, live through a gateway restart, and send while the
// gateway is down (the page runs on switchboard-client, served from /client/). The tests run
// in order on one gateway and one browser; each waits on what a page shows, never on a timer.
//
// Builds nothing: scripts/browser-test.sh builds the gateway and installs Chromium first.
// Env: GATEWAY_BIN (default target/debug/gateway, relative to the repo root), CHROMIUM_BIN
// (default /usr/bin/chromium), SCREENSHOT (default a fresh file in the temp dir).

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';

import { chromium } from 'playwright-core';

import { freePort, stopProcess } from '../lib/procs.mjs';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const GATEWAY_BIN = path.resolve(REPO, process.env.GATEWAY_BIN ?? 'target/debug/gateway');
const CHROMIUM_BIN = process.env.CHROMIUM_BIN ?? '/usr/bin/chromium';
const CHROMIUM_ARGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-quic',
  '--no-first-run', '--disable-component-update', '--disable-sync',
];
/** Bounds each scenario; the gateway and browser start once, in `before`. */
const TEST_TIMEOUT_MS = 120_000;
/** Bounds each wait on the page. */
const STEP_TIMEOUT_MS = 15_000;
const READY_TIMEOUT_MS = 20_000;

/** Everything to tear down, and the evidence to print when the test fails. */
const fixture = {
  listen: null, base: null, gateway: null, gatewayLog: [], context: null, userDataDir: null, pages: [],
  failed: false, users: null,
};

/** Starts the gateway in dev mode (no JWT key configured) on `listen`. */
function startGateway(listen) {
  const env = Object.fromEntries(Object.entries(process.env).filter(
    ([k]) => !k.startsWith('SWITCHBOARD_') && k !== 'REDIS_URL' && k !== 'DATABASE_URL'));
  Object.assign(env, { SWITCHBOARD_LISTEN: listen, SWITCHBOARD_LOG: 'info,switchboard_gateway=debug' });
  const child = spawn(GATEWAY_BIN, [], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  const keep = (chunk) => {
    fixture.gatewayLog.push(chunk.toString());
    if (fixture.gatewayLog.length > 2000) fixture.gatewayLog.splice(0, 1000);
  };
  child.stdout.on('data', keep);
  child.stderr.on('data', keep);
  // Last resort if the runner dies before `after` runs.
  process.on('exit', () => child.kill('SIGKILL'));
  return child;
}

async function waitReady(base, child) {
  const deadline = Date.now() + READY_TIMEOUT_MS;
  for (;;) {
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(`gateway exited before it was ready (${child.exitCode ?? child.signalCode})`);
    }
    try {
      const res = await fetch(`${base}/readyz`, { signal: AbortSignal.timeout(1000) });
      if (res.status === 200) return;
    } catch {
      // Not listening yet.
    }
    if (Date.now() > deadline) throw new Error(`GET ${base}/readyz was not 200 within ${READY_TIMEOUT_MS} ms`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/** Opens a page that records its console and uncaught errors under `who`. */
async function openPage(who) {
  const page = await fixture.context.newPage();
  page.setDefaultTimeout(STEP_TIMEOUT_MS);
  const entry = { who, page, logs: [], errors: [] };
  page.on('console', (m) => entry.logs.push(`[${m.type()}] ${m.text()}`));
  page.on('pageerror', (e) => entry.errors.push(String(e)));
  fixture.pages.push(entry);
  return entry;
}

async function signIn(page, base, userId, name) {
  await page.goto(base);
  await page.getByTestId('login-user').fill(userId);
  await page.getByTestId('login-name').fill(name);
  await page.getByTestId('login-submit').click();
  await page.locator('[data-testid=connection-status][data-state=connected]').waitFor();
  await page.locator('[data-testid=room-item][data-room-id=general][aria-current=true]').waitFor();
  await page.locator('[data-testid=send-button]:enabled').waitFor();
}

after(async () => {
  if (fixture.failed) {
    const dir = os.tmpdir();
    for (const { who, page, logs, errors } of fixture.pages) {
      const shot = path.join(dir, `switchboard-failure-${who}-${process.pid}.png`);
      await page.screenshot({ path: shot, timeout: 5000 }).then(() => console.error(`${who}'s page: ${shot}`), () => {});
      console.error(`--- ${who}'s console ---\n${logs.join('\n')}\n${errors.join('\n')}`);
    }
    console.error(`--- gateway output (tail) ---\n${fixture.gatewayLog.join('').slice(-20_000)}`);
  }
  // Bounded: a wedged browser must not keep the gateway alive. The timer must not keep node alive.
  await Promise.race([fixture.context?.close(), new Promise((r) => setTimeout(r, 10_000).unref())]).catch(() => {});
  await stopProcess(fixture.gateway);
  if (fixture.userDataDir) await rm(fixture.userDataDir, { recursive: true, force: true });
});

before(async () => {
  assert.ok(existsSync(GATEWAY_BIN), `no gateway binary at ${GATEWAY_BIN}: run scripts/browser-test.sh or cargo build -p switchboard-gateway --bin gateway`);
  assert.ok(existsSync(CHROMIUM_BIN), `no Chromium at ${CHROMIUM_BIN}: run scripts/browser-test.sh`);
  fixture.listen = `127.0.0.1:${await freePort()}`;
  fixture.base = `http://${fixture.listen}`;
  fixture.gateway = startGateway(fixture.listen);
  await waitReady(fixture.base, fixture.gateway);
  fixture.userDataDir = await mkdtemp(path.join(os.tmpdir(), 'switchboard-chromium-'));
  fixture.context = await chromium.launchPersistentContext(fixture.userDataDir, {
    executablePath: CHROMIUM_BIN, headless: true, args: CHROMIUM_ARGS, timeout: 30_000,
    viewport: { width: 1100, height: 700 },
  });
});

/** A test that records its failure (for the evidence printed in `after`) and fails on any
 *  uncaught error in a page. */
function scenario(name, body) {
  test(name, { timeout: TEST_TIMEOUT_MS }, async (t) => {
    try {
      await body(t);
      for (const { who, errors } of fixture.pages) assert.deepEqual(errors, [], `uncaught errors on ${who}'s page`);
    } catch (e) {
      fixture.failed = true;
      throw e;
    }
  });
}

/** Alice and Bob, signed in once (in that order) and shared by the scenarios. */
function users() {
  fixture.users ??= (async () => {
    const alice = await openPage('alice');
    const bob = await openPage('bob');
    await signIn(alice.page, fixture.base, 'alice', 'Alice');
    await signIn(bob.page, fixture.base, 'bob', 'Bob');
    return { alice: alice.page, bob: bob.page };
  })();
  return fixture.users;
}

const roomItem = (page, roomId) => page.locator(`[data-testid=room-item][data-room-id="${roomId}"]`);
const onlineUser = (page, userId) => page.locator(`[data-testid=online-user][data-user-id="${userId}"]`);
const range = (from, to) => Array.from({ length: to - from + 1 }, (_, i) => from + i);

async function openRoom(page, roomId) {
  await roomItem(page, roomId).click();
  await page.locator(`[data-testid=room-item][data-room-id="${roomId}"][aria-current=true]`).waitFor();
}

async function joinRoom(page, roomId) {
  await page.getByTestId('join-room-input').fill(roomId);
  await page.getByTestId('join-room-submit').click();
  await page.locator(`[data-testid=room-item][data-room-id="${roomId}"][aria-current=true]`).waitFor();
}

/** Types a message and presses Enter, as a person does. */
async function say(page, text) {
  await page.getByTestId('composer-input').fill(text);
  await page.getByTestId('composer-input').press('Enter');
  await page.getByTestId('message').filter({ hasText: text }).waitFor();
}

/** Has `userId` send `count` messages ("older 1", "older 2", …) to a public room, creating it,
 *  over WebSockets opened in a bare page of the gateway's origin: the protocol, not the chat page. */
async function seedRoom(userId, roomId, count) {
  const bot = await openPage(userId);
  await bot.page.goto(`${fixture.base}/healthz`);
  await bot.page.evaluate(async ({ userId, roomId, count }) => {
    const res = await fetch(`/dev/token?user=${encodeURIComponent(userId)}`);
    const { token } = await res.json();
    let sent = 0;
    while (sent < count) {
      // One connection sends at most 40 frames: inside its rate limit's burst.
      const ws = new WebSocket(`ws://${location.host}/ws`, 'switchboard.v1.json');
      const waiting = new Map();
      let ready;
      const isReady = new Promise((resolve) => { ready = resolve; });
      ws.onmessage = (ev) => {
        const f = JSON.parse(ev.data);
        if (f.type === 'session:ready') ready();
        if (f.type === 'ack') waiting.get(f.id)?.(f);
      };
      await new Promise((resolve, reject) => { ws.onopen = resolve; ws.onerror = () => reject(new Error('WebSocket failed')); });
      ws.send(JSON.stringify({ type: 'auth', token }));
      await isReady;
      let id = 0;
      const request = (frame) => new Promise((resolve) => {
        id += 1;
        waiting.set(id, resolve);
        ws.send(JSON.stringify({ ...frame, id }));
      });
      let ack = await request({ type: 'room:join', roomId });
      if (ack.error?.code === 'ROOM_NOT_FOUND') ack = await request({ type: 'room:create', roomId });
      if (ack.error) throw new Error(`joining ${roomId}: ${ack.error.code}`);
      for (let i = 0; i < 40 && sent < count; i += 1) {
        sent += 1;
        ack = await request({ type: 'message:send', roomId, content: `older ${sent}`, clientMsgId: `seed-${sent}` });
        if (ack.error) throw new Error(`message ${sent}: ${ack.error.code}`);
      }
      ws.close(1000);
    }
  }, { userId, roomId, count });
  await bot.page.close();
  fixture.pages.splice(fixture.pages.indexOf(bot), 1);
}

scenario('the sign-in form checks the user id before anything is sent', async () => {
  const visitor = await openPage('visitor');
  await visitor.page.goto(fixture.base);
  await visitor.page.getByTestId('login-user').fill('not valid!');
  await visitor.page.getByTestId('login-submit').click();
  await visitor.page.getByTestId('login-error').filter({ hasText: 'A–Z' }).waitFor();
  assert.equal(await visitor.page.getByTestId('login-form').isVisible(), true);
  await visitor.page.close();
  fixture.pages.splice(fixture.pages.indexOf(visitor), 1);
});

scenario('alice and bob chat in general through the dev page', async (t) => {
  const { alice, bob } = await users();

  // Presence: bob sees alice in the join reply, alice hears that bob joined.
  await onlineUser(bob, 'alice').waitFor();
  await onlineUser(alice, 'bob').waitFor();

  // Alice's message shows on her page once acked, and arrives on bob's with the same seq.
  const text = `hello from alice ${Date.now()}`;
  await alice.getByTestId('composer-input').fill(text);
  await alice.getByTestId('send-button').click();
  const mine = alice.getByTestId('message').filter({ hasText: text });
  await mine.waitFor();
  const theirs = bob.getByTestId('message').filter({ hasText: text });
  await theirs.waitFor();
  const seq = await mine.getAttribute('data-seq');
  assert.match(seq, /^[1-9][0-9]*$/);
  assert.equal(await theirs.getAttribute('data-seq'), seq);
  assert.equal(await theirs.getAttribute('data-sender'), 'alice');
  assert.equal(await mine.count(), 1, 'the sender shows its own message exactly once');

  // Bob types: alice sees the indicator; it clears when bob sends.
  await bob.getByTestId('composer-input').pressSequentially('hi alice', { delay: 20 });
  await alice.getByTestId('typing-indicator').filter({ hasText: 'Bob is typing' }).waitFor();

  const screenshot = process.env.SCREENSHOT ?? path.join(os.tmpdir(), `switchboard-chat-${process.pid}.png`);
  await alice.screenshot({ path: screenshot });
  t.diagnostic(`screenshot: ${screenshot}`);

  await bob.getByTestId('send-button').click();
  await alice.getByTestId('message').filter({ hasText: 'hi alice' }).waitFor();
  await alice.waitForFunction(
    () => document.querySelector('[data-testid=typing-indicator]').textContent === '', null,
    { timeout: STEP_TIMEOUT_MS });
  assert.equal(
    await alice.getByTestId('message').filter({ hasText: 'hi alice' }).getAttribute('data-seq'),
    String(Number(seq) + 1));
});

scenario('a direct message started from a member shows under the sender\'s name', async () => {
  const { alice, bob } = await users();
  const dm = 'dm:alice:bob';
  await openRoom(alice, 'general');
  await openRoom(bob, 'general');

  // Alice starts it from bob's entry in the member list.
  await onlineUser(alice, 'bob').getByTestId('dm-start').click();
  await alice.getByTestId('room-title').filter({ hasText: 'Direct message with Bob' }).waitFor();
  await alice.locator(`[data-testid=dm-list] [data-room-id="${dm}"][aria-current=true]`).waitFor();

  // The composer is multi-line: Shift+Enter adds a line, Enter sends.
  const input = alice.getByTestId('composer-input');
  await input.fill('first line');
  await input.press('Shift+Enter');
  await input.pressSequentially('second line');
  assert.equal(await input.inputValue(), 'first line\nsecond line');
  await input.press('Enter');
  const sent = alice.getByTestId('message').filter({ hasText: 'second line' });
  await sent.waitFor();
  assert.equal(await sent.getByTestId('message-content').innerText(), 'first line\nsecond line');
  assert.equal(await input.inputValue(), '', 'Enter sent the message and cleared the composer');

  // Bob, reading general, gets the direct room under alice's name, with an unread badge.
  const item = bob.locator(`[data-testid=dm-list] [data-room-id="${dm}"]`);
  await item.filter({ hasText: 'Alice' }).locator('.badge').waitFor();
  await item.click();
  await bob.getByTestId('room-title').filter({ hasText: 'Direct message with Alice' }).waitFor();
  const got = bob.getByTestId('message').filter({ hasText: 'second line' });
  await got.waitFor();
  assert.equal(await got.getByTestId('message-content').innerText(), 'first line\nsecond line');
  assert.equal(await got.getAttribute('data-sender'), 'alice');
  await onlineUser(bob, 'alice').waitFor(); // the room's members came with it
  assert.doesNotMatch(await bob.locator('body').innerText(), /dm:/, 'no raw direct-room id on the page');
  assert.doesNotMatch(await alice.locator('body').innerText(), /dm:/, 'no raw direct-room id on the page');

  // Bob opened it: alice sees that he read her message.
  await sent.getByTestId('seen-by').filter({ hasText: 'Seen by Bob' }).waitFor();

  // Bob answers in the same room.
  await say(bob, 'hi alice, just between us');
  const answer = alice.getByTestId('message').filter({ hasText: 'just between us' });
  await answer.waitFor();
  assert.equal(Number(await answer.getAttribute('data-seq')), Number(await sent.getAttribute('data-seq')) + 1);
});

scenario('older messages load in order above the latest page', async () => {
  const { alice } = await users();
  const roomId = `history-${process.pid}`;
  await seedRoom('carol', roomId, 110);
  const seqs = () => alice.getByTestId('message').evaluateAll((els) => els.map((e) => Number(e.dataset.seq)));

  // The join reply carries the latest 50.
  await joinRoom(alice, roomId);
  await alice.locator('[data-testid=message][data-seq="110"]').waitFor();
  assert.deepEqual(await seqs(), range(61, 110));

  const older = alice.getByTestId('load-older');
  await older.click();
  await alice.locator('[data-testid=message][data-seq="11"]').waitFor();
  assert.deepEqual(await seqs(), range(11, 110));

  // hasMore was true: the button stays for the last page, then goes.
  await older.click();
  await alice.locator('[data-testid=message][data-seq="1"]').waitFor();
  await older.waitFor({ state: 'hidden' });
  assert.deepEqual(await seqs(), range(1, 110));
  assert.deepEqual(await alice.getByTestId('message-content').allInnerTexts(), range(1, 110).map((i) => `older ${i}`));
});

scenario('leaving a room removes it, and the others see the leave', async () => {
  const { alice, bob } = await users();
  const roomId = `leave-${process.pid}`;
  await joinRoom(alice, roomId);
  await joinRoom(bob, roomId);
  await alice.getByTestId('room-event').filter({ hasText: 'Bob joined' }).waitFor();
  await onlineUser(bob, 'alice').waitFor();

  await alice.getByTestId('leave-room').click();
  await roomItem(alice, roomId).waitFor({ state: 'detached' });
  await alice.locator('[data-testid=room-item][data-room-id=general][aria-current=true]').waitFor();

  await bob.getByTestId('room-event').filter({ hasText: 'Alice left' }).waitFor();
  await onlineUser(bob, 'alice').waitFor({ state: 'detached' });
});

scenario('away, busy and invisible show in the others\' member list', async () => {
  const { alice, bob } = await users();
  await openRoom(alice, 'general');
  await openRoom(bob, 'general');
  const picker = bob.getByTestId('status-picker');

  await picker.selectOption('away');
  await alice.locator('[data-testid=online-user][data-user-id=bob][data-status=away]').filter({ hasText: 'away' }).waitFor();
  await picker.selectOption('busy');
  await alice.locator('[data-testid=online-user][data-user-id=bob][data-status=busy]').filter({ hasText: 'busy' }).waitFor();
  await bob.locator('[data-testid=online-user][data-user-id=bob][data-status=busy]').waitFor();
  await picker.selectOption('offline');
  await onlineUser(alice, 'bob').waitFor({ state: 'detached' });
  await picker.selectOption('online');
  await alice.locator('[data-testid=online-user][data-user-id=bob][data-status=online]').waitFor();
});

scenario('after an embedded gateway restart a direct room is never created with room:create', async () => {
  const { alice, bob } = await users();
  const dm = 'dm:alice:bob';
  await openRoom(bob, 'general');
  await openRoom(alice, 'general');
  await onlineUser(alice, 'bob').getByTestId('dm-start').click();
  await say(alice, 'before the restart');
  await roomItem(bob, dm).waitFor();

  // A new process: the in-memory store starts over with another epoch.
  await stopProcess(fixture.gateway);
  for (const page of [alice, bob]) await page.locator('[data-testid=connection-status][data-state=reconnecting]').waitFor();
  fixture.gateway = startGateway(fixture.listen);
  await waitReady(fixture.base, fixture.gateway);
  for (const page of [alice, bob]) {
    await page.locator('[data-testid=connection-status][data-state=connected]').waitFor({ timeout: 30_000 });
  }

  // Alice had it open: it stays, says its history is gone. Bob's is dropped from his list.
  await alice.getByTestId('room-title').filter({ hasText: 'Direct message with Bob' }).waitFor();
  await alice.getByTestId('room-event').filter({ hasText: 'The server restarted' }).waitFor();
  await alice.getByTestId('message').filter({ hasText: 'before the restart' }).waitFor({ state: 'detached' });
  await roomItem(bob, dm).waitFor({ state: 'detached' });

  // The next dm:send creates it again, and bob gets it back under alice's name.
  await say(alice, 'after the restart');
  await roomItem(bob, dm).filter({ hasText: 'Alice' }).click();
  await bob.getByTestId('message').filter({ hasText: 'after the restart' }).waitFor();
  assert.equal(await bob.getByTestId('message').count(), 1, 'only the message sent after the restart');
  for (const page of [alice, bob]) {
    assert.doesNotMatch(await page.getByTestId('error-banner').innerText(), /INVALID_IDENTIFIER|reserved/);
  }
  // General came back too.
  await openRoom(bob, 'general');
  await say(bob, 'general is back');
  await openRoom(alice, 'general');
  await alice.getByTestId('message').filter({ hasText: 'general is back' }).waitFor();
});

scenario('messages typed while the gateway is down go out once it is back, once each and in order', async () => {
  const { alice, bob } = await users();
  await openRoom(alice, 'general');
  await openRoom(bob, 'general');
  const texts = [`typed offline 1 (${process.pid})`, `typed offline 2 (${process.pid})`];

  await stopProcess(fixture.gateway);
  for (const page of [alice, bob]) await page.locator('[data-testid=connection-status][data-state=reconnecting]').waitFor();
  // Sending stays possible: the client's outbox holds them, and the page shows them pending.
  for (const text of texts) {
    await alice.getByTestId('composer-input').fill(text);
    await alice.getByTestId('composer-input').press('Enter');
    await alice.getByTestId('message-pending').filter({ hasText: text }).waitFor();
  }
  assert.deepEqual(
    await alice.locator('[data-testid=message-pending] .content').allInnerTexts(), texts, 'both pending, in order');

  fixture.gateway = startGateway(fixture.listen);
  await waitReady(fixture.base, fixture.gateway);
  for (const page of [alice, bob]) {
    await page.locator('[data-testid=connection-status][data-state=connected]').waitFor({ timeout: 30_000 });
  }
  await alice.waitForFunction(
    () => document.querySelectorAll('[data-testid=message-pending]').length === 0, null,
    { timeout: STEP_TIMEOUT_MS });
  // The new in-memory store holds exactly those two messages: each page shows them once, in order.
  for (const page of [alice, bob]) {
    await page.getByTestId('message').filter({ hasText: texts[1] }).waitFor();
    assert.deepEqual(await page.getByTestId('message-content').allInnerTexts(), texts);
    const seqs = await page.getByTestId('message').evaluateAll((els) => els.map((e) => Number(e.dataset.seq)));
    assert.deepEqual(seqs, [1, 2]);
  }
});
