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
 * This module is the service and the only one with process state: the room
 * state is its module-level maps, reset by each start. The wire contract is
 * wire/protocol.ts, the store contract stores/rooms.ts, the service's parts
 * are in server/; none of them imports this one. A message's path: its
 * frame is checked in {@linkcode receive} and run by the command table,
 * {@linkcode execute}; posted through the `RoomStore`, it comes back through
 * `subscribe` to `deliver` (server/delivery.ts) for every socket of the
 * room here (README.md's "How it works" names every step).
 *
 * @module
 */

import {
  type ChatOptions,
  DATA_WITH_REDIS,
  DEFAULT_OPTIONS,
  flagOf,
  limitsOf,
  parseCommandLine,
  type Settings,
  urlsOf,
  USAGE,
  UsageError,
  WEBHOOK_WITHOUT_SECRET,
  webhookTwice,
} from "./server/options.ts";
import { listening, startupLine } from "./server/cli_errors.ts";
import {
  checkMessage,
  checkNick,
  CloseCode,
  type Command,
  frameBytes,
  HELP_TEXT,
  isRefusal,
  JSON_PROTOCOL,
  MODERATION_HELP,
  parseCommand,
  parseJsonCommand,
  type RefusalReason,
  REFUSALS,
  REFUSALS_BY_CLOSE_PROTOCOL,
  roomFromPath,
  roomName,
  SHUTDOWN_REASON,
  Status,
  TYPING_INTERVAL_MS,
} from "./wire/protocol.ts";
import {
  type Admission,
  type Joined,
  type Log,
  type LogFields,
  personKeys,
  type RoomStore,
  StoreUnavailable,
} from "./stores/rooms.ts";
import { TokenBucket, TokenBuckets } from "./server/rate.ts";
import { openOutbox, openStore, storeName } from "./server/open_store.ts";
import { Webhooks } from "./server/webhooks.ts";
import { type ConnectVerdict, Proxy } from "./server/proxy.ts";
import {
  admit,
  claimsBefore,
  closeSocket,
  deliver,
  flushBatches,
  type LocalRoom,
  newLocalRoom,
  newOutbox,
  type Outbox,
  sendError,
  sendNotice,
} from "./server/delivery.ts";
import {
  editMessage,
  moderateFor,
  post,
  react,
  readHistory,
  rename,
  search,
  SEARCH_COST,
  sendDirect,
  type Sender,
  who,
} from "./server/commands.ts";
import {
  offeredProtocols,
  originAllowed,
  parseUrl,
  readHandshake,
  refusalResponse,
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
  identify,
  type Identity,
  makeVerifier,
  ownerOf,
  sessionOf,
  type Verifier,
} from "./server/auth.ts";
import { fitCloseReason, moderate } from "./server/moderation.ts";
import { access, answerAccess, broughtCode } from "./server/invites.ts";
import { makeApi, type ThisProcess } from "./server/api_backend.ts";
import { apiPath } from "./server/http_api.ts";
import { writeLog } from "./server/log.ts";
import { ReadState } from "./server/unread.ts";
import {
  annotate,
  inPostSpan,
  inSpan,
  observeChat,
} from "./server/telemetry.ts";

// ---------------------------------------------------------------------------
// Options (server/options.ts) and limits
// ---------------------------------------------------------------------------

// The library's API, importable from here as before: the options, the page.
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
export { type Page, pageHandler, renderPage } from "./server/page.ts";

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
/**
 * Invite codes an address may try, a second (`?invite=CODE` on the chat
 * URL, right or wrong): one every ten seconds once its burst is spent. A
 * code has 192 bits, so this only keeps a flood of guesses off the store.
 * @default {0.1}
 */
export const INVITE_GUESS_RATE = 0.1;
/** Invite codes an address may try at once. @default {10} */
export const INVITE_GUESS_BURST = 10;

// ---------------------------------------------------------------------------
// Room state: this process's connections and rooms, reset by startChat
// ---------------------------------------------------------------------------

/**
 * Where a connection is in its life. `opening`: upgraded (or moving to
 * another room with `/join`), holding a place in its room; `joining`: the
 * store is taking it in; `joined`: a member, in its room's delivery;
 * `gone`: out (see {@linkcode close}, the one way out).
 */
type Phase = "opening" | "joining" | "joined" | "gone";

/**
 * One connection: what delivery knows of it (its socket, protocol, nick,
 * room and claims: a `Member`), who it is to the store (its owner and keys:
 * a `Sender`, server/commands.ts) and its life here. Kept small: there may
 * be many thousands.
 */
interface Client extends Sender {
  phase: Phase;
  ip: string;
  /** Its messages' token bucket (`--rate`, `--burst`). */
  bucket: TokenBucket;
  /** Rate-limited messages in a row. */
  drops: number;
  /** When its last frame came (shutdown closes a sender between frames). */
  lastFrameAt: number;
  /** When its last typing notice went to the room. */
  typingAt: number;
  /** A join, `/nick`, `/who` or `/msg` is with the store: frames queue. */
  waitingOnStore: boolean;
  /** Frames that came while it waited on the store, handled in order after. */
  backlog: string[];
  /** Gives up on a socket that never opens (see `openTimeout`). */
  openTimer?: ReturnType<typeof setTimeout>;
  /** The page as this connection reached it (for invite links). */
  pageUrl: string;
  /** A valid login token's `sub` (what the proxy's app is told). */
  user?: string;
}

/** Every connection from upgrade until it is gone, keyed by socket. */
const clients = new Map<WebSocket, Client>();
/** This process's rooms, by name: their sockets here and their delivery. */
const rooms = new Map<string, LocalRoom>();
/** Upgraded sockets not yet closed: joined, about to join, or being closed. */
const openSockets = new Set<WebSocket>();
/**
 * Sockets given up on (never opened in `openTimeout`) that Deno still
 * holds: their slots are free, their file descriptors may not be.
 */
const stuckSockets = new Set<WebSocket>();
/** Sockets upgraded only to be told a refusal (`refuseByClose`), until closed. */
const refusedSockets = new Set<WebSocket>();
/** Open connections per peer address, for the per-IP limit. */
const connectionsByIp = new Map<string, number>();
/** Session leaves waiting out `sessionGrace`. */
const graceTimers = new Set<ReturnType<typeof setTimeout>>();

/** The running chat's options (the defaults until one starts). */
let settings: Settings = DEFAULT_OPTIONS;
/** Where the rooms are kept: memory, a `--data` file, `--redis` or `--redis-cluster`. */
let store: RoomStore;
/** Delivers events to `--webhook`'s endpoints (server/webhooks.ts), if any. */
let webhooks: Webhooks | undefined;
/** Stops reporting this start's figures to OpenTelemetry (server/telemetry.ts). */
let unobserve = () => {};
/** Asks the app (`--proxy-connect`, `--proxy-publish`: server/proxy.ts). */
let proxy: Proxy<Client> | undefined;
/** Checks login tokens; undefined when no auth key is set. */
let verifier: Verifier | undefined;
/** New connections' token buckets, per peer address (`--connect-rate`). */
let connectBuckets: TokenBuckets;
/** Invite codes tried, per peer address (`INVITE_GUESS_RATE`). */
let inviteGuesses: TokenBuckets;
/** The page server's port (invite links of clients that send no origin). */
let pagePort = 0;
/** The page's URL as the start line says it (the API's invite links). */
let publicPageUrl = "";
/** What `/metrics` counts, from this start on. */
let counters: Counters = newCounters();
/** Where every frame goes out, counted and batched (server/delivery.ts). */
let outbox: Outbox = newOutbox(
  counters,
  DEFAULT_OPTIONS.maxMessageChars,
  DEFAULT_OPTIONS.editWindow,
);
/** Read markers and unread counts of the people here (server/unread.ts). */
let readState: ReadState;
/** Numbers the connections (the store's owner names). */
let nextOwner = 0;
/**
 * Makes this start's connection owners its own: a store that keeps what
 * people did (reactions with `--data`) must not take a connection after a
 * restart for the one that had its number before.
 */
let ownerTag = "";
/** One chat per process: a new start waits for the last one's `stopped`. */
let phase: "running" | "stopping" | "stopped" = "stopped";

/** Members of a room on this process (`clients` holds every phase). */
function joinedCount(): number {
  let count = 0;
  for (const client of clients.values()) {
    if (client.phase === "joined") count++;
  }
  return count;
}

/** The local room, made (and subscribed to the store) on first use. */
function localRoom(name: string): LocalRoom {
  let room = rooms.get(name);
  if (!room) {
    const made = newLocalRoom(name, outbox);
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
  rooms.delete(room.name);
  outbox.batched.delete(room);
}

// ---------------------------------------------------------------------------
// Logging and metrics
// ---------------------------------------------------------------------------

/** One line per event worth knowing, never message content: server/log.ts. */
const log: Log = (level, event, fields) =>
  writeLog(settings, level, event, fields);

/** `/metrics`: this process's gauges, read now, and its counters. */
function metricsText(): string {
  return renderMetrics({
    connections: joinedCount(),
    rooms: store.roomCount(),
    storeUp: store.available?.() ?? true,
    socketsOpen: openSockets.size,
    socketsStuck: stuckSockets.size,
    decisions: store.decisions?.() ?? { commits: 0, again: 0 },
    replicaAcks: store.replicaAcks?.(),
    webhookQueue: webhooks?.depth() ?? 0,
    proxyWaiting: proxy?.depth(),
    counters,
  });
}

// ---------------------------------------------------------------------------
// The chat port: who is asking, the checks, the upgrade
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
  /** The page as this connection reached it (see `pageUrlOf`). */
  pageUrl: string;
}

/**
 * The chat port's front door: who the request says it is (a login token,
 * the op key: server/auth.ts) and whether it is banned from the room,
 * before the checks and the upgrade of {@linkcode handleChatRequest}.
 * Requests it need not judge (not a WebSocket, no room) go straight through.
 */
async function handleChatUpgrade(
  req: Request,
  info: Deno.ServeHandlerInfo,
): Promise<Response> {
  const url = parseUrl(req);
  const room = url && roomFromPath(url.pathname);
  annotate({ "chat.room": room || undefined });
  if (!room || !readHandshake(req.headers, []).websocket) {
    return handleChatRequest(req, info);
  }
  const ip = (info.remoteAddr as Deno.NetAddr).hostname;
  const claimed = await identify(
    offeredProtocols(req.headers),
    req.headers.get("authorization"),
    { verifier, required: settings.auth === "required", opKey: settings.opKey },
  );
  if ("problem" in claimed) {
    return refuse("unauthorized", { problem: claimed.problem, peer: ip });
  }
  const { identity, session } = claimed;
  const keys = personKeys({
    login: identity && ownerOf(identity),
    session,
    address: ip,
  }, settings.banByAddress);
  const code = url.searchParams.get("invite");
  // Every code brought spends one of the address's tries, right or wrong,
  // so that guessing is as slow for everyone and the answer tells nothing.
  if (code !== null && !inviteGuesses.take(ip)) {
    return refuse("invite_rate", { peer: ip, room });
  }
  const nick = checkNick(
    identity?.name ?? url.searchParams.get("nick") ?? undefined,
  );
  let admission: Admission;
  try {
    admission = await store.admit(room, {
      owner: identity ? ownerOf(identity) : session,
      keys,
      op: identity?.op === true || claimed.op,
      code: broughtCode(code),
      nick: isRefusal(nick) ? undefined : nick,
    });
  } catch {
    return refuse("unavailable");
  }
  // A wrong code is refused as no code is: `invite_only`.
  if ("refused" in admission) {
    // A browser cannot read a 403: told in a close frame if it asks.
    return offeredProtocols(req.headers).includes(REFUSALS_BY_CLOSE_PROTOCOL)
      ? handleChatRequest(req, info, { refused: admission.refused })
      : refuse(admission.refused, { peer: ip, room });
  }
  if (admission.admitted === "code") {
    log("info", "invite_used", { room, peer: ip });
  }
  return handleChatRequest(req, info, { identity, op: claimed.op });
}

/**
 * The page's address as a connection reached it, for the invite links it
 * is given: a browser's page is its origin; a client that sends none is
 * told the page port on the host it asked for.
 */
/** The refusal a new socket from `ip` gets past the connection limits. */
function overCapacity(ip: string): Response | undefined {
  if (openSockets.size + stuckSockets.size >= settings.maxConnections) {
    return refuse("max_connections", { peer: ip });
  }
  if ((connectionsByIp.get(ip) ?? 0) >= settings.maxConnectionsPerIp) {
    return refuse("max_connections_per_ip", { peer: ip });
  }
  return undefined;
}

function pageUrlOf(req: Request, url: URL): string {
  const origin = req.headers.get("origin");
  if (origin !== null && /^https?:\/\/[^/\s]+$/.test(origin)) {
    return origin + "/";
  }
  return `${settings.cert ? "https" : "http"}://${url.hostname}:${pagePort}/`;
}

/**
 * The chat port: guard clauses, each refusal with its own name, then
 * upgrade. `refused`: the door's refusal of this person, to be told in a
 * close frame once the other guards pass (see `refuseByClose`).
 */
async function handleChatRequest(
  req: Request,
  info: Deno.ServeHandlerInfo,
  admitted: Pick<ConnectRequest, "identity" | "op"> & {
    refused?: "banned" | "invite_only";
  } = {},
): Promise<Response> {
  const handshake = readHandshake(req.headers, [JSON_PROTOCOL]);
  if (!handshake.websocket) return refuse("not_websocket");
  const url = parseUrl(req);
  if (!url) return refuse("bad_request");
  const room = roomFromPath(url.pathname);
  if (!room) return refuse("bad_room");
  const origin = req.headers.get("origin");
  if (!originAllowed(origin, req.headers.get("host"), settings.allowOrigin)) {
    return refuse("origin", { origin: origin ?? "" });
  }
  if (phase !== "running") return refuse("shutting_down");
  if (store.available?.() === false) return refuse("unavailable");
  const ip = (info.remoteAddr as Deno.NetAddr).hostname;
  if (!connectBuckets.take(ip)) return refuse("connect_rate", { peer: ip });
  // The app's say, after the chat's own (server/proxy.ts): a full server
  // asks it nothing.
  const full = proxy?.asksConnects && overCapacity(ip);
  if (full) return full;
  const app = proxy?.asksConnects && !admitted.refused
    ? await proxy.connect({
      room,
      address: ip,
      nick: admitted.identity?.name ?? url.searchParams.get("nick") ??
        undefined,
      session: sessionOf(handshake.offered),
      user: admitted.identity?.sub,
      roles: admitted.identity?.op || admitted.op ? ["op"] : [],
      via: "connect",
    })
    : undefined;
  if (phase !== "running") return refuse("shutting_down");
  if (app && !app.allow) {
    return refuseByApp(req, handshake.protocol, app, { peer: ip, room });
  }
  // Again after the app's answer: others may have come in meanwhile.
  const overfull = overCapacity(ip);
  if (overfull) return overfull;
  if (admitted.refused) {
    return refuseByClose(req, handshake.protocol, admitted.refused, {
      peer: ip,
      room,
    });
  }
  // Held from here on, so concurrent upgrades cannot make more rooms than
  // maxRooms, and a lone member's replacement cannot end the room.
  if (!store.hold(room)) return refuse("max_rooms", { peer: ip, room });
  // Read before the upgrade, after which the request's headers are gone.
  const pageUrl = pageUrlOf(req, url);
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
  connectionsByIp.set(ip, (connectionsByIp.get(ip) ?? 0) + 1);
  annotate({ "chat.handshake.outcome": "accepted" });
  const since = url.searchParams.get("since");
  acceptSocket(upgraded.socket, {
    room,
    ip,
    json: handshake.protocol === JSON_PROTOCOL,
    // A verified person's nick is their token's (unless the app names one).
    nick: app?.nick ??
      (admitted.identity
        ? admitted.identity.name
        : url.searchParams.get("nick") ?? undefined),
    since: since !== null && /^\d+$/.test(since) ? Number(since) : undefined,
    epoch: url.searchParams.get("epoch") ?? undefined,
    token: url.searchParams.get("token") ?? undefined,
    session: sessionOf(handshake.offered),
    pageUrl,
    identity: admitted.identity,
    op: admitted.op || app?.op,
  });
  return upgraded.response;
}

/**
 * The app's refusal at the door (or, failing closed, its silence): the
 * status and reason it gave, or a close frame for a client that offers
 * {@linkcode REFUSALS_BY_CLOSE_PROTOCOL} and was refused by the app.
 */
function refuseByApp(
  req: Request,
  protocol: string | undefined,
  verdict: ConnectVerdict & { allow: false },
  fields: LogFields,
): Response {
  const byClose = verdict.label === "refused_by_app" &&
    offeredProtocols(req.headers).includes(REFUSALS_BY_CLOSE_PROTOCOL);
  if (byClose) {
    return refuseByClose(
      req,
      protocol,
      "refused_by_app",
      fields,
      verdict.reason,
    );
  }
  bump(counters.upgradesRefused, verdict.label);
  annotate({
    "chat.handshake.outcome": "refused",
    "chat.refusal": verdict.label,
  });
  log("warn", "upgrade_refused", { reason: verdict.label, ...fields });
  return refusalResponse(verdict.status, verdict.reason);
}

/**
 * Refuses a person at the door in a close frame (for clients that offer
 * {@linkcode REFUSALS_BY_CLOSE_PROTOCOL}: browsers see no 403): logged and
 * counted as the 403 is, then upgraded and closed with
 * {@linkcode CloseCode.Refused} as soon as it opens, the refusal's name as
 * the reason. The socket never joins and holds no slot; one that never
 * opens is left as `openTimeout` leaves any other.
 */
function refuseByClose(
  req: Request,
  protocol: string | undefined,
  reason: "banned" | "invite_only" | "refused_by_app",
  fields: LogFields,
  told: string = reason,
): Response {
  let upgraded: { socket: WebSocket; response: Response };
  try {
    upgraded = Deno.upgradeWebSocket(req, {
      idleTimeout: settings.idleTimeout,
    });
  } catch (error) {
    return refuse("bad_handshake", { ...fields, error: String(error) });
  }
  bump(counters.upgradesRefused, reason);
  annotate({ "chat.handshake.outcome": "refused", "chat.refusal": reason });
  log("warn", "upgrade_refused", { reason, ...fields });
  if (protocol !== undefined) {
    upgraded.response.headers.set("sec-websocket-protocol", protocol);
  }
  const { socket } = upgraded;
  refusedSockets.add(socket);
  const timer = setTimeout(() => {
    // Never opened (see `openTimeout`): Deno may keep it.
    refusedSockets.delete(socket);
    stuckSockets.add(socket);
  }, settings.openTimeout * 1000);
  socket.onopen = () => {
    clearTimeout(timer);
    socket.close(CloseCode.Refused, fitCloseReason(told));
  };
  socket.onclose = () => {
    clearTimeout(timer);
    refusedSockets.delete(socket);
    stuckSockets.delete(socket);
  };
  socket.onerror = () => {}; // followed by a close event
  return upgraded.response;
}

/** Refuses an upgrade: logs, counts and answers under the same name. */
function refuse(reason: RefusalReason, fields: LogFields = {}): Response {
  const { status, message } = REFUSALS[reason];
  bump(counters.upgradesRefused, reason);
  annotate({ "chat.handshake.outcome": "refused", "chat.refusal": reason });
  log(reason === "not_websocket" ? "info" : "warn", "upgrade_refused", {
    reason,
    ...fields,
  });
  return refusalResponse(status, message);
}

// ---------------------------------------------------------------------------
// A connection's life: in at acceptSocket, out at close
// ---------------------------------------------------------------------------

/**
 * Wires a freshly upgraded socket: its room is held in the store and its
 * address slot taken. This is the one place a client is added; it joins once
 * the socket opens ({@linkcode joinRoom}) and goes in {@linkcode close}, the
 * one place a client is removed.
 */
function acceptSocket(socket: WebSocket, request: ConnectRequest): void {
  socket.binaryType = "arraybuffer";
  const client: Client = {
    socket,
    phase: "opening",
    owner: request.identity
      ? ownerOf(request.identity)
      : request.session ?? `c.${ownerTag}.${++nextOwner}`,
    nick: "",
    room: localRoom(request.room),
    json: request.json,
    ip: request.ip,
    bucket: new TokenBucket(settings.rate, settings.burst),
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
    pageUrl: request.pageUrl,
    user: request.identity?.sub,
    keys: personKeys({
      login: request.identity && ownerOf(request.identity),
      session: request.session,
      address: request.ip,
    }, settings.banByAddress),
  };
  clients.set(socket, client);
  openSockets.add(socket);
  // Deno fires no event at all for a socket whose peer reset the connection
  // during the handshake: without this its slot would be held for good.
  client.openTimer = setTimeout(() => {
    log("warn", "open_timeout", { peer: request.ip, room: request.room });
    stuckSockets.add(socket); // Deno may keep it, until the process ends
    close(client, CloseCode.PolicyViolation, "handshake not completed");
  }, settings.openTimeout * 1000);
  socket.onopen = () => {
    // Given up on already (its slot and hold are gone): it may not join.
    if (client.phase === "gone") {
      return close(client, CloseCode.PolicyViolation, "too late");
    }
    clearTimeout(client.openTimer);
    joinRoom(client, request).catch((error) => failed(client, error));
  };
  socket.onmessage = (event) => receive(client, event.data);
  socket.onclose = (event) => {
    // Given up on before: out already, its slot given back then.
    if (stuckSockets.delete(socket)) return;
    // Deno reports a connection that ended without a close frame as code 0.
    close(client, event.code || CloseCode.Abnormal);
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
  if (phase !== "running") {
    // Opened while shutting down: told so, like everyone else.
    return close(client, CloseCode.GoingAway, SHUTDOWN_REASON);
  }
  const wanted = request.nick === undefined
    ? undefined
    : checkNick(request.nick);
  const badNick = isRefusal(wanted);
  client.phase = "joining";
  client.waitingOnStore = true;
  client.welcome = {
    events: [],
    badNick,
    admitted: () => drainBacklog(client),
  };
  client.room.joining.add(client);
  let joined: Joined;
  try {
    // A person's markers are read with their first connection's join.
    const marked = readState.attach(client);
    joined = await store.join(request.room, {
      owner: client.owner,
      nick: isRefusal(wanted) ? undefined : wanted,
      token: request.token,
      since: request.since,
      epoch: request.epoch,
      verified: client.verified,
      op: client.op,
      keys: client.keys,
      user: request.identity?.sub,
    });
    await marked;
  } catch (error) {
    giveBack(client);
    if (gone(client)) return;
    log("error", "join_failed", { peer: client.ip, error: String(error) });
    return close(client, CloseCode.TryAgainLater, "try again later");
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
  if (phase !== "running") {
    // Shutdown began while the store worked (Deno may run a signal handler
    // between two steps of an async function).
    return close(client, CloseCode.GoingAway, SHUTDOWN_REASON);
  }
  log("info", "connect", {
    room: request.room,
    nick: joined.nick,
    peer: request.ip,
  });
  client.welcome!.joined = joined;
  client.welcome!.marks = () =>
    readState.welcome(client, request.room, joined.epoch);
  admit(client);
}

/** Whether the client is out (read anew: it may change while a store call waits). */
function gone(client: Client): boolean {
  return client.phase === "gone";
}

/**
 * Ends a connection, whatever ends it: the peer's close, a refusal, `/quit`,
 * a kick or a takeover, a socket that never opened, a slow reader,
 * shutdown. The one way out, as {@linkcode acceptSocket} is the one way in.
 * With a `reason`, our close frame goes to the peer; without, the socket
 * has closed already (its close event), or shutdown leaves it to the
 * servers. Its slot goes back once its socket is done: closed, or given up
 * on (stuck).
 *
 * Safe to call twice (Deno can fire close twice for a socket we closed);
 * only the first call takes the client out. What it holds in the store
 * goes back by its phase: an `opening` client's place in the room, a
 * `joined` one's membership; a `joining` one's is settled by
 * {@linkcode joinRoom} when the store answers.
 */
function close(client: Client, code: number, reason?: string): void {
  if (reason !== undefined) closeSocket(client.socket, code, reason);
  if (reason === undefined || stuckSockets.has(client.socket)) freeSlot(client);
  const was = client.phase;
  if (was === "gone") return;
  client.phase = "gone";
  clearTimeout(client.openTimer);
  clients.delete(client.socket);
  readState.detach(client);
  if (was === "opening") return giveBack(client);
  bump(counters.closes, closeLabel(code));
  if (was === "joining") return;
  log("info", "leave", {
    room: client.room.name,
    nick: client.nick,
    peer: client.ip,
    code,
  });
  leaveRoom(client, client.session && code !== CloseCode.Normal);
}

/**
 * Closes a person's connections in a room: the store's `onEvict` (their
 * nick taken over by a new connection) and `onExpel` (kicked or banned).
 */
function closeOwner(
  room: string,
  owner: string,
  code: number,
  reason: string,
): void {
  for (const client of [...clients.values()]) {
    if (
      client.phase === "joined" && client.owner === owner &&
      client.room.name === room
    ) {
      close(client, code, reason);
    }
  }
}

/**
 * Gives back a socket's slot, in all and of its address, once: when it has
 * closed, or has been given up on (see `openTimeout`).
 */
function freeSlot(client: Client): void {
  if (!openSockets.delete(client.socket)) return;
  const count = (connectionsByIp.get(client.ip) ?? 1) - 1;
  if (count <= 0) connectionsByIp.delete(client.ip);
  else connectionsByIp.set(client.ip, count);
}

/**
 * A client that never joined its room gives back its place there: the
 * store's hold, and its share of the local room.
 */
function giveBack(client: Client): void {
  client.room.joining.delete(client);
  store.release(client.room.name);
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
  const room = client.room;
  room.textSockets.delete(client.socket);
  room.jsonSockets.delete(client.socket);
  room.joining.delete(client);
  leaveLocalRoom(room);
  const storeLeave = () =>
    store.leave(room.name, client.owner, phase === "running")
      .catch((error) => log("error", "store_failed", { error: String(error) }));
  if (!grace || phase !== "running") return void storeLeave();
  // The room is held meanwhile, so it keeps its history and epoch.
  const timer = setTimeout(() => {
    graceTimers.delete(timer);
    storeLeave();
  }, settings.sessionGrace * 1000);
  graceTimers.add(timer);
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
  close(client, CloseCode.InternalError, "internal error");
}

/**
 * Drops clients that stopped reading. `bufferedAmount` also counts what this
 * turn sent and not yet wrote, so it is judged on a timer, not after a send.
 */
function sweepSlowConsumers(): void {
  for (const client of clients.values()) {
    if (client.phase !== "joined") continue;
    const queued = client.socket.bufferedAmount;
    if (queued > settings.maxBufferedBytes) {
      counters.slowConsumerDrops++;
      log("warn", "slow_consumer", {
        nick: client.nick,
        peer: client.ip,
        queuedBytes: queued,
      });
      close(client, CloseCode.TryAgainLater, "not reading fast enough");
    }
  }
}

// ---------------------------------------------------------------------------
// Frames and the command table
// ---------------------------------------------------------------------------

/** A frame from a client: limits first, then (in order) its command. */
function receive(client: Client, data: string | ArrayBuffer): void {
  if (client.phase === "gone") return; // Deno may still hand over a frame
  client.lastFrameAt = Date.now();
  if (phase !== "running") {
    // Between two of its frames is when a sender's close is least likely to
    // cross a frame still on its way (see `stop`).
    return close(client, CloseCode.GoingAway, SHUTDOWN_REASON);
  }
  const bytes = typeof data === "string"
    ? frameBytes(data, settings.maxFrameBytes)
    : data.byteLength;
  if (bytes > settings.maxFrameBytes) {
    log("warn", "frame_too_big", { nick: client.nick, peer: client.ip, bytes });
    return close(client, CloseCode.MessageTooBig, "frame too big");
  }
  if (typeof data !== "string") {
    log("warn", "binary_frame", { nick: client.nick, peer: client.ip });
    return close(client, CloseCode.UnsupportedData, "text frames only");
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
      return close(client, CloseCode.PolicyViolation, "too many messages");
    }
    client.backlog.push(data);
    return;
  }
  counters.messagesReceived++;
  if (!client.bucket.take()) {
    client.drops++;
    if (client.drops > settings.maxConsecutiveDrops) {
      log("warn", "flood_closed", { nick: client.nick, peer: client.ip });
      return close(client, CloseCode.PolicyViolation, "too many messages");
    }
    if (client.drops === 1) {
      log("warn", "rate_limited", { nick: client.nick, peer: client.ip });
    }
    return sendError(client, "rate_limited", "slow down: message dropped");
  }
  client.drops = 0;
  const command = client.json ? parseJsonCommand(data) : parseCommand(data);
  try {
    // With `--proxy-publish`, the app is asked first (in order).
    if (proxy) proxy.take(client, command);
    else execute(client, command);
  } catch (error) {
    failed(client, error);
  }
}

const TYPING_FRAME = /^\s*\{\s*"type"\s*:\s*"typing"\s*\}\s*$/;

/** The command table: what each command does, by its `type`. */
function execute(client: Client, command: Command): void {
  const room = client.room.name;
  switch (command.type) {
    case "message":
    case "action":
    case "dm": {
      const text = checkMessage(command.text, settings.maxMessageChars);
      if (isRefusal(text)) return sendError(client, text.code, text.message);
      if (text.length === 0) return;
      if (command.type === "dm") {
        return whileStoreWorks(
          client,
          () =>
            inPostSpan(
              room,
              "dm",
              () => sendDirect(store, client, command.to, text),
            ),
        );
      }
      // Not whileStoreWorks: a post does not hold up the sender's next frames.
      const kind = command.replyTo === undefined ? command.type : "reply";
      return void inPostSpan(room, kind, () =>
        post(store, client, {
          type: command.type,
          from: client.nick,
          text,
        }, command.replyTo)).catch((error) => failed(client, error));
    }
    case "edit":
      return void inPostSpan(
        room,
        "edit",
        () =>
          editMessage(store, client, command, {
            maxChars: settings.maxMessageChars,
            windowMs: settings.editWindow * 1000,
          }),
      ).catch((error) => failed(client, error));
    case "react":
      return void react(store, client, command)
        .catch((error) => failed(client, error));
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
      const nick = checkNick(command.nick);
      if (isRefusal(nick)) return sendError(client, nick.code, nick.message);
      if (nick === client.nick) return;
      return whileStoreWorks(client, () => rename(store, client, nick));
    }
    case "who":
      return whileStoreWorks(client, () => who(store, client));
    case "join":
      return moveTo(client, command.room);
    case "quit":
      return close(client, CloseCode.Normal, "bye");
    case "help":
      sendNotice(client, HELP_TEXT);
      if (client.op) sendNotice(client, MODERATION_HELP);
      return;
    case "history":
      // Not whileStoreWorks: reads change nothing, so a flood of them meets
      // the rate limit (each took a token in `receive`), not the backlog's.
      return void readHistory(store, client, command.before, command.limit)
        .catch((error) => failed(client, error));
    case "search":
      // As a history read, but SEARCH_COST tokens: one taken in `receive`.
      if (!client.bucket.take(Date.now(), SEARCH_COST - 1)) {
        return sendError(
          client,
          "rate_limited",
          `slow down: a search costs ${SEARCH_COST} messages' worth`,
        );
      }
      return void search(store, client, command)
        .catch((error) => failed(client, error));
    case "read":
      // Not whileStoreWorks: a marker is not the next frame's business.
      return void readState.mark(client, command.id)
        .catch((error) => failed(client, error));
    case "rooms":
      return readState.rooms(client);
    case "kick":
    case "ban":
    case "unban":
    case "mute":
    case "unmute":
    case "topic":
    case "slow":
    case "delete":
      return whileStoreWorks(
        client,
        () => moderateFor(client, command, moderateAs),
      );
    case "private":
    case "invite":
    case "uninvite":
    case "invites":
      return whileStoreWorks(
        client,
        async () =>
          answerAccess(
            client,
            await accessAs(room, {
              nick: client.nick,
              op: client.op,
              pageUrl: client.pageUrl,
            }, command),
          ),
      );
    case "invalid":
      return sendError(client, command.code, command.message);
  }
}

/** Runs a command that waits on the store; the client's next frames queue. */
function whileStoreWorks(client: Client, work: () => Promise<void>): void {
  client.waitingOnStore = true;
  work().then(() => drainBacklog(client), (error) => failed(client, error));
}

/** The store has answered: handle the frames that queued meanwhile, in order. */
function drainBacklog(client: Client): void {
  client.waitingOnStore = false;
  proxy?.pump(client); // frames that waited for the app come first
  while (!client.waitingOnStore && client.backlog.length > 0) {
    if (client.phase !== "joined") return;
    receive(client, client.backlog.shift()!);
  }
}

/** `/join ROOM`: this connection leaves its room (announced) for another. */
function moveTo(client: Client, path: string): void {
  const room = roomName(path);
  if (!room) {
    return sendError(client, "bad_room", REFUSALS.bad_room.message);
  }
  if (room === client.room.name) return;
  // At the new room's door as at the handshake's: a ban, a private room.
  // Its next frames wait meanwhile (for the new room, if it goes).
  client.waitingOnStore = true;
  const stay = (refusal?: "banned" | "invite_only" | "max_rooms") => {
    if (refusal) sendError(client, refusal, REFUSALS[refusal].message);
    drainBacklog(client);
  };
  store.admit(room, { owner: client.owner, keys: client.keys, op: client.op })
    .then(async (admission) => {
      if (client.phase !== "joined") return;
      if ("refused" in admission) return stay(admission.refused);
      const app = await proxy?.connect({
        room,
        address: client.ip,
        nick: client.nick,
        user: client.user,
        roles: client.op ? ["op"] : [],
        via: "join",
      });
      if (client.phase !== "joined") return;
      if (app && !app.allow) {
        const code = app.label === "proxy_unavailable"
          ? "unavailable"
          : app.label;
        sendError(client, code, app.reason);
        return drainBacklog(client);
      }
      if (!store.hold(room)) return stay("max_rooms");
      const nick = client.nick;
      leaveRoom(client, false);
      client.room = localRoom(room);
      client.phase = "opening"; // holds its place in the new room
      joinRoom(client, {
        room,
        ip: client.ip,
        json: client.json,
        nick,
        pageUrl: client.pageUrl,
      }).catch((error) => failed(client, error));
    }, (error) => {
      failed(client, error);
      if (client.phase === "joined") stay();
    });
}

/**
 * Carries out a private-room command for a connection (or the API's `api`,
 * through `ThisProcess`): logged and counted as moderation is.
 */
const accessAs: ThisProcess["access"] = async (room, actor, command) => {
  const outcome = await access(store, room, actor, command);
  if (!("error" in outcome) && outcome.log) {
    log("info", "moderation", outcome.log);
    bump(counters.moderation, command.type);
  }
  return outcome;
};

/**
 * Carries out a moderation command for a moderator (a person, or the API's
 * `api`); what is done is logged and counted the same way for both.
 */
const moderateAs: ThisProcess["moderate"] = async (room, actor, command) => {
  const outcome = await moderate(store, room, actor, command);
  if (!("error" in outcome)) {
    log("info", "moderation", outcome.log);
    bump(counters.moderation, command.type);
  }
  return outcome;
};

// ---------------------------------------------------------------------------
// Start-up and shutdown
// ---------------------------------------------------------------------------

type Server = Deno.HttpServer<Deno.NetAddr>;

/**
 * Starts the chat server, then the page (which names the chat's port), and
 * the API (server/http_api.ts: paths under `/api/`) on the page's port, or
 * on its own when `--api-port` is given.
 */
async function listenAll(
  api: ReturnType<typeof makeApi>,
): Promise<{ chatServer: Server; pageServer: Server; apiServer?: Server }> {
  const { hostname, cert, key } = settings;
  const listen = {
    onListen: () => {}, // the start log line says where instead
    // One log line, never a stack trace with a client's text in it.
    onError: (error: unknown) => {
      log("error", "request_failed", { error: String(error) });
      return new Response("Internal error\n", { status: 500 });
    },
    hostname,
    ...(settings.reusePort ? { reusePort: true } : {}),
    ...(cert && key ? { cert, key } : {}),
  };
  // Where each server listens, so a failure names its flag (`listening`).
  const at = (name: "port" | "wsPort" | "apiPort", host: string) => ({
    flag: flagOf(name),
    port: settings[name] ?? 0,
    hostname: host,
    cert,
    key,
  });
  const started: Server[] = [];
  try {
    const chatServer = listening(
      at("wsPort", hostname),
      (port) =>
        Deno.serve(
          { ...listen, port },
          (req, info) =>
            inSpan("chat.handshake", {}, () => handleChatUpgrade(req, info)),
        ),
    );
    started.push(chatServer);
    const page = await renderPage(chatServer.addr.port);
    const pages = pageHandler(page, {
      health: () => ({
        up: store.available?.() ?? true,
        connections: joinedCount(),
        rooms: store.roomCount(),
        redis: Boolean(settings.redis || settings.redisCluster),
      }),
      metrics: settings.metrics ? metricsText : undefined,
      log,
    });
    const own = api && settings.apiPort !== undefined;
    // The API under /api/ on the page port, unless it has a port of its own.
    const pageServer = listening(
      at("port", hostname),
      (port) =>
        Deno.serve(
          { ...listen, port },
          api && !own ? (req) => apiPath(req) ? api(req) : pages(req) : pages,
        ),
    );
    started.push(pageServer);
    if (!own) return { chatServer, pageServer };
    // Its own port, so an operator can bind it to a private address.
    const apiHostname = settings.apiHostname || hostname;
    const apiServer = listening(
      at("apiPort", apiHostname),
      (port) =>
        Deno.serve(
          { ...listen, hostname: apiHostname, port },
          (req) =>
            apiPath(req)
              ? api(req)
              : new Response("Not found\n", { status: Status.NotFound }),
        ),
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
  if (phase !== "stopped") {
    throw new Error("a chat server is already running in this process");
  }
  if (Boolean(options.cert) !== Boolean(options.key)) {
    throw new Error("cert and key go together");
  }
  if (options.data && options.redis) throw new Error(DATA_WITH_REDIS);
  const { store: given, ...rest } = options;
  const chosen = { ...DEFAULT_OPTIONS, ...rest } satisfies Settings;
  if (chosen.webhook.length > 0 && !chosen.webhookSecret) {
    throw new Error(WEBHOOK_WITHOUT_SECRET);
  }
  const twice = webhookTwice(chosen.webhook);
  if (twice) throw new Error(twice);
  const checker = await makeVerifier({
    secret: chosen.authSecret,
    publicKey: chosen.authPublicKey,
    audience: chosen.authAudience,
    issuer: chosen.authIssuer,
  });
  // Opened before the store, which writes to it with every event.
  const pending = given ? undefined : await openOutbox(chosen, log);
  const made = given ?? await openStore(chosen, {
    // A stale connection whose nick was taken over.
    onEvict: (room, owner) =>
      closeOwner(room, owner, CloseCode.Normal, "replaced by a new connection"),
    // A kicked or banned person's connections here.
    onExpel: (room, owner, reason) =>
      closeOwner(room, owner, CloseCode.Kicked, fitCloseReason(reason)),
    // A person's read marker moved (here or on another process).
    onRead: (person, marker) => readState.onRead(person, marker),
    log,
    outbox: pending,
  }).catch(async (error) => {
    await pending?.close();
    throw error;
  });
  // The room state, new for this start (a stopped chat's is let go).
  settings = chosen;
  store = made;
  verifier = checker;
  connectBuckets = new TokenBuckets(chosen.connectRate, chosen.connectBurst);
  inviteGuesses = new TokenBuckets(INVITE_GUESS_RATE, INVITE_GUESS_BURST);
  clients.clear();
  rooms.clear();
  openSockets.clear();
  stuckSockets.clear();
  refusedSockets.clear();
  connectionsByIp.clear();
  graceTimers.clear();
  counters = newCounters();
  outbox = newOutbox(counters, settings.maxMessageChars, settings.editWindow);
  proxy = Proxy.of<Client>(settings, counters, log, (client, command) => {
    try {
      execute(client, command);
    } catch (error) {
      failed(client, error);
    }
  });
  webhooks = pending && new Webhooks({
    urls: settings.webhook,
    secret: settings.webhookSecret,
    retryMs: settings.webhookRetryHours * 60 * 60 * 1000,
    batch: settings.webhookBatch,
    counters,
    log,
  }, pending);
  readState = new ReadState(store, log, counters);
  nextOwner = 0;
  ownerTag = crypto.randomUUID().slice(0, 13);
  phase = "running";
  const startedAt = Date.now();
  const api = makeApi(settings, store, {
    editWindowMs: settings.editWindow * 1000,
    info: () => ({
      version: VERSION,
      uptimeSeconds: Math.floor((Date.now() - startedAt) / 1000),
      connections: joinedCount(),
      rooms: store.roomCount(),
      store: storeName(settings, store),
      storeUp: store.available?.() ?? true,
    }),
    moderate: moderateAs,
    access: accessAs,
    pageUrl: () => publicPageUrl,
    log,
    count: (labels) => bump(counters.apiRequests, labels),
  }, VERSION);
  const { chatServer, pageServer, apiServer } = await listenAll(api)
    .catch(async (error) => {
      phase = "stopped"; // a port in use: allow another try
      proxy?.close();
      await webhooks?.close();
      if (!given) await made.close?.(); // a Redis connection would linger
      throw error;
    });
  webhooks?.start();
  unobserve = observeChat(() => ({
    connections: joinedCount(),
    rooms: store.roomCount(),
    messagesReceived: counters.messagesReceived,
    said: counters.said,
    webhooks: counters.webhooks,
  }));
  const sweep = setInterval(sweepSlowConsumers, SLOW_CONSUMER_SWEEP_MS);
  const forget = setInterval(() => {
    connectBuckets.forgetFull();
    inviteGuesses.forgetFull();
  }, FORGET_BUCKETS_MS);
  const port = pageServer.addr.port;
  pagePort = port;
  const wsPort = chatServer.addr.port;
  const apiPort = apiServer?.addr.port;
  const ports = { port, wsPort, apiPort, api: api !== undefined };
  const { pageUrl, chatUrl, apiUrl } = urlsOf(settings, ports);
  publicPageUrl = pageUrl;
  log("info", "start", {
    page: pageUrl,
    chat: chatUrl,
    api: apiUrl, // where the API answers, when it is on (never the key)
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
        [chatServer, pageServer, ...(apiServer ? [apiServer] : [])],
        [sweep, forget],
      ),
  };
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
  servers: Server[],
  timers: ReturnType<typeof setInterval>[],
): Promise<void> {
  phase = "stopping";
  // Handshakes waiting for the app are answered now (shutting_down), not
  // at its timeout: the servers' shutdown waits for them.
  proxy?.close();
  for (const timer of timers) clearInterval(timer);
  if (outbox.flush) clearImmediate(outbox.flush);
  flushBatches(outbox);
  for (const timer of graceTimers) clearTimeout(timer);
  graceTimers.clear();
  const open = [...clients.values()];
  for (const client of open) clearTimeout(client.openTimer);
  log("info", "shutdown", { connections: joinedCount() });
  const closed = open.map((client) =>
    new Promise<void>((resolve) => {
      if (client.socket.readyState === WebSocket.CLOSED) return resolve();
      client.socket.addEventListener("close", () => resolve());
    })
  );
  // Sockets still opening or joining are closed by joinRoom (a socket cannot
  // be closed before it opens), and awaited with the rest.
  const closeJoined = (senders: boolean) => {
    const now = Date.now();
    for (const client of open) {
      if (client.phase !== "joined") continue;
      const sending = now - client.lastFrameAt < RECENT_SENDER_MS;
      if (senders || !sending) {
        close(client, CloseCode.GoingAway, SHUTDOWN_REASON);
      }
    }
  };
  closeJoined(false);
  const lastCall = setTimeout(() => closeJoined(true), SHUTDOWN_SENDER_WAIT_MS);
  // Deno's server.shutdown() has not always closed upgraded sockets
  // (denoland/deno#22387), so they are closed above and awaited here.
  await atMostGrace(Promise.all(closed), SHUTDOWN_SENDER_WAIT_MS);
  clearTimeout(lastCall);
  // Any still here never joined: out, their sockets left to the servers.
  for (const client of [...clients.values()]) {
    close(client, CloseCode.GoingAway);
  }
  // Deno's server shutdown waits for sockets it holds that never opened
  // (see openTimeout), stuck or not yet timed out; it is not awaited past
  // the grace period for them.
  const unopened = open.some((client) =>
    client.socket.readyState === WebSocket.CONNECTING
  );
  const serversDown = Promise.all(servers.map((server) => server.shutdown()));
  if (stuckSockets.size === 0 && refusedSockets.size === 0 && !unopened) {
    await serversDown;
  } else await atMostGrace(serversDown);
  // Before the store: what it commits from now on waits in the outbox.
  await webhooks?.close();
  readState.close();
  await store.close?.();
  unobserve();
  phase = "stopped";
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
