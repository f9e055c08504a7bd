// Realistic chat: USERS users connect over JOIN_SECS, each joins ROOMS_PER_USER of ROOMS rooms,
// then for DURATION_SECS sends MSG_RATE messages/s on average (Poisson), most of them after a
// typing indicator, and sends a read receipt every READ_EVERY messages it receives. Every
// message carries its send time, so receivers measure end-to-end delivery latency; per-room seq
// accounting counts lost, duplicated and out-of-order messages, which must all be zero.
//
//   k6 run -e USERS=500 -e ROOMS=50 -e MSG_RATE=0.2 -e DURATION_SECS=120 loadtest/chat.js

import { check } from 'k6';
import { SUMMARY_TREND_STATS, int, runId, sleepMs, vuId } from './lib/switchboard.js';
import { Member } from './lib/member.js';

const USERS = int('USERS', 50);
const ROOMS = int('ROOMS', 10);
const ROOMS_PER_USER = Math.min(int('ROOMS_PER_USER', 3), ROOMS);
const MSG_RATE = Number(__ENV.MSG_RATE || 0.5);
const JOIN_SECS = int('JOIN_SECS', 5);
const DURATION_SECS = int('DURATION_SECS', 30);
const TYPING_RATIO = Number(__ENV.TYPING_RATIO || 0.7);
const TYPING_MS = int('TYPING_MS', 300);
const READ_EVERY = int('READ_EVERY', 5);
const LOSS_GRACE_MS = int('LOSS_GRACE_MS', 3000);

export const options = {
  summaryTrendStats: SUMMARY_TREND_STATS,
  scenarios: {
    chat: {
      executor: 'per-vu-iterations',
      vus: USERS,
      iterations: 1,
      maxDuration: `${JOIN_SECS + DURATION_SECS + LOSS_GRACE_MS / 1000 + 60}s`,
    },
  },
  thresholds: {
    // Correctness: strict.
    sb_messages_lost: ['count==0'],
    sb_duplicates: ['count==0'],
    sb_out_of_order: ['count==0'],
    sb_handshake_failures: ['count==0'],
    sb_request_failures: ['count==0'],
    sb_unexpected_closes: ['count==0'],
    checks: ['rate==1'],
    // Something flowed at all.
    sb_deliveries: ['count>0'],
    sb_typing_received: ['count>0'],
    sb_reads_received: ['count>0'],
    // Performance: generous by default; tighten with the env vars for real runs.
    sb_delivery_latency: [
      `p(95)<${int('LATENCY_P95_MS', 500)}`,
      `p(99)<${int('LATENCY_P99_MS', 1000)}`,
    ],
    sb_handshake_time: [`p(95)<${int('HANDSHAKE_P95_MS', 1000)}`],
  },
};

export function setup() {
  return { run: runId(), t0: Date.now() };
}

/// Room k of this run.
function roomName(run, k) {
  return `chat-${run}-${k}`;
}

export default async function (data) {
  const i = vuId();
  const sendFrom = data.t0 + JOIN_SECS * 1000;
  const sendUntil = sendFrom + DURATION_SECS * 1000;
  await sleepMs(data.t0 + ((i - 1) * JOIN_SECS * 1000) / (2 * USERS) - Date.now());

  const me = new Member(`u${data.run}-${i}`, i - 1, { readEvery: READ_EVERY });
  try {
    await me.connect();
  } catch (e) {
    console.error(e.message);
    return;
  }
  // Users spread evenly over the rooms: user i is in rooms i*R, i*R+1, ... (mod ROOMS).
  const mine = [];
  for (let k = 0; k < ROOMS_PER_USER; k++) {
    mine.push(roomName(data.run, ((i - 1) * ROOMS_PER_USER + k) % ROOMS));
  }
  try {
    for (const room of mine) await me.join(room);
  } catch (e) {
    console.error(`${me.userId}: join failed: ${e.message}`);
    me.close();
    return;
  }

  await sleepMs(sendFrom - Date.now());
  const meanGapMs = 1000 / MSG_RATE;
  let sent = 0;
  for (;;) {
    const gap = -Math.log(1 - Math.random()) * meanGapMs;
    if (Date.now() + gap >= sendUntil) break;
    await sleepMs(gap);
    const room = mine[Math.floor(Math.random() * mine.length)];
    const typing = Math.random() < TYPING_RATIO;
    try {
      if (typing) {
        me.client.typing(room, true);
        await sleepMs(TYPING_MS);
      }
      await me.send(room, `hello from ${me.userId} #${sent}`);
      if (typing) me.client.typing(room, false);
      sent += 1;
    } catch (e) {
      console.error(`${me.userId}: send failed: ${e.message}`);
    }
  }

  // Every message of the run is now older than the grace: all must have arrived.
  await sleepMs(sendUntil + LOSS_GRACE_MS + 1000 - Date.now());
  try {
    await me.settle(LOSS_GRACE_MS);
    check(me, { 'settled every room': () => true });
  } catch (e) {
    check(me, { 'settled every room': () => false });
    console.error(`${me.userId}: settle failed: ${e.message}`);
  }
  me.close();
}
