/**
 * The shared room store: several deno-chat processes, one chat, through
 * Redis. Loaded by server/open_store.ts only with `--redis URL` (or
 * `--redis-cluster`: then the names below carry hash tags, `room:{NAME}:…`,
 * and a room's channel is sharded; see redis_cluster.ts).
 *
 * Per room (keys under `chat:`):
 *
 * - `room:NAME:meta`, a hash: `epoch`, `last` (the last event id) and
 *   `bytes` (what the history costs, by rooms.ts's `eventBytes`);
 * - `room:NAME:events`, a stream of the last `historySize` events (at most
 *   `maxHistoryBytes`), entry id `N-0` for event id N, fields `e` (the
 *   event's JSON) and `b` (its cost);
 * - `room:NAME:nicks`, a hash: nick key → member (room_rules.ts `Member`);
 * - `room:NAME:owners`, a hash: owner → nick key (a session's tabs, on any
 *   process, are one member);
 * - `room:NAME:edits`, a hash: event id → the event as edited (a stream
 *   entry cannot be rewritten), trimmed and expiring with `events`;
 * - `room:NAME:reactions`, a hash: message id → its reactions (room_rules.ts
 *   `KeptReaction[]`), beside the stream (a reaction takes no history slot),
 *   trimmed, deleted and expiring with its message, as `edits`;
 * - channel `ev:NAME`: every event, published by the script that appends it
 *   (a process's appends of one turn as one `{from, events}` batch), typing
 *   notices, reaction notices (a commit's as one `{after, notices}` after
 *   the events before them), and notices of members out without an event
 *   (`gone`), kept nowhere;
 * - `room:NAME:mod`, a hash kept when the room empties (no TTL): `topic`,
 *   `slow`, `private`, and bans `b:NICKKEY` and mutes `m:NICKKEY` with
 *   their `until`;
 * - `room:NAME:invites`, a hash kept (no TTL): a private room's invites by
 *   the key they admit (a person's, or `link:` and a code's hash, never a
 *   code), and their version `v`;
 * - `room:NAME:reserved`, a hash kept: nick key → the verified owner that
 *   holds or held the name;
 * - `room:NAME:posted`, a hash: owner → last post (ms), for slow mode; it
 *   expires after the interval;
 * - `room:NAME:ops`, a hash: nick key → `{nick, joinedId}` of the members who
 *   are moderators, kept with `nicks`.
 *
 * Every change to a room is decided by the room's rules (room_rules.ts) on
 * what a READ script found of it, and written by one COMMIT script
 * (redis_scripts.ts, redis_txn.ts) if nothing the rule read has changed
 * meanwhile (else it reads and decides again), so ids, history, members and
 * publish move together and no rule is written in Lua. A process
 * subscribes to the channels of the rooms it has connections in and delivers
 * what comes, its own events included, in id order; a gap in the ids (a
 * reconnect) is filled from the stream. While several processes post into a
 * room, each waits a little for the others' batches (`coalesceMs`), so that
 * its clients get them as one frame. It keeps the members of those rooms
 * (roster.ts) from the events it delivers, read once when it subscribes, so
 * that a join reads nothing that grows with the room, and the room's recent
 * events, so that a welcome's history is not read from Redis (`recent`).
 *
 * Per person (a session's or a login's owner): `marks:PERSON`, a hash: room
 * → their read marker's JSON (markers.ts `ReadMarker`), kept for
 * `MARKERS_TTL_SECONDS` after it last moved; channel `marks`, the markers a
 * process moved lately (`MARKS_BATCH_MS`), `[[person, marker, rooms
 * forgotten], …]`, which every process hears (their connections there are
 * told).
 *
 * Per process: `hb:PID`, a heartbeat key with a TTL; `procs`, the set of
 * process ids; `procrooms:PID`, the rooms it has members in; channel
 * `evict:PID`, for a token takeover of one of its connections, or (with a
 * close reason) a moderator's kick or ban. A process
 * whose heartbeat expired is reaped by the survivors: each of its members is
 * announced as left once (the script removing them is atomic).
 *
 * @module
 */

import { ErrorReply } from "redis";
import { type RedisConnection, redisConnection } from "./redis_connect.ts";
import { redactRedisUrl } from "./redis_url.ts";
import { ClusterLink, KeyNaming, scanKeys } from "./redis_cluster.ts";
import { randomBytes } from "node:crypto";
import type {
  LiveEvent,
  NewEvent,
  ReactEvent,
  RoomEvent,
  TypingEvent,
} from "../wire/protocol.ts";
import {
  type Admission,
  type Author,
  type Disconnection,
  type EditRefusal,
  type Entrant,
  type HistoryPage,
  type HistoryRequest,
  type Invitation,
  inviteKeyOf,
  type Joined,
  type JoinRequest,
  type KeptReaction,
  type KeptReactions,
  type Kick,
  type Log,
  type LogFields,
  type MarkedRoom,
  type MarkRefusal,
  type Member,
  nickCandidates,
  nickKey,
  pageBack,
  type Poster,
  type PostRefusal,
  type Reactor,
  type ReactRefusal,
  type ReactUnchanged,
  reconnectToken,
  type RoomInvites,
  type RoomStore,
  type RosterEntry,
  sameSecret,
  type Sanction,
  searchBack,
  type SearchPage,
  type SearchRequest,
  type StoreFactory,
  type StoreOptions,
  StoreUnavailable,
  type Uninvitation,
  type Unread,
  type Visit,
} from "./rooms.ts";
import {
  countUnread,
  forgotten,
  markRead,
  MAX_MY_ROOMS,
  newestFirst,
  type ReadMarker,
} from "./markers.ts";
import * as rules from "./room_rules.ts";
import { canResume, connectionCount } from "./room_rules.ts";
import { Roster, type RosterAt } from "./roster.ts";
import {
  BASELINE,
  type Baseline,
  COMMIT,
  type CommitArgs,
  FORGET,
  type GoneNotice,
  KEEP_LAST,
  KEY_INDEX,
  type KeyCommand,
  keyList,
  MARK,
  type MarkItem,
  type PublishedBatch,
  type PublishedNotices,
  RANGE,
  type RangeArgs,
  type RangeReply,
  READ,
  type ReadPlan,
  type Reply,
  type RoomArgs,
  type RoomKeys,
  type Script,
} from "./redis_scripts.ts";
import {
  moderationOf,
  RedisTxn,
  type Snapshot,
  snapshotOf,
  viewOf,
} from "./redis_txn.ts";

/** What comes alone on a room's channel. */
type ChannelEvent = RoomEvent | TypingEvent | GoneNotice;

/** What {@linkcode RedisStore.connect} needs. */
export interface RedisStoreOptions extends StoreOptions {
  /**
   * `redis://[user:password@]host:port[/db]`, or Sentinels and their master
   * (`redis+sentinel://…`, stores/redis_url.ts), followed across failovers.
   */
  url: string;
  /**
   * Redis Cluster (`--redis-cluster`): some of its nodes' URLs (`url` is
   * then the first, for messages). Keys and channels are named for it
   * (redis_cluster.ts).
   */
  cluster?: string[];
  /** Seconds an empty room keeps its history and epoch. */
  roomTtl: number;
  /** main.ts's logger. */
  log?: Log;
  /**
   * Heartbeat interval in ms; a process is dead after three missed ones.
   * Default 3000, or the environment variable `CHAT_REDIS_HEARTBEAT_MS`.
   */
  heartbeatMs?: number;
  /**
   * How long a room's events may wait, in ms, for the batches of the other
   * processes posting into it, so that each client gets them in one frame;
   * 0 hands them out at once.
   * @default {COALESCE_MS}
   */
  coalesceMs?: number;
  /**
   * How recently, in ms, a process must have posted into a room for the
   * room's events to wait for its batches (see `coalesceMs`).
   * @default {POSTING_MS}
   */
  postingMs?: number;
  /** Key prefix. @default {"chat:"} */
  prefix?: string;
  /**
   * How long `connect` waits for Redis, in ms.
   * @default {CONNECT_TIMEOUT_MS}
   */
  connectTimeoutMs?: number;
  /**
   * Replicas that must have a turn's posts (Redis `WAIT`) before they are
   * delivered (echoed): an echoed message then survives a failover. 0: no
   * wait (replication stays asynchronous).
   * @default {0}
   */
  waitReplicas?: number;
  /**
   * How long a turn's posts wait for `waitReplicas`, in ms; after it they
   * are delivered anyway (counted, see `replicaAcks`).
   * @default {WAIT_REPLICAS_MS}
   */
  waitMs?: number;
}

/**
 * Default of `waitMs`: a replica on the same network acknowledges within
 * a millisecond or two (bench/README.md, "Eighth session"); 100 ms bounds
 * what a missing one adds to every echo.
 */
export const WAIT_REPLICAS_MS = 100;

type Client = RedisConnection;

/** What the store uses of a connection: a node-redis client, or a cluster. */
interface StoreLink {
  readonly isReady: boolean;
  readonly isOpen: boolean;
  connect(): Promise<unknown>;
  close(): Promise<unknown>;
  destroy(): void;
  sendCommand(args: string[]): Promise<unknown>;
  subscribe(
    channel: string,
    listener: (message: string) => void,
  ): Promise<unknown>;
  unsubscribe(
    channel: string,
    listener: (message: string) => void,
  ): Promise<unknown>;
  // deno-lint-ignore no-explicit-any
  on(event: string, listener: (...args: any[]) => void): unknown;
}

/** This process's view of one room. */
interface RoomState {
  name: string;
  /** Upgraded connections not yet joined. */
  holds: number;
  /** Joined connections here (by the store's count). */
  members: number;
  listeners: Set<(event: LiveEvent) => void>;
  /** SUBSCRIBE done and the baseline read; reset when it failed. */
  subscribed?: Promise<void>;
  /** The last id delivered here; undefined until the baseline is read. */
  delivered?: number;
  /** Whether any event went to the listeners yet (not just the baseline). */
  handedOver: boolean;
  /** Events taken in order, handed to the listeners at the end of the turn. */
  outbox: LiveEvent[];
  /**
   * Events of the room taken here, in id order (at most twice
   * `historySize`), and what the joins here read of the history: a join
   * takes its welcome's history from these when they hold as many events
   * in its bounds as Redis has (else reads them).
   */
  recent: RoomEvent[];
  /** Processes posting into the room, by id (`#posted`, `#awaited`). */
  posting: Map<string, PostingProcess>;
  /** The processes whose batches are in the outbox. */
  outboxFrom: Set<string>;
  /** When the first of those came. */
  outboxSince: number;
  /** Set while the outbox waits for the batches of `posting` (`#handOutAll`). */
  coalescing?: ReturnType<typeof setTimeout>;
  epoch?: string;
  /** Events received while the baseline or a gap is being read. */
  buffer: RoomEvent[];
  /**
   * Notices waiting for delivery here to reach the event they came after
   * (the baseline or a gap is being read), in the order published.
   */
  notices: PublishedNotices[];
  filling: boolean;
  onMessage: (message: string) => void;
  /**
   * The room's members as of `roster.id`, kept from the events taken here
   * (so that a join reads no member list); absent until the baseline read,
   * and while it is read again after delivery skipped ids or a reconnect.
   */
  roster?: Roster;
  /** Events taken while the roster is being read again. */
  rosterQueue?: RoomEvent[];
  /** A read of the roster is under way. */
  rosterReading: boolean;
  /** Notices of members out without an event, until the roster is there. */
  gone: GoneNotice[];
  /** Joins waiting for the roster to reach their welcome's id. */
  rosterWaiters: {
    id: number;
    wake: () => void;
    fail: (error: unknown) => void;
  }[];
  /**
   * The roster's id when each join in flight here was sent: its welcome's
   * id is no earlier, so the roster keeps its changes after the least.
   */
  joinFloors: number[];
}

/** An event to append with the others of its turn (a person's post: `post`). */
interface BatchItem {
  body: NewEvent;
  /** Who posts it: appended unless they are muted or slowed (rules `post`). */
  post?: Poster;
  /** The id of the message it replies to (rules `post` quotes it). */
  replyTo?: number;
}

/** What an append of a batch came to. */
type PostReply = RoomEvent | PostRefusal;

/** An append waiting to be sent with the others of its room. */
interface PendingAppend {
  /** When it was asked, among the store's changes (see `#seq`). */
  seq: number;
  item: BatchItem;
  resolve: (reply: PostReply) => void;
  reject: (error: unknown) => void;
}

/** What a join committed, as the welcome needs it. */
interface JoinReply {
  nick: string;
  taken: boolean;
  /** The owner was a member already (another tab). */
  present: boolean;
  epoch: string;
  lastId: number;
  joinedId: number;
  claimedId: number;
  /** A resume that could not be served exactly. */
  gap: boolean;
  /**
   * What the client missed (and its join), or the room's history; empty
   * when `historyFirst` is there.
   */
  history: RoomEvent[];
  /**
   * When the process keeps the room's recent events: the history is the
   * `historyCount` events with ids from `historyFirst` to `lastId` (some
   * ids in between may be deleted).
   */
  historyFirst?: number;
  historyCount?: number;
  /** The room's `reactions` hash (HGETALL: id, JSON, …). */
  reactions: string[];
  /** How many members the room has just after the join. */
  members: number;
  /** The members who are moderators, in join order. */
  moderators: string[];
  topic: string;
  slowSeconds: number;
  private: boolean;
}

/** A change to a room waiting to be decided with the others of its turn. */
interface PendingDecision {
  /** When it was asked, among the store's changes (see `#seq`). */
  seq: number;
  plan: ReadPlan;
  decide: (txn: RedisTxn) => unknown;
  /** Read before the batch's writes, and after them. */
  before: KeyCommand[];
  after: KeyCommand[];
  resolve: (decided: Decided<unknown>) => void;
  reject: (error: unknown) => void;
}

/** A change committed: what its rule answered, and where it stands in its batch. */
interface Decided<T> {
  result: T;
  txn: RedisTxn;
  /** Every event the batch appended, in order. */
  events: RoomEvent[];
  /** How many of them were appended by this change and the ones before it. */
  upTo: number;
  /** The room's members just after this change. */
  count: number;
  /** Its own reads, before and after the batch's writes. */
  before: Reply[];
  after: Reply[];
}

/** The reads of several changes' plans, as one plan. */
function mergedPlan(items: { plan: ReadPlan }[]): ReadPlan {
  const merged: ReadPlan = {};
  for (const { plan } of items) {
    for (
      const key of [
        "members",
        "owners",
        "reserved",
        "posted",
        "invites",
      ] as const
    ) {
      if (plan[key]) merged[key] = [...(merged[key] ?? []), ...plan[key]!];
    }
    for (const key of ["kept", "reactions"] as const) {
      if (plan[key]) merged[key] = [...(merged[key] ?? []), ...plan[key]!];
    }
    if (plan.moderation) merged.moderation = true;
    if (plan.all) merged.all = true;
    if (plan.allInvites) merged.allInvites = true;
  }
  for (
    const key of ["members", "owners", "reserved", "posted", "invites"] as const
  ) {
    if (merged[key]) merged[key] = [...new Set(merged[key])];
  }
  for (const key of ["kept", "reactions"] as const) {
    if (merged[key]) merged[key] = [...new Set(merged[key])];
  }
  return merged;
}

/** How many fields a plan reads by name (a batch's are kept under a cap). */
function planSize(plan: ReadPlan): number {
  return (plan.members?.length ?? 0) + (plan.owners?.length ?? 0) +
    (plan.reserved?.length ?? 0) + (plan.posted?.length ?? 0) +
    (plan.kept?.length ?? 0) + (plan.reactions?.length ?? 0) +
    (plan.invites?.length ?? 0);
}

/**
 * Most fields one batch of changes reads by name: a reconnect storm's
 * thousands of joins go as several batches (each join names about 18).
 */
export const MAX_BATCH_FIELDS = 2000;

/** One read or write command per distinct command, and where each item's are. */
function shared(lists: KeyCommand[][]): {
  commands: KeyCommand[];
  places: number[][];
} {
  const commands: KeyCommand[] = [];
  const index = new Map<string, number>();
  const places = lists.map((list) =>
    list.map((command) => {
      const key = JSON.stringify(command);
      let at = index.get(key);
      if (at === undefined) {
        index.set(key, at = commands.length);
        commands.push(command);
      }
      return at;
    })
  );
  return { commands, places };
}

/** A change that found the room changed every time it was decided. */
export class RoomTooBusy extends StoreUnavailable {}

/**
 * How often a change is decided again because the room changed between its
 * read and its commit, before the store gives up (unavailable: try again).
 */
export const MAX_DECISIONS = 50;

/**
 * How long a person's read markers are kept in Redis after one of them
 * last moved, in seconds (90 days): a person who never comes back is
 * forgotten.
 * @default {7776000}
 */
export const MARKERS_TTL_SECONDS = 90 * 24 * 60 * 60;

/**
 * People whose markers a process keeps what it knows of (then it starts
 * over, reading each again at their next move).
 * @default {10000}
 */
export const KNOWN_MARKS = 10_000;

/**
 * How long a read marker's move waits for the others of this process, in
 * ms, to be written with them by one script and told in one publish: a
 * script and a publish cost a process more than the move itself.
 * @default {20}
 */
export const MARKS_BATCH_MS = 20;

/** Up to this many ms times the attempt, at random, before deciding again. */
const BACKOFF_MS = 2;

/** A read marker's move waiting for the next `MARK` (see `markRead`). */
interface PendingMark {
  room: string;
  person: string;
  id: number;
  nick: string;
  /** How often it was decided on what had changed meanwhile. */
  attempt: number;
  /** The room as its rule needs it (undefined: no such room). */
  view?: MarkedRoom;
  resolve: (marked: ReadMarker | MarkRefusal) => void;
  reject: (error: unknown) => void;
}

/** A local member, kept to reclaim its nick after a long Redis outage. */
interface LocalMember {
  room: string;
  /** As main.ts names it. */
  owner: string;
  nick: string;
  joinedId: number;
  epoch: string;
  /** Its connections in this process. */
  connections: number;
}

const DEFAULT_HEARTBEAT_MS = 3000;
/** What an `once` key holds while its first call is at work. */
const ONCE_PENDING = "pending";
/** How long a repeated `once` waits for the first call's answer. */
const ONCE_WAIT_MS = 5000;
/** Missed heartbeats before a process counts as dead. */
const MISSED_BEATS = 3;
/** Longest wait between two attempts to reach Redis again, in ms. */
const MAX_RECONNECT_DELAY_MS = 2000;
/** Up to this much is added at random to each wait, in ms. */
const RECONNECT_JITTER_MS = 100;
/**
 * Per-command limit: a Redis that stops answering (but keeps the connection)
 * is unavailable. Generous, since it also counts this process's own event
 * loop lag under load; a closed connection fails commands at once.
 */
const COMMAND_TIMEOUT_MS = 10_000;
/**
 * How long {@linkcode RedisStore.connect} waits in all for a Redis that
 * accepts connections but does not answer. A refused connection fails at
 * once, one that gets no answer after {@linkcode SOCKET_CONNECT_TIMEOUT_MS}.
 */
export const CONNECT_TIMEOUT_MS = 5000;
/** How long one attempt to open a connection to Redis may take. */
const SOCKET_CONNECT_TIMEOUT_MS = 2000;
/**
 * Default of `coalesceMs`. While two processes post into a room, each hands
 * out the other's batches and its own in turn, one JSON frame per client
 * each: twice the frames of one process, whose clients' posts meet in one
 * turn, and frames (write system calls), not events, are what delivery
 * costs (bench/README.md). Waiting for the batches of every process posting
 * into the room puts them in one frame; its posters then get their echoes
 * together and post together, so the wait shrinks to the gap between them.
 * A room with one process posting, or none lately, waits for nothing, and
 * a process whose next batch is not due within the wait is not waited for
 * (`#awaited`). 40 ms: where the processes share busy cores, one's batch
 * often comes 10–40 ms after the other's; handed out apart, the two fall out
 * of step again (bench/README.md, "Fifth session").
 */
export const COALESCE_MS = 40;
/**
 * Default of `postingMs`: a process whose last batch into a room came this
 * recently posts there. A few hand-outs long, so that a pause (a sender's
 * echoes late behind a full room's frames) does not drop it.
 */
export const POSTING_MS = 160;

/**
 * A process posting into a room, as this one sees it: when its last batch
 * came (performance.now) and about how long it takes between batches
 * (undefined after its first).
 */
interface PostingProcess {
  at: number;
  every?: number;
}

function heartbeatFromEnv(): number | undefined {
  try {
    const variable = "CHAT_REDIS_HEARTBEAT_MS";
    // Asked first, so that a terminal never prompts for it.
    if (
      Deno.permissions.querySync({ name: "env", variable }).state !== "granted"
    ) {
      return undefined;
    }
    const text = Deno.env.get(variable);
    return text && /^\d+$/.test(text) ? Number(text) : undefined;
  } catch {
    return undefined; // no --allow-env for it
  }
}

/**
 * The room store shared by several processes through Redis. Made by
 * {@linkcode RedisStore.connect}.
 */
export class RedisStore implements RoomStore {
  #options: RedisStoreOptions;
  #cmd: StoreLink;
  #sub: StoreLink;
  /** Set with `cluster`: both connections are it. */
  #cluster?: ClusterLink;
  /** In a cluster: the rooms known to be in this process's `procrooms`. */
  #roomsEntered = new Set<string>();
  #names: KeyNaming;
  #prefix: string;
  #proc = randomBytes(6).toString("hex");
  #heartbeatMs: number;
  #coalesceMs: number;
  #postingMs: number;
  /** SCRIPT LOADs under way, by the script's hash. */
  #loading = new Map<string, Promise<void>>();
  #secret = "";
  #rooms = new Map<string, RoomState>();
  /** Local members, by room and owner (`ROOM\nOWNER`). */
  #members = new Map<string, LocalMember>();
  /** Leaves and joins whose outcome in Redis is unknown (Redis went away). */
  #orphans: { room: string; owner: string; announce: boolean }[] = [];
  /** Both connections ready and this process resynced since they came back. */
  #up = false;
  #resyncing?: Promise<void>;
  #resyncAgain = false;
  #reapAfter = 0;
  #timer?: ReturnType<typeof setInterval>;
  #pending = new Set<Promise<unknown>>();
  #outboxes = new Set<RoomState>();
  /** Appends not sent yet, by room (see `#enqueue`). */
  #appends = new Map<string, PendingAppend[]>();
  #appendsDue?: ReturnType<typeof setImmediate>;
  /** Rooms with batches being committed, and how many. */
  #appending = new Map<string, number>();
  /** The last batch sent per room: a later change waits for it (order). */
  #appendTails = new Map<string, Promise<void>>();
  /**
   * What posts were last decided on, per room (its epoch and moderation):
   * read again only when a commit finds it changed, or slow mode is on.
   */
  #postViews = new Map<string, Snapshot>();
  /** Changes waiting to be decided, by room, and rooms with a batch on its way. */
  #decisionQueues = new Map<string, PendingDecision[]>();
  #deciding = new Set<string>();
  /** The first change of each room's batch on its way (appends after it wait). */
  #inFlight = new Map<string, number>();
  /**
   * Numbers every append and change as it is asked, so that a room's are
   * committed in the order asked: an append waits for the changes asked
   * before it, and a change for the appends.
   */
  #seq = 0;
  /** A batch's joins' reactions, decoded once (`#joinReactions`). */
  #decodedReactions = new WeakMap<string[], KeptReactions>();
  /**
   * People's markers' hashes as this process last read or heard of them
   * (room → the stored JSON): a move is decided on them without a read, and
   * `MARK`'s condition catches one gone stale.
   */
  #knownMarks = new Map<string, Map<string, string>>();
  /** Moves waiting for the next `MARK` (see `markRead`). */
  #marking: PendingMark[] = [];
  #marksDue?: ReturnType<typeof setTimeout>;
  /** Commits, and decisions made again because the room had changed. */
  #decisions = { commits: 0, again: 0 };
  /** Turns of posts `waitReplicas` acknowledged, and those it did not. */
  #replicaAcks = { acknowledged: 0, short: 0 };
  /** The last turn's wait came short (logged once until one does not). */
  #shortLogged = false;
  #handOut?: ReturnType<typeof setImmediate>;
  #closed = false;
  #downLogged = false;
  /** `connect` has resolved: from then on a lost connection is retried. */
  #started = false;
  /** The webhooks' event types, as `CommitArgs.outbox` sends them. */
  #outboxTypes?: Record<string, true>;

  private constructor(options: RedisStoreOptions) {
    this.#options = options;
    this.#prefix = options.prefix ?? "chat:";
    this.#heartbeatMs = options.heartbeatMs ?? heartbeatFromEnv() ??
      DEFAULT_HEARTBEAT_MS;
    this.#coalesceMs = options.coalesceMs ?? COALESCE_MS;
    this.#postingMs = options.postingMs ?? POSTING_MS;
    this.#names = new KeyNaming(this.#prefix, options.cluster !== undefined);
    const client = (): StoreLink =>
      redisConnection({
        url: options.url,
        commandTimeoutMs: COMMAND_TIMEOUT_MS,
        connectTimeoutMs: SOCKET_CONNECT_TIMEOUT_MS,
        // At start-up a Redis that is not there fails `connect` at once
        // (the CLI then says why in one line); once started, a lost
        // connection is retried for ever with backoff.
        retryIn: (retries: number, cause: Error) =>
          !this.#started
            ? cause
            : Math.min(50 * 2 ** retries, MAX_RECONNECT_DELAY_MS) +
              Math.floor(Math.random() * RECONNECT_JITTER_MS),
      });
    if (options.cluster) {
      this.#cluster = new ClusterLink({
        urls: options.cluster,
        commandTimeoutMs: COMMAND_TIMEOUT_MS,
        connectTimeoutMs: SOCKET_CONNECT_TIMEOUT_MS,
        reconnectStrategy: (retries: number, cause: Error) =>
          !this.#started
            ? cause
            : Math.min(50 * 2 ** retries, MAX_RECONNECT_DELAY_MS) +
              Math.floor(Math.random() * RECONNECT_JITTER_MS),
      });
      this.#cmd = this.#sub = this.#cluster;
    } else {
      this.#cmd = client();
      this.#sub = client();
    }
    const links = this.#cluster
      ? [["cluster", this.#cluster] as const]
      : [["command", this.#cmd], ["subscriber", this.#sub]] as const;
    for (const [name, c] of links) {
      // Every error is reported here (so none is uncaught); only a lost
      // connection makes the store unavailable until it has resynced.
      c.on("error", (error: unknown) => this.#error(name, error));
      c.on("end", () => this.#down(name, "connection ended"));
      c.on("reconnecting", () => this.#down(name, "reconnecting"));
      c.on("ready", () => this.#ready());
    }
  }

  /** Connects both Redis connections and starts the heartbeat. */
  static async connect(options: RedisStoreOptions): Promise<RedisStore> {
    const store = new RedisStore(options);
    let timer: ReturnType<typeof setTimeout> | undefined;
    const ms = options.connectTimeoutMs ?? CONNECT_TIMEOUT_MS;
    try {
      await Promise.race([
        Promise.all([store.#cmd.connect(), store.#sub.connect()]),
        new Promise((_, reject) =>
          timer = setTimeout(
            () => reject(new Error(`no answer within ${ms} ms`)),
            ms,
          )
        ),
      ]);
      await store.#sub.subscribe(
        store.#names.evict(store.#proc),
        (message: string) => store.#onEvict(message),
      );
      await store.#sub.subscribe(
        store.#key("marks"),
        (message: string) => store.#onMarked(message),
      );
      await store.#resync();
    } catch (error) {
      store.#closed = true;
      // A connection that gave up at start is closed already (destroy
      // would throw).
      for (const c of [store.#cmd, store.#sub]) if (c.isOpen) c.destroy();
      throw new Error(
        `cannot reach ${options.cluster ? "Redis Cluster" : "Redis"} at ${
          redactUrl(options.url)
        } (${errorText(error)})`,
      );
    } finally {
      clearTimeout(timer);
    }
    store.#started = true;
    store.#timer = setInterval(() => store.#tick(), store.#heartbeatMs);
    return store;
  }

  /** This process's id in Redis. */
  get processId(): string {
    return this.#proc;
  }

  available(): boolean {
    return this.#up && this.#cmd.isReady && this.#sub.isReady;
  }

  hold(name: string): boolean {
    let room = this.#rooms.get(name);
    if (!room) {
      if (this.roomCount() >= this.#options.maxRooms) return false;
      room = this.#room(name);
    }
    room.holds++;
    return true;
  }

  release(name: string): void {
    const room = this.#rooms.get(name);
    if (!room) return;
    room.holds--;
    this.#endIfUnused(room);
  }

  /**
   * Held here like a joiner's hold (it counts against `maxRooms`); a room
   * with members here exists, any other is asked of Redis.
   */
  visit(name: string, create: boolean): Promise<Visit> {
    if (!this.hold(name)) return Promise.resolve("full");
    if (this.#rooms.get(name)!.members > 0) return Promise.resolve("held");
    return this.#track((async () => {
      let exists = false;
      try {
        this.#check();
        const { result } = await this.#decide(name, {}, (txn) => {
          if (txn.epoch !== undefined) return true;
          if (!create) return false;
          txn.create(crypto.randomUUID().slice(0, 8));
          return true;
        });
        exists = result;
      } finally {
        if (!exists) this.release(name);
      }
      return exists ? "held" : "absent";
    })());
  }

  roomCount(): number {
    let count = 0;
    for (const room of this.#rooms.values()) {
      if (room.holds > 0 || room.members > 0) count++;
    }
    return count;
  }

  subscribe(name: string, onEvent: (event: LiveEvent) => void): () => void {
    const room = this.#room(name);
    room.listeners.add(onEvent);
    this.#subscribed(room).catch(() => {}); // join awaits it; resync retries
    return () => {
      room.listeners.delete(onEvent);
      this.#endIfUnused(room);
    };
  }

  join(name: string, request: JoinRequest): Promise<Joined> {
    return this.#track(this.#join(name, request));
  }

  async #join(name: string, request: JoinRequest): Promise<Joined> {
    const room = this.#rooms.get(name);
    if (!room) throw new Error(`no room ${name}: hold it first`);
    this.#check();
    await this.#subscribed(room);
    await this.#enterRoom(name);
    const owner = this.#global(request.owner);
    const candidates = [...nickCandidates(this.#options.randomNick)];
    const keys = [
      ...(request.nick === undefined ? [] : [request.nick]),
      ...candidates,
    ].map(nickKey);
    // An id past any Redis can give is no resume to read (only a gap).
    const since = request.since !== undefined &&
        Number.isSafeInteger(request.since) && request.since >= 0
      ? request.since
      : undefined;
    const { meta, events, nicks, ops, moderation, reactions } = KEY_INDEX;
    const historyHere = room.recent.length > 0;
    let reply, members, history;
    // The welcome's id is at least the roster's now: from here until the
    // members are read, the roster keeps its changes after this id.
    const floor = room.roster?.id ?? 0;
    room.joinFloors.push(floor);
    try {
      const decided = await this.#decide(
        name,
        { members: keys, owners: [owner], reserved: keys },
        (txn) => {
          if (txn.epoch === undefined) {
            txn.create(crypto.randomUUID().slice(0, 8));
          }
          if (!this.#cluster) txn.plumb("procRooms", "SADD", name);
          return rules.join(txn, { ...request, owner }, {
            process: this.#proc,
            candidates,
            tokenMatches: (member, token) =>
              sameSecret(
                token,
                this.#token(name, txn.epoch!, member.joinedId),
              ),
          });
        },
        {
          // What a resuming client missed is read before the join appends.
          before: since === undefined ? [] : [
            ["XRANGE", events, `${since + 1}-0`, "+"],
            ["HGET", meta, "last"],
            ["XRANGE", events, "-", "+", "COUNT", "1"],
          ],
          after: [
            ["HGET", meta, "last"],
            ["HLEN", nicks],
            ["HVALS", ops],
            ["HGETALL", moderation],
            ["XRANGE", events, "-", "+", "COUNT", "1"],
            ["XLEN", events],
            // The live window's reactions (trimmed with it).
            ["HGETALL", reactions],
            ...(historyHere
              ? []
              : [["XRANGE", events, "-", "+"] as KeyCommand]),
          ],
        },
      );
      reply = joinReply(decided, {
        asked: request.since !== undefined,
        since,
        epoch: request.epoch,
      });
      if (
        room.members === 0 && room.epoch !== undefined &&
        room.epoch !== reply.epoch
      ) {
        this.#startedOver(room); // watched here while it expired
      }
      // What the room's posts are decided on, as of the join.
      this.#postViews.set(
        name,
        viewOf(reply.epoch, moderationOf(decided.after[3] as string[])),
      );
      members = await this.#membersAt(room, reply);
      history = await this.#historyOf(room, reply, since);
    } catch (error) {
      if (
        error instanceof StoreUnavailable && !(error instanceof RoomTooBusy)
      ) {
        // It may have run before the connection went: undone after reconnect.
        this.#orphans.push({ room: name, owner, announce: true });
      }
      throw error;
    } finally {
      room.joinFloors.splice(room.joinFloors.indexOf(floor), 1);
      this.#trimRoster(room);
    }
    room.holds--;
    room.members++;
    room.epoch = reply.epoch;
    if (reply.present && !room.handedOver) {
      // Best effort: main.ts also admits a lone arriving tab by itself.
      await this.#handOver(room, reply.lastId).catch(() => {});
    }
    const memberKey = `${name}\n${request.owner}`;
    const member = this.#members.get(memberKey);
    if (member) {
      member.connections++;
      member.nick = reply.nick;
    } else {
      this.#members.set(memberKey, {
        room: name,
        owner: request.owner,
        nick: reply.nick,
        joinedId: reply.joinedId,
        epoch: reply.epoch,
        connections: 1,
      });
    }
    return {
      nick: reply.nick,
      nickTaken: reply.taken,
      present: reply.present,
      epoch: reply.epoch,
      lastId: reply.lastId,
      claimedId: reply.claimedId,
      history,
      gap: reply.gap,
      reactions: this.#joinReactions(reply.reactions),
      users: members.nicks,
      token: this.#token(name, reply.epoch, reply.joinedId),
      verified: members.verified,
      moderators: reply.moderators,
      topic: reply.topic,
      slowSeconds: reply.slowSeconds,
      private: reply.private,
    };
  }

  /**
   * Appends wait for the end of the turn, or while the room's last batch
   * is still in Redis, and go as one script per room, published as one
   * message: per event, a command and a pub/sub message on Deno's Node
   * layer cost more than the event's delivery to hundreds of sockets
   * (bench/README.md, the Redis profile). A quiet room waits for nothing
   * but the end of the turn, a busy one at most for one script's round
   * trip; any other change to the room sends them first and waits for them
   * (`#decide`), so the room gets them in the order asked.
   */
  append(name: string, body: NewEvent): Promise<RoomEvent> {
    return this.#track(
      this.#enqueue(name, { body }).then(
        (reply) => reply as RoomEvent, // no checks: never refused
      ),
    );
  }

  /** Waits for the end of the turn with the room's other appends. */
  #enqueue(name: string, item: BatchItem): Promise<PostReply> {
    return new Promise<PostReply>((resolve, reject) => {
      this.#check();
      let queue = this.#appends.get(name);
      if (!queue) this.#appends.set(name, queue = []);
      queue.push({ seq: ++this.#seq, item, resolve, reject });
      if (!this.#appending.has(name)) {
        this.#appendsDue ??= setImmediate(() => this.#flushAppends());
      }
    });
  }

  /** Sends each room's waiting appends, but where a batch is still running. */
  #flushAppends(): void {
    this.#appendsDue = undefined;
    for (const name of [...this.#appends.keys()]) {
      if (!this.#appending.has(name)) this.#sendAppends(name);
    }
  }

  /**
   * Sends the room's waiting appends now, as one batch; resolves once it is
   * committed (or failed).
   */
  #sendAppends(name: string): Promise<void> {
    const all = this.#appends.get(name);
    // Only those asked before the room's next change; the rest after it.
    const floor = this.#floor(name);
    const queue = all?.filter((waiting) => waiting.seq < floor);
    if (!all || !queue || queue.length === 0) {
      return this.#appendTails.get(name) ?? Promise.resolve();
    }
    if (queue.length === all.length) this.#appends.delete(name);
    else this.#appends.set(name, all.slice(queue.length));
    this.#appending.set(name, (this.#appending.get(name) ?? 0) + 1);
    const sent = this.#commitPosts(name, queue.map((waiting) => waiting.item))
      .then(
        (replies) => queue.forEach((waiting, i) => waiting.resolve(replies[i])),
        (error) => queue.forEach((waiting) => waiting.reject(error)),
      ).finally(() => {
        if (this.#appendTails.get(name) === sent) {
          this.#appendTails.delete(name);
        }
        const running = this.#appending.get(name)! - 1;
        if (running > 0) return void this.#appending.set(name, running);
        this.#appending.delete(name);
        if (this.#appends.has(name) && !this.#closed) {
          this.#appendsDue ??= setImmediate(() => this.#flushAppends());
        }
      });
    this.#appendTails.set(name, sent);
    return sent;
  }

  /**
   * A turn's appends to one room, each post unless the rules refuse it
   * (mute, slow mode), as one commit published as one `{from, events}`
   * batch. They are decided on what was read for the room's last batch
   * (its epoch and moderation) while the commit finds it unchanged: a
   * process posting into a busy room reads nothing before each batch.
   */
  async #commitPosts(name: string, items: BatchItem[]): Promise<PostReply[]> {
    const posters = [
      ...new Set(items.flatMap((item) => item.post ? [item.post.owner] : [])),
    ];
    // Replies read what they quote: such a batch reads before it decides.
    const quoted = [
      ...new Set(items.flatMap((item) => item.replyTo ?? [])),
    ];
    for (let attempt = 0; attempt < MAX_DECISIONS; attempt++) {
      const known = this.#postViews.get(name);
      // Slow mode's clocks are read each time: another process may have
      // posted for the same person.
      const view = known && known.moderation!.slow === 0 && quoted.length === 0
        ? known
        : await this.#read(name, {
          moderation: true,
          posted: posters,
          kept: quoted,
        });
      const txn = this.#txn(name, view);
      let decided;
      try {
        decided = items.map((item) =>
          item.post
            ? rules.post(txn, item.post, item.body, item.replyTo)
            : txn.append(item.body)
        );
      } catch (error) {
        this.#postViews.delete(name);
        throw error;
      }
      // A refusal stands with the commit: it holds only if the moderation
      // it was judged on is unchanged.
      const hold = (this.#options.waitReplicas ?? 0) > 0;
      const reply = await this.#commit(name, txn, { from: this.#proc, hold });
      if ("behind" in reply) {
        this.#postViews.delete(name);
        continue;
      }
      if (hold) await this.#publishReplicated(name, reply.events);
      if (
        view.moderation!.slow === 0 && this.#rooms.has(name) &&
        quoted.length === 0
      ) {
        this.#postViews.set(name, view);
      }
      return decided.map((d) =>
        typeof d === "number" ? txn.appended(d, reply.events) : d
      );
    }
    throw this.#tooBusy(name);
  }

  /** The number of the room's next change to commit (Infinity: none). */
  #floor(room: string): number {
    return this.#inFlight.get(room) ??
      this.#decisionQueues.get(room)?.[0]?.seq ?? Infinity;
  }

  /** Fails the appends not sent yet (the store is closing or crashed). */
  #dropAppends(): void {
    if (this.#appendsDue) clearImmediate(this.#appendsDue);
    this.#appendsDue = undefined;
    for (const queue of this.#appends.values()) {
      for (const waiting of queue) {
        waiting.reject(new StoreUnavailable("the store is closed"));
      }
    }
    this.#appends.clear();
  }

  rename(
    name: string,
    owner: string,
    from: string,
    to: string,
  ): Promise<RoomEvent | "nick_taken"> {
    return this.#track((async () => {
      this.#check();
      const { result, txn, events } = await this.#decide(
        name,
        { members: [nickKey(from), nickKey(to)], reserved: [nickKey(to)] },
        (txn) => rules.rename(txn, this.#global(owner), from, to),
      );
      if (result === "nick_taken") return result;
      const member = this.#members.get(`${name}\n${owner}`);
      if (member) member.nick = to;
      return txn.appended(result, events);
    })());
  }

  leave(name: string, owner: string, announce: boolean): Promise<void> {
    const memberKey = `${name}\n${owner}`;
    const member = this.#members.get(memberKey);
    if (member) {
      if (--member.connections === 0) this.#members.delete(memberKey);
      const room = this.#rooms.get(name);
      if (room) {
        room.members--;
        this.#endIfUnused(room);
      }
    }
    const global = this.#global(owner);
    return this.#track((async () => {
      if (!this.available()) {
        this.#orphans.push({ room: name, owner: global, announce });
        throw new StoreUnavailable("redis is unreachable");
      }
      try {
        // Found by owner: its nick may have changed since.
        await this.#leaveScript(name, global, announce, 1);
      } catch (error) {
        if (error instanceof StoreUnavailable) {
          this.#orphans.push({ room: name, owner: global, announce });
        }
        throw error;
      }
    })());
  }

  /**
   * As Redis has them now (O(members)), not from the roster: that may be
   * behind another process's join or leave that has already answered.
   */
  members(name: string): Promise<string[]> {
    return this.#track((async () => {
      this.#check();
      return (await this.#holders(name)).map((member) => member.nick);
    })());
  }

  /**
   * From Redis, as `members`: the connections on every process are in no
   * event, so no process's roster has them.
   */
  roster(name: string): Promise<RosterEntry[]> {
    return this.#track((async () => {
      this.#check();
      return (await this.#holders(name)).map((member) => ({
        nick: member.nick,
        verified: member.verified,
        op: member.op,
        user: member.user,
        connections: connectionCount(member),
      }));
    })());
  }

  /** The room's members as Redis has them now, in the order they joined. */
  async #holders(room: string): Promise<Member[]> {
    const members = await this.#command(["HVALS", this.#keys(room).nicks]);
    return (members as string[])
      .map((text) => JSON.parse(text) as Member)
      .sort((a, b) => a.joinedId - b.joinedId);
  }

  /** With the room's other appends of the turn (see `append`). */
  post(
    name: string,
    poster: Poster,
    body: NewEvent,
    replyTo?: number,
  ): Promise<RoomEvent | PostRefusal> {
    return this.#track(this.#enqueue(name, {
      body,
      post: { ...poster, owner: this.#global(poster.owner) },
      ...(replyTo !== undefined ? { replyTo } : {}),
    }));
  }

  kick(
    name: string,
    expulsion: Kick,
  ): Promise<RoomEvent | "no_such_nick"> {
    return this.#event(
      name,
      { members: [nickKey(expulsion.nick)], moderation: true },
      (txn) => rules.kick(txn, expulsion),
    );
  }

  mute(
    name: string,
    nick: string,
    until?: number,
  ): Promise<"muted" | "no_such_nick"> {
    return this.#answer(
      name,
      { members: [nickKey(nick)], moderation: true },
      (txn) => rules.mute(txn, nick, until),
    );
  }

  unban(name: string, nick: string): Promise<boolean> {
    return this.#answer(
      name,
      { moderation: true },
      (txn) => rules.unban(txn, nick),
    );
  }

  unmute(name: string, nick: string): Promise<boolean> {
    return this.#answer(
      name,
      { moderation: true },
      (txn) => rules.unmute(txn, nick),
    );
  }

  banned(name: string, keys: string[]): Promise<Sanction | undefined> {
    return this.#track((async () => {
      this.#check();
      const view = await this.#read(name, { moderation: true });
      return rules.sanctionOn(this.#txn(name, view), "ban", keys);
    })());
  }

  /**
   * Read, and judged on what was read; only a code's use, which changes
   * the room, is decided again and committed, on its link's field.
   */
  admit(name: string, entrant: Entrant): Promise<Admission> {
    return this.#track((async () => {
      this.#check();
      const global = {
        ...entrant,
        owner: entrant.owner === undefined
          ? undefined
          : this.#global(entrant.owner),
      };
      const key = inviteKeyOf(entrant.keys);
      const plan: ReadPlan = {
        moderation: true,
        owners: global.owner === undefined ? [] : [global.owner],
        invites: [
          ...(key === undefined ? [] : [key]),
          ...(entrant.code === undefined
            ? []
            : [rules.LINK_KEY + entrant.code]),
        ],
      };
      const seen = rules.admit(
        this.#txn(name, await this.#read(name, plan)),
        global,
      );
      if (!("admitted" in seen) || seen.admitted !== "code") return seen;
      return (await this.#decide(name, plan, (txn) => rules.admit(txn, global)))
        .result;
    })());
  }

  private(
    name: string,
    change: NewEvent & { type: "private" },
  ): Promise<RoomEvent> {
    return this.#event<never>(
      name,
      { moderation: true },
      (txn) => rules.private(txn, change),
    );
  }

  invite(
    name: string,
    invitation: Invitation,
  ): Promise<"invited" | "no_such_nick" | "invite_limit"> {
    const key = "nick" in invitation ? [nickKey(invitation.nick)] : [];
    return this.#answer(
      name,
      { members: key, reserved: key, allInvites: true },
      (txn) => rules.invite(txn, invitation),
    );
  }

  uninvite(name: string, target: Uninvitation): Promise<number> {
    const key = "nick" in target ? [nickKey(target.nick)] : [];
    return this.#answer(
      name,
      { members: key, reserved: key, allInvites: true },
      (txn) => rules.uninvite(txn, target),
    );
  }

  invites(name: string): Promise<RoomInvites> {
    return this.#track((async () => {
      this.#check();
      const view = await this.#read(name, {
        moderation: true,
        allInvites: true,
      });
      return rules.invitesOf(this.#txn(name, view));
    })());
  }

  topic(
    name: string,
    change: NewEvent & { type: "topic" },
  ): Promise<RoomEvent> {
    return this.#event<never>(
      name,
      { moderation: true },
      (txn) => rules.topic(txn, change),
    );
  }

  slow(
    name: string,
    change: NewEvent & { type: "slow" },
  ): Promise<RoomEvent> {
    return this.#event<never>(
      name,
      { moderation: true },
      (txn) => rules.slow(txn, change),
    );
  }

  edit(
    name: string,
    author: Author,
    id: number,
    text: string,
    windowMs: number,
  ): Promise<RoomEvent | EditRefusal> {
    return this.#event(
      name,
      { kept: [id], moderation: true },
      (txn) => rules.edit(txn, author, id, text, windowMs),
    );
  }

  /**
   * Decided with the room's other changes of the turn, as `edit`: the
   * message's `reactions` field is the commit's condition, so two
   * processes toggling on one message never lose one (the second decides
   * again on the first's).
   */
  react(
    name: string,
    reactor: Reactor,
    id: number,
    key: string,
    on?: boolean,
  ): Promise<ReactEvent | ReactRefusal | ReactUnchanged> {
    return this.#answer(
      name,
      { kept: [id], reactions: [id], moderation: true },
      (txn) =>
        rules.react(
          txn,
          { ...reactor, owner: this.#global(reactor.owner) },
          id,
          key,
          on,
        ),
    );
  }

  delete(
    name: string,
    id: number,
    by: string,
    author?: { nick: string; since: number },
  ): Promise<RoomEvent | "no_such_message" | "forbidden"> {
    return this.#event(
      name,
      { kept: [id] },
      (txn) => rules.delete(txn, id, by, author),
    );
  }

  /** A rule's answer, once what it decided is committed (`#decide`). */
  #answer<T>(
    name: string,
    plan: ReadPlan,
    rule: (txn: RedisTxn) => T,
  ): Promise<T> {
    return this.#track((async () => {
      this.#check();
      return (await this.#decide(name, plan, rule)).result;
    })());
  }

  /**
   * A rule's answer once committed, where an event's id (what a rule
   * answers when it appended one) is the event itself.
   */
  #event<T>(
    name: string,
    plan: ReadPlan,
    rule: (txn: RedisTxn) => number | T,
  ): Promise<RoomEvent | T> {
    return this.#track((async () => {
      this.#check();
      const { result, txn, events } = await this.#decide(name, plan, rule);
      return typeof result === "number"
        ? txn.appended(result, events)
        : result as T;
    })());
  }

  rooms(): Promise<{ room: string; members: number; private: boolean }[]> {
    return this.#track((async () => {
      this.#check();
      const rooms = [];
      for (const key of await this.#scan(this.#names.roomPattern("nicks"))) {
        const members = await this.#command(["HLEN", key]) as number;
        const room = this.#names.roomOf(key, "nicks");
        if (members === 0) continue;
        const on = await this.#command([
          "HGET",
          this.#keys(room).moderation,
          "private",
        ]);
        rooms.push({ room, members, private: on === "1" });
      }
      return rooms.sort((a, b) => a.room.localeCompare(b.room));
    })());
  }

  /**
   * Finds the member in Redis and tells each process it has connections on
   * to close them (the `evict:PID` channel, with a reason, as a kick does).
   */
  disconnect(target: Disconnection, reason: string): Promise<number> {
    return this.#track((async () => {
      this.#check();
      const rooms = target.room !== undefined
        ? [target.room]
        : (await this.#scan(this.#names.roomPattern("owners"))).map((key) =>
          this.#names.roomOf(key, "owners")
        );
      let people = 0;
      for (const room of rooms) {
        const keys = this.#keys(room);
        const key = target.nick !== undefined
          ? nickKey(target.nick)
          : await this.#command(["HGET", keys.owners, target.owner ?? ""]);
        if (typeof key !== "string") continue;
        const text = await this.#command(["HGET", keys.nicks, key]);
        if (typeof text !== "string") continue;
        const member = JSON.parse(text) as Member;
        people++;
        for (const process of Object.keys(member.connections)) {
          await this.#command([
            "PUBLISH",
            this.#names.evict(process),
            JSON.stringify([room, member.owner, reason]),
          ]);
        }
      }
      return people;
    })());
  }

  /**
   * `SET NX` claims the key for the first caller, who stores its answer;
   * a repeat reads it, waiting a little while the first is still at work.
   */
  once(
    key: string,
    ttlMs: number,
    produce: () => Promise<number>,
  ): Promise<number> {
    return this.#track((async () => {
      this.#check();
      const name = this.#key(`once:${key}`);
      const claimed = await this.#command([
        "SET",
        name,
        ONCE_PENDING,
        "NX",
        "PX",
        String(ttlMs),
      ]);
      if (claimed === "OK") {
        try {
          const answer = await produce();
          await this.#command(["SET", name, String(answer), "XX", "KEEPTTL"]);
          return answer;
        } catch (error) {
          // It did nothing: the key may be used again.
          await this.#command(["DEL", name]).catch(() => {});
          throw error;
        }
      }
      const deadline = Date.now() + ONCE_WAIT_MS;
      for (;;) {
        const value = await this.#command(["GET", name]);
        if (typeof value === "string" && value !== ONCE_PENDING) {
          return Number(value);
        }
        if (value === null) return await this.once(key, ttlMs, produce);
        if (Date.now() > deadline) {
          throw new StoreUnavailable(
            "an earlier call with this key is still at work",
          );
        }
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
    })());
  }

  markers(person: string): Promise<ReadMarker[]> {
    return this.#track((async () => {
      this.#check();
      const fields = await this.#command(["HGETALL", this.#marks(person)]);
      this.#knowMarks(person, fields as string[]);
      return newestFirst([...markersOf(fields as string[]).values()])
        .slice(0, MAX_MY_ROOMS);
    })());
  }

  /** A person's markers' hash as read: what this process knows of it. */
  #knowMarks(person: string, fields: string[]): Map<string, string> {
    if (this.#knownMarks.size >= KNOWN_MARKS) this.#knownMarks.clear();
    const known = new Map<string, string>();
    for (let i = 0; i < fields.length; i += 2) {
      known.set(fields[i], fields[i + 1]);
    }
    this.#knownMarks.set(person, known);
    return known;
  }

  /**
   * The room as a marker's rule needs it, from what this process has
   * taken of it, if that says `id` is given out (a client only names ids it
   * was sent: delivered here); else undefined (Redis is asked).
   */
  #markedHere(name: string, id: number): MarkedRoom | undefined {
    const room = this.#rooms.get(name);
    const delivered = room?.delivered;
    if (!room?.epoch || delivered === undefined || id > delivered) {
      return undefined;
    }
    return { epoch: room.epoch, lastId: delivered };
  }

  /**
   * Decided by the rule (markers.ts `markRead`) on the person's markers and
   * the room's epoch and last id, and written by `MARK` if the room's field
   * is still what the decision read (else read and decided again). The
   * moves of {@linkcode MARKS_BATCH_MS} go as one `MARK` (one publish): a
   * thousand people moving a marker a second are a few dozen scripts a
   * second, not a thousand. A move is decided on what this process knows
   * (the person's markers from an earlier read and the `marks` channel, the
   * room from what it has taken of it), and reads only what it does not.
   */
  markRead(
    name: string,
    person: string,
    id: number,
    nick: string,
  ): Promise<ReadMarker | MarkRefusal> {
    return this.#track(
      new Promise<ReadMarker | MarkRefusal>((resolve, reject) => {
        this.#check();
        this.#marking.push({
          room: name,
          person,
          id,
          nick,
          attempt: 0,
          resolve,
          reject,
        });
        this.#marksDue ??= setTimeout(
          () => this.#sendMarks(),
          MARKS_BATCH_MS,
        );
      }),
    );
  }

  /** Fails the moves not sent yet (the store is closing or crashed). */
  #dropMarks(): void {
    clearTimeout(this.#marksDue);
    this.#marksDue = undefined;
    for (const move of this.#marking.splice(0)) {
      move.reject(new StoreUnavailable("the store is closed"));
    }
  }

  /** Decides the waiting moves and writes them with one `MARK`. */
  async #sendMarks(): Promise<void> {
    this.#marksDue = undefined;
    const batch = this.#marking;
    this.#marking = [];
    if (batch.length === 0) return;
    try {
      await this.#readForMarks(batch);
    } catch (error) {
      for (const move of batch) move.reject(error);
      return;
    }
    const keys: string[] = [];
    const items: MarkItem[] = [];
    const written: [PendingMark, ReadMarker, string[]][] = [];
    for (const move of batch) {
      const known = this.#knownMarks.get(move.person)!;
      const mine = markersOf([...known].flat());
      const marked = markRead(mine.get(move.room), move.view, {
        room: move.room,
        id: move.id,
        nick: move.nick,
        now: Date.now(),
      });
      if (typeof marked === "string") {
        move.resolve(marked);
        continue;
      }
      mine.set(move.room, marked);
      const forget = forgotten([...mine.values()]).map((old) => old.room);
      const key = this.#marks(move.person);
      let at = keys.indexOf(key);
      if (at < 0) at = keys.push(key) - 1;
      const value = JSON.stringify(marked);
      items.push({
        key: at + 1,
        field: move.room,
        expected: known.get(move.room) ?? null,
        value,
        forget,
        message: JSON.stringify([move.person, marked, forget]),
      });
      // A later move of the same person in this batch builds on this one.
      known.set(move.room, value);
      for (const room of forget) known.delete(room);
      written.push([move, marked, forget]);
    }
    if (items.length === 0) return;
    let done: boolean[];
    try {
      done = await this.#mark(keys, items);
    } catch (error) {
      for (const [move] of written) {
        this.#knownMarks.delete(move.person);
        move.reject(error);
      }
      return;
    }
    written.forEach(([move, marked], i) => {
      if (done[i]) return move.resolve(marked);
      // Decided on what had changed: read again and decided again.
      this.#knownMarks.delete(move.person);
      this.#decisions.again++;
      if (++move.attempt >= MAX_DECISIONS) {
        return move.reject(this.#tooBusy(move.room));
      }
      this.#marking.push(move);
      this.#marksDue ??= setTimeout(() => this.#sendMarks(), MARKS_BATCH_MS);
    });
  }

  /**
   * Writes the moves with one `MARK`; in a cluster one per person (each
   * person's hash is in a slot of its own), in parallel.
   */
  async #mark(keys: string[], items: MarkItem[]): Promise<boolean[]> {
    const args = { ttl: MARKERS_TTL_SECONDS, channel: this.#key("marks") };
    if (!this.#cluster) return await this.#run(MARK, keys, { items, ...args });
    const done: boolean[] = [];
    await Promise.all(keys.map(async (key, i) => {
      const mine: [number, MarkItem][] = [];
      items.forEach((item, at) => {
        if (item.key === i + 1) mine.push([at, { ...item, key: 1 }]);
      });
      const answers = await this.#run(MARK, [key], {
        items: mine.map(([, item]) => item),
        ...args,
      });
      mine.forEach(([at], j) => done[at] = answers[j]);
    }));
    return done;
  }

  /**
   * Gives each move the room as its rule needs it, and makes sure this
   * process knows each person's markers: from what it has, else read (one
   * round trip for the batch).
   */
  async #readForMarks(batch: PendingMark[]): Promise<void> {
    const people = new Set<string>();
    const rooms = new Set<string>();
    for (const move of batch) {
      move.view = move.attempt === 0
        ? this.#markedHere(move.room, move.id)
        : undefined;
      if (!move.view) rooms.add(move.room);
      if (!this.#knownMarks.has(move.person)) people.add(move.person);
    }
    const [fields, metas] = await Promise.all([
      Promise.all(
        [...people].map((person) =>
          this.#command(["HGETALL", this.#marks(person)])
        ),
      ),
      Promise.all(
        [...rooms].map((room) =>
          this.#command(["HMGET", this.#keys(room).meta, "epoch", "last"])
        ),
      ),
    ]);
    [...people].forEach((person, i) =>
      this.#knowMarks(person, fields[i] as string[])
    );
    const read = new Map<string, MarkedRoom | undefined>();
    [...rooms].forEach((room, i) => {
      const [epoch, last] = metas[i] as (string | null)[];
      read.set(
        room,
        epoch === null ? undefined : { epoch, lastId: Number(last ?? 0) },
      );
    });
    for (const move of batch) move.view ??= read.get(move.room);
  }

  /**
   * From the events this process has taken when they reach back to the
   * marker (a room it delivers: every event since is here), else from the
   * stream (at most `historySize` events).
   */
  unread(marker: ReadMarker): Promise<Unread | undefined> {
    return this.#track((async () => {
      this.#check();
      const here = this.#unreadHere(marker);
      if (here !== null) return here;
      const [meta, read] = await Promise.all([
        this.#command(["HMGET", this.#keys(marker.room).meta, "epoch", "last"]),
        this.#range(marker.room, {
          command: "XRANGE",
          range: [`${marker.id + 1}-0`, "+"],
        }),
      ]);
      const [epoch, last] = meta as (string | null)[];
      if (epoch === null || epoch !== marker.epoch) return undefined;
      this.#keepOlder(marker.room, epoch, read.events);
      // The stream was read after `last`: it may hold more.
      const through = Math.max(Number(last ?? 0), read.events.at(-1)?.id ?? 0);
      return { ...countUnread(read.events, marker), through };
    })());
  }

  /**
   * Events read from the stream (`unread`'s, a watched room's that this
   * process took none of yet, or not back so far): those before the ones
   * taken here, and up to what was delivered, go in front of `recent`, so
   * that the next count of the room is made here.
   */
  #keepOlder(name: string, epoch: string, events: RoomEvent[]): void {
    const room = this.#rooms.get(name);
    const delivered = room?.delivered;
    if (
      !room || room.epoch !== epoch || delivered === undefined || room.filling
    ) {
      return;
    }
    const first = room.recent[0]?.id ?? delivered + 1;
    const older = events.filter((event) =>
      event.id < first && event.id <= delivered
    );
    // Only what reaches the events taken here (or the last delivered).
    const reaches = older.length > 0 &&
      (room.recent.length > 0 || older[older.length - 1].id === delivered);
    if (reaches) room.recent = [...older, ...room.recent];
  }

  /** `unread` from the room's events taken here; null if they do not do. */
  #unreadHere(marker: ReadMarker): Unread | undefined | null {
    const room = this.#rooms.get(marker.room);
    const delivered = room?.delivered;
    if (
      !room || delivered === undefined || room.epoch !== marker.epoch ||
      room.filling || room.buffer.length > 0
    ) {
      return null;
    }
    if (marker.id >= delivered) {
      return { unread: 0, mentions: 0, through: delivered };
    }
    const recent = room.recent;
    if (recent.length === 0 || recent[recent.length - 1].id !== delivered) {
      return null;
    }
    // What the stream keeps: its last `historySize` (a deletion takes one
    // out of both), here if these reach back to the marker or are as many.
    const { historySize } = this.#options;
    if (recent[0].id > marker.id + 1 && recent.length < historySize) {
      return null;
    }
    const from = Math.max(0, recent.length - historySize);
    return { ...countUnread(recent, marker, false, from), through: delivered };
  }

  /** A marker moved on some process: main.ts tells the person's connections. */
  #onMarked(message: string): void {
    let moved: [person: string, marker: ReadMarker, forget: string[]][];
    try {
      moved = JSON.parse(message);
    } catch {
      return;
    }
    for (const [person, marker, forget] of moved) {
      // What this process knows of the person follows (MARK wrote this).
      const known = this.#knownMarks.get(person);
      if (known) {
        known.set(marker.room, JSON.stringify(marker));
        for (const room of forget) known.delete(room);
      }
      this.#options.onRead?.(person, marker);
    }
  }

  /** Every key matching `pattern` (SCAN, so Redis is never blocked long). */
  async #scan(pattern: string): Promise<string[]> {
    if (this.#cluster) return await this.#cluster.scan(pattern);
    return await scanKeys((args) => this.#command(args), pattern);
  }

  /**
   * Older events from the room's stream (newest first, by XREVRANGE from
   * `before` - 1), as far back as it keeps: `--history-size` events.
   */
  history(name: string, request: HistoryRequest): Promise<HistoryPage> {
    this.#check();
    this.#sendAppends(name); // a reader's own posts first
    return this.#track((async () => {
      const { page, reactions } = await this.#readBack(
        name,
        (older) => pageBack(request, older),
      );
      return reactions.size > 0 ? { ...page, reactions } : page;
    })());
  }

  /**
   * The room's stream searched (newest first, by XREVRANGE, the edits
   * applied as for history), as far back as it keeps: the live window;
   * the results' reactions read with them, as history's are.
   */
  search(name: string, request: SearchRequest): Promise<SearchPage> {
    this.#check();
    this.#sendAppends(name); // a reader's own posts first
    return this.#track((async () => {
      const { page, reactions } = await this.#readBack(
        name,
        (older) => searchBack(request, older),
      );
      const scope = "window" as const;
      return reactions.size > 0
        ? { ...page, scope, reactions }
        : { ...page, scope };
    })());
  }

  /**
   * What `walk` (history's `pageBack`, search's `searchBack`) finds going
   * back through the room's stream (XREVRANGE from `before` - 1, the edits
   * applied), with its events' reactions, read with them.
   */
  async #readBack<P extends { events: RoomEvent[] }>(
    name: string,
    walk: (
      older: (before: number, count: number) => Promise<RoomEvent[]>,
    ) => Promise<P>,
  ): Promise<{ page: P; reactions: KeptReactions }> {
    const found: [number, string][] = [];
    const page = await walk(async (before, count) => {
      if (before <= 1) return [];
      const read = await this.#range(name, {
        command: "XREVRANGE",
        range: [`${before - 1}-0`, "-", "COUNT", String(count)],
        reactions: true,
      });
      found.push(...read.reactions);
      return read.events;
    });
    const ids = new Set(page.events.map((event) => event.id));
    const reactions = this.#reactionsOf(found.filter(([id]) => ids.has(id)));
    return { page, reactions };
  }

  /** Events of the room's stream, by `command` over `range` (its ids are `N-0`). */
  async #stream(
    room: string,
    command: "XRANGE" | "XREVRANGE",
    ...range: string[]
  ): Promise<RoomEvent[]> {
    return (await this.#range(room, { command, range })).events;
  }

  #range(room: string, args: RangeArgs): Promise<RangeReply> {
    return this.#run(RANGE, this.#keys(room), args);
  }

  /**
   * A join's reactions: the joins of one batch share one read of them, and
   * one decoding (a reconnect storm's thousand joins parse them once).
   */
  #joinReactions(fields: string[]): KeptReactions {
    let decoded = this.#decodedReactions.get(fields);
    if (!decoded) {
      const entries: [number, string][] = [];
      for (let i = 0; i < fields.length; i += 2) {
        entries.push([Number(fields[i]), fields[i + 1]]);
      }
      decoded = this.#reactionsOf(entries);
      this.#decodedReactions.set(fields, decoded);
    }
    return decoded;
  }

  /**
   * Reactions as Redis keeps them (id, JSON), with their owners as main.ts
   * names them here (a connection's number without this process's id:
   * what a reader's `me` is found by).
   */
  #reactionsOf(entries: [id: number, json: string][]): KeptReactions {
    const reactions: KeptReactions = new Map();
    for (const [id, json] of entries) {
      const kept = JSON.parse(json) as KeptReaction[];
      reactions.set(
        id,
        kept.map(({ key, by }) => ({
          key,
          by: by.map(([owner, nick]) => [this.#local(owner), nick]),
        })),
      );
    }
    return reactions;
  }

  /**
   * Typing notices: published on the room's channel to every process (and
   * this one), kept nowhere; dropped while Redis is away.
   */
  notify(name: string, event: TypingEvent): void {
    if (!this.available()) return;
    this.#command([
      this.#cluster ? "SPUBLISH" : "PUBLISH",
      this.#channel(name),
      JSON.stringify(event),
    ])
      .catch(() => {});
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([
      Promise.allSettled([...this.#pending]),
      new Promise((resolve) => timer = setTimeout(resolve, 2000)),
    ]);
    clearTimeout(timer);
    this.#closed = true;
    clearInterval(this.#timer);
    this.#stopHandOut();
    this.#dropAppends();
    this.#dropMarks();
    this.#failJoins();
    if (this.available()) {
      // Survivors see this process gone at once (and find nothing to reap).
      await this.#command(["DEL", this.#names.process(`hb:${this.#proc}`)])
        .catch(
          () => {},
        );
    }
    for (const c of [this.#cmd, this.#sub]) {
      if (c.isReady) await c.close().catch(() => c.destroy());
      else if (c.isOpen) c.destroy();
    }
  }

  /**
   * Simulates `kill -9` for tests: stops the heartbeat and drops both
   * connections without telling Redis anything.
   */
  crash(): void {
    this.#closed = true;
    this.#up = false;
    clearInterval(this.#timer);
    this.#stopHandOut();
    this.#dropAppends();
    this.#dropMarks();
    this.#failJoins();
    for (const c of [this.#cmd, this.#sub]) if (c.isOpen) c.destroy();
  }

  // -------------------------------------------------------------------------
  // Delivery
  // -------------------------------------------------------------------------

  #room(name: string): RoomState {
    let room = this.#rooms.get(name);
    if (!room) {
      const made: RoomState = {
        name,
        holds: 0,
        members: 0,
        listeners: new Set(),
        buffer: [],
        notices: [],
        filling: false,
        handedOver: false,
        outbox: [],
        recent: [],
        posting: new Map(),
        outboxFrom: new Set(),
        outboxSince: 0,
        onMessage: (message) => this.#onMessage(made, message),
        gone: [],
        rosterReading: false,
        rosterWaiters: [],
        joinFloors: [],
      };
      this.#rooms.set(name, made);
      room = made;
    }
    return room;
  }

  #endIfUnused(room: RoomState): void {
    if (room.holds > 0 || room.members > 0 || room.listeners.size > 0) return;
    if (this.#rooms.get(room.name) !== room) return;
    this.#rooms.delete(room.name);
    this.#postViews.delete(room.name);
    clearTimeout(room.coalescing); // nobody to hand out to
    room.coalescing = undefined;
    if (room.subscribed && !this.#closed) {
      (this.#cluster
        ? this.#cluster.sUnsubscribe(this.#channel(room.name), room.onMessage)
        : this.#sub.unsubscribe(this.#channel(room.name), room.onMessage))
        .catch(() => {});
    }
  }

  /** Subscribes to the room's channel, then reads where delivery starts. */
  #subscribed(room: RoomState): Promise<void> {
    room.subscribed ??= (async () => {
      try {
        await this.#listen(room);
        const baseline = await this.#baseline(room.name);
        room.delivered ??= baseline.last;
        room.epoch ??= baseline.epoch;
        if (!room.roster) this.#setRoster(room, baseline);
        this.#takeNotices(room);
        this.#drain(room);
      } catch (error) {
        room.subscribed = undefined;
        throw error instanceof StoreUnavailable
          ? error
          : new StoreUnavailable(errorText(error));
      }
    })();
    return room.subscribed;
  }

  /** Subscribes to the room's channel (in a cluster, sharded). */
  #listen(room: RoomState): Promise<unknown> {
    return this.#cluster
      ? this.#cluster.sSubscribe(this.#channel(room.name), room.onMessage)
      : this.#sub.subscribe(this.#channel(room.name), room.onMessage);
  }

  /**
   * A message on the room's channel: an event, a turn's appends, or a
   * commit's notices.
   */
  #onMessage(room: RoomState, message: string): void {
    let got: ChannelEvent | PublishedBatch | PublishedNotices;
    try {
      got = JSON.parse(message);
    } catch {
      return;
    }
    if ("notices" in got) return this.#onNotices(room, got);
    if (!("events" in got)) return this.#onEvent(room, got);
    for (const event of got.events) this.#onEvent(room, event);
    const now = performance.now();
    this.#posted(room, got.from, now);
    if (room.outbox.length === 0) return; // still being filled in
    if (room.outboxFrom.size === 0) room.outboxSince = now;
    room.outboxFrom.add(got.from);
    if (room.coalescing && !this.#awaited(room, now)) this.#handOutRoom(room);
  }

  /**
   * Notices (reactions) go to the listeners after the event they came
   * after, as events do (the outbox): at once if it is delivered here,
   * else once it is (they have no id: nothing here skips them as seen).
   */
  #onNotices(room: RoomState, published: PublishedNotices): void {
    room.notices.push(published);
    this.#takeNotices(room);
  }

  /** The waiting notices whose event has been delivered go to the outbox. */
  #takeNotices(room: RoomState): void {
    const delivered = room.delivered;
    if (delivered === undefined) return;
    let taken = 0;
    for (const { after, notices } of room.notices) {
      if (after > delivered) break;
      room.outbox.push(...notices);
      taken++;
    }
    if (taken === 0) return;
    room.notices.splice(0, taken);
    if (!room.coalescing) this.#handOutRoom(room);
  }

  #onEvent(room: RoomState, event: ChannelEvent): void {
    if (event.type === "gone") {
      room.gone.push(event);
      return this.#takeGone(room);
    }
    if (event.type === "typing") {
      // After the events taken before it, not ahead of them.
      if (room.outbox.length > 0) return void room.outbox.push(event);
      for (const onEvent of room.listeners) onEvent(event);
      return;
    }
    if (room.delivered === undefined || room.filling) {
      room.buffer.push(event);
      return;
    }
    if (event.id === 1 && room.delivered > 0 && room.members === 0) {
      this.#startedOver(room);
    }
    if (event.id <= room.delivered) return;
    if (event.id === room.delivered + 1) return this.#deliver(room, event);
    room.buffer.push(event);
    this.#fill(room);
  }

  /**
   * A room subscribed to here with nobody here in it (a read marker's
   * watch: see `subscribe`) expired and was made again: its first event
   * came, or a join here found a new epoch. Its delivery starts over from
   * its first event (read from the stream, whatever came already), its
   * epoch is the next join's, and its members are read again. (A room
   * somebody here is in does not expire; one whose data Redis lost is the
   * resync's to settle.)
   */
  #startedOver(room: RoomState): void {
    this.#log("info", "redis_room_started_over", { room: room.name });
    room.delivered = 0;
    room.epoch = undefined;
    room.recent = [];
    room.buffer = [];
    room.notices = [];
    this.#rebaseline(room);
    this.#fill(room);
  }

  /**
   * Takes the next event in order. The listeners get it once the pub/sub
   * reads of this turn are done, so that events arriving in several reads
   * still reach main.ts in one turn (one JSON batch per client).
   */
  #deliver(room: RoomState, event: RoomEvent): void {
    this.#keep(room, event);
    this.#takeRoster(room, event);
    room.delivered = event.id;
    room.handedOver = true;
    room.outbox.push(event);
    if (room.notices.length > 0) this.#takeNotices(room);
    if (!room.coalescing) this.#handOutRoom(room);
  }

  /** Nothing more goes to the listeners (the store is closing or crashed). */
  #stopHandOut(): void {
    if (this.#handOut) clearImmediate(this.#handOut);
    this.#handOut = undefined;
    for (const room of this.#rooms.values()) {
      clearTimeout(room.coalescing);
      room.coalescing = undefined;
    }
  }

  /** The room's outbox goes out at the end of the turn. */
  #handOutRoom(room: RoomState): void {
    clearTimeout(room.coalescing);
    room.coalescing = undefined;
    this.#outboxes.add(room);
    this.#handOut ??= setImmediate(() => this.#handOutAll());
  }

  /**
   * Each outbox to its room's listeners, but one that waits for the batches
   * of the processes `#awaited` names, at most `coalesceMs` after its first
   * batch came.
   */
  #handOutAll(): void {
    this.#handOut = undefined;
    const now = performance.now();
    for (const room of this.#outboxes) {
      if (room.coalescing) continue; // waits again (a new batch came)
      const waited = now - room.outboxSince;
      if (
        room.outboxFrom.size > 0 && waited < this.#coalesceMs &&
        this.#awaited(room, now)
      ) {
        room.coalescing = setTimeout(
          () => this.#handOutRoom(room),
          this.#coalesceMs - waited,
        );
        continue;
      }
      room.outboxFrom.clear();
      const events = room.outbox;
      room.outbox = [];
      for (const event of events) {
        for (const onEvent of room.listeners) onEvent(event);
      }
    }
    this.#outboxes.clear();
  }

  /** A batch of `process` came: it posts into the room, this often. */
  #posted(room: RoomState, process: string, now: number): void {
    const posting = room.posting.get(process);
    // After a pause it starts afresh: the pause says nothing of its pace.
    if (!posting || now - posting.at > this.#postingMs) {
      return void room.posting.set(process, { at: now });
    }
    const gap = now - posting.at;
    posting.every = posting.every === undefined
      ? gap
      : (posting.every + gap) / 2;
    posting.at = now;
  }

  /**
   * Whether the outbox waits for a process posting into the room: one
   * with no batch in it whose next batch is due before the wait ends (from
   * how often it posts; after its first batch, not known: it is waited
   * for). A process posting every 100 ms, whose last batch came 50 ms ago,
   * is not waited for by a 40 ms wait: it would only add the wait to every
   * message of a room where two processes post in turn.
   */
  #awaited(room: RoomState, now: number): boolean {
    const until = room.outboxSince + this.#coalesceMs;
    for (const [process, posting] of room.posting) {
      if (now - posting.at > this.#postingMs) room.posting.delete(process);
      else if (
        !room.outboxFrom.has(process) &&
        (posting.every === undefined || posting.at + posting.every <= until)
      ) return true;
    }
    return false;
  }

  /** The event is one of the room's recent events here (`recent`). */
  #keep(room: RoomState, event: RoomEvent): void {
    const recent = room.recent;
    if (recent.length > 0 && event.id <= recent.at(-1)!.id) return;
    recent.push(event);
    if (event.type === "delete") {
      const gone = recent.findIndex((kept) => kept.id === event.deleted);
      if (gone >= 0) recent.splice(gone, 1);
    }
    if (event.type === "edit") {
      const at = recent.findIndex((kept) => kept.id === event.target);
      const target = recent[at];
      if (target?.type === "message" || target?.type === "action") {
        recent[at] = { ...target, text: event.text, edited: event.edited };
      }
    }
    const most = 2 * this.#options.historySize;
    if (recent.length > most) recent.splice(0, recent.length - most / 2);
  }

  /**
   * A welcome's history: as Redis answered it, or (`historyHere`) the
   * room's events here between its bounds once delivery has reached the
   * welcome (`#membersAt` waited for it), if they are as many as Redis
   * has; else read from the stream. A history read becomes `recent`'s
   * events up to the welcome.
   */
  async #historyOf(
    room: RoomState,
    reply: JoinReply,
    since: number | undefined,
  ): Promise<RoomEvent[]> {
    const first = reply.historyFirst;
    if (first === undefined) {
      if (since === undefined || reply.gap) {
        this.#keepUpTo(room, reply.history, reply);
      }
      return reply.history;
    }
    // Only once delivery here has reached the welcome (after a roster read
    // again, the roster can be ahead of it): every event up to it is in
    // `recent` then, and every deletion among them applied.
    if (room.epoch === reply.epoch && (room.delivered ?? 0) >= reply.lastId) {
      const kept = room.recent.filter((event) =>
        event.id >= first && event.id <= reply.lastId
      );
      if (kept.length === reply.historyCount) return kept;
    }
    const read = await this.#stream(
      room.name,
      "XRANGE",
      `${first}-0`,
      `${reply.lastId}-0`,
    );
    this.#keepUpTo(room, read, reply);
    return read;
  }

  /**
   * `events` are the room's history as of the welcome: `recent` takes them
   * and keeps what it has after them (whose deletions apply to them too),
   * unless the room started over (a new epoch) since.
   */
  #keepUpTo(room: RoomState, events: RoomEvent[], reply: JoinReply): void {
    if (room.epoch !== undefined && room.epoch !== reply.epoch) {
      room.recent = [...events];
      return;
    }
    const later = room.recent.filter((event) => event.id > reply.lastId);
    const deleted = new Set(
      later.flatMap((event) => event.type === "delete" ? [event.deleted] : []),
    );
    room.recent = [
      ...events.filter((event) => !deleted.has(event.id)),
      ...later,
    ];
  }

  /**
   * The roster takes the event delivered next. After skipped ids (a gap
   * that the stream no longer held) it is read again.
   */
  #takeRoster(room: RoomState, event: RoomEvent): void {
    const roster = room.roster;
    if (!roster) {
      room.rosterQueue?.push(event);
      return;
    }
    if (event.id <= roster.id) return; // in its baseline already
    if (event.id > roster.id + 1) {
      this.#log("warn", "redis_roster_reread", { room: room.name });
      this.#rebaseline(room);
      room.rosterQueue!.push(event);
      return;
    }
    roster.apply(event);
    if (room.gone.length > 0) this.#takeGone(room);
    if (room.joinFloors.length === 0) roster.forgetBefore(roster.id);
    if (room.rosterWaiters.length > 0) this.#wakeJoins(room);
  }

  /**
   * The roster takes the notices of members out without an event once it
   * has the event each came after (they were published in that order).
   */
  #takeGone(room: RoomState): void {
    const roster = room.roster;
    if (!roster) return;
    const later: GoneNotice[] = [];
    for (const notice of room.gone) {
      if (notice.after <= roster.id) roster.gone(notice.nick, notice.after);
      else later.push(notice);
    }
    room.gone = later;
  }

  /** A roster from a baseline read, with what was taken meanwhile. */
  #setRoster(room: RoomState, baseline: Baseline): void {
    if (room.roster) return; // another read got there first
    room.roster = new Roster(
      baseline.last,
      baseline.members.map((member) => ({
        nick: member.nick,
        order: member.joinedId,
        verified: member.verified === true,
      })),
      nickKey,
    );
    // A notice from before the read is in it already (`after` below its
    // last id: that id came after the notice).
    room.gone = room.gone.filter((notice) => notice.after >= baseline.last);
    const queued = room.rosterQueue ?? [];
    room.rosterQueue = undefined;
    for (const event of queued) this.#takeRoster(room, event);
    this.#takeGone(room);
    this.#wakeJoins(room);
  }

  /** Reads the members again; what is taken meanwhile waits in a queue. */
  #rebaseline(room: RoomState): void {
    if (room.rosterReading) return;
    room.rosterReading = true;
    if (room.roster) {
      room.roster = undefined;
      room.rosterQueue = [];
    }
    this.#baseline(room.name).then(
      (baseline) => this.#setRoster(room, baseline),
      () => {}, // Redis is away: the resync reads it
    ).finally(() => room.rosterReading = false);
  }

  #baseline(room: string): Promise<Baseline> {
    const keys = this.#keys(room);
    return this.#run(BASELINE, [keys.meta, keys.nicks], {});
  }

  #wakeJoins(room: RoomState): void {
    const id = room.roster?.id;
    if (id === undefined) return;
    const waiting = room.rosterWaiters;
    room.rosterWaiters = waiting.filter((waiter) => waiter.id > id);
    for (const waiter of waiting) if (waiter.id <= id) waiter.wake();
  }

  /** Joins waiting for a roster fail: the store is closing or crashed. */
  #failJoins(): void {
    for (const room of this.#rooms.values()) {
      const waiting = room.rosterWaiters;
      room.rosterWaiters = [];
      for (const waiter of waiting) {
        waiter.fail(new StoreUnavailable("the store is closed"));
      }
    }
  }

  /** Forgets roster changes that no join in flight can need. */
  #trimRoster(room: RoomState): void {
    const roster = room.roster;
    if (!roster) return;
    roster.forgetBefore(
      room.joinFloors.length > 0 ? Math.min(...room.joinFloors) : roster.id,
    );
  }

  /**
   * The members a welcome with id `lastId` lists: the roster as of that id,
   * once delivery here has reached it (events after it reach the client by
   * delivery), if it counts as many as Redis did. Else (the room started
   * over with a new epoch since it was read, or a member went in a way the
   * roster could not place) read from Redis now, and the roster again.
   */
  async #membersAt(
    room: RoomState,
    reply: JoinReply,
  ): Promise<RosterAt> {
    if (room.epoch === undefined || room.epoch === reply.epoch) {
      if (!room.roster || room.roster.id < reply.lastId) {
        await new Promise<void>((wake, fail) =>
          room.rosterWaiters.push({ id: reply.lastId, wake, fail })
        );
      }
      const members = room.roster?.at(reply.lastId);
      if (members?.nicks.length === reply.members) return members;
      this.#log("warn", "redis_roster_missed", {
        room: room.name,
        lastId: reply.lastId,
        kept: members?.nicks.length ?? -1,
        members: reply.members,
      });
    }
    if (room.roster) this.#rebaseline(room);
    const holders = await this.#holders(room.name);
    return {
      nicks: holders.map((member) => member.nick),
      verified: holders.filter((member) => member.verified).map((member) =>
        member.nick
      ),
    };
  }

  /**
   * A tab joining a member whose other tabs are on other processes appends
   * nothing, and main.ts admits it once this process has delivered the
   * room's last id. When this process delivered nothing in the room yet
   * (only its baseline), that event is delivered again: no socket here has
   * had any event of the room, so it reaches only the arriving ones, which
   * skip it (it is in their history).
   */
  async #handOver(room: RoomState, lastId: number): Promise<void> {
    if (room.delivered === undefined || room.delivered > lastId) return;
    const id = `${lastId}-0`;
    const [event] = await this.#stream(room.name, "XRANGE", id, id);
    if (room.handedOver || !event) return;
    for (const onEvent of room.listeners) onEvent(event);
    room.handedOver = true;
  }

  /** Delivers buffered events in order; a gap is read from the stream. */
  #drain(room: RoomState): void {
    if (room.buffer.length === 0) return;
    const buffered = room.buffer.sort((a, b) => a.id - b.id);
    room.buffer = [];
    for (let i = 0; i < buffered.length; i++) {
      const event = buffered[i];
      if (event.id <= room.delivered!) continue;
      if (event.id !== room.delivered! + 1) {
        room.buffer = buffered.slice(i);
        return this.#fill(room);
      }
      this.#deliver(room, event);
    }
  }

  /** Reads what this process missed (after `delivered`) from the stream. */
  #fill(room: RoomState): void {
    if (room.filling || room.delivered === undefined) return;
    room.filling = true;
    const from = room.delivered + 1;
    this.#stream(room.name, "XRANGE", `${from}-0`, "+")
      .then((events) => {
        room.filling = false;
        for (const event of events) {
          if (event.id <= room.delivered!) continue;
          if (event.id !== room.delivered! + 1) {
            this.#log("warn", "redis_gap", {
              room: room.name,
              from: room.delivered! + 1,
              to: event.id - 1,
            });
          }
          this.#deliver(room, event);
        }
        // What is still buffered came after the read: in order, whatever
        // is missing is no longer in the stream.
        const rest = room.buffer.sort((a, b) => a.id - b.id);
        room.buffer = [];
        for (const event of rest) {
          if (event.id > room.delivered!) this.#deliver(room, event);
        }
      }, () => {
        room.filling = false; // Redis is away: the resync reads it again
      });
  }

  #onEvict(message: string): void {
    try {
      const [room, owner, reason] = JSON.parse(message) as [
        string,
        string,
        string | undefined,
      ];
      // With a reason it is a moderator's kick or ban (EXPEL).
      if (reason !== undefined) {
        return this.#options.onExpel?.(room, this.#local(owner), reason);
      }
      this.#options.onEvict(room, this.#local(owner));
    } catch (error) {
      this.#log("error", "redis_evict_failed", { error: errorText(error) });
    }
  }

  // -------------------------------------------------------------------------
  // Connection state, heartbeat, reaping
  // -------------------------------------------------------------------------

  #error(connection: string, error: unknown): void {
    if (this.#closed) return;
    if (this.#cmd.isReady && this.#sub.isReady) {
      this.#log("warn", "redis_error", { connection, error: errorText(error) });
    } else this.#down(connection, error);
  }

  #down(connection: string, error: unknown): void {
    if (this.#closed) return;
    this.#up = false;
    // Before `connect` resolves, its own error says what went wrong.
    if (!this.#downLogged && this.#started) {
      this.#downLogged = true;
      this.#log("error", "redis_down", { connection, error: errorText(error) });
    }
  }

  #ready(): void {
    this.#up = false; // until resynced
    if (this.#closed || !this.#cmd.isReady || !this.#sub.isReady) return;
    if (this.#timer === undefined) return; // connect() resyncs itself
    this.#resync().catch(() => {});
  }

  /**
   * After (re)connecting: heartbeat, the token secret, nicks reaped while
   * away put back, unknown leaves done, and every room's delivery caught up.
   */
  #resync(): Promise<void> {
    if (this.#resyncing) {
      this.#resyncAgain = true;
      return this.#resyncing;
    }
    this.#resyncing = (async () => {
      do {
        this.#resyncAgain = false;
        await this.#resyncOnce();
      } while (this.#resyncAgain);
    })().then(() => {
      this.#resyncing = undefined;
      if (this.#cmd.isReady && this.#sub.isReady && !this.#closed) {
        if (this.#downLogged) this.#log("info", "redis_up", {});
        this.#downLogged = false;
        this.#up = true;
      }
    }, (error) => {
      this.#resyncing = undefined;
      this.#log("warn", "redis_resync_failed", { error: errorText(error) });
      throw error;
    });
    return this.#resyncing;
  }

  async #resyncOnce(): Promise<void> {
    // After an outage every process comes back on its own retry schedule,
    // up to a reconnect delay apart: none is reaped for being later.
    this.#reapAfter = Date.now() + Math.max(
      this.#heartbeatMs * MISSED_BEATS,
      this.#started
        ? MAX_RECONNECT_DELAY_MS + RECONNECT_JITTER_MS + this.#heartbeatMs
        : 0,
    );
    await this.#heartbeat();
    const secretKey = this.#key("secret");
    await this.#command([
      "SET",
      secretKey,
      randomBytes(32).toString("base64"),
      "NX",
    ]);
    this.#secret = String(await this.#command(["GET", secretKey]));
    // A failover may have lost the last writes to this process's rooms:
    // their last ids back first, before a reclaim or a reap appends.
    for (const room of [...this.#rooms.values()]) await this.#keepLast(room);
    this.#roomsEntered.clear();
    for (const member of [...this.#members.values()]) {
      await this.#enterRoom(member.room);
      const owner = this.#global(member.owner);
      const { result: outcome } = await this.#decide(
        member.room,
        { owners: [owner], members: [nickKey(member.nick)] },
        (txn) => {
          const outcome = rules.reclaim(txn, { ...member, owner }, this.#proc);
          if (outcome !== "epoch" && !this.#cluster) {
            txn.plumb("procRooms", "SADD", member.room);
          }
          return outcome;
        },
      );
      if (outcome !== "ok") {
        this.#log("warn", "redis_member_lost", {
          room: member.room,
          nick: member.nick,
          outcome,
        });
      }
      if (outcome === "epoch" || outcome === "taken") {
        this.#options.onEvict(member.room, member.owner);
      }
    }
    await this.#settleOrphans();
    for (const room of [...this.#rooms.values()]) {
      if (room.listeners.size === 0) continue;
      if (!room.subscribed) {
        await this.#subscribed(room);
        continue;
      }
      await room.subscribed.catch(() => this.#subscribed(room));
      // In a cluster, node-redis forgets the sharded channels of a master
      // it no longer sees (a failover): subscribed again (a no-op for the
      // others).
      if (this.#cluster) await this.#listen(room);
      this.#fill(room);
      // Notices of members gone without an event may have been missed
      // while away (pub/sub keeps nothing): the members are read again.
      this.#rebaseline(room);
    }
  }

  /**
   * A room whose last id went back behind what was delivered here (a
   * failover lost its last writes) gets it back, so that no id is given
   * out twice (see {@linkcode KEEP_LAST}).
   */
  async #keepLast(room: RoomState): Promise<void> {
    if (room.delivered === undefined || room.epoch === undefined) return;
    const last = await this.#run(KEEP_LAST, [this.#keys(room.name).meta], {
      epoch: room.epoch,
      last: room.delivered,
    });
    if (last >= 0 && last < room.delivered) {
      this.#log("warn", "redis_events_lost", {
        room: room.name,
        from: last + 1,
        to: room.delivered,
      });
    }
  }

  async #heartbeat(): Promise<void> {
    await this.#command([
      "SET",
      this.#names.process(`hb:${this.#proc}`),
      "1",
      "PX",
      String(this.#heartbeatMs * MISSED_BEATS),
    ]);
    await this.#command(["SADD", this.#names.process("procs"), this.#proc]);
  }

  /**
   * Leaves (and joins) whose outcome is unknown (Redis went away) or that
   * found their room too busy: an owner still here keeps its connections
   * (set by the resync); any other loses all of them.
   */
  async #settleOrphans(): Promise<void> {
    while (this.#orphans.length > 0) {
      const orphan = this.#orphans[0];
      const local = `${orphan.room}\n${this.#local(orphan.owner)}`;
      if (!this.#members.has(local)) {
        await this.#leaveScript(
          orphan.room,
          orphan.owner,
          orphan.announce,
          Number.MAX_SAFE_INTEGER,
        );
      }
      this.#orphans.shift();
    }
  }

  #tick(): void {
    if (this.#closed || !this.available()) return;
    this.#heartbeat()
      // A leave that found its room too busy is tried again here.
      .then(() => this.#resyncing ? undefined : this.#settleOrphans())
      .then(() => Date.now() >= this.#reapAfter ? this.#reap() : undefined)
      .catch((error) =>
        this.#log("warn", "redis_heartbeat_failed", {
          error: errorText(error),
        })
      );
  }

  /** Announces the members of processes whose heartbeat expired as left. */
  async #reap(): Promise<void> {
    const procs = await this.#command([
      "SMEMBERS",
      this.#names.process("procs"),
    ]) as string[];
    for (const proc of procs) {
      if (proc === this.#proc) continue;
      if (
        await this.#command(["EXISTS", this.#names.process(`hb:${proc}`)]) !==
          0
      ) {
        continue;
      }
      const rooms = await this.#command([
        "SMEMBERS",
        this.#names.process(`procrooms:${proc}`),
      ]) as string[];
      let gone = 0;
      for (const room of rooms) {
        gone += (await this.#decide(
          room,
          { all: true },
          (txn) => rules.reap(txn, proc),
        )).result;
      }
      await this.#run(FORGET, [
        this.#names.process(`hb:${proc}`),
        this.#names.process(`procrooms:${proc}`),
        this.#names.process("procs"),
      ], { process: proc });
      this.#log(gone > 0 ? "warn" : "info", "redis_process_gone", {
        process: proc,
        members: gone,
      });
    }
  }

  // -------------------------------------------------------------------------
  // Commands
  // -------------------------------------------------------------------------

  #key(name: string): string {
    return this.#names.key(name);
  }

  #keys(room: string): RoomKeys {
    const base = this.#names.room(room);
    return {
      meta: base + "meta",
      events: base + "events",
      nicks: base + "nicks",
      owners: base + "owners",
      // In a cluster a process's rooms are in another slot: written by
      // the store around the commit (`#enterRoom`, `#leaveRoom`), never
      // by a script; this key of the room's slot stands in its place.
      procRooms: this.#cluster ? base + "procs" : this.#procRooms(),
      moderation: base + "mod",
      reserved: base + "reserved",
      posted: base + "posted",
      ops: base + "ops",
      edits: base + "edits",
      reactions: base + "reactions",
      invites: base + "invites",
    };
  }

  /** What every room script is told about the room. */
  #roomArgs(room: string): RoomArgs {
    return {
      channel: this.#channel(room),
      ...(this.#cluster ? { sharded: true } : {}),
      historySize: this.#options.historySize,
      maxHistoryBytes: this.#options.maxHistoryBytes,
      roomTtl: this.#options.roomTtl,
    };
  }

  /** Some of `owner`'s connections here leave (found by owner). */
  async #leaveScript(
    room: string,
    owner: string,
    announce: boolean,
    connections: number,
  ): Promise<boolean> {
    const { result } = await this.#decide(room, { owners: [owner] }, (txn) => {
      if (this.#localMembers(room) === 0 && !this.#cluster) {
        txn.plumb("procRooms", "SREM", room);
      }
      return rules.leave(txn, owner, this.#proc, connections, announce);
    });
    this.#leaveRoom(room);
    return result;
  }

  /**
   * In a cluster: the room goes in this process's rooms (where the reaper
   * looks) before a member of this process is committed there (a script
   * touches one slot, and this set is in the processes' one). One command
   * the first time per room; a room there with no member here is harmless
   * (the reaper finds nobody of this process in it).
   */
  async #enterRoom(room: string): Promise<void> {
    if (!this.#cluster || this.#roomsEntered.has(room)) return;
    await this.#command(["SADD", this.#procRooms(), room]);
    this.#roomsEntered.add(room);
  }

  /**
   * In a cluster: the room leaves this process's rooms once nobody of this
   * process is in it or on the way (checked as the command is sent, so a
   * later join's `#enterRoom` comes after it).
   */
  #leaveRoom(room: string): void {
    if (!this.#cluster || this.#localMembers(room) > 0) return;
    if (!this.#roomsEntered.delete(room)) return;
    this.#command(["SREM", this.#procRooms(), room]).catch(() => {});
  }

  /**
   * An owner as Redis knows it: a session's (main.ts's `s.…`) is the same on
   * every process; a connection's number is this process's, so it gets the
   * process id in front.
   */
  #global(owner: string): string {
    return /^\d+$/.test(owner) ? `${this.#proc}/${owner}` : owner;
  }

  /** The owner as main.ts names it here. */
  #local(owner: string): string {
    const prefix = `${this.#proc}/`;
    return owner.startsWith(prefix) ? owner.slice(prefix.length) : owner;
  }

  #channel(room: string): string {
    return this.#names.channel(room);
  }

  /** A person's read markers' hash. */
  #marks(person: string): string {
    return this.#names.marks(person);
  }

  #procRooms(): string {
    return this.#names.process(`procrooms:${this.#proc}`);
  }

  /**
   * This process's connections in the room, joined or holding a place (a
   * join in flight still holds one): while any, the room stays in
   * `procrooms`, where the reaper looks.
   */
  #localMembers(room: string): number {
    const state = this.#rooms.get(room);
    return state ? state.members + state.holds : 0;
  }

  #check(): void {
    if (!this.available()) throw new StoreUnavailable("redis is unreachable");
  }

  #track<T>(promise: Promise<T>): Promise<T> {
    this.#pending.add(promise);
    const forget = () => this.#pending.delete(promise);
    promise.then(forget, forget);
    return promise;
  }

  /** A command; a connection problem is {@linkcode StoreUnavailable}. */
  async #command(args: string[]): Promise<Reply> {
    try {
      return await this.#cmd.sendCommand(args) as Reply;
    } catch (error) {
      // A cluster moving slots (a failover) is as unavailable as a lost
      // connection.
      if (error instanceof ErrorReply && !clusterMoving(error)) throw error;
      throw new StoreUnavailable(errorText(error));
    }
  }

  /**
   * Runs a script (by hash; sent whole when Redis does not have it) with its
   * arguments as one JSON argument, and decodes its reply.
   */
  async #run<Args, Answer>(
    script: Script<Args, Answer>,
    keys: RoomKeys | string[],
    args: Args,
  ): Promise<Answer> {
    const keyNames = Array.isArray(keys) ? keys : keyList(keys);
    const rest = [String(keyNames.length), ...keyNames, JSON.stringify(args)];
    const evalSha = () => this.#command(["EVALSHA", script.sha, ...rest]);
    try {
      return script.decode(await evalSha());
    } catch (error) {
      if (!isErrorReply(error, "NOSCRIPT")) throw error;
      await this.#load(script);
      return script.decode(await evalSha());
    }
  }

  /**
   * Sends the script to Redis once, however many calls found it missing at
   * the same time (each joining user's first script, at start-up): one
   * SCRIPT LOAD instead of an EVAL of the whole text each.
   */
  #load(script: Script<unknown, unknown>): Promise<void> {
    let loading = this.#loading.get(script.sha);
    if (!loading) {
      loading = this.#cluster
        ? this.#cluster.loadScript(script.text).catch((error) => {
          throw error instanceof ErrorReply && !clusterMoving(error)
            ? error
            : new StoreUnavailable(errorText(error));
        })
        : this.#command(["SCRIPT", "LOAD", script.text]).then(() => {});
      this.#loading.set(script.sha, loading);
      loading.finally(() => this.#loading.delete(script.sha)).catch(() => {});
    }
    return loading;
  }

  /**
   * The webhooks' outbox for a commit that appends events (see
   * `CommitArgs.outbox`): the room's streams and the types wanted.
   */
  #outboxArgs(
    room: string,
    decided: Pick<CommitArgs, "events">,
  ): Pick<CommitArgs, "outbox"> {
    const streams = this.#options.outbox?.streams;
    if (!streams || decided.events.length === 0) return {};
    this.#outboxTypes ??= Object.fromEntries(
      [...this.#options.outbox!.types].map((type) => [type, true as const]),
    );
    return {
      outbox: {
        room,
        streams: streams(room),
        types: this.#outboxTypes,
        ...(this.#options.outbox!.expiring ? { persist: true } : {}),
      },
    };
  }

  /** Reads what `plan` names of the room, at one instant. */
  async #read(room: string, plan: ReadPlan): Promise<Snapshot> {
    return snapshotOf(await this.#run(READ, this.#keys(room), plan), plan);
  }

  /** The rules' view of the room on what was read. */
  #txn(room: string, snapshot: Snapshot): RedisTxn {
    return new RedisTxn(snapshot, {
      name: room,
      channel: this.#channel(room),
      evictPrefix: this.#names.evict(""),
      roomTtl: this.#options.roomTtl,
    });
  }

  /** Commits what a rule decided on `txn`, if nothing it read has changed. */
  async #commit(
    room: string,
    txn: RedisTxn,
    extra: Partial<Pick<CommitArgs, "before" | "after" | "from" | "hold">> = {},
  ) {
    const decided = txn.commit();
    const outbox = this.#outboxArgs(room, decided);
    const reply = await this.#run(COMMIT, this.#keys(room), {
      ...this.#roomArgs(room),
      ...decided,
      before: [],
      after: [],
      ...extra,
      ...outbox,
    });
    if ("behind" in reply) this.#decisions.again++;
    else {
      this.#decisions.commits++;
      // A cluster's outbox finds the rooms with deliveries by an index.
      if (outbox.outbox) this.#options.outbox?.appended?.(room);
    }
    return reply;
  }

  /**
   * Runs a rule on the room as Redis has it now: reads what `plan` names,
   * decides (`decide`, on a {@linkcode RedisTxn}), and commits it if
   * nothing it read has changed meanwhile; else reads and decides again.
   * The room's changes asked in one turn (or while its last commit was on
   * its way) are decided together, in the order asked, on one read, and
   * committed as one: a hundred joins at once are one read and one commit,
   * not a hundred that each find the room changed by the others. The
   * room's appends not sent yet go first (they were asked first).
   */
  #decide<T>(
    room: string,
    plan: ReadPlan,
    decide: (txn: RedisTxn) => T,
    extra: Partial<Pick<CommitArgs, "before" | "after">> = {},
  ): Promise<Decided<T>> {
    return new Promise<Decided<T>>((resolve, reject) => {
      let queue = this.#decisionQueues.get(room);
      if (!queue) this.#decisionQueues.set(room, queue = []);
      queue.push({
        seq: ++this.#seq,
        plan,
        decide,
        before: extra.before ?? [],
        after: extra.after ?? [],
        resolve: resolve as (decided: Decided<unknown>) => void,
        reject,
      });
      if (!this.#deciding.has(room)) {
        this.#deciding.add(room);
        setImmediate(() =>
          this.#decideQueued(room).catch((error) =>
            this.#log("error", "redis_decide_failed", {
              room,
              error: errorText(error),
            })
          )
        );
      }
    });
  }

  /** Decides and commits the room's queued changes, a batch at a time. */
  async #decideQueued(room: string): Promise<void> {
    try {
      for (;;) {
        const queue = this.#decisionQueues.get(room);
        if (!queue || queue.length === 0) break;
        // A batch ends before the first change asked after an append that
        // waits (that append goes between), and at MAX_BATCH_FIELDS.
        const nextAppend = this.#appends.get(room)?.find((waiting) =>
          waiting.seq > queue[0].seq
        )?.seq ?? Infinity;
        let fields = 0;
        let size = 0;
        while (size < queue.length && queue[size].seq < nextAppend) {
          fields += planSize(queue[size].plan);
          if (size > 0 && fields > MAX_BATCH_FIELDS) break;
          size++;
        }
        const batch = queue.splice(0, size);
        if (queue.length === 0) this.#decisionQueues.delete(room);
        this.#inFlight.set(room, batch[0].seq);
        await this.#sendAppends(room).catch(() => {});
        try {
          await this.#decideBatch(room, batch);
        } finally {
          this.#inFlight.delete(room);
        }
        // The appends asked before the next change go now.
        this.#sendAppends(room).catch(() => {});
      }
    } finally {
      this.#deciding.delete(room);
      this.#inFlight.delete(room);
      if (this.#appends.has(room) && !this.#closed) {
        this.#appendsDue ??= setImmediate(() => this.#flushAppends());
      }
    }
  }

  /**
   * One batch: read what every change names, decide each in turn on the
   * same view (each sees the ones before it), commit. A change whose rule
   * throws (no nick left) fails alone: the rest are decided again without
   * it, on a fresh read.
   */
  async #decideBatch(room: string, batch: PendingDecision[]): Promise<void> {
    let pending = batch;
    let attempts = 0;
    while (pending.length > 0) {
      if (this.#closed) {
        for (const item of pending) {
          item.reject(new StoreUnavailable("the store is closed"));
        }
        return;
      }
      if (attempts++ >= MAX_DECISIONS) {
        const error = this.#tooBusy(room);
        for (const item of pending) item.reject(error);
        return;
      }
      let txn: RedisTxn;
      try {
        txn = this.#txn(room, await this.#read(room, mergedPlan(pending)));
      } catch (error) {
        for (const item of pending) item.reject(error);
        return;
      }
      const decided: { result: unknown; upTo: number; count: number }[] = [];
      const failed = pending.findIndex((item) => {
        try {
          const result = item.decide(txn);
          decided.push({ result, upTo: txn.appendedCount, count: txn.count });
          return false;
        } catch (error) {
          item.reject(error);
          return true;
        }
      });
      if (failed >= 0) {
        pending = pending.filter((_, i) => i !== failed);
        attempts--; // not the room's doing
        continue;
      }
      // The batch's reads, each asked once (every join's after-reads are
      // the same commands), and where each change's answers are.
      const before = shared(pending.map((item) => item.before));
      const after = shared(pending.map((item) => item.after));
      let reply;
      try {
        reply = await this.#commit(room, txn, {
          before: before.commands,
          after: after.commands,
        });
      } catch (error) {
        for (const item of pending) item.reject(error);
        return;
      }
      if ("behind" in reply) {
        // Another process committed first: a moment's jitter, so that two
        // processes deciding in step do not meet again.
        await new Promise((wake) =>
          setTimeout(wake, Math.random() * attempts * BACKOFF_MS)
        );
        continue;
      }
      const view = txn.viewAfter();
      if (view && this.#rooms.has(room)) this.#postViews.set(room, view);
      pending.forEach((item, i) => {
        item.resolve({
          ...decided[i],
          txn,
          events: reply.events,
          before: before.places[i].map((at) => reply.before[at]),
          after: after.places[i].map((at) => reply.after[at]),
        });
      });
      return;
    }
  }

  /**
   * A turn's posts, committed but held back (`waitReplicas`): once
   * replicas have them (`WAIT`, on the connection that wrote them), they
   * are published as the commit would have. Fewer replicas within `waitMs`
   * still deliver them: the commit is done and cannot be taken back, and
   * an error would have the sender post again a message the room has; the
   * shortfall is counted (`replicaAcks`, `/metrics`) and logged.
   */
  async #publishReplicated(room: string, events: RoomEvent[]): Promise<void> {
    const wanted = this.#options.waitReplicas ?? 0;
    const acknowledged = await this.#command([
      "WAIT",
      String(wanted),
      String(this.#options.waitMs ?? WAIT_REPLICAS_MS),
    ]) as number;
    if (acknowledged >= wanted) {
      this.#replicaAcks.acknowledged++;
      this.#shortLogged = false;
    } else {
      this.#replicaAcks.short++;
      // Once per run of them: a replica gone shorts every turn.
      if (!this.#shortLogged) {
        this.#log("warn", "redis_replicas_short", { wanted, acknowledged });
      }
      this.#shortLogged = true;
    }
    await this.#publishBatch(room, events);
  }

  /** A turn's events as the commit script publishes them. */
  async #publishBatch(room: string, events: RoomEvent[]): Promise<void> {
    await this.#command([
      this.#cluster ? "SPUBLISH" : "PUBLISH",
      this.#channel(room),
      JSON.stringify({ from: this.#proc, events }),
    ]);
  }

  /**
   * Turns of posts replicas acknowledged (`waitReplicas`), and those
   * delivered with fewer.
   */
  replicaAcks(): { acknowledged: number; short: number } {
    return { ...this.#replicaAcks };
  }

  /** A change that found the room changed every time it was decided. */
  #tooBusy(room: string): RoomTooBusy {
    this.#log("warn", "redis_too_busy", { room, tries: MAX_DECISIONS });
    return new RoomTooBusy(`room ${room} is too busy: try again`);
  }

  /**
   * Commits so far, and decisions made again because the room had changed
   * between a rule's read and its commit (bench/README reports them).
   */
  decisions(): { commits: number; again: number } {
    return { ...this.#decisions };
  }

  #token(room: string, epoch: string, joinedId: number): string {
    return reconnectToken(this.#secret, room, epoch, joinedId);
  }

  #log(level: "info" | "warn" | "error", event: string, fields: LogFields) {
    this.#options.log?.(level, event, fields);
  }
}

/**
 * What a join's commit says, as the welcome needs it: its `before` reads
 * (what a resuming client missed, the room's last id and oldest kept event
 * before the batch) and `after` reads (last id, members, moderators, topic
 * and slow mode, oldest kept event, history length, the live window's
 * reactions, and the history unless the process keeps it), each as of
 * this join: the batch's later changes (their events, their members) are
 * not its. (Its reactions are the batch's end's: a later change's notice
 * comes after the welcome, and says what is then.)
 */
function joinReply(
  decided: Decided<rules.JoinDecision>,
  resume: {
    /** The client asked to resume (its `since` may be past reading). */
    asked: boolean;
    /** The id it resumes after, when one Redis could give (read before). */
    since?: number;
    epoch?: string;
  },
): JoinReply {
  const { result, txn, events, upTo, before, after } = decided;
  const [last, members, ops, mod, oldest, length, reactions, all] = after as [
    string,
    number,
    string[],
    string[],
    [string, string[]][],
    number,
    string[],
    [string, string[]][] | undefined,
  ];
  const epoch = txn.epoch!;
  // Ids in a commit are consecutive: the batch's events after this join's
  // are the last ones.
  const later = events.length - upTo;
  const lastId = Number(last) - later;
  const entryId = (entries: [string, string[]][]) =>
    entries[0] === undefined ? undefined : parseInt(entries[0][0]);
  const eventsOf = (entries: [string, string[]][]) =>
    entries.map(([, fields]) => JSON.parse(fields[1]) as RoomEvent)
      .filter((event) => event.id <= lastId);
  let missed: RoomEvent[] | undefined;
  const { since } = resume;
  if (since !== undefined) {
    const [after, lastBefore, oldestBefore] = before as [
      [string, string[]][],
      string | null,
      [string, string[]][],
    ];
    const kept = {
      epoch,
      lastId: Number(lastBefore ?? 0),
      oldest: entryId(oldestBefore),
    };
    if (canResume(kept, since, resume.epoch ?? "")) {
      missed = [...eventsOf(after), ...events.slice(0, upTo)];
    }
  }
  const moderation = moderationOf(mod);
  return {
    nick: result.member.nick,
    taken: result.taken,
    present: result.present,
    epoch,
    lastId,
    joinedId: txn.resolve(result.member.joinedId, events),
    claimedId: txn.resolve(result.member.claimedId, events),
    gap: resume.asked && missed === undefined,
    history: missed ?? (all ? eventsOf(all) : []),
    ...(missed === undefined && !all
      ? {
        historyFirst: entryId(oldest) ?? lastId + 1,
        historyCount: length - later,
      }
      : {}),
    // The members now, but for the batch's own changes after this join
    // (other processes' changes since the read are in HLEN).
    members: members - (txn.count - decided.count),
    moderators: ops.map((text) => JSON.parse(text) as Member)
      .filter((op) => op.joinedId <= lastId)
      .sort((a, b) => a.joinedId - b.joinedId).map((op) => op.nick),
    topic: moderation.topic,
    slowSeconds: moderation.slow,
    private: moderation.private,
    reactions,
  };
}

/** A person's markers' hash (HGETALL: room, JSON, …), by room. */
function markersOf(fields: string[]): Map<string, ReadMarker> {
  const markers = new Map<string, ReadMarker>();
  for (let i = 0; i < fields.length; i += 2) {
    markers.set(fields[i], JSON.parse(fields[i + 1]) as ReadMarker);
  }
  return markers;
}

/**
 * Is `error` a cluster's answer while its slots move or a master is being
 * replaced (a failover), not a fault of the command?
 */
function clusterMoving(error: ErrorReply): boolean {
  return /^(CLUSTERDOWN|TRYAGAIN|MOVED|ASK|READONLY|MASTERDOWN|LOADING)\b/
    .test(error.message);
}

/** Is `error` Redis's error reply with this code (`NOSCRIPT`)? */
function isErrorReply(error: unknown, code: string): error is ErrorReply {
  return error instanceof ErrorReply && error.message.startsWith(code);
}

function errorText(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/** The URL without its password, for logs. */
function redactUrl(url: string): string {
  return redactRedisUrl(url);
}

// How main.ts opens this store (rooms.ts `StoreFactory`), checked here.
RedisStore satisfies StoreFactory<RedisStoreOptions>;
