/**
 * Delivery: every frame this process sends to its sockets. The store's
 * `subscribe` hands a room's events to {@linkcode deliver}, which renders
 * each once per protocol for the room's sockets here and batches the JSON
 * ones per turn (one frame per socket per turn); {@linkcode admit} lets a
 * joining member in once delivery has caught up with its welcome; and the
 * replies to one client (`sendError`, `sendNotice`, `sendToOne`) go out here
 * too, so every frame is counted in one place; {@linkcode closeSocket} sends
 * a close frame. Who may see what is decided here once, by
 * {@linkcode visibleTo}.
 *
 * Its state is a room's ({@linkcode LocalRoom}) and the chat's
 * ({@linkcode Outbox}), both made by main.ts and handed in with each call.
 *
 * @module
 */

import {
  type ErrorCode,
  type LiveEvent,
  NICK_ERRORS,
  type Reacted,
  type ReactEvent,
  renderReaction,
  renderText,
  type RoomEvent,
  systemText,
  type TypingEvent,
  type Welcome,
} from "../wire/protocol.ts";
import {
  type Joined,
  type KeptReactions,
  reactionsFor,
} from "../stores/rooms.ts";
import { bump, type Counters } from "./metrics.ts";

/**
 * A connection as delivery knows it: its socket and protocol, who it is,
 * the room it is in, and the nicks its person held there (see
 * {@linkcode visibleTo}). main.ts's `Client` is one, and more.
 */
export interface Member {
  socket: WebSocket;
  /** It speaks `chat.v1.json` (else plain text). */
  json: boolean;
  /** Empty until the join completes. */
  nick: string;
  /** The store's name for its person (a session, a login) or connection. */
  owner: string;
  room: LocalRoom;
  /** It came with a session: its owner is the person, not the socket. */
  session: boolean;
  /** Signed in by a login token: its nick is its token's name. */
  verified: boolean;
  /** A moderator (token role `op`, or `--op-key`). */
  op: boolean;
  /** Id of the event that gave its person its nick (see `visibleTo`). */
  claimedId: number;
  /** Its person's nicks before this one in the room (see `visibleTo`). */
  earlierClaims: Claim[];
  /** While it joins: its welcome and what came meanwhile (see `admit`). */
  welcome?: PendingWelcome;
}

/** A nick a person held: from the event that gave it to the one that ended it. */
export interface Claim {
  nick: string;
  from: number;
  until: number;
}

/** A joining client's welcome, and the room's events that came meanwhile. */
export interface PendingWelcome {
  /** Events and reaction notices delivered since its join began, in order. */
  events: (RoomEvent | ReactEvent)[];
  /** The store's answer, once it has come. */
  joined?: Joined;
  /** The nick it asked for was not a valid one. */
  badNick: boolean;
  /** Called once it is let in: it may go on with what it sent meanwhile. */
  admitted: () => void;
  /**
   * A person's read marker here and their rooms, as they are when the
   * welcome goes (server/unread.ts); absent for a connection that is no
   * person.
   */
  marks?: () => Pick<Welcome, "read" | "rooms"> | undefined;
}

/**
 * Where a chat's frames go: the counters `/metrics` shows, what the welcome
 * tells, and the rooms whose JSON batch waits for the end of the turn.
 */
export interface Outbox {
  counters: Counters;
  /** The longest message, as the welcome tells JSON clients. */
  maxMessageChars: number;
  /** `--edit-window`, for the welcome (0: no edits). */
  editWindowSeconds: number;
  /** Rooms whose JSON batch waits for the end of this turn. */
  batched: Set<LocalRoom>;
  /** The end-of-turn flush, once one is due. */
  flush?: ReturnType<typeof setImmediate>;
}

/** An outbox for a new start. */
export function newOutbox(
  counters: Counters,
  maxMessageChars: number,
  editWindowSeconds: number,
): Outbox {
  return { counters, maxMessageChars, editWindowSeconds, batched: new Set() };
}

/**
 * This process's sockets in one room, and the delivery of the room's
 * events to them (the store's `subscribe` calls {@linkcode deliver}).
 * main.ts makes one when a connection first comes for the room, and drops
 * it after the last.
 */
export interface LocalRoom {
  name: string;
  outbox: Outbox;
  /**
   * Members by protocol, so each delivery loop is a plain loop over
   * sockets; the member itself where one is wanted (a rename, a DM).
   */
  textSockets: Map<WebSocket, Member>;
  jsonSockets: Map<WebSocket, Member>;
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
  /** Members joining: they get the room's events after their welcome. */
  joining: Set<Member>;
  /** Connections here, joined or on the way; at 0 the local room ends. */
  connections: number;
  unsubscribe: () => void;
}

/** A room with nobody in it yet; its `unsubscribe` is set by its maker. */
export function newLocalRoom(name: string, outbox: Outbox): LocalRoom {
  return {
    name,
    outbox,
    textSockets: new Map(),
    jsonSockets: new Map(),
    pendingJson: [],
    admittedMidTurn: new Map(),
    deliveredId: 0,
    joining: new Set(),
    connections: 0,
    unsubscribe: () => {},
  };
}

/**
 * Sends one event to this process's members of the room. Each protocol
 * renders it once; JSON clients get the turn's events as one frame.
 */
export function deliver(room: LocalRoom, event: LiveEvent): void {
  if (event.type === "typing") return deliverTyping(room, event);
  if (event.type === "react") return deliverReaction(room, event);
  const { outbox } = room;
  if (event.id <= room.deliveredId) return; // known here already
  room.deliveredId = event.id;
  if (event.type === "nick") renameLocally(room, event);
  if (event.type === "dm") deliverPrivately(room, event);
  else if (room.textSockets.size > 0) {
    const line = renderText(event);
    for (const socket of room.textSockets.keys()) sendFrame(socket, line);
    outbox.counters.framesSent += room.textSockets.size;
  }
  if (room.jsonSockets.size > 0 && event.type !== "dm") {
    room.pendingJson.push(JSON.stringify(event));
    outbox.batched.add(room);
    outbox.flush ??= setImmediate(() => flushBatches(outbox));
  }
  if (room.joining.size === 0) return;
  for (const client of room.joining) {
    client.welcome!.events.push(event);
    admit(client);
  }
}

/**
 * A reaction notice: to everyone here as an event is (batched for JSON),
 * and to members joining, after their welcome (it may be in the welcome
 * already: a notice says what is now, so a second time changes nothing).
 */
function deliverReaction(room: LocalRoom, event: ReactEvent): void {
  const { outbox } = room;
  if (room.textSockets.size > 0) {
    const line = renderReaction(event);
    for (const socket of room.textSockets.keys()) sendFrame(socket, line);
    outbox.counters.framesSent += room.textSockets.size;
  }
  if (room.jsonSockets.size > 0) {
    room.pendingJson.push(JSON.stringify(event));
    outbox.batched.add(room);
    outbox.flush ??= setImmediate(() => flushBatches(outbox));
  }
  for (const client of room.joining) client.welcome!.events.push(event);
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

/** The room's members here, text ones first. */
function* clientsIn(room: LocalRoom): Generator<Member> {
  yield* room.textSockets.values();
  yield* room.jsonSockets.values();
}

/**
 * Who may see an event: a direct message only its two parties, as the
 * people who held those nicks then: someone who takes `bob` after bob left
 * does not get bob's messages, and ada, renamed since, still has hers. (A
 * session keeps its claims across reconnects; a plain connection's claim
 * starts when it joins.)
 */
export function visibleTo(event: RoomEvent, client: Member): boolean {
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
export function claimsBefore(
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
export function admit(client: Member): void {
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
  if (client.json) sendWelcome(client, joined, room.name, welcome.marks?.());
  else {
    sendNotice(
      client,
      `you are ${client.nick} in ${room.name}; here: ${
        joined.users.join(", ")
      }`,
    );
    if (joined.topic) sendNotice(client, `topic: ${joined.topic}`);
    if (joined.private) sendNotice(client, "this room is invite-only.");
  }
  if (welcome.badNick) sendError(client, "bad_nick", NICK_ERRORS.bad_nick);
  else if (joined.nickTaken) {
    sendError(client, "nick_taken", NICK_ERRORS.nick_taken);
  }
  const missed = welcome.events.filter((event) =>
    event.type === "react" ||
    (event.id > joined.lastId && visibleTo(event, client))
  );
  if (missed.length > 0) {
    const frames = client.json
      ? [JSON.stringify(missed.length === 1 ? missed[0] : missed)]
      : missed.map((event) =>
        event.type === "react" ? renderReaction(event) : renderText(event)
      );
    for (const frame of frames) sendToOne(client, frame);
  }
  (client.json ? room.jsonSockets : room.textSockets).set(
    client.socket,
    client,
  );
  welcome.admitted();
}

/** Sends each room's pending JSON events: one frame per recipient per turn. */
export function flushBatches(outbox: Outbox): void {
  outbox.flush = undefined;
  for (const room of outbox.batched) flushRoom(room);
  outbox.batched.clear();
}

/**
 * Sends what the client's room has batched this turn, so that a frame to
 * the client alone (a read notice) comes after the events before it.
 */
export function flushRoomOf(client: Member): void {
  flushRoom(client.room);
}

function flushRoom(room: LocalRoom): void {
  const pending = room.pendingJson;
  if (pending.length === 0) return;
  const frame = batchFrame(pending);
  room.pendingJson = [];
  const late = room.admittedMidTurn;
  if (late.size === 0) {
    for (const socket of room.jsonSockets.keys()) sendFrame(socket, frame);
    room.outbox.counters.framesSent += room.jsonSockets.size;
    return;
  }
  let sent = 0;
  for (const socket of room.jsonSockets.keys()) {
    const had = late.get(socket) ?? 0;
    if (had >= pending.length) continue;
    sendFrame(socket, had === 0 ? frame : batchFrame(pending.slice(had)));
    sent++;
  }
  late.clear();
  room.outbox.counters.framesSent += sent;
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

/** A close that never throws (the socket may be closing already). */
export function closeSocket(
  socket: WebSocket,
  code: number,
  reason: string,
): void {
  try {
    socket.close(code, reason);
  } catch {
    // Already closing.
  }
}

/** A frame for one client only (a welcome, an error, a reply). */
export function sendToOne(client: Member, frame: string): void {
  sendFrame(client.socket, frame);
  client.room.outbox.counters.framesSent++;
}

/** Tells one client about a refusal, in its protocol. */
export function sendError(
  client: Member,
  code: ErrorCode,
  message: string,
  retryAfter?: number,
): void {
  bump(client.room.outbox.counters.refused, code);
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
export function sendNotice(client: Member, text: string): void {
  sendToOne(client, systemText(text));
}

/**
 * Events as `reader` (an owner) is sent them: each message with reactions
 * carries them, counted, with `me` for the reader.
 */
export function withReactions(
  events: RoomEvent[],
  reactions: KeptReactions | undefined,
  reader?: string,
): RoomEvent[] {
  if (!reactions || reactions.size === 0) return events;
  return events.map((event) => {
    const kept = reactions.get(event.id);
    return kept && kept.length > 0
      ? { ...event, reactions: reactionsFor(kept, reader) }
      : event;
  });
}

/** The first frame a JSON client gets (with a person's `marks`). */
function sendWelcome(
  client: Member,
  joined: Joined,
  room: string,
  marks?: Pick<Welcome, "read" | "rooms">,
): void {
  const history = withReactions(
    joined.history.filter((event) => visibleTo(event, client)),
    joined.reactions,
    client.owner,
  );
  // A resume's history is what it missed: what reactions are now on the
  // messages it had, it learns apart.
  const shown = new Set(history.map((event) => event.id));
  const reacted: Reacted[] = [];
  for (const [id, kept] of joined.reactions) {
    if (!shown.has(id) && id <= joined.lastId) {
      reacted.push({ id, reactions: reactionsFor(kept, client.owner) });
    }
  }
  const welcome: Welcome = {
    type: "welcome",
    you: client.nick,
    room,
    epoch: joined.epoch,
    users: joined.users,
    history,
    lastId: joined.lastId,
    gap: joined.gap,
    ...(reacted.length > 0 ? { reacted } : {}),
    maxMessageChars: client.room.outbox.maxMessageChars,
    editWindowSeconds: client.room.outbox.editWindowSeconds,
    token: joined.token,
    session: client.session,
    verified: client.verified,
    op: client.op,
    verifiedUsers: joined.verified,
    moderators: joined.moderators,
    topic: joined.topic,
    slowSeconds: joined.slowSeconds,
    private: joined.private,
    ...marks,
  };
  sendToOne(client, JSON.stringify(welcome));
}
