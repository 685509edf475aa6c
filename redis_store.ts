/**
 * The shared room store: several deno-chat processes, one chat, through
 * Redis. Loaded by main.ts only with `--redis URL`.
 *
 * Per room (keys under `chat:`):
 *
 * - `room:NAME:meta`, a hash: `epoch`, `last` (the last event id) and
 *   `bytes` (what the history costs, by main.ts's `eventBytes`);
 * - `room:NAME:events`, a stream of the last `historySize` events (at most
 *   `maxHistoryBytes`), entry id `N-0` for event id N, fields `e` (the
 *   event's JSON) and `b` (its cost);
 * - `room:NAME:nicks`, a hash: nick key → holder `{n, u, o, j, k}` (nick,
 *   its length, owner, id of its join event, connections per process);
 * - `room:NAME:owners`, a hash: owner → nick key (a session's tabs, on any
 *   process, are one member);
 * - channel `ev:NAME`: every event, published by the script that appends it,
 *   and typing notices (kept nowhere).
 *
 * Every change to a room is one Lua script (append, join, leave, rename,
 * reap), so ids, history, nicks and publish move together. A process
 * subscribes to the channels of the rooms it has connections in and delivers
 * what comes, its own events included, in id order; a gap in the ids (a
 * reconnect) is filled from the stream.
 *
 * Per process: `hb:PID`, a heartbeat key with a TTL; `procs`, the set of
 * process ids; `procrooms:PID`, the rooms it has members in; channel
 * `evict:PID`, for a token takeover of one of its connections. A process
 * whose heartbeat expired is reaped by the survivors: each of its members is
 * announced as left once (the script removing them is atomic).
 *
 * @module
 */

import { createClient, ErrorReply } from "redis";
import { createHash, createHmac, randomBytes } from "node:crypto";
import type {
  Joined,
  JoinRequest,
  LiveEvent,
  MemoryStoreOptions,
  NewEvent,
  RoomEvent,
  RoomStore,
  TypingEvent,
} from "./main.ts";
import type * as Main from "./main.ts";

/**
 * main.ts's values (`StoreUnavailable`, `nickKey`, …), imported without
 * waiting: under `deno run main.ts` this module is imported while main.ts
 * still runs its top-level `await main()`, so a static import of main.ts
 * (or awaiting this one during `connect`) would wait for itself. It resolves
 * once the CLI has started; every store call awaits it first.
 */
let shared: typeof Main | undefined;
const sharedReady: Promise<typeof Main> = import("./main.ts").then(
  (module) => shared = module,
);

/** main.ts's `StoreUnavailable` (so main.ts tells the client `unavailable`). */
function unavailable(message: string): Error {
  return shared ? new shared.StoreUnavailable(message) : new Error(message);
}

function isUnavailable(error: unknown): boolean {
  return shared !== undefined && error instanceof shared.StoreUnavailable;
}

type LogFields = Record<string, string | number | boolean | undefined>;

/** What {@linkcode RedisStore.connect} needs. */
export interface RedisStoreOptions extends MemoryStoreOptions {
  /** `redis://[user:password@]host:port[/db]`. */
  url: string;
  /** Seconds an empty room keeps its history and epoch. */
  roomTtl: number;
  /** main.ts's logger. */
  log?: (
    level: "info" | "warn" | "error",
    event: string,
    fields?: LogFields,
  ) => void;
  /**
   * Heartbeat interval in ms; a process is dead after three missed ones.
   * Default 3000, or the environment variable `CHAT_REDIS_HEARTBEAT_MS`.
   */
  heartbeatMs?: number;
  /** Key prefix. @default {"chat:"} */
  prefix?: string;
  /** How long `connect` waits for Redis, in ms. @default {5000} */
  connectTimeoutMs?: number;
}

type Client = ReturnType<typeof createClient>;

/** A Redis reply as node-redis gives it for RESP2. */
type Reply = string | number | null | Reply[];

/** A stored nick holder: one member (a session's tabs count as one). */
interface Holder {
  /** The nick. */
  n: string;
  /** Its length in UTF-16 units (for the history's byte count). */
  u: number;
  /** Its owner, unique across processes (see `#global`). */
  o: string;
  /** Id of its join event (its token is derived from it). */
  j: number;
  /** Its connections, by process. */
  k: Record<string, number>;
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
  outbox: RoomEvent[];
  epoch?: string;
  /** Events received while the baseline or a gap is being read. */
  buffer: RoomEvent[];
  filling: boolean;
  onMessage: (message: string) => void;
}

/** A local member, kept to reclaim its nick after a long Redis outage. */
interface Member {
  room: string;
  /** As main.ts names it. */
  owner: string;
  nick: string;
  joinedId: number;
  epoch: string;
  /** Its connections in this process. */
  connections: number;
}

// ---------------------------------------------------------------------------
// Lua scripts. Room scripts: KEYS[1] meta, KEYS[2] events, KEYS[3] nicks
// (nick key → holder JSON), KEYS[4] owners (owner → nick key), KEYS[5]
// procrooms of this process; ARGV[1] channel, ARGV[2] history size, ARGV[3]
// room TTL, ARGV[4] history bytes, then each script's own (X[1]…).
// ---------------------------------------------------------------------------

const PRELUDE = `
local X = {}
for i = 5, #ARGV do X[#X + 1] = ARGV[i] end
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
-- Appends and publishes an event; history keeps at most ARGV[2] events and
-- ARGV[4] bytes (each entry's cost in its field b), oldest out first.
local function append(body, cost)
  local id = redis.call('HINCRBY', KEYS[1], 'last', 1)
  local sid = string.format('%d', id)
  local ev = string.sub(body, 1, -2) .. ',"id":' .. sid ..
    ',"ts":' .. string.format('%d', now_ms()) .. '}'
  redis.call('XADD', KEYS[2], sid .. '-0', 'e', ev, 'b', cost)
  local bytes = redis.call('HINCRBY', KEYS[1], 'bytes', cost)
  local count = redis.call('XLEN', KEYS[2])
  local most, maxbytes = tonumber(ARGV[2]), tonumber(ARGV[4])
  while count > 0 and (count > most or bytes > maxbytes) do
    local first = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 1)[1]
    redis.call('XDEL', KEYS[2], first[1])
    bytes = redis.call('HINCRBY', KEYS[1], 'bytes', -tonumber(first[2][4]))
    count = count - 1
  end
  redis.call('PUBLISH', ARGV[1], ev)
  return ev
end
-- A join or leave event of a nick of u UTF-16 units.
local function nickevent(kind, nick, u)
  return append('{"type":"' .. kind .. '","nick":' .. cjson.encode(nick) .. '}',
    64 + 2 * (string.len(kind) + u))
end
local function total(k)
  local n = 0
  for _, c in pairs(k) do n = n + c end
  return n
end
local function holder(key)
  local h = redis.call('HGET', KEYS[3], key)
  if h then return cjson.decode(h) end
  return nil
end
local function keep(key, d)
  redis.call('HSET', KEYS[3], key, cjson.encode(d))
  redis.call('HSET', KEYS[4], d.o, key)
end
-- The member is out: announced if others remain; the last one out starts
-- the room's expiry.
local function drop(key, d, announce)
  redis.call('HDEL', KEYS[3], key)
  redis.call('HDEL', KEYS[4], d.o)
  if redis.call('HLEN', KEYS[3]) == 0 then
    redis.call('EXPIRE', KEYS[1], ARGV[3])
    redis.call('EXPIRE', KEYS[2], ARGV[3])
  elseif announce then
    nickevent('leave', d.n, d.u)
  end
end
local function history()
  local out = {}
  for _, e in ipairs(redis.call('XRANGE', KEYS[2], '-', '+')) do
    out[#out + 1] = e[2][2]
  end
  return out
end
`;

/** X[1] the event body (JSON without id and ts), X[2] its cost. */
const APPEND = `
if redis.call('HEXISTS', KEYS[1], 'epoch') == 0 then
  return redis.error_reply('NOROOM the room is gone')
end
return append(X[1], tonumber(X[2]))
`;

/**
 * X[1] process, [2] owner, [3] epoch if new, [4] wanted key or '', [5]
 * wanted nick, [6] its UTF-16 length, [7] takeover: the holder's owner or
 * '', [8] its join id, [9] since or '', [10] client's epoch, [11] room, [12]
 * evict channel prefix, then triples (key, nick, length): random nicks.
 * Returns {nick, taken, epoch, lastId, history, gap, holders, present, j,
 * claim}: claim is the id of the event that gave the nick (join or rename).
 */
const JOIN = `
redis.call('HSETNX', KEYS[1], 'epoch', X[3])
redis.call('PERSIST', KEYS[1])
redis.call('PERSIST', KEYS[2])
redis.call('SADD', KEYS[5], X[11])
local epoch = redis.call('HGET', KEYS[1], 'epoch')
local function last()
  return tonumber(redis.call('HGET', KEYS[1], 'last') or '0')
end
-- What a resuming client missed, read before its join is appended.
local function missed()
  if X[9] == '' then return nil end
  local since = tonumber(X[9])
  if X[10] ~= epoch or since > last() then return nil end
  local first = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 1)
  local oldest = last() + 1
  if #first > 0 then oldest = tonumber(string.match(first[1][1], '^(%d+)')) end
  if since < oldest - 1 then return nil end
  local out = {}
  local from = string.format('%d', since + 1) .. '-0'
  for _, e in ipairs(redis.call('XRANGE', KEYS[2], from, '+')) do
    out[#out + 1] = e[2][2]
  end
  return out
end
local gap = 0
-- One more connection of a member (another tab of its session).
local mine = redis.call('HGET', KEYS[4], X[2])
if mine then
  local d = holder(mine)
  if d and d.o == X[2] then
    d.k[X[1]] = (d.k[X[1]] or 0) + 1
    keep(mine, d)
    local got = missed()
    if X[9] ~= '' and got == nil then gap = 1 end
    return {d.n, 0, epoch, last(), got or history(), gap,
      redis.call('HVALS', KEYS[3]), 1, d.j, d.c or d.j}
  end
  redis.call('HDEL', KEYS[4], X[2])
end
if X[7] ~= '' then
  local d = holder(X[4])
  if d and d.o == X[7] and string.format('%d', d.j) == X[8] then
    redis.call('HDEL', KEYS[3], X[4])
    redis.call('HDEL', KEYS[4], d.o)
    nickevent('leave', d.n, d.u)
    for proc, _ in pairs(d.k) do
      redis.call('PUBLISH', X[12] .. proc, cjson.encode({X[11], d.o}))
    end
  end
end
local nick, key, units = nil, nil, 0
local taken = 0
if X[4] ~= '' then
  if redis.call('HEXISTS', KEYS[3], X[4]) == 0 then
    nick, key, units = X[5], X[4], tonumber(X[6])
  else
    taken = 1
  end
end
if not nick then
  for i = 13, #X, 3 do
    if redis.call('HEXISTS', KEYS[3], X[i]) == 0 then
      key, nick, units = X[i], X[i + 1], tonumber(X[i + 2])
      break
    end
  end
end
if not nick then return redis.error_reply('NICKS every candidate is taken') end
local got = missed()
if X[9] ~= '' and got == nil then gap = 1 end
local joined = nickevent('join', nick, units)
local id = last()
local k = {}
k[X[1]] = 1
keep(key, {n = nick, u = units, o = X[2], j = id, k = k})
if got then
  got[#got + 1] = joined
else
  got = history()
end
return {nick, taken, epoch, id, got, gap, redis.call('HVALS', KEYS[3]), 0, id,
  id}
`;

/**
 * X[1] nick key ('' = the owner's), [2] process, [3] owner, [4] announce
 * '1', [5] no local member left in the room '1', [6] room, [7] connections
 * that leave.
 */
const LEAVE = `
if X[5] == '1' then redis.call('SREM', KEYS[5], X[6]) end
local key = X[1]
if key == '' then
  key = redis.call('HGET', KEYS[4], X[3])
  if not key then return 0 end
end
local d = holder(key)
if not d or d.o ~= X[3] then return 0 end
local left = (d.k[X[2]] or 0) - tonumber(X[7])
if left > 0 then d.k[X[2]] = left else d.k[X[2]] = nil end
if total(d.k) > 0 then
  keep(key, d)
  return 0
end
drop(key, d, X[4] == '1')
return 1
`;

/**
 * X[1] from key, [2] to key, [3] owner, [4] to, [5] its UTF-16 length, [6]
 * body, [7] its cost.
 */
const RENAME = `
local d = holder(X[1])
if not d or d.o ~= X[3] then return 0 end
if X[2] ~= X[1] and redis.call('HEXISTS', KEYS[3], X[2]) == 1 then return 0 end
redis.call('HDEL', KEYS[3], X[1])
d.n = X[4]
d.u = tonumber(X[5])
local renamed = append(X[6], tonumber(X[7]))
d.c = tonumber(redis.call('HGET', KEYS[1], 'last'))
keep(X[2], d)
return renamed
`;

/**
 * X[1] a dead process: its connections are gone; members with none left
 * leave, each announced once.
 */
const REAP = `
local gone = {}
local all = redis.call('HGETALL', KEYS[3])
for i = 1, #all, 2 do
  local d = cjson.decode(all[i + 1])
  if d.k[X[1]] then
    d.k[X[1]] = nil
    if total(d.k) == 0 then
      gone[#gone + 1] = {all[i], d}
    else
      keep(all[i], d)
    end
  end
end
table.sort(gone, function(a, b) return a[2].j < b[2].j end)
for _, g in ipairs(gone) do drop(g[1], g[2], true) end
return #gone
`;

/**
 * After an outage: puts a local member back (its connections here) if it
 * was reaped meanwhile. X[1] key, [2] process, [3] owner, [4] nick, [5] its
 * UTF-16 length, [6] join id, [7] room, [8] the epoch it joined, [9] its
 * connections here.
 */
const RECLAIM = `
if redis.call('HGET', KEYS[1], 'epoch') ~= X[8] then return 'epoch' end
redis.call('SADD', KEYS[5], X[7])
local current = redis.call('HGET', KEYS[4], X[3])
if current then
  local d = holder(current)
  if d and d.o == X[3] then
    d.k[X[2]] = tonumber(X[9])
    keep(current, d)
    return 'ok'
  end
end
if redis.call('HEXISTS', KEYS[3], X[1]) == 1 then return 'taken' end
redis.call('PERSIST', KEYS[1])
redis.call('PERSIST', KEYS[2])
nickevent('join', X[4], tonumber(X[5]))
local k = {}
k[X[2]] = tonumber(X[9])
keep(X[1], {n = X[4], u = tonumber(X[5]), o = X[3], j = tonumber(X[6]), k = k})
return 'rejoined'
`;

/** KEYS[1] hb, [2] procrooms, [3] procs; ARGV[1] the process. */
const FORGET = `
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('DEL', KEYS[2])
  redis.call('SREM', KEYS[3], ARGV[1])
  return 1
end
return 0
`;

interface Script {
  text: string;
  sha: string;
}

function script(body: string, prelude = true): Script {
  const text = prelude ? PRELUDE + body : body;
  return { text, sha: createHash("sha1").update(text).digest("hex") };
}

const SCRIPTS = {
  append: script(APPEND),
  join: script(JOIN),
  leave: script(LEAVE),
  rename: script(RENAME),
  reap: script(REAP),
  reclaim: script(RECLAIM),
  forget: script(FORGET, false),
};

const DEFAULT_HEARTBEAT_MS = 3000;
/** Missed heartbeats before a process counts as dead. */
const MISSED_BEATS = 3;
/**
 * Per-command limit: a Redis that stops answering (but keeps the connection)
 * is unavailable. Generous, since it also counts this process's own event
 * loop lag under load; a closed connection fails commands at once.
 */
const COMMAND_TIMEOUT_MS = 10_000;

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
  #cmd: Client;
  #sub: Client;
  #prefix: string;
  #proc = randomBytes(6).toString("hex");
  #heartbeatMs: number;
  #secret = "";
  #rooms = new Map<string, RoomState>();
  /** Local members, by room and owner (`ROOM\nOWNER`). */
  #members = new Map<string, Member>();
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
  #handOut?: ReturnType<typeof setImmediate>;
  #closed = false;
  #downLogged = false;

  private constructor(options: RedisStoreOptions) {
    this.#options = options;
    this.#prefix = options.prefix ?? "chat:";
    this.#heartbeatMs = options.heartbeatMs ?? heartbeatFromEnv() ??
      DEFAULT_HEARTBEAT_MS;
    const client = () =>
      createClient({
        url: options.url,
        disableOfflineQueue: true,
        commandOptions: { timeout: COMMAND_TIMEOUT_MS },
        socket: {
          connectTimeout: 2000,
          reconnectStrategy: (retries: number) =>
            Math.min(50 * 2 ** retries, 2000) + Math.floor(Math.random() * 100),
        },
      });
    this.#cmd = client();
    this.#sub = client();
    for (
      const [name, c] of [["command", this.#cmd], [
        "subscriber",
        this.#sub,
      ]] as const
    ) {
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
    const ms = options.connectTimeoutMs ?? 5000;
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
        `${store.#prefix}evict:${store.#proc}`,
        (message: string) => store.#onEvict(message),
      );
      await store.#resync();
    } catch (error) {
      store.#closed = true;
      store.#cmd.destroy();
      store.#sub.destroy();
      throw new Error(
        `cannot reach Redis at ${redactUrl(options.url)}: ${errorText(error)}`,
      );
    } finally {
      clearTimeout(timer);
    }
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
    const { nickKey, randomNick, sameSecret } = await sharedReady;
    const room = this.#rooms.get(name);
    if (!room) throw new Error(`no room ${name}: hold it first`);
    this.#check();
    await this.#subscribed(room);
    const keys = this.#keys(name);
    const owner = this.#global(request.owner);
    const wanted = request.nick;
    let takeover = ["", ""];
    if (wanted !== undefined && request.token) {
      const [holderText, epoch] = await Promise.all([
        this.#command(["HGET", keys[2], nickKey(wanted)]),
        this.#command(["HGET", keys[0], "epoch"]),
      ]);
      if (typeof holderText === "string" && typeof epoch === "string") {
        const holder = JSON.parse(holderText) as Holder;
        if (sameSecret(request.token, this.#token(name, epoch, holder.j))) {
          takeover = [holder.o, String(holder.j)];
        }
      }
    }
    const candidates: string[] = [];
    for (let i = 0; i < 8; i++) {
      const nick = randomNick();
      candidates.push(nickKey(nick), nick, String(nick.length));
    }
    let reply: Reply;
    try {
      reply = await this.#eval(SCRIPTS.join, keys, [
        this.#proc,
        owner,
        crypto.randomUUID().slice(0, 8),
        wanted === undefined ? "" : nickKey(wanted),
        wanted ?? "",
        String(wanted?.length ?? 0),
        ...takeover,
        request.since === undefined ? "" : String(request.since),
        request.epoch ?? "",
        name,
        `${this.#prefix}evict:`,
        ...candidates,
      ], name);
    } catch (error) {
      if (isUnavailable(error)) {
        // It may have run before the connection went: undone after reconnect.
        this.#orphans.push({ room: name, owner, announce: true });
      }
      throw error;
    }
    const [
      nick,
      taken,
      epoch,
      lastId,
      history,
      gap,
      holders,
      present,
      j,
      claim,
    ] = reply as [
      string,
      number,
      string,
      number,
      string[],
      number,
      string[],
      number,
      number,
      number,
    ];
    room.holds--;
    room.members++;
    room.epoch = epoch;
    if (present === 1 && !room.handedOver) {
      // Best effort: main.ts also admits a lone arriving tab by itself.
      await this.#handOver(room, lastId).catch(() => {});
    }
    const memberKey = `${name}\n${request.owner}`;
    const member = this.#members.get(memberKey);
    if (member) {
      member.connections++;
      member.nick = nick;
    } else {
      this.#members.set(memberKey, {
        room: name,
        owner: request.owner,
        nick,
        joinedId: j,
        epoch,
        connections: 1,
      });
    }
    return {
      nick,
      nickTaken: taken === 1,
      present: present === 1,
      epoch,
      lastId,
      claimedId: claim,
      history: history.map((text) => JSON.parse(text) as RoomEvent),
      gap: gap === 1,
      users: nicksOf(holders),
      token: this.#token(name, epoch, j),
    };
  }

  append(name: string, body: NewEvent): Promise<RoomEvent> {
    return this.#track((async () => {
      await sharedReady;
      this.#check();
      const text = await this.#eval(
        SCRIPTS.append,
        this.#keys(name),
        [JSON.stringify(body), String(cost(body))],
        name,
      );
      return JSON.parse(text as string) as RoomEvent;
    })());
  }

  rename(
    name: string,
    owner: string,
    from: string,
    to: string,
  ): Promise<RoomEvent | "nick_taken"> {
    const body: NewEvent = { type: "nick", from, to };
    return this.#track((async () => {
      const { nickKey } = await sharedReady;
      this.#check();
      const reply = await this.#eval(SCRIPTS.rename, this.#keys(name), [
        nickKey(from),
        nickKey(to),
        this.#global(owner),
        to,
        String(to.length),
        JSON.stringify(body),
        String(cost(body)),
      ], name);
      if (typeof reply !== "string") return "nick_taken" as const;
      const member = this.#members.get(`${name}\n${owner}`);
      if (member) member.nick = to;
      return JSON.parse(reply) as RoomEvent;
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
      await sharedReady;
      if (!this.available()) {
        this.#orphans.push({ room: name, owner: global, announce });
        throw unavailable("redis is unreachable");
      }
      try {
        // Found by owner: its nick may have changed since.
        await this.#eval(SCRIPTS.leave, this.#keys(name), [
          "",
          this.#proc,
          global,
          announce ? "1" : "0",
          this.#localMembers(name) === 0 ? "1" : "0",
          name,
          "1",
        ], name);
      } catch (error) {
        if (isUnavailable(error)) {
          this.#orphans.push({ room: name, owner: global, announce });
        }
        throw error;
      }
    })());
  }

  members(name: string): Promise<string[]> {
    return this.#track((async () => {
      await sharedReady;
      this.#check();
      const holders = await this.#command(["HVALS", this.#keys(name)[2]]);
      return nicksOf(holders as string[]);
    })());
  }

  /**
   * Typing notices: published on the room's channel to every process (and
   * this one), kept nowhere; dropped while Redis is away.
   */
  notify(name: string, event: TypingEvent): void {
    if (!this.available()) return;
    this.#command(["PUBLISH", this.#channel(name), JSON.stringify(event)])
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
    if (this.#handOut) clearImmediate(this.#handOut);
    this.#handOut = undefined;
    if (this.available()) {
      // Survivors see this process gone at once (and find nothing to reap).
      await this.#command(["DEL", this.#key(`hb:${this.#proc}`)]).catch(
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
    if (this.#handOut) clearImmediate(this.#handOut);
    this.#handOut = undefined;
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
        filling: false,
        handedOver: false,
        outbox: [],
        onMessage: (message) => this.#onMessage(made, message),
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
    if (room.subscribed && !this.#closed) {
      this.#sub.unsubscribe(this.#channel(room.name), room.onMessage).catch(
        () => {},
      );
    }
  }

  /** Subscribes to the room's channel, then reads where delivery starts. */
  #subscribed(room: RoomState): Promise<void> {
    room.subscribed ??= (async () => {
      try {
        await this.#sub.subscribe(this.#channel(room.name), room.onMessage);
        const [last, epoch] = await this.#command([
          "HMGET",
          this.#keys(room.name)[0],
          "last",
          "epoch",
        ]) as [string | null, string | null];
        room.delivered ??= Number(last ?? 0);
        room.epoch ??= epoch ?? undefined;
        this.#drain(room);
      } catch (error) {
        room.subscribed = undefined;
        throw isUnavailable(error) ? error : unavailable(errorText(error));
      }
    })();
    return room.subscribed;
  }

  #onMessage(room: RoomState, message: string): void {
    let event: LiveEvent;
    try {
      event = JSON.parse(message);
    } catch {
      return;
    }
    if (event.type === "typing") {
      for (const onEvent of room.listeners) onEvent(event);
      return;
    }
    if (room.delivered === undefined || room.filling) {
      room.buffer.push(event);
      return;
    }
    if (event.id <= room.delivered) return;
    if (event.id === room.delivered + 1) return this.#deliver(room, event);
    room.buffer.push(event);
    this.#fill(room);
  }

  /**
   * Takes the next event in order. The listeners get it once the pub/sub
   * reads of this turn are done, so that events arriving in several reads
   * still reach main.ts in one turn (one JSON batch per client).
   */
  #deliver(room: RoomState, event: RoomEvent): void {
    room.delivered = event.id;
    room.handedOver = true;
    room.outbox.push(event);
    this.#outboxes.add(room);
    this.#handOut ??= setImmediate(() => this.#handOutAll());
  }

  #handOutAll(): void {
    this.#handOut = undefined;
    for (const room of this.#outboxes) {
      const events = room.outbox;
      room.outbox = [];
      for (const event of events) {
        for (const onEvent of room.listeners) onEvent(event);
      }
    }
    this.#outboxes.clear();
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
    const entries = await this.#command([
      "XRANGE",
      this.#keys(room.name)[1],
      id,
      id,
    ]) as [string, string[]][];
    if (room.handedOver || entries.length === 0) return;
    const event = JSON.parse(entries[0][1][1]) as RoomEvent;
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
    this.#command(["XRANGE", this.#keys(room.name)[1], `${from}-0`, "+"])
      .then((entries) => {
        room.filling = false;
        for (const [, fields] of entries as [string, string[]][]) {
          const event = JSON.parse(fields[1]) as RoomEvent;
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
      const [room, owner] = JSON.parse(message) as [string, string];
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
    if (!this.#downLogged) {
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
    this.#reapAfter = Date.now() + this.#heartbeatMs * MISSED_BEATS;
    await this.#heartbeat();
    const secretKey = this.#key("secret");
    await this.#command([
      "SET",
      secretKey,
      randomBytes(32).toString("base64"),
      "NX",
    ]);
    this.#secret = String(await this.#command(["GET", secretKey]));
    const { nickKey } = this.#members.size > 0
      ? await sharedReady
      : { nickKey: (nick: string) => nick };
    for (const member of [...this.#members.values()]) {
      const outcome = await this.#eval(
        SCRIPTS.reclaim,
        this.#keys(member.room),
        [
          nickKey(member.nick),
          this.#proc,
          this.#global(member.owner),
          member.nick,
          String(member.nick.length),
          String(member.joinedId),
          member.room,
          member.epoch,
          String(member.connections),
        ],
        member.room,
      );
      if (outcome !== "ok") {
        this.#log("warn", "redis_member_lost", {
          room: member.room,
          nick: member.nick,
          outcome: String(outcome),
        });
      }
      if (outcome === "epoch" || outcome === "taken") {
        this.#options.onEvict(member.room, member.owner);
      }
    }
    // Leaves (and joins) whose outcome is unknown: an owner still here was
    // set to its connections here just above; any other loses all of them.
    while (this.#orphans.length > 0) {
      const orphan = this.#orphans[0];
      const local = `${orphan.room}\n${this.#local(orphan.owner)}`;
      if (!this.#members.has(local)) {
        await this.#eval(SCRIPTS.leave, this.#keys(orphan.room), [
          "",
          this.#proc,
          orphan.owner,
          orphan.announce ? "1" : "0",
          this.#localMembers(orphan.room) === 0 ? "1" : "0",
          orphan.room,
          String(Number.MAX_SAFE_INTEGER),
        ], orphan.room);
      }
      this.#orphans.shift();
    }
    for (const room of [...this.#rooms.values()]) {
      if (room.listeners.size === 0) continue;
      if (!room.subscribed) {
        await this.#subscribed(room);
        continue;
      }
      await room.subscribed.catch(() => this.#subscribed(room));
      this.#fill(room);
    }
  }

  async #heartbeat(): Promise<void> {
    await this.#command([
      "SET",
      this.#key(`hb:${this.#proc}`),
      "1",
      "PX",
      String(this.#heartbeatMs * MISSED_BEATS),
    ]);
    await this.#command(["SADD", this.#key("procs"), this.#proc]);
  }

  #tick(): void {
    if (this.#closed || !this.available()) return;
    this.#heartbeat()
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
      this.#key("procs"),
    ]) as string[];
    for (const proc of procs) {
      if (proc === this.#proc) continue;
      if (await this.#command(["EXISTS", this.#key(`hb:${proc}`)]) !== 0) {
        continue;
      }
      const rooms = await this.#command([
        "SMEMBERS",
        this.#key(`procrooms:${proc}`),
      ]) as string[];
      let gone = 0;
      for (const room of rooms) {
        gone += await this.#eval(
          SCRIPTS.reap,
          this.#keys(room),
          [proc],
          room,
        ) as number;
      }
      await this.#eval(SCRIPTS.forget, [
        this.#key(`hb:${proc}`),
        this.#key(`procrooms:${proc}`),
        this.#key("procs"),
      ], [proc]);
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
    return this.#prefix + name;
  }

  /** meta, events, nicks, owners, and this process's rooms. */
  #keys(room: string): string[] {
    const base = `${this.#prefix}room:${room}:`;
    return [
      base + "meta",
      base + "events",
      base + "nicks",
      base + "owners",
      this.#procRooms(),
    ];
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
    return `${this.#prefix}ev:${room}`;
  }

  #procRooms(): string {
    return this.#key(`procrooms:${this.#proc}`);
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
    if (!this.available()) throw unavailable("redis is unreachable");
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
      if (error instanceof ErrorReply) throw error;
      throw unavailable(errorText(error));
    }
  }

  /** Runs a script (by hash; sent whole when Redis does not have it). */
  async #eval(
    { text, sha }: Script,
    keys: string[],
    args: string[],
    room?: string,
  ): Promise<Reply> {
    const rest = [String(keys.length), ...keys];
    if (room !== undefined) {
      rest.push(
        this.#channel(room),
        String(this.#options.historySize),
        String(this.#options.roomTtl),
        String(this.#options.maxHistoryBytes),
      );
    }
    rest.push(...args);
    try {
      return await this.#command(["EVALSHA", sha, ...rest]);
    } catch (error) {
      if (
        !(error instanceof ErrorReply) || !error.message.startsWith("NOSCRIPT")
      ) {
        throw error;
      }
      return await this.#command(["EVAL", text, ...rest]);
    }
  }

  #token(room: string, epoch: string, joinedId: number): string {
    return createHmac("sha256", this.#secret)
      .update(`${room}/${epoch}/${joinedId}`)
      .digest("base64url");
  }

  #log(level: "info" | "warn" | "error", event: string, fields: LogFields) {
    this.#options.log?.(level, event, fields);
  }
}

/** An event's cost in history (by main.ts's measure; id and ts are numbers). */
function cost(body: NewEvent): number {
  return shared!.eventBytes(body as RoomEvent);
}

/** The holders' nicks, in the order they joined. */
function nicksOf(holders: string[]): string[] {
  return holders
    .map((text) => JSON.parse(text) as Holder)
    .sort((a, b) => a.j - b.j)
    .map((holder) => holder.n);
}

function errorText(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/** The URL without its password, for logs. */
function redactUrl(url: string): string {
  try {
    const parsed = new URL(url);
    if (parsed.password) parsed.password = "***";
    return parsed.href;
  } catch {
    return "(invalid URL)";
  }
}
