/**
 * The store contract of deno-chat, written once: what a room store does
 * ({@linkcode RoomStore}, its requests and answers), the room rules every
 * store follows (nick keys by confusable skeleton, random nicks, what an
 * event costs, reconnect tokens), and {@linkcode MemoryStore}, the default
 * store and the reference implementation that the contract tests
 * (store_contract_test.ts) hold every other store to, with
 * {@linkcode RoomArchive}, what it writes through to when rooms must outlive
 * the process (sqlite_store.ts), and {@linkcode pageBack}, how every store
 * reads history back a page at a time.
 *
 * A leaf: it imports only the wire contract (protocol.ts). main.ts uses a
 * store; redis_store.ts implements one; neither imports the other.
 *
 * @module
 */

import { createHmac, randomBytes, timingSafeEqual } from "node:crypto";
import unhomoglyph from "unhomoglyph";
import type {
  LiveEvent,
  NewEvent,
  RoomEvent,
  TypingEvent,
} from "../wire/protocol.ts";

/** What a connection asks for when it joins a room. */
export interface JoinRequest {
  /**
   * Who will hold the nick: a person's session (every tab of it is one
   * member) or else the connection itself; unique across processes.
   */
  owner: string;
  /** A valid nick to claim; without it (or when taken) a random one. */
  nick?: string;
  /** The token of an earlier welcome: takes `nick` from a stale holder. */
  token?: string;
  /** Resume: the last event id the client has, and its room epoch. */
  since?: number;
  epoch?: string;
  /**
   * Signed in by a login token: `nick` is theirs. It is reserved in the room
   * from then on (no anonymous person may take it), and an anonymous holder
   * of it is renamed to a random nick (with a `nick` event) to give it up.
   */
  verified?: boolean;
  /** A moderator: `/who` and the welcome say so. */
  op?: boolean;
  /** A verified person's user id (their token's `sub`), for `presence`. */
  user?: string;
  /**
   * What a ban or mute of this person holds against (see
   * {@linkcode Sanction}): a login (`u.…`) for verified people, a session
   * (`s.…`) and an address (`ip:…`) for others.
   */
  keys?: string[];
}

/** A completed join: what the welcome says. */
export interface Joined {
  /** The nick held: the one asked for, or a random one. */
  nick: string;
  /** Set when the nick asked for was taken (a random one was given). */
  nickTaken: boolean;
  /**
   * The owner was in the room already (another tab of a session): it keeps
   * its nick, no join was appended, and `lastId` is the room's last id.
   */
  present: boolean;
  /** The room's epoch: ids start over when it changes. */
  epoch: string;
  /** Id of the join event (or the room's last); later ones come by `subscribe`. */
  lastId: number;
  /**
   * Id of the event that gave the owner its nick (its join, or its last
   * rename): direct messages to that nick from before it are not its.
   */
  claimedId: number;
  /**
   * What the client should show: what it missed and its join, when it
   * resumed without a gap; otherwise the room's recent history.
   */
  history: RoomEvent[];
  /** A resume that could not be served exactly (history gone or new epoch). */
  gap: boolean;
  /** The room's members, the joiner included. */
  users: string[];
  /** Lets the client take its nick back from a connection that went stale. */
  token: string;
  /** The members signed in by a login token, by nick. */
  verified: string[];
  /** The members who are moderators, by nick. */
  moderators: string[];
  /** The room's topic ("" for none) and slow-mode interval (0: off). */
  topic: string;
  slowSeconds: number;
}

/** A ban or mute, kept by the nick it was given to (for `/unban`, `/unmute`). */
export interface Sanction {
  /** The nick its target had. */
  nick: string;
  /** Whom it holds against: anyone arriving or posting with one of these. */
  keys: string[];
  /** When it ends (ms since the epoch); absent: until lifted. */
  until?: number;
}

/** Who posts a message, for mutes and slow mode. */
export interface Poster {
  owner: string;
  /** See {@linkcode JoinRequest.keys}. */
  keys: string[];
  /** Moderators are not slowed down. */
  op: boolean;
}

/** Why a message was not posted, and until when. */
export type PostRefusal =
  | { refused: "muted"; until?: number }
  | { refused: "slow_mode"; until: number };

/** A member as `/who` and the API's `presence` show it. */
export interface RosterEntry {
  nick: string;
  verified: boolean;
  op: boolean;
  /** A verified person's user id (their token's `sub`). */
  user?: string;
  /** Their connections in the room, on every process. */
  connections: number;
}

/** Whose connections `dismiss` closes. */
export interface Dismissal {
  /** Only in this room (required with `nick`); absent: in every room. */
  room?: string;
  /** The member holding this nick in `room`. */
  nick?: string;
  /** The member with this owner (a verified person's `u.…`). */
  owner?: string;
}

/** A kick, or a ban (with `ban`), of the member holding `nick`. */
export interface Expulsion {
  nick: string;
  /** The moderator's nick. */
  by: string;
  reason?: string;
  /** Also keep them out until `until` (absent: until unbanned). */
  ban?: { until?: number; minutes?: number };
}

/** A read of older events: what `history` is asked. */
export interface HistoryRequest {
  /** Only events with ids below this one. */
  before: number;
  /** At most this many events (the caller has checked it is sensible). */
  limit: number;
  /**
   * Whether the reader may see an event (main.ts's one filter: direct
   * messages only to their parties). Events it refuses are skipped, not
   * counted, so a page is full whenever enough visible events are left.
   */
  visible: (event: RoomEvent) => boolean;
}

/** What a `history` read found. */
export interface HistoryPage {
  /** Oldest first, as a welcome's history. */
  events: RoomEvent[];
  /** Older visible events remain (a next read with `before` the first id). */
  more: boolean;
}

/**
 * Everything about a room that outlives one message: its events (ids,
 * history, delivery), who is in it (nicks), and its lifetime. main.ts talks
 * to rooms only through this, so another implementation (a shared store for
 * several processes) changes nothing else. What must be atomic is one call.
 */
export interface RoomStore {
  /**
   * Holds a place in the room for a connection that is about to join (at
   * upgrade time), so the room exists from then on. False when the room is
   * new and `maxRooms` rooms exist.
   */
  hold(room: string): boolean;
  /** Gives back a hold whose connection never joined. */
  release(room: string): void;
  /**
   * Turns a hold into a member: takes over the nick from a stale holder (by
   * token), claims the nick (or a random one), reads what a resuming client
   * missed, then appends the join: one step. An owner already in the room
   * (one more tab) is counted, keeps its nick, and no join is appended.
   */
  join(room: string, request: JoinRequest): Promise<Joined>;
  /** Appends an event: gives it the next id and a time, keeps it, delivers it. */
  append(room: string, body: NewEvent): Promise<RoomEvent>;
  /** Moves `owner` from nick `from` to `to` and appends the nick event. */
  rename(
    room: string,
    owner: string,
    from: string,
    to: string,
  ): Promise<RoomEvent | "nick_taken">;
  /**
   * One connection of `owner` leaves (if it is still a member: found by
   * owner, as its nick may have changed since). With its last connection
   * the owner is out: announced when `announce` and others remain. The last
   * one out ends the room.
   */
  leave(room: string, owner: string, announce: boolean): Promise<void>;
  /** The room's members' nicks. */
  members(room: string): Promise<string[]>;
  /**
   * Up to `limit` visible events before `before`, of those the store still
   * has: in memory and in Redis the live window, with an archive all it
   * retains. Only for a room the reader is in.
   */
  history(room: string, request: HistoryRequest): Promise<HistoryPage>;
  /** Passes an event on to every subscriber now, keeping nothing. */
  notify(room: string, event: TypingEvent): void;
  /**
   * Every event appended to the room from now on, in id order, and every
   * notification.
   */
  subscribe(room: string, onEvent: (event: LiveEvent) => void): () => void;
  /** Rooms that exist (with members or holds). */
  roomCount(): number;

  // Identity and moderation. Their state outlives a room's members: a
  // room's bans, mutes, topic, slow mode and reserved names are kept when it
  // empties (and in a shared store, on every process and across restarts).

  /** The members with whether each is verified and a moderator. */
  roster(room: string): Promise<RosterEntry[]>;
  /**
   * Appends a person's message or action, unless they are muted (by any of
   * their keys) or slow mode says it is too early (moderators excepted).
   */
  post(
    room: string,
    poster: Poster,
    body: NewEvent,
  ): Promise<RoomEvent | PostRefusal>;
  /**
   * Kicks (or bans) the member holding `nick`: they are out of the room at
   * once, the `kick` event is appended, and every process closes their
   * connections (through `onExpel`). A ban keeps their keys out.
   */
  expel(
    room: string,
    expulsion: Expulsion,
  ): Promise<RoomEvent | "no_such_nick">;
  /** Mutes the member holding `nick` (by its keys) until `until`. */
  mute(
    room: string,
    nick: string,
    until?: number,
  ): Promise<"muted" | "no_such_nick">;
  /** Lifts the ban or mute given to `nick`; false when there is none. */
  lift(room: string, kind: "ban" | "mute", nick: string): Promise<boolean>;
  /** The ban holding any of `keys` out of the room, if one does now. */
  banned(room: string, keys: string[]): Promise<Sanction | undefined>;
  /** Sets the topic or slow mode and appends its event. */
  configure(
    room: string,
    change: NewEvent & { type: "topic" | "slow" },
  ): Promise<RoomEvent>;
  /**
   * Deletes a message or action from history and appends a `delete` event.
   * With `author`, only when that nick sent it and held the nick since
   * before it (`since`: the event that gave them the nick).
   */
  remove(
    room: string,
    id: number,
    by: string,
    author?: { nick: string; since: number },
  ): Promise<RoomEvent | "no_such_message" | "forbidden">;

  // The app's API (http_api.ts): what it asks of every process.

  /** The rooms with members, with how many (on every process), by name. */
  rooms(): Promise<{ room: string; members: number }[]>;
  /**
   * Closes a person's connections on every process (through `onExpel`,
   * with `reason`), appending nothing; how many people it reached.
   */
  dismiss(target: Dismissal, reason: string): Promise<number>;
  /**
   * Runs `produce` once per `key` within `ttlMs`, on every process; a
   * repeat gets the first one's answer.
   */
  once(
    key: string,
    ttlMs: number,
    produce: () => Promise<number>,
  ): Promise<number>;
  /** False while the store cannot be reached (a shared store's server is down). */
  available?(): boolean;
  /** Lets go of connections and timers (at shutdown). */
  close?(): Promise<void>;
}

/** What the store cannot do right now; the client is told `unavailable`. */
export class StoreUnavailable extends Error {}

/** The room does not exist (an append to a room nobody holds). */
export class NoSuchRoom extends Error {}

/**
 * Reads a history page through `older`, which gives up to `count` events
 * with ids below `before`, newest first (fewer only when no more are kept).
 * It reads on past events the reader may not see until it has `limit` + 1
 * visible ones (the one more says whether `more` is true) or none are left:
 * so a page is never short while older visible events exist, and paging
 * with `before` = the first id of the last page visits each event once.
 *
 * The one path every store's `history` takes, so the one place that says
 * what a page may hold: what `request.visible` allows (direct messages only
 * to their parties), and never a deleted message. Stores drop a deleted
 * message from what they keep, together with appending its `delete` event;
 * a page also skips any message whose `delete` event it passed on the way
 * back, so one read that straddles a deletion cannot show it either.
 */
export async function pageBack(
  request: HistoryRequest,
  older: (
    before: number,
    count: number,
  ) => RoomEvent[] | Promise<RoomEvent[]>,
): Promise<HistoryPage> {
  const found: RoomEvent[] = [];
  const deleted = new Set<number>();
  const batch = request.limit + 1;
  let before = request.before;
  while (found.length <= request.limit) {
    const events = await older(before, batch);
    for (const event of events) {
      // Newest first: a delete event comes before the message it deleted.
      if (event.type === "delete") deleted.add(event.deleted);
      if (deleted.has(event.id) || !request.visible(event)) continue;
      found.push(event);
    }
    if (events.length < batch) break;
    before = events[events.length - 1].id;
  }
  return {
    events: found.slice(0, request.limit).reverse(),
    more: found.length > request.limit,
  };
}

/** A room as an archive kept it: enough to carry on where it stopped. */
export interface ArchivedRoom {
  /** The room's epoch: a resume with it and a kept id has no gap. */
  epoch: string;
  /** The last id given out (retention may have dropped its event). */
  lastId: number;
  /** Its latest events, oldest first (at most the `limit` asked for). */
  recent: RoomEvent[];
}

/**
 * A room's moderation as an archive keeps it: what a {@linkcode MemoryStore}
 * keeps of a room beyond its events (see `RoomStore`'s identity and
 * moderation methods). The slow-mode clock of each person is not kept: after
 * a restart everyone may post once at once.
 */
export interface ArchivedModeration {
  /** "" for none. */
  topic: string;
  /** 0: off. */
  slowSeconds: number;
  /** Bans and mutes by the nick key they were given to (expired ones too). */
  bans: [key: string, sanction: Sanction][];
  mutes: [key: string, sanction: Sanction][];
  /** Nick key → the verified owner that holds or held it. */
  reserved: [key: string, owner: string][];
}

/**
 * One change to a room's moderation, written with the archive's next
 * commit. A `ban` or `mute` without `sanction` is lifted.
 */
export type ModerationChange =
  | { kind: "topic"; text: string }
  | { kind: "slow"; seconds: number }
  | { kind: "ban" | "mute"; key: string; sanction?: Sanction }
  | { kind: "reserved"; key: string; owner: string };

/**
 * Where a {@linkcode MemoryStore} writes rooms through so that they outlive
 * the process (sqlite_store.ts): each room's epoch, last id and events,
 * its moderation (bans, mutes, topic, slow mode, reserved names), deletions,
 * and the reconnect tokens' key. Live membership is not kept: connections
 * die with the process. All of it is synchronous (an embedded database): the
 * store queues writes during a turn and commits them once at its end, and
 * delivers and answers only after the commit, so an event anyone has seen
 * (and a moderator's action anyone was told of) is on disk.
 */
export interface RoomArchive {
  /** The key of reconnect tokens, the same after a restart. */
  readonly tokenKey: Uint8Array;
  /** A room as kept, with up to `limit` recent events; undefined if never made. */
  load(room: string, limit: number): ArchivedRoom | undefined;
  /** Records a new room and its epoch (written with the next commit). */
  create(room: string, epoch: string): void;
  /** Queues an event of a room (written with the next commit). */
  append(room: string, event: RoomEvent): void;
  /**
   * Queues the deletion of an event (written with the next commit; reads
   * leave it out from now on).
   */
  remove(room: string, id: number): void;
  /** A kept event of the room by id, if it is kept and not removed. */
  find(room: string, id: number): RoomEvent | undefined;
  /** A room's moderation as kept; undefined if it never had any. */
  moderation(room: string): ArchivedModeration | undefined;
  /** Queues a change of a room's moderation (written with the next commit). */
  moderate(room: string, change: ModerationChange): void;
  /** Writes what is queued in one transaction; throws if it could not. */
  commit(): void;
  /**
   * Up to `count` kept events of the room with ids below `before`, newest
   * first (removed ones never, even before their removal is committed).
   */
  older(room: string, before: number, count: number): RoomEvent[];
  /** Commits what is queued and closes. */
  close(): void;
}

/** `user-NNNNN`. */
export function randomNick(): string {
  return `user-${Math.floor(Math.random() * 100_000)}`;
}

/**
 * How many random nicks a join tries before it gives up (the join fails and
 * the client is told to come back). With 100,000 names, a room of 10,000
 * members fails one join in 10^8.
 */
export const NICK_CANDIDATES = 8;

/**
 * The random nicks a join may take, in the order it tries them, drawn as
 * they are asked for (a store that must send them all spreads them).
 */
export function* nickCandidates(
  draw: () => string = randomNick,
): Generator<string> {
  for (let i = 0; i < NICK_CANDIDATES; i++) yield draw();
}

/** Every random nick a join tried was taken. */
export class NoNickLeft extends Error {
  constructor() {
    super(`all ${NICK_CANDIDATES} random nicks tried were taken`);
  }
}

/**
 * Two nicks are one when their keys are equal: case-insensitive and by
 * confusable skeleton (Unicode TR39, from `unhomoglyph`'s copy of
 * confusables.txt), so `аda` (Cyrillic а), `ａｄａ` and `ADA` are `ada`.
 * NFKC first (fullwidth and maths letters), then upper case (via lower, for
 * ẞ and ß): TR39 maps capitals (В → B, 0 → O, I → l), and caseless
 * comparison needs one case; then again (l → L), at most four rounds, which
 * is more than any mapping chain in confusables.txt needs. So `alice` and
 * `allce` are one nick: the price of `I` looking like `l`. The key is
 * compared, never shown.
 */
export function nickKey(nick: string): string {
  let key = nick;
  let previous = "";
  for (let round = 0; round < 4 && key !== previous; round++) {
    previous = key;
    key = skeleton(key.normalize("NFKC").toLowerCase().toUpperCase());
  }
  return key;
}

/** UTS #39 skeleton: NFD, no default-ignorables, confusables mapped, NFD. */
function skeleton(text: string): string {
  return unhomoglyph(
    text.normalize("NFD").replace(/\p{Default_Ignorable_Code_Point}/gu, ""),
  ).normalize("NFD");
}

/** What every store needs to know (see main.ts's options of the same names). */
export interface StoreOptions {
  /** Events kept per room. */
  historySize: number;
  /** Bytes of history kept per room (see {@linkcode eventBytes}). */
  maxHistoryBytes: number;
  /** Rooms at once. */
  maxRooms: number;
  /** Called when a join takes a nick from `owner`: close that connection. */
  onEvict: (room: string, owner: string) => void;
  /**
   * Called when a moderator kicks or bans `owner`: close its connections
   * here with `reason`. (By default nothing: a store used without it.)
   */
  onExpel?: (room: string, owner: string, reason: string) => void;
  /** Draws a random nick. @default {randomNick} */
  randomNick?: () => string;
}

interface NickHolder {
  nick: string;
  owner: string;
  /** The owner's connections in the room (tabs of one session). */
  connections: number;
  /** Id of the holder's join event: its reconnect token is derived from it. */
  joinedId: number;
  /** Id of the event that gave it its nick (join or rename). */
  claimedId: number;
  verified: boolean;
  op: boolean;
  /** See {@linkcode JoinRequest.user}. */
  user?: string;
  /** See {@linkcode JoinRequest.keys}. */
  keys: string[];
}

/** A room's moderation, kept when the room ends (see `RoomStore`). */
interface MemoryModeration {
  topic: string;
  slowSeconds: number;
  /** By the nick key they were given to. */
  bans: Map<string, Sanction>;
  mutes: Map<string, Sanction>;
  /** Nick key → the verified owner that holds or held it. */
  reserved: Map<string, string>;
  /** Owner → when they last posted (for slow mode). */
  posted: Map<string, number>;
}

interface MemoryRoom {
  name: string;
  /** Random, fixed for this room's life; tells resuming clients ids started over. */
  epoch: string;
  lastId: number;
  history: RoomEvent[];
  /** What `history` costs, by {@linkcode eventBytes}. */
  historyBytes: number;
  /** Members by nick key, and the same by owner. */
  nicks: Map<string, NickHolder>;
  owners: Map<string, NickHolder>;
  /** Connections upgraded and not yet joined. */
  holds: number;
  listeners: Set<(event: LiveEvent) => void>;
}

/** What a {@linkcode MemoryStore} is made with. */
export interface MemoryStoreOptions extends StoreOptions {
  /** Where rooms are written through, to outlive the process. */
  archive?: RoomArchive;
  /** main.ts's logger (for an archive that fails). */
  log?: Log;
}

/**
 * How long a failed archive commit waits before it is tried again (the
 * disk full, say); meanwhile the store is unavailable and nothing queued is
 * delivered or lost.
 */
export const COMMIT_RETRY_MS = 1000;

/**
 * The default store: every room in this process's memory, gone with it,
 * unless it writes through to a {@linkcode RoomArchive}. Its work is
 * synchronous; without an archive the promises are for the interface's
 * sake, with one they resolve once the turn's commit is done.
 */
export class MemoryStore implements RoomStore {
  #rooms = new Map<string, MemoryRoom>();
  #moderation = new Map<string, MemoryModeration>();
  /** `once` keys: the first call's answer, until it expires. */
  #once = new Map<string, { answer: Promise<number>; expires: number }>();
  #options: MemoryStoreOptions;
  #archive?: RoomArchive;
  /**
   * Keys the reconnect tokens: new for each store, so tokens die with it,
   * unless the archive keeps one.
   */
  #tokenKey: Uint8Array;
  /** Events appended this turn, delivered once the archive has them. */
  #unsent: [MemoryRoom, RoomEvent][] = [];
  /** The next commit, and what waits for it. */
  #commit?: {
    cancel: () => void;
    done: PromiseWithResolvers<void>;
  };
  /** The last commit failed (it is being retried). */
  #failing = false;

  constructor(options: MemoryStoreOptions) {
    this.#options = options;
    this.#archive = options.archive;
    this.#tokenKey = this.#archive?.tokenKey ?? randomBytes(32);
  }

  hold(name: string): boolean {
    let room = this.#rooms.get(name);
    if (!room) {
      if (this.#rooms.size >= this.#options.maxRooms) return false;
      room = this.#newRoom(name);
      this.#rooms.set(name, room);
    }
    room.holds++;
    return true;
  }

  /** A room as the archive kept it, or a new one (with a new epoch). */
  #newRoom(name: string): MemoryRoom {
    const room: MemoryRoom = {
      name,
      epoch: crypto.randomUUID().slice(0, 8),
      lastId: 0,
      history: [],
      historyBytes: 0,
      nicks: new Map(),
      owners: new Map(),
      holds: 0,
      listeners: new Set(),
    };
    const kept = this.#archive?.load(name, this.#options.historySize);
    if (!kept) {
      this.#archive?.create(name, room.epoch);
      return room;
    }
    room.epoch = kept.epoch;
    room.lastId = kept.lastId;
    for (const event of kept.recent) this.#keep(room, event);
    return room;
  }

  release(name: string): void {
    const room = this.#rooms.get(name);
    if (!room) return;
    room.holds--;
    this.#endIfEmpty(name, room);
  }

  join(name: string, request: JoinRequest): Promise<Joined> {
    const room = this.#room(name);
    room.holds--;
    const missedSince = () =>
      request.since === undefined
        ? undefined
        : this.#eventsAfter(room, request.since, request.epoch ?? "");
    const present = room.owners.get(request.owner);
    if (present) {
      present.connections++;
      const missed = missedSince();
      return this.#durable({
        nick: present.nick,
        nickTaken: false,
        present: true,
        epoch: room.epoch,
        lastId: room.lastId,
        claimedId: present.claimedId,
        history: missed ?? room.history.slice(),
        gap: request.since !== undefined && missed === undefined,
        users: membersOf(room),
        token: this.#token(name, room, present),
        ...this.#standing(name, room),
      });
    }
    const wanted = request.nick;
    if (wanted !== undefined && request.token) {
      this.#takeOver(name, room, wanted, request.token);
    }
    const moderation = this.#moderationOf(name);
    if (request.verified && wanted !== undefined) {
      this.#displace(room, moderation, wanted, request.owner);
    }
    // A nick is free when nobody holds it and no other verified person
    // holds or held it here.
    const free = (nick: string) => {
      const key = nickKey(nick);
      const reservedBy = moderation.reserved.get(key);
      return !room.nicks.has(key) &&
        (reservedBy === undefined || reservedBy === request.owner);
    };
    const nickTaken = wanted !== undefined && !free(wanted);
    const nick = wanted !== undefined && !nickTaken
      ? wanted
      : nickCandidates(this.#options.randomNick).find(free);
    if (nick === undefined) {
      room.holds++; // still held: the caller gives the hold back
      return Promise.reject(new NoNickLeft());
    }
    // What a resuming client missed is read before its own join is appended,
    // so that the join cannot push the oldest missed event out of history.
    const missed = missedSince();
    const joined = this.#append(
      room,
      request.verified
        ? { type: "join", nick, verified: true }
        : { type: "join", nick },
    );
    const holder: NickHolder = {
      nick,
      owner: request.owner,
      connections: 1,
      joinedId: joined.id,
      claimedId: joined.id,
      verified: request.verified ?? false,
      op: request.op ?? false,
      user: request.user,
      keys: request.keys ?? [],
    };
    room.nicks.set(nickKey(nick), holder);
    room.owners.set(request.owner, holder);
    if (
      holder.verified &&
      moderation.reserved.get(nickKey(nick)) !== request.owner
    ) {
      moderation.reserved.set(nickKey(nick), holder.owner);
      this.#record(name, {
        kind: "reserved",
        key: nickKey(nick),
        owner: holder.owner,
      });
    }
    return this.#durable({
      nick,
      nickTaken,
      present: false,
      epoch: room.epoch,
      lastId: joined.id,
      claimedId: joined.id,
      // A copy: with an archive the answer waits for the commit, and the
      // room's history may change meanwhile.
      history: missed ? [...missed, joined] : room.history.slice(),
      gap: request.since !== undefined && missed === undefined,
      users: membersOf(room),
      token: this.#token(name, room, holder),
      ...this.#standing(name, room),
    });
  }

  append(name: string, body: NewEvent): Promise<RoomEvent> {
    // A promise either way: a missing room is a rejection, as in every store.
    try {
      return this.#durable(this.#append(this.#room(name), body));
    } catch (error) {
      return Promise.reject(error);
    }
  }

  rename(
    name: string,
    owner: string,
    from: string,
    to: string,
  ): Promise<RoomEvent | "nick_taken"> {
    const room = this.#room(name);
    const holder = room.nicks.get(nickKey(from));
    const other = room.nicks.get(nickKey(to));
    const reservedBy = this.#moderationIfAny(name)?.reserved.get(nickKey(to));
    if (
      !holder || holder.owner !== owner || (other && other !== holder) ||
      (reservedBy !== undefined && reservedBy !== owner)
    ) {
      return Promise.resolve("nick_taken");
    }
    room.nicks.delete(nickKey(from));
    holder.nick = to;
    room.nicks.set(nickKey(to), holder);
    const renamed = this.#append(room, { type: "nick", from, to });
    holder.claimedId = renamed.id;
    return this.#durable(renamed);
  }

  leave(name: string, owner: string, announce: boolean): Promise<void> {
    const room = this.#rooms.get(name);
    const holder = room?.owners.get(owner);
    if (!room || !holder) return Promise.resolve();
    if (--holder.connections > 0) return Promise.resolve();
    room.nicks.delete(nickKey(holder.nick));
    room.owners.delete(owner);
    // The last one's leave is kept too (an archive outlives the room): a
    // later visitor must not read two joins in a row.
    if (announce) this.#append(room, { type: "leave", nick: holder.nick });
    this.#endIfEmpty(name, room);
    return this.#durable(undefined);
  }

  members(name: string): Promise<string[]> {
    const room = this.#rooms.get(name);
    return Promise.resolve(
      room ? membersOf(room) : [],
    );
  }

  history(name: string, request: HistoryRequest): Promise<HistoryPage> {
    const room = this.#room(name);
    return pageBack(request, (before, count) => {
      // The live window first, then (below its oldest) the archive's.
      const history = room.history;
      const end = firstAtOrAbove(history, before);
      const found = history.slice(Math.max(0, end - count), end).reverse();
      if (found.length === count || !this.#archive) return found;
      const floor = Math.min(before, history[0]?.id ?? room.lastId + 1);
      return found.concat(
        this.#archive.older(name, floor, count - found.length),
      );
    });
  }

  available(): boolean {
    return !this.#failing;
  }

  close(): Promise<void> {
    if (!this.#archive) return Promise.resolve();
    const commit = this.#commit;
    this.#commit = undefined;
    commit?.cancel();
    try {
      this.#archive.close(); // commits what is queued first
      commit?.done.resolve();
    } catch (error) {
      this.#options.log?.("error", "archive_failed", {
        error: error instanceof Error ? error.message : String(error),
      });
      commit?.done.reject(new StoreUnavailable("the store is closed"));
    }
    this.#unsent = [];
    return Promise.resolve();
  }

  notify(name: string, event: TypingEvent): void {
    for (const onEvent of this.#rooms.get(name)?.listeners ?? []) {
      onEvent(event);
    }
  }

  subscribe(name: string, onEvent: (event: LiveEvent) => void): () => void {
    const listeners = this.#room(name).listeners;
    listeners.add(onEvent);
    return () => listeners.delete(onEvent);
  }

  roomCount(): number {
    return this.#rooms.size;
  }

  roster(name: string): Promise<RosterEntry[]> {
    const room = this.#rooms.get(name);
    return Promise.resolve(
      room
        ? [...room.owners.values()].map((
          { nick, verified, op, user, connections },
        ) => ({ nick, verified, op, user, connections }))
        : [],
    );
  }

  post(
    name: string,
    poster: Poster,
    body: NewEvent,
  ): Promise<RoomEvent | PostRefusal> {
    const room = this.#room(name);
    const moderation = this.#moderationOf(name);
    const now = Date.now();
    const mute = findSanction(moderation.mutes, poster.keys, now);
    if (mute) return Promise.resolve({ refused: "muted", until: mute.until });
    if (moderation.slowSeconds > 0 && !poster.op) {
      const next = (moderation.posted.get(poster.owner) ?? -Infinity) +
        moderation.slowSeconds * 1000;
      if (now < next) {
        return Promise.resolve({ refused: "slow_mode", until: next });
      }
      moderation.posted.set(poster.owner, now);
    }
    return this.#durable(this.#append(room, body));
  }

  expel(
    name: string,
    expulsion: Expulsion,
  ): Promise<RoomEvent | "no_such_nick"> {
    const room = this.#rooms.get(name);
    const holder = room?.nicks.get(nickKey(expulsion.nick));
    if (!room || !holder) return Promise.resolve("no_such_nick");
    const moderation = this.#moderationOf(name);
    if (expulsion.ban) {
      const sanction: Sanction = {
        nick: holder.nick,
        keys: holder.keys,
        until: expulsion.ban.until,
      };
      moderation.bans.set(nickKey(holder.nick), sanction);
      this.#record(name, { kind: "ban", key: nickKey(holder.nick), sanction });
    }
    room.nicks.delete(nickKey(holder.nick));
    room.owners.delete(holder.owner);
    const event = this.#append(room, kickEvent(holder.nick, expulsion));
    this.#options.onExpel?.(name, holder.owner, kickReason(expulsion));
    return this.#durable(event);
  }

  mute(
    name: string,
    nick: string,
    until?: number,
  ): Promise<"muted" | "no_such_nick"> {
    const holder = this.#rooms.get(name)?.nicks.get(nickKey(nick));
    if (!holder) return Promise.resolve("no_such_nick");
    const sanction: Sanction = { nick: holder.nick, keys: holder.keys, until };
    this.#moderationOf(name).mutes.set(nickKey(holder.nick), sanction);
    this.#record(name, { kind: "mute", key: nickKey(holder.nick), sanction });
    return this.#durable("muted" as const);
  }

  lift(name: string, kind: "ban" | "mute", nick: string): Promise<boolean> {
    const moderation = this.#moderationIfAny(name);
    const sanctions = kind === "ban" ? moderation?.bans : moderation?.mutes;
    const sanction = sanctions?.get(nickKey(nick));
    const live = sanction !== undefined &&
      (sanction.until === undefined || sanction.until > Date.now());
    if (sanction === undefined) return Promise.resolve(false);
    sanctions!.delete(nickKey(nick));
    this.#record(name, { kind, key: nickKey(nick) });
    return this.#durable(live);
  }

  banned(name: string, keys: string[]): Promise<Sanction | undefined> {
    const bans = this.#moderationIfAny(name)?.bans;
    return Promise.resolve(
      bans ? findSanction(bans, keys, Date.now()) : undefined,
    );
  }

  configure(
    name: string,
    change: NewEvent & { type: "topic" | "slow" },
  ): Promise<RoomEvent> {
    const room = this.#room(name);
    const moderation = this.#moderationOf(name);
    if (change.type === "topic") {
      moderation.topic = change.text;
      this.#record(name, { kind: "topic", text: change.text });
    } else {
      moderation.slowSeconds = change.seconds;
      moderation.posted.clear();
      this.#record(name, { kind: "slow", seconds: change.seconds });
    }
    return this.#durable(this.#append(room, change));
  }

  remove(
    name: string,
    id: number,
    by: string,
    author?: { nick: string; since: number },
  ): Promise<RoomEvent | "no_such_message" | "forbidden"> {
    const room = this.#room(name);
    const index = room.history.findIndex((event) => event.id === id);
    // Older than the live window: an archive still has it (a page of
    // history shows it, so it can be deleted as well).
    const event = index >= 0
      ? room.history[index]
      : this.#archive?.find(name, id);
    if (!event || (event.type !== "message" && event.type !== "action")) {
      return Promise.resolve("no_such_message");
    }
    if (author && (event.from !== author.nick || author.since >= id)) {
      return Promise.resolve("forbidden");
    }
    if (index >= 0) {
      room.history.splice(index, 1);
      room.historyBytes -= eventBytes(event);
    }
    this.#archive?.remove(name, id);
    return this.#durable(
      this.#append(room, { type: "delete", by, deleted: id }),
    );
  }

  /**
   * A room's moderation, made on first use and kept when the room ends
   * (read back from the archive, if it has it).
   */
  #moderationOf(name: string): MemoryModeration {
    let moderation = this.#moderationIfAny(name);
    if (!moderation) {
      moderation = {
        topic: "",
        slowSeconds: 0,
        bans: new Map(),
        mutes: new Map(),
        reserved: new Map(),
        posted: new Map(),
      };
      this.#moderation.set(name, moderation);
    }
    return moderation;
  }

  /**
   * A room's moderation if it has any, here or in the archive (read once,
   * then kept here). Nothing is made for a room without any: a ban check at
   * the handshake names any room.
   */
  #moderationIfAny(name: string): MemoryModeration | undefined {
    const known = this.#moderation.get(name);
    if (known || !this.#archive) return known;
    const kept = this.#archive.moderation(name);
    if (!kept) return undefined;
    const now = Date.now();
    // Those that ran out while the process was away are left behind.
    const live = ([, sanction]: [string, Sanction]) =>
      sanction.until === undefined || sanction.until > now;
    const moderation: MemoryModeration = {
      topic: kept.topic,
      slowSeconds: kept.slowSeconds,
      bans: new Map(kept.bans.filter(live)),
      mutes: new Map(kept.mutes.filter(live)),
      reserved: new Map(kept.reserved),
      posted: new Map(),
    };
    this.#moderation.set(name, moderation);
    return moderation;
  }

  /**
   * Writes a moderation change through to the archive with this turn's
   * commit; the action's answer waits for it (see {@linkcode #durable}).
   */
  #record(name: string, change: ModerationChange): void {
    if (!this.#archive) return;
    this.#archive.moderate(name, change);
    this.#scheduleCommit(0);
  }

  /** What a welcome says of the room beyond its nicks. */
  #standing(
    name: string,
    room: MemoryRoom,
  ): Pick<Joined, "verified" | "moderators" | "topic" | "slowSeconds"> {
    const members = [...room.nicks.values()];
    const moderation = this.#moderationIfAny(name);
    return {
      verified: members.filter((m) => m.verified).map((m) => m.nick),
      moderators: members.filter((m) => m.op).map((m) => m.nick),
      topic: moderation?.topic ?? "",
      slowSeconds: moderation?.slowSeconds ?? 0,
    };
  }

  /**
   * A verified person arrives with `nick`: an anonymous holder of it is
   * renamed to a random free nick (the `nick` event tells everyone, its own
   * tabs included), so the name is free for its owner.
   */
  #displace(
    room: MemoryRoom,
    moderation: MemoryModeration,
    nick: string,
    owner: string,
  ): void {
    const holder = room.nicks.get(nickKey(nick));
    if (!holder || holder.verified || holder.owner === owner) return;
    const to = nickCandidates(this.#options.randomNick).find((candidate) =>
      !room.nicks.has(nickKey(candidate)) &&
      !moderation.reserved.has(nickKey(candidate))
    );
    if (to === undefined) return; // then the newcomer gets a random one
    room.nicks.delete(nickKey(holder.nick));
    const renamed = this.#append(room, {
      type: "nick",
      from: holder.nick,
      to,
    });
    holder.nick = to;
    holder.claimedId = renamed.id;
    room.nicks.set(nickKey(to), holder);
  }

  rooms(): Promise<{ room: string; members: number }[]> {
    return Promise.resolve(
      [...this.#rooms].filter(([, room]) => room.owners.size > 0)
        .map(([name, room]) => ({ room: name, members: room.owners.size }))
        .sort((a, b) => a.room.localeCompare(b.room)),
    );
  }

  dismiss(target: Dismissal, reason: string): Promise<number> {
    let people = 0;
    const rooms = target.room === undefined
      ? [...this.#rooms]
      : [[target.room, this.#rooms.get(target.room)] as const];
    for (const [name, room] of rooms) {
      const holder = target.nick !== undefined
        ? room?.nicks.get(nickKey(target.nick))
        : room?.owners.get(target.owner ?? "");
      if (!holder) continue;
      people++;
      this.#options.onExpel?.(name, holder.owner, reason);
    }
    return Promise.resolve(people);
  }

  once(
    key: string,
    ttlMs: number,
    produce: () => Promise<number>,
  ): Promise<number> {
    const now = Date.now();
    for (const [old, entry] of this.#once) {
      if (entry.expires <= now) this.#once.delete(old);
    }
    const known = this.#once.get(key);
    if (known) return known.answer;
    const answer = produce();
    this.#once.set(key, { answer, expires: now + ttlMs });
    // A call that failed did nothing: the key may be used again.
    answer.catch(() => this.#once.delete(key));
    return answer;
  }

  #room(name: string): MemoryRoom {
    const room = this.#rooms.get(name);
    if (!room) throw new NoSuchRoom(`no room ${name}: hold it first`);
    return room;
  }

  /** Ends a room nobody is in or on the way to; true if it ended. */
  #endIfEmpty(name: string, room: MemoryRoom): boolean {
    if (room.nicks.size > 0 || room.holds > 0) return false;
    this.#rooms.delete(name);
    return true;
  }

  #append(room: MemoryRoom, body: NewEvent): RoomEvent {
    const event = { ...body, id: ++room.lastId, ts: Date.now() } as RoomEvent;
    this.#keep(room, event);
    if (!this.#archive) {
      for (const onEvent of room.listeners) onEvent(event);
      return event;
    }
    this.#archive.append(room.name, event);
    this.#unsent.push([room, event]);
    this.#scheduleCommit(0);
    return event;
  }

  /** Puts an event in the live window, dropping the oldest beyond its bounds. */
  #keep(room: MemoryRoom, event: RoomEvent): void {
    const { historySize, maxHistoryBytes } = this.#options;
    room.history.push(event);
    room.historyBytes += eventBytes(event);
    while (
      room.history.length > historySize ||
      (room.historyBytes > maxHistoryBytes && room.history.length > 0)
    ) {
      room.historyBytes -= eventBytes(room.history.shift()!);
    }
  }

  /**
   * `value` once this turn's writes are committed (at once without an
   * archive): an event is delivered, and its sender answered, only when it
   * is on disk.
   */
  #durable<T>(value: T): Promise<T> {
    if (!this.#archive || !this.#commit) return Promise.resolve(value);
    return this.#commit.done.promise.then(() => value);
  }

  /**
   * One commit for everything appended in this turn (setImmediate runs
   * after the turn's I/O callbacks: every frame read in it), or after
   * `delayMs` when retrying.
   */
  #scheduleCommit(delayMs: number): void {
    if (this.#commit) return;
    const done = Promise.withResolvers<void>();
    done.promise.catch(() => {}); // a waiter may be gone (closed store)
    this.#commit = { cancel: this.#later(delayMs), done };
  }

  /** Calls `#flush` after `delayMs`, or at the end of the turn; returns a cancel. */
  #later(delayMs: number): () => void {
    if (delayMs > 0) {
      const timer = setTimeout(() => this.#flush(), delayMs);
      return () => clearTimeout(timer);
    }
    const immediate = setImmediate(() => this.#flush());
    return () => clearImmediate(immediate);
  }

  /** Commits, then delivers what was committed; on failure, retries later. */
  #flush(): void {
    const commit = this.#commit!;
    this.#commit = undefined;
    try {
      this.#archive!.commit();
    } catch (error) {
      if (!this.#failing) {
        this.#options.log?.("error", "archive_failed", {
          error: error instanceof Error ? error.message : String(error),
        });
      }
      this.#failing = true;
      this.#commit = commit;
      commit.cancel = this.#later(COMMIT_RETRY_MS);
      return;
    }
    if (this.#failing) this.#options.log?.("info", "archive_up", {});
    this.#failing = false;
    const unsent = this.#unsent;
    this.#unsent = [];
    for (const [room, event] of unsent) {
      for (const onEvent of room.listeners) onEvent(event);
    }
    commit.done.resolve();
  }

  /**
   * Held events after `id`, or `undefined` when some of them are no longer
   * held (or the client's epoch is not this room's: ids started over).
   */
  #eventsAfter(
    room: MemoryRoom,
    id: number,
    epoch: string,
  ): RoomEvent[] | undefined {
    if (epoch !== room.epoch || id > room.lastId) return undefined;
    const oldest = room.history[0]?.id ?? room.lastId + 1;
    if (id < oldest - 1) return undefined;
    return room.history.filter((event) => event.id > id);
  }

  /**
   * A client that reconnects before the server has noticed that its old
   * connection died (a dropped network, not a close) would find its own nick
   * taken. The token from its last welcome proves the old connection was its
   * own: that one leaves (announced) and is closed, so the nick is free.
   */
  #takeOver(name: string, room: MemoryRoom, nick: string, token: string): void {
    const holder = room.nicks.get(nickKey(nick));
    if (!holder || !sameSecret(token, this.#token(name, room, holder))) return;
    room.nicks.delete(nickKey(nick));
    room.owners.delete(holder.owner);
    this.#append(room, { type: "leave", nick: holder.nick });
    this.#options.onEvict(name, holder.owner);
  }

  #token(name: string, room: MemoryRoom, holder: NickHolder): string {
    return reconnectToken(this.#tokenKey, name, room.epoch, holder.joinedId);
  }
}

/** The index of the first event with an id of at least `id` (binary search). */
function firstAtOrAbove(events: RoomEvent[], id: number): number {
  let low = 0;
  let high = events.length;
  while (low < high) {
    const middle = (low + high) >> 1;
    if (events[middle].id < id) low = middle + 1;
    else high = middle;
  }
  return low;
}

/** A room's members' nicks, in the order they joined (a rename keeps it). */
function membersOf(room: MemoryRoom): string[] {
  return [...room.owners.values()].map((member) => member.nick);
}

/**
 * What an event costs in history, roughly as V8 holds it: 2 bytes per UTF-16
 * unit of its strings, and 64 for the object.
 */
export function eventBytes(event: RoomEvent): number {
  // Field by field, not Object.values: this runs for every event.
  const e = event as Partial<
    Record<"from" | "to" | "text" | "nick" | "by" | "reason", string>
  >;
  const units = event.type.length + (e.from?.length ?? 0) +
    (e.to?.length ?? 0) + (e.text?.length ?? 0) + (e.nick?.length ?? 0) +
    (e.by?.length ?? 0) + (e.reason?.length ?? 0);
  return 64 + 2 * units;
}

/**
 * A member's reconnect token: derived from the room, its epoch and the id of
 * the member's join, keyed by the store's secret; stored nowhere, so it costs
 * nothing per member.
 */
export function reconnectToken(
  key: string | Uint8Array,
  room: string,
  epoch: string,
  joinedId: number,
): string {
  return createHmac("sha256", key)
    .update(`${room}/${epoch}/${joinedId}`)
    .digest("base64url");
}

/** The sanction holding any of `keys` at `now`, if any. */
export function findSanction(
  sanctions: Map<string, Sanction>,
  keys: string[],
  now: number,
): Sanction | undefined {
  for (const [key, sanction] of sanctions) {
    if (sanction.until !== undefined && sanction.until <= now) {
      sanctions.delete(key); // expired: forgotten on the way
      continue;
    }
    if (sanction.keys.some((k) => keys.includes(k))) return sanction;
  }
  return undefined;
}

/** The `kick` event of an expulsion (every store appends the same). */
export function kickEvent(nick: string, expulsion: Expulsion): NewEvent {
  return {
    type: "kick",
    nick,
    by: expulsion.by,
    ...(expulsion.reason ? { reason: expulsion.reason } : {}),
    ...(expulsion.ban
      ? {
        ban: true,
        ...(expulsion.ban.minutes ? { minutes: expulsion.ban.minutes } : {}),
      }
      : {}),
  };
}

/** The close reason an expelled person's connections get (code 4000). */
export function kickReason(expulsion: Expulsion): string {
  const what = expulsion.ban ? "banned" : "kicked";
  return `${what} by ${expulsion.by}${
    expulsion.reason ? ": " + expulsion.reason : ""
  }`;
}

/** Compares secrets in constant time. */
export function sameSecret(given: string, expected: string): boolean {
  const a = encoder.encode(given);
  const b = encoder.encode(expected);
  return a.length === b.length && timingSafeEqual(a, b);
}

const encoder = new TextEncoder();

/** Log fields: one line per event worth knowing, never message content. */
export type LogFields = Record<string, string | number | boolean | undefined>;

/** main.ts's logger, as a store gets it. */
export type Log = (
  level: "info" | "warn" | "error",
  event: string,
  fields?: LogFields,
) => void;

/**
 * What a store module loaded on demand (redis_store.ts) exports: how to
 * open its store. Each proves it with `satisfies`.
 */
export interface StoreFactory<Options extends StoreOptions> {
  connect(options: Options): Promise<RoomStore>;
}
