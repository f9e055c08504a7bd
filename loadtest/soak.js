// Soak: a long steady chat load (USERS users in ROOMS rooms, MSG_RATE messages/s each, for
// DURATION_SECS) while one more VU samples the gateways' Prometheus /metrics every SAMPLE_SECS.
// From the end of the join phase on, per sampling window, it computes the gateway error ratio:
// (error replies, except IGNORED_ERROR_CODES, + closes the server initiated) / frames received. The run fails when that ratio ever exceeds MAX_ERROR_RATIO, when
// it grows (last third of the run above the first third by more than ERROR_GROWTH), when a
// gateway reports sequence gaps or slow consumers, and on any client-side loss or duplicate.
//
//   k6 run -e USERS=300 -e DURATION_SECS=1800 -e SAMPLE_SECS=15 loadtest/soak.js
//
// METRICS_URLS: comma-separated /metrics URLs (default: TARGET_URL's host, http, /metrics). Behind
// nginx /metrics is not public: list every gateway's metrics URL (scripts/loadtest.sh does).

import http from 'k6/http';
import { check } from 'k6';
import { Counter, Gauge, Trend } from 'k6/metrics';
import { SUMMARY_TREND_STATS, httpBase, int, runId, sleepMs, vuId } from './lib/switchboard.js';
import { Member } from './lib/member.js';

const USERS = int('USERS', 50);
const ROOMS = int('ROOMS', 10);
const ROOMS_PER_USER = Math.min(int('ROOMS_PER_USER', 2), ROOMS);
const MSG_RATE = Number(__ENV.MSG_RATE || 0.5);
const JOIN_SECS = int('JOIN_SECS', 5);
const DURATION_SECS = int('DURATION_SECS', 300);
const SAMPLE_SECS = Number(__ENV.SAMPLE_SECS || 10);
const LOSS_GRACE_MS = int('LOSS_GRACE_MS', 3000);
// Error codes the load itself causes on purpose: joining a room that is not created yet, then
// creating it, races between users doing the same (Client.ensureRoom).
const IGNORED_ERROR_CODES = (__ENV.IGNORED_ERROR_CODES || 'ROOM_NOT_FOUND,ROOM_EXISTS')
  .split(',')
  .map((c) => c.trim())
  .filter((c) => c !== '');
const METRICS_URLS = (__ENV.METRICS_URLS || `${httpBase()}/metrics`)
  .split(',')
  .map((u) => u.trim())
  .filter((u) => u !== '');

/// Gateway error ratio per sampling window.
const errorRatio = new Trend('gateway_error_ratio');
/// 1 when the error ratio grew over the run (last third vs first third).
const errorGrowth = new Counter('gateway_error_growth');
/// Deltas over the run, summed over every gateway.
const gwErrors = new Counter('gateway_errors');
const gwServerCloses = new Counter('gateway_server_closes');
const gwGaps = new Counter('gateway_sequence_gaps');
const gwSlow = new Counter('gateway_slow_consumers');
/// Open connections over all gateways at the latest sample.
const gwConnections = new Gauge('gateway_connections');
/// /metrics scrapes that failed.
const scrapeFailures = new Counter('gateway_scrape_failures');

const runSecs = JOIN_SECS + DURATION_SECS + LOSS_GRACE_MS / 1000 + 2;

export const options = {
  summaryTrendStats: SUMMARY_TREND_STATS,
  scenarios: {
    users: {
      executor: 'per-vu-iterations',
      exec: 'user',
      vus: USERS,
      iterations: 1,
      maxDuration: `${runSecs + 60}s`,
    },
    metrics: {
      executor: 'per-vu-iterations',
      exec: 'sampler',
      vus: 1,
      iterations: 1,
      maxDuration: `${runSecs + 60}s`,
    },
  },
  thresholds: {
    gateway_error_ratio: [`max<=${Number(__ENV.MAX_ERROR_RATIO || 0.01)}`],
    gateway_error_growth: ['count==0'],
    gateway_sequence_gaps: ['count==0'],
    gateway_slow_consumers: ['count==0'],
    gateway_scrape_failures: ['count==0'],
    sb_messages_lost: ['count==0'],
    sb_duplicates: ['count==0'],
    sb_out_of_order: ['count==0'],
    sb_handshake_failures: ['count==0'],
    sb_unexpected_closes: ['count==0'],
    sb_deliveries: ['count>0'],
    checks: ['rate==1'],
    sb_delivery_latency: [`p(99)<${int('LATENCY_P99_MS', 1000)}`],
  },
};

export function setup() {
  return { run: runId(), t0: Date.now() };
}

export async function user(data) {
  const i = vuId();
  const sendFrom = data.t0 + JOIN_SECS * 1000;
  const sendUntil = sendFrom + DURATION_SECS * 1000;
  await sleepMs(data.t0 + ((i - 1) * JOIN_SECS * 1000) / (2 * USERS) - Date.now());
  const me = new Member(`s${data.run}-${i}`, i - 1, { readEvery: 10 });
  const mine = [];
  for (let k = 0; k < ROOMS_PER_USER; k++) {
    mine.push(`soak-${data.run}-${((i - 1) * ROOMS_PER_USER + k) % ROOMS}`);
  }
  try {
    await me.connect();
    for (const room of mine) await me.join(room);
  } catch (e) {
    console.error(`${me.userId}: ${e.message}`);
    me.close();
    return;
  }
  await sleepMs(sendFrom - Date.now());
  const meanGapMs = 1000 / MSG_RATE;
  for (;;) {
    const gap = -Math.log(1 - Math.random()) * meanGapMs;
    if (Date.now() + gap >= sendUntil) break;
    await sleepMs(gap);
    try {
      await me.send(mine[Math.floor(Math.random() * mine.length)], `soak from ${me.userId}`);
    } catch (e) {
      console.error(`${me.userId}: send failed: ${e.message}`);
    }
  }
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

/// Sums of the series the soak watches, over every gateway; undefined when a scrape failed.
function scrape() {
  const totals = { errors: 0, serverCloses: 0, framesIn: 0, gaps: 0, slow: 0, connections: 0 };
  totals.perGateway = [];
  for (const url of METRICS_URLS) {
    let connections = 0;
    const res = http.get(url, { timeout: '5s', tags: { name: 'metrics' } });
    if (res.status !== 200) {
      scrapeFailures.add(1);
      console.error(`GET ${url}: ${res.status} ${res.error || ''}`);
      return undefined;
    }
    for (const line of res.body.split('\n')) {
      const m = /^([a-z_]+)(\{[^}]*\})?\s+([0-9.eE+-]+)/.exec(line);
      if (!m) continue;
      const [, name, labels = '', raw] = m;
      const value = Number(raw);
      switch (name) {
        case 'switchboard_errors_total':
          if (!IGNORED_ERROR_CODES.some((c) => labels.includes(`code="${c}"`))) {
            totals.errors += value;
          }
          break;
        case 'switchboard_closes_total':
          if (!labels.includes('code="client"')) totals.serverCloses += value;
          break;
        case 'switchboard_frames_in_total':
          totals.framesIn += value;
          break;
        case 'switchboard_sequence_gaps_total':
          totals.gaps += value;
          break;
        case 'switchboard_slow_consumers_total':
          totals.slow += value;
          break;
        case 'switchboard_connections':
          connections += value;
          break;
        default:
      }
    }
    totals.connections += connections;
    totals.perGateway.push(connections);
  }
  return totals;
}

function mean(xs) {
  return xs.length === 0 ? 0 : xs.reduce((a, b) => a + b, 0) / xs.length;
}

export async function sampler(data) {
  const end = data.t0 + runSecs * 1000;
  // The steady state starts when every user has joined.
  await sleepMs(data.t0 + JOIN_SECS * 1000 - Date.now());
  const first = scrape();
  if (!first) return;
  let prev = first;
  const ratios = [];
  // Most connections seen on each gateway: shows how a cluster spread the load.
  const peak = METRICS_URLS.map(() => 0);
  while (Date.now() < end) {
    await sleepMs(Math.min(SAMPLE_SECS * 1000, end - Date.now()));
    const now = scrape();
    if (!now) continue;
    const frames = now.framesIn - prev.framesIn;
    const bad = now.errors - prev.errors + (now.serverCloses - prev.serverCloses);
    const ratio = frames > 0 ? bad / frames : 0;
    ratios.push(ratio);
    errorRatio.add(ratio);
    gwConnections.add(now.connections);
    now.perGateway.forEach((c, k) => {
      peak[k] = Math.max(peak[k], c);
    });
    prev = now;
  }
  gwErrors.add(prev.errors - first.errors);
  gwServerCloses.add(prev.serverCloses - first.serverCloses);
  gwGaps.add(prev.gaps - first.gaps);
  gwSlow.add(prev.slow - first.slow);
  const third = Math.max(1, Math.floor(ratios.length / 3));
  const early = mean(ratios.slice(0, third));
  const late = mean(ratios.slice(-third));
  const growth = late - early;
  const tolerance = Number(__ENV.ERROR_GROWTH || 0.001);
  errorGrowth.add(ratios.length >= 3 && growth > tolerance ? 1 : 0);
  check(ratios, { 'sampled at least 3 windows': (r) => r.length >= 3 });
  console.log(
    `soak: ${ratios.length} windows, error ratio first third ${early.toFixed(5)}, ` +
      `last third ${late.toFixed(5)}, errors ${prev.errors - first.errors}, ` +
      `peak connections per gateway ${peak.join(' ')}`,
  );
}
