/**
 * The webhooks' outbox in Redis (`--redis` with `--webhook`): each event is
 * delivered by one process, not by every process, in order per room per
 * endpoint, and a process that dies has its deliveries taken over. Loaded
 * by server/open_store.ts only then.
 *
 * Keys (under `chat:`):
 *
 * - `wh:ENDPOINT:SHARD`, a stream per endpoint (ENDPOINT: the first 12 hex
 *   digits of its URL's SHA-256) and shard (a room's is its name's hash
 *   modulo {@linkcode WEBHOOK_SHARDS}): the `COMMIT` script that appends a
 *   room's events adds each wanted one to the room's shard's stream of every
 *   endpoint (fields `r`, the room, and `e`, the event's JSON), in the same
 *   script and so in the room's id order; an entry is deleted (`XDEL`) once
 *   its delivery is done (delivered, or given up);
 * - `wh:lease:SHARD`: the id of the process delivering the shard, with a
 *   TTL it renews at each heartbeat;
 * - `wh:procs`: a sorted set of the processes delivering webhooks, by when
 *   their last heartbeat runs out: each takes its share of the shards
 *   (`ceil(shards / processes)`) and gives back what it has beyond it.
 *
 * The process holding a shard's lease reads its streams from the oldest
 * entry still there, so a shard taken over from a dead process starts with
 * what that one had not finished: at least once, with the same delivery id
 * (`ENDPOINT.SHARD.ENTRY`). Only the lease holder reads a shard, so a
 * room's deliveries go one after another from one process.
 *
 * Redis Cluster (`--redis-cluster` with `--webhook`). A script touches one
 * slot, and `COMMIT` touches its room's, so there the entries live in the
 * room's own streams and the shards' bookkeeping shares the tag `{wh}`:
 *
 * - `room:{NAME}:wh:ENDPOINT`, a stream per room and endpoint, appended by
 *   `COMMIT` as above (in the room's slot, in its id order); emptied, it is
 *   left to expire after {@linkcode WEBHOOK_EMPTY_TTL_MS} (not deleted: a
 *   stream made again would give out ids from 0, and an id could be one
 *   already delivered), and the next entry takes the TTL away;
 * - `{wh}:rooms:SHARD`, the rooms of a shard with entries, and
 *   `{wh}:fresh:SHARD`, those appended to since the lease holder last
 *   looked: the process that committed adds the room to both just after
 *   its commit (a separate command: if it dies in between, the lease
 *   holder's scan finds the room, see below);
 * - `{wh}:lease:SHARD` and `{wh}:procs`, as above.
 *
 * The lease holder reads the rooms of `fresh` (taken and emptied at each
 * look, every {@linkcode WEBHOOK_POLL_MS} when there was nothing), each
 * stream from the last entry it read (`XRANGE`: keys of different slots
 * share no `XREAD`); at take-over it reads every room of `rooms`, and
 * then, and every {@linkcode WEBHOOK_SCAN_MS}, every room whose stream a
 * `SCAN` of every master finds, from the oldest entry still there. A room
 * with nothing left leaves `rooms` (looked at again after: a commit in
 * between puts it back). Delivery ids are `ENDPOINT.ROOM.ENTRY` (ROOM: the
 * first 12 hex digits of the name's SHA-256), the same on every process.
 *
 * @module
 */

import { type RedisConnection, redisConnection } from "./redis_connect.ts";
import { redactRedisUrl } from "./redis_url.ts";
import { ClusterLink, KeyNaming } from "./redis_cluster.ts";
import { createHash, randomBytes } from "node:crypto";
import type {
  Outbox,
  OutboxEntry,
  OutboxSink,
  OutboxWriter,
} from "./outbox.ts";
import type { Log } from "./rooms.ts";

/**
 * Shards of the outbox: the most processes that deliver webhooks at once
 * (each holds at least one), and how finely they share the rooms.
 */
export const WEBHOOK_SHARDS = 16;
/** How long one blocking read waits for new entries, in ms. */
const READ_BLOCK_MS = 1000;
/** Entries read per stream at most in one read. */
const READ_COUNT = 500;
/** Heartbeat (lease renewal) interval, unless `CHAT_REDIS_HEARTBEAT_MS` says. */
const DEFAULT_HEARTBEAT_MS = 3000;
/** Missed heartbeats before a lease (and the process) runs out. */
const MISSED_BEATS = 3;
/**
 * Redis Cluster: how long the lease holder waits before it looks for
 * fresh entries again after a look that found none, in ms (the most a
 * delivery waits for another process's commit to be seen).
 * @default {100}
 */
export const WEBHOOK_POLL_MS = 100;
/**
 * Redis Cluster: how often a lease holder scans every master for its
 * rooms' streams, in ms (besides at take-over): it finds the entries of a
 * commit whose process died before it added the room to the index.
 * @default {30000}
 */
export const WEBHOOK_SCAN_MS = 30_000;
/**
 * Redis Cluster: how long a room's stream is kept once empty, in ms (its
 * last id is kept with it, so the next entry's id is a new one).
 * @default {3600000}
 */
export const WEBHOOK_EMPTY_TTL_MS = 60 * 60 * 1000;
/** Per-command limit, as the store's. */
const COMMAND_TIMEOUT_MS = 10_000;
/** Longest wait between attempts to reach Redis again, in ms. */
const MAX_RECONNECT_DELAY_MS = 2000;
/** How long one attempt to open a connection may take (node-redis's default). */
const SOCKET_CONNECT_TIMEOUT_MS = 5000;
/** How long `connect` waits for Redis at start, as the store's. */
const CONNECT_TIMEOUT_MS = 5000;

/** What {@linkcode RedisOutbox.connect} needs. */
export interface RedisOutboxOptions {
  /** Redis, as `--redis` names it (a cluster's: its first node). */
  url: string;
  /** Redis Cluster (`--redis-cluster`): some of its nodes' URLs. */
  cluster?: string[];
  /** The endpoints' URLs (`--webhook`), in order. */
  urls: string[];
  /** The event types they want. */
  types: ReadonlySet<string>;
  log?: Log;
  /** Key prefix (the store's). @default {"chat:"} */
  prefix?: string;
  /**
   * Lease renewal interval, in ms; a lease runs out after three missed.
   * Default 3000, or `CHAT_REDIS_HEARTBEAT_MS` (the store's heartbeat).
   */
  heartbeatMs?: number;
}

/** How server/open_store.ts opens it. */
export interface RedisOutboxFactory {
  connect(options: RedisOutboxOptions): Promise<Outbox>;
}

/** Keeps a lease only if it is still this process's. */
const RENEW = `
local out = {}
for i, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[1] then
    redis.call('PEXPIRE', key, ARGV[2])
    out[i] = 1
  else
    out[i] = 0
  end
end
return out
`;

/** Takes free leases, up to ARGV[3]; answers their places in KEYS. */
const ACQUIRE = `
local got = {}
for i, key in ipairs(KEYS) do
  if #got >= tonumber(ARGV[3]) then break end
  if redis.call('SET', key, ARGV[1], 'NX', 'PX', ARGV[2]) then
    got[#got + 1] = i
  end
end
return got
`;

/** Gives back leases that are still this process's. */
const RELEASE = `
for _, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[1] then redis.call('DEL', key) end
end
return 1
`;

/**
 * Redis Cluster: the entries in the room's streams (KEYS); with ARGV[1],
 * streams found empty are left to expire after that many ms.
 */
const LENGTH = `
local n = 0
for _, key in ipairs(KEYS) do n = n + redis.call('XLEN', key) end
if n == 0 and ARGV[1] then
  for _, key in ipairs(KEYS) do
    if redis.call('PTTL', key) == -1 then redis.call('PEXPIRE', key, ARGV[1]) end
  end
end
return n
`;

/** Redis Cluster: the rooms (ARGV) to their shard's `rooms` and `fresh`. */
const INDEX = `
redis.call('SADD', KEYS[1], unpack(ARGV))
redis.call('SADD', KEYS[2], unpack(ARGV))
return 1
`;

/** Redis Cluster: the members of the `fresh` sets (KEYS), which it empties. */
const TAKE_FRESH = `
local out = {}
for _, key in ipairs(KEYS) do
  for _, room in ipairs(redis.call('SMEMBERS', key)) do out[#out + 1] = room end
  redis.call('DEL', key)
end
return out
`;

/** The shard of a room: FNV-1a of its name, the same in every process. */
export function shardOf(room: string): number {
  let hash = 0x811c9dc5;
  for (let i = 0; i < room.length; i++) {
    hash ^= room.charCodeAt(i);
    hash = Math.imul(hash, 0x01000193) >>> 0;
  }
  return hash % WEBHOOK_SHARDS;
}

/** A shard this process delivers: where it has read each endpoint's stream to. */
interface OwnedShard {
  cursors: string[];
  /** Redis Cluster: its rooms with entries, as far as known. */
  rooms: Map<string, RoomStreams>;
}

/** Redis Cluster: a room of an owned shard, its streams and how far read. */
interface RoomStreams {
  /** Per endpoint: the last entry read (none: from the oldest). */
  cursors: (string | undefined)[];
  /** Its part of delivery ids. */
  hash: string;
  /** Entries handed and not done. */
  handed: number;
  /** To be read at the next look (new entries, or more than one read took). */
  due: boolean;
}

/** One Redis connection, or a cluster's link: what the outbox sends through. */
type Client = Pick<
  RedisConnection,
  "isOpen" | "isReady" | "connect" | "sendCommand" | "close" | "destroy" | "on"
>;
type Reply = string | number | null | Reply[];

function heartbeatFromEnv(): number | undefined {
  try {
    const variable = "CHAT_REDIS_HEARTBEAT_MS";
    if (
      Deno.permissions.querySync({ name: "env", variable }).state !== "granted"
    ) {
      return undefined;
    }
    const text = Deno.env.get(variable);
    return text && /^\d+$/.test(text) ? Number(text) : undefined;
  } catch {
    return undefined;
  }
}

/** The outbox in Redis (see the module's notes). */
export class RedisOutbox implements Outbox {
  readonly durable = true;
  readonly writer: OutboxWriter;
  #options: RedisOutboxOptions;
  #prefix: string;
  #proc = randomBytes(6).toString("hex");
  #heartbeatMs: number;
  #cmd: Client;
  /** Its own connection: a blocking read holds it (none in a cluster: it polls). */
  #reader?: Client;
  /** Redis Cluster: the link `#cmd` is, and the rooms' key names. */
  #cluster?: { link: ClusterLink; names: KeyNaming };
  /** Per endpoint: the hash its streams are named by. */
  #endpointKeys: string[];
  /** Per shard: its streams, one per endpoint (one Redis). */
  #streams: string[][];
  #owned = new Map<number, OwnedShard>();
  #sink?: OutboxSink;
  #timer?: ReturnType<typeof setInterval>;
  #reading?: Promise<void>;
  #wake?: () => void;
  /** Entries to delete, by stream, at the end of the turn. */
  #deletes = new Map<string, string[]>();
  #deleteDue?: ReturnType<typeof setImmediate>;
  /** Redis Cluster: rooms committed to, to add to the index at the end of the turn. */
  #indexing = new Set<string>();
  #indexDue?: ReturnType<typeof setImmediate>;
  #indexed?: Promise<void>;
  /** Redis Cluster: every room's stream is looked for at the next look. */
  #scanDue = false;
  #scannedAt = 0;
  /** Entries in the owned shards' streams at the last heartbeat. */
  #stored = 0;
  /** Entries handed and not done. */
  #handed = 0;
  /** When the leases were last renewed. */
  #renewedAt = 0;
  /** The heartbeat on its way, if one is. */
  #ticking?: Promise<void>;
  #warned = false;
  /** `connect` has resolved: from then on a lost connection is retried. */
  #started = false;
  #closed = false;

  private constructor(options: RedisOutboxOptions) {
    this.#options = options;
    this.#prefix = options.prefix ?? "chat:";
    this.#heartbeatMs = options.heartbeatMs ?? heartbeatFromEnv() ??
      DEFAULT_HEARTBEAT_MS;
    this.#endpointKeys = options.urls.map((url) =>
      createHash("sha256").update(url).digest("hex").slice(0, 12)
    );
    this.#streams = Array.from(
      { length: WEBHOOK_SHARDS },
      (_, shard) =>
        this.#endpointKeys.map((key) => `${this.#prefix}wh:${key}:${shard}`),
    );
    const retryIn = (retries: number, cause: Error) =>
      // At start a Redis that is not there fails `connect` at once;
      // once started, a lost connection is retried for ever.
      !this.#started
        ? cause
        : Math.min(50 * 2 ** retries, MAX_RECONNECT_DELAY_MS);
    const client = () =>
      redisConnection({
        url: options.url,
        commandTimeoutMs: COMMAND_TIMEOUT_MS,
        connectTimeoutMs: SOCKET_CONNECT_TIMEOUT_MS,
        retryIn,
      });
    if (options.cluster) {
      const link = new ClusterLink({
        urls: options.cluster,
        commandTimeoutMs: COMMAND_TIMEOUT_MS,
        connectTimeoutMs: SOCKET_CONNECT_TIMEOUT_MS,
        reconnectStrategy: retryIn,
      });
      this.#cluster = { link, names: new KeyNaming(this.#prefix, true) };
      this.#cmd = link;
      this.writer = {
        types: options.types,
        add: () => {}, // the store's script adds them
        streams: (room) => this.#roomStreams(room),
        expiring: true,
        appended: (room) => this.#appended(room),
      };
    } else {
      this.#cmd = client();
      this.#reader = client();
      this.writer = {
        types: options.types,
        add: () => {}, // the store's script adds them
        streams: (room) => this.#streams[shardOf(room)],
      };
    }
    for (const c of this.#clients()) {
      // Before `connect` has resolved, its rejection says why, once.
      c.on("error", (error: unknown) => {
        if (this.#started) this.#warn("redis_error", error);
      });
    }
  }

  /** Connects its Redis connections (a cluster's link). */
  static async connect(options: RedisOutboxOptions): Promise<RedisOutbox> {
    const outbox = new RedisOutbox(options);
    let timer: ReturnType<typeof setTimeout> | undefined;
    try {
      await Promise.race([
        Promise.all(outbox.#clients().map((c) => c.connect())),
        new Promise((_, reject) =>
          timer = setTimeout(
            () =>
              reject(new Error(`no answer within ${CONNECT_TIMEOUT_MS} ms`)),
            CONNECT_TIMEOUT_MS,
          )
        ),
      ]);
    } catch (error) {
      outbox.#closed = true;
      for (const c of outbox.#clients()) if (c.isOpen) c.destroy();
      if (outbox.#cluster) outbox.#cluster.link.destroy();
      // As the store says it (its password left out).
      throw new Error(
        `cannot reach ${options.cluster ? "Redis Cluster" : "Redis"} at ${
          redactRedisUrl(options.url)
        } (${error instanceof Error ? error.message : error})`,
      );
    } finally {
      clearTimeout(timer);
    }
    outbox.#started = true;
    return outbox;
  }

  start(sink: OutboxSink): void {
    this.#sink = sink;
    this.#timer = setInterval(() => this.#tick(), this.#heartbeatMs);
    this.#tick();
    this.#reading = this.#cluster ? this.#poll() : this.#read();
  }

  more(): void {
    this.#wake?.();
  }

  done(entries: OutboxEntry[]): void {
    this.#handed -= entries.length;
    this.#stored = Math.max(0, this.#stored - entries.length);
    for (const entry of entries) {
      let stream: string;
      if (this.#cluster) {
        stream = this.#roomStreams(entry.room)[entry.endpoint];
        const room = this.#owned.get(Number(entry.part))?.rooms.get(
          entry.room,
        );
        if (room && room.handed > 0 && --room.handed === 0) {
          room.due = true; // perhaps empty now: looked at again
          this.#wake?.();
        }
      } else stream = this.#streams[Number(entry.part)][entry.endpoint];
      let ids = this.#deletes.get(stream);
      if (!ids) this.#deletes.set(stream, ids = []);
      ids.push(entry.ref as string);
    }
    this.#deleteDue ??= setImmediate(() => void this.#delete());
  }

  waiting(): number {
    return Math.max(0, this.#stored - this.#handed);
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    clearInterval(this.#timer);
    if (this.#deleteDue) clearImmediate(this.#deleteDue);
    if (this.#indexDue) clearImmediate(this.#indexDue);
    this.#sink = undefined;
    this.#wake?.();
    // The blocking read ends with its connection.
    if (this.#reader?.isOpen) this.#reader.destroy();
    await this.#reading;
    await this.#ticking;
    try {
      await this.#indexed;
      await this.#index();
      await this.#delete();
      const leases = [...this.#owned.keys()].map((shard) => this.#lease(shard));
      if (leases.length > 0) {
        // The others take them over at once, not when they run out.
        await this.#eval(RELEASE, leases, [this.#proc]);
      }
      await this.#command(["ZREM", this.#key("procs"), this.#proc]);
    } catch {
      // Redis is away: the leases run out on their own.
    }
    this.#owned.clear();
    if (this.#cmd.isReady) await this.#cmd.close().catch(() => {});
    if (this.#cmd.isOpen) this.#cmd.destroy();
    this.#cluster?.link.destroy();
  }

  #clients(): Client[] {
    return this.#reader ? [this.#cmd, this.#reader] : [this.#cmd];
  }

  /** A key of the shards' bookkeeping (`wh:…`; in a cluster `{wh}:…`). */
  #key(name: string): string {
    return this.#cluster
      ? `${this.#prefix}{wh}:${name}`
      : `${this.#prefix}wh:${name}`;
  }

  #lease(shard: number): string {
    return this.#key(`lease:${shard}`);
  }

  /** Redis Cluster: a room's streams, one per endpoint, in its slot. */
  #roomStreams(room: string): string[] {
    const start = this.#cluster!.names.room(room);
    return this.#endpointKeys.map((key) => `${start}wh:${key}`);
  }

  async #command(args: string[]): Promise<Reply> {
    return await this.#cmd.sendCommand(args) as Reply;
  }

  #eval(script: string, keys: string[], args: string[]): Promise<Reply> {
    return this.#command([
      "EVAL",
      script,
      String(keys.length),
      ...keys,
      ...args,
    ]);
  }

  /** Logs a Redis problem once until things work again. */
  #warn(event: string, error: unknown): void {
    if (this.#warned || this.#closed) return;
    this.#warned = true;
    this.#options.log?.("warn", `webhook_${event}`, {
      error: error instanceof Error ? error.message : String(error),
    });
  }

  /**
   * The heartbeat: this process counted among those delivering, its leases
   * renewed (those lost, forgotten), its share of the shards taken or the
   * rest given back, and the streams' lengths read for the gauge.
   */
  #tick(): void {
    if (this.#ticking || this.#closed) return;
    this.#ticking = this.#heartbeat().then(
      () => {
        this.#warned = false;
      },
      (error) => {
        this.#warn("heartbeat_failed", error);
        // Leases that may have run out are another's now.
        const expired = Date.now() - this.#renewedAt >=
          this.#heartbeatMs * MISSED_BEATS;
        if (expired && this.#owned.size > 0) {
          this.#lose([...this.#owned.keys()]);
        }
      },
    ).finally(() => this.#ticking = undefined);
  }

  async #heartbeat(): Promise<void> {
    const leaseMs = String(this.#heartbeatMs * MISSED_BEATS);
    const now = Date.now();
    const procs = this.#key("procs");
    await this.#command([
      "ZADD",
      procs,
      String(now + this.#heartbeatMs * MISSED_BEATS),
      this.#proc,
    ]);
    await this.#command(["ZREMRANGEBYSCORE", procs, "-inf", String(now)]);
    const processes = Math.max(
      1,
      Number(await this.#command(["ZCARD", procs])),
    );
    const share = Math.ceil(WEBHOOK_SHARDS / processes);
    const owned = [...this.#owned.keys()];
    if (owned.length > 0) {
      const kept = await this.#eval(
        RENEW,
        owned.map((shard) => this.#lease(shard)),
        [this.#proc, leaseMs],
      ) as number[];
      this.#lose(owned.filter((_, i) => kept[i] !== 1));
    }
    this.#renewedAt = now;
    if (this.#closed) return;
    const mine = [...this.#owned.keys()].sort((a, b) => a - b);
    if (mine.length > share) {
      const extra = mine.slice(share);
      this.#lose(extra);
      await this.#eval(
        RELEASE,
        extra.map((shard) => this.#lease(shard)),
        [this.#proc],
      );
    } else if (mine.length < share) {
      const free = shuffled(
        Array.from({ length: WEBHOOK_SHARDS }, (_, shard) => shard)
          .filter((shard) => !this.#owned.has(shard)),
      );
      const got = await this.#eval(
        ACQUIRE,
        free.map((shard) => this.#lease(shard)),
        [this.#proc, leaseMs, String(share - mine.length)],
      ) as number[];
      if (this.#closed) return;
      for (const place of got) {
        this.#owned.set(free[place - 1], {
          cursors: this.#endpointKeys.map(() => "0-0"),
          rooms: new Map(),
        });
      }
      if (got.length > 0) {
        // Taken over: every room with entries is read from its oldest.
        if (this.#cluster) {
          this.#scanDue = true;
          await this.#known(got.map((place) => free[place - 1]));
        }
        this.#wake?.();
      }
    }
    let stored = 0;
    for (const [shard, state] of this.#owned) {
      if (this.#cluster) {
        for (const room of state.rooms.keys()) {
          stored += Number(
            await this.#eval(LENGTH, this.#roomStreams(room), []),
          );
        }
        continue;
      }
      for (const stream of this.#streams[shard]) {
        stored += Number(await this.#command(["XLEN", stream]));
      }
    }
    this.#stored = stored;
  }

  /** Shards no longer this process's: what was not started is another's. */
  #lose(shards: number[]): void {
    for (const shard of shards) {
      if (!this.#owned.delete(shard)) continue;
      this.#sink?.forget(String(shard));
    }
  }

  /**
   * Reads the owned shards' streams in order, as far as the deliverer has
   * room per endpoint, until closed.
   */
  async #read(): Promise<void> {
    const reader = this.#reader!;
    while (!this.#closed) {
      const sink = this.#sink;
      const streams: string[] = [];
      const cursors: string[] = [];
      const reading: [shard: number, endpoint: number, state: OwnedShard][] =
        [];
      let count = READ_COUNT;
      const shards = this.#owned.size;
      for (const [shard, state] of this.#owned) {
        this.#endpointKeys.forEach((_, endpoint) => {
          const room = sink?.room(endpoint) ?? 0;
          if (room <= 0) return;
          count = Math.min(count, Math.max(1, Math.floor(room / shards)));
          streams.push(this.#streams[shard][endpoint]);
          cursors.push(state.cursors[endpoint]);
          reading.push([shard, endpoint, state]);
        });
      }
      if (streams.length === 0) {
        await this.#sleep(READ_BLOCK_MS);
        continue;
      }
      let reply: Reply;
      try {
        reply = await reader.sendCommand([
          "XREAD",
          "COUNT",
          String(count),
          "BLOCK",
          String(READ_BLOCK_MS),
          "STREAMS",
          ...streams,
          ...cursors,
        ]) as Reply;
      } catch (error) {
        if (this.#closed) return;
        this.#warn("read_failed", error);
        await this.#sleep(READ_BLOCK_MS);
        continue;
      }
      if (!Array.isArray(reply) || this.#closed) continue;
      const taken: OutboxEntry[] = [];
      for (const [stream, entries] of reply as [string, Reply[]][]) {
        const at = streams.indexOf(stream);
        const [shard, endpoint, state] = reading[at];
        // Lost (and perhaps taken back) while the read was on its way.
        if (this.#owned.get(shard) !== state) continue;
        for (const [id, fields] of entries as [string, string[]][]) {
          state.cursors[endpoint] = id;
          taken.push({
            id: `${this.#endpointKeys[endpoint]}.${shard}.${id}`,
            endpoint,
            room: fieldOf(fields, "r"),
            event: fieldOf(fields, "e"),
            created: Number(id.slice(0, id.indexOf("-"))),
            part: String(shard),
            ref: id,
          });
        }
      }
      if (taken.length > 0 && this.#sink) {
        this.#handed += taken.length;
        this.#sink.take(taken);
      }
    }
  }

  /**
   * Redis Cluster: a commit appended to the room's streams. It goes to its
   * shard's `rooms` and `fresh` at the end of the turn (one command per
   * shard for every room committed to in it).
   */
  #appended(room: string): void {
    if (this.#closed) return;
    this.#indexing.add(room);
    this.#indexDue ??= setImmediate(() => {
      this.#indexDue = undefined;
      this.#indexed = this.#index().finally(() => this.#indexed = undefined);
    });
  }

  /** Redis Cluster: adds the rooms committed to to their shards' index. */
  async #index(): Promise<void> {
    const rooms = this.#indexing;
    if (rooms.size === 0) return;
    this.#indexing = new Set();
    const byShard = new Map<number, string[]>();
    for (const room of rooms) {
      const shard = shardOf(room);
      byShard.set(shard, [...byShard.get(shard) ?? [], room]);
    }
    try {
      await Promise.all(
        [...byShard].map(([shard, names]) =>
          this.#eval(INDEX, [
            this.#key(`rooms:${shard}`),
            this.#key(`fresh:${shard}`),
          ], names)
        ),
      );
    } catch (error) {
      // The lease holder's scan finds them.
      this.#warn("index_failed", error);
    }
    // This process delivers some of them: seen at once, not at the next look.
    if ([...byShard.keys()].some((shard) => this.#owned.has(shard))) {
      this.#wake?.();
    }
  }

  /** Redis Cluster: the rooms in the index of shards just taken, to read. */
  async #known(shards: number[]): Promise<void> {
    const rooms = await this.#command([
      "SUNION",
      ...shards.map((shard) => this.#key(`rooms:${shard}`)),
    ]) as string[];
    this.#due(rooms);
  }

  /** Redis Cluster: rooms to read at this look (those of owned shards). */
  #due(rooms: Iterable<string>): void {
    for (const room of rooms) {
      const shard = this.#owned.get(shardOf(room));
      if (!shard) continue;
      const known = shard.rooms.get(room);
      if (known) known.due = true;
      else {
        shard.rooms.set(room, {
          cursors: this.#endpointKeys.map(() => undefined),
          hash: createHash("sha256").update(room).digest("hex").slice(0, 12),
          handed: 0,
          due: true,
        });
      }
    }
  }

  /** Redis Cluster: every room with a stream, on every master (`SCAN`). */
  async #scan(): Promise<void> {
    const { link, names } = this.#cluster!;
    const keys = await link.scan(names.roomPattern("wh:*"));
    const rooms = new Set<string>();
    for (const key of keys) {
      const suffix = this.#endpointKeys.map((k) => `wh:${k}`).find((s) =>
        key.endsWith(`:${s}`)
      );
      // A stream of an endpoint no longer given: not this process's to send.
      if (suffix) rooms.add(names.roomOf(key, suffix));
    }
    this.#due(rooms);
  }

  /**
   * Redis Cluster: reads the owned shards' rooms that have new entries, in
   * order, as far as the deliverer has room per endpoint, until closed.
   */
  async #poll(): Promise<void> {
    while (!this.#closed) {
      const sink = this.#sink;
      if (!sink || this.#owned.size === 0) {
        await this.#sleep(WEBHOOK_POLL_MS);
        continue;
      }
      let taken: [number, OwnedShard, OutboxEntry[]][];
      try {
        if (
          this.#scanDue || Date.now() - this.#scannedAt >= WEBHOOK_SCAN_MS
        ) {
          this.#scanDue = false;
          this.#scannedAt = Date.now();
          await this.#scan().catch((error) => {
            this.#scanDue = true; // again at the next look
            throw error;
          });
        }
        const shards = [...this.#owned.keys()];
        this.#due(
          await this.#eval(
            TAKE_FRESH,
            shards.map((shard) => this.#key(`fresh:${shard}`)),
            [],
          ) as string[],
        );
        taken = await this.#readRooms(sink);
      } catch (error) {
        if (this.#closed) return;
        this.#warn("read_failed", error);
        await this.#sleep(WEBHOOK_POLL_MS);
        continue;
      }
      if (this.#closed) return;
      // Not those of a shard lost (and perhaps taken back) meanwhile.
      const kept = taken.filter(([shard, state]) =>
        this.#owned.get(shard) === state
      ).flatMap(([, , entries]) => entries);
      if (kept.length > 0) {
        this.#handed += kept.length;
        sink.take(kept);
      } else await this.#sleep(WEBHOOK_POLL_MS);
    }
  }

  /**
   * Redis Cluster: one read of each room due, per endpoint from the last
   * entry read; a room with nothing left leaves its shard's index. What it
   * read is answered even when Redis fails on the way (it stops there).
   */
  async #readRooms(
    sink: OutboxSink,
  ): Promise<[number, OwnedShard, OutboxEntry[]][]> {
    const out: [number, OwnedShard, OutboxEntry[]][] = [];
    const left = this.#endpointKeys.map((_, endpoint) => sink.room(endpoint));
    for (const [shard, state] of [...this.#owned]) {
      const taken: OutboxEntry[] = [];
      out.push([shard, state, taken]);
      for (const [room, streams] of state.rooms) {
        if (!streams.due) continue;
        // Cleared before the reads, so that what marks it due meanwhile (a
        // delivery done) holds; a read that fails leaves it due, and the
        // room's entries are taken only once every read has answered.
        streams.due = false;
        const keys = this.#roomStreams(room);
        const cursors = [...streams.cursors];
        const entries: OutboxEntry[] = [];
        let again = false;
        try {
          for (const [endpoint, key] of keys.entries()) {
            const count = Math.min(READ_COUNT, left[endpoint]);
            if (count <= 0) {
              again = true; // when the deliverer has room
              continue;
            }
            const cursor = cursors[endpoint];
            const read = await this.#command([
              "XRANGE",
              key,
              cursor ? `(${cursor}` : "-",
              "+",
              "COUNT",
              String(count),
            ]) as [string, string[]][];
            if (read.length === count) again = true; // more there
            for (const [id, fields] of read) {
              cursors[endpoint] = id;
              entries.push({
                id: `${this.#endpointKeys[endpoint]}.${streams.hash}.${id}`,
                endpoint,
                room,
                event: fieldOf(fields, "e"),
                created: Number(id.slice(0, id.indexOf("-"))),
                part: String(shard),
                ref: id,
              });
            }
            left[endpoint] -= read.length;
          }
        } catch (error) {
          // What was read of the other rooms is handed all the same.
          streams.due = true;
          this.#warn("read_failed", error);
          return out;
        }
        // Lost (and perhaps taken back) while the reads were on their way.
        if (this.#owned.get(shard) !== state) break;
        streams.cursors = cursors;
        streams.handed += entries.length;
        taken.push(...entries);
        if (again) streams.due = true;
        else if (entries.length === 0 && streams.handed === 0) {
          try {
            await this.#leaveIndex(shard, state, room, keys);
          } catch (error) {
            streams.due = true;
            this.#warn("read_failed", error);
            return out;
          }
        }
      }
    }
    return out;
  }

  /**
   * Redis Cluster: a room whose streams are empty leaves its shard's index.
   * The index is in another slot than the streams, so the streams are
   * looked at again after: an entry appended in between (whose process may
   * have added the room before this removed it) puts the room back.
   */
  async #leaveIndex(
    shard: number,
    state: OwnedShard,
    room: string,
    keys: string[],
  ): Promise<void> {
    const ttl = String(WEBHOOK_EMPTY_TTL_MS);
    if (Number(await this.#eval(LENGTH, keys, [ttl])) > 0) return;
    const index = this.#key(`rooms:${shard}`);
    await this.#command(["SREM", index, room]);
    if (Number(await this.#eval(LENGTH, keys, [ttl])) > 0) {
      await this.#command(["SADD", index, room]);
      const streams = state.rooms.get(room);
      if (streams) streams.due = true;
      return;
    }
    state.rooms.delete(room);
  }

  /** Waits `ms`, or until woken (room again, a shard taken, closing). */
  #sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        if (this.#wake === done) this.#wake = undefined;
        resolve();
      };
      const timer = setTimeout(done, ms);
      this.#wake = done;
    });
  }

  /** Deletes the entries of done deliveries (kept, and redelivered, if it fails). */
  async #delete(): Promise<void> {
    this.#deleteDue = undefined;
    const deletes = this.#deletes;
    if (deletes.size === 0) return;
    this.#deletes = new Map();
    try {
      await Promise.all(
        [...deletes].map(([stream, ids]) =>
          this.#command(["XDEL", stream, ...ids])
        ),
      );
    } catch (error) {
      // At worst delivered again by the next holder: at least once.
      this.#warn("delete_failed", error);
    }
  }
}

/** A field of a stream entry (`[name, value, name, value, …]`). */
function fieldOf(fields: string[], name: string): string {
  for (let i = 0; i < fields.length; i += 2) {
    if (fields[i] === name) return fields[i + 1];
  }
  return "";
}

/** The values in random order (so processes do not all race for shard 0). */
function shuffled<T>(values: T[]): T[] {
  for (let i = values.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1));
    [values[i], values[j]] = [values[j], values[i]];
  }
  return values;
}
