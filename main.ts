/**
 * deno-chat: a small WebSocket chat server for Deno.
 *
 * One server serves the page, another takes the WebSockets. Open the page in
 * two tabs and chat:
 *
 * ```sh
 * deno run -A main.ts                 # page on :8080, chat on :12345
 * deno run -A main.ts --port 3000 --ws-port 3001
 * deno run -A main.ts --help
 * ```
 *
 * As a library, {@linkcode startChat} starts both servers and returns their
 * bound ports and a `shutdown()`.
 *
 * @module
 */

import clientHtml from "./client.html" with { type: "text" };
import { createHmac, randomBytes, timingSafeEqual } from "node:crypto";
import { parseArgs } from "node:util";

// ---------------------------------------------------------------------------
// Options and limits
// ---------------------------------------------------------------------------

/** Port of the page server. */
export const DEFAULT_PORT = 8080;
/** Port of the chat (WebSocket) server. */
export const DEFAULT_WS_PORT = 12345;
/** Longest chat message, in characters (code points), after trimming. */
export const MAX_MESSAGE_CHARS = 2000;
/** Events each room keeps for newcomers and resuming clients. */
export const HISTORY_SIZE = 100;
/** Largest incoming frame; a bigger one closes the connection with 1009. */
export const MAX_FRAME_BYTES = 64 * 1024;
/** Messages a connection may send per second, on average. */
export const RATE_PER_SECOND = 10;
/** Messages a connection may send at once before the rate applies. */
export const RATE_BURST = 20;
/** Consecutive rate-limited messages after which the sender is closed (1008). */
export const MAX_CONSECUTIVE_DROPS = 50;
/** Outgoing bytes queued for one client before it is dropped as slow (1013). */
export const MAX_BUFFERED_BYTES = 1024 * 1024;
/** How often queued outgoing bytes are checked, in milliseconds. */
export const SLOW_CONSUMER_SWEEP_MS = 250;
/** Seconds without a pong before a peer is considered dead. */
export const IDLE_TIMEOUT_SECONDS = 30;
/** Open chat connections in all. */
export const MAX_CONNECTIONS = 10_000;
/** Open chat connections from one IP address. */
export const MAX_CONNECTIONS_PER_IP = 100;
/**
 * Rooms at once. Each holds up to `historySize` events, so this bounds what
 * history can cost: a new room beyond it is refused with 503.
 */
export const MAX_ROOMS = 1000;
/** Longest room name, in characters. */
export const MAX_ROOM_CHARS = 32;
/** Longest nickname, in characters. */
export const MAX_NICK_CHARS = 24;
/** How long shutdown waits for clients to finish the close handshake. */
export const SHUTDOWN_GRACE_MS = 1000;
/** After a signal, the CLI exits by this time whatever is still open. */
export const EXIT_DEADLINE_MS = 1800;
/** The JSON subprotocol; without it a connection speaks plain text. */
export const JSON_PROTOCOL = "chat.v1.json";

/** HTTP statuses we answer with, by name. */
const Status = {
  BadRequest: 400,
  Forbidden: 403,
  NotFound: 404,
  MethodNotAllowed: 405,
  UpgradeRequired: 426,
  ServiceUnavailable: 503,
} as const;

/**
 * WebSocket close codes (RFC 6455 §7.4.1) we send, plus `Abnormal`, which is
 * only ever recorded (a connection that ended without a close frame), never
 * sent.
 */
export const CloseCode = {
  Normal: 1000,
  GoingAway: 1001,
  UnsupportedData: 1003,
  Abnormal: 1006,
  PolicyViolation: 1008,
  MessageTooBig: 1009,
  InternalError: 1011,
  TryAgainLater: 1013,
} as const;

/** Everything {@linkcode startChat} can be told. Every field is optional. */
export interface ChatOptions {
  /** Port of the page server; 0 picks a free one. @default {8080} */
  port?: number;
  /** Port of the chat server; 0 picks a free one. @default {12345} */
  wsPort?: number;
  /** Address both servers listen on. @default {"0.0.0.0"} */
  hostname?: string;
  /** Longest message in characters; longer ones get `too_long`. @default {2000} */
  maxMessageChars?: number;
  /** Events kept per room for history and resume. @default {100} */
  historySize?: number;
  /** Largest incoming frame in bytes; bigger closes with 1009. @default {65536} */
  maxFrameBytes?: number;
  /** Messages per second per connection (token bucket refill). @default {10} */
  rate?: number;
  /** Token bucket size per connection. @default {20} */
  burst?: number;
  /** Queued outgoing bytes before a client is dropped with 1013. @default {1048576} */
  maxBufferedBytes?: number;
  /** Rate-limited messages in a row before the sender is closed (1008). @default {50} */
  maxConsecutiveDrops?: number;
  /** Seconds without a pong before a peer is dropped. @default {30} */
  idleTimeout?: number;
  /** Open chat connections in all; more get 503. @default {10000} */
  maxConnections?: number;
  /** Open chat connections per IP address; more get 503. @default {100} */
  maxConnectionsPerIp?: number;
  /** Rooms at once; joining a new room beyond it gets 503. @default {1000} */
  maxRooms?: number;
  /**
   * Browser origins allowed to open a chat connection (`*` for any). When
   * empty, origins on the same host as the request are allowed. Requests
   * without `Origin` (terminal tools) are always allowed. @default {[]}
   */
  allowOrigin?: string[];
  /** PEM certificate; with `key`, both servers speak TLS. @default {undefined} */
  cert?: string;
  /** PEM private key for `cert`. @default {undefined} */
  key?: string;
  /** Serve `GET /metrics` on the page server. @default {true} */
  metrics?: boolean;
  /** Log line format on stderr. @default {"text"} */
  logFormat?: "text" | "json";
  /** Log warnings and errors only. @default {false} */
  quiet?: boolean;
  /** Where formatted log lines go. @default {console.error} */
  logSink?: (line: string) => void;
}

/** The defaults, in one place; the README's option table says the same. */
export const DEFAULT_OPTIONS: Required<Omit<ChatOptions, "cert" | "key">> = {
  port: DEFAULT_PORT,
  wsPort: DEFAULT_WS_PORT,
  hostname: "0.0.0.0",
  maxMessageChars: MAX_MESSAGE_CHARS,
  historySize: HISTORY_SIZE,
  maxFrameBytes: MAX_FRAME_BYTES,
  rate: RATE_PER_SECOND,
  burst: RATE_BURST,
  maxBufferedBytes: MAX_BUFFERED_BYTES,
  maxConsecutiveDrops: MAX_CONSECUTIVE_DROPS,
  idleTimeout: IDLE_TIMEOUT_SECONDS,
  maxConnections: MAX_CONNECTIONS,
  maxConnectionsPerIp: MAX_CONNECTIONS_PER_IP,
  maxRooms: MAX_ROOMS,
  allowOrigin: [],
  metrics: true,
  logFormat: "text",
  quiet: false,
  logSink: (line) => console.error(line),
};

type Settings = typeof DEFAULT_OPTIONS & Pick<ChatOptions, "cert" | "key">;

/** The options of the running server (one at a time per process). */
let settings: Settings = DEFAULT_OPTIONS;

// ---------------------------------------------------------------------------
// Logging and metrics
// ---------------------------------------------------------------------------

type LogLevel = "info" | "warn" | "error";
type LogFields = Record<string, string | number | boolean | undefined>;

/** One line per event worth knowing. Never message content. */
function log(level: LogLevel, event: string, fields: LogFields = {}): void {
  if (level === "info" && settings.quiet) return;
  const ts = new Date().toISOString();
  if (settings.logFormat === "json") {
    settings.logSink(JSON.stringify({ ts, level, event, ...fields }));
    return;
  }
  const rest = Object.entries(fields)
    .filter(([, value]) => value !== undefined)
    .map(([key, value]) => `${key}=${value}`)
    .join(" ");
  settings.logSink(
    `${ts} ${level.toUpperCase()} ${event}${rest ? " " + rest : ""}`,
  );
}

/** Counters behind `/metrics`; reset when a server starts. */
const counters = {
  messagesReceived: 0,
  framesSent: 0,
  slowConsumerDrops: 0,
  refused: new Map<string, number>(),
  closes: new Map<number, number>(),
  upgradesRefused: new Map<string, number>(),
};

function bump<K>(map: Map<K, number>, key: K): void {
  map.set(key, (map.get(key) ?? 0) + 1);
}

// ---------------------------------------------------------------------------
// Room state
// ---------------------------------------------------------------------------

/** A room event as kept in history and sent to JSON clients. */
export type RoomEvent =
  | { type: "message"; id: number; ts: number; from: string; text: string }
  | { type: "action"; id: number; ts: number; from: string; text: string }
  | { type: "join"; id: number; ts: number; nick: string }
  | { type: "leave"; id: number; ts: number; nick: string }
  | { type: "nick"; id: number; ts: number; from: string; to: string };

/**
 * A room event before the stream gives it an id and a time. (`Omit` over the
 * union member by member: a plain `Omit<RoomEvent, …>` would merge them.)
 */
type NewEvent = RoomEvent extends infer E
  ? E extends RoomEvent ? Omit<E, "id" | "ts"> : never
  : never;

/** One connected client. Kept small: there may be many thousands. */
interface Client {
  socket: WebSocket;
  nick: string;
  room: Room;
  json: boolean;
  ip: string;
  /** Id of this client's join event; its reconnect token is derived from it. */
  joinedId: number;
  /** Token bucket: tokens left and when it was last refilled. */
  tokens: number;
  refilledAt: number;
  /** Rate-limited messages in a row. */
  drops: number;
}

interface Room {
  name: string;
  /** Random, fixed for this room's life; tells resuming clients ids started over. */
  epoch: string;
  lastId: number;
  history: RoomEvent[];
  /** Members by protocol, so each broadcast loop is a plain loop over sockets. */
  textSockets: Set<WebSocket>;
  jsonSockets: Set<WebSocket>;
  /** Members by lower-cased nick, for case-insensitive uniqueness. */
  nicks: Map<string, Client>;
  /** JSON-encoded events of this turn, not yet sent (see flushBatches). */
  pendingJson: string[];
}

/** Every open chat connection, keyed by its socket. */
const clients = new Map<WebSocket, Client>();
/** Rooms with at least one member, by name. */
const rooms = new Map<string, Room>();
/** Upgraded sockets not yet closed: joined, about to join, or being closed. */
let openSockets = 0;
/** Open connections per peer address, for the per-IP limit. */
const connectionsByIp = new Map<string, number>();
/** Rooms whose JSON batch waits for the end of this turn. */
const roomsWithPending = new Set<Room>();
let flushScheduled: ReturnType<typeof setImmediate> | undefined;
/** One chat per process: the state above is module-level, as designed. */
let running = false;
let shuttingDown = false;

function roomOf(name: string): Room {
  let room = rooms.get(name);
  if (!room) {
    room = {
      name,
      epoch: crypto.randomUUID().slice(0, 8),
      lastId: 0,
      history: [],
      textSockets: new Set(),
      jsonSockets: new Set(),
      nicks: new Map(),
      pendingJson: [],
    };
    rooms.set(name, room);
  }
  return room;
}

/** The nicks of the room's members (for the welcome and `/who`). */
function nicksIn(room: Room): string[] {
  return [...room.nicks.values()].map((member) => member.nick);
}

function nickKey(nick: string): string {
  return nick.toLowerCase();
}

/** `user-NNNNN`, redrawn until no one in the room has it (nicks are per room). */
function randomNick(room: Room): string {
  for (;;) {
    const nick = `user-${Math.floor(Math.random() * 100_000)}`;
    if (!room.nicks.has(nickKey(nick))) return nick;
  }
}

// ---------------------------------------------------------------------------
// The room event stream: append, deliver, read back. This is the one seam a
// shared store (Redis, to run several processes as one chat) would replace.
// ---------------------------------------------------------------------------

/** Gives the event its id and time, keeps it in history and delivers it. */
function appendEvent(room: Room, body: NewEvent): RoomEvent {
  const event = { ...body, id: ++room.lastId, ts: Date.now() } as RoomEvent;
  room.history.push(event);
  if (room.history.length > settings.historySize) room.history.shift();
  deliverLocally(room, event);
  return event;
}

/**
 * Sends one event to this process's members of the room. Each protocol
 * renders it once; JSON clients get the turn's events as one frame.
 */
function deliverLocally(room: Room, event: RoomEvent): void {
  if (room.textSockets.size > 0) {
    const line = renderText(event);
    for (const socket of room.textSockets) sendFrame(socket, line);
    counters.framesSent += room.textSockets.size;
  }
  if (room.jsonSockets.size > 0) {
    room.pendingJson.push(JSON.stringify(event));
    roomsWithPending.add(room);
    flushScheduled ??= setImmediate(flushBatches);
  }
}

/**
 * Held events after `id`, or `undefined` when some of them are no longer held
 * (or the client's epoch is not this room's: ids started over).
 */
function eventsAfter(
  room: Room,
  id: number,
  epoch: string,
): RoomEvent[] | undefined {
  if (epoch !== room.epoch || id > room.lastId) return undefined;
  const oldest = room.history[0]?.id ?? room.lastId + 1;
  if (id < oldest - 1) return undefined;
  return room.history.filter((event) => event.id > id);
}

/** Sends each room's pending JSON events: one frame per recipient per turn. */
function flushBatches(): void {
  flushScheduled = undefined;
  for (const room of roomsWithPending) flushRoom(room);
  roomsWithPending.clear();
}

function flushRoom(room: Room): void {
  const pending = room.pendingJson;
  if (pending.length === 0) return;
  const frame = pending.length === 1 ? pending[0] : `[${pending.join(",")}]`;
  room.pendingJson = [];
  for (const socket of room.jsonSockets) sendFrame(socket, frame);
  counters.framesSent += room.jsonSockets.size;
}

/** A send that never throws: a closing socket must not break a broadcast. */
function sendFrame(socket: WebSocket, frame: string): void {
  try {
    socket.send(frame);
  } catch {
    // The socket is closing; its close event removes it.
  }
}

/** A frame for one client only (a welcome, an error, a reply). */
function sendToOne(client: Client, frame: string): void {
  sendFrame(client.socket, frame);
  counters.framesSent++;
}

// ---------------------------------------------------------------------------
// Protocol: what clients send, and the two renderings of what they get
// ---------------------------------------------------------------------------

/**
 * The tutorial's lines, one per event. A newline in a message becomes a
 * space: on a plain-text client it would start a line that could pass for a
 * system line (` .... admin has joined.`). JSON clients keep it.
 */
function renderText(event: RoomEvent): string {
  switch (event.type) {
    case "message":
      return `${event.from}: ${oneLine(event.text)}`;
    case "action":
      return `* ${event.from} ${oneLine(event.text)}`;
    case "join":
      return ` .... ${event.nick} has joined.`;
    case "leave":
      return ` .... ${event.nick} has left.`;
    case "nick":
      return ` .... ${event.from} is now known as ${event.to}.`;
  }
}

function oneLine(text: string): string {
  return text.includes("\n") ? text.replaceAll("\n", " ") : text;
}

/** Error codes a client may be sent (`unknown_command` only in plain text). */
export type ErrorCode =
  | "bad_json"
  | "bad_request"
  | "too_long"
  | "bad_nick"
  | "nick_taken"
  | "rate_limited"
  | "unknown_command";

/** What a client asked for, in either protocol. */
type Command =
  | { type: "message" | "action"; text: string }
  | { type: "nick"; nick: string }
  | { type: "who" }
  | { type: "help" }
  | { type: "invalid"; code: ErrorCode; message: string };

const HELP_TEXT =
  "commands: /nick NAME (or /nick to see yours), /me ACTION, /who, /help; //text sends /text";

function parseTextCommand(line: string): Command {
  if (!line.startsWith("/") || line.startsWith("//")) {
    return {
      type: "message",
      text: line.startsWith("//") ? line.slice(1) : line,
    };
  }
  const space = line.indexOf(" ");
  const name = space === -1 ? line.slice(1) : line.slice(1, space);
  const arg = space === -1 ? "" : line.slice(space + 1).trim();
  switch (name.toLowerCase()) {
    case "nick":
      return { type: "nick", nick: arg };
    case "me":
      return { type: "action", text: arg };
    case "who":
      return { type: "who" };
    case "help":
      return { type: "help" };
    default:
      return {
        type: "invalid",
        code: "unknown_command",
        message: `unknown command /${name} (try /help)`,
      };
  }
}

function parseJsonCommand(data: string): Command {
  let value: unknown;
  try {
    value = JSON.parse(data);
  } catch {
    return { type: "invalid", code: "bad_json", message: "frame is not JSON" };
  }
  const frame = value as Record<string, unknown> | null;
  if (typeof frame === "object" && frame !== null && !Array.isArray(frame)) {
    if (
      (frame.type === "message" || frame.type === "action") &&
      typeof frame.text === "string"
    ) {
      return { type: frame.type, text: frame.text };
    }
    if (frame.type === "nick" && typeof frame.nick === "string") {
      return { type: "nick", nick: frame.nick };
    }
  }
  return {
    type: "invalid",
    code: "bad_request",
    message:
      'expected {"type":"message"|"action","text":…} or {"type":"nick","nick":…}',
  };
}

// C0 and C1 controls except tab and newline.
// deno-lint-ignore no-control-regex -- matching control characters is the point
const CONTROL_CHARS = /[\x00-\x08\x0B-\x1F\x7F-\x9F]/g;
// Letters, digits, `_` and `-`, and combining marks after the first character
// (for names like राम); nothing else: no controls, no bidi overrides.
const NICK_PATTERN = /^[\p{L}\p{Nd}_-][\p{L}\p{M}\p{Nd}_-]*$/u;

/** A nickname's problem, or undefined if it is a good one. */
function nickProblem(
  nick: string,
  room: Room,
  self?: Client,
): "bad_nick" | "nick_taken" | undefined {
  if (
    nick.length === 0 || [...nick].length > MAX_NICK_CHARS ||
    !NICK_PATTERN.test(nick)
  ) return "bad_nick";
  const holder = room.nicks.get(nickKey(nick));
  if (holder && holder !== self) return "nick_taken";
  return undefined;
}

const NICK_ERRORS: Record<"bad_nick" | "nick_taken", string> = {
  bad_nick: `a nickname is 1–${MAX_NICK_CHARS} letters, digits, "_" or "-"`,
  nick_taken: "that nickname is taken in this room",
};

/** Tells one client about a refusal, in its protocol. */
function sendError(client: Client, code: ErrorCode, message: string): void {
  bump(counters.refused, code);
  sendToOne(
    client,
    client.json
      ? JSON.stringify({ type: "error", code, message })
      : ` .... error: ${message}`,
  );
}

/** A reply to one client that is not a room event (`/who`, `/help`). */
function sendNotice(client: Client, text: string): void {
  sendToOne(client, ` .... ${text}`);
}

// ---------------------------------------------------------------------------
// WebSocket handling
// ---------------------------------------------------------------------------

interface Arrival {
  room: string;
  ip: string;
  json: boolean;
  nick?: string;
  since?: number;
  epoch?: string;
  token?: string;
}

/** Wires a freshly upgraded socket; it joins the room once it is open. */
function acceptSocket(socket: WebSocket, arrival: Arrival): void {
  socket.binaryType = "arraybuffer";
  socket.onopen = () => join(socket, arrival);
  socket.onmessage = (event) => {
    const client = clients.get(socket);
    if (!client) return;
    try {
      receive(client, event.data);
    } catch (error) {
      log("error", "handler_failed", {
        nick: client.nick,
        error: String(error),
      });
      closeClient(client, CloseCode.InternalError, "internal error");
    }
  };
  let released = false;
  socket.onclose = (event) => {
    // Deno can fire close twice for a socket we closed whose peer then
    // dropped the connection; the connection is released once.
    if (released) return;
    released = true;
    releaseConnection(arrival.ip);
    const client = clients.get(socket);
    if (client) {
      // Deno reports a connection that ended without a close frame as code 0.
      leave(client, event.code || CloseCode.Abnormal);
    }
  };
  socket.onerror = () => {
    // Followed by a close event; nothing else to do. Handling it keeps the
    // error from being reported as uncaught.
  };
}

function join(socket: WebSocket, arrival: Arrival): void {
  if (shuttingDown) return;
  const wanted = arrival.nick?.normalize("NFC");
  const existing = rooms.get(arrival.room);
  if (existing && wanted !== undefined && arrival.token) {
    replaceStaleConnection(existing, wanted, arrival.token);
  }
  const room = roomOf(arrival.room);
  const problem = wanted === undefined ? undefined : nickProblem(wanted, room);
  const nick = wanted !== undefined && !problem ? wanted : randomNick(room);
  // What a resuming client missed is read before its own join is appended,
  // so that the join cannot push the oldest missed event out of history.
  const missed = arrival.since === undefined
    ? undefined
    : eventsAfter(room, arrival.since, arrival.epoch ?? "");
  const joined = appendEvent(room, { type: "join", nick });
  const client: Client = {
    socket,
    nick,
    room,
    json: arrival.json,
    ip: arrival.ip,
    joinedId: joined.id,
    tokens: settings.burst,
    refilledAt: Date.now(),
    drops: 0,
  };
  // The welcome's history holds this turn's batch (and the join); the
  // newcomer must not get them again, so the batch goes out before it joins.
  flushRoom(room);
  clients.set(socket, client);
  room.nicks.set(nickKey(nick), client);
  (client.json ? room.jsonSockets : room.textSockets).add(socket);
  log("info", "connect", { room: room.name, nick, peer: arrival.ip });
  if (client.json) {
    sendWelcome(client, joined, missed, arrival.since !== undefined);
  }
  if (problem) sendError(client, problem, NICK_ERRORS[problem]);
}

/**
 * A client that reconnects before the server has noticed that its old
 * connection died (a dropped network, not a close) would find its own nick
 * taken. The token from its last welcome proves the old connection was its
 * own; that one is closed, so the nick is free again.
 */
function replaceStaleConnection(room: Room, nick: string, token: string): void {
  const holder = room.nicks.get(nickKey(nick));
  if (holder?.json && sameSecret(token, reconnectToken(holder))) {
    closeClient(holder, CloseCode.Normal, "replaced by a new connection");
  }
}

/**
 * Keys the reconnect tokens: new for each process, so tokens die with it
 * (as the rooms they name do).
 */
const TOKEN_KEY = randomBytes(32);

/**
 * A JSON client's reconnect token: derived from its room and join rather than
 * stored, so it costs nothing per connection.
 */
function reconnectToken(client: Client): string {
  return createHmac("sha256", TOKEN_KEY)
    .update(`${client.room.name}/${client.room.epoch}/${client.joinedId}`)
    .digest("base64url");
}

function sameSecret(given: string, expected: string): boolean {
  const a = encoder.encode(given);
  const b = encoder.encode(expected);
  return a.length === b.length && timingSafeEqual(a, b);
}

/**
 * The first frame a JSON client gets. A resuming client's history is what it
 * missed (and its own join); anyone else gets the room's recent history.
 */
function sendWelcome(
  client: Client,
  joined: RoomEvent,
  missed: RoomEvent[] | undefined,
  resuming: boolean,
): void {
  const room = client.room;
  const welcome = {
    type: "welcome",
    you: client.nick,
    room: room.name,
    epoch: room.epoch,
    users: nicksIn(room),
    history: missed ? [...missed, joined] : room.history,
    lastId: joined.id,
    gap: resuming && missed === undefined,
    maxMessageChars: settings.maxMessageChars,
    token: reconnectToken(client),
  };
  sendToOne(client, JSON.stringify(welcome));
}

/**
 * Removes a client from the room state: the one place anyone leaves. Safe to
 * call twice; only the first call announces the leave.
 */
function leave(client: Client, code: number): void {
  if (!clients.delete(client.socket)) return;
  bump(counters.closes, code);
  const room = client.room;
  room.nicks.delete(nickKey(client.nick));
  room.textSockets.delete(client.socket);
  room.jsonSockets.delete(client.socket);
  log("info", "leave", {
    room: room.name,
    nick: client.nick,
    peer: client.ip,
    code,
  });
  if (room.nicks.size === 0) {
    rooms.delete(room.name);
    roomsWithPending.delete(room);
    return;
  }
  if (!shuttingDown) appendEvent(room, { type: "leave", nick: client.nick });
}

/** Closes a client with a code and reason and takes it out of the room now. */
function closeClient(client: Client, code: number, reason: string): void {
  try {
    client.socket.close(code, reason);
  } catch {
    // Already closing.
  }
  leave(client, code);
}

function receive(client: Client, data: string | ArrayBuffer): void {
  const bytes = typeof data === "string" ? frameBytes(data) : data.byteLength;
  if (bytes > settings.maxFrameBytes) {
    log("warn", "frame_too_big", { nick: client.nick, peer: client.ip, bytes });
    return closeClient(client, CloseCode.MessageTooBig, "frame too big");
  }
  if (typeof data !== "string") {
    log("warn", "binary_frame", { nick: client.nick, peer: client.ip });
    return closeClient(client, CloseCode.UnsupportedData, "text frames only");
  }
  counters.messagesReceived++;
  if (!takeToken(client)) {
    client.drops++;
    if (client.drops > settings.maxConsecutiveDrops) {
      log("warn", "flood_closed", { nick: client.nick, peer: client.ip });
      return closeClient(
        client,
        CloseCode.PolicyViolation,
        "too many messages",
      );
    }
    if (client.drops === 1) {
      log("warn", "rate_limited", { nick: client.nick, peer: client.ip });
    }
    return sendError(client, "rate_limited", "slow down: message dropped");
  }
  client.drops = 0;
  const command = client.json ? parseJsonCommand(data) : parseTextCommand(data);
  execute(client, command);
}

function execute(client: Client, command: Command): void {
  const room = client.room;
  switch (command.type) {
    case "message":
    case "action": {
      const text = command.text.replace(CONTROL_CHARS, "").trim();
      if (text.length === 0) return;
      if (
        text.length > settings.maxMessageChars &&
        [...text].length > settings.maxMessageChars
      ) {
        return sendError(
          client,
          "too_long",
          `message too long (max ${settings.maxMessageChars} characters)`,
        );
      }
      appendEvent(room, { type: command.type, from: client.nick, text });
      return;
    }
    case "nick": {
      if (command.nick === "" && !client.json) {
        return sendNotice(client, `you are ${client.nick}.`);
      }
      const nick = command.nick.normalize("NFC");
      if (nick === client.nick) return;
      const problem = nickProblem(nick, room, client);
      if (problem) return sendError(client, problem, NICK_ERRORS[problem]);
      const old = client.nick;
      room.nicks.delete(nickKey(old));
      room.nicks.set(nickKey(nick), client);
      client.nick = nick;
      appendEvent(room, { type: "nick", from: old, to: nick });
      return;
    }
    case "who": {
      return sendNotice(client, `in ${room.name}: ${nicksIn(room).join(", ")}`);
    }
    case "help":
      return sendNotice(client, HELP_TEXT);
    case "invalid":
      return sendError(client, command.code, command.message);
  }
}

/** Token bucket: `rate` tokens a second, at most `burst` saved up. */
function takeToken(client: Client): boolean {
  const now = Date.now();
  client.tokens = Math.min(
    settings.burst,
    client.tokens + (now - client.refilledAt) * settings.rate / 1000,
  );
  client.refilledAt = now;
  if (client.tokens < 1) return false;
  client.tokens--;
  return true;
}

const encoder = new TextEncoder();

/**
 * A text frame's size in UTF-8 bytes, exact whenever it could be over the
 * limit. Each UTF-16 unit is at most 3 bytes, so a short string cannot be and
 * is not encoded (its UTF-16 length is returned instead).
 */
function frameBytes(text: string): number {
  if (text.length * 3 <= settings.maxFrameBytes) return text.length;
  return encoder.encode(text).byteLength;
}

/**
 * Drops clients that stopped reading. `bufferedAmount` also counts what this
 * turn sent and not yet wrote, so it is judged on a timer, not after a send.
 */
function sweepSlowConsumers(): void {
  for (const client of clients.values()) {
    const queued = client.socket.bufferedAmount;
    if (queued > settings.maxBufferedBytes) {
      counters.slowConsumerDrops++;
      log("warn", "slow_consumer", {
        nick: client.nick,
        peer: client.ip,
        queuedBytes: queued,
      });
      closeClient(client, CloseCode.TryAgainLater, "not reading fast enough");
    }
  }
}

function releaseConnection(ip: string): void {
  openSockets--;
  const count = (connectionsByIp.get(ip) ?? 1) - 1;
  if (count <= 0) connectionsByIp.delete(ip);
  else connectionsByIp.set(ip, count);
}

// ---------------------------------------------------------------------------
// HTTP routes
// ---------------------------------------------------------------------------

const ROOM_PATTERN = new RegExp(`^[a-z0-9_-]{1,${MAX_ROOM_CHARS}}$`);

/** The room a chat URL path names (`/` is `lobby`), or undefined if invalid. */
export function roomFromPath(pathname: string): string | undefined {
  if (pathname === "/") return "lobby";
  const name = pathname.slice(1).toLowerCase();
  return ROOM_PATTERN.test(name) ? name : undefined;
}

/** A refused upgrade, counted by reason. */
function refuse(
  status: number,
  reason: string,
  text: string,
  headers: Record<string, string> = {},
): Response {
  bump(counters.upgradesRefused, reason);
  return new Response(text + "\n", {
    status,
    headers: { "content-type": "text/plain; charset=utf-8", ...headers },
  });
}

/**
 * Is this request's origin allowed to open a chat connection? Only browsers
 * send `Origin`, and it is what stops another site's page from using a
 * visitor's browser to join the chat; terminal tools send none.
 */
function originAllowed(origin: string | null, host: string | null): boolean {
  if (origin === null) return true;
  const allowed = settings.allowOrigin;
  if (allowed.length > 0) {
    return allowed.includes("*") || allowed.includes(origin);
  }
  try {
    return new URL(origin).hostname === new URL(`http://${host}`).hostname;
  } catch {
    return false;
  }
}

/** The chat port: guard clauses, each refusal with its own status, then upgrade. */
function handleChatRequest(
  req: Request,
  info: Deno.ServeHandlerInfo,
): Response {
  if (req.headers.get("upgrade")?.toLowerCase() !== "websocket") {
    return refuse(
      Status.UpgradeRequired,
      "not_websocket",
      "This port speaks WebSocket. Open the chat page on the page port.",
      { upgrade: "websocket", connection: "Upgrade" },
    );
  }
  const url = new URL(req.url);
  const room = roomFromPath(url.pathname);
  if (!room) {
    return refuse(
      Status.BadRequest,
      "bad_room",
      "A room name is 1-32 of a-z, 0-9, - and _.",
    );
  }
  if (!originAllowed(req.headers.get("origin"), req.headers.get("host"))) {
    log("warn", "origin_refused", { origin: req.headers.get("origin") ?? "" });
    return refuse(Status.Forbidden, "origin", "This origin may not connect.");
  }
  if (shuttingDown) {
    return refuse(Status.ServiceUnavailable, "shutting_down", "Shutting down.");
  }
  const ip = (info.remoteAddr as Deno.NetAddr).hostname;
  const fromIp = connectionsByIp.get(ip) ?? 0;
  if (openSockets >= settings.maxConnections) {
    log("warn", "too_many_connections", { peer: ip });
    return refuse(Status.ServiceUnavailable, "max_connections", "Server full.");
  }
  if (fromIp >= settings.maxConnectionsPerIp) {
    log("warn", "too_many_connections_from_ip", { peer: ip });
    return refuse(
      Status.ServiceUnavailable,
      "max_connections_per_ip",
      "Too many connections from your address.",
    );
  }
  if (!rooms.has(room) && rooms.size >= settings.maxRooms) {
    log("warn", "too_many_rooms", { peer: ip, room });
    return refuse(
      Status.ServiceUnavailable,
      "max_rooms",
      "Too many rooms: join an existing one.",
    );
  }
  const json = req.headers.get("sec-websocket-protocol")?.split(",")
    .some((name) => name.trim() === JSON_PROTOCOL) ?? false;
  let upgraded: { socket: WebSocket; response: Response };
  try {
    upgraded = Deno.upgradeWebSocket(req, {
      protocol: json ? JSON_PROTOCOL : undefined,
      idleTimeout: settings.idleTimeout,
    });
  } catch (error) {
    return refuse(Status.BadRequest, "bad_handshake", String(error));
  }
  connectionsByIp.set(ip, fromIp + 1);
  openSockets++;
  const since = url.searchParams.get("since");
  acceptSocket(upgraded.socket, {
    room,
    ip,
    json,
    nick: url.searchParams.get("nick") ?? undefined,
    since: since !== null && /^\d+$/.test(since) ? Number(since) : undefined,
    epoch: url.searchParams.get("epoch") ?? undefined,
    token: url.searchParams.get("token") ?? undefined,
  });
  return upgraded.response;
}

/** The page as served: the chat port filled in, and its headers. */
export interface Page {
  html: string;
  headers: Record<string, string>;
}

/**
 * Renders the page once at start-up. The policy allows only the page's own
 * inline script and style (by hash), so injected markup could not run.
 */
export async function renderPage(chatPort: number): Promise<Page> {
  const html = clientHtml.replace(
    '<meta name="chat-port" content="">',
    `<meta name="chat-port" content="${chatPort}">`,
  );
  const hashOf = async (tag: "script" | "style") => {
    const body = html.match(new RegExp(`<${tag}>([\\s\\S]*?)</${tag}>`))?.[1] ??
      "";
    const digest = await crypto.subtle.digest(
      "SHA-256",
      encoder.encode(body),
    );
    return `'sha256-${btoa(String.fromCharCode(...new Uint8Array(digest)))}'`;
  };
  const csp = [
    "default-src 'none'",
    `script-src ${await hashOf("script")}`,
    `style-src ${await hashOf("style")}`,
    "connect-src ws: wss:",
    "frame-ancestors 'none'",
    "base-uri 'none'",
    "form-action 'none'",
  ].join("; ");
  return {
    html,
    headers: {
      "content-type": "text/html; charset=utf-8",
      "content-security-policy": csp,
      "x-content-type-options": "nosniff",
      "referrer-policy": "no-referrer",
    },
  };
}

/** The page server's handler: the page, `/healthz` and `/metrics`. */
export function pageHandler(page: Page): (req: Request) => Response {
  const startedAt = Date.now();
  const routes: Record<string, () => Response> = {
    "/": () => new Response(page.html, { headers: page.headers }),
    "/healthz": () =>
      Response.json({
        status: "ok",
        connections: clients.size,
        rooms: rooms.size,
        uptimeSeconds: Math.floor((Date.now() - startedAt) / 1000),
      }),
  };
  if (settings.metrics) {
    routes["/metrics"] = () =>
      new Response(renderMetrics(), {
        headers: { "content-type": "text/plain; version=0.0.4; charset=utf-8" },
      });
  }
  return function handlePageRequest(req: Request): Response {
    const route = routes[new URL(req.url).pathname];
    if (!route) {
      return new Response("Not found\n", { status: Status.NotFound });
    }
    if (req.method !== "GET" && req.method !== "HEAD") {
      return new Response("Method not allowed\n", {
        status: Status.MethodNotAllowed,
        headers: { allow: "GET, HEAD" },
      });
    }
    return route();
  };
}

/** Prometheus text format: one line per sample, labelled ones by key. */
function renderMetrics(): string {
  const lines: string[] = [];
  const metric = (
    name: string,
    type: "gauge" | "counter",
    help: string,
    value: number | Map<string | number, number>,
    label = "",
  ) => {
    lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);
    if (typeof value === "number") lines.push(`${name} ${value}`);
    else {for (const [key, n] of value) {
        lines.push(`${name}{${label}="${key}"} ${n}`);
      }}
  };
  metric("chat_connections", "gauge", "Clients in a room.", clients.size);
  metric("chat_rooms", "gauge", "Rooms with members.", rooms.size);
  metric(
    "chat_sockets_open",
    "gauge",
    "Upgraded sockets not yet closed, including ones being closed.",
    openSockets,
  );
  metric(
    "chat_messages_received_total",
    "counter",
    "Text frames received.",
    counters.messagesReceived,
  );
  metric(
    "chat_frames_sent_total",
    "counter",
    "Frames sent to clients.",
    counters.framesSent,
  );
  metric(
    "chat_messages_refused_total",
    "counter",
    "Messages refused, by reason.",
    counters.refused,
    "reason",
  );
  metric(
    "chat_closes_total",
    "counter",
    "Connections closed, by close code.",
    counters.closes,
    "code",
  );
  metric(
    "chat_slow_consumer_drops_total",
    "counter",
    "Clients dropped for not reading.",
    counters.slowConsumerDrops,
  );
  metric(
    "chat_upgrades_refused_total",
    "counter",
    "WebSocket upgrades refused, by reason.",
    counters.upgradesRefused,
    "reason",
  );
  return lines.join("\n") + "\n";
}

// ---------------------------------------------------------------------------
// Start-up and shutdown
// ---------------------------------------------------------------------------

type Server = Deno.HttpServer<Deno.NetAddr>;

/** Starts the chat server, then the page (which names the chat's port). */
async function listenBoth(
  listen: Deno.ServeTcpOptions & Partial<Deno.TlsCertifiedKeyPem>,
): Promise<[Server, Server]> {
  const chatServer = Deno.serve(
    { ...listen, port: settings.wsPort },
    handleChatRequest,
  );
  try {
    const page = await renderPage(chatServer.addr.port);
    const pageServer = Deno.serve(
      { ...listen, port: settings.port },
      pageHandler(page),
    );
    return [chatServer, pageServer];
  } catch (error) {
    await chatServer.shutdown(); // leave nothing listening
    throw error;
  }
}

/** A running chat: where it listens and how to stop it. */
export interface ChatServer {
  /** Bound port of the page server. */
  port: number;
  /** Bound port of the chat server. */
  wsPort: number;
  /** The page's URL (`localhost` when listening on every address). */
  pageUrl: string;
  /** The chat's URL, for a room append its name. */
  chatUrl: string;
  /** Closes every client with 1001, stops both servers and resolves when done. */
  shutdown(): Promise<void>;
}

/**
 * Starts the page and chat servers.
 *
 * @example
 * ```ts
 * const chat = await startChat({ port: 0, wsPort: 0, quiet: true });
 * const socket = new WebSocket(`ws://127.0.0.1:${chat.wsPort}/`);
 * // ...
 * await chat.shutdown();
 * ```
 */
export async function startChat(
  options: ChatOptions = {},
): Promise<ChatServer> {
  if (running) {
    throw new Error("a chat server is already running in this process");
  }
  if (Boolean(options.cert) !== Boolean(options.key)) {
    throw new Error("cert and key go together");
  }
  running = true;
  settings = { ...DEFAULT_OPTIONS, ...options } satisfies Settings;
  shuttingDown = false;
  counters.messagesReceived = 0;
  counters.framesSent = 0;
  counters.slowConsumerDrops = 0;
  counters.refused.clear();
  counters.closes.clear();
  counters.upgradesRefused.clear();
  const listen = {
    onListen: () => {}, // the start log line says where instead
    hostname: settings.hostname,
    ...(settings.cert && settings.key
      ? { cert: settings.cert, key: settings.key }
      : {}),
  };
  const [chatServer, pageServer] = await listenBoth(listen).catch((error) => {
    running = false; // a port in use: allow another try
    throw error;
  });
  const port = pageServer.addr.port;
  const wsPort = chatServer.addr.port;
  const sweep = setInterval(sweepSlowConsumers, SLOW_CONSUMER_SWEEP_MS);
  const secure = Boolean(settings.cert);
  const host = settings.hostname === "0.0.0.0"
    ? "localhost"
    : settings.hostname;
  const pageUrl = `${secure ? "https" : "http"}://${host}:${port}/`;
  const chatUrl = `${secure ? "wss" : "ws"}://${host}:${wsPort}/`;
  log("info", "start", {
    page: pageUrl,
    chat: chatUrl,
    maxConnections: settings.maxConnections,
    maxConnectionsPerIp: settings.maxConnectionsPerIp,
    maxRooms: settings.maxRooms,
    maxFrameBytes: settings.maxFrameBytes,
    maxMessageChars: settings.maxMessageChars,
    rate: settings.rate,
    burst: settings.burst,
    maxBufferedBytes: settings.maxBufferedBytes,
    maxConsecutiveDrops: settings.maxConsecutiveDrops,
    idleTimeout: settings.idleTimeout,
  });

  let stopped: Promise<void> | undefined;
  async function shutdown(): Promise<void> {
    shuttingDown = true;
    clearInterval(sweep);
    if (flushScheduled) clearImmediate(flushScheduled);
    flushBatches();
    const sockets = [...clients.keys()];
    log("info", "shutdown", { connections: sockets.length });
    const closed = sockets.map((socket) =>
      new Promise<void>((resolve) => {
        if (socket.readyState === WebSocket.CLOSED) return resolve();
        socket.addEventListener("close", () => resolve());
        try {
          socket.close(CloseCode.GoingAway, "server shutting down");
        } catch {
          resolve();
        }
      })
    );
    // Deno's server.shutdown() has not always closed upgraded sockets
    // (denoland/deno#22387), so they are closed above and awaited here.
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([
      Promise.all(closed),
      new Promise((resolve) => timer = setTimeout(resolve, SHUTDOWN_GRACE_MS)),
    ]);
    clearTimeout(timer);
    for (const client of [...clients.values()]) {
      leave(client, CloseCode.GoingAway);
    }
    await Promise.all([chatServer.shutdown(), pageServer.shutdown()]);
    rooms.clear();
    roomsWithPending.clear();
    connectionsByIp.clear();
    openSockets = 0;
    running = false;
  }
  return {
    port,
    wsPort,
    pageUrl,
    chatUrl,
    shutdown: () => stopped ??= shutdown(),
  };
}

// ---------------------------------------------------------------------------
// Command line
// ---------------------------------------------------------------------------

const USAGE = `deno-chat: a WebSocket chat server.

Usage: deno run -A main.ts [options]

Options (environment variable fallbacks in brackets):
  --port N                    page server port [PORT] (default ${DEFAULT_PORT})
  --ws-port N                 chat server port [WS_PORT] (default ${DEFAULT_WS_PORT})
  --hostname ADDR             address to listen on [HOST] (default 0.0.0.0)
  --max-message-chars N       longest message, characters (default ${MAX_MESSAGE_CHARS})
  --history-size N            events kept per room (default ${HISTORY_SIZE})
  --max-frame-bytes N         largest incoming frame, bytes (default ${MAX_FRAME_BYTES})
  --rate N                    messages per second per connection (default ${RATE_PER_SECOND})
  --burst N                   messages allowed at once (default ${RATE_BURST})
  --max-buffered-bytes N      queued bytes before a slow client is dropped (default ${MAX_BUFFERED_BYTES})
  --max-consecutive-drops N   rate-limited messages in a row before closing (default ${MAX_CONSECUTIVE_DROPS})
  --idle-timeout N            seconds without a pong before a peer is dropped (default ${IDLE_TIMEOUT_SECONDS})
  --max-connections N         open chat connections in all (default ${MAX_CONNECTIONS})
  --max-connections-per-ip N  open chat connections per address (default ${MAX_CONNECTIONS_PER_IP})
  --max-rooms N               rooms at once (default ${MAX_ROOMS})
  --allow-origin ORIGIN       browser origin allowed to connect; repeatable, or *
                              (default: no Origin, or the page's own host)
  --cert FILE --key FILE      serve https and wss with this certificate
  --metrics true|false        serve GET /metrics on the page port (default true)
  --log-format text|json      log line format on stderr (default text)
  --quiet                     log warnings and errors only
  -h, --help                  show this help`;

class UsageError extends Error {}

function parseInteger(
  name: string,
  value: string,
  min: number,
  max: number,
): number {
  if (!/^\d+$/.test(value) || Number(value) < min || Number(value) > max) {
    throw new UsageError(
      `--${name} must be a whole number from ${min} to ${max}, got "${value}"`,
    );
  }
  return Number(value);
}

/** Turns command-line arguments (and env fallbacks) into options. */
export function parseCommandLine(
  args: string[],
  env: (name: string) => string | undefined = (name) => Deno.env.get(name),
): ChatOptions | "help" {
  const { values } = parseArgs({
    args,
    strict: true,
    allowPositionals: false,
    options: {
      port: { type: "string" },
      "ws-port": { type: "string" },
      hostname: { type: "string" },
      "max-message-chars": { type: "string" },
      "history-size": { type: "string" },
      "max-frame-bytes": { type: "string" },
      rate: { type: "string" },
      burst: { type: "string" },
      "max-buffered-bytes": { type: "string" },
      "max-consecutive-drops": { type: "string" },
      "idle-timeout": { type: "string" },
      "max-connections": { type: "string" },
      "max-connections-per-ip": { type: "string" },
      "max-rooms": { type: "string" },
      "allow-origin": { type: "string", multiple: true },
      cert: { type: "string" },
      key: { type: "string" },
      metrics: { type: "string" },
      "log-format": { type: "string" },
      quiet: { type: "boolean" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.help) return "help";
  const options: ChatOptions = {};
  const port = values.port ?? env("PORT");
  if (port !== undefined) options.port = parseInteger("port", port, 0, 65535);
  const wsPort = values["ws-port"] ?? env("WS_PORT");
  if (wsPort !== undefined) {
    options.wsPort = parseInteger("ws-port", wsPort, 0, 65535);
  }
  const hostname = values.hostname ?? env("HOST");
  if (hostname !== undefined) options.hostname = hostname;
  const limits = [
    ["max-message-chars", "maxMessageChars", 1],
    ["history-size", "historySize", 0],
    ["max-frame-bytes", "maxFrameBytes", 1],
    ["rate", "rate", 1],
    ["burst", "burst", 1],
    ["max-buffered-bytes", "maxBufferedBytes", 1],
    ["max-consecutive-drops", "maxConsecutiveDrops", 0],
    ["idle-timeout", "idleTimeout", 0],
    ["max-connections", "maxConnections", 1],
    ["max-connections-per-ip", "maxConnectionsPerIp", 1],
    ["max-rooms", "maxRooms", 1],
  ] as const;
  for (const [flag, key, min] of limits) {
    const value = values[flag];
    if (value !== undefined) {
      options[key] = parseInteger(flag, value, min, Number.MAX_SAFE_INTEGER);
    }
  }
  if (values["allow-origin"]) options.allowOrigin = values["allow-origin"];
  if (Boolean(values.cert) !== Boolean(values.key)) {
    throw new UsageError("--cert and --key go together");
  }
  if (values.cert && values.key) {
    options.cert = Deno.readTextFileSync(values.cert);
    options.key = Deno.readTextFileSync(values.key);
  }
  if (values.metrics !== undefined) {
    if (values.metrics !== "true" && values.metrics !== "false") {
      throw new UsageError(
        `--metrics must be true or false, got "${values.metrics}"`,
      );
    }
    options.metrics = values.metrics === "true";
  }
  const format = values["log-format"];
  if (format !== undefined) {
    if (format !== "text" && format !== "json") {
      throw new UsageError(
        `--log-format must be text or json, got "${format}"`,
      );
    }
    options.logFormat = format;
  }
  if (values.quiet) options.quiet = true;
  return options;
}

/** The CLI: parse, start, print where to go, stop cleanly on a signal. */
export async function main(args: string[]): Promise<void> {
  let options: ChatOptions | "help";
  try {
    options = parseCommandLine(args);
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    console.error(`deno-chat: ${message}\n\n${USAGE}`);
    Deno.exit(2);
  }
  if (options === "help") {
    console.log(USAGE);
    return;
  }
  const chat = await startChat(options);
  console.log(
    `deno-chat: open ${chat.pageUrl} (chat on port ${chat.wsPort})`,
  );
  const stop = async () => {
    // We promise an exit within 2 s, even if a peer never completes its
    // close handshake or Deno's server shutdown waits on it.
    setTimeout(() => Deno.exit(0), EXIT_DEADLINE_MS);
    await chat.shutdown();
    Deno.exit(0);
  };
  Deno.addSignalListener("SIGINT", stop);
  Deno.addSignalListener("SIGTERM", stop);
}

if (import.meta.main) await main(Deno.args);
