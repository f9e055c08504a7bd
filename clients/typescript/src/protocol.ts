// The Switchboard protocol's frames and objects (docs/protocol.md), as JSON carries them.
// Checked field by field against docs/protocol.schema.json, which the Rust protocol crate
// generates from its types (test/schema.test.ts), and by name by the crate's test
// `typescript_types_name_every_frame`.

/** Milliseconds since the Unix epoch. */
export type Millis = number;
export type UserId = string;
export type RoomId = string;
export type Role = string;

export type RoomKind = "public" | "private" | "password" | "direct" | "feed";
export type MessageKind = "text" | "image" | "file";
export type PresenceStatus = "online" | "away" | "busy" | "offline";
export type FriendStatus = "outgoing" | "incoming" | "accepted";

export interface UserRef {
  id: UserId;
  name: string;
}

export interface Member {
  user: UserRef;
  status: PresenceStatus;
}

export interface RoomInfo {
  roomId: RoomId;
  name: string;
  kind: RoomKind;
  createdBy: UserId;
  lastSeq: number;
  memberCount: number;
}

export interface RoomSummary {
  roomId: RoomId;
  name: string;
  kind: RoomKind;
  lastSeq: number;
  lastReadSeq: number;
  unread: number;
  muted: boolean;
  role: Role;
}

export interface Message {
  messageId: string;
  roomId: RoomId;
  seq: number;
  sender: UserRef;
  kind: MessageKind;
  content: string;
  clientMsgId: string;
  createdAt: Millis;
}

export interface Notification {
  id: number;
  kind: string;
  title: string;
  body: string;
  data: unknown;
  createdAt: Millis;
  readAt?: Millis;
}

export interface Friend {
  user: UserRef;
  status: FriendStatus;
}

export type ErrorCode =
  | "MALFORMED_FRAME"
  | "UNKNOWN_TYPE"
  | "INVALID_FIELD"
  | "INVALID_IDENTIFIER"
  | "ALREADY_AUTHENTICATED"
  | "ROOM_NOT_FOUND"
  | "ROOM_EXISTS"
  | "FORBIDDEN"
  | "WRONG_PASSWORD"
  | "NOT_A_MEMBER"
  | "CONTENT_EMPTY"
  | "CONTENT_TOO_LONG"
  | "INVALID_RECIPIENT"
  | "FRIEND_REQUEST_NOT_FOUND"
  | "RATE_LIMITED"
  | "STORE_UNAVAILABLE"
  | "OUTCOME_UNKNOWN"
  | "INTERNAL"
  | "UNAUTHORIZED"
  | "NOT_FOUND"
  | "DENIED"
  | "HOOK_UNAVAILABLE"
  | "NOT_SUPPORTED"
  | "INVALID_TOKEN";

/** The codes after which the same request may succeed later, unchanged. */
export const RETRYABLE_CODES: ReadonlySet<ErrorCode> = new Set<ErrorCode>([
  "RATE_LIMITED",
  "STORE_UNAVAILABLE",
  "OUTCOME_UNKNOWN",
  "INTERNAL",
  "HOOK_UNAVAILABLE",
]);

export interface ErrorBody {
  code: ErrorCode;
  message: string;
}

// ---- Client → server -------------------------------------------------------------------------

export type ClientFrame =
  | { type: "auth"; token: string }
  | { type: "auth:refresh"; id: number; token: string }
  | { type: "ping"; id?: number }
  | {
      type: "room:create";
      id: number;
      roomId: RoomId;
      name?: string;
      kind?: RoomKind;
      password?: string;
    }
  | { type: "room:join"; id: number; roomId: RoomId; password?: string; sinceSeq?: number }
  | { type: "room:leave"; id: number; roomId: RoomId }
  | { type: "room:mute"; id: number; roomId: RoomId; muted: boolean }
  | {
      type: "message:send";
      id: number;
      roomId: RoomId;
      content: string;
      kind?: MessageKind;
      clientMsgId: string;
    }
  | {
      type: "dm:send";
      id: number;
      recipientId: UserId;
      content: string;
      kind?: MessageKind;
      clientMsgId: string;
    }
  | { type: "typing:start"; roomId: RoomId }
  | { type: "typing:stop"; roomId: RoomId }
  | { type: "room:emit"; id: number; roomId: RoomId; event: string; data?: unknown }
  | { type: "presence:update"; id?: number; status: PresenceStatus }
  | { type: "message:read"; id?: number; roomId: RoomId; seq: number }
  | {
      type: "history:fetch";
      id: number;
      roomId: RoomId;
      beforeSeq?: number;
      afterSeq?: number;
      limit?: number;
    }
  | { type: "notifications:list"; id: number; limit?: number; before?: number }
  | { type: "notifications:read"; id: number; ids: number[] }
  | { type: "friend:request"; id: number; userId: UserId }
  | { type: "friend:accept"; id: number; userId: UserId }
  | { type: "friend:remove"; id: number; userId: UserId }
  | { type: "friends:list"; id: number }
  | { type: "rpc"; id: number; method: string; data?: unknown };

/** A request: a client frame answered by an `ack` with the same `id` (given one). */
export type Request = Exclude<ClientFrame, { type: "auth" | "ping" | "typing:start" | "typing:stop" }>;
/** A request without its `id`, which the client assigns. */
export type RequestBody = Request extends infer F ? (F extends Request ? Omit<F, "id"> : never) : never;

// ---- Server → client -------------------------------------------------------------------------

export type AckResult =
  | { kind: "ok" }
  | { kind: "room"; room: RoomInfo; role: Role; online: Member[]; messages: Message[]; recovered: boolean }
  | {
      kind: "sent";
      roomId: RoomId;
      messageId: string;
      seq: number;
      createdAt: Millis;
      duplicate: boolean;
    }
  | { kind: "history"; roomId: RoomId; messages: Message[]; hasMore: boolean }
  | { kind: "notifications"; notifications: Notification[]; hasMore: boolean }
  | { kind: "friend"; friend: Friend }
  | { kind: "friends"; friends: Friend[] }
  | { kind: "rpc"; data: unknown }
  | { kind: "auth"; expiresAt: Millis };

export type ServerFrame =
  | { type: "ack"; id: number; result?: AckResult; error?: ErrorBody }
  | { type: "error"; code: ErrorCode; message: string }
  | {
      type: "session:ready";
      user: UserRef;
      connId: string;
      heartbeatMs: number;
      maxFrameBytes: number;
      rooms: RoomSummary[];
      unreadNotifications: number;
      epoch: string;
    }
  | { type: "pong"; id?: number }
  | { type: "message:new"; message: Message }
  | { type: "user:joined:room"; roomId: RoomId; user: UserRef }
  | { type: "user:left:room"; roomId: RoomId; userId: UserId }
  | { type: "typing:start"; roomId: RoomId; user: UserRef }
  | { type: "typing:stop"; roomId: RoomId; userId: UserId }
  | { type: "room:event"; roomId: RoomId; event: string; data: unknown; from: UserRef }
  | { type: "user:event"; event: string; data: unknown; from: UserRef }
  | { type: "auth:expiring"; expiresAt: Millis }
  | { type: "user:online"; user: UserRef }
  | { type: "user:offline"; userId: UserId; lastSeen: Millis }
  | { type: "presence:update"; userId: UserId; status: PresenceStatus }
  | { type: "message:read"; roomId: RoomId; userId: UserId; seq: number }
  | { type: "server:shutdown"; reconnect: boolean }
  | { type: "notification:new"; notification: Notification }
  | { type: "friend:request"; user: UserRef }
  | { type: "friend:accepted"; user: UserRef }
  | { type: "friend:removed"; userId: UserId };

export type ServerFrameType = ServerFrame["type"];
/** The server frame of a given `type`. */
export type ServerFrameOf<T extends ServerFrameType> = Extract<ServerFrame, { type: T }>;
/** The ack result of a given `kind`. */
export type ResultOf<K extends AckResult["kind"]> = Extract<AckResult, { kind: K }>;

// ---- Close codes -----------------------------------------------------------------------------

/** What a close code tells the client to do (docs/protocol.md, "Close codes"). */
export interface ClosePolicy {
  reconnect: boolean;
  resume: boolean;
}

const CLOSE_POLICIES: Readonly<Record<number, ClosePolicy>> = {
  1000: { reconnect: false, resume: false },
  1001: { reconnect: true, resume: true },
  1002: { reconnect: true, resume: true },
  1007: { reconnect: true, resume: true },
  1009: { reconnect: true, resume: true },
  1011: { reconnect: true, resume: true },
  1013: { reconnect: true, resume: true },
  4001: { reconnect: false, resume: false },
  4002: { reconnect: true, resume: false },
  4003: { reconnect: true, resume: true },
  4004: { reconnect: true, resume: true },
  4005: { reconnect: true, resume: true },
  4006: { reconnect: true, resume: true },
  4007: { reconnect: false, resume: false },
  4008: { reconnect: false, resume: false },
  4009: { reconnect: false, resume: false },
  4010: { reconnect: false, resume: false },
};

/** The policy of `code`; a drop without a close frame (1006) or an unknown code is like 1011. */
export function closePolicy(code: number): ClosePolicy {
  return CLOSE_POLICIES[code] ?? { reconnect: true, resume: true };
}
