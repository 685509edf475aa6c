/**
 * Test and bench helpers for the Redis store: a private `redis-server` on a
 * free port, and chat processes (`main.ts --redis`) as children.
 *
 * @module
 */

import assert from "node:assert/strict";
import { createClient } from "redis";
import type { ChatServer } from "../main.ts";
import { within } from "./test_helpers.ts";
import { freePort } from "./ws_frames.ts";

/** Is `redis-server` installed? */
export const haveRedis: boolean = (() => {
  try {
    return new Deno.Command("redis-server", {
      args: ["--version"],
      stdout: "null",
      stderr: "null",
    }).outputSync().success;
  } catch {
    return false;
  }
})();

/** A running redis-server of our own. */
export interface RedisServer {
  port: number;
  url: string;
  child: Deno.ChildProcess;
  /** SIGKILL, and waits for the exit. */
  kill(): Promise<void>;
}

/**
 * Starts `redis-server` on `port` (a free one by default), without
 * persistence unless `dir` is given (then AOF, fsync always, in `dir`).
 */
export async function startRedis(
  options: { port?: number; dir?: string; args?: string[] } = {},
): Promise<RedisServer> {
  const port = options.port ?? freePort();
  const persistence = options.dir
    ? ["--appendonly", "yes", "--appendfsync", "always", "--dir", options.dir]
    : ["--appendonly", "no"];
  const child = new Deno.Command("redis-server", {
    args: [
      "--port",
      String(port),
      "--bind",
      "127.0.0.1",
      "--save",
      "",
      ...persistence,
      ...(options.args ?? []),
    ],
    stdin: "null",
    stdout: "null",
    stderr: "null",
  }).spawn();
  try {
    await untilRedisAnswers(port, child);
  } catch (error) {
    try {
      child.kill("SIGKILL");
    } catch {
      // exited already
    }
    await child.status;
    throw error;
  }
  let killed: Promise<void> | undefined;
  return {
    port,
    url: `redis://127.0.0.1:${port}`,
    child,
    kill: () =>
      killed ??= (async () => {
        try {
          child.kill("SIGKILL");
        } catch {
          // already gone
        }
        await child.status;
      })(),
  };
}

/**
 * Resolves once the redis-server `child` answers PING on `port`; rejects
 * when it exits first, or has not answered within 5 s.
 */
export async function untilRedisAnswers(
  port: number,
  child: Deno.ChildProcess,
): Promise<void> {
  let exited: Deno.CommandStatus | undefined;
  child.status.then((status) => exited = status);
  const deadline = Date.now() + 5000;
  for (;;) {
    try {
      const conn = await Deno.connect({ hostname: "127.0.0.1", port });
      try {
        await conn.write(new TextEncoder().encode("PING\r\n"));
        const buffer = new Uint8Array(64);
        const n = await conn.read(buffer);
        const reply = new TextDecoder().decode(buffer.subarray(0, n ?? 0));
        if (reply.includes("PONG")) return;
      } finally {
        conn.close();
      }
    } catch {
      // not listening yet
    }
    if (exited) {
      throw new Error(
        `redis-server exited with code ${exited.code} before answering on port ${port}`,
      );
    }
    if (Date.now() > deadline) {
      throw new Error(`redis-server did not start on port ${port}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** A chat process (`main.ts --redis URL`). */
export interface ChatProcess {
  child: Deno.ChildProcess;
  port: number;
  wsPort: number;
  /** Enough of a {@linkcode ChatServer} for the test helpers' clients. */
  server: ChatServer;
  /** SIGTERM (a clean stop) and waits for the exit. */
  stop(): Promise<void>;
  /** SIGKILL and waits for the exit. */
  kill(): Promise<void>;
}

/**
 * Starts `main.ts --redis url` on free loopback ports (`flag`:
 * `--redis-cluster`, with the nodes' URLs comma-separated).
 */
export async function startChatProcess(
  url: string,
  options: { args?: string[]; env?: Record<string, string>; flag?: string } =
    {},
): Promise<ChatProcess> {
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--allow-all",
      "main.ts",
      options.flag ?? "--redis",
      url,
      "--hostname",
      "127.0.0.1",
      "--port",
      "0",
      "--ws-port",
      "0",
      "--quiet",
      ...(options.args ?? []),
    ],
    // The repository, where main.ts is.
    cwd: new URL("..", import.meta.url),
    env: options.env,
    stdin: "null",
    stdout: "piped",
    stderr: Deno.env.get("CHAT_TEST_LOGS") ? "inherit" : "null",
  }).spawn();
  const lines = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let out = "";
  while (!out.includes("\n")) {
    const { value, done } = await within(
      lines.read(),
      "the start-up line",
      15000,
    )
      .catch(async (error) => {
        child.kill("SIGKILL");
        await lines.cancel();
        await child.status;
        throw error;
      });
    if (done) break;
    out += value;
  }
  const match = out.match(
    /open http:\/\/127\.0\.0\.1:(\d+)\/ \(chat on port (\d+)\)/,
  );
  if (!match) {
    await lines.cancel();
    await child.status;
    assert.fail(`start-up line: ${out}`);
  }
  const port = Number(match[1]);
  const wsPort = Number(match[2]);
  // Keep reading stdout so the child never blocks on it.
  const drained = (async () => {
    try {
      while (!(await lines.read()).done) {
        // nothing
      }
    } catch {
      // cancelled
    }
  })();
  let ended: Promise<void> | undefined;
  const end = (signal: Deno.Signal) =>
    ended ??= (async () => {
      try {
        child.kill(signal);
      } catch {
        // already gone
      }
      await child.status;
      await drained;
    })();
  return {
    child,
    port,
    wsPort,
    server: {
      port,
      wsPort,
      pageUrl: `http://127.0.0.1:${port}/`,
      chatUrl: `ws://127.0.0.1:${wsPort}/`,
      shutdown: () => end("SIGTERM"),
    },
    stop: () => end("SIGTERM"),
    kill: () => end("SIGKILL"),
  };
}

/**
 * A Redis primary, its replica and three Sentinels watching them (quorum
 * 2), on free loopback ports, configured in a temp dir; quick to fail over
 * (a primary is down after {@linkcode SENTINEL_DOWN_AFTER_MS}).
 */
export interface SentinelSet {
  /** The master's name, as the Sentinels know it. */
  master: string;
  primary: RedisServer;
  replica: RedisServer;
  sentinels: RedisServer[];
  /** `redis+sentinel://` URL naming the three Sentinels and the master. */
  url: string;
  /** Where the Sentinels say the master is now (its port). */
  masterPort(): Promise<number>;
  /** Every process killed, the temp dir removed. */
  stop(): Promise<void>;
}

/**
 * A TCP relay to `127.0.0.1:target` whose bytes toward the client arrive
 * `delayMs` late: a replica that replicates through it lags that far
 * behind its primary. When the target's side closes (the primary died),
 * what is still on its way is dropped, as a lagging link's backlog is;
 * the client's side is closed at once.
 */
export interface LagLine {
  port: number;
  /** Stops listening and closes every relayed connection. */
  close(): Promise<void>;
}

/** Starts a {@linkcode LagLine} on a free loopback port. */
export function startLagLine(target: number, delayMs: number): LagLine {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const open = new Set<Deno.Conn>();
  const relays: Promise<void>[] = [];
  const closeQuietly = (conn: Deno.Conn) => {
    open.delete(conn);
    try {
      conn.close();
    } catch {
      // closed already
    }
  };
  const relay = async (client: Deno.Conn) => {
    open.add(client);
    let server: Deno.Conn;
    try {
      server = await Deno.connect({ hostname: "127.0.0.1", port: target });
    } catch {
      return closeQuietly(client);
    }
    open.add(server);
    let ended = false;
    const end = () => {
      ended = true;
      closeQuietly(server);
      closeQuietly(client);
    };
    // Client to server at once.
    const up = (async () => {
      const buffer = new Uint8Array(64 * 1024);
      try {
        for (;;) {
          const n = await client.read(buffer);
          if (n === null) break;
          await writeAll(server, buffer.subarray(0, n));
        }
      } catch {
        // either side closed
      }
      end();
    })();
    // Server to client, each chunk `delayMs` after it came, in order.
    const down = (async () => {
      let sent = Promise.resolve();
      const buffer = new Uint8Array(64 * 1024);
      try {
        for (;;) {
          const n = await server.read(buffer);
          if (n === null) break;
          const chunk = buffer.slice(0, n);
          const due = Date.now() + delayMs;
          sent = sent.then(async () => {
            await new Promise((resolve) =>
              setTimeout(resolve, Math.max(0, due - Date.now()))
            );
            if (!ended) await writeAll(client, chunk).catch(end);
          });
        }
      } catch {
        // either side closed
      }
      end(); // the backlog is dropped
      await sent;
    })();
    await Promise.all([up, down]);
  };
  const accepting = (async () => {
    try {
      for await (const conn of listener) relays.push(relay(conn));
    } catch {
      // closed
    }
  })();
  return {
    port: (listener.addr as Deno.NetAddr).port,
    close: async () => {
      listener.close();
      await accepting;
      for (const conn of [...open]) closeQuietly(conn);
      await Promise.all(relays);
    },
  };
}

async function writeAll(conn: Deno.Conn, bytes: Uint8Array): Promise<void> {
  for (let at = 0; at < bytes.length;) {
    at += await conn.write(bytes.subarray(at));
  }
}

/** How long a Sentinel waits before it calls the primary down. */
export const SENTINEL_DOWN_AFTER_MS = 1000;
/** Sentinel's `failover-timeout`: a stalled failover is tried again after it. */
const SENTINEL_FAILOVER_TIMEOUT_MS = 4000;
/** `failover-timeout` with a lag line (see `startSentinelSet`). */
const LAGGING_FAILOVER_TIMEOUT_MS = 120_000;

/** One command's reply, by node-redis, on a connection of its own. */
export async function redisCall(
  port: number,
  args: string[],
): Promise<unknown> {
  const client = createClient({
    socket: { host: "127.0.0.1", port, reconnectStrategy: false },
  });
  client.on("error", () => {}); // the command's rejection says it
  try {
    await client.connect();
    return await client.sendCommand(args);
  } finally {
    if (client.isOpen) client.destroy();
  }
}

/**
 * Starts a {@linkcode SentinelSet} and waits until the replica is in sync
 * and every Sentinel knows the replica and the other two (else a failover
 * could not be agreed on).
 */
export async function startSentinelSet(
  options: {
    /**
     * The replica replicates through a {@linkcode LagLine} this many ms
     * long: what the primary wrote in the last `replicaLagMs` is lost
     * when it dies.
     */
    replicaLagMs?: number;
  } = {},
): Promise<SentinelSet> {
  const dir = await Deno.makeTempDir({ prefix: "chat-sentinel-" });
  const master = "chat";
  const started: RedisServer[] = [];
  let lag: LagLine | undefined;
  const stop = async () => {
    await Promise.all(started.map((server) => server.kill()));
    await lag?.close();
    await Deno.remove(dir, { recursive: true });
  };
  // Sentinel points a replica that replicates from another address than
  // the master's (the lag line's) at the master after `failover-timeout`:
  // longer than a test, then.
  const failoverTimeout = options.replicaLagMs === undefined
    ? SENTINEL_FAILOVER_TIMEOUT_MS
    : LAGGING_FAILOVER_TIMEOUT_MS;
  try {
    const primary = await startRedis();
    started.push(primary);
    if (options.replicaLagMs !== undefined) {
      lag = startLagLine(primary.port, options.replicaLagMs);
    }
    const replica = await startRedis({
      // Its copy of the primary's data (dump.rdb) lands in the temp dir.
      args: [
        "--replicaof",
        "127.0.0.1",
        String(lag?.port ?? primary.port),
        "--dir",
        dir,
      ],
    });
    started.push(replica);
    const sentinels: RedisServer[] = [];
    for (let i = 0; i < 3; i++) {
      const port = freePort();
      const conf = `${dir}/sentinel-${port}.conf`;
      await Deno.writeTextFile(
        conf,
        [
          `port ${port}`,
          "bind 127.0.0.1",
          `dir ${dir}`,
          `sentinel monitor ${master} 127.0.0.1 ${primary.port} 2`,
          `sentinel down-after-milliseconds ${master} ${SENTINEL_DOWN_AFTER_MS}`,
          `sentinel failover-timeout ${master} ${failoverTimeout}`,
          `sentinel parallel-syncs ${master} 1`,
          "",
        ].join("\n"),
      );
      const child = new Deno.Command("redis-server", {
        args: [conf, "--sentinel"],
        stdin: "null",
        stdout: "null",
        stderr: "null",
      }).spawn();
      const sentinel = serverOf(port, child);
      started.push(sentinel);
      sentinels.push(sentinel);
      await untilRedisAnswers(port, child);
    }
    await untilTrue("the replica in sync", async () => {
      const info = String(
        await redisCall(replica.port, ["INFO", "replication"]),
      );
      return info.includes("master_link_status:up");
    });
    for (const sentinel of sentinels) {
      await untilTrue("the Sentinels to know each other", async () => {
        const others = await redisCall(sentinel.port, [
          "SENTINEL",
          "SENTINELS",
          master,
        ]) as unknown[];
        const replicas = await redisCall(sentinel.port, [
          "SENTINEL",
          "REPLICAS",
          master,
        ]) as unknown[];
        return others.length === 2 && replicas.length === 1;
      });
    }
    const hosts = sentinels.map((s) => `127.0.0.1:${s.port}`).join(",");
    return {
      master,
      primary,
      replica,
      sentinels,
      url: `redis+sentinel://${hosts}/${master}`,
      masterPort: async () => {
        const reply = await redisCall(sentinels[0].port, [
          "SENTINEL",
          "GET-MASTER-ADDR-BY-NAME",
          master,
        ]) as [string, string];
        return Number(reply[1]);
      },
      stop,
    };
  } catch (error) {
    await stop();
    throw error;
  }
}

/** A redis-server (or Sentinel) child on `port`, killed by SIGKILL. */
function serverOf(port: number, child: Deno.ChildProcess): RedisServer {
  let killed: Promise<void> | undefined;
  return {
    port,
    url: `redis://127.0.0.1:${port}`,
    child,
    kill: () =>
      killed ??= (async () => {
        try {
          child.kill("SIGKILL");
        } catch {
          // already gone
        }
        await child.status;
      })(),
  };
}

/** Polls `check` every 100 ms until it holds; fails after 15 s. */
async function untilTrue(
  what: string,
  check: () => Promise<boolean>,
): Promise<void> {
  const deadline = Date.now() + 15_000;
  for (;;) {
    try {
      if (await check()) return;
    } catch {
      // not answering yet
    }
    if (Date.now() > deadline) throw new Error(`never happened: ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}
