/**
 * Redis connections from a `--redis` URL, as the store and the webhooks'
 * outbox use them: one server's (`redis://`, `rediss://`) is node-redis's
 * own client; a Sentinel URL's (`redis+sentinel://…`, stores/redis_url.ts)
 * is a {@linkcode MasterConnection}, which asks the Sentinels where the
 * master is and follows it across a failover.
 *
 * Why not node-redis's `createSentinel`: its client has another shape
 * (`sendCommand(isReadonly, args)`, no `ready`/`reconnecting`/`end`
 * events, its own pools and pub/sub proxy), and the store's recovery is
 * driven by exactly those events (a lost connection makes it unavailable;
 * `ready` on both makes it resync). Following the master is small: ask a
 * Sentinel `SENTINEL get-master-addr-by-name`, connect, check `ROLE`, and
 * on a lost connection or a `READONLY` reply (the master was demoted) ask
 * again. The store then sees what it sees when one Redis restarts.
 *
 * @module
 */

import { EventEmitter } from "node:events";
import { ConnectionTimeoutError, createClient, ErrorReply } from "redis";
import {
  type HostPort,
  isSentinelUrl,
  parseSentinelUrl,
  type SentinelUrl,
} from "./redis_url.ts";

/**
 * What the store and the outbox use of a Redis connection: node-redis's
 * client has it, and so does {@linkcode MasterConnection}.
 */
export interface RedisConnection {
  /** `connect` was called and neither `close` nor `destroy`. */
  readonly isOpen: boolean;
  /** Connected and answering commands now. */
  readonly isReady: boolean;
  /** Resolves once ready; rejects when `retryIn` gives up. */
  connect(): Promise<unknown>;
  sendCommand(args: string[]): Promise<unknown>;
  subscribe(
    channel: string,
    listener: (message: string, channel: string) => void,
  ): Promise<unknown>;
  unsubscribe(
    channel: string,
    listener: (message: string, channel: string) => void,
  ): Promise<unknown>;
  /** Waits for the commands sent, then closes. */
  close(): Promise<unknown>;
  /** Closes now: commands on their way fail. */
  destroy(): void;
  /** `error`, `ready`, `reconnecting` and `end`, as node-redis names them. */
  on(
    event: "error" | "ready" | "reconnecting" | "end",
    // deno-lint-ignore no-explicit-any
    listener: (...args: any[]) => void,
  ): unknown;
}

/** How to make a {@linkcode RedisConnection}. */
export interface ConnectionOptions {
  /** `--redis`. */
  url: string;
  /**
   * After the `retries`th failed attempt to (re)connect: ms to wait before
   * the next, or an Error to give up (`connect` rejects with the cause).
   */
  retryIn: (retries: number, cause: Error) => number | Error;
  /** Per command, in ms (a Redis that keeps the connection and goes mute). */
  commandTimeoutMs: number;
  /** One attempt to open a connection, in ms. */
  connectTimeoutMs: number;
}

/**
 * One connection to the Redis `options.url` names: to that server, or to
 * the master its Sentinels name (followed across failovers). Commands are
 * never queued while it is away: they fail at once.
 */
export function redisConnection(options: ConnectionOptions): RedisConnection {
  if (!isSentinelUrl(options.url)) {
    return createClient({
      url: options.url,
      disableOfflineQueue: true,
      commandOptions: { timeout: options.commandTimeoutMs },
      socket: {
        connectTimeout: options.connectTimeoutMs,
        reconnectStrategy: options.retryIn,
      },
    });
  }
  const sentinel = parseSentinelUrl(options.url);
  // The command line checked it (server/cli_errors.ts); a caller of the
  // store's own API gets the same words.
  if (typeof sentinel === "string") {
    throw new Error(`--redis ${options.url} ${sentinel}`);
  }
  return new MasterConnection(sentinel, options);
}

/**
 * Longest wait between two looks for the master, in ms: asking a Sentinel
 * is cheap, and the sooner a look follows the promotion the shorter the
 * outage (with the 2 s of a lost Redis's backoff, the chat came back up to
 * 2 s after Sentinel had switched: bench/README.md, "Eighth session").
 */
export const FOLLOW_RETRY_MS = 250;

/**
 * How long one Sentinel may take to answer where the master is, in ms,
 * once connected (connecting may take `connectTimeoutMs`).
 */
export const SENTINEL_ASK_TIMEOUT_MS = 1000;

/**
 * A connection to the master a set of Sentinels watch. On a lost
 * connection (the master died, or Sentinel demoted it and closed its
 * clients) or a `READONLY` reply, it asks the Sentinels again (all at
 * once; every {@linkcode FOLLOW_RETRY_MS} at most, else as `retryIn`
 * says) and connects to a master they name, checking with `ROLE` that it
 * is one (a Sentinel may not have noticed the failover yet): until then `isReady` is false and commands fail at once.
 * Its channels are subscribed again on each new master. Events as
 * node-redis's client: `reconnecting` when it starts looking, `error` for
 * each failed attempt, `ready` when connected, `end` when closed.
 */
export class MasterConnection extends EventEmitter implements RedisConnection {
  #url: SentinelUrl;
  #options: ConnectionOptions;
  /** The connection to the current master, once it is one. */
  #master?: ReturnType<typeof createClient>;
  /** Where that master is. */
  #address?: HostPort;
  #open = false;
  #ready = false;
  /** The look for the master under way, if one is. */
  #following?: Promise<void>;
  /** Wakes the look's wait between attempts (on destroy). */
  #wake?: () => void;
  /** Subscribed channels and their listeners, to subscribe again. */
  #channels = new Map<
    string,
    Set<(message: string, channel: string) => void>
  >();

  constructor(url: SentinelUrl, options: ConnectionOptions) {
    super();
    this.#url = { ...url, sentinels: [...url.sentinels] };
    this.#options = options;
  }

  get isOpen(): boolean {
    return this.#open;
  }

  get isReady(): boolean {
    return this.#ready && this.#master?.isReady === true;
  }

  /** Where the master is now (for tests and logs), when connected. */
  get master(): HostPort | undefined {
    return this.isReady ? this.#address : undefined;
  }

  async connect(): Promise<this> {
    if (this.#open) throw new Error("already connected");
    this.#open = true;
    await this.#follow(false);
    return this;
  }

  async sendCommand(args: string[]): Promise<unknown> {
    const master = this.#master;
    if (!this.isReady || !master) throw new Error("The client is offline");
    try {
      return await master.sendCommand(args);
    } catch (error) {
      // A demoted master that kept this connection: follow the new one.
      if (
        error instanceof ErrorReply && error.message.startsWith("READONLY")
      ) {
        this.#lost(master, error, true);
        throw new Error(`the master moved (${error.message})`);
      }
      throw error;
    }
  }

  async subscribe(
    channel: string,
    listener: (message: string, channel: string) => void,
  ): Promise<void> {
    const master = this.#master;
    if (!this.isReady || !master) throw new Error("The client is offline");
    let listeners = this.#channels.get(channel);
    if (!listeners) this.#channels.set(channel, listeners = new Set());
    listeners.add(listener);
    try {
      await master.subscribe(channel, listener);
    } catch (error) {
      // The caller subscribes again when it sees this fail.
      listeners.delete(listener);
      if (listeners.size === 0) this.#channels.delete(channel);
      throw error;
    }
  }

  async unsubscribe(
    channel: string,
    listener: (message: string, channel: string) => void,
  ): Promise<void> {
    const listeners = this.#channels.get(channel);
    listeners?.delete(listener);
    if (listeners?.size === 0) this.#channels.delete(channel);
    if (this.isReady) await this.#master!.unsubscribe(channel, listener);
  }

  async close(): Promise<void> {
    if (!this.#open) throw new Error("The client is closed");
    const master = this.#master;
    this.#end();
    if (master?.isReady) await master.close().catch(() => master.destroy());
    else if (master?.isOpen) master.destroy();
    this.emit("end");
  }

  destroy(): void {
    if (!this.#open) throw new Error("The client is closed");
    const master = this.#master;
    this.#end();
    if (master?.isOpen) master.destroy();
    this.emit("end");
  }

  #end(): void {
    this.#open = false;
    this.#ready = false;
    this.#master = undefined;
    this.#wake?.();
  }

  /**
   * Looks for the master until connected to it, or `retryIn` gives up
   * (then rejects). `again`: after a lost connection (says `reconnecting`
   * first).
   */
  #follow(again: boolean): Promise<void> {
    this.#following ??= (async () => {
      let retries = 0;
      if (again) this.emit("reconnecting");
      while (this.#open) {
        try {
          await this.#attach();
          return;
        } catch (error) {
          if (!this.#open) return;
          const cause = error instanceof Error ? error : new Error(`${error}`);
          const wait = this.#options.retryIn(retries++, cause);
          if (wait instanceof Error) throw cause;
          this.emit("error", cause);
          await new Promise<void>((resolve) => {
            const timer = setTimeout(resolve, Math.min(wait, FOLLOW_RETRY_MS));
            this.#wake = () => {
              clearTimeout(timer);
              resolve();
            };
          });
          this.#wake = undefined;
          if (this.#open) this.emit("reconnecting");
        }
      }
    })().finally(() => this.#following = undefined);
    return this.#following;
  }

  /**
   * Asks the Sentinels where the master is, connects to the first address
   * named that answers as a master, subscribes again.
   */
  async #attach(): Promise<void> {
    const problems: string[] = [];
    for (const address of await this.#candidates()) {
      let master;
      try {
        master = await retriedOnTimeout(() => this.#connectTo(address));
      } catch (error) {
        problems.push(`${address.host}:${address.port}: ${errorText(error)}`);
        continue;
      }
      try {
        if (!this.#open) throw new Error("closed");
        this.#master = master;
        this.#address = address;
        await Promise.all(
          [...this.#channels].flatMap(([channel, listeners]) =>
            [...listeners].map((listener) =>
              master.subscribe(channel, listener)
            )
          ),
        );
        if (!master.isReady) throw new Error("the master went away");
        if (!this.#open) throw new Error("closed");
      } catch (error) {
        if (this.#master === master) this.#master = undefined;
        if (master.isOpen) master.destroy();
        throw error;
      }
      this.#ready = true;
      this.emit("ready");
      return;
    }
    throw new Error(problems.join("; "));
  }

  /** A connection to `address`, if it answers as a master. */
  async #connectTo(
    address: HostPort,
  ): Promise<ReturnType<typeof createClient>> {
    const master = createClient({
      username: this.#url.username,
      password: this.#url.password,
      database: this.#url.database,
      disableOfflineQueue: true,
      commandOptions: { timeout: this.#options.commandTimeoutMs },
      socket: {
        host: address.host,
        port: address.port,
        connectTimeout: this.#options.connectTimeoutMs,
        // This connection looks for the master again itself.
        reconnectStrategy: false,
      },
    });
    master.on("error", (error: unknown) => this.#lost(master, error));
    try {
      await master.connect();
      const role = await master.sendCommand(["ROLE"]) as [string, ...unknown[]];
      if (role[0] !== "master") {
        throw new Error(`${address.host}:${address.port} is a ${role[0]}`);
      }
      return master;
    } catch (error) {
      if (master.isOpen) master.destroy();
      throw error;
    }
  }

  /**
   * Where the Sentinels say the master is, all asked at once: first an
   * address other than the master this connection had (right after a
   * failover a Sentinel that has not heard of it yet names the old one),
   * then by how many Sentinels name it.
   */
  async #candidates(): Promise<HostPort[]> {
    const problems: string[] = [];
    const named = new Map<string, { address: HostPort; votes: number }>();
    await Promise.all(this.#url.sentinels.map(async (sentinel) => {
      const where = `${sentinel.host}:${sentinel.port}`;
      try {
        const reply = await retriedOnTimeout(() => this.#askOne(sentinel));
        if (!reply) {
          return void problems.push(
            `${where} knows no master "${this.#url.master}"`,
          );
        }
        const key = `${reply.host}:${reply.port}`;
        const entry = named.get(key) ?? { address: reply, votes: 0 };
        entry.votes++;
        named.set(key, entry);
      } catch (error) {
        problems.push(`${where}: ${errorText(error)}`);
      }
    }));
    if (named.size === 0) {
      throw new Error(
        `no Sentinel said where master "${this.#url.master}" is: ${
          problems.join("; ")
        }`,
      );
    }
    const was = this.#address && `${this.#address.host}:${this.#address.port}`;
    return [...named].sort(([a, x], [b, y]) =>
      Number(a === was) - Number(b === was) || y.votes - x.votes
    ).map(([, { address }]) => address);
  }

  /** What one Sentinel says of the master: its address, or null. */
  async #askOne(sentinel: HostPort): Promise<HostPort | null> {
    const client = createClient({
      username: this.#url.sentinelUsername,
      password: this.#url.sentinelPassword,
      commandOptions: { timeout: SENTINEL_ASK_TIMEOUT_MS },
      socket: {
        host: sentinel.host,
        port: sentinel.port,
        connectTimeout: this.#options.connectTimeoutMs,
        reconnectStrategy: false,
      },
    });
    client.on("error", () => {}); // said by the rejection
    try {
      await client.connect();
      const reply = await client.sendCommand([
        "SENTINEL",
        "GET-MASTER-ADDR-BY-NAME",
        this.#url.master,
      ]) as [string, string] | null;
      return reply && { host: reply[0], port: Number(reply[1]) };
    } finally {
      if (client.isOpen) client.destroy();
    }
  }

  /**
   * `master`'s connection is gone (or, `demoted`, it answered READONLY):
   * look again. Another error on a connection still up is only passed on.
   */
  #lost(
    master: ReturnType<typeof createClient>,
    error: unknown,
    demoted = false,
  ): void {
    if (master !== this.#master || !this.#open) return;
    if (!demoted && master.isReady) return void this.emit("error", error);
    this.#master = undefined;
    const wasReady = this.#ready;
    this.#ready = false;
    if (master.isOpen) master.destroy();
    this.emit("error", error);
    if (wasReady) this.#follow(true).catch(() => {});
  }
}

function errorText(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/**
 * `attempt`, and once more if it timed out connecting: a process whose
 * event loop was held up (a busy start on busy cores) sees every connect
 * it began meanwhile time out, though the other side answered at once.
 */
async function retriedOnTimeout<T>(attempt: () => Promise<T>): Promise<T> {
  try {
    return await attempt();
  } catch (error) {
    if (!(error instanceof ConnectionTimeoutError)) throw error;
    return await attempt();
  }
}
