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
 * This module is the service and the only one with process state. The wire
 * contract is protocol.ts's, the store contract rooms.ts's (with the
 * default `MemoryStore`); side modules (auth.ts, moderation.ts,
 * http_api.ts, the stores) never import this one.
 *
 * How a message travels: a socket's frame is checked (size, rate) in
 * `receive`, parsed into a `Command` (protocol.ts), posted to the room
 * through the `RoomStore` (which gives it an id and keeps it in history),
 * and comes back through the store's `subscribe` to `deliver`, which renders
 * it once per protocol for every socket of the room and, for JSON, batches
 * it per turn. The sections go in the order a reader needs them: options,
 * state, logging and metrics, protocol use, sockets, identity and
 * moderation, delivery, the HTTP API, routes, start-up and shutdown, CLI.
 *
 * @module
 */

import {
  listenFailure,
  redisFailure,
  reworded,
  startupLine,
} from "./server/cli_errors.ts";
import { createHash } from "node:crypto";
import {
  type ChatOptions,
  DATA_WITH_REDIS,
  DEFAULT_OPTIONS,
  flagOf,
  limitsOf,
  parseCommandLine,
  type Settings,
  USAGE,
  UsageError,
} from "./server/options.ts";
import {
  cleanText,
  CloseCode,
  type Command,
  type ErrorCode,
  HELP_TEXT,
  type HistoryAnswer,
  JSON_PROTOCOL,
  type LiveEvent,
  MODERATION_HELP,
  type ModerationCommand,
  type NewEvent,
  NICK_ERRORS,
  OP_PROTOCOL_PREFIX,
  parseCommand,
  parseJsonCommand,
  type RefusalReason,
  REFUSALS,
  renderText,
  type RoomEvent,
  roomFromPath,
  roomName,
  SESSION_PROTOCOL_PREFIX,
  SESSION_SECRET,
  SHUTDOWN_REASON,
  Status,
  systemText,
  TYPING_INTERVAL_MS,
  type TypingEvent,
  validNick,
  type Welcome,
} from "./wire/protocol.ts";
import {
  type Joined,
  type LogFields,
  MemoryStore,
  nickKey,
  NoSuchRoom,
  type RoomStore,
  sameSecret,
  type StoreFactory,
  type StoreOptions,
  StoreUnavailable,
} from "./stores/rooms.ts";
import type { RedisStoreOptions } from "./stores/redis_store.ts";
import type {
  DataFileError,
  SqliteStoreOptions,
} from "./stores/sqlite_store.ts";
import {
  offeredProtocols,
  parseUrl,
  readHandshake,
} from "./server/handshake.ts";
import {
  bump,
  closeLabel,
  type Counters,
  newCounters,
  renderMetrics,
} from "./server/metrics.ts";
import { pageHandler, renderPage } from "./server/page.ts";
import {
  type Identity,
  makeVerifier,
  ownerOf,
  ownerOfUser,
  tokenOf,
  type Verifier,
} from "./server/auth.ts";
import {
  type Actor,
  fitCloseReason,
  moderate,
  moderatedText,
  type ModerationOutcome,
} from "./server/moderation.ts";
import { type ApiBackend, ApiError, apiHandler } from "./server/http_api.ts";

// ---------------------------------------------------------------------------
// Options (server/options.ts) and limits
// ---------------------------------------------------------------------------

// The page's handler is the library's API too, as are the options.
export { type Page, pageHandler, renderPage } from "./server/page.ts";
// The options are the library's API too: importable from here as before.
export {
  type ChatOptions,
  DEFAULT_OPTIONS,
  defaultNote,
  flagLabel,
  flagOf,
  OPTIONS,
  type OptionSpec,
  parseCommandLine,
  shownDefault,
} from "./server/options.ts";

/** This build's version, as the API's `info` and its OpenAPI document say. */
export const VERSION = "0.5.0";
/** How often queued outgoing bytes are checked, in milliseconds. */
export const SLOW_CONSUMER_SWEEP_MS = 250;
/** How often full connect-rate buckets are forgotten, in milliseconds. */
export const FORGET_BUCKETS_MS = 10_000;
/** How long shutdown waits for clients to finish the close handshake. */
export const SHUTDOWN_GRACE_MS = 1000;
/**
 * At shutdown, a client that sent a frame in the last
 * {@linkcode RECENT_SENDER_MS} is closed right after its next one, or when
 * this has passed: see `stop`.
 */
export const SHUTDOWN_SENDER_WAIT_MS = 400;
/** A client that sent a frame this recently counts as sending (see `stop`). */
export const RECENT_SENDER_MS = 5000;
/** After a signal, the CLI exits by this time whatever is still open. */
export const EXIT_DEADLINE_MS = 1800;

// ---------------------------------------------------------------------------
// Process state: one object, made by startChat
// ---------------------------------------------------------------------------

/**
 * Where a connection is in its life. `opening`: upgraded (or moving to
 * another room with `/join`), holding a place in its room; `joining`: the
 * store is taking it in; `joined`: a member, in its room's delivery;
 * `gone`: out (see {@linkcode removeClient}, the one way out).
 */
type Phase = "opening" | "joining" | "joined" | "gone";

/** One connection. Kept small: there may be many thousands. */
interface Client {
  socket: WebSocket;
  phase: Phase;
  /** The store's name for this connection (its nick's holder). */
  owner: string;
  /** Empty until the join completes. */
  nick: string;
  room: LocalRoom;
  json: boolean;
  ip: string;
  /** Token bucket: tokens left and when it was last refilled. */
  tokens: number;
  refilledAt: number;
  /** Rate-limited messages in a row. */
  drops: number;
  /** When its last frame came (shutdown closes a sender between frames). */
  lastFrameAt: number;
  /** It came with a session: its owner is the person, not the socket. */
  session: boolean;
  /** Id of the event that gave its person its nick (see `visibleTo`). */
  claimedId: number;
  /** Its person's nicks before this one in the room (see `visibleTo`). */
  earlierClaims: Claim[];
  /** When its last typing notice went to the room. */
  typingAt: number;
  /** The oldest event id it has been shown (where `/history` reads back from). */
  oldestSeen: number;
  /** A join, `/nick`, `/who` or `/msg` is with the store: frames queue. */
  waitingOnStore: boolean;
  /** Frames that came while it waited on the store, handled in order after. */
  backlog: string[];
  /** Signed in by a login token: its nick is its token's name. */
  verified: boolean;
  /** A moderator (token role `op`, or `--op-key`). */
  op: boolean;
  /** What a ban or mute of it holds against (rooms.ts `JoinRequest.keys`). */
  keys: string[];
  /** While it joins: its welcome and what came meanwhile (see `admit`). */
  welcome?: PendingWelcome;
  /** Gives up on a socket that never opens (see `openTimeout`). */
  openTimer?: ReturnType<typeof setTimeout>;
}

/** A nick a person held: from the event that gave it to the one that ended it. */
interface Claim {
  nick: string;
  from: number;
  until: number;
}

/** A joining client's welcome, and the room's events that came meanwhile. */
interface PendingWelcome {
  /** Events delivered since its join began, in id order. */
  events: RoomEvent[];
  /** The store's answer, once it has come. */
  joined?: Joined;
  /** The nick it asked for was not a valid one. */
  badNick: boolean;
}

/**
 * This process's sockets in one room, and the delivery of the room's
 * events to them (the store's `subscribe` calls {@linkcode deliver}).
 */
interface LocalRoom {
  name: string;
  /** Members by protocol, so each delivery loop is a plain loop over sockets. */
  textSockets: Set<WebSocket>;
  jsonSockets: Set<WebSocket>;
  /** JSON-encoded events of this turn, not yet sent (see flushBatches). */
  pendingJson: string[];
  /**
   * JSON clients admitted while the batch was pending, with how many of its
   * events they have already (in their welcome, or right after it): they
   * get the rest, so a room filling up still gets one frame per turn.
   */
  admittedMidTurn: Map<WebSocket, number>;
  /** The last event id delivered here. */
  deliveredId: number;
  /** Clients joining: they get the room's events after their welcome. */
  joining: Set<Client>;
  /** Connections here, joined or on the way; at 0 the local room ends. */
  connections: number;
  unsubscribe: () => void;
}

/** Everything a running chat keeps: made by startChat, dropped at shutdown. */
interface ChatState {
  settings: Settings;
  store: RoomStore;
  /** Every connection from upgrade until it is gone, keyed by socket. */
  clients: Map<WebSocket, Client>;
  /** This process's rooms, by name. */
  rooms: Map<string, LocalRoom>;
  /** Rooms whose JSON batch waits for the end of this turn. */
  roomsWithPending: Set<LocalRoom>;
  flushScheduled?: ReturnType<typeof setImmediate>;
  /** Upgraded sockets not yet closed: joined, about to join, or being closed. */
  openSockets: Set<WebSocket>;
  /** Open connections per peer address, for the per-IP limit. */
  connectionsByIp: Map<string, number>;
  /** New-connection token buckets per peer address (see connectRate). */
  connectBuckets: Map<string, { tokens: number; at: number }>;
  /** Session leaves waiting out `sessionGrace`. */
  graceTimers: Set<ReturnType<typeof setTimeout>>;
  /**
   * Sockets given up on (never opened in `openTimeout`) that Deno still
   * holds: their slots are free, their file descriptors may not be.
   */
  stuckSockets: Set<WebSocket>;
  /** Numbers the connections (the store's owner names). */
  nextOwner: number;
  /** Checks login tokens; undefined when no auth key is set. */
  verifier?: Verifier;
  phase: "running" | "stopping" | "stopped";
  counters: Counters;
}

/** The running chat: one per process, as the design has its state module-level. */
let state: ChatState | undefined;

/** The running chat's state; only called while one runs. */
function chat(): ChatState {
  return state!;
}

function newState(settings: Settings, store: RoomStore): ChatState {
  return {
    settings,
    store,
    clients: new Map(),
    rooms: new Map(),
    roomsWithPending: new Set(),
    openSockets: new Set(),
    connectionsByIp: new Map(),
    connectBuckets: new Map(),
    graceTimers: new Set(),
    stuckSockets: new Set(),
    nextOwner: 0,
    phase: "running",
    counters: newCounters(),
  };
}

// ---------------------------------------------------------------------------
// Logging and metrics
// ---------------------------------------------------------------------------

type LogLevel = "info" | "warn" | "error";

/** One line per event worth knowing. Never message content. */
function log(level: LogLevel, event: string, fields: LogFields = {}): void {
  const settings = state?.settings ?? DEFAULT_OPTIONS;
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

/** `/metrics`: this process's gauges, read now, and its counters. */
function metricsText(): string {
  const current = chat();
  return renderMetrics({
    connections: joinedCount(current),
    rooms: current.store.roomCount(),
    storeUp: current.store.available?.() ?? true,
    socketsOpen: current.openSockets.size,
    socketsStuck: current.stuckSockets.size,
    counters: current.counters,
  });
}

// ---------------------------------------------------------------------------
// Protocol: what clients send, and the two renderings of what they get
// ---------------------------------------------------------------------------

/** Tells one client about a refusal, in its protocol. */
function sendError(
  client: Client,
  code: ErrorCode,
  message: string,
  retryAfter?: number,
): void {
  bump(chat().counters.refused, code);
  sendToOne(
    client,
    client.json
      ? JSON.stringify(
        retryAfter === undefined
          ? { type: "error", code, message }
          : { type: "error", code, message, retryAfter },
      )
      : systemText(`error: ${message}`),
  );
}

/** A reply to one client that is not a room event (`/who`, `/help`). */
function sendNotice(client: Client, text: string): void {
  sendToOne(client, systemText(text));
}

// ---------------------------------------------------------------------------
// Sockets: one life per connection
// ---------------------------------------------------------------------------

/** What the upgrade request asked for. */
interface ConnectRequest {
  room: string;
  ip: string;
  json: boolean;
  nick?: string;
  since?: number;
  epoch?: string;
  token?: string;
  /** Who the client is, from its session secret (not the secret). */
  session?: string;
  /** Who a valid login token says it is. */
  identity?: Identity;
  /** It showed the `--op-key`. */
  op?: boolean;
}

/**
 * Wires a freshly upgraded socket: its room is held in the store and its
 * address slot taken. This is the one place a client is added; it joins once
 * the socket opens ({@linkcode joinRoom}) and goes in
 * {@linkcode removeClient}, the one place a client is removed.
 */
function acceptSocket(socket: WebSocket, request: ConnectRequest): void {
  socket.binaryType = "arraybuffer";
  const current = chat();
  const client: Client = {
    socket,
    phase: "opening",
    owner: request.identity
      ? ownerOf(request.identity)
      : request.session ?? String(++current.nextOwner),
    nick: "",
    room: localRoom(request.room),
    json: request.json,
    ip: request.ip,
    tokens: current.settings.burst,
    refilledAt: Date.now(),
    drops: 0,
    lastFrameAt: 0,
    // A verified person's tabs are one member, as a session's are.
    session: request.session !== undefined || request.identity !== undefined,
    claimedId: 0,
    earlierClaims: [],
    typingAt: 0,
    oldestSeen: 0,
    waitingOnStore: true,
    backlog: [],
    verified: request.identity !== undefined,
    op: request.identity?.op === true || request.op === true,
    keys: request.identity
      ? [ownerOf(request.identity)]
      : [...(request.session ? [request.session] : []), `ip:${request.ip}`],
  };
  current.clients.set(socket, client);
  current.openSockets.add(socket);
  // Deno fires no event at all for a socket whose peer reset the connection
  // during the handshake: without this its slot would be held for good.
  client.openTimer = setTimeout(() => {
    log("warn", "open_timeout", { peer: request.ip, room: request.room });
    current.stuckSockets.add(socket); // Deno may keep it, until the process ends
    freeSlot(socket, request.ip);
    removeClient(client, CloseCode.Abnormal);
    closeSocket(socket, CloseCode.PolicyViolation, "handshake not completed");
  }, current.settings.openTimeout * 1000);
  socket.onopen = () => {
    // Given up on already (its slot and hold are gone): it may not join.
    if (client.phase === "gone") {
      return closeSocket(socket, CloseCode.PolicyViolation, "too late");
    }
    clearTimeout(client.openTimer);
    joinRoom(client, request).catch((error) => failed(client, error));
  };
  socket.onmessage = (event) => receive(client, event.data);
  socket.onclose = (event) => {
    if (current.stuckSockets.delete(socket)) return;
    freeSlot(socket, request.ip);
    // Deno reports a connection that ended without a close frame as code 0.
    removeClient(client, event.code || CloseCode.Abnormal);
  };
  socket.onerror = () => {
    // Followed by a close event; nothing else to do. Handling it keeps the
    // error from being reported as uncaught.
  };
}

/**
 * Takes an `opening` client into its room through the store. While the
 * store works the client is `joining`, and whatever happens to it meanwhile
 * (a close, shutdown) is settled here once the store has answered.
 */
async function joinRoom(
  client: Client,
  request: ConnectRequest,
): Promise<void> {
  const { store } = chat();
  if (chat().phase !== "running") {
    // Opened while shutting down: told so, like everyone else.
    return disconnect(client, CloseCode.GoingAway, SHUTDOWN_REASON);
  }
  const wanted = request.nick?.normalize("NFC");
  const badNick = wanted !== undefined && !validNick(wanted);
  client.phase = "joining";
  client.waitingOnStore = true;
  client.welcome = { events: [], badNick };
  client.room.joining.add(client);
  let joined: Joined;
  try {
    joined = await store.join(request.room, {
      owner: client.owner,
      nick: badNick ? undefined : wanted,
      token: request.token,
      since: request.since,
      epoch: request.epoch,
      verified: client.verified,
      op: client.op,
      keys: client.keys,
      user: request.identity?.sub,
    });
  } catch (error) {
    giveBack(client);
    if (gone(client)) return;
    log("error", "join_failed", { peer: client.ip, error: String(error) });
    return disconnect(client, CloseCode.TryAgainLater, "try again later");
  }
  client.nick = joined.nick;
  client.claimedId = joined.claimedId;
  client.earlierClaims = claimsBefore(
    joined.nick,
    joined.claimedId,
    joined.history,
  );
  // A text client is shown nothing before its welcome line (a JSON one
  // names its own `before`): `/history` reads back from its join.
  client.oldestSeen = joined.present ? joined.lastId + 1 : joined.lastId;
  if (gone(client)) {
    // Closed while the store worked: out again, as anyone else would go.
    return leaveRoom(client, client.session);
  }
  client.phase = "joined";
  if (chat().phase !== "running") {
    // Shutdown began while the store worked (Deno may run a signal handler
    // between two steps of an async function).
    return disconnect(client, CloseCode.GoingAway, SHUTDOWN_REASON);
  }
  log("info", "connect", {
    room: request.room,
    nick: joined.nick,
    peer: request.ip,
  });
  client.welcome!.joined = joined;
  admit(client);
}

/** Whether the client is out (read anew: it may change while a store call waits). */
function gone(client: Client): boolean {
  return client.phase === "gone";
}

/** The first frame a JSON client gets. */
function sendWelcome(client: Client, joined: Joined, room: string): void {
  const welcome: Welcome = {
    type: "welcome",
    you: client.nick,
    room,
    epoch: joined.epoch,
    users: joined.users,
    history: joined.history.filter((event) => visibleTo(event, client)),
    lastId: joined.lastId,
    gap: joined.gap,
    maxMessageChars: chat().settings.maxMessageChars,
    token: joined.token,
    session: client.session,
    verified: client.verified,
    op: client.op,
    verifiedUsers: joined.verified,
    moderators: joined.moderators,
    topic: joined.topic,
    slowSeconds: joined.slowSeconds,
  };
  sendToOne(client, JSON.stringify(welcome));
}

/**
 * Takes a client out, whatever its phase: the one way out, for a close, a
 * refusal, a kick or shutdown. Safe to call twice (Deno can fire close twice
 * for a socket we closed); only the first call counts. What the client holds
 * in the store goes back by its phase: an `opening` client's place in the
 * room, a `joined` one's membership; a `joining` one's is settled by
 * {@linkcode joinRoom} when the store answers.
 */
function removeClient(client: Client, code: number): void {
  const current = chat();
  const phase = client.phase;
  if (phase === "gone") return;
  client.phase = "gone";
  clearTimeout(client.openTimer);
  current.clients.delete(client.socket);
  if (phase === "opening") return giveBack(client);
  bump(current.counters.closes, closeLabel(code));
  if (phase === "joining") return;
  log("info", "leave", {
    room: client.room.name,
    nick: client.nick,
    peer: client.ip,
    code,
  });
  leaveRoom(client, client.session && code !== CloseCode.Normal);
}

/** Closes a client's socket with a code and a reason, and takes it out now. */
function disconnect(client: Client, code: number, reason: string): void {
  closeSocket(client.socket, code, reason);
  removeClient(client, code);
}

/**
 * A client that never joined its room gives back its place there: the
 * store's hold, and its share of the local room.
 */
function giveBack(client: Client): void {
  client.room.joining.delete(client);
  chat().store.release(client.room.name);
  leaveLocalRoom(client.room);
}

/**
 * Takes a member out of its room's delivery and the store (the leave is
 * announced if it was the person's last connection): when it goes, and on
 * `/join`. A session's tab that went away without saying goodbye (any close
 * but 1000: a reload, a closed tab, a blip) waits out `sessionGrace` first,
 * so it makes no leave and join if it comes back.
 */
function leaveRoom(client: Client, grace: boolean): void {
  const current = chat();
  const room = client.room;
  room.textSockets.delete(client.socket);
  room.jsonSockets.delete(client.socket);
  room.joining.delete(client);
  leaveLocalRoom(room);
  const storeLeave = () =>
    current.store.leave(room.name, client.owner, current.phase === "running")
      .catch((error) => log("error", "store_failed", { error: String(error) }));
  if (!grace || current.phase !== "running") return void storeLeave();
  // The room is held meanwhile, so it keeps its history and epoch.
  const timer = setTimeout(() => {
    current.graceTimers.delete(timer);
    storeLeave();
  }, current.settings.sessionGrace * 1000);
  current.graceTimers.add(timer);
}

/** A close that never throws (the socket may be closing already). */
function closeSocket(socket: WebSocket, code: number, reason: string): void {
  try {
    socket.close(code, reason);
  } catch {
    // Already closing.
  }
}

/**
 * A handler or the store failed. A store that cannot be reached is the
 * client's to retry (the page keeps the message); anything else closes the
 * client, and the chat goes on.
 */
function failed(client: Client, error: unknown): void {
  if (error instanceof StoreUnavailable) {
    return sendError(
      client,
      "unavailable",
      "the chat is unavailable: try again",
    );
  }
  log("error", "handler_failed", { nick: client.nick, error: String(error) });
  disconnect(client, CloseCode.InternalError, "internal error");
}

/** The store's closer of a stale connection whose nick was taken over. */
function evict(room: string, owner: string): void {
  for (const client of [...chat().clients.values()]) {
    if (
      client.phase === "joined" && client.owner === owner &&
      client.room.name === room
    ) {
      disconnect(client, CloseCode.Normal, "replaced by a new connection");
    }
  }
}

/** Members of a room on this process (`clients` holds every phase). */
function joinedCount(current: ChatState): number {
  let count = 0;
  for (const client of current.clients.values()) {
    if (client.phase === "joined") count++;
  }
  return count;
}

/** A frame from a client: limits first, then (in order) its command. */
function receive(client: Client, data: string | ArrayBuffer): void {
  const { settings, counters } = chat();
  if (client.phase === "gone") return; // Deno may still hand over a frame
  client.lastFrameAt = Date.now();
  if (chat().phase !== "running") {
    // Between two of its frames is when a sender's close is least likely to
    // cross a frame still on its way (see `stop`).
    return disconnect(client, CloseCode.GoingAway, SHUTDOWN_REASON);
  }
  const bytes = typeof data === "string" ? frameBytes(data) : data.byteLength;
  if (bytes > settings.maxFrameBytes) {
    log("warn", "frame_too_big", { nick: client.nick, peer: client.ip, bytes });
    return disconnect(client, CloseCode.MessageTooBig, "frame too big");
  }
  if (typeof data !== "string") {
    log("warn", "binary_frame", { nick: client.nick, peer: client.ip });
    return disconnect(client, CloseCode.UnsupportedData, "text frames only");
  }
  if (client.json && TYPING_FRAME.test(data)) {
    // Typing notices count against nothing else (they have their interval),
    // and one that comes while the client waits on the store is dropped.
    counters.messagesReceived++;
    if (!client.waitingOnStore) execute(client, { type: "typing" });
    return;
  }
  if (client.waitingOnStore) {
    // The join or a command is with the store: keep the order, bounded.
    if (client.backlog.length >= settings.burst) {
      return disconnect(client, CloseCode.PolicyViolation, "too many messages");
    }
    client.backlog.push(data);
    return;
  }
  counters.messagesReceived++;
  if (!takeToken(client)) {
    client.drops++;
    if (client.drops > settings.maxConsecutiveDrops) {
      log("warn", "flood_closed", { nick: client.nick, peer: client.ip });
      return disconnect(
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
  const command = client.json ? parseJsonCommand(data) : parseCommand(data);
  try {
    execute(client, command);
  } catch (error) {
    failed(client, error);
  }
}

const TYPING_FRAME = /^\s*\{\s*"type"\s*:\s*"typing"\s*\}\s*$/;

function execute(client: Client, command: Command): void {
  const { settings, store } = chat();
  const room = client.room.name;
  switch (command.type) {
    case "message":
    case "action":
    case "dm": {
      const text = cleanText(command.text);
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
      if (command.type === "dm") return sendDirect(client, command.to, text);
      return post(client, { type: command.type, from: client.nick, text });
    }
    case "typing": {
      // Ephemeral and cheap: not counted against the message rate, but
      // passed on at most once per TYPING_INTERVAL_MS per connection.
      const now = Date.now();
      if (now - client.typingAt < TYPING_INTERVAL_MS) return;
      client.typingAt = now;
      return store.notify(room, { type: "typing", nick: client.nick });
    }
    case "nick": {
      if (command.nick === "" && !client.json) {
        return sendNotice(client, `you are ${client.nick}.`);
      }
      if (client.verified) {
        return sendError(
          client,
          "forbidden",
          "your name comes from your login; it cannot be changed here",
        );
      }
      const nick = command.nick.normalize("NFC");
      if (nick === client.nick) return;
      if (!validNick(nick)) {
        return sendError(client, "bad_nick", NICK_ERRORS.bad_nick);
      }
      return whileStoreWorks(client, async () => {
        const renamed = await store.rename(
          room,
          client.owner,
          client.nick,
          nick,
        );
        if (renamed === "nick_taken") {
          return sendError(client, "nick_taken", NICK_ERRORS.nick_taken);
        }
        client.nick = nick;
      });
    }
    case "who":
      return whileStoreWorks(client, async () => {
        sendNotice(client, whoText(room, await store.roster(room)));
      });
    case "join":
      return moveTo(client, command.room);
    case "quit":
      return disconnect(client, CloseCode.Normal, "bye");
    case "help":
      sendNotice(client, HELP_TEXT);
      if (client.op) sendNotice(client, MODERATION_HELP);
      return;
    case "history":
      return readHistory(client, command.before, command.limit);
    case "kick":
    case "ban":
    case "unban":
    case "mute":
    case "unmute":
    case "topic":
    case "slow":
    case "delete":
      return moderateFor(client, command);
    case "invalid":
      return sendError(client, command.code, command.message);
  }
}

/** `/msg NICK text`: to one member, and the sender's own connections. */
function sendDirect(client: Client, to: string, text: string): void {
  const { store } = chat();
  const room = client.room.name;
  whileStoreWorks(client, async () => {
    const recipient = (await store.members(room))
      .find((nick) => nickKey(nick) === nickKey(to));
    if (!recipient) {
      return sendError(client, "no_such_nick", `nobody here is called ${to}`);
    }
    await store.append(room, {
      type: "dm",
      from: client.nick,
      to: recipient,
      text,
      ...(client.verified ? { verified: true } : {}),
    });
  });
}

/**
 * Older events, by `visibleTo` (the one filter of what a client may see;
 * the store's paging leaves deleted messages out): JSON gets one `history`
 * answer; plain text gets the tutorial's lines, and a line when nothing
 * older is left. Without `before` (plain text), it reads back from the
 * oldest event the connection has been shown. Not `whileStoreWorks`: reads
 * change nothing, so a flood of them meets the rate limit (each took a token
 * in `receive`) rather than the backlog's close.
 */
function readHistory(
  client: Client,
  before: number | undefined,
  limit: number,
): void {
  const { store } = chat();
  const room = client.room;
  store.history(room.name, {
    before: before ?? client.oldestSeen,
    limit,
    visible: (event) => visibleTo(event, client),
  }).then((page) => {
    // Gone, or moved on (`/join`) meanwhile: the page is for nobody.
    if (gone(client) || client.room !== room) return;
    const oldest = page.events[0]?.id;
    if (oldest !== undefined && oldest < client.oldestSeen) {
      client.oldestSeen = oldest;
    }
    if (client.json) {
      const answer: HistoryAnswer = { type: "history", ...page };
      return sendToOne(client, JSON.stringify(answer));
    }
    for (const event of page.events) sendToOne(client, renderText(event));
    if (!page.more) {
      sendNotice(client, `this is the beginning of ${room.name}.`);
    }
  }, (error) => failed(client, error));
}

/** `/join ROOM`: this connection leaves its room (announced) for another. */
function moveTo(client: Client, path: string): void {
  const { store } = chat();
  const room = roomName(path);
  if (!room) {
    return sendError(client, "bad_room", REFUSALS.bad_room.message);
  }
  if (room === client.room.name) return;
  if (!store.hold(room)) {
    return sendError(client, "max_rooms", REFUSALS.max_rooms.message);
  }
  const nick = client.nick;
  leaveRoom(client, false);
  client.room = localRoom(room);
  client.phase = "opening"; // holds its place in the new room
  joinRoom(client, { room, ip: client.ip, json: client.json, nick })
    .catch((error) => failed(client, error));
}

// ---------------------------------------------------------------------------
// Identity and moderation (the rules are auth.ts's and moderation.ts's)
// ---------------------------------------------------------------------------

/**
 * A message or action goes through the store's `post`, which refuses it
 * while its sender is muted or slow mode says it is too early.
 */
function post(client: Client, body: NewEvent & { type: "message" | "action" }) {
  const { store } = chat();
  const poster = { owner: client.owner, keys: client.keys, op: client.op };
  store.post(
    client.room.name,
    poster,
    client.verified ? { ...body, verified: true } : body,
  ).then((posted) => {
    if (!("refused" in posted)) return;
    const seconds = posted.until === undefined
      ? undefined
      : Math.max(1, Math.ceil((posted.until - Date.now()) / 1000));
    if (posted.refused === "muted") {
      return sendError(
        client,
        "muted",
        seconds === undefined
          ? "you are muted in this room"
          : `you are muted in this room for ${seconds} s more`,
        seconds,
      );
    }
    sendError(
      client,
      "slow_mode",
      `slow mode: you may post again in ${seconds} s`,
      seconds,
    );
  }).catch((error) => failed(client, error));
}

/** `/who`: the members, then the moderators and verified ones, if any. */
function whoText(
  room: string,
  roster: { nick: string; verified: boolean; op: boolean }[],
): string {
  const nicks = (entries: typeof roster) =>
    entries.map((entry) => entry.nick).join(", ");
  const moderators = roster.filter((entry) => entry.op);
  const verified = roster.filter((entry) => entry.verified);
  return `in ${room}: ${nicks(roster)}` +
    (moderators.length ? `; moderators: ${nicks(moderators)}` : "") +
    (verified.length ? `; verified: ${nicks(verified)}` : "");
}

/** A moderation command: carried out, answered, logged and counted. */
function moderateFor(client: Client, command: ModerationCommand): void {
  const actor = {
    nick: client.nick,
    op: client.op,
    claimedId: client.claimedId,
  };
  whileStoreWorks(client, async () => {
    const outcome = await moderateAs(client.room.name, actor, command);
    if ("error" in outcome) {
      return sendError(client, outcome.error, outcome.message);
    }
    if ("reply" in outcome) {
      sendToOne(
        client,
        client.json
          ? JSON.stringify(outcome.reply)
          : systemText(moderatedText(outcome.reply)),
      );
    }
  });
}

/**
 * Carries out a moderation command for a moderator (a person, or the API's
 * `api`); what is done is logged and counted the same way for both.
 */
async function moderateAs(
  room: string,
  actor: Actor,
  command: ModerationCommand,
): Promise<ModerationOutcome> {
  const { store, counters } = chat();
  const outcome = await moderate(store, room, actor, command);
  if (!("error" in outcome)) {
    log("info", "moderation", outcome.log);
    bump(counters.moderation, command.type);
  }
  return outcome;
}

/** The store's closer of a kicked or banned person's connections here. */
function expel(room: string, owner: string, reason: string): void {
  for (const client of [...chat().clients.values()]) {
    if (
      client.phase === "joined" && client.owner === owner &&
      client.room.name === room
    ) {
      disconnect(client, CloseCode.Kicked, fitCloseReason(reason));
    }
  }
}

/**
 * The chat port's front door: who the request says it is (a login token,
 * the op key) and whether it is banned from the room, before the checks
 * and the upgrade of {@linkcode handleChatRequest}. Requests it need not
 * judge (not a WebSocket, no room) go straight through.
 */
async function handleChatUpgrade(
  req: Request,
  info: Deno.ServeHandlerInfo,
): Promise<Response> {
  const { verifier, settings, store } = chat();
  const url = parseUrl(req);
  const room = url && roomFromPath(url.pathname);
  if (!room || !readHandshake(req.headers, []).websocket) {
    return handleChatRequest(req, info);
  }
  const ip = (info.remoteAddr as Deno.NetAddr).hostname;
  const offered = offeredProtocols(req.headers);
  const token = tokenOf(offered, req.headers.get("authorization"));
  let identity: Identity | undefined;
  if (verifier && token !== undefined) {
    const verified = await verifier(token);
    if (typeof verified === "string") {
      return refuse("unauthorized", { problem: verified, peer: ip });
    }
    identity = verified;
  } else if (verifier && settings.auth === "required") {
    return refuse("unauthorized", { problem: "no_token", peer: ip });
  }
  const opKey = offered.find((name) => name.startsWith(OP_PROTOCOL_PREFIX))
    ?.slice(OP_PROTOCOL_PREFIX.length);
  if (
    opKey !== undefined &&
    !(settings.opKey && sameSecret(opKey, settings.opKey))
  ) {
    return refuse("unauthorized", { problem: "bad_op_key", peer: ip });
  }
  const session = sessionOf(offered);
  const keys = identity
    ? [ownerOf(identity)]
    : [...(session ? [session] : []), `ip:${ip}`];
  try {
    if (await store.banned(room, keys)) {
      return refuse("banned", { peer: ip, room });
    }
  } catch {
    return refuse("unavailable");
  }
  return handleChatRequest(req, info, { identity, op: opKey !== undefined });
}

/** Runs a command that waits on the store; the client's next frames queue. */
function whileStoreWorks(client: Client, work: () => Promise<void>): void {
  client.waitingOnStore = true;
  work().then(() => drainBacklog(client), (error) => failed(client, error));
}

/** The store has answered: handle the frames that queued meanwhile, in order. */
function drainBacklog(client: Client): void {
  client.waitingOnStore = false;
  while (!client.waitingOnStore && client.backlog.length > 0) {
    if (client.phase !== "joined") return;
    receive(client, client.backlog.shift()!);
  }
}

/** Token bucket: `rate` tokens a second, at most `burst` saved up. */
function takeToken(client: Client): boolean {
  const { settings } = chat();
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
  const max = chat().settings.maxFrameBytes;
  // UTF-8 never takes fewer bytes than UTF-16 units, so a long string is over
  // without encoding it (which would copy a huge frame once more).
  if (text.length * 3 <= max || text.length > max) return text.length;
  return encoder.encode(text).byteLength;
}

/**
 * Drops clients that stopped reading. `bufferedAmount` also counts what this
 * turn sent and not yet wrote, so it is judged on a timer, not after a send.
 */
function sweepSlowConsumers(): void {
  const current = chat();
  for (const client of current.clients.values()) {
    if (client.phase !== "joined") continue;
    const queued = client.socket.bufferedAmount;
    if (queued > current.settings.maxBufferedBytes) {
      current.counters.slowConsumerDrops++;
      log("warn", "slow_consumer", {
        nick: client.nick,
        peer: client.ip,
        queuedBytes: queued,
      });
      disconnect(client, CloseCode.TryAgainLater, "not reading fast enough");
    }
  }
}

/**
 * Gives back a socket's slot, in all and of its address, once: when it has
 * closed, or has been given up on (see `openTimeout`).
 */
function freeSlot(socket: WebSocket, ip: string): void {
  const current = chat();
  if (!current.openSockets.delete(socket)) return;
  const count = (current.connectionsByIp.get(ip) ?? 1) - 1;
  if (count <= 0) current.connectionsByIp.delete(ip);
  else current.connectionsByIp.set(ip, count);
}

// ---------------------------------------------------------------------------
// Delivery: the store's events to this process's sockets
// ---------------------------------------------------------------------------

/** The local room, made (and subscribed to the store) on first use. */
function localRoom(name: string): LocalRoom {
  const { rooms, store } = chat();
  let room = rooms.get(name);
  if (!room) {
    const made: LocalRoom = {
      name,
      textSockets: new Set(),
      jsonSockets: new Set(),
      pendingJson: [],
      admittedMidTurn: new Map(),
      deliveredId: 0,
      joining: new Set(),
      connections: 0,
      unsubscribe: () => {},
    };
    made.unsubscribe = store.subscribe(name, (event) => deliver(made, event));
    rooms.set(name, made);
    room = made;
  }
  room.connections++;
  return room;
}

/** One connection less in the room; the last one unsubscribes. */
function leaveLocalRoom(room: LocalRoom): void {
  if (--room.connections > 0) return;
  room.unsubscribe();
  chat().rooms.delete(room.name);
  chat().roomsWithPending.delete(room);
}

/**
 * Sends one event to this process's members of the room. Each protocol
 * renders it once; JSON clients get the turn's events as one frame.
 */
function deliver(room: LocalRoom, event: LiveEvent): void {
  if (event.type === "typing") return deliverTyping(room, event);
  const { counters } = chat();
  if (event.id <= room.deliveredId) return; // known here already
  room.deliveredId = event.id;
  if (event.type === "nick") renameLocally(room, event);
  if (event.type === "dm") deliverPrivately(room, event);
  else if (room.textSockets.size > 0) {
    const line = renderText(event);
    for (const socket of room.textSockets) sendFrame(socket, line);
    counters.framesSent += room.textSockets.size;
  }
  if (room.jsonSockets.size > 0 && event.type !== "dm") {
    room.pendingJson.push(JSON.stringify(event));
    chat().roomsWithPending.add(room);
    chat().flushScheduled ??= setImmediate(flushBatches);
  }
  if (room.joining.size === 0) return;
  for (const client of room.joining) {
    client.welcome!.events.push(event);
    admit(client);
  }
}

/** Every tab of a person takes the new nick (nicks are one per room). */
function renameLocally(
  room: LocalRoom,
  event: RoomEvent & { type: "nick" },
): void {
  for (const client of clientsIn(room)) {
    if (client.nick !== event.from) continue;
    client.earlierClaims.push({
      nick: client.nick,
      from: client.claimedId,
      until: event.id,
    });
    client.nick = event.to;
    client.claimedId = event.id;
  }
}

function* clientsIn(room: LocalRoom): Generator<Client> {
  const { clients } = chat();
  for (const sockets of [room.textSockets, room.jsonSockets]) {
    for (const socket of sockets) {
      const client = clients.get(socket);
      if (client) yield client;
    }
  }
}

/**
 * Who may see an event: a direct message only its two parties, as the
 * people who held those nicks then: someone who takes `bob` after bob left
 * does not get bob's messages, and ada, renamed since, still has hers. (A
 * session keeps its claims across reconnects; a plain connection's claim
 * starts when it joins.)
 */
function visibleTo(event: RoomEvent, client: Client): boolean {
  if (event.type !== "dm") return true;
  const party = (nick: string) => event.from === nick || event.to === nick;
  if (party(client.nick) && client.claimedId < event.id) return true;
  return client.earlierClaims.some((claim) =>
    party(claim.nick) && claim.from < event.id && event.id < claim.until
  );
}

/**
 * The nicks a person held before its present one, read back from a room's
 * history: the rename that gave the present nick names the one before, and
 * that one's claim began at its join (or the rename into it, and so on), or
 * just after another holder of it went. Only within the history given.
 */
function claimsBefore(
  nick: string,
  claimedId: number,
  history: RoomEvent[],
): Claim[] {
  const claims: Claim[] = [];
  let current = { nick, from: claimedId };
  for (let i = history.length - 1; i >= 0; i--) {
    const renamed = history[i];
    if (renamed.id > current.from) continue;
    if (
      renamed.id < current.from || renamed.type !== "nick" ||
      renamed.to !== current.nick
    ) break;
    let from = 0;
    let j = i - 1;
    for (; j >= 0; j--) {
      const e = history[j];
      const began = (e.type === "join" && e.nick === renamed.from) ||
        (e.type === "nick" && e.to === renamed.from);
      const ended = ((e.type === "leave" || e.type === "kick") &&
        e.nick === renamed.from) ||
        (e.type === "nick" && e.from === renamed.from);
      if (began || ended) {
        from = e.id;
        break;
      }
    }
    claims.push({ nick: renamed.from, from, until: renamed.id });
    current = { nick: renamed.from, from };
    i = j + 1; // the loop steps to j: a rename into that nick goes on
  }
  return claims;
}

/**
 * A direct message goes to every connection of its sender and recipient
 * and nobody else; the turn's batch goes first, to keep the order.
 */
function deliverPrivately(room: LocalRoom, event: RoomEvent & { type: "dm" }) {
  flushRoom(room);
  let json: string | undefined;
  for (const client of clientsIn(room)) {
    if (!visibleTo(event, client)) continue;
    sendToOne(
      client,
      client.json ? json ??= JSON.stringify(event) : renderText(event),
    );
  }
}

/** A typing notice goes to the room's other JSON clients, after the batch. */
function deliverTyping(room: LocalRoom, event: TypingEvent): void {
  if (room.jsonSockets.size === 0) return;
  flushRoom(room);
  const frame = JSON.stringify(event);
  for (const client of clientsIn(room)) {
    if (client.json && client.nick !== event.nick) sendToOne(client, frame);
  }
}

/**
 * Lets a joining client into the room's delivery, once the store has
 * answered and delivery has caught up with its welcome (a shared store may
 * deliver later than it answers). It gets its welcome, then the events that
 * came after the welcome's last one, then everything else with the room;
 * of the turn's batch, only what is added after it (it has the rest).
 */
function admit(client: Client): void {
  const welcome = client.welcome!;
  const joined = welcome.joined;
  const room = client.room;
  if (!joined) return;
  if (room.deliveredId < joined.lastId) {
    // Alone in a room this process just subscribed to (say, another tab of
    // a session that is present): there is nothing to wait for. What came
    // before is in the welcome, and late copies of it are skipped.
    const alone = room.textSockets.size + room.jsonSockets.size === 0 &&
      room.joining.size === 1;
    if (!alone) return;
    room.deliveredId = joined.lastId;
  }
  room.joining.delete(client);
  client.welcome = undefined;
  if (client.json && room.pendingJson.length > 0) {
    room.admittedMidTurn.set(client.socket, room.pendingJson.length);
  }
  if (client.json) sendWelcome(client, joined, room.name);
  else {
    sendNotice(
      client,
      `you are ${client.nick} in ${room.name}; here: ${
        joined.users.join(", ")
      }`,
    );
    if (joined.topic) sendNotice(client, `topic: ${joined.topic}`);
  }
  if (welcome.badNick) sendError(client, "bad_nick", NICK_ERRORS.bad_nick);
  else if (joined.nickTaken) {
    sendError(client, "nick_taken", NICK_ERRORS.nick_taken);
  }
  const missed = welcome.events.filter((event) =>
    event.id > joined.lastId && visibleTo(event, client)
  );
  if (missed.length > 0) {
    const frames = client.json
      ? [JSON.stringify(missed.length === 1 ? missed[0] : missed)]
      : missed.map(renderText);
    for (const frame of frames) sendToOne(client, frame);
  }
  (client.json ? room.jsonSockets : room.textSockets).add(client.socket);
  drainBacklog(client);
}

/** Sends each room's pending JSON events: one frame per recipient per turn. */
function flushBatches(): void {
  const current = chat();
  current.flushScheduled = undefined;
  for (const room of current.roomsWithPending) flushRoom(room);
  current.roomsWithPending.clear();
}

function flushRoom(room: LocalRoom): void {
  const pending = room.pendingJson;
  if (pending.length === 0) return;
  const frame = batchFrame(pending);
  room.pendingJson = [];
  const late = room.admittedMidTurn;
  if (late.size === 0) {
    for (const socket of room.jsonSockets) sendFrame(socket, frame);
    chat().counters.framesSent += room.jsonSockets.size;
    return;
  }
  let sent = 0;
  for (const socket of room.jsonSockets) {
    const had = late.get(socket) ?? 0;
    if (had >= pending.length) continue;
    sendFrame(socket, had === 0 ? frame : batchFrame(pending.slice(had)));
    sent++;
  }
  late.clear();
  chat().counters.framesSent += sent;
}

/** One event as itself, several as an array: one frame either way. */
function batchFrame(events: string[]): string {
  return events.length === 1 ? events[0] : `[${events.join(",")}]`;
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
  chat().counters.framesSent++;
}

// ---------------------------------------------------------------------------
// The app's HTTP API (the rules are http_api.ts's)
// ---------------------------------------------------------------------------

/** What the API's moderation errors answer with, by the actor's error code. */
const MODERATION_STATUS: Partial<Record<ErrorCode, number>> = {
  no_such_nick: Status.NotFound,
  no_such_message: Status.NotFound,
  forbidden: Status.Forbidden,
};

/** The chat as the API sees it: the store (every process) and this process. */
function apiBackend(startedAt: number): ApiBackend {
  const { store, settings } = chat();
  return {
    async publish(room, from, text) {
      try {
        return await store.append(room, { type: "message", from, text });
      } catch (error) {
        if (error instanceof NoSuchRoom) return undefined;
        throw error;
      }
    },
    once: (key, ttlMs, produce) => store.once(key, ttlMs, produce),
    async presence(room) {
      return (await store.roster(room)).map((entry) => ({
        nick: entry.nick,
        ...(entry.user !== undefined ? { user: entry.user } : {}),
        connections: entry.connections,
        op: entry.op,
      }));
    },
    rooms: () => store.rooms(),
    info: () => ({
      version: VERSION,
      uptimeSeconds: Math.floor((Date.now() - startedAt) / 1000),
      connections: joinedCount(chat()),
      rooms: store.roomCount(),
      store: storeName(settings, store),
      storeUp: store.available?.() ?? true,
    }),
    async history(room, before, limit) {
      try {
        return await store.history(room, {
          before: before ?? Number.MAX_SAFE_INTEGER,
          limit,
          // The app reads what everyone in the room may: no private messages.
          visible: (event) => event.type !== "dm",
        });
      } catch (error) {
        if (error instanceof NoSuchRoom) return undefined;
        throw error;
      }
    },
    disconnect: (target, reason) =>
      store.dismiss({
        room: target.room,
        nick: target.nick,
        owner: target.user !== undefined ? ownerOfUser(target.user) : undefined,
      }, fitCloseReason(`disconnected by the app: ${reason}`)),
    async moderate(room, command) {
      const outcome = await moderateAs(
        room,
        { nick: API_ACTOR, op: true, claimedId: 0 },
        command,
      );
      if ("error" in outcome) {
        throw new ApiError(
          MODERATION_STATUS[outcome.error] ?? Status.BadRequest,
          outcome.error,
          outcome.message,
        );
      }
      return "reply" in outcome ? outcome.reply : {};
    },
  };
}

/** The moderator's name the API's actions are logged under (`by=api`). */
const API_ACTOR = "api";

/** The API's handler, made once at start-up; undefined without `--api-key`. */
function makeApi(settings: Settings, startedAt: number) {
  if (!settings.apiKey) return undefined;
  return apiHandler(apiBackend(startedAt), {
    key: settings.apiKey,
    name: settings.apiName,
    maxMessageChars: settings.maxMessageChars,
    rate: settings.apiRate,
    log: (level, event, fields) => log(level, event, fields),
    count: (method, status) =>
      bump(
        chat().counters.apiRequests,
        `method="${method.replace(/[^a-z_.]/g, "?")}",status="${status}"`,
      ),
  }, VERSION);
}

// ---------------------------------------------------------------------------
// HTTP routes
// ---------------------------------------------------------------------------

/** Refuses an upgrade: logs, counts and answers under the same name. */
function refuse(reason: RefusalReason, fields: LogFields = {}): Response {
  const { status, message } = REFUSALS[reason];
  bump(chat().counters.upgradesRefused, reason);
  log(reason === "not_websocket" ? "info" : "warn", "upgrade_refused", {
    reason,
    ...fields,
  });
  return new Response(message + "\n", {
    status,
    headers: {
      "content-type": "text/plain; charset=utf-8",
      ...(status === Status.UpgradeRequired
        ? { upgrade: "websocket", connection: "Upgrade" }
        : {}),
      ...(status === Status.TooManyRequests ? { "retry-after": "1" } : {}),
    },
  });
}

/**
 * The person a client says it is: its session secret comes as a second
 * subprotocol (`chat.session.SECRET`, never echoed, so it is in no URL or
 * log). The secret itself is kept nowhere: the owner is named by its
 * SHA-256, so a lookup by it tells nothing about the secret (no comparison
 * of secrets is made, timed or not).
 */
function sessionOf(protocols: string[]): string | undefined {
  const offered = protocols.find((name) =>
    name.startsWith(SESSION_PROTOCOL_PREFIX)
  );
  const secret = offered?.slice(SESSION_PROTOCOL_PREFIX.length);
  if (!secret || !SESSION_SECRET.test(secret)) return undefined;
  return "s." + createHash("sha256").update(secret).digest("base64url");
}

/**
 * New connections per address: a token bucket like messages', so one
 * address cannot flood a room with joins and leaves.
 */
function takeConnectToken(ip: string): boolean {
  const { settings, connectBuckets } = chat();
  const now = Date.now();
  const bucket = connectBuckets.get(ip) ??
    { tokens: settings.connectBurst, at: now };
  bucket.tokens = Math.min(
    settings.connectBurst,
    bucket.tokens + (now - bucket.at) * settings.connectRate / 1000,
  );
  bucket.at = now;
  connectBuckets.set(ip, bucket);
  if (bucket.tokens < 1) return false;
  bucket.tokens--;
  return true;
}

/** Forgets the buckets that have refilled: they say nothing any more. */
function forgetFullBuckets(): void {
  const { settings, connectBuckets } = chat();
  const now = Date.now();
  for (const [ip, bucket] of connectBuckets) {
    const tokens = bucket.tokens +
      (now - bucket.at) * settings.connectRate / 1000;
    if (tokens >= settings.connectBurst) connectBuckets.delete(ip);
  }
}

/**
 * Is this request's origin allowed to open a chat connection? Only browsers
 * send `Origin`, and it is what stops another site's page from using a
 * visitor's browser to join the chat; terminal tools send none.
 */
function originAllowed(origin: string | null, host: string | null): boolean {
  if (origin === null) return true;
  const allowed = chat().settings.allowOrigin;
  if (allowed.length > 0) {
    return allowed.includes("*") || allowed.includes(origin);
  }
  try {
    return new URL(origin).hostname === new URL(`http://${host}`).hostname;
  } catch {
    return false;
  }
}

/** The chat port: guard clauses, each refusal with its own name, then upgrade. */
function handleChatRequest(
  req: Request,
  info: Deno.ServeHandlerInfo,
  admitted: Pick<ConnectRequest, "identity" | "op"> = {},
): Response {
  const { settings, store, connectionsByIp } = chat();
  const handshake = readHandshake(req.headers, [JSON_PROTOCOL]);
  if (!handshake.websocket) return refuse("not_websocket");
  const url = parseUrl(req);
  if (!url) return refuse("bad_request");
  const room = roomFromPath(url.pathname);
  if (!room) return refuse("bad_room");
  const origin = req.headers.get("origin");
  if (!originAllowed(origin, req.headers.get("host"))) {
    return refuse("origin", { origin: origin ?? "" });
  }
  if (chat().phase !== "running") return refuse("shutting_down");
  if (store.available?.() === false) return refuse("unavailable");
  const ip = (info.remoteAddr as Deno.NetAddr).hostname;
  if (!takeConnectToken(ip)) return refuse("connect_rate", { peer: ip });
  const fromIp = connectionsByIp.get(ip) ?? 0;
  if (
    chat().openSockets.size + chat().stuckSockets.size >=
      settings.maxConnections
  ) {
    return refuse("max_connections", { peer: ip });
  }
  if (fromIp >= settings.maxConnectionsPerIp) {
    return refuse("max_connections_per_ip", { peer: ip });
  }
  // Held from here on, so concurrent upgrades cannot make more rooms than
  // maxRooms, and a lone member's replacement cannot end the room.
  if (!store.hold(room)) return refuse("max_rooms", { peer: ip, room });
  let upgraded: { socket: WebSocket; response: Response };
  try {
    // No `protocol` option: Deno would look it up in the header split on
    // ", " only, refusing `chat.v1.json,chat.session.S`. We answer ourselves.
    upgraded = Deno.upgradeWebSocket(req, {
      idleTimeout: settings.idleTimeout,
    });
  } catch (error) {
    store.release(room);
    return refuse("bad_handshake", { peer: ip, error: String(error) });
  }
  if (handshake.protocol !== undefined) {
    upgraded.response.headers.set("sec-websocket-protocol", handshake.protocol);
  }
  connectionsByIp.set(ip, fromIp + 1);
  const since = url.searchParams.get("since");
  acceptSocket(upgraded.socket, {
    room,
    ip,
    json: handshake.protocol === JSON_PROTOCOL,
    // A verified person's nick is their token's.
    nick: admitted.identity
      ? admitted.identity.name
      : url.searchParams.get("nick") ?? undefined,
    since: since !== null && /^\d+$/.test(since) ? Number(since) : undefined,
    epoch: url.searchParams.get("epoch") ?? undefined,
    token: url.searchParams.get("token") ?? undefined,
    session: sessionOf(handshake.offered),
    ...admitted,
  });
  return upgraded.response;
}

/** A request handler for one of our servers. */
type Handler = (req: Request) => Response | Promise<Response>;

/** Is this a request for the API (a path under `/api/`)? */
function apiPath(req: Request): boolean {
  return parseUrl(req)?.pathname.startsWith("/api/") ?? false;
}

// ---------------------------------------------------------------------------
// Start-up and shutdown
// ---------------------------------------------------------------------------

type Server = Deno.HttpServer<Deno.NetAddr>;

/**
 * Starts the chat server, then the page (which names the chat's port), and
 * the API's own server when `--api-port` is given.
 */
async function listenAll(
  settings: Settings,
  api: Handler | undefined,
): Promise<{ chatServer: Server; pageServer: Server; apiServer?: Server }> {
  const listen = {
    onListen: () => {}, // the start log line says where instead
    // One log line, never a stack trace with a client's text in it.
    onError: (error: unknown) => {
      log("error", "request_failed", { error: String(error) });
      return new Response("Internal error\n", { status: 500 });
    },
    hostname: settings.hostname,
    ...(settings.reusePort ? { reusePort: true } : {}),
    ...(settings.cert && settings.key
      ? { cert: settings.cert, key: settings.key }
      : {}),
  };
  // A failure names the flag at fault (port in use, bad certificate), not
  // only Deno's error.
  const serve = (
    name: "port" | "wsPort" | "apiPort",
    handler: Deno.ServeHandler<Deno.NetAddr>,
    hostname = settings.hostname,
  ) => {
    const port = settings[name] ?? 0;
    try {
      return Deno.serve({ ...listen, hostname, port }, handler);
    } catch (error) {
      throw listenFailure(error, {
        flag: flagOf(name),
        port,
        hostname,
        cert: settings.cert,
        key: settings.key,
      });
    }
  };
  const started: Server[] = [];
  try {
    const chatServer = serve("wsPort", handleChatUpgrade);
    started.push(chatServer);
    const page = await renderPage(chatServer.addr.port);
    const own = api && settings.apiPort !== undefined;
    const pages = pageHandler(page, {
      health: () => ({
        up: chat().store.available?.() ?? true,
        connections: joinedCount(chat()),
        rooms: chat().store.roomCount(),
        redis: Boolean(settings.redis),
      }),
      metrics: settings.metrics ? metricsText : undefined,
      log,
    });
    // The API under /api/ on the page port, unless it has a port of its own.
    const pageServer = serve(
      "port",
      api && !own ? (req) => apiPath(req) ? api(req) : pages(req) : pages,
    );
    started.push(pageServer);
    if (!own) return { chatServer, pageServer };
    // Its own port, so an operator can bind it to a private address.
    const apiServer = serve(
      "apiPort",
      (req) =>
        apiPath(req)
          ? api(req)
          : new Response("Not found\n", { status: Status.NotFound }),
      settings.apiHostname || settings.hostname,
    );
    return { chatServer, pageServer, apiServer };
  } catch (error) {
    // Leave nothing listening.
    await Promise.all(started.map((server) => server.shutdown()));
    throw error;
  }
}

/** A running chat: where it listens and how to stop it. */
export interface ChatServer {
  /** Bound port of the page server. */
  port: number;
  /** Bound port of the chat server. */
  wsPort: number;
  /** Bound port of the API's own server (with `apiPort`). */
  apiPort?: number;
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
  if (state && state.phase !== "stopped") {
    throw new Error("a chat server is already running in this process");
  }
  if (Boolean(options.cert) !== Boolean(options.key)) {
    throw new Error("cert and key go together");
  }
  if (options.data && options.redis) throw new Error(DATA_WITH_REDIS);
  const { store: given, ...rest } = options;
  const settings = { ...DEFAULT_OPTIONS, ...rest } satisfies Settings;
  const verifier = await makeVerifier({
    secret: settings.authSecret,
    publicKey: settings.authPublicKey,
    audience: settings.authAudience,
    issuer: settings.authIssuer,
  });
  const store = given ?? await makeStore(settings);
  state = newState(settings, store);
  state.verifier = verifier;
  const current = state;
  const startedAt = Date.now();
  const api = makeApi(settings, startedAt);
  const { chatServer, pageServer, apiServer } = await listenAll(settings, api)
    .catch(async (error) => {
      current.phase = "stopped"; // a port in use: allow another try
      if (!given) await store.close?.(); // a Redis connection would linger
      throw error;
    });
  const sweep = setInterval(sweepSlowConsumers, SLOW_CONSUMER_SWEEP_MS);
  const forget = setInterval(forgetFullBuckets, FORGET_BUCKETS_MS);
  const scheme = settings.cert ? ["https", "wss"] : ["http", "ws"];
  const host = settings.hostname === "0.0.0.0"
    ? "localhost"
    : settings.hostname;
  const port = pageServer.addr.port;
  const wsPort = chatServer.addr.port;
  const pageUrl = `${scheme[0]}://${host}:${port}/`;
  const chatUrl = `${scheme[1]}://${host}:${wsPort}/`;
  const apiPort = apiServer?.addr.port;
  log("info", "start", {
    page: pageUrl,
    chat: chatUrl,
    // Where the API answers, when it is on (never the key).
    api: !api
      ? undefined
      : apiServer
      ? `${scheme[0]}://${settings.apiHostname || host}:${apiPort}/api/`
      : `${pageUrl}api/`,
    store: storeName(settings, store),
    ...limitsOf(settings),
  });
  let stopped: Promise<void> | undefined;
  return {
    port,
    wsPort,
    ...(apiPort !== undefined ? { apiPort } : {}),
    pageUrl,
    chatUrl,
    shutdown: () =>
      stopped ??= stop(
        current,
        [chatServer, pageServer, ...(apiServer ? [apiServer] : [])],
        [sweep, forget],
      ),
  };
}

/**
 * The Redis store's file, named by a variable so that nothing loads it
 * unless `--redis` is given. `deno compile` needs `--include redis_store.ts`
 * for it.
 */
const SHARED_STORE_MODULE = "./stores/redis_store.ts";

/**
 * The SQLite store's file, loaded only with `--data` (like
 * {@linkcode SHARED_STORE_MODULE}; `deno compile` includes it too).
 */
const DATA_STORE_MODULE = "./stores/sqlite_store.ts";

/**
 * The in-memory store, with `data` one that writes through to a SQLite
 * file, or with `redis` the shared one; each loaded only then, so that the
 * single-file service needs nothing else.
 */
async function makeStore(settings: Settings): Promise<RoomStore> {
  const common: StoreOptions = {
    historySize: settings.historySize,
    maxHistoryBytes: settings.maxHistoryBytes,
    maxRooms: settings.maxRooms,
    onEvict: evict,
    onExpel: expel,
  };
  if (settings.data) {
    const embedded: {
      SqliteStore: StoreFactory<SqliteStoreOptions>;
      DataFileError: typeof DataFileError;
    } = await import(DATA_STORE_MODULE);
    return await embedded.SqliteStore.connect({
      ...common,
      path: settings.data,
      retainEvents: settings.retainEvents,
      retainDays: settings.retainDays,
      sync: settings.dataSync,
      log,
    }).catch((error) => {
      // It names the file and why, in one line: printed as it is.
      throw error instanceof embedded.DataFileError
        ? reworded(error, error.message)
        : error;
    });
  }
  if (!settings.redis) return new MemoryStore(common);
  const shared: { RedisStore: StoreFactory<RedisStoreOptions> } = await import(
    SHARED_STORE_MODULE
  );
  return await shared.RedisStore.connect(
    {
      ...common,
      url: settings.redis,
      roomTtl: settings.roomTtl,
      coalesceMs: settings.redisCoalesceMs,
      log,
    } satisfies RedisStoreOptions,
  ).catch((error) => {
    throw redisFailure(error);
  });
}

/**
 * What kind of store this is, for the start log and the API's `info`: by its
 * class (MemoryStore is "memory", RedisStore "redis").
 */
function storeName(settings: Settings, store: RoomStore): string {
  if (settings.redis) return "redis";
  // `--data` is a MemoryStore too, writing through to its file.
  if (settings.data) return "sqlite";
  return store.constructor.name.replace(/Store$/, "").toLowerCase();
}

/** Waits for `promise`, but no longer than SHUTDOWN_GRACE_MS (plus `more`). */
async function atMostGrace(
  promise: Promise<unknown>,
  more = 0,
): Promise<void> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  await Promise.race([
    promise,
    new Promise((resolve) =>
      timer = setTimeout(resolve, SHUTDOWN_GRACE_MS + more)
    ),
  ]);
  clearTimeout(timer);
}

/**
 * Closes every client with 1001, waits a little for them, stops the servers.
 *
 * A close frame can be lost when it crosses a frame the client is still
 * sending: Deno ends the connection at once when a data frame arrives after
 * its close (instead of waiting for the client's close, RFC 6455 §7.1.1),
 * and the client's next frame then meets a reset that can wipe the unread
 * close frame. So a client that sent something within
 * {@linkcode SHUTDOWN_SENDER_WAIT_MS} is closed right after its next frame
 * (in `receive`), when its following one is furthest away; the others at
 * once, and the rest when that wait is over.
 */
async function stop(
  current: ChatState,
  servers: Server[],
  timers: ReturnType<typeof setInterval>[],
): Promise<void> {
  current.phase = "stopping";
  for (const timer of timers) clearInterval(timer);
  if (current.flushScheduled) clearImmediate(current.flushScheduled);
  flushBatches();
  for (const timer of current.graceTimers) clearTimeout(timer);
  current.graceTimers.clear();
  const clients = [...current.clients.values()];
  for (const client of clients) clearTimeout(client.openTimer);
  log("info", "shutdown", { connections: joinedCount(current) });
  const closed = clients.map((client) =>
    new Promise<void>((resolve) => {
      if (client.socket.readyState === WebSocket.CLOSED) return resolve();
      client.socket.addEventListener("close", () => resolve());
    })
  );
  // Sockets still opening or joining are closed by joinRoom (a socket cannot
  // be closed before it opens), and awaited with the rest.
  const closeJoined = (senders: boolean) => {
    const now = Date.now();
    for (const client of clients) {
      if (client.phase !== "joined") continue;
      const sending = now - client.lastFrameAt < RECENT_SENDER_MS;
      if (senders || !sending) {
        disconnect(client, CloseCode.GoingAway, SHUTDOWN_REASON);
      }
    }
  };
  closeJoined(false);
  const lastCall = setTimeout(() => closeJoined(true), SHUTDOWN_SENDER_WAIT_MS);
  // Deno's server.shutdown() has not always closed upgraded sockets
  // (denoland/deno#22387), so they are closed above and awaited here.
  await atMostGrace(Promise.all(closed), SHUTDOWN_SENDER_WAIT_MS);
  clearTimeout(lastCall);
  for (const client of [...current.clients.values()]) {
    removeClient(client, CloseCode.GoingAway);
  }
  // Deno's server shutdown waits for sockets it holds that never opened
  // (see openTimeout), stuck or not yet timed out; it is not awaited past
  // the grace period for them.
  const unopened = clients.some((client) =>
    client.socket.readyState === WebSocket.CONNECTING
  );
  const serversDown = Promise.all(servers.map((server) => server.shutdown()));
  if (current.stuckSockets.size === 0 && !unopened) await serversDown;
  else await atMostGrace(serversDown);
  await current.store.close?.();
  current.phase = "stopped";
}

// ---------------------------------------------------------------------------
// Command line (its flags and help are server/options.ts's)
// ---------------------------------------------------------------------------

/** The CLI: parse, start, print where to go, stop cleanly on a signal. */
export async function main(args: string[]): Promise<void> {
  let options: ChatOptions | "help";
  try {
    options = parseCommandLine(args);
  } catch (error) {
    // One line that stays in sight, not the whole usage after it.
    if (error instanceof UsageError) {
      console.error(`deno-chat: ${error.message} (see --help)`);
      Deno.exit(2);
    }
    console.error(`deno-chat: ${startupLine(error)}`);
    Deno.exit(1);
  }
  if (options === "help") {
    console.log(USAGE);
    return;
  }
  let server: ChatServer;
  try {
    server = await startChat(options);
  } catch (error) {
    // The README promises logs without stack traces: one line, the cause.
    console.error(`deno-chat: ${startupLine(error)}`);
    Deno.exit(1);
  }
  console.log(
    `deno-chat: open ${server.pageUrl} (chat on port ${server.wsPort})`,
  );
  const stop = async () => {
    // We promise an exit within 2 s, even if a peer never completes its
    // close handshake or Deno's server shutdown waits on it.
    setTimeout(() => Deno.exit(0), EXIT_DEADLINE_MS);
    await server.shutdown();
    Deno.exit(0);
  };
  Deno.addSignalListener("SIGINT", stop);
  Deno.addSignalListener("SIGTERM", stop);
}

if (import.meta.main) await main(Deno.args);
