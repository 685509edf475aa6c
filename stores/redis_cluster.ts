/**
 * Redis Cluster for the shared store (`--redis-cluster URL,URL`): how keys
 * and channels are named so that every script touches one slot
 * ({@linkcode KeyNaming}), and one cluster client that the store uses as it
 * uses a single Redis's connections ({@linkcode ClusterLink}).
 *
 * Slots. A room's keys are `chat:room:{NAME}:…` and its channel
 * `chat:ev:{NAME}`: the hash tag `{NAME}` puts them in one slot, so READ,
 * COMMIT, RANGE and BASELINE (redis_scripts.ts), which name only the room's
 * keys, run on one master, and the room's events are published there with
 * `SPUBLISH` (sharded pub/sub: a room's traffic goes to its shard's master,
 * not to every node). A person's markers hash is `chat:marks:{PERSON}`
 * (MARK runs once per person). A process's keys, `hb:PID`, `procrooms:PID`
 * and the set `procs`, share the tag `{procs}` (FORGET names all three);
 * they are written at heartbeats and at a process's first member in a room,
 * not per message. Keys of one name (`secret`, `once:KEY`) need no tag.
 *
 * Channels every process hears, `evict:PID` (a takeover, kick or ban) and
 * `marks` (read markers), stay plain `PUBLISH`: a cluster forwards them to
 * every node, which costs each node a little per message, but they are rare
 * (evictions) or batched per process (markers, every `MARKS_BATCH_MS`), and
 * a sharded channel would have to live in the slot of each script that
 * publishes on it: a room's (evictions), a person's (markers).
 *
 * Without a cluster the names are the ones a single Redis has always had
 * (no tags): an existing deployment keeps its keys.
 *
 * Failover. A master that goes away fails the commands of its slots (the
 * store is unavailable: its requests get `unavailable`, as when a single
 * Redis goes away). The link then asks the cluster for its slots again
 * until every slot has a master that answers and the cluster says
 * `cluster_state:ok` (a replica promoted), and tells the store it is
 * ready: the store resyncs as after any outage (members reclaimed, rooms'
 * deliveries caught up from their streams) and subscribes again to the
 * rooms' sharded channels (node-redis drops the ones of a master it no
 * longer sees).
 *
 * @module
 */

import { createCluster } from "redis";

/**
 * How often, in ms, a cluster with a lost master is asked for its slots
 * again until a replica has taken over.
 * @default {250}
 */
export const CLUSTER_RECOVER_MS = 250;

/**
 * Key and channel names: a single Redis's (unchanged), or a cluster's,
 * where each thing a script touches shares one hash tag.
 */
export class KeyNaming {
  /**
   * @param prefix Prefix of every key and channel (`chat:`); no braces.
   * @param cluster Name for Redis Cluster (hash tags).
   */
  constructor(readonly prefix: string, readonly cluster: boolean) {}

  /** A key of one name, the only one in its scripts (`secret`, `once:…`). */
  key(name: string): string {
    return this.prefix + name;
  }

  /** What a room's keys start with (`room:NAME:`, or `room:{NAME}:`). */
  room(room: string): string {
    return this.cluster
      ? `${this.prefix}room:{${room}}:`
      : `${this.prefix}room:${room}:`;
  }

  /** SCAN's pattern for one key of every room (`nicks`, `owners`). */
  roomPattern(suffix: string): string {
    return this.room("*") + suffix;
  }

  /** The room a key found by {@linkcode roomPattern} belongs to. */
  roomOf(key: string, suffix: string): string {
    const [before, after] = this.room("\0").split("\0");
    return key.slice(before.length, -(after.length + suffix.length));
  }

  /** The room's channel: in a cluster, sharded, in the room's slot. */
  channel(room: string): string {
    return this.cluster
      ? `${this.prefix}ev:{${room}}`
      : `${this.prefix}ev:${room}`;
  }

  /** A person's read markers' hash. */
  marks(person: string): string {
    return this.cluster
      ? `${this.prefix}marks:{${person}}`
      : `${this.prefix}marks:${person}`;
  }

  /** A key of the processes' bookkeeping (`hb:PID`, `procrooms:PID`, `procs`). */
  process(name: string): string {
    return this.cluster
      ? `${this.prefix}{procs}:${name}`
      : `${this.prefix}${name}`;
  }

  /** The channel a process is told on to close connections (plain). */
  evict(process: string): string {
    return `${this.prefix}evict:${process}`;
  }
}

/**
 * Every key of one server matching `pattern` (`SCAN`, a thousand at a
 * time), through `send`.
 */
export async function scanKeys(
  send: (args: string[]) => Promise<unknown>,
  pattern: string,
): Promise<string[]> {
  const keys: string[] = [];
  let cursor = "0";
  do {
    const [next, batch] = await send([
      "SCAN",
      cursor,
      "MATCH",
      pattern,
      "COUNT",
      "1000",
    ]) as [string, string[]];
    cursor = next;
    keys.push(...batch);
  } while (cursor !== "0");
  return keys;
}

/**
 * The key a command is routed by in a cluster: a script's first key, a
 * sharded publish's channel, else the command's first argument; none for
 * `PUBLISH` (any node forwards it to all).
 */
export function routingKey(args: string[]): string | undefined {
  const name = args[0].toUpperCase();
  if (name === "EVALSHA" || name === "EVAL") {
    return Number(args[2]) > 0 ? args[3] : undefined;
  }
  if (name === "PUBLISH" || name === "PING") return undefined;
  return args[1];
}

type Cluster = ReturnType<typeof createCluster>;

/** What {@linkcode ClusterLink} is made with. */
export interface ClusterLinkOptions {
  /** `redis://[user:password@]host:port` of some of the cluster's nodes. */
  urls: string[];
  /** Per-command limit, in ms. */
  commandTimeoutMs: number;
  /** How long one attempt to open a connection may take, in ms. */
  connectTimeoutMs: number;
  /** node-redis's reconnect strategy for every node's connection. */
  reconnectStrategy: (retries: number, cause: Error) => number | Error;
}

type Listener = (message: string) => void;

/**
 * A Redis Cluster as the store uses one Redis: commands routed by their
 * key, plain and sharded pub/sub, SCAN and SCRIPT LOAD on every master, and
 * the events `ready`, `reconnecting` and `error` of a connection (see the
 * module's notes on failover).
 */
export class ClusterLink {
  #cluster: Cluster;
  #events = new Map<string, ((...args: unknown[]) => void)[]>();
  #connecting?: Promise<unknown>;
  #open = false;
  /** A master was lost; the slots are being found again. */
  #broken = false;
  #recovering?: Promise<void>;
  #closed = false;

  constructor(options: ClusterLinkOptions) {
    const first = new URL(options.urls[0]);
    this.#cluster = createCluster({
      rootNodes: options.urls.map((url) => ({ url })),
      // Nodes found from the cluster's slots get the first URL's password.
      defaults: {
        username: first.username
          ? decodeURIComponent(first.username)
          : undefined,
        password: first.password
          ? decodeURIComponent(first.password)
          : undefined,
        disableOfflineQueue: true,
        socket: {
          connectTimeout: options.connectTimeoutMs,
          reconnectStrategy: options.reconnectStrategy,
          ...(first.protocol === "rediss:" ? { tls: true as const } : {}),
        },
      },
      commandOptions: { timeout: options.commandTimeoutMs },
    });
    this.#cluster.on("error", (error) => this.#emit("error", error));
    this.#cluster.on("node-error", (error) => this.#emit("error", error));
    // A node's connection lost: its slots fail until a replica takes over.
    this.#cluster.on(
      "node-reconnecting",
      (node: { host: string; port: number }) =>
        this.#lost(`${node.host}:${node.port}`),
    );
  }

  get isOpen(): boolean {
    return this.#open;
  }

  get isReady(): boolean {
    return this.#open && !this.#broken;
  }

  /** Listens as on a node-redis client (`ready`, `reconnecting`, `error`, `end`). */
  on(event: string, listener: (...args: unknown[]) => void): this {
    const list = this.#events.get(event) ?? [];
    list.push(listener);
    this.#events.set(event, list);
    return this;
  }

  #emit(event: string, ...args: unknown[]): void {
    for (const listener of this.#events.get(event) ?? []) listener(...args);
  }

  /** Connects once, however often asked (the store's two connections are one). */
  connect(): Promise<unknown> {
    this.#connecting ??= this.#cluster.connect().then(async () => {
      await this.#healthy();
      this.#open = true;
    });
    return this.#connecting;
  }

  /** Every master answers and the cluster covers every slot. */
  async #healthy(): Promise<void> {
    const masters = this.#cluster.masters;
    if (masters.length === 0) throw new Error("the cluster has no masters");
    for (const master of masters) {
      const client = await this.#cluster.nodeClient(master);
      const info = String(await client.sendCommand(["CLUSTER", "INFO"]));
      if (!/cluster_state:ok/.test(info)) {
        throw new Error(`cluster state is not ok at ${master.address}`);
      }
    }
  }

  #lost(address: string): void {
    if (this.#closed || !this.#open) return;
    // A node that is no master now (one replaced in a failover): a
    // connection of node-redis's to it may still be retrying; nothing of
    // the chat's is there.
    if (
      !this.#broken &&
      !this.#cluster.masters.some((master) => master.address === address)
    ) return;
    if (!this.#broken) {
      this.#broken = true;
      this.#emit("reconnecting");
    }
    this.#recovering ??= this.#recover().finally(() =>
      this.#recovering = undefined
    );
  }

  /** Finds the slots again until every master answers (a replica promoted). */
  async #recover(): Promise<void> {
    while (!this.#closed) {
      await new Promise((wake) => setTimeout(wake, CLUSTER_RECOVER_MS));
      if (this.#closed) return;
      try {
        // node-redis asks the cluster again only on MOVED; a master that
        // is gone answers nothing, so it is asked here: through a master
        // still connected (the nodes given at start may be the ones gone),
        // else through those.
        const root = this.#cluster.masters.find((master) =>
          master.client?.isReady
        )
          ?.client ?? { options: this.#cluster._options.rootNodes[0] };
        // deno-lint-ignore no-explicit-any
        await this.#cluster._slots.rediscover(root as any);
        await this.#healthy();
        this.#broken = false;
        this.#emit("ready");
        return;
      } catch {
        // not yet: the replica is not promoted, or the cluster not ok
      }
    }
  }

  /** A command, routed by its key (see {@linkcode routingKey}). */
  sendCommand(args: string[]): Promise<unknown> {
    return this.#cluster.sendCommand(routingKey(args), false, args);
  }

  subscribe(channel: string, listener: Listener): Promise<void> {
    return this.#cluster.subscribe(channel, listener);
  }

  unsubscribe(channel: string, listener: Listener): Promise<void> {
    return this.#cluster.unsubscribe(
      channel,
      listener as (message: unknown) => void,
    );
  }

  /** A sharded channel (`SSUBSCRIBE`, on its slot's master). */
  sSubscribe(channel: string, listener: Listener): Promise<void> {
    return this.#cluster.sSubscribe(channel, listener);
  }

  sUnsubscribe(channel: string, listener: Listener): Promise<void> {
    return this.#cluster.sUnsubscribe(channel, listener);
  }

  /** Every key matching `pattern`, on every master (SCAN). */
  async scan(pattern: string): Promise<string[]> {
    const keys: string[] = [];
    for (const master of this.#cluster.masters) {
      const client = await this.#cluster.nodeClient(master);
      keys.push(...await scanKeys((args) => client.sendCommand(args), pattern));
    }
    return keys;
  }

  /** Loads a script on every master (EVALSHA may land on any). */
  async loadScript(text: string): Promise<void> {
    await Promise.all(
      this.#cluster.masters.map(async (master) => {
        const client = await this.#cluster.nodeClient(master);
        await client.sendCommand(["SCRIPT", "LOAD", text]);
      }),
    );
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#open = false;
    await this.#cluster.close().catch(() => this.#cluster.destroy());
  }

  destroy(): void {
    this.#closed = true;
    this.#open = false;
    try {
      this.#cluster.destroy();
    } catch {
      // not open
    }
  }
}
