// The app's backend publishes: API_PUBLISHERS backends post messages through the server API
// (POST /api/v1/rooms/{roomId}/messages, each at PUBLISH_RATE/s for DURATION_SECS), spread over
// the nodes in API_URLS, into one room whose RECEIVERS members listen over WebSockets. Every
// message reaches every member, in seq order with no loss and no duplicate; every RETRY_EVERY-th
// publish is posted twice with its idempotency key and must be answered as a duplicate.
//
//   k6 run -e RECEIVERS=500 -e API_PUBLISHERS=4 -e PUBLISH_RATE=50 loadtest/publish.js
//
// API_URLS: comma-separated http bases of the nodes serving the API (scripts/loadtest.sh sets
// it, with SWITCHBOARD_API_KEY).

import http from 'k6/http';
import { check } from 'k6';
import { Counter, Trend } from 'k6/metrics';
import { SUMMARY_TREND_STATS, int, runId, sleepMs, stampedContent, vuId } from './lib/switchboard.js';
import { Member } from './lib/member.js';

const RECEIVERS = int('RECEIVERS', 200);
const API_PUBLISHERS = int('API_PUBLISHERS', 2);
const PUBLISH_RATE = Number(__ENV.PUBLISH_RATE || 20);
const RETRY_EVERY = int('RETRY_EVERY', 10);
const JOIN_SECS = int('JOIN_SECS', 5);
const DURATION_SECS = int('DURATION_SECS', 30);
const LOSS_GRACE_MS = int('LOSS_GRACE_MS', 3000);
const API_URLS = (__ENV.API_URLS || 'http://127.0.0.1:8080').split(',');
const API_KEY = __ENV.SWITCHBOARD_API_KEY || '';

/// Time for one API publish, request to answer.
const apiPublishTime = new Trend('sb_api_publish_time', true);
/// API publishes that were not stored (any answer but 201), and retries not answered 200
/// with `duplicate: true`.
const apiFailures = new Counter('sb_api_failures');
/// Messages the API stored.
const apiPublished = new Counter('sb_api_published');

export const options = {
  summaryTrendStats: SUMMARY_TREND_STATS,
  scenarios: {
    publish: {
      executor: 'per-vu-iterations',
      vus: RECEIVERS + API_PUBLISHERS,
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
    sb_api_failures: ['count==0'],
    sb_api_published: ['count>0'],
    sb_deliveries: ['count>0'],
    checks: ['rate==1'],
    sb_delivery_latency: [
      `p(95)<${int('LATENCY_P95_MS', 500)}`,
      `p(99)<${int('LATENCY_P99_MS', 1000)}`,
    ],
  },
};

function api(method, base, path, body) {
  return http.request(method, `${base}/api/v1${path}`, body === undefined ? null : JSON.stringify(body), {
    headers: { Authorization: `Bearer ${API_KEY}`, 'Content-Type': 'application/json' },
    timeout: '10s',
    tags: { name: path.replace(/\/rooms\/[^/]+/, '/rooms/{roomId}') },
  });
}

export function setup() {
  const run = runId();
  const room = `publish-${run}`;
  const res = api('PUT', API_URLS[0], `/rooms/${room}`, { name: 'API publish', kind: 'public' });
  if (res.status !== 201) throw new Error(`PUT room: ${res.status} ${res.body}`);
  return { room, t0: Date.now() };
}

export default async function (data) {
  const i = vuId();
  if (i <= API_PUBLISHERS) {
    await publish(data, i);
  } else {
    await receive(data, i);
  }
}

async function publish(data, i) {
  const base = API_URLS[(i - 1) % API_URLS.length];
  const sendFrom = data.t0 + JOIN_SECS * 1000;
  const sendUntil = sendFrom + DURATION_SECS * 1000;
  const intervalMs = 1000 / PUBLISH_RATE;
  const path = `/rooms/${data.room}/messages`;
  await sleepMs(sendFrom - Date.now());
  for (let n = 0; ; n++) {
    // A fixed schedule: a slow answer does not lower the offered rate.
    const at = sendFrom + n * intervalMs + ((i - 1) * intervalMs) / API_PUBLISHERS;
    if (at >= sendUntil) break;
    await sleepMs(at - Date.now());
    const body = { content: stampedContent(`api #${n} from backend ${i}`), idempotencyKey: `b${i}-${n}` };
    const res = api('POST', base, path, body);
    apiPublishTime.add(res.timings.duration);
    if (res.status !== 201) {
      apiFailures.add(1);
      console.error(`backend ${i}: publish ${n}: ${res.status} ${res.body}`);
      continue;
    }
    apiPublished.add(1);
    if (RETRY_EVERY > 0 && n % RETRY_EVERY === 0) {
      // As after a lost answer: the same key stores nothing and answers the original.
      const again = api('POST', base, path, body);
      const first = res.json();
      const ok = again.status === 200 && again.json('duplicate') === true && again.json('seq') === first.seq;
      if (!ok) {
        apiFailures.add(1);
        console.error(`backend ${i}: retry of ${n}: ${again.status} ${again.body}`);
      }
    }
  }
}

async function receive(data, i) {
  const others = i - API_PUBLISHERS;
  await sleepMs(data.t0 + ((others - 1) * JOIN_SECS * 1000) / (2 * RECEIVERS) - Date.now());
  const me = new Member(`p${data.room}-${others}`, others - 1, { tags: { role: 'receiver' } });
  try {
    await me.connect();
    await me.join(data.room);
  } catch (e) {
    console.error(`${me.userId}: ${e.message}`);
    me.close();
    return;
  }
  const sendUntil = data.t0 + (JOIN_SECS + DURATION_SECS) * 1000;
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
