// A Socket.IO 4 chat server built the way its users build one, doing the work Switchboard does in
// the benchmarks: JWT (HS256) middleware on the handshake, `room:join` with an ack,
// `message:send` with an ack carrying the message's id and per-room seq, and
// `io.to(room).emit('message:new', message)` with the same fields as Switchboard's `message:new`.
// With REDIS_URL set, @socket.io/redis-adapter joins every process using that Redis into one
// cluster. No database: seqs come from an in-memory counter per room and process.
//
// Environment: PORT (3000), HOST (127.0.0.1), JWT_SECRET or SWITCHBOARD_JWT_SECRET (required,
// the secret the gateway uses), REDIS_URL (optional), PING_INTERVAL_MS and PING_TIMEOUT_MS
// (Socket.IO's 25000 and 20000 when unset). GET /readyz answers 200 once listening.
'use strict';

const http = require('node:http');
const { randomUUID } = require('node:crypto');
const jwt = require('jsonwebtoken');
const { Server } = require('socket.io');

const PORT = Number(process.env.PORT || 3000);
const HOST = process.env.HOST || '127.0.0.1';
const SECRET = process.env.JWT_SECRET || process.env.SWITCHBOARD_JWT_SECRET;
const REDIS_URL = process.env.REDIS_URL;
// The limits Switchboard applies by default.
const MAX_MESSAGE_CHARS = 5000;
const ID_PATTERN = /^[A-Za-z0-9_.\-@]{1,64}$/;

if (!SECRET) {
  console.error('set JWT_SECRET (or SWITCHBOARD_JWT_SECRET)');
  process.exit(1);
}

const httpServer = http.createServer((req, res) => {
  if (req.url === '/readyz' || req.url === '/healthz') {
    res.writeHead(200, { 'content-type': 'text/plain' });
    res.end('ok\n');
    return;
  }
  res.writeHead(404);
  res.end();
});

const io = new Server(httpServer, {
  transports: ['websocket'],
  serveClient: false,
  ...(process.env.PING_INTERVAL_MS && { pingInterval: Number(process.env.PING_INTERVAL_MS) }),
  ...(process.env.PING_TIMEOUT_MS && { pingTimeout: Number(process.env.PING_TIMEOUT_MS) }),
});

// Authentication: the token from `socket.handshake.auth`, verified before the connection counts.
io.use((socket, next) => {
  const token = socket.handshake.auth && socket.handshake.auth.token;
  if (typeof token !== 'string') {
    return next(new Error('unauthorized'));
  }
  jwt.verify(token, SECRET, { algorithms: ['HS256'] }, (err, claims) => {
    if (err || typeof claims.sub !== 'string' || !ID_PATTERN.test(claims.sub)) {
      return next(new Error('unauthorized'));
    }
    socket.data.user = { id: claims.sub, name: claims.name || claims.sub };
    next();
  });
});

// The next seq of every room this process has sent to.
const lastSeq = new Map();

function fail(ack, code, message) {
  if (typeof ack === 'function') {
    ack({ error: { code, message } });
  }
}

io.on('connection', (socket) => {
  socket.on('room:join', (payload, ack) => {
    const roomId = payload && payload.roomId;
    if (typeof roomId !== 'string' || !ID_PATTERN.test(roomId)) {
      return fail(ack, 'INVALID_IDENTIFIER', 'bad roomId');
    }
    socket.join(roomId);
    if (typeof ack === 'function') {
      ack({ ok: true, roomId, lastSeq: lastSeq.get(roomId) || 0 });
    }
  });

  socket.on('room:leave', (payload, ack) => {
    const roomId = payload && payload.roomId;
    if (typeof roomId === 'string') {
      socket.leave(roomId);
    }
    if (typeof ack === 'function') {
      ack({ ok: true });
    }
  });

  socket.on('message:send', (payload, ack) => {
    const { roomId, content, clientMsgId } = payload || {};
    if (typeof roomId !== 'string' || !socket.rooms.has(roomId)) {
      return fail(ack, 'NOT_A_MEMBER', 'join the room first');
    }
    if (typeof content !== 'string' || content.length > MAX_MESSAGE_CHARS) {
      return fail(ack, 'CONTENT_TOO_LONG', 'content too long');
    }
    const seq = (lastSeq.get(roomId) || 0) + 1;
    lastSeq.set(roomId, seq);
    const message = {
      messageId: randomUUID(),
      roomId,
      seq,
      sender: socket.data.user,
      kind: 'text',
      content,
      clientMsgId: typeof clientMsgId === 'string' ? clientMsgId : '',
      createdAt: Date.now(),
    };
    io.to(roomId).emit('message:new', message);
    if (typeof ack === 'function') {
      ack({ messageId: message.messageId, seq, createdAt: message.createdAt });
    }
  });
});

async function main() {
  if (REDIS_URL) {
    const { createClient } = require('redis');
    const { createAdapter } = require('@socket.io/redis-adapter');
    const pubClient = createClient({ url: REDIS_URL });
    const subClient = pubClient.duplicate();
    pubClient.on('error', (err) => console.error('redis pub:', err.message));
    subClient.on('error', (err) => console.error('redis sub:', err.message));
    await Promise.all([pubClient.connect(), subClient.connect()]);
    io.adapter(createAdapter(pubClient, subClient));
  }
  httpServer.listen(PORT, HOST, () => {
    console.error(`socket.io listening on ${HOST}:${PORT}${REDIS_URL ? ' with the redis adapter' : ''}`);
  });
}

// Stop on SIGTERM like the gateway does: close every connection, then exit.
process.on('SIGTERM', () => {
  io.close(() => process.exit(0));
  setTimeout(() => process.exit(0), 5000).unref();
});

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
