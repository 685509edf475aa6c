/**
 * Which room store a start gets, by its options: the in-memory one, with
 * `--data` one that writes through to a SQLite file, or with `--redis` the
 * shared one. The last two are loaded only then (by a path in a constant,
 * so that nothing else loads them), and the single-file service needs
 * nothing else; `deno compile` names them with `--include`.
 *
 * @module
 */

import {
  type Log,
  MemoryStore,
  type RoomStore,
  type StoreFactory,
  type StoreOptions,
} from "../stores/rooms.ts";
import type { RedisStoreOptions } from "../stores/redis_store.ts";
import type {
  DataFileError,
  SqliteStoreOptions,
} from "../stores/sqlite_store.ts";
import { redisFailure, reworded } from "./cli_errors.ts";
import { clusterProblem, type Settings } from "./options.ts";
import { eventTypes, MemoryOutbox, type Outbox } from "../stores/outbox.ts";
import { SqliteOutbox } from "../stores/sqlite_outbox.ts";
import type { RedisOutboxFactory } from "../stores/redis_outbox.ts";

/**
 * The Redis store's file, named by a variable so that nothing loads it
 * unless `--redis` is given. `deno compile` needs
 * `--include stores/redis_store.ts` for it.
 */
const SHARED_STORE_MODULE = "../stores/redis_store.ts";

/**
 * The SQLite store's file, loaded only with `--data` (like
 * {@linkcode SHARED_STORE_MODULE}; `deno compile` includes it too).
 */
const DATA_STORE_MODULE = "../stores/sqlite_store.ts";

/**
 * The webhooks' outbox in Redis, loaded only with `--redis` (or
 * `--redis-cluster`) and `--webhook` (it brings the Redis client, as the
 * store's file does); `deno compile` includes it too.
 */
const SHARED_OUTBOX_MODULE = "../stores/redis_outbox.ts";

/**
 * What the store tells the running chat: whom to close, read markers that
 * moved, and its log; and the webhooks' outbox it writes to, if any (see
 * {@linkcode openOutbox}).
 */
export type StoreHooks =
  & Pick<StoreOptions, "onEvict" | "onExpel" | "onRead">
  & { log: Log; outbox?: Outbox };

/**
 * Where the webhooks' deliveries wait (`--webhook`; none without): in
 * memory, in the `--data` file (written with the events' commits), or in
 * Redis or a Redis Cluster (added by the script that appends the events).
 */
export async function openOutbox(
  settings: Settings,
  log: Log,
): Promise<Outbox | undefined> {
  const urls = settings.webhook;
  if (urls.length === 0) return undefined;
  const types = eventTypes(settings.webhookEvents);
  const retryMs = settings.webhookRetryHours * 60 * 60 * 1000;
  if (settings.data) return new SqliteOutbox({ urls, types, retryMs, log });
  if (!settings.redis && !settings.redisCluster) {
    return new MemoryOutbox(urls.length, types);
  }
  const cluster = clusterProblem(settings);
  if (cluster) throw new Error(cluster);
  const shared: { RedisOutbox: RedisOutboxFactory } = await import(
    SHARED_OUTBOX_MODULE
  );
  return await shared.RedisOutbox.connect({
    ...clusterUrls(settings),
    urls,
    types,
    log,
  }).catch((error) => {
    if (!settings.redisCluster) throw redisFailure(error);
    throw clusterFailure(error);
  });
}

/**
 * The in-memory store, with `data` one that writes through to a SQLite
 * file, or with `redis` the shared one; each loaded only then, so that the
 * single-file service needs nothing else.
 */
export async function openStore(
  settings: Settings,
  { onEvict, onExpel, onRead, log, outbox }: StoreHooks,
): Promise<RoomStore> {
  const common: StoreOptions = {
    historySize: settings.historySize,
    maxHistoryBytes: settings.maxHistoryBytes,
    maxRooms: settings.maxRooms,
    onEvict,
    onExpel,
    outbox: outbox?.writer,
    onRead,
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
      commitHook: outbox instanceof SqliteOutbox ? outbox : undefined,
    }).catch((error) => {
      // It names the file and why, in one line: printed as it is.
      throw error instanceof embedded.DataFileError
        ? reworded(error, error.message)
        : error;
    });
  }
  const cluster = clusterProblem(settings);
  if (cluster) throw new Error(cluster);
  if (!settings.redis && !settings.redisCluster) return new MemoryStore(common);
  const shared: { RedisStore: StoreFactory<RedisStoreOptions> } = await import(
    SHARED_STORE_MODULE
  );
  return await shared.RedisStore.connect(
    {
      ...common,
      ...clusterUrls(settings),
      roomTtl: settings.roomTtl,
      coalesceMs: settings.redisCoalesceMs,
      waitReplicas: settings.redisWaitReplicas,
      waitMs: settings.redisWaitMs,
      log,
    } satisfies RedisStoreOptions,
  ).catch((error) => {
    if (!settings.redisCluster) throw redisFailure(error);
    throw clusterFailure(error);
  });
}

/** A cluster that cannot be reached, said in one line. */
function clusterFailure(error: unknown): Error {
  const message = error instanceof Error ? error.message : String(error);
  return reworded(
    error,
    `${
      message.split("\n")[0]
    }: start the cluster there, or correct --redis-cluster`,
  );
}

/** The store's Redis: `--redis`'s URL, or `--redis-cluster`'s nodes. */
function clusterUrls(
  settings: Settings,
): { url: string; cluster?: string[] } {
  if (!settings.redisCluster) return { url: settings.redis };
  const cluster = settings.redisCluster.split(",").map((url) => url.trim())
    .filter((url) => url !== "");
  return { url: cluster[0], cluster };
}

/**
 * What kind of store this is, for the start log and the API's `info`: by its
 * class (MemoryStore is "memory", RedisStore "redis").
 */
export function storeName(settings: Settings, store: RoomStore): string {
  if (settings.redis) return "redis";
  if (settings.redisCluster) return "redis-cluster";
  // `--data` is a MemoryStore too, writing through to its file.
  if (settings.data) return "sqlite";
  return store.constructor.name.replace(/Store$/, "").toLowerCase();
}
