/**
 * Test and bench helpers for the Redis store: a private `redis-server` on a
 * free port, and chat processes (`main.ts --redis`) as children.
 *
 * @module
 */

import assert from "node:assert/strict";
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
  options: { port?: number; dir?: string } = {},
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
