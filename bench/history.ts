/**
 * `deno run -A bench/history.ts`: what `--data` costs where the issue set
 * targets, on data files written here in a tmp dir (removed at the end):
 *
 * - paging: `--pages` reads of `--page` events back from the newest of a
 *   room holding `--events` events (default 500 × 200 = 100,000 of 1 M):
 *   round-trip time per page, p50 / p99 / max;
 * - the welcome: connect-to-welcome time in that room and in a room of 100
 *   events (median of `--welcomes` each; every connect finds the room empty,
 *   so each one loads it from the file);
 * - restart: a file of `--rooms` × `--room-events` events (default 1,000 ×
 *   1,000): from spawning `main.ts` until both ports serve (`/healthz` 200
 *   and a welcome on the chat port), median of `--restarts`, against the
 *   same with an empty file;
 * - disk per message: the file's size after a checkpoint over its events.
 *
 * Usage: deno run -A bench/history.ts [--events 1000000] [--pages 500]
 *          [--page 200] [--rooms 1000] [--room-events 1000] [--welcomes 50]
 *          [--restarts 3] [--text-chars 60]
 *
 * @module
 */

import { parseArgs } from "node:util";
import { SqliteArchive } from "../stores/sqlite_store.ts";
import type { RoomEvent } from "../wire/protocol.ts";
import { JSON_PROTOCOL } from "../wire/protocol.ts";
import { freePort } from "../tests/ws_frames.ts";

/** Events written per transaction while the files are made. */
const FILL_BATCH = 10_000;
/** A server must serve within this after being spawned. */
const READY_TIMEOUT_MS = 60_000;
/** Poll interval while waiting for a server. */
const POLL_MS = 5;
/** One frame is waited for at most this long. */
const FRAME_TIMEOUT_MS = 30_000;

const repoDir = new URL("..", import.meta.url).pathname;

function log(text: string): void {
  console.error(`[history] ${text}`);
}

/** Percentile (nearest rank) of `values`. */
function percentile(values: number[], p: number): number {
  const sorted = values.toSorted((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.ceil(p * sorted.length) - 1)];
}

const median = (values: number[]) => percentile(values, 0.5);

/** Writes `count` messages of about `chars` characters into `room`. */
function fill(
  archive: SqliteArchive,
  room: string,
  count: number,
  chars: number,
): void {
  archive.create(room, crypto.randomUUID().slice(0, 8));
  const pad = "lorem ipsum dolor sit amet ".repeat(Math.ceil(chars / 27));
  const start = Date.now() - count;
  for (let id = 1; id <= count; id++) {
    const text = `${id} ${pad}`.slice(0, chars);
    const event: RoomEvent = {
      type: "message",
      id,
      ts: start + id,
      from: `user-${id % 50}`,
      text,
    };
    archive.append(room, event);
    if (id % FILL_BATCH === 0) archive.commit();
  }
  archive.commit();
}

/** Opens a data file for writing it directly (no server). */
function openArchive(path: string): SqliteArchive {
  return SqliteArchive.open({
    path,
    historySize: 100,
    maxHistoryBytes: 1 << 20,
    maxRooms: 1,
    onEvict: () => {},
    retainEvents: Number.MAX_SAFE_INTEGER,
    retainDays: 0,
  });
}

/** A main.ts child with `--data path` on free ports. */
interface Server {
  port: number;
  wsPort: number;
  /** From spawn until both ports served, in ms. */
  readyMs: number;
  stop(): Promise<void>;
}

async function startServer(path: string): Promise<Server> {
  const port = freePort();
  const wsPort = freePort();
  const started = performance.now();
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      `${repoDir}main.ts`,
      "--port",
      String(port),
      "--ws-port",
      String(wsPort),
      "--hostname",
      "127.0.0.1",
      "--data",
      path,
      "--rate",
      "1000000",
      "--burst",
      "1000000",
      "--connect-rate",
      "1000000",
      "--connect-burst",
      "1000000",
      "--quiet",
    ],
    stdin: "null",
    stdout: "null",
    stderr: "inherit",
  }).spawn();
  const stop = async () => {
    try {
      child.kill("SIGTERM");
    } catch { /* gone */ }
    await child.status;
  };
  const deadline = Date.now() + READY_TIMEOUT_MS;
  try {
    for (;;) {
      if (Date.now() > deadline) throw new Error("server not ready");
      try {
        const res = await fetch(`http://127.0.0.1:${port}/healthz`);
        await res.body?.cancel();
        if (res.ok) break;
      } catch { /* not up yet */ }
      await new Promise((resolve) => setTimeout(resolve, POLL_MS));
    }
    for (;;) {
      if (Date.now() > deadline) throw new Error("chat port not ready");
      try {
        const client = await Client.connect(wsPort, "ready");
        await client.close();
        break;
      } catch { /* not up yet */ }
      await new Promise((resolve) => setTimeout(resolve, POLL_MS));
    }
  } catch (error) {
    await stop();
    throw error;
  }
  return { port, wsPort, readyMs: performance.now() - started, stop };
}

/** A JSON client: its welcome, and a queue of the frames after it. */
class Client {
  #frames: string[] = [];
  #wake?: () => void;
  private constructor(
    readonly socket: WebSocket,
    readonly welcome: {
      lastId: number;
    },
  ) {}

  static async connect(wsPort: number, room: string): Promise<Client> {
    const socket = new WebSocket(`ws://127.0.0.1:${wsPort}/${room}`, [
      JSON_PROTOCOL,
    ]);
    const welcome = await new Promise<string>((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error("no welcome")),
        FRAME_TIMEOUT_MS,
      );
      socket.onmessage = (event) => {
        clearTimeout(timer);
        resolve(event.data);
      };
      socket.onerror = () => {
        clearTimeout(timer);
        reject(new Error("could not connect"));
      };
    });
    const client = new Client(socket, JSON.parse(welcome));
    socket.onmessage = (event) => {
      client.#frames.push(event.data);
      client.#wake?.();
    };
    return client;
  }

  /** The next frame whose JSON has `type` (room events pass by). */
  async next(type: string): Promise<{ events: RoomEvent[]; more: boolean }> {
    for (;;) {
      while (this.#frames.length > 0) {
        const frame = JSON.parse(this.#frames.shift()!);
        if (!Array.isArray(frame) && frame.type === type) return frame;
      }
      await new Promise<void>((resolve) => this.#wake = resolve);
    }
  }

  close(): Promise<void> {
    const closed = new Promise<void>((resolve) =>
      this.socket.addEventListener("close", () => resolve())
    );
    this.socket.close();
    return closed;
  }
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      events: { type: "string", default: "1000000" },
      pages: { type: "string", default: "500" },
      page: { type: "string", default: "200" },
      rooms: { type: "string", default: "1000" },
      "room-events": { type: "string", default: "1000" },
      welcomes: { type: "string", default: "50" },
      restarts: { type: "string", default: "3" },
      "text-chars": { type: "string", default: "60" },
    },
  });
  const n = (name: keyof typeof values) => Number(values[name]);
  const dir = await Deno.makeTempDir({ prefix: "chat-bench-history-" });
  const out: string[] = [];
  try {
    // One room of --events, one of 100.
    const big = `${dir}/big.db`;
    let t = performance.now();
    let archive = openArchive(big);
    fill(archive, "big", n("events"), n("text-chars"));
    fill(archive, "small", 100, n("text-chars"));
    archive.close();
    const bytes = Deno.statSync(big).size;
    log(
      `wrote ${n("events") + 100} events in ${
        ((performance.now() - t) / 1000).toFixed(1)
      } s`,
    );
    out.push(
      `disk: ${(bytes / 2 ** 20).toFixed(1)} MiB for ${
        n("events") + 100
      } messages of ${n("text-chars")} chars: ${
        (bytes / (n("events") + 100)).toFixed(0)
      } B per message`,
    );

    const server = await startServer(big);
    try {
      const reader = await Client.connect(server.wsPort, "big");
      let before = reader.welcome.lastId;
      const times: number[] = [];
      let read = 0;
      for (let i = 0; i < n("pages"); i++) {
        const start = performance.now();
        reader.socket.send(
          JSON.stringify({ type: "history", before, limit: n("page") }),
        );
        const answer = await reader.next("history");
        times.push(performance.now() - start);
        read += answer.events.length;
        if (!answer.more) break;
        before = answer.events[0].id;
      }
      await reader.close();
      out.push(
        `paging: ${read} events back in ${times.length} pages of ${
          n("page")
        } from a room of ${n("events")}: p50 ${
          median(times).toFixed(2)
        } ms, p99 ${percentile(times, 0.99).toFixed(2)} ms, max ${
          Math.max(...times).toFixed(2)
        } ms`,
      );
      const welcome = { big: [] as number[], small: [] as number[] };
      for (let i = 0; i < n("welcomes"); i++) {
        for (const room of ["big", "small"] as const) {
          const start = performance.now();
          const client = await Client.connect(server.wsPort, room);
          welcome[room].push(performance.now() - start);
          await client.close();
        }
      }
      out.push(
        `welcome (connect to welcome, room loaded from the file each time), median of ${
          n("welcomes")
        }: ${n("events")} events ${
          median(welcome.big).toFixed(2)
        } ms, 100 events ${median(welcome.small).toFixed(2)} ms`,
      );
    } finally {
      await server.stop();
    }

    // Restart: many rooms, against an empty file.
    const many = `${dir}/many.db`;
    t = performance.now();
    archive = openArchive(many);
    for (let room = 0; room < n("rooms"); room++) {
      fill(archive, `room-${room}`, n("room-events"), n("text-chars"));
    }
    archive.close();
    log(
      `wrote ${n("rooms")} rooms in ${
        ((performance.now() - t) / 1000).toFixed(1)
      } s`,
    );
    const empty = `${dir}/empty.db`;
    const ready = { many: [] as number[], empty: [] as number[] };
    for (let i = 0; i < n("restarts"); i++) {
      for (const [name, path] of [["many", many], ["empty", empty]] as const) {
        const running = await startServer(path);
        ready[name].push(running.readyMs);
        await running.stop();
      }
    }
    out.push(
      `restart: ready to serve (both ports), median of ${n("restarts")}: ${
        n("rooms")
      } rooms x ${n("room-events")} events (${
        (Deno.statSync(many).size / 2 ** 20).toFixed(0)
      } MiB) ${median(ready.many).toFixed(0)} ms, empty file ${
        median(ready.empty).toFixed(0)
      } ms`,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
  out.push(
    `${
      new Date().toISOString()
    }  deno ${Deno.version.deno}  ${navigator.hardwareConcurrency} cores`,
  );
  console.log(out.join("\n"));
}

if (import.meta.main) await main();
