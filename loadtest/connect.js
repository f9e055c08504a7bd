// Connection storm: ramp up to CONNECTIONS authenticated connections over RAMP_SECS, hold them all
// open for HOLD_SECS (each checks it is alive with a ping at the end), then disconnect together.
// Measures the handshake (socket open to session:ready) and fails on any failed handshake,
// server-initiated close or unanswered ping.
//
//   k6 run -e CONNECTIONS=1000 -e RAMP_SECS=20 -e HOLD_SECS=30 loadtest/connect.js

import { check } from 'k6';
import { SUMMARY_TREND_STATS, Client, credentials, int, runId, sleepMs, vuId } from './lib/switchboard.js';

const CONNECTIONS = int('CONNECTIONS', 200);
const RAMP_SECS = int('RAMP_SECS', 10);
const HOLD_SECS = int('HOLD_SECS', 10);

export const options = {
  summaryTrendStats: SUMMARY_TREND_STATS,
  scenarios: {
    storm: {
      executor: 'per-vu-iterations',
      vus: CONNECTIONS,
      iterations: 1,
      maxDuration: `${RAMP_SECS + HOLD_SECS + 60}s`,
    },
  },
  thresholds: {
    sb_handshake_failures: ['count==0'],
    sb_unexpected_closes: ['count==0'],
    sb_request_failures: ['count==0'],
    sb_handshake_time: [
      `p(95)<${int('HANDSHAKE_P95_MS', 500)}`,
      `p(99)<${int('HANDSHAKE_P99_MS', 1000)}`,
    ],
    checks: ['rate==1'],
  },
};

export function setup() {
  return { run: runId(), t0: Date.now() };
}

export default async function (data) {
  const i = vuId();
  // Connection i opens at its slot of the ramp; all close together at the end of the hold.
  await sleepMs(data.t0 + ((i - 1) * RAMP_SECS * 1000) / CONNECTIONS - Date.now());
  const { userId, token } = credentials(`c${data.run}-${i}`, i - 1);
  const client = new Client({ userId, token });
  let ready;
  try {
    ready = await client.connect();
  } catch (e) {
    console.error(e.message);
    return;
  }
  check(ready, { 'session:ready names the user': (r) => r.user.id === userId });
  await sleepMs(data.t0 + (RAMP_SECS + HOLD_SECS) * 1000 - Date.now());
  try {
    const pong = await client.request({ type: 'ping' });
    check(pong, { 'still alive after the hold': (p) => p.type === 'pong' });
  } catch (e) {
    console.error(`${userId}: ${e.message}`);
  }
  client.close();
}
