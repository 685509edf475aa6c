/**
 * `deno run -A bench/failover.ts`: what a Sentinel failover costs the chat
 * (issue 28 point 4): how long it is unavailable, and how many messages it
 * echoed and then lost (Redis replicates asynchronously), with and without
 * `--redis-wait-replicas 1`.
 *
 * Each run starts a primary, its replica (through a lag line `--lag` ms
 * long, 0: none, see tests/redis_helpers.ts `startLagLine`) and three
 * Sentinels, and two chat processes on them
 * (`--redis redis+sentinel://…`). A poster on the first posts at `--rate`
 * a second into one room (each post sent on time, not after the last
 * echo), a watcher on the second reads; after `--before` seconds the
 * primary is killed (SIGKILL) and the poster goes on. Measured:
 *
 * - unavailable: from the kill to the first post echoed after it;
 * - refused: posts answered `unavailable` meanwhile;
 * - lost: posts echoed to the poster and absent from the room's history
 *   after the failover (a newcomer's welcome), and whether the poster was
 *   closed for it (the store closes those who saw lost events);
 * - echo ms: the median time from a post to its echo before the kill
 *   (what waiting for the replica adds).
 *
 * The Sentinels call the primary down after 1 s (tests/redis_helpers.ts
 * `SENTINEL_DOWN_AFTER_MS`; a production one is set to 5–30 s): the
 * failover itself takes that longer there.
 *
 * Usage: deno run -A bench/failover.ts [--runs 3] [--rate 20] [--before 3]
 *          [--lag 0] [--wait-replicas 0] [--wait-ms 100] [--json]
 *
 * @module
 */

import { parseArgs } from "node:util";
import {
  type ChatProcess,
  startChatProcess,
  startSentinelSet,
} from "../tests/redis_helpers.ts";
import { JSON_PROTOCOL } from "../wire/protocol.ts";

/** Longest the chat may stay unavailable before the run is called failed. */
const RECOVERY_LIMIT_MS = 60_000;
/** Posts after recovery, so that the failover is well behind. */
const AFTER_RECOVERY_MS = 1000;

const args = parseArgs({
  args: Deno.args,
  options: {
    runs: { type: "string", default: "3" },
    rate: { type: "string", default: "20" },
    before: { type: "string", default: "3" },
    lag: { type: "string", default: "0" },
    "wait-replicas": { type: "string", default: "0" },
    "wait-ms": { type: "string", default: "100" },
    json: { type: "boolean", default: false },
  },
}).values;

const runs = Number(args.runs);
const rate = Number(args.rate);
const beforeMs = Number(args.before) * 1000;
const lagMs = Number(args.lag);
const waitReplicas = Number(args["wait-replicas"]);
const waitMs = Number(args["wait-ms"]);

function log(text: string): void {
  console.error(`[failover] ${text}`);
}

/** A JSON client: its events as they come, and a way to wait for one. */
class Client {
  socket: WebSocket;
  closed: Promise<number>;
  #listeners = new Set<(event: Record<string, unknown>) => void>();
  constructor(url: string) {
    this.socket = new WebSocket(url, JSON_PROTOCOL);
    this.closed = new Promise((resolve) =>
      this.socket.addEventListener("close", (event) => resolve(event.code))
    );
    this.socket.addEventListener("message", (message) => {
      const parsed = JSON.parse(message.data);
      for (const event of Array.isArray(parsed) ? parsed : [parsed]) {
        for (const listener of this.#listeners) listener(event);
      }
    });
  }
  on(listener: (event: Record<string, unknown>) => void): void {
    this.#listeners.add(listener);
  }
  /** The first event `matches` takes, within `ms`. */
  next(
    matches: (event: Record<string, unknown>) => boolean,
    ms = 10_000,
  ): Promise<Record<string, unknown>> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#listeners.delete(listener);
        reject(new Error("timed out"));
      }, ms);
      const listener = (event: Record<string, unknown>) => {
        if (!matches(event)) return;
        clearTimeout(timer);
        this.#listeners.delete(listener);
        resolve(event);
      };
      this.#listeners.add(listener);
      this.closed.then(() => {
        clearTimeout(timer);
        this.#listeners.delete(listener);
        reject(new Error("closed"));
      });
    });
  }
  close(): Promise<number> {
    if (this.socket.readyState <= WebSocket.OPEN) this.socket.close();
    return this.closed;
  }
}

async function join(chat: ChatProcess, nick: string): Promise<{
  client: Client;
  welcome: Record<string, unknown>;
}> {
  const client = new Client(`ws://127.0.0.1:${chat.wsPort}/bench?nick=${nick}`);
  try {
    const welcome = await client.next((event) => event.type === "welcome");
    return { client, welcome };
  } catch (error) {
    await client.close();
    throw error;
  }
}

interface RunResult {
  sent: number;
  echoed: number;
  refused: number;
  lost: number;
  closedForLoss: boolean;
  unavailableMs: number;
  /** From the kill until the first Sentinel names the replica. */
  switchMs: number;
  echoMedianMs: number;
}

/** Polls the first Sentinel until it names `port`; ms since `since`. */
async function untilSwitched(
  masterPort: () => Promise<number>,
  port: number,
  since: number,
): Promise<number> {
  for (;;) {
    if (await masterPort().catch(() => 0) === port) {
      return performance.now() - since;
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

async function run(): Promise<RunResult> {
  const set = await startSentinelSet(
    lagMs > 0 ? { replicaLagMs: lagMs } : {},
  );
  const chatArgs = [
    "--redis-wait-replicas",
    String(waitReplicas),
    "--redis-wait-ms",
    String(waitMs),
    "--history-size",
    "5000",
    "--rate",
    "1000",
    "--burst",
    "1000",
  ];
  const chats: ChatProcess[] = [];
  const clients: Client[] = [];
  try {
    chats.push(
      ...await Promise.all([
        startChatProcess(set.url, { args: chatArgs }),
        startChatProcess(set.url, { args: chatArgs }),
      ]),
    );
    const poster = await join(chats[0], "poster");
    const watcher = await join(chats[1], "watcher");
    clients.push(poster.client, watcher.client);
    await new Promise((resolve) => setTimeout(resolve, 500));
    const sentAt = new Map<string, number>();
    const echoed = new Map<string, number>(); // text → ms to echo
    let refused = 0;
    let killedAt = 0;
    let recoveredAt = 0;
    poster.client.on((event) => {
      if (event.type === "message" && sentAt.has(event.text as string)) {
        const text = event.text as string;
        const at = performance.now();
        echoed.set(text, at - sentAt.get(text)!);
        if (killedAt > 0 && recoveredAt === 0 && sentAt.get(text)! > killedAt) {
          recoveredAt = at;
        }
      } else if (event.type === "error") refused++;
    });
    let closedForLoss = false;
    let switched: Promise<number> | undefined;
    poster.client.closed.then(() => closedForLoss = true);
    const every = 1000 / rate;
    const start = performance.now();
    // At a random point between two posts, not just before one.
    const kill = setTimeout(() => {
      killedAt = performance.now();
      switched = set.primary.kill().then(() =>
        untilSwitched(set.masterPort, set.replica.port, killedAt)
      );
    }, beforeMs + Math.random() * every);
    for (let n = 0;; n++) {
      const due = start + n * every;
      const now = performance.now();
      if (due > now) await new Promise((r) => setTimeout(r, due - now));

      if (
        recoveredAt > 0 && performance.now() - recoveredAt > AFTER_RECOVERY_MS
      ) {
        break;
      }
      if (closedForLoss) break;
      if (killedAt === 0 && performance.now() - start > 2 * beforeMs) {
        clearTimeout(kill);
        throw new Error("the primary was not killed");
      }
      if (killedAt > 0 && performance.now() - killedAt > RECOVERY_LIMIT_MS) {
        throw new Error(`no recovery within ${RECOVERY_LIMIT_MS} ms`);
      }
      const text = `p-${n}`;
      sentAt.set(text, performance.now());
      poster.client.socket.send(JSON.stringify({ type: "message", text }));
    }
    if (closedForLoss) {
      // Closed because the room lost events it had seen: wait for the
      // chat to take joins again.
      for (;;) {
        try {
          const back = await join(chats[0], "poster");
          clients.push(back.client);
          recoveredAt = performance.now();
          break;
        } catch {
          if (performance.now() - killedAt > RECOVERY_LIMIT_MS) {
            throw new Error(`no recovery within ${RECOVERY_LIMIT_MS} ms`);
          }
          await new Promise((r) => setTimeout(r, 200));
        }
      }
    }
    await new Promise((resolve) => setTimeout(resolve, 500));
    const reader = await join(chats[1], "reader");
    clients.push(reader.client);
    const kept = new Set(
      (reader.welcome.history as Record<string, unknown>[])
        .filter((event) => event.type === "message")
        .map((event) => event.text as string),
    );
    const lost = [...echoed.keys()].filter((text) => !kept.has(text));
    const before = [...echoed].filter(([text]) => sentAt.get(text)! < killedAt)
      .map(([, ms]) => ms).sort((a, b) => a - b);
    return {
      sent: sentAt.size,
      echoed: echoed.size,
      refused,
      lost: lost.length,
      closedForLoss,
      unavailableMs: Math.round(recoveredAt - killedAt),
      switchMs: Math.round(await switched!),
      echoMedianMs: Number(
        (before[Math.floor(before.length / 2)] ?? 0).toFixed(1),
      ),
    };
  } finally {
    await Promise.all(clients.map((client) => client.close()));
    await Promise.all(chats.map((chat) => chat.stop()));
    await set.stop();
  }
}

const results: RunResult[] = [];
log(
  `${runs} runs: ${rate} posts/s, kill after ${beforeMs} ms, replica lag ${lagMs} ms, --redis-wait-replicas ${waitReplicas} --redis-wait-ms ${waitMs}`,
);
for (let i = 0; i < runs; i++) {
  const result = await run();
  results.push(result);
  log(`run ${i + 1}: ${JSON.stringify(result)}`);
}
const load = (await Deno.readTextFile("/proc/loadavg")).split(" ")[0];
const summary = {
  rate,
  lagMs,
  waitReplicas,
  waitMs,
  runs: results,
  lost: results.map((r) => r.lost),
  unavailableMs: results.map((r) => r.unavailableMs),
  switchMs: results.map((r) => r.switchMs),
  echoMedianMs: results.map((r) => r.echoMedianMs),
  load,
};
if (args.json) console.log(JSON.stringify(summary));
else {
  console.log(
    `lost ${summary.lost.join(", ")} | unavailable ms ${
      summary.unavailableMs.join(", ")
    } (Sentinel switched after ${
      summary.switchMs.join(", ")
    }) | echo median ms ${summary.echoMedianMs.join(", ")} | load ${load}`,
  );
}
