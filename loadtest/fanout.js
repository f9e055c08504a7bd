// Fan-out: one large room, RECEIVERS members that only listen and PUBLISHERS members that each
// send PUBLISH_RATE messages/s for DURATION_SECS. Every message reaches every other member:
// deliveries/s (sb_deliveries' rate) is about PUBLISHERS × PUBLISH_RATE × (members − 1).
// Latency is measured from the stamp in each message; loss, duplicates and reordering must be zero.
//
//   k6 run -e RECEIVERS=2000 -e PUBLISHERS=4 -e PUBLISH_RATE=10 loadtest/fanout.js

import { check } from 'k6';
import { SUMMARY_TREND_STATS, int, runId, sleepMs, vuId } from './lib/switchboard.js';
import { Member } from './lib/member.js';

const RECEIVERS = int('RECEIVERS', 200);
const PUBLISHERS = int('PUBLISHERS', 2);
const PUBLISH_RATE = Number(__ENV.PUBLISH_RATE || 5);
const JOIN_SECS = int('JOIN_SECS', 5);
const DURATION_SECS = int('DURATION_SECS', 30);
const LOSS_GRACE_MS = int('LOSS_GRACE_MS', 3000);
const MIN_DELIVERY_RATE = Number(__ENV.MIN_DELIVERY_RATE || 0);

const deliveryThresholds = ['count>0'];
if (MIN_DELIVERY_RATE > 0) deliveryThresholds.push(`rate>${MIN_DELIVERY_RATE}`);

export const options = {
  summaryTrendStats: SUMMARY_TREND_STATS,
  scenarios: {
    fanout: {
      executor: 'per-vu-iterations',
      vus: RECEIVERS + PUBLISHERS,
      iterations: 1,
      maxDuration: `${JOIN_SECS + DURATION_SECS + LOSS_GRACE_MS / 1000 + 60}s`,
    },
  },
  thresholds: {
    sb_messages_lost: ['count==0'],
    sb_duplicates: ['count==0'],
    sb_out_of_order: ['count==0'],
    sb_handshake_failures: ['count==0'],
    sb_request_failures: ['count==0'],
    sb_unexpected_closes: ['count==0'],
    checks: ['rate==1'],
    sb_deliveries: deliveryThresholds,
    sb_delivery_latency: [
      `p(95)<${int('LATENCY_P95_MS', 500)}`,
      `p(99)<${int('LATENCY_P99_MS', 1000)}`,
    ],
  },
};

export function setup() {
  return { run: runId(), t0: Date.now() };
}

export default async function (data) {
  const i = vuId();
  // The first PUBLISHERS VUs publish; the others only listen.
  const publisher = i <= PUBLISHERS;
  const room = `fanout-${data.run}`;
  const sendFrom = data.t0 + JOIN_SECS * 1000;
  const sendUntil = sendFrom + DURATION_SECS * 1000;
  await sleepMs(data.t0 + ((i - 1) * JOIN_SECS * 1000) / (2 * (RECEIVERS + PUBLISHERS)) - Date.now());

  const tags = { role: publisher ? 'publisher' : 'receiver' };
  const me = new Member(`f${data.run}-${i}`, i - 1, { tags });
  try {
    await me.connect();
    await me.join(room);
  } catch (e) {
    console.error(`${me.userId}: ${e.message}`);
    me.close();
    return;
  }

  if (publisher) {
    await sleepMs(sendFrom - Date.now());
    // A fixed schedule, not "sleep after each send": slow acks do not lower the offered rate
    // unless they take longer than the interval.
    const intervalMs = 1000 / PUBLISH_RATE;
    for (let n = 0; ; n++) {
      const at = sendFrom + n * intervalMs + ((i - 1) * intervalMs) / PUBLISHERS;
      if (at >= sendUntil) break;
      await sleepMs(at - Date.now());
      try {
        await me.send(room, `fanout #${n} from ${me.userId}`);
      } catch (e) {
        console.error(`${me.userId}: send failed: ${e.message}`);
      }
    }
  }

  await sleepMs(sendUntil + LOSS_GRACE_MS + 1000 - Date.now());
  try {
    await me.settle(LOSS_GRACE_MS);
    check(me, { 'settled the room': () => true });
  } catch (e) {
    check(me, { 'settled the room': () => false });
    console.error(`${me.userId}: settle failed: ${e.message}`);
  }
  me.close();
}
