// End-to-end test of the dev chat page served by the real gateway binary, in headless Chromium.
//
// Builds nothing: scripts/browser-test.sh builds the gateway and installs Chromium first.
// Env: GATEWAY_BIN (default target/debug/gateway, relative to the repo root), CHROMIUM_BIN
// (default /usr/bin/chromium), SCREENSHOT (default a fresh file in the temp dir).

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import { fileURLToPath } from 'node:url';

import { chromium } from 'playwright-core';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const GATEWAY_BIN = path.resolve(REPO, process.env.GATEWAY_BIN ?? 'target/debug/gateway');
const CHROMIUM_BIN = process.env.CHROMIUM_BIN ?? '/usr/bin/chromium';
const CHROMIUM_ARGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-quic',
  '--no-first-run', '--disable-component-update', '--disable-sync',
];
/** Bounds the whole scenario, startup included. */
const TEST_TIMEOUT_MS = 120_000;
/** Bounds each wait on the page. */
const STEP_TIMEOUT_MS = 15_000;
const READY_TIMEOUT_MS = 20_000;

/** Everything to tear down, and the evidence to print when the test fails. */
const fixture = { gateway: null, gatewayLog: [], context: null, userDataDir: null, pages: [], passed: false };

function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

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

async function stopGateway(child) {
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 12_000);
  await exited;
  clearTimeout(timer);
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
  if (!fixture.passed) {
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
  await stopGateway(fixture.gateway);
  if (fixture.userDataDir) await rm(fixture.userDataDir, { recursive: true, force: true });
});

test('alice and bob chat in general through the dev page', { timeout: TEST_TIMEOUT_MS }, async (t) => {
  assert.ok(existsSync(GATEWAY_BIN), `no gateway binary at ${GATEWAY_BIN}: run scripts/browser-test.sh or cargo build -p switchboard-gateway --bin gateway`);
  assert.ok(existsSync(CHROMIUM_BIN), `no Chromium at ${CHROMIUM_BIN}: run scripts/browser-test.sh`);

  const listen = `127.0.0.1:${await freePort()}`;
  const base = `http://${listen}`;
  fixture.gateway = startGateway(listen);
  await waitReady(base, fixture.gateway);

  fixture.userDataDir = await mkdtemp(path.join(os.tmpdir(), 'switchboard-chromium-'));
  fixture.context = await chromium.launchPersistentContext(fixture.userDataDir, {
    executablePath: CHROMIUM_BIN, headless: true, args: CHROMIUM_ARGS, timeout: 30_000,
    viewport: { width: 1100, height: 700 },
  });
  const alice = await openPage('alice');
  const bob = await openPage('bob');

  // The user id is checked before anything is sent.
  await alice.page.goto(base);
  await alice.page.getByTestId('login-user').fill('not valid!');
  await alice.page.getByTestId('login-submit').click();
  await alice.page.getByTestId('login-error').filter({ hasText: 'A–Z' }).waitFor();
  assert.equal(await alice.page.getByTestId('login-form').isVisible(), true);

  await signIn(alice.page, base, 'alice', 'Alice');
  await signIn(bob.page, base, 'bob', 'Bob');

  // Presence: bob sees alice in the join reply, alice hears that bob joined.
  await bob.page.locator('[data-testid=online-user][data-user-id=alice]').waitFor();
  await alice.page.locator('[data-testid=online-user][data-user-id=bob]').waitFor();

  // Alice's message shows on her page once acked, and arrives on bob's with the same seq.
  const text = `hello from alice ${Date.now()}`;
  await alice.page.getByTestId('composer-input').fill(text);
  await alice.page.getByTestId('send-button').click();
  const mine = alice.page.getByTestId('message').filter({ hasText: text });
  await mine.waitFor();
  const theirs = bob.page.getByTestId('message').filter({ hasText: text });
  await theirs.waitFor();
  const seq = await mine.getAttribute('data-seq');
  assert.match(seq, /^[1-9][0-9]*$/);
  assert.equal(await theirs.getAttribute('data-seq'), seq);
  assert.equal(await theirs.getAttribute('data-sender'), 'alice');
  assert.equal(await mine.count(), 1, 'the sender shows its own message exactly once');

  // Bob types: alice sees the indicator; it clears when bob sends.
  await bob.page.getByTestId('composer-input').pressSequentially('hi alice', { delay: 20 });
  await alice.page.getByTestId('typing-indicator').filter({ hasText: 'Bob is typing' }).waitFor();

  const screenshot = process.env.SCREENSHOT ?? path.join(os.tmpdir(), `switchboard-chat-${process.pid}.png`);
  await alice.page.screenshot({ path: screenshot });
  t.diagnostic(`screenshot: ${screenshot}`);

  await bob.page.getByTestId('send-button').click();
  await alice.page.getByTestId('message').filter({ hasText: 'hi alice' }).waitFor();
  await alice.page.waitForFunction(
    () => document.querySelector('[data-testid=typing-indicator]').textContent === '', null,
    { timeout: STEP_TIMEOUT_MS });
  assert.equal(
    await alice.page.getByTestId('message').filter({ hasText: 'hi alice' }).getAttribute('data-seq'),
    String(Number(seq) + 1));

  for (const { who, errors } of fixture.pages) assert.deepEqual(errors, [], `uncaught errors on ${who}'s page`);
  fixture.passed = true;
});
