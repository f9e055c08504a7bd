// Reconnect and resume: CLIENTS users share ROOMS rooms and send MSG_RATE messages/s each for
// DURATION_SECS. Every DROP_EVERY_SECS or so (jittered) a client closes its connection, stays
// away up to AWAY_MS while the others keep sending, reconnects and resumes each room with
// `room:join {sinceSeq: last seq held}`. Sometimes (RESEND_RATIO) it first repeats its last send
// with the same clientMsgId, which must come back as the same seq with `duplicate: true`.
//
// Every message must be received exactly once and in order across all of a client's
// connections: gaps (sb_messages_lost), duplicates and reordering all fail the run at 0.
//
//   k6 run -e CLIENTS=200 -e DROP_EVERY_SECS=5 -e DURATION_SECS=60 loadtest/reconnect.js

import { check } from 'k6';
import { Counter } from 'k6/metrics';
import { SUMMARY_TREND_STATS, int, randInt, runId, sleepMs, vuId } from './lib/switchboard.js';
import { Member } from './lib/member.js';

const CLIENTS = int('CLIENTS', 50);
const ROOMS = int('ROOMS', 2);
const MSG_RATE = Number(__ENV.MSG_RATE || 2);
const JOIN_SECS = int('JOIN_SECS', 5);
const DURATION_SECS = int('DURATION_SECS', 30);
const DROP_EVERY_SECS = Number(__ENV.DROP_EVERY_SECS || 3);
const AWAY_MS = int('AWAY_MS', 1500);
const RESEND_RATIO = Number(__ENV.RESEND_RATIO || 0.3);
const LOSS_GRACE_MS = int('LOSS_GRACE_MS', 3000);

/// Resumes done, and messages they replayed (missed while away and recovered).
const resumes = new Counter('sb_resumes');
const replayed = new Counter('sb_replayed');
/// Resumes whose replay was incomplete (`recovered: false`) or that met a new store epoch.
const resumeFailures = new Counter('sb_resume_failures');

export const options = {
  summaryTrendStats: SUMMARY_TREND_STATS,
  scenarios: {
    reconnect: {
      executor: 'per-vu-iterations',
      vus: CLIENTS,
      iterations: 1,
      maxDuration: `${JOIN_SECS + DURATION_SECS + LOSS_GRACE_MS / 1000 + 60}s`,
    },
  },
  thresholds: {
    sb_messages_lost: ['count==0'],
    sb_duplicates: ['count==0'],
    sb_out_of_order: ['count==0'],
    sb_resume_failures: ['count==0'],
    sb_handshake_failures: ['count==0'],
    sb_request_failures: ['count==0'],
    sb_unexpected_closes: ['count==0'],
    checks: ['rate==1'],
    sb_resumes: ['count>0'],
    sb_replayed: ['count>0'],
    sb_delivery_latency: [`p(99)<${int('LATENCY_P99_MS', 1000)}`],
  },
};

export function setup() {
  return { run: runId(), t0: Date.now() };
}

export default async function (data) {
  const i = vuId();
  const sendFrom = data.t0 + JOIN_SECS * 1000;
  const sendUntil = sendFrom + DURATION_SECS * 1000;
  await sleepMs(data.t0 + ((i - 1) * JOIN_SECS * 1000) / (2 * CLIENTS) - Date.now());

  const me = new Member(`r${data.run}-${i}`, i - 1);
  const rooms = [];
  for (let k = 0; k < ROOMS; k++) rooms.push(`resume-${data.run}-${k}`);
  try {
    await me.connect();
    for (const room of rooms) await me.join(room);
  } catch (e) {
    console.error(`${me.userId}: ${e.message}`);
    me.close();
    return;
  }

  await sleepMs(sendFrom - Date.now());
  const meanGapMs = 1000 / MSG_RATE;
  const nextDrop = () => Date.now() + DROP_EVERY_SECS * 1000 * (0.5 + Math.random());
  let dropAt = nextDrop();
  while (Date.now() < sendUntil) {
    try {
      if (Date.now() >= dropAt) {
        const resend = me.lastSend && Math.random() < RESEND_RATIO ? me.lastSend : undefined;
        const r = await me.reconnect(randInt(0, AWAY_MS));
        resumes.add(1);
        replayed.add(r.replayed);
        if (!r.sameEpoch || !r.recovered) resumeFailures.add(1);
        check(r, { 'resume: same epoch, recovered': (x) => x.sameEpoch && x.recovered });
        if (resend) {
          const sent = await me.send(resend.roomId, undefined, resend);
          check(sent, {
            'resend is a duplicate of the same seq': (s) => s.duplicate && s.seq === resend.seq,
          });
        }
        dropAt = nextDrop();
        continue;
      }
      const gap = Math.min(-Math.log(1 - Math.random()) * meanGapMs, dropAt - Date.now());
      await sleepMs(gap);
      if (Date.now() >= sendUntil || Date.now() >= dropAt) continue;
      const room = rooms[randInt(0, rooms.length - 1)];
      await me.send(room, `resume test from ${me.userId}`);
    } catch (e) {
      console.error(`${me.userId}: ${e.message}`);
      await sleepMs(100);
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
